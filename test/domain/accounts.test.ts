/**
 * Accounts and users (Slurm associations): the account a job is charged to, enforcement
 * (AccountingStorageEnforce=associations), submit limits (MaxSubmitJobs, MaxWall) and running limits
 * (MaxJobs, GrpTRES cpu/gpu, GrpTRESMins) enforced by the scheduling pass and its placing statement.
 */
import { type SQL, sql } from 'drizzle-orm';
import { PgDialect } from 'drizzle-orm/pg-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  accountShares,
  deleteAccount,
  deleteAccountUser,
  listAccounts,
  putAccount,
  putAccountUser,
} from '../../functions/domain/accounts.ts';
import type { Principal } from '../../functions/domain/auth.ts';
import { getJob, type SubmitJobInput, submitJob, submitJobsBatch } from '../../functions/domain/jobs.ts';
import type { Database } from '../../functions/domain/ports.ts';
import { runSchedulingPass } from '../../functions/domain/scheduler.ts';
import { query } from '../../functions/domain/sql.ts';
import { registerWorker } from '../../functions/domain/workers.ts';
import { availableBackends, type Backend, testConfig, testContext } from '../support/cluster.ts';
import { checkInvariants } from '../support/invariants.ts';

const admin: Principal = { kind: 'token', tokenId: 8, name: 'ops', owner: 'ops', scopes: ['admin'] };
const user = (owner: string): Principal => ({
  kind: 'token',
  tokenId: 9,
  name: owner,
  owner,
  scopes: ['jobs:write', 'jobs:read'],
});
const alice = user('alice');
const bob = user('bob');

const backends = await availableBackends();

describe.each(backends)('accounts and limits on $name', (factory) => {
  let backend: Backend;
  let h: ReturnType<typeof testContext>;
  beforeAll(async () => {
    backend = await factory.create();
    h = testContext(backend, testConfig({ scheduleBatchSize: 1000 }));
  });
  afterAll(async () => {
    await h?.settle();
    await backend?.close();
  });

  async function reset() {
    await backend.db.db.execute(
      sql`TRUNCATE jobs, job_arrays, job_dependencies, job_attempts, resource_allocations, workers, worker_gres,
          submission_keys, audit_log, account_users, accounts, usage_hourly, usage_daily CASCADE`,
    );
    const [row] = await query<{ v: string }>(
      backend.db.db,
      sql`UPDATE cluster_state SET allocated_cpus = 0, allocated_memory_mb = 0, allocated_gpus = 0, allocation_version = allocation_version + 1 RETURNING allocation_version AS v`,
    );
    await backend.registry.setAllocationSnapshot(0, Number(row?.v));
  }
  /** physics (org) -> theory (group) -> qcd (project); alice in qcd (default) and theory; bob in nothing. */
  async function tree(limits: { physics?: object; qcd?: object; alice?: object } = {}) {
    await putAccount(h.ctx, 'physics', { description: 'the faculty', ...limits.physics }, admin);
    await putAccount(h.ctx, 'theory', { parent: 'physics' }, admin);
    await putAccount(h.ctx, 'qcd', { parent: 'theory', fairshare: 3, ...limits.qcd }, admin);
    await putAccountUser(h.ctx, 'qcd', 'alice', { ...limits.alice }, admin);
    await putAccountUser(h.ctx, 'theory', 'alice', {}, admin);
    await h.settle();
  }
  const submitAs = async (caller: Principal, input: Partial<SubmitJobInput> = {}, config = h.ctx) => {
    const job = await submitJob(config, { script: 'true', cpus: 1, ...input }, { caller });
    await h.settle();
    return job;
  };
  const jobCount = async () =>
    Number((await query<{ n: string }>(backend.db.db, sql`SELECT count(*) AS n FROM jobs`))[0]?.n);
  const states = () =>
    query<{
      id: string;
      state: string;
      reason: string | null;
      reason_detail: string | null;
      account: string;
    }>(backend.db.db, sql`SELECT id, state, reason, reason_detail, account FROM jobs ORDER BY id`);

  it('keeps the tree, a default account per user, shares for fair-share, and refuses cycles and busy deletes', async () => {
    await reset();
    await tree();
    const listed = await listAccounts(h.ctx);
    expect(listed.map((a) => [a.name, a.parent])).toEqual([
      ['physics', null],
      ['theory', 'physics'],
      ['qcd', 'theory'],
    ]);
    expect(listed.find((a) => a.name === 'qcd')?.users).toMatchObject([{ user: 'alice', default: true }]);
    expect(listed.find((a) => a.name === 'theory')?.users).toMatchObject([{ user: 'alice', default: false }]);
    // Making theory her default moves it.
    await putAccountUser(h.ctx, 'theory', 'alice', { default: true }, admin);
    const after = await listAccounts(h.ctx);
    expect(after.find((a) => a.name === 'qcd')?.users[0]?.default).toBe(false);
    expect(after.find((a) => a.name === 'theory')?.users[0]?.default).toBe(true);
    await backend.db.db.transaction(async (tx) => {
      expect(await accountShares(tx)).toEqual(
        new Map([
          ['physics', { shares: 1, parent: null }],
          ['theory', { shares: 1, parent: 'physics' }],
          ['qcd', { shares: 3, parent: 'theory' }],
        ]),
      );
    });
    await expect(putAccount(h.ctx, 'physics', { parent: 'qcd' }, admin)).rejects.toMatchObject({
      code: 'invalid_parent',
    });
    await expect(putAccount(h.ctx, 'x', { parent: 'nowhere' }, admin)).rejects.toMatchObject({
      code: 'invalid_parent',
    });
    await expect(putAccount(h.ctx, 'qcd', { max_jobs: -1 }, admin)).rejects.toThrow();
    expect((await listAccounts(h.ctx)).map((a) => a.name)).toEqual(['physics', 'theory', 'qcd']);
    await expect(deleteAccount(h.ctx, 'theory', admin)).rejects.toMatchObject({
      code: 'account_has_children',
    });
    await submitAs(alice, { account: 'qcd', hold: true });
    await expect(deleteAccount(h.ctx, 'qcd', admin)).rejects.toMatchObject({ code: 'account_in_use' });
    await expect(deleteAccountUser(h.ctx, 'physics', 'alice', admin)).rejects.toMatchObject({
      code: 'account_user_not_found',
    });
  });

  it("charges a job to its owner's default account; with enforcement on, refuses an account the owner is not in (400, sbatch's words), storing nothing", async () => {
    await reset();
    await tree();
    expect((await submitAs(alice, { hold: true })).account).toBe('qcd');
    expect((await submitAs(alice, { hold: true, account: 'theory' })).account).toBe('theory');
    // Off (the default): any name is accepted and recorded.
    expect((await submitAs(bob, { hold: true, account: 'whatever' })).account).toBe('whatever');
    expect((await submitAs(bob, { hold: true })).account).toBeNull();
    const strict = testContext(backend, testConfig({ enforceAssociations: true }));
    const before = await jobCount();
    for (const [caller, account] of [
      [alice, 'physics'],
      [bob, 'qcd'],
      [bob, undefined],
    ] as const) {
      await expect(
        submitJob(strict.ctx, { script: 'true', cpus: 1, account }, { caller }),
      ).rejects.toMatchObject({
        kind: 'invalid',
        code: 'invalid_account',
        message: expect.stringContaining('Invalid account or account/partition combination specified'),
      });
    }
    await expect(
      submitJobsBatch(
        strict.ctx,
        [
          { script: 'true', cpus: 1 },
          { script: 'true', cpus: 1, account: 'physics' },
        ],
        {
          caller: alice,
        },
      ),
    ).rejects.toMatchObject({
      code: 'invalid_account',
      message: expect.stringMatching(/^jobs\[1\]\.account/),
    });
    expect(await jobCount()).toBe(before);
    const ok = await submitJob(strict.ctx, { script: 'true', cpus: 1, hold: true }, { caller: alice });
    expect(ok.account).toBe('qcd');
    await strict.settle();
  });

  it('refuses a job over MaxSubmitJobs or MaxWall (400 with the Slurm reason); a job without a time limit gets MaxWall', async () => {
    await reset();
    await tree({ physics: { max_submit_jobs: 3 }, qcd: { max_wall: 60 } });
    const first = await submitAs(alice, { hold: true });
    expect(first.time_limit).toBe(60);
    await expect(submitAs(alice, { hold: true, time_limit: 61 })).rejects.toMatchObject({
      code: 'job_over_limit',
      message: expect.stringContaining('AssocMaxWallDurationPerJobLimit'),
    });
    expect((await submitAs(alice, { hold: true, account: 'theory', time_limit: 600 })).time_limit).toBe(600);
    // Two in physics' tree so far; an array of two more is over, one more is not.
    await expect(submitAs(alice, { hold: true, array: '0-1' })).rejects.toMatchObject({
      code: 'job_over_limit',
      message: expect.stringMatching(/account physics allows 3 jobs.*AssocMaxSubmitJobLimit/),
    });
    await submitAs(alice, { hold: true });
    await expect(submitAs(alice, { hold: true })).rejects.toMatchObject({ code: 'job_over_limit' });
    await expect(
      submitJobsBatch(h.ctx, [{ script: 'true', cpus: 1, hold: true }], { caller: alice }),
    ).rejects.toMatchObject({ code: 'job_over_limit' });
    expect(await jobCount()).toBe(3);
  });

  it('running limits: MaxJobs of a parent, GrpTRES cpu of a project and a user MaxJobs hold jobs back with Slurm reasons', async () => {
    await reset();
    await tree({ physics: { max_jobs: 3 }, qcd: { grp_cpus: 4 }, alice: { max_jobs: 2 } });
    await registerWorker(h.ctx, { worker_id: 'node-a', hostname: 'node-a', cpus: 32 });
    // qcd (alice): 3-CPU jobs, GrpCpus 4 lets one run; theory (alice, no user limit there): MaxJobs of physics.
    const q1 = await submitAs(alice, { cpus: 3 });
    const q2 = await submitAs(alice, { cpus: 3 });
    const t = [];
    for (let i = 0; i < 4; i++) t.push(await submitAs(alice, { account: 'theory' }));
    const other = await submitAs(bob, { account: 'chemistry' });
    await runSchedulingPass(h.ctx);
    await h.settle();
    const byId = new Map((await states()).map((j) => [Number(j.id), j]));
    expect(byId.get(q1.id)?.state).toBe('RUNNING');
    expect(byId.get(q2.id)).toMatchObject({ state: 'PENDING', reason: 'AssocGrpCpuLimit' });
    expect(byId.get(q2.id)?.reason_detail).toContain('account qcd uses at most 4 CPUs');
    expect(t.map((j) => byId.get(j.id)?.state)).toEqual(['RUNNING', 'RUNNING', 'PENDING', 'PENDING']);
    expect(byId.get(t[2]?.id as number)?.reason).toBe('AssocMaxJobsLimit');
    expect(byId.get(t[2]?.id as number)?.reason_detail).toContain('account physics runs at most 3 jobs');
    expect(byId.get(other.id)?.state).toBe('RUNNING');
    await runSchedulingPass(h.ctx);
    expect((await states()).filter((j) => j.state === 'RUNNING')).toHaveLength(4);
    // The user limit: alice at most 2 in qcd, whatever its CPUs.
    await putAccount(h.ctx, 'qcd', { grp_cpus: null }, admin);
    await putAccount(h.ctx, 'physics', { max_jobs: null }, admin);
    await h.settle();
    const q3 = await submitAs(alice, { cpus: 1 });
    await runSchedulingPass(h.ctx);
    const now = new Map((await states()).map((j) => [Number(j.id), j]));
    expect(now.get(q2.id)?.state).toBe('RUNNING');
    expect(now.get(q3.id)).toMatchObject({ state: 'PENDING', reason: 'AssocMaxJobsLimit' });
    expect(now.get(q3.id)?.reason_detail).toContain('user alice in account qcd');
    await checkInvariants(backend.db.db, backend.registry);
  });

  it('GrpTRESMins: a job that could take the account past its CPU-minutes waits with AssocGrpCPUMinutesLimit', async () => {
    await reset();
    await tree({ qcd: { grp_cpu_mins: 100 } });
    await registerWorker(h.ctx, { worker_id: 'node-a', hostname: 'node-a', cpus: 32 });
    // 90 CPU-minutes already spent (an ended attempt of 3 CPUs for 30 minutes).
    const old = await submitAs(alice, { cpus: 3, hold: true });
    await query(
      backend.db.db,
      sql`WITH j AS (UPDATE jobs SET state = 'COMPLETED', held = NULL, attempt = 1, end_time = now() WHERE id = ${old.id} RETURNING id)
          INSERT INTO job_attempts (job_id, attempt, node, start_time, end_time, state, requeued, cpus)
          SELECT id, 1, 'node-a', now() - interval '30 minutes', now(), 'COMPLETED', false, 3 FROM j`,
    );
    const big = await submitAs(alice, { cpus: 2, time_limit: 10 }); // 20 more: over
    const small = await submitAs(alice, { cpus: 1, time_limit: 10 }); // 10 more: fits
    await runSchedulingPass(h.ctx);
    const byId = new Map((await states()).map((j) => [Number(j.id), j]));
    expect(byId.get(big.id)).toMatchObject({ state: 'PENDING', reason: 'AssocGrpCPUMinutesLimit' });
    expect(byId.get(small.id)?.state).toBe('RUNNING');
  });

  it('60 concurrent passes over 10 nodes: a MaxJobs=2 account never runs a third job', {
    timeout: 180_000,
  }, async () => {
    await reset();
    await tree({ qcd: { max_jobs: 2 } });
    const { ctx, settle } = testContext(backend, testConfig({ scheduleBatchSize: 20 }));
    for (let i = 0; i < 10; i++)
      await registerWorker(ctx, { worker_id: `w${i}`, hostname: `w${i}`, cpus: 8 });
    await submitJobsBatch(
      ctx,
      Array.from({ length: 60 }, () => ({ script: 'true', cpus: 1 })),
      { caller: alice },
    );
    // Other jobs too, so that passes place something and compete for the nodes.
    await submitJobsBatch(
      ctx,
      Array.from({ length: 100 }, (_, i) => ({ script: 'true', cpus: (i % 3) + 1 })),
      { caller: bob },
    );
    await settle();
    let most = 0;
    let watching = true;
    const watcher = (async () => {
      while (watching) {
        const [row] = await query<{ n: string }>(
          backend.db.db,
          sql`SELECT count(*) AS n FROM jobs WHERE account = 'qcd' AND state = 'RUNNING'`,
        );
        most = Math.max(most, Number(row?.n));
        await new Promise((r) => setTimeout(r, 2));
      }
    })();
    try {
      await Promise.all(Array.from({ length: 60 }, () => runSchedulingPass(ctx)));
    } finally {
      watching = false;
      await watcher;
    }
    const running = await query<{ n: string }>(
      backend.db.db,
      sql`SELECT count(*) AS n FROM jobs WHERE account = 'qcd' AND state = 'RUNNING'`,
    );
    expect(Number(running[0]?.n)).toBe(2);
    expect(most).toBeLessThanOrEqual(2);
    const waiting = await query<{ reason: string }>(
      backend.db.db,
      sql`SELECT DISTINCT reason FROM jobs WHERE account = 'qcd' AND state = 'PENDING'`,
    );
    expect(waiting.map((w) => w.reason)).toEqual(['AssocMaxJobsLimit']);
    const twice = await query(
      backend.db.db,
      sql`SELECT id FROM jobs WHERE state = 'RUNNING' AND attempt <> 1`,
    );
    expect(twice).toEqual([]);
    await checkInvariants(backend.db.db, backend.registry);
  });

  it.skipIf(factory.name === 'pglite+memory')(
    'the placing statement enforces MaxJobs itself: two passes planning on stale counts on disjoint nodes place at most 2',
    { timeout: 60_000 },
    async () => {
      await reset();
      await tree({ physics: { max_jobs: 2 } });
      await registerWorker(h.ctx, { worker_id: 'left', hostname: 'left', cpus: 8 });
      await registerWorker(h.ctx, { worker_id: 'right', hostname: 'right', cpus: 8 });
      // Jobs of two accounts under physics, each only on one node (-w): the two passes plan different jobs.
      for (let i = 0; i < 3; i++) await submitAs(alice, { nodelist: 'left', hold: true });
      for (let i = 0; i < 3; i++) await submitAs(alice, { nodelist: 'right', account: 'theory', hold: true });
      await query(backend.db.db, sql`UPDATE jobs SET held = NULL, reason = 'None'`);
      // Both passes read the usage (0 running) before either commits: each plans 2 jobs on its own node.
      let arrived = 0;
      let release: () => void = () => {};
      const bothRead = new Promise<void>((resolve) => {
        release = resolve;
      });
      const dialect = new PgDialect();
      const wrapTx = (tx: Database): Database =>
        new Proxy(tx, {
          get(target, prop, receiver) {
            if (prop !== 'execute') return Reflect.get(target, prop, receiver);
            return async (statement: SQL) => {
              const result = await target.execute(statement);
              if (/FROM assoc a JOIN used u ON u\.key = a\.key/.test(dialect.sqlToQuery(statement).sql)) {
                arrived++;
                if (arrived >= 2) release();
                await Promise.race([bothRead, new Promise((r) => setTimeout(r, 5000))]);
              }
              return result;
            };
          },
        });
      const passOn = (worker: string) => {
        const db = new Proxy(backend.db.db, {
          get(target, prop, receiver) {
            if (prop !== 'transaction') return Reflect.get(target, prop, receiver);
            return (work: (tx: Database) => Promise<unknown>, config?: unknown) =>
              // biome-ignore lint/suspicious/noExplicitAny: the driver's own transaction signature
              (target as any).transaction((tx: Database) => work(wrapTx(tx)), config);
          },
        });
        const registry = new Proxy(backend.registry, {
          get(target, prop, receiver) {
            if (prop === 'liveWorkerIds') return async () => [worker];
            const value = Reflect.get(target, prop, receiver);
            return typeof value === 'function' ? value.bind(target) : value;
          },
        });
        return runSchedulingPass({ ...h.ctx, db, registry });
      };
      const results = await Promise.all([passOn('left'), passOn('right')]);
      expect(arrived).toBe(2);
      const running = await query<{ node: string }>(
        backend.db.db,
        sql`SELECT node FROM jobs WHERE state = 'RUNNING'`,
      );
      expect(running).toHaveLength(2);
      expect(results.reduce((n, r) => n + r.placed, 0)).toBe(2);
      await checkInvariants(backend.db.db, backend.registry);
    },
  );

  it('a job of an account with no limit costs the placing statement nothing new, and records its account', async () => {
    await reset();
    await registerWorker(h.ctx, { worker_id: 'node-a', hostname: 'node-a', cpus: 4 });
    const job = await submitAs(bob, { account: 'lab' });
    await runSchedulingPass(h.ctx);
    expect(await getJob(h.ctx.db, job.id)).toMatchObject({ state: 'RUNNING', account: 'lab' });
  });
});
