/**
 * Requeue, signal, update and cancel's bookkeeping under concurrency (issue 15): each is one atomic write, so
 * that racing a finish report, a scheduling pass or another agent call never releases twice, places a job before
 * its time, or hands a signal out twice.
 */
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Principal } from '../../functions/domain/auth.ts';
import {
  cancelJob,
  getJob,
  requeueJob,
  signalJob,
  submitJob,
  updateJob,
} from '../../functions/domain/jobs.ts';
import { runSchedulingPass } from '../../functions/domain/scheduler.ts';
import { query } from '../../functions/domain/sql.ts';
import {
  claimAssignments,
  finishAssignment,
  heartbeatWorker,
  registerWorker,
  reportStarted,
} from '../../functions/domain/workers.ts';
import { availableBackends, type Backend, testContext } from '../support/cluster.ts';
import { checkInvariants } from '../support/invariants.ts';

const backends = await availableBackends();

const alice: Principal = {
  kind: 'token',
  tokenId: null,
  name: 'alice',
  owner: 'alice',
  scopes: ['jobs:read', 'jobs:write'],
};

describe.each(backends)('Slurm verbs on $name', (factory) => {
  let backend: Backend;
  let h: ReturnType<typeof testContext>;
  let session: string;
  beforeAll(async () => {
    backend = await factory.create();
    h = testContext(backend);
    session = (await registerWorker(h.ctx, { worker_id: 'node-a', hostname: 'node-a', cpus: 16 })).session;
  });
  afterAll(async () => {
    await h?.settle();
    await backend?.close();
  });

  const me = () => ({ worker_id: 'node-a', session });

  async function running(cpus = 2) {
    const job = await submitJob(h.ctx, { script: 'true', cpus }, { caller: alice });
    await h.settle();
    await runSchedulingPass(h.ctx);
    const claimed = await claimAssignments(h.ctx, { ...me(), wait_s: 0 });
    const attempt = claimed.jobs.find((j) => j.job_id === job.id)?.attempt as number;
    expect(attempt).toBeGreaterThan(0);
    await reportStarted(h.ctx, job.id, { worker_id: 'node-a', attempt });
    return { id: job.id, attempt };
  }

  it('a requeue racing the finish report releases the allocation once and leaves the job PENDING', async () => {
    for (let i = 0; i < 5; i++) {
      const { id, attempt } = await running();
      const [requeued] = await Promise.allSettled([
        requeueJob(h.ctx, id, { hold: true }, alice),
        finishAssignment(h.ctx, id, { worker_id: 'node-a', attempt, exit_code: '0:0', outcome: 'exited' }),
      ]);
      expect(requeued.status).toBe('fulfilled');
      await h.settle();
      expect(await getJob(h.ctx.db, id)).toMatchObject({ state: 'PENDING', held: 'user', requeues: 1 });
      await checkInvariants(backend.db.db, backend.registry);
    }
  });

  it('a requeue racing a scheduling pass: the job runs again as the next attempt, the old one is fenced', async () => {
    const { id, attempt } = await running(4);
    await Promise.all([requeueJob(h.ctx, id, {}, alice), runSchedulingPass(h.ctx), runSchedulingPass(h.ctx)]);
    await h.settle();
    await runSchedulingPass(h.ctx);
    const job = await getJob(h.ctx.db, id);
    expect(job).toMatchObject({ state: 'RUNNING', attempt: attempt + 1, requeues: 1 });
    expect((await heartbeatWorker(h.ctx, me())).cancel).toContainEqual({ job_id: id, attempt });
    await expect(
      finishAssignment(h.ctx, id, { worker_id: 'node-a', attempt, exit_code: '0:0', outcome: 'exited' }),
    ).rejects.toMatchObject({ code: 'stale_assignment' });
    await checkInvariants(backend.db.db, backend.registry);
    await cancelJob(h.ctx, id);
  });

  it('hands a signal out once to concurrent heartbeats and claims', async () => {
    const { id } = await running();
    await signalJob(h.ctx, id, { signal: 'USR1' }, alice);
    const answers = await Promise.all([
      heartbeatWorker(h.ctx, me()),
      heartbeatWorker(h.ctx, me()),
      claimAssignments(h.ctx, { ...me(), wait_s: 0 }),
      claimAssignments(h.ctx, { ...me(), wait_s: 0 }),
    ]);
    const delivered = answers.flatMap((a) => a.signal ?? []).filter((sg) => sg.job_id === id);
    expect(delivered).toHaveLength(1);
    expect(delivered[0]).toMatchObject({ signal: 'USR1', batch_only: false });
    await cancelJob(h.ctx, id, alice);
    expect(await getJob(h.ctx.db, id)).toMatchObject({ cancelled_by: 'alice', cancel_requested: true });
  });

  it('refuses a non-admin raising a time limit even when two updates race', async () => {
    const job = await submitJob(
      h.ctx,
      { script: 'true', cpus: 1, hold: true, time_limit: 10 },
      { caller: alice },
    );
    const results = await Promise.allSettled([
      updateJob(h.ctx, job.id, { time_limit: 5 }, alice),
      updateJob(h.ctx, job.id, { time_limit: 8 }, alice),
    ]);
    const [row] = await query<{ t: number }>(
      backend.db.db,
      sql`SELECT time_limit_s AS t FROM jobs WHERE id = ${job.id}`,
    );
    // 8 after 5 would raise it: refused, whichever order they took, the limit ends at 5 minutes.
    expect(Number(row?.t)).toBe(300);
    expect(results.some((r) => r.status === 'fulfilled')).toBe(true);
    await expect(updateJob(h.ctx, job.id, { time_limit: 11 }, alice)).rejects.toMatchObject({
      code: 'time_limit_not_allowed',
    });
  });
});
