import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { submitJob } from '../../functions/domain/jobs.ts';
import { reapLostWorkers } from '../../functions/domain/reaper.ts';
import { runSchedulingPass } from '../../functions/domain/scheduler.ts';
import {
  claimAssignments,
  finishAssignment,
  registerWorker,
  reportStarted,
} from '../../functions/domain/workers.ts';
import { availableBackends, type Backend, testContext } from '../support/cluster.ts';
import { checkInvariants } from '../support/invariants.ts';

const backends = await availableBackends();

/** The review's "priority order" check: priority first, then submit time, then id; a requeued job keeps its place. */
describe.each(backends)('queue order on $name', (factory) => {
  let backend: Backend;
  beforeAll(async () => {
    backend = await factory.create();
  });
  afterAll(async () => {
    await backend?.close();
  });

  it('serves priority first, then submit order, and a requeued job before the jobs submitted after it', {
    timeout: 60_000,
  }, async () => {
    const { ctx, settle } = testContext(backend);
    await backend.db.db.execute(sql`UPDATE workers SET status = 'down' WHERE status <> 'down'`);
    await backend.db.db.execute(
      sql`UPDATE maintenance_state SET reaper_seen_at = now(), reaper_resumed_at = now() - interval '1 hour'`,
    );
    const requeued = await submitJob(ctx, { script: 'true', cpus: 1, requeue: true });
    // No worker yet: everything waits.
    const low1 = await submitJob(ctx, { script: 'true', cpus: 1 });
    const high1 = await submitJob(ctx, { script: 'true', cpus: 1, priority: 5 });
    const low2 = await submitJob(ctx, { script: 'true', cpus: 1 });
    const high2 = await submitJob(ctx, { script: 'true', cpus: 1, priority: 5 });

    // A one-CPU worker runs them one at a time: each pass places the head of the queue.
    const served: number[] = [];
    let lostOnce = false;
    let worker = 'order-0';
    let reg = await registerWorker(ctx, { worker_id: worker, hostname: worker, cpus: 1, running: [] });
    await settle();
    for (let round = 0; round < 6; round++) {
      await runSchedulingPass(ctx);
      const claim = await claimAssignments(ctx, { worker_id: worker, session: reg.session, wait_s: 0 });
      const [job] = claim.jobs;
      expect(job, `round ${round}`).toBeDefined();
      served.push(job!.job_id);
      await reportStarted(ctx, job!.job_id, { worker_id: worker, attempt: job!.attempt });
      if (job!.job_id === requeued.id && !lostOnce) {
        lostOnce = true;
        // Its node is lost: the job goes back to the queue, and a new node comes.
        await backend.db.db.execute(
          sql`UPDATE workers SET last_heartbeat = now() - interval '10 minutes' WHERE id = ${worker}`,
        );
        await reapLostWorkers(ctx);
        worker = 'order-1';
        reg = await registerWorker(ctx, { worker_id: worker, hostname: worker, cpus: 1, running: [] });
        await settle();
        continue;
      }
      await finishAssignment(ctx, job!.job_id, {
        worker_id: worker,
        attempt: job!.attempt,
        exit_code: '0:0',
        outcome: 'exited',
      });
      await settle();
    }
    // high1, high2 (priority 5, in submit order), then requeued (lost once, served again before the jobs
    // submitted after it), then low1 and low2.
    expect(served).toEqual([high1.id, high2.id, requeued.id, requeued.id, low1.id, low2.id]);
    await checkInvariants(backend.db.db, backend.registry);
  });
});
