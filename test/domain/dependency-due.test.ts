/**
 * Dependency resolution costs a pass some 10 ms of planning alone, so a pass runs it only when a job's
 * dependency is due (new, or woken by its target's change): a pass on a cluster with no dependency due sends
 * Postgres no statement that reads job_dependencies; one after a target ended resolves and places in that
 * same pass; with no worker to lock, it still resolves, so reasons stay right on an empty cluster.
 */
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getJob, submitJob } from '../../functions/domain/jobs.ts';
import { runSchedulingPass } from '../../functions/domain/scheduler.ts';
import {
  claimAssignments,
  finishAssignment,
  registerWorker,
  reportStarted,
} from '../../functions/domain/workers.ts';
import { availableBackends, type Backend, testContext } from '../support/cluster.ts';
import { hookedDb } from '../support/hooked-db.ts';
import { checkInvariants } from '../support/invariants.ts';

const backends = await availableBackends();

describe.each(backends)('dependency resolution only when due, on $name', (factory) => {
  let backend: Backend;
  let h: ReturnType<typeof testContext>;
  const statements: string[] = [];
  beforeAll(async () => {
    backend = await factory.create();
    const db = hookedDb(backend.db.db, { before: (text) => statements.push(text) });
    h = testContext(backend, undefined, { db });
  });
  afterAll(async () => {
    await h?.settle();
    await backend?.close();
  });

  /** Whether `work`, and the passes it asked for, resolved dependencies (the statement that sets them checked). */
  async function resolves(work: () => Promise<unknown>) {
    await h.settle();
    statements.length = 0;
    await work();
    await h.settle();
    return statements.some((text) => text.includes('dependency_checked ='));
  }
  const pass = () => resolves(() => runSchedulingPass(h.ctx));
  const job = (id: number) => getJob(h.ctx.db, id);

  it('resolves on the pass after a submission or a target change, and not on the passes between', async () => {
    const { session } = await registerWorker(h.ctx, { worker_id: 'due-a', hostname: 'due-a', cpus: 1 });
    const first = (await submitJob(h.ctx, { script: 'true', cpus: 1 })).id;
    expect(await pass()).toBe(false);
    expect(await job(first)).toMatchObject({ state: 'RUNNING' });
    expect(await pass()).toBe(false);

    let second = 0;
    // The submission asks for a pass: that one resolves the new dependency.
    expect(
      await resolves(async () => {
        second = (await submitJob(h.ctx, { script: 'true', cpus: 1, dependency: `afterok:${first}` })).id;
      }),
    ).toBe(true);
    expect(await job(second)).toMatchObject({ state: 'PENDING', reason: 'Dependency' });
    // Nothing moved: the next passes leave the dependency alone.
    expect(await pass()).toBe(false);
    expect(await pass()).toBe(false);

    // The target ends: its change makes the dependant due, and the pass that resolves it places it too.
    await claimAssignments(h.ctx, { worker_id: 'due-a', session, wait_s: 0 });
    const { attempt } = await job(first);
    await reportStarted(h.ctx, first, { worker_id: 'due-a', attempt });
    expect(
      await resolves(() =>
        finishAssignment(h.ctx, first, { worker_id: 'due-a', attempt, exit_code: '0:0', outcome: 'exited' }),
      ),
    ).toBe(true);
    expect(await job(second)).toMatchObject({ state: 'RUNNING', node: 'due-a' });
    expect(await pass()).toBe(false);
    await checkInvariants(backend.db.db, backend.registry);
  });

  it('with no worker to lock, still resolves: a dependency that can never be met says so', async () => {
    await backend.db.db.execute(sql`UPDATE workers SET drained = true, status = 'draining'`);
    const failed = (await submitJob(h.ctx, { script: 'false', cpus: 1, hold: true })).id;
    await backend.db.db.execute(
      sql`UPDATE jobs SET state = 'FAILED', held = NULL, end_time = now() WHERE id = ${failed}`,
    );
    let waiting = 0;
    expect(
      await resolves(async () => {
        waiting = (await submitJob(h.ctx, { script: 'true', cpus: 1, dependency: `afterok:${failed}` })).id;
      }),
    ).toBe(true);
    expect(await job(waiting)).toMatchObject({ state: 'PENDING', reason: 'DependencyNeverSatisfied' });
  });
});
