import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp } from '../../functions/app.ts';
import { ConductorError } from '../../functions/domain/errors.ts';
import { getJob, holdJob, submitJob } from '../../functions/domain/jobs.ts';
import { reapLostWorkers } from '../../functions/domain/reaper.ts';
import { runSchedulingPass } from '../../functions/domain/scheduler.ts';
import { pgErrorCode, queryOne } from '../../functions/domain/sql.ts';
import {
  claimAssignments,
  finishAssignment,
  heartbeatWorker,
  registerWorker,
  reportStarted,
  setWorkerDraining,
  unregisterWorker,
} from '../../functions/domain/workers.ts';
import { availableBackends, type Backend, testConfig, testContext } from '../support/cluster.ts';
import { hookedDb } from '../support/hooked-db.ts';
import { checkInvariants } from '../support/invariants.ts';

const backends = await availableBackends();
/** A Postgres serialization failure (40001) or deadlock (40P01), as node-postgres reports one. */
function conflictError(code = '40001'): Error {
  return Object.assign(new Error(`conflict ${code}`), { code });
}

describe.each(backends)('worker liveness on $name', (factory) => {
  let backend: Backend;
  beforeAll(async () => {
    backend = await factory.create();
  });
  afterAll(async () => {
    await backend?.close();
  });

  const workerRow = (id: string) =>
    queryOne<{ status: string; session: string }>(
      backend.db.db,
      sql`SELECT status, session FROM workers WHERE id = ${id}`,
    );
  const jobRow = (id: number) =>
    queryOne<{ state: string; node: string | null; reason: string | null; requeues: number }>(
      backend.db.db,
      sql`SELECT state, node, reason, requeues FROM jobs WHERE id = ${id}`,
    );
  /** The worker's heartbeat lapsed long ago, and the reaper has been running all along (no grace). */
  async function silence(id: string) {
    await backend.db.db.execute(
      sql`UPDATE workers SET last_heartbeat = now() - interval '10 minutes' WHERE id = ${id}`,
    );
    await backend.db.db.execute(
      sql`UPDATE maintenance_state SET reaper_seen_at = now(), reaper_resumed_at = now() - interval '1 hour'`,
    );
  }
  /**
   * The database as the reaper sees it, pausing right after the reaper marked workers down (holding their rows,
   * before it deals with their jobs) until `release()`; `atGate` resolves once it is there.
   */
  function reaperPausedAfterMarkingDown(failed?: (text: string, error: unknown) => void) {
    let release!: () => void;
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    let paused!: () => void;
    const atGate = new Promise<void>((resolve) => {
      paused = resolve;
    });
    let passedGate = false;
    const db = hookedDb(backend.db.db, {
      failed,
      async after(text) {
        if (!passedGate && /update "?workers"? set "?status"? = 'down'/i.test(text)) {
          passedGate = true;
          paused();
          await gate;
        }
      },
    });
    return { db, atGate, release };
  }
  /** Earlier tests' workers take no part in the next one. */
  const retireWorkers = () =>
    backend.db.db.execute(sql`UPDATE workers SET status = 'down' WHERE status <> 'down'`);

  it("an operator's drain survives the agent's restart (unregister, register) and a reap", async () => {
    await retireWorkers();
    const { ctx, settle } = testContext(backend);
    let reg = await registerWorker(ctx, { worker_id: 'drain-keep', hostname: 'h', cpus: 8, running: [] });
    await setWorkerDraining(ctx, 'drain-keep', true);
    reg = await registerWorker(ctx, {
      worker_id: 'drain-keep',
      hostname: 'h',
      cpus: 8,
      running: [],
      previous_session: reg.session,
    });
    expect((await workerRow('drain-keep'))?.status).toBe('draining');
    // The agent restarts: it unregisters, then registers as new.
    await unregisterWorker(ctx, { worker_id: 'drain-keep', session: reg.session });
    expect((await workerRow('drain-keep'))?.status).toBe('down');
    reg = await registerWorker(ctx, { worker_id: 'drain-keep', hostname: 'h', cpus: 8, running: [] });
    expect((await workerRow('drain-keep'))?.status).toBe('draining');
    expect((await heartbeatWorker(ctx, { worker_id: 'drain-keep', session: reg.session })).status).toBe(
      'draining',
    );
    const job = await submitJob(ctx, { script: 'true', cpus: 1 });
    await settle();
    await runSchedulingPass(ctx);
    expect((await jobRow(job.id))?.state).toBe('PENDING');
    // Its heartbeat lapses: reaped, then it comes back.
    await silence('drain-keep');
    expect((await reapLostWorkers(ctx)).lostWorkers).toContain('drain-keep');
    await registerWorker(ctx, { worker_id: 'drain-keep', hostname: 'h', cpus: 8, running: [] });
    expect((await workerRow('drain-keep'))?.status).toBe('draining');
    await settle();
    await runSchedulingPass(ctx);
    expect((await jobRow(job.id))?.state).toBe('PENDING');
    // Only undrain puts it back in service.
    expect(await setWorkerDraining(ctx, 'drain-keep', false)).toMatchObject({ status: 'ready' });
    await settle();
    await runSchedulingPass(ctx);
    expect(await jobRow(job.id)).toMatchObject({ state: 'RUNNING', node: 'drain-keep' });
    // The agent's own drain (it is stopping with --drain) is not an operator's: a restart ends it.
    const self = await registerWorker(ctx, { worker_id: 'self-drained', hostname: 'h', cpus: 1 });
    await heartbeatWorker(ctx, { worker_id: 'self-drained', session: self.session, status: 'draining' });
    await unregisterWorker(ctx, { worker_id: 'self-drained', session: self.session });
    await registerWorker(ctx, { worker_id: 'self-drained', hostname: 'h', cpus: 1 });
    expect((await workerRow('self-drained'))?.status).toBe('ready');
    await settle();
    await checkInvariants(backend.db.db, backend.registry);
  });

  it('a re-registration racing the reaper: the job it was told to keep stays, and so does its registry key', {
    timeout: 60_000,
  }, async () => {
    await retireWorkers();
    const { ctx, settle } = testContext(backend);
    const reg = await registerWorker(ctx, { worker_id: 'race-w', hostname: 'h', cpus: 4, running: [] });
    const job = await submitJob(ctx, { script: 'sleep 600', cpus: 4 });
    await settle();
    await runSchedulingPass(ctx);
    const claim = await claimAssignments(ctx, { worker_id: 'race-w', session: reg.session, wait_s: 0 });
    const assignment = claim.jobs.find((j) => j.job_id === job.id)!;
    await reportStarted(ctx, job.id, { worker_id: 'race-w', attempt: assignment.attempt });
    await silence('race-w');

    // The reaper pauses right after it marked the worker down, before it deals with the worker's jobs.
    const { db: reaperDb, atGate, release } = reaperPausedAfterMarkingDown();
    const reaper = testContext(backend);
    const reaping = reapLostWorkers({ ...reaper.ctx, db: reaperDb });
    await atGate;
    // Meanwhile the agent's heartbeat got 404: it registers again, listing its running job.
    const registering = registerWorker(ctx, {
      worker_id: 'race-w',
      hostname: 'h',
      cpus: 4,
      running: [{ job_id: job.id, attempt: assignment.attempt }],
      previous_session: reg.session,
    });
    // Either the registration completes while the reaper is paused, or it waits for the reaper's commit.
    await Promise.race([registering.catch(() => {}), new Promise((resolve) => setTimeout(resolve, 2_000))]);
    release();
    await reaping;
    const again = await registering;
    await reaper.settle();
    await settle();

    const now = await jobRow(job.id);
    const kept = again.cancel.length === 0;
    if (kept) {
      // Told to keep its job: the job runs on, on the new session.
      expect(now).toMatchObject({ state: 'RUNNING', node: 'race-w' });
    } else {
      expect(again.cancel).toEqual([{ job_id: job.id, attempt: assignment.attempt }]);
      expect(now?.state).toBe('NODE_FAIL');
    }
    expect(await workerRow('race-w')).toMatchObject({ status: 'ready', session: again.session });
    // The registration's key is live: the next heartbeat is answered, not 404.
    expect(await backend.registry.liveWorkerIds()).toContain('race-w');
    const beat = await heartbeatWorker(ctx, { worker_id: 'race-w', session: again.session });
    expect(beat.cancel).toEqual([]);
    await checkInvariants(backend.db.db, backend.registry);
  });

  it.runIf(factory.name !== 'pglite+memory')(
    'a report ending a job waits for its worker behind the reaper holding it, without a deadlock (lock order: workers, then jobs)',
    { timeout: 60_000 },
    async () => {
      await retireWorkers();
      const { ctx, settle } = testContext(backend);
      const reg = await registerWorker(ctx, { worker_id: 'order-w', hostname: 'h', cpus: 4, running: [] });
      const job = await submitJob(ctx, { script: 'sleep 600', cpus: 2 });
      await settle();
      await runSchedulingPass(ctx);
      const claim = await claimAssignments(ctx, { worker_id: 'order-w', session: reg.session, wait_s: 0 });
      const assignment = claim.jobs.find((j) => j.job_id === job.id)!;
      await reportStarted(ctx, job.id, { worker_id: 'order-w', attempt: assignment.attempt });
      await silence('order-w');

      const deadlocks: string[] = [];
      const failed = (text: string, error: unknown) => {
        if (pgErrorCode(error) === '40P01') deadlocks.push(text.slice(0, 60));
      };
      // The reaper pauses holding the worker's row, before it ends the worker's jobs.
      const { db: reaperDb, atGate, release } = reaperPausedAfterMarkingDown(failed);
      const reaper = testContext(backend);
      const reaping = reapLostWorkers({ ...reaper.ctx, db: reaperDb });
      await atGate;
      // Meanwhile the agent reports the job ended: the report waits for the worker's row.
      const reporter = testContext(backend);
      const reporting = finishAssignment(
        { ...reporter.ctx, db: hookedDb(backend.db.db, { failed }) },
        job.id,
        {
          worker_id: 'order-w',
          attempt: assignment.attempt,
          exit_code: '0:0',
          outcome: 'exited',
        },
      ).then(
        () => 'accepted',
        (error: unknown) => (error instanceof ConductorError ? error.code : String(error)),
      );
      for (let waited = 0; ; waited += 20) {
        const waiting = await queryOne<{ n: number }>(
          backend.db.db,
          sql`SELECT count(*)::int AS n FROM pg_stat_activity
              WHERE datname = current_database() AND wait_event_type = 'Lock'`,
        );
        if (Number(waiting?.n) > 0) break;
        expect(waited, 'the report waits for a lock the paused reaper holds').toBeLessThan(10_000);
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      // The reaper goes on to end the worker's job: it must not find that job's row held by the report.
      release();
      const reaped = await reaping;
      const answer = await reporting;
      await reaper.settle();
      await reporter.settle();
      await settle();

      expect(deadlocks, 'statements Postgres aborted as deadlocked').toEqual([]);
      expect(reaped.lostWorkers).toEqual(['order-w']);
      // The reaper came first: the job is the lost node's, and the late report is stale.
      expect((await jobRow(job.id))?.state).toBe('NODE_FAIL');
      expect(answer).toBe('stale_assignment');
      await checkInvariants(backend.db.db, backend.registry);
    },
  );

  it('re-registration requeues an assignment that was claimed but never started (it never ran)', async () => {
    await retireWorkers();
    const { ctx, settle } = testContext(backend);
    let reg = await registerWorker(ctx, { worker_id: 'lost-claim', hostname: 'h', cpus: 4, running: [] });
    const job = await submitJob(ctx, { script: 'echo never-ran', cpus: 1 });
    await settle();
    await runSchedulingPass(ctx);
    // The claim's answer is lost; the agent then registers again.
    await claimAssignments(ctx, { worker_id: 'lost-claim', session: reg.session, wait_s: 0 });
    reg = await registerWorker(ctx, {
      worker_id: 'lost-claim',
      hostname: 'h',
      cpus: 4,
      running: [],
      previous_session: reg.session,
    });
    await settle();
    const after = await getJob(backend.db.db, job.id);
    expect(after.state === 'PENDING' || after.state === 'RUNNING').toBe(true);
    expect(after.start_time).toBeNull();
    expect((await jobRow(job.id))?.requeues).toBe(0);
    await runSchedulingPass(ctx);
    const claim = await claimAssignments(ctx, { worker_id: 'lost-claim', session: reg.session, wait_s: 0 });
    expect(claim.jobs.map((j) => j.job_id)).toContain(job.id);
    await checkInvariants(backend.db.db, backend.registry);
  });

  it('a requeue job goes back to the queue at most maxRequeues times, then ends NODE_FAIL saying why', {
    timeout: 60_000,
  }, async () => {
    await retireWorkers();
    const { ctx, settle } = testContext(backend, testConfig({ maxRequeues: 2 }));
    const job = await submitJob(ctx, { script: 'crash-the-node', cpus: 1, requeue: true });
    const reasons: string[] = [];
    for (let round = 0; round < 3; round++) {
      const id = `poison-${round}`;
      const reg = await registerWorker(ctx, { worker_id: id, hostname: id, cpus: 1, running: [] });
      await settle();
      await runSchedulingPass(ctx);
      const claim = await claimAssignments(ctx, { worker_id: id, session: reg.session, wait_s: 0 });
      const assignment = claim.jobs.find((j) => j.job_id === job.id)!;
      expect(assignment).toBeDefined();
      await reportStarted(ctx, job.id, { worker_id: id, attempt: assignment.attempt });
      await silence(id);
      await reapLostWorkers(ctx);
      const now = await jobRow(job.id);
      reasons.push(`${now?.state} ${now?.requeues}`);
      if (round < 2) expect(now).toMatchObject({ state: 'PENDING', requeues: round + 1 });
      else {
        expect(now).toMatchObject({ state: 'NODE_FAIL', requeues: 2 });
        expect(now?.reason).toMatch(/requeued 2 times/);
      }
    }
    expect(reasons).toEqual(['PENDING 1', 'PENDING 2', 'NODE_FAIL 2']);
    await settle();
    await checkInvariants(backend.db.db, backend.registry);
  });

  it('cancel under serialization failures retries, and when they never end answers 503 with Retry-After, not 500', {
    timeout: 60_000,
  }, async () => {
    const harness = testContext(backend);
    let failuresLeft = 0;
    let failure = '40001';
    const flakyDb = hookedDb(backend.db.db, {
      before(text) {
        if (failuresLeft > 0 && /update "?jobs"? set "?state"? = 'CANCELLED'/i.test(text)) {
          failuresLeft--;
          throw conflictError(failure);
        }
      },
    });
    const app = createApp({ ...harness.ctx, db: flakyDb });
    const cancel = (id: number) => app.request(`/api/v1/jobs/${id}/cancel`, { method: 'POST' });
    // Held, so that no pass places it meanwhile.
    const pendingJob = async () =>
      holdJob(harness.ctx, (await submitJob(harness.ctx, { script: 'true', cpus: 1 })).id);

    // Six failures in a row (five retries were all the old code tried): the cancel still goes through.
    const first = await pendingJob();
    failuresLeft = 6;
    const ok = await cancel(first.id);
    expect(ok.status).toBe(200);
    expect((await getJob(backend.db.db, first.id)).state).toBe('CANCELLED');

    // A deadlock (two releases locking workers in another order) is retried the same way.
    const third = await pendingJob();
    failure = '40P01';
    failuresLeft = 3;
    expect((await cancel(third.id)).status).toBe(200);
    failure = '40001';

    // Failures without end: a 503 the client may retry, and nothing changed.
    const second = await pendingJob();
    failuresLeft = 1_000;
    const busy = await cancel(second.id);
    failuresLeft = 0;
    expect(busy.status).toBe(503);
    expect(busy.headers.get('retry-after')).toMatch(/^\d+$/);
    expect(((await busy.json()) as { error: { code: string } }).error.code).toBe('database_busy');
    expect((await getJob(backend.db.db, second.id)).state).toBe('PENDING');
    await harness.settle();
  });
});
