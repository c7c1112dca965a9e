/**
 * Slurm's priority/multifactor and classic fair-share (functions/domain/priority.ts, fairshare.ts): the
 * factors a job gets at submit and from the periodic recalculation, the weights, the submitter's adjustment,
 * and the sprio view, on every database backend.
 */
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Principal } from '../../functions/domain/auth.ts';
import { fairShareFactors } from '../../functions/domain/fairshare.ts';
import { submitJob, submitJobsBatch } from '../../functions/domain/jobs.ts';
import { runBackstop } from '../../functions/domain/maintenance.ts';
import { DEFAULT_CONFIG } from '../../functions/domain/ports.ts';
import { listFairShare, listJobPriorities, recalculatePriorities } from '../../functions/domain/priority.ts';
import { query } from '../../functions/domain/sql.ts';
import { availableBackends, type Backend, testConfig, testContext } from '../support/cluster.ts';
import { hookedDb } from '../support/hooked-db.ts';

describe('classic fair-share, F = 2^(-U/S)', () => {
  it('gives every account seen an equal share when none is configured', () => {
    const f = fairShareFactors(new Map([['a', 300]]), new Map(), ['a', 'b', 'c']);
    // S = 1/3 each; a used everything (U = 1): 2^(-3); the others used nothing: 2^0.
    expect(f.get('a')).toEqual({ sharesNorm: 1 / 3, usageRaw: 300, usageNorm: 1, factor: 0.125 });
    expect(f.get('b')?.factor).toBe(1);
    expect(f.get('c')?.factor).toBe(1);
  });

  it('is 1 for everyone before anything ran, and halves each time usage reaches the share again', () => {
    expect([...fairShareFactors(new Map(), new Map(), ['a', 'b']).values()].map((f) => f.factor)).toEqual([
      1, 1,
    ]);
    // Used exactly its share (U = S = 1/2): 2^-1.
    const even = fairShareFactors(
      new Map([
        ['a', 50],
        ['b', 50],
      ]),
      new Map(),
      [],
    );
    expect(even.get('a')?.factor).toBe(0.5);
    expect(even.get('b')?.factor).toBe(0.5);
  });

  it('normalizes configured shares down the tree, and an account with no shares has no claim', () => {
    const shares = new Map([
      ['org', { shares: 1, parent: null }],
      ['small', { shares: 1, parent: 'org' }],
      ['big', { shares: 3, parent: 'org' }],
      ['idle', { shares: 0, parent: null }],
    ]);
    // 'other' is not configured: shares 1 at the top, beside org and idle.
    const f = fairShareFactors(
      new Map([
        ['big', 75],
        ['small', 25],
        ['idle', 0],
      ]),
      shares,
      ['other'],
    );
    // Top: org 1, idle 0, other 1 -> org 1/2; under org: small 1/4, big 3/4 of that.
    expect(f.get('org')?.sharesNorm).toBe(0.5);
    expect(f.get('small')?.sharesNorm).toBe(0.125);
    expect(f.get('big')?.sharesNorm).toBe(0.375);
    expect(f.get('other')?.sharesNorm).toBe(0.5);
    // big: U 0.75 over S 0.375 -> 2^-2; small: 0.25 / 0.125 -> 2^-2 as well (each used twice its share).
    expect(f.get('big')?.factor).toBe(0.25);
    expect(f.get('small')?.factor).toBe(0.25);
    expect(f.get('idle')?.factor).toBe(0);
  });
});

const backends = await availableBackends();

describe.each(backends)('multifactor priority on $name', (factory) => {
  let backend: Backend;
  beforeAll(async () => {
    backend = await factory.create();
    // No live worker: every job stays pending.
    await backend.db.db.execute(sql`UPDATE workers SET status = 'down' WHERE status <> 'down'`);
  });
  afterAll(async () => {
    await backend?.close();
  });

  const history = (account: string, cpus: number, hoursAgo: number) =>
    backend.db.db.execute(sql`WITH h AS (
        INSERT INTO jobs (name, script, cpus, account, state, exit_code, submit_time, start_time, end_time, attempt)
        VALUES ('history', 'true', ${cpus}, ${account}, 'COMPLETED', '0:0',
                now() - make_interval(hours => ${hoursAgo + 1}), now() - make_interval(hours => ${hoursAgo + 1}),
                now() - make_interval(hours => ${hoursAgo}), 1)
        RETURNING id
      )
      INSERT INTO job_attempts (job_id, attempt, node, start_time, end_time, state, exit_code, requeued, cpus)
      SELECT id, 1, 'old', now() - make_interval(hours => ${hoursAgo + 1}), now() - make_interval(hours => ${hoursAgo}),
             'COMPLETED', '0:0', false, ${cpus} FROM h`);

  it('reads one row and writes nothing when no job is pending', async () => {
    const statements: string[] = [];
    const db = hookedDb(backend.db.db, { before: (text) => statements.push(text) });
    expect(await recalculatePriorities({ db, config: testConfig() })).toEqual({ updated: 0, accounts: 0 });
    expect(statements).toHaveLength(1);
    expect(statements[0]).toMatch(
      /^SELECT DISTINCT coalesce\(account, ''\) AS account FROM jobs WHERE state = 'PENDING'/,
    );
  });

  it('starts a job with its account’s last fair-share factor, adds the submitter’s priority, and keeps it apart', {
    timeout: 60_000,
  }, async () => {
    const { ctx } = testContext(backend);
    await history('p-heavy', 10, 1);
    // Pending jobs of both accounts make the recalculation see them (equal shares: 1/2 each).
    await submitJobsBatch(ctx, [
      { script: 'true', cpus: 1, account: 'p-heavy' },
      { script: 'true', cpus: 1, account: 'p-light' },
    ]);
    const first = await recalculatePriorities(ctx);
    expect(first.accounts).toBe(2);
    expect(first.updated).toBe(1); // heavy's job: 11000 -> 3500; light's already had 1.
    // Nothing moved since: nothing written.
    expect((await recalculatePriorities(ctx)).updated).toBe(0);

    const heavy = await submitJob(ctx, { script: 'true', cpus: 1, account: 'p-heavy' });
    const light = await submitJob(ctx, { script: 'true', cpus: 1, account: 'p-light', priority: -5 });
    const unknown = await submitJob(ctx, { script: 'true', cpus: 1, account: 'p-new' });
    expect(heavy.computed_priority).toBe(2500 + 1000);
    // The API's priority is what the submitter asked; the computed one adds it.
    expect(light.priority).toBe(-5);
    expect(light.computed_priority).toBe(10_000 + 1000 - 5);
    expect(unknown.computed_priority).toBe(11_000);
    const [row] = await query<{ priority: number; requested_priority: number; priority_factors: unknown }>(
      ctx.db,
      sql`SELECT priority, requested_priority, priority_factors FROM jobs WHERE id = ${light.id}`,
    );
    expect(row).toMatchObject({ priority: 10_995, requested_priority: -5 });
    expect(row?.priority_factors).toEqual({ age: 0, fairshare: 1, jobsize: 0, partition: 1, qos: 0 });
  });

  it('ages a job up to PriorityMaxAge, and weighs job size, partition tiers and QOS', {
    timeout: 60_000,
  }, async () => {
    const config = testConfig({
      priority: {
        ...DEFAULT_CONFIG.priority,
        weightJobSize: 500,
        weightQos: 2000,
        qos: { high: 100, normal: 10 },
      },
    });
    const { ctx } = testContext(backend, config);
    await backend.db.db.execute(sql`INSERT INTO partitions (name, priority_tier) VALUES ('p-low', 1), ('p-high', 4)
      ON CONFLICT (name) DO UPDATE SET priority_tier = excluded.priority_tier`);
    await backend.db.db.execute(
      sql`INSERT INTO workers (id, hostname, cpus, status, session) VALUES ('p-w1', 'p-w1', 8, 'draining', 'p-s1')`,
    );
    const low = await submitJob(ctx, { script: 'true', cpus: 2, account: 'p-tiers', partition: 'p-low' });
    const high = await submitJob(ctx, {
      script: 'true',
      cpus: 2,
      account: 'p-tiers',
      partition: 'p-high',
      qos: 'high',
    });
    const normal = await submitJob(ctx, { script: 'true', cpus: 4, account: 'p-tiers', qos: 'normal' });
    // Eligible for 3.5 days of PriorityMaxAge's 7: age 0.5.
    await backend.db.db.execute(
      sql`UPDATE jobs SET eligible_time = now() - interval '84 hours' WHERE id = ${low.id}`,
    );
    await recalculatePriorities(ctx);
    const view = await listJobPriorities(ctx, { ids: [low.id, high.id, normal.id] }, ANONYMOUS_ADMIN);
    const byId = new Map(view.jobs.map((j) => [j.job_id, j]));
    expect(view.weights).toEqual({ age: 1000, fairshare: 10_000, jobsize: 500, partition: 1000, qos: 2000 });
    const cpus = await totalCpus();
    // low: age 0.5, tier 1 of 4, 2 of the cluster's CPUs, no QOS.
    expect(byId.get(low.id)?.factors).toEqual({
      age: 0.5,
      fairshare: 1,
      jobsize: round3(2 / cpus),
      partition: 0.25,
      qos: 0,
    });
    // high: tier 4 of 4 and the top QOS.
    expect(byId.get(high.id)?.factors).toMatchObject({ age: 0, partition: 1, qos: 1 });
    // normal: the default partition's tier (none configured here has another: 1 of 4); QOS 10 of 100.
    expect(byId.get(normal.id)?.factors).toMatchObject({ qos: 0.1, jobsize: round3(4 / cpus) });
    const h = byId.get(high.id);
    expect(h?.priority).toBe(
      Math.round(10_000 * 1 + 1000 * 1 + 2000 * 1 + 500 * (h?.factors.jobsize ?? Number.NaN)),
    );
    expect(h?.weighted).toEqual({
      age: 0,
      fairshare: 10_000,
      jobsize: 500 * (h?.factors.jobsize ?? 0),
      partition: 1000,
      qos: 2000,
    });
    expect(byId.get(low.id)?.priority).toBe(Math.round(500 + 10_000 + 250 + 500 * round3(2 / cpus)));
  });

  it('is recalculated by the backstop at most once a PriorityCalcPeriod', { timeout: 60_000 }, async () => {
    const { ctx } = testContext(backend);
    const job = await submitJob(ctx, { script: 'true', cpus: 1, account: 'b-heavy' });
    await history('b-heavy', 20, 1);
    await runBackstop(ctx);
    const [fair] = (await listFairShare(ctx)).filter((a) => a.account === 'b-heavy');
    expect(fair?.fairshare).toBeLessThan(1);
    const view = async () => (await listJobPriorities(ctx, { ids: [job.id] }, ANONYMOUS_ADMIN)).jobs[0];
    const after = await view();
    expect(after?.factors.fairshare).toBe(round3(fair?.fairshare ?? 1));
    expect(after?.priority).toBe(
      Math.round(10_000 * (after?.factors.fairshare ?? 1) + 1000 * (after?.factors.partition ?? 0)),
    );
    expect(after?.priority).toBeLessThan(job.computed_priority);
    // More usage now changes nothing until the next period.
    await history('b-heavy', 100, 0);
    await runBackstop(ctx);
    expect((await view())?.priority).toBe(after?.priority);
  });

  it('shows a token only its owner’s pending jobs; admins and the open cluster see all', {
    timeout: 60_000,
  }, async () => {
    const { ctx } = testContext(backend);
    const alice = await submitJob(ctx, { script: 'true', cpus: 1 }, { owner: 'p-alice' });
    const bob = await submitJob(ctx, { script: 'true', cpus: 1 }, { owner: 'p-bob' });
    const asAlice: Principal = {
      kind: 'token',
      tokenId: 1,
      name: 'a',
      owner: 'p-alice',
      scopes: ['jobs:read'],
    };
    const mine = await listJobPriorities(ctx, {}, asAlice);
    expect(mine.jobs.map((j) => j.job_id)).toEqual([alice.id]);
    const all = await listJobPriorities(ctx, { owner: ['p-alice', 'p-bob'] }, ANONYMOUS_ADMIN);
    expect(all.jobs.map((j) => j.job_id).sort()).toEqual([alice.id, bob.id].sort());
  });

  const totalCpus = async () =>
    Number(
      (
        await query<{ n: number }>(
          backend.db.db,
          sql`SELECT coalesce(sum(cpus), 0)::int AS n FROM workers WHERE status <> 'down'`,
        )
      )[0]?.n,
    );
});

const round3 = (x: number) => Math.round(x * 1000) / 1000;
const ANONYMOUS_ADMIN: Principal = {
  kind: 'anonymous',
  tokenId: null,
  name: 'anonymous',
  owner: null,
  scopes: [],
};
