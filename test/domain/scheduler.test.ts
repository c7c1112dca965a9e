import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { submitJob } from '../../functions/domain/jobs.ts';
import { runSchedulingPass } from '../../functions/domain/scheduler.ts';
import { query } from '../../functions/domain/sql.ts';
import { registerWorker } from '../../functions/domain/workers.ts';
import { availableBackends, type Backend, testContext } from '../support/cluster.ts';
import { checkInvariants } from '../support/invariants.ts';

const backends = await availableBackends();

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
      sql`TRUNCATE jobs, resource_allocations, workers, job_output, job_output_chunks, submission_keys`,
    );
    const [row] = await query<{ v: string }>(
      backend.db.db,
      sql`UPDATE cluster_state SET allocated_cpus = 0, allocation_version = allocation_version + 1 RETURNING allocation_version AS v`,
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

  it('reports no workers when none is live', async () => {
    await reset();
    const { ctx } = testContext(backend);
    await submitJob(ctx, { script: 'true', cpus: 1 });
    expect(await runSchedulingPass(ctx)).toMatchObject({ placed: 0, skipped: 'no_workers' });
  });
});
