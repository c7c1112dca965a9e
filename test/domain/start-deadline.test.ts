/**
 * The start deadline (review 2026-12-06, M3): an assignment its agent never reports started must not hold
 * its CPUs forever. `endUnstartedJobs` (the backstop) ends it FAILED once `startDeadlineSeconds` have passed
 * since its placement, counted from when reaping last resumed.
 */
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getJob, submitJob } from '../../functions/domain/jobs.ts';
import { endUnstartedJobs, reapLostWorkers } from '../../functions/domain/reaper.ts';
import { runSchedulingPass } from '../../functions/domain/scheduler.ts';
import { query } from '../../functions/domain/sql.ts';
import {
  claimAssignments,
  heartbeatWorker,
  registerWorker,
  reportStarted,
} from '../../functions/domain/workers.ts';
import { configFromEnv, parseNodeEnv } from '../../functions/node/env.ts';
import { configFromWorkerEnv, parseWorkerEnv } from '../../functions/worker-env.ts';
import { availableBackends, type Backend, testContext } from '../support/cluster.ts';
import { checkInvariants } from '../support/invariants.ts';

const backends = await availableBackends();

describe('CONDUCTOR_START_DEADLINE', () => {
  const workerBindings = {
    DATABASE_URL: 'postgres://db.example/conductor',
    UPSTASH_REDIS_REST_URL: 'https://redis.example',
    UPSTASH_REDIS_REST_TOKEN: 'token',
  };
  it('is 120 s by default on Node and Workers, and takes positive seconds', () => {
    expect(configFromEnv(parseNodeEnv({})).startDeadlineSeconds).toBe(120);
    expect(configFromEnv(parseNodeEnv({ CONDUCTOR_START_DEADLINE: '300' })).startDeadlineSeconds).toBe(300);
    expect(() => parseNodeEnv({ CONDUCTOR_START_DEADLINE: '0' })).toThrow(/CONDUCTOR_START_DEADLINE/);
    expect(configFromWorkerEnv(parseWorkerEnv(workerBindings)).startDeadlineSeconds).toBe(120);
    expect(
      configFromWorkerEnv(parseWorkerEnv({ ...workerBindings, CONDUCTOR_START_DEADLINE: '600' }))
        .startDeadlineSeconds,
    ).toBe(600);
  });
});

describe.each(backends)('start deadline on $name', (factory) => {
  let backend: Backend;
  beforeAll(async () => {
    backend = await factory.create();
  });
  afterAll(async () => {
    await backend?.close();
  });

  const age = (what: string, seconds: number) =>
    backend.db.db.execute(
      what === 'placement'
        ? sql`UPDATE resource_allocations SET allocation_time = now() - make_interval(secs => ${seconds}) WHERE released = false`
        : sql`UPDATE maintenance_state SET reaper_resumed_at = now() - make_interval(secs => ${seconds}) WHERE id = 1`,
    );

  it('an assignment never reported started ends FAILED after the deadline and frees its CPUs; a started one is left alone', async () => {
    const { ctx, settle } = testContext(backend);
    expect(ctx.config.startDeadlineSeconds).toBe(120);
    await reapLostWorkers(ctx); // the reaper's clock, as the server's first backstop pass starts it
    const w = await registerWorker(ctx, { worker_id: 'never-starts', hostname: 'h', cpus: 4 });
    const stuck = await submitJob(ctx, { script: 'true', cpus: 3 });
    const fine = await submitJob(ctx, { script: 'sleep 1000', cpus: 1 });
    await settle();
    await runSchedulingPass(ctx);
    const session = { worker_id: 'never-starts', session: w.session };
    expect((await claimAssignments(ctx, session)).jobs.map((j) => j.job_id)).toEqual([stuck.id, fine.id]);
    await reportStarted(ctx, fine.id, { worker_id: 'never-starts', attempt: 1 });

    // Placed a minute ago: within the deadline.
    await age('placement', 60);
    await age('reaper', 3600);
    expect(await endUnstartedJobs(ctx)).toBe(0);
    // Placed long ago, but reaping resumed (the control plane was away) a minute ago: the clock restarted.
    await age('placement', 600);
    await age('reaper', 60);
    expect(await endUnstartedJobs(ctx)).toBe(0);

    await age('reaper', 3600);
    await heartbeatWorker(ctx, session); // the agent is alive: only the deadline ends the assignment
    expect(await endUnstartedJobs(ctx)).toBe(1);
    expect(await getJob(backend.db.db, stuck.id)).toMatchObject({
      state: 'FAILED',
      node: 'never-starts',
      reason: 'never started: its agent did not report it started within 120 s of its placement',
    });
    expect(await getJob(backend.db.db, fine.id)).toMatchObject({ state: 'RUNNING' });
    const [worker] = await query<{ allocated_cpus: number }>(
      backend.db.db,
      sql`SELECT allocated_cpus FROM workers WHERE id = 'never-starts'`,
    );
    expect(Number(worker?.allocated_cpus)).toBe(1);
    // A late `started` report for it is stale (its agent, had it started it, kills it).
    await expect(
      reportStarted(ctx, stuck.id, { worker_id: 'never-starts', attempt: 1 }),
    ).rejects.toMatchObject({ code: 'stale_assignment' });
    expect(await endUnstartedJobs(ctx)).toBe(0);
    await checkInvariants(backend.db.db, backend.registry);
  });
});
