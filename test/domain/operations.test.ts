import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { syncAllocationCache } from '../../functions/domain/cache.ts';
import { getDashboard, getHealth } from '../../functions/domain/dashboard.ts';
import { getJob, submitJob } from '../../functions/domain/jobs.ts';
import { endOverdueJobs } from '../../functions/domain/reaper.ts';
import { runSchedulingPass } from '../../functions/domain/scheduler.ts';
import { query } from '../../functions/domain/sql.ts';
import {
  claimAssignments,
  finishAssignment,
  heartbeatWorker,
  registerWorker,
  reportStarted,
  setWorkerDraining,
} from '../../functions/domain/workers.ts';
import { availableBackends, type Backend, testContext } from '../support/cluster.ts';
import { checkInvariants } from '../support/invariants.ts';

const backends = await availableBackends();

describe.each(backends)('operations on $name', (factory) => {
  let backend: Backend;
  beforeAll(async () => {
    backend = await factory.create();
  });
  afterAll(async () => {
    await backend?.close();
  });

  it('a drained worker takes no new jobs, shows draining everywhere, and its free CPUs are not available', async () => {
    const { ctx, settle } = testContext(backend);
    const a = await registerWorker(ctx, { worker_id: 'drain-a', hostname: 'a', cpus: 8 });
    await registerWorker(ctx, { worker_id: 'drain-b', hostname: 'b', cpus: 4 });
    expect(await setWorkerDraining(ctx, 'drain-a', true)).toEqual({
      worker_id: 'drain-a',
      status: 'draining',
    });
    for (let i = 0; i < 3; i++) await submitJob(ctx, { script: 'true', cpus: 2 });
    await settle();
    await runSchedulingPass(ctx);
    const placed = await query<{ node: string | null }>(
      backend.db.db,
      sql`SELECT node FROM jobs WHERE state = 'RUNNING'`,
    );
    expect(placed.map((p) => p.node)).toEqual(['drain-b', 'drain-b']);
    const dashboard = await getDashboard(ctx);
    expect(dashboard.workers.find((w) => w.worker_id === 'drain-a')?.status).toBe('draining');
    // 12 CPUs live, 4 allocated on b, a's 8 free CPUs are drained: nothing is available.
    expect(dashboard.resources).toMatchObject({ total_cpus: 12, allocated_cpus: 4, available_cpus: 0 });
    const beat = await heartbeatWorker(ctx, { worker_id: 'drain-a', session: a.session });
    expect(beat.status).toBe('draining');
    expect(await setWorkerDraining(ctx, 'drain-a', false)).toMatchObject({ status: 'ready' });
    await settle();
    await runSchedulingPass(ctx);
    const after = await query<{ node: string }>(
      backend.db.db,
      sql`SELECT node FROM jobs WHERE state = 'RUNNING' ORDER BY node`,
    );
    expect(after.map((p) => p.node)).toEqual(['drain-a', 'drain-b', 'drain-b']);
    await expect(setWorkerDraining(ctx, 'nobody', true)).rejects.toMatchObject({ code: 'worker_not_found' });
    await checkInvariants(backend.db.db, backend.registry);
  });

  it('an agent heartbeating "draining" drains itself, and cannot undrain an operator drain', async () => {
    const { ctx } = testContext(backend);
    const w = await registerWorker(ctx, { worker_id: 'self-drain', hostname: 'h', cpus: 2 });
    expect(
      (await heartbeatWorker(ctx, { worker_id: 'self-drain', session: w.session, status: 'draining' }))
        .status,
    ).toBe('draining');
    expect(
      (await heartbeatWorker(ctx, { worker_id: 'self-drain', session: w.session, status: 'ready' })).status,
    ).toBe('draining');
  });

  it('the server ends a job far past its time limit as TIMEOUT and tells its agent to kill it', async () => {
    const { ctx, settle } = testContext(backend);
    const w = await registerWorker(ctx, { worker_id: 'slow-agent', hostname: 'h', cpus: 2 });
    // Pinned to its node: an earlier test's worker with free CPUs (drain-a) is a candidate too.
    const job = await submitJob(ctx, {
      script: 'sleep 1000',
      cpus: 1,
      time_limit: 1,
      nodelist: 'slow-agent',
    });
    await settle();
    await runSchedulingPass(ctx);
    const claim = await claimAssignments(ctx, { worker_id: 'slow-agent', session: w.session });
    const assignment = claim.jobs.find((j) => j.job_id === job.id)!;
    expect(assignment.time_limit_s).toBe(60);
    await reportStarted(ctx, job.id, { worker_id: 'slow-agent', attempt: assignment.attempt });
    expect(await endOverdueJobs(ctx)).toBe(0);
    // Started long ago: a 1-minute limit plus the grace are over.
    await backend.db.db.execute(
      sql`UPDATE jobs SET start_time = now() - interval '10 minutes' WHERE id = ${job.id}`,
    );
    expect(await endOverdueJobs(ctx)).toBe(1);
    expect(await getJob(backend.db.db, job.id)).toMatchObject({ state: 'TIMEOUT' });
    const beat = await heartbeatWorker(ctx, { worker_id: 'slow-agent', session: w.session });
    expect(beat.cancel).toEqual([{ job_id: job.id, attempt: assignment.attempt }]);
    await checkInvariants(backend.db.db, backend.registry);
  });

  it('an assignment is not handed to the same session again until its redelivery time, then it is', async () => {
    const { ctx: base, settle } = testContext(backend);
    const ctx = { ...base, config: { ...base.config, claimRedeliverySeconds: 60 } };
    const w = await registerWorker(ctx, { worker_id: 'redeliver', hostname: 'h', cpus: 2 });
    const job = await submitJob(ctx, { script: 'true', cpus: 1 });
    await settle();
    await runSchedulingPass(ctx);
    const session = { worker_id: 'redeliver', session: w.session };
    expect((await claimAssignments(ctx, session)).jobs.map((j) => j.job_id)).toEqual([job.id]);
    // Its `started` report is on the way: another claim gets nothing new…
    expect((await claimAssignments(ctx, session)).jobs).toEqual([]);
    // …and a long poll wakes when the assignment is due again (a lost answer costs the redelivery time):
    // here in about a second, the hand-out being made 59 s old.
    await backend.db.db.execute(
      sql`UPDATE jobs SET claimed_at = now() - interval '59 seconds' WHERE id = ${job.id}`,
    );
    const began = Date.now();
    const again = await claimAssignments(ctx, { ...session, wait_s: 30 });
    expect(again.jobs.map((j) => j.job_id)).toEqual([job.id]);
    expect(Date.now() - began).toBeLessThan(20_000);
    await reportStarted(ctx, job.id, { worker_id: 'redeliver', attempt: 1 });
    expect((await claimAssignments(ctx, session)).jobs).toEqual([]);
    await checkInvariants(backend.db.db, backend.registry);
  });

  it('concurrent finish reports (batched together) each get their own answer, and nothing is miscounted', async () => {
    const { ctx, settle } = testContext(backend);
    // Other tests' workers are live too: drain them, so that every job lands here.
    const others = await query<{ id: string }>(
      backend.db.db,
      sql`SELECT id FROM workers WHERE status = 'ready'`,
    );
    for (const o of others) await setWorkerDraining(ctx, o.id, true);
    const w = await registerWorker(ctx, { worker_id: 'burst', hostname: 'h', cpus: 40 });
    const jobs = [];
    for (let i = 0; i < 30; i++) jobs.push(await submitJob(ctx, { script: 'true', cpus: 1 }));
    await settle();
    await runSchedulingPass(ctx);
    const claimed = await claimAssignments(ctx, { worker_id: 'burst', session: w.session });
    expect(claimed.jobs.map((j) => j.job_id)).toEqual(jobs.map((j) => j.id));
    const report = (id: number, exit_code: `${number}:${number}`) =>
      finishAssignment(ctx, id, { worker_id: 'burst', attempt: 1, outcome: 'exited', exit_code });
    const answers = await Promise.allSettled([
      ...jobs.map((j, i) => report(j.id, i % 3 === 0 ? '1:0' : '0:0')),
      report(jobs[0]!.id, '1:0'), // the same report twice at once: harmless
      report(jobs[1]!.id, '2:0'), // a different report about an ended attempt: stale
      finishAssignment(ctx, jobs[2]!.id, {
        worker_id: 'burst',
        attempt: 7,
        outcome: 'exited',
        exit_code: '0:0',
      }),
    ]);
    const values = answers.map((a) => (a.status === 'fulfilled' ? a.value.state : 'rejected'));
    expect(values.slice(0, 30)).toEqual(jobs.map((_, i) => (i % 3 === 0 ? 'FAILED' : 'COMPLETED')));
    expect(values[30]).toBe('FAILED');
    expect(answers[31]).toMatchObject({ status: 'rejected', reason: { code: 'stale_assignment' } });
    expect(answers[32]).toMatchObject({ status: 'rejected', reason: { code: 'stale_assignment' } });
    const states = await query<{ state: string; n: string | number }>(
      backend.db.db,
      sql`SELECT state, count(*) AS n FROM jobs WHERE node = 'burst' GROUP BY state ORDER BY state`,
    );
    expect(states.map((r) => [r.state, Number(r.n)])).toEqual([
      ['COMPLETED', 20],
      ['FAILED', 10],
    ]);
    await settle();
    await checkInvariants(backend.db.db, backend.registry);
    for (const o of others) await setWorkerDraining(ctx, o.id, false);
  });

  it('health reports the last cache sync and its drift', async () => {
    const { ctx } = testContext(backend);
    await syncAllocationCache(ctx);
    const health = await getHealth(ctx);
    expect(health.cache.last_sync).toMatchObject({ drift: 0 });
    expect(Date.parse(health.cache.last_sync!.at)).toBeGreaterThan(Date.now() - 60_000);
  });
});
