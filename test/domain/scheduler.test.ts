import { type SQL, sql } from 'drizzle-orm';
import { PgDialect } from 'drizzle-orm/pg-core';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { submitJob, submitJobsBatch } from '../../functions/domain/jobs.ts';
import type { Database } from '../../functions/domain/ports.ts';
import { runSchedulingPass } from '../../functions/domain/scheduler.ts';
import { query } from '../../functions/domain/sql.ts';
import { registerWorker } from '../../functions/domain/workers.ts';
import { availableBackends, type Backend, testContext } from '../support/cluster.ts';
import { checkInvariants } from '../support/invariants.ts';
import { REDIS_URL } from '../support/services.ts';

const backends = await availableBackends();

/**
 * WAL written for this database while `work` runs, from pg_walinspect: the server's other databases (other
 * test files) write WAL meanwhile, which pg_current_wal_lsn() alone would count.
 */
async function walOfThisDatabase(db: Database, work: () => Promise<unknown>): Promise<number> {
  const lsn = async () =>
    (await query<{ l: string }>(db, sql`SELECT pg_current_wal_flush_lsn()::text AS l`))[0]?.l;
  const from = await lsn();
  await work();
  const to = await lsn();
  const [row] = await query<{ bytes: string }>(
    db,
    sql`WITH r AS (SELECT * FROM pg_get_wal_records_info(${from}::pg_lsn, ${to}::pg_lsn)),
             here AS (SELECT '%/' || oid || '/%' AS pattern FROM pg_database WHERE datname = current_database()),
             ours AS (SELECT DISTINCT xid FROM r, here WHERE r.block_ref LIKE here.pattern AND r.xid <> 0)
        SELECT coalesce(sum(record_length), 0) AS bytes FROM r, here
        WHERE r.xid IN (SELECT xid FROM ours) OR r.block_ref LIKE here.pattern`,
  );
  return Number(row?.bytes);
}

const jobsOf = (db: Database) =>
  query<{
    id: string;
    state: string;
    reason: string | null;
    reason_detail: string | null;
    node: string | null;
    reserved_worker: string | null;
  }>(
    db,
    sql`SELECT id, state, reason, reason_detail, node, to_jsonb(jobs) ->> 'reserved_worker' AS reserved_worker FROM jobs ORDER BY id`,
  );

describe.each(backends)('scheduler on $name', (factory) => {
  let backend: Backend;
  beforeAll(async () => {
    backend = await factory.create();
  });
  afterAll(async () => {
    await backend?.close();
  });

  async function reset() {
    await backend.db.db.execute(
      sql`TRUNCATE jobs, job_dependencies, job_attempts, resource_allocations, workers, worker_gres, job_output, job_output_chunks, submission_keys`,
    );
    const [row] = await query<{ v: string }>(
      backend.db.db,
      sql`UPDATE cluster_state SET allocated_cpus = 0, allocated_memory_mb = 0, allocated_gpus = 0, allocation_version = allocation_version + 1 RETURNING allocation_version AS v`,
    );
    await backend.registry.setAllocationSnapshot(0, Number(row?.v));
  }

  it('places a 64-CPU job on one node, never across two nodes with 36 free each', async () => {
    await reset();
    const { ctx, settle } = testContext(backend);
    for (const id of ['node-a', 'node-b']) {
      await registerWorker(ctx, { worker_id: id, hostname: id, cpus: 96 });
    }
    await settle();
    // 60 CPUs busy on each node: 72 free in the cluster, but no node has 64.
    await submitJob(ctx, { script: 'true', cpus: 60 });
    await submitJob(ctx, { script: 'true', cpus: 60 });
    await settle();
    await runSchedulingPass(ctx);
    const big = await submitJob(ctx, { script: 'true', cpus: 64 });
    await settle();
    await runSchedulingPass(ctx);
    const jobs = await query<{ id: number; state: string; node: string | null; cpus: number }>(
      backend.db.db,
      sql`SELECT id, state, node, cpus FROM jobs ORDER BY id`,
    );
    expect(
      jobs
        .filter((j) => Number(j.cpus) === 60)
        .map((j) => j.node)
        .sort(),
    ).toEqual(['node-a', 'node-b']);
    expect(jobs.find((j) => Number(j.id) === big.id)?.state).toBe('PENDING');
    await checkInvariants(backend.db.db, backend.registry);
  });

  it('200 concurrent scheduling passes over 10 workers never over-allocate or start a job twice', {
    timeout: 120_000,
  }, async () => {
    await reset();
    const { ctx, settle } = testContext(backend, {
      ...testContext(backend).ctx.config,
      scheduleBatchSize: 50,
    });
    for (let i = 0; i < 10; i++) {
      await registerWorker(ctx, { worker_id: `w${i}`, hostname: `w${i}`, cpus: 16 });
    }
    // 400 jobs of 1-8 CPUs: 1,800 CPUs wanted, 160 available.
    for (let i = 0; i < 400; i++) {
      await submitJob(ctx, { script: 'true', cpus: (i % 8) + 1 });
    }
    await settle();
    await Promise.all(Array.from({ length: 200 }, () => runSchedulingPass(ctx)));
    const perWorker = await query<{ node: string; cpus: string; n: string }>(
      backend.db.db,
      sql`SELECT node, sum(cpus) AS cpus, count(*) AS n FROM jobs WHERE state = 'RUNNING' GROUP BY node`,
    );
    expect(perWorker.length).toBe(10);
    for (const w of perWorker) expect(Number(w.cpus)).toBeLessThanOrEqual(16);
    const attempts = await query<{ attempt: number }>(
      backend.db.db,
      sql`SELECT attempt FROM jobs WHERE state = 'RUNNING' AND attempt <> 1`,
    );
    expect(attempts).toEqual([]);
    const allocations = await query<{ n: string }>(
      backend.db.db,
      sql`SELECT count(*) AS n FROM resource_allocations`,
    );
    const running = perWorker.reduce((s, w) => s + Number(w.n), 0);
    expect(Number(allocations[0]?.n)).toBe(running);
    await checkInvariants(backend.db.db, backend.registry);
  });

  it('200 concurrent passes with memory, GPUs, gres, partitions and exclusive jobs never over-allocate a resource, give a GPU twice or start a job twice', {
    timeout: 180_000,
  }, async () => {
    await reset();
    const { ctx, settle } = testContext(backend, {
      ...testContext(backend).ctx.config,
      scheduleBatchSize: 40,
    });
    const gpus = (n: number, model: string) => Array.from({ length: n }, (_, index) => ({ index, model }));
    for (let i = 0; i < 4; i++) {
      await registerWorker(ctx, {
        worker_id: `gpu${i}`,
        hostname: `gpu${i}`,
        cpus: 16,
        memory_mb: 64_000,
        gpus: gpus(i % 2 === 0 ? 4 : 2, i < 2 ? 'a100' : 'v100'),
        gres: { nvme: 1 },
        features: ['avx512', i % 2 === 0 ? 'ssd' : 'hdd'],
        partitions: ['gpu'],
      });
    }
    for (let i = 0; i < 6; i++) {
      await registerWorker(ctx, {
        worker_id: `cpu${i}`,
        hostname: `cpu${i}`,
        cpus: 16,
        memory_mb: 32_000,
        features: i % 2 === 0 ? ['avx512'] : [],
        gres: { license: 3 },
      });
    }
    const jobs = Array.from({ length: 400 }, (_, i) => {
      const kind = i % 5;
      if (kind === 0) return { script: 'true', cpus: (i % 4) + 1, partition: 'gpu', gpus: (i % 3) + 1 };
      if (kind === 1) return { script: 'true', cpus: 2, partition: 'gpu', gpus: 'a100:1', gres: 'nvme:1' };
      if (kind === 2) return { script: 'true', cpus: (i % 8) + 1, memory_per_node: `${(i % 6) + 1}G` };
      if (kind === 3) return { script: 'true', cpus: 1, gres: 'license:2', constraint: 'avx512' };
      return {
        script: 'true',
        cpus: 1,
        exclusive: i % 2 === 0,
        partition: i % 2 === 0 ? 'default' : 'gpu,default',
      };
    });
    await submitJobsBatch(ctx, jobs);
    await settle();
    await Promise.all(Array.from({ length: 200 }, () => runSchedulingPass(ctx)));
    const running = await query<{
      id: string;
      node: string;
      attempt: number;
      allocated_gpus: number[] | null;
    }>(backend.db.db, sql`SELECT id, node, attempt, allocated_gpus FROM jobs WHERE state = 'RUNNING'`);
    expect(running.length).toBeGreaterThan(20);
    expect(running.filter((j) => Number(j.attempt) !== 1)).toEqual([]);
    const gpuHolders = new Map<string, string>();
    for (const job of running) {
      for (const index of job.allocated_gpus ?? []) {
        const key = `${job.node}:${index}`;
        expect(gpuHolders.get(key), `GPU ${key} given twice`).toBeUndefined();
        gpuHolders.set(key, job.id);
      }
    }
    const gpuJobsOffGpuNodes = await query<{ id: string }>(
      backend.db.db,
      sql`SELECT id FROM jobs WHERE state = 'RUNNING' AND gpus > 0 AND node NOT LIKE 'gpu%'`,
    );
    expect(gpuJobsOffGpuNodes).toEqual([]);
    await checkInvariants(backend.db.db, backend.registry);
  });

  it('40 concurrent passes over capped arrays never start a task twice nor run more tasks of an array than its %N', {
    timeout: 180_000,
  }, async () => {
    await reset();
    const { ctx, settle } = testContext(backend, {
      ...testContext(backend).ctx.config,
      scheduleBatchSize: 30,
    });
    for (let i = 0; i < 10; i++) {
      await registerWorker(ctx, { worker_id: `w${i}`, hostname: `w${i}`, cpus: 16 });
    }
    // 160 CPUs; the arrays could fill them many times over, their caps allow 3 + 5 + 1 + 7 tasks.
    const caps = [3, 5, 1, 7];
    const arrays = [];
    for (const [k, cap] of caps.entries()) {
      arrays.push((await submitJob(ctx, { script: 'true', cpus: 1 + (k % 2), array: `0-99%${cap}` })).id);
    }
    // Singles behind them (more than the CPUs left), so that passes place other jobs too and the nodes fill.
    await submitJobsBatch(
      ctx,
      Array.from({ length: 80 }, (_, i) => ({ script: 'true', cpus: (i % 4) + 1 })),
    );
    await settle();
    await Promise.all(Array.from({ length: 40 }, () => runSchedulingPass(ctx)));
    const running = await query<{ array_job_id: string; n: string }>(
      backend.db.db,
      sql`SELECT array_job_id, count(*) AS n FROM jobs WHERE state = 'RUNNING' AND array_job_id IS NOT NULL
          GROUP BY array_job_id`,
    );
    const byArray = new Map(running.map((r) => [Number(r.array_job_id), Number(r.n)]));
    // Each array runs exactly its cap (there is room for all of them), never more.
    expect(arrays.map((id) => byArray.get(id))).toEqual(caps);
    const twice = await query<{ id: string }>(
      backend.db.db,
      sql`SELECT id FROM jobs WHERE state = 'RUNNING' AND attempt <> 1`,
    );
    expect(twice).toEqual([]);
    const waiting = await query<{ reason: string; n: string }>(
      backend.db.db,
      sql`SELECT reason, count(*) AS n FROM jobs WHERE state = 'PENDING' AND array_job_id IS NOT NULL GROUP BY reason`,
    );
    expect(waiting.map((w) => w.reason)).toContain('JobArrayTaskLimit');
    await checkInvariants(backend.db.db, backend.registry);
  });

  it.skipIf(factory.name === 'pglite+memory')(
    'the placing statement enforces the %N cap itself: two passes planning on stale counts on disjoint nodes place at most N',
    { timeout: 60_000 },
    async () => {
      await reset();
      const { ctx, settle } = testContext(backend);
      await registerWorker(ctx, { worker_id: 'left', hostname: 'left', cpus: 8 });
      await registerWorker(ctx, { worker_id: 'right', hostname: 'right', cpus: 8 });
      // Submitted held, so that the submission's own pass places nothing; released without a pass.
      const array = await submitJob(ctx, { script: 'true', cpus: 1, array: '0-9%2', hold: true });
      await settle();
      // Tasks 0-1 may only run on `left`, 2-9 only on `right` (-w): the two passes plan different tasks.
      await query(
        backend.db.db,
        sql`UPDATE jobs SET held = NULL, reason = 'None',
              nodelist = CASE WHEN array_task_id < 2 THEN ARRAY['left'] ELSE ARRAY['right'] END
            WHERE array_job_id = ${array.id}`,
      );
      // Both passes read the cap's running count (0) before either commits: each plans 2 tasks on its own
      // node. Only the placing statement, counting under the array row's lock, can keep the total at 2.
      let arrived = 0;
      let release: () => void = () => {};
      const bothRead = new Promise<void>((resolve) => {
        release = resolve;
      });
      const dialect = new PgDialect();
      const barrier = async () => {
        arrived++;
        if (arrived >= 2) release();
        await Promise.race([bothRead, new Promise((r) => setTimeout(r, 5000))]);
      };
      const wrapTx = (tx: Database): Database =>
        new Proxy(tx, {
          get(target, prop, receiver) {
            if (prop !== 'execute') return Reflect.get(target, prop, receiver);
            return async (statement: SQL) => {
              const result = await target.execute(statement);
              if (/FROM job_arrays a\s+WHERE a\.array_job_id = ANY/.test(dialect.sqlToQuery(statement).sql)) {
                await barrier();
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
        return runSchedulingPass({ ...ctx, db, registry });
      };
      const results = await Promise.all([passOn('left'), passOn('right')]);
      expect(arrived).toBe(2);
      const running = await query<{ node: string; array_task_id: number }>(
        backend.db.db,
        sql`SELECT node, array_task_id FROM jobs WHERE array_job_id = ${array.id} AND state = 'RUNNING'`,
      );
      expect(running).toHaveLength(2);
      expect(results.reduce((n, r) => n + r.placed, 0)).toBe(2);
      await checkInvariants(backend.db.db, backend.registry);
    },
  );

  it('reports no workers when none is live', async () => {
    await reset();
    const { ctx } = testContext(backend);
    await submitJob(ctx, { script: 'true', cpus: 1 });
    expect(await runSchedulingPass(ctx)).toMatchObject({ placed: 0, skipped: 'no_workers' });
  });

  it('a 1-CPU job behind 1,000 jobs larger than every node runs, and every waiting job has a reason', {
    timeout: 120_000,
  }, async () => {
    await reset();
    const { ctx, settle } = testContext(backend);
    await registerWorker(ctx, { worker_id: 'four', hostname: 'four', cpus: 4 });
    // A known node large enough, but down: the big jobs are admitted and wait for it.
    await registerWorker(ctx, { worker_id: 'eight', hostname: 'eight', cpus: 8 });
    await query(backend.db.db, sql`UPDATE workers SET status = 'down' WHERE id = 'eight'`);
    for (let b = 0; b < 2; b++) {
      await submitJobsBatch(
        ctx,
        Array.from({ length: 500 }, () => ({ script: 'true', cpus: 8 })),
      );
    }
    const small = await submitJob(ctx, { script: 'true', cpus: 1 });
    await settle();
    await runSchedulingPass(ctx);
    const jobs = await jobsOf(backend.db.db);
    expect(jobs.find((j) => Number(j.id) === small.id)).toMatchObject({ state: 'RUNNING', node: 'four' });
    expect(
      jobs.filter(
        (j) =>
          j.state === 'PENDING' &&
          !(
            j.reason === 'Resources' &&
            j.reason_detail?.includes('needs 8 CPUs') &&
            j.reason_detail.includes('has 4')
          ),
      ),
    ).toEqual([]);
    await checkInvariants(backend.db.db, backend.registry);
  });

  it('looks past jobs that fit a node but can neither start nor reserve one; those behind get a reason', {
    timeout: 120_000,
  }, async () => {
    await reset();
    const { ctx, settle } = testContext(backend, {
      ...testContext(backend).ctx.config,
      scheduleBatchSize: 20,
    });
    await registerWorker(ctx, { worker_id: 'big', hostname: 'big', cpus: 96 });
    await registerWorker(ctx, { worker_id: 'small', hostname: 'small', cpus: 4 });
    await submitJob(ctx, { script: 'true', cpus: 90 });
    await settle();
    await runSchedulingPass(ctx);
    // 100 jobs of 64 CPUs: the first reserves 'big', the others wait for it; 'small' is too small for them.
    await submitJobsBatch(
      ctx,
      Array.from({ length: 100 }, () => ({ script: 'true', cpus: 64 })),
    );
    const one = await submitJob(ctx, { script: 'true', cpus: 1 });
    await settle();
    await runSchedulingPass(ctx);
    const jobs = await jobsOf(backend.db.db);
    expect(jobs.find((j) => Number(j.id) === one.id)).toMatchObject({ state: 'RUNNING', node: 'small' });
    const waiting = jobs.filter((j) => j.state === 'PENDING');
    expect(waiting).toHaveLength(100);
    expect(waiting[0]).toMatchObject({
      reserved_worker: 'big',
      reason: 'Resources',
      reason_detail: expect.stringContaining('reserved big'),
    });
    expect(waiting.filter((j) => j.reason === null)).toEqual([]);
    await checkInvariants(backend.db.db, backend.registry);
  });

  it('keeps a reservation on its job across passes: a later job never takes the reserved worker', {
    timeout: 60_000,
  }, async () => {
    await reset();
    const { ctx, settle } = testContext(backend);
    await registerWorker(ctx, { worker_id: 'r', hostname: 'r', cpus: 8 });
    await registerWorker(ctx, { worker_id: 'x', hostname: 'x', cpus: 8 });
    await settle();
    const setStatus = (id: string, status: string) =>
      query(backend.db.db, sql`UPDATE workers SET status = ${status} WHERE id = ${id}`);
    // r runs a 3-CPU job, x a 4-CPU job (each placed while the other worker is set aside).
    await setStatus('x', 'draining');
    await submitJob(ctx, { script: 'true', cpus: 3 });
    await settle();
    await runSchedulingPass(ctx);
    await setStatus('x', 'ready');
    await setStatus('r', 'draining');
    const xJob = await submitJob(ctx, { script: 'true', cpus: 4 });
    await settle();
    await runSchedulingPass(ctx);
    await setStatus('r', 'ready');
    // The whole-node job reserves r (5 free against 4); a 2-CPU job goes to x.
    const whole = await submitJob(ctx, { script: 'true', cpus: 8 });
    await submitJob(ctx, { script: 'true', cpus: 2 });
    await settle();
    await runSchedulingPass(ctx);
    let jobs = await jobsOf(backend.db.db);
    expect(jobs.find((j) => Number(j.id) === whole.id)).toMatchObject({
      state: 'PENDING',
      reserved_worker: 'r',
    });
    // x's 4-CPU job ends: x has 6 free, r still 5. A 5-CPU job must not take r.
    await query(
      backend.db.db,
      sql`WITH j AS (UPDATE jobs SET state = 'COMPLETED', end_time = now() WHERE id = ${xJob.id} RETURNING node, cpus),
               a AS (UPDATE resource_allocations SET released = true, released_time = now() WHERE job_id = ${xJob.id}),
               w AS (UPDATE workers SET allocated_cpus = allocated_cpus - j.cpus FROM j WHERE workers.id = j.node)
          UPDATE cluster_state SET allocated_cpus = allocated_cpus - (SELECT cpus FROM j), allocation_version = allocation_version + 1`,
    );
    const five = await submitJob(ctx, { script: 'true', cpus: 5 });
    await settle();
    await runSchedulingPass(ctx);
    jobs = await jobsOf(backend.db.db);
    expect(jobs.find((j) => Number(j.id) === five.id)).toMatchObject({ state: 'RUNNING', node: 'x' });
    expect(jobs.find((j) => Number(j.id) === whole.id)).toMatchObject({
      state: 'PENDING',
      reserved_worker: 'r',
    });
    await checkInvariants(backend.db.db);
  });

  it.runIf(factory.name !== 'pglite+memory')(
    'still places after the registry lost every key (a Redis flush): Postgres judges liveness',
    { timeout: 60_000 },
    async () => {
      await reset();
      const { ctx, settle, logger } = testContext(backend);
      await registerWorker(ctx, { worker_id: 'flushed', hostname: 'flushed', cpus: 4 });
      await settle();
      const redis = new Redis(REDIS_URL);
      try {
        const keys = await redis.keys(`${backend.keyPrefix}*`);
        if (keys.length > 0) await redis.del(...keys);
      } finally {
        redis.disconnect();
      }
      expect(await backend.registry.liveWorkerIds()).toEqual([]);
      const job = await submitJob(ctx, { script: 'true', cpus: 1 });
      await settle();
      expect(await runSchedulingPass(ctx)).toMatchObject({ workers: 1 });
      expect((await jobsOf(backend.db.db)).find((j) => Number(j.id) === job.id)).toMatchObject({
        state: 'RUNNING',
        node: 'flushed',
      });
      expect(logger.has('No active workers')).toBe(false);
    },
  );

  it.runIf(factory.name === 'postgres+redis')(
    'a pass over a stuck queue of 10,000 jobs writes less than 8 KiB of WAL, and a small job still runs',
    { timeout: 300_000 },
    async () => {
      await reset();
      const { ctx, settle } = testContext(backend);
      await query(backend.db.db, sql`CREATE EXTENSION IF NOT EXISTS pg_walinspect`);
      for (let i = 0; i < 50; i++) {
        await registerWorker(ctx, { worker_id: `n${i}`, hostname: `n${i}`, cpus: 32 });
      }
      // Known, large enough and down: the 64-CPU jobs are admitted and wait for it.
      await registerWorker(ctx, { worker_id: 'big', hostname: 'big', cpus: 64 });
      await query(backend.db.db, sql`UPDATE workers SET status = 'down' WHERE id = 'big'`);
      for (let b = 0; b < 10; b++) {
        await submitJobsBatch(
          ctx,
          Array.from({ length: 1000 }, () => ({ script: 'true', cpus: 64 })),
        );
      }
      await settle();
      await runSchedulingPass(ctx);
      // The least of three passes: autovacuum of this database may write meanwhile.
      const idle: number[] = [];
      for (let i = 0; i < 3; i++)
        idle.push(await walOfThisDatabase(backend.db.db, () => runSchedulingPass(ctx)));
      console.log(`WAL of an idle pass over 10,000 stuck jobs: ${idle.join(', ')} bytes`);
      expect(Math.min(...idle)).toBeLessThan(8 * 1024);
      const one = await submitJob(ctx, { script: 'true', cpus: 1 });
      await settle();
      await runSchedulingPass(ctx);
      expect((await jobsOf(backend.db.db)).find((j) => Number(j.id) === one.id)?.state).toBe('RUNNING');
    },
  );

  it('never places a job before its begin_time (its reason is BeginTime), in a single or a batch submission', async () => {
    await reset();
    const { ctx, settle } = testContext(backend);
    await registerWorker(ctx, { worker_id: 'node-a', hostname: 'node-a', cpus: 8 });
    const later = new Date(Date.now() + 3_600_000).toISOString();
    const future = await submitJob(ctx, { script: 'true', cpus: 1, begin_time: later });
    const past = await submitJob(ctx, {
      script: 'true',
      cpus: 1,
      begin_time: new Date(Date.now() - 60_000).toISOString(),
    });
    const { jobs: batch } = await submitJobsBatch(ctx, [
      { script: 'true', cpus: 1, begin_time: later },
      { script: 'true', cpus: 1 },
    ]);
    expect(future.reason).toBe('BeginTime');
    expect(future.begin_time).toBe(later);
    expect(future.eligible_time).toBe(later);
    expect(new Date(past.eligible_time as string).getTime()).toBe(
      new Date(past.submit_time as string).getTime(),
    );
    expect(batch[0]?.reason).toBe('BeginTime');
    await settle();
    await runSchedulingPass(ctx);
    await runSchedulingPass(ctx);
    const rows = await jobsOf(backend.db.db);
    const state = (id: number) => rows.find((j) => Number(j.id) === id);
    for (const id of [future.id, batch[0]?.id as number]) {
      expect(state(id)).toMatchObject({ state: 'PENDING', reason: 'BeginTime', reserved_worker: null });
      expect(state(id)?.reason_detail).toBe(`not eligible before ${later.slice(0, 19)}Z`);
    }
    expect(state(past.id)?.state).toBe('RUNNING');
    expect(state(batch[1]?.id as number)?.state).toBe('RUNNING');
    // Its time comes: the next pass places it.
    await query(
      backend.db.db,
      sql`UPDATE jobs SET begin_time = now() - interval '1 second' WHERE id = ${future.id}`,
    );
    await runSchedulingPass(ctx);
    expect((await jobsOf(backend.db.db)).find((j) => Number(j.id) === future.id)?.state).toBe('RUNNING');
    await checkInvariants(backend.db.db, backend.registry);
  });
});
