/**
 * sbatch `--dependency` in the scheduler: a dependant is placed only once its dependency is met, inside the
 * placing statements; one that can never be met says so, or is cancelled with kill_on_invalid_dep.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getJob, type SubmitJobInput, submitJob, submitJobsBatch } from '../../functions/domain/jobs.ts';
import { runSchedulingPass } from '../../functions/domain/scheduler.ts';
import {
  claimAssignments,
  finishAssignment,
  registerWorker,
  reportStarted,
} from '../../functions/domain/workers.ts';
import { availableBackends, type Backend, testConfig, testContext } from '../support/cluster.ts';
import { checkInvariants } from '../support/invariants.ts';

const backends = await availableBackends();

describe.each(backends)('dependencies on $name', (factory) => {
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

  const submit = async (input: Partial<SubmitJobInput> = {}) => {
    const job = await submitJob(h.ctx, { script: 'true', cpus: 1, ...input });
    await h.settle();
    return job.id;
  };
  const pass = async () => {
    await runSchedulingPass(h.ctx);
    await h.settle();
  };
  const job = (id: number) => getJob(h.ctx.db, id);

  /** Starts the job (placed by a pass before) on node-a and ends it with `exitCode`. */
  async function finish(id: number, exitCode: `${number}:${number}` = '0:0') {
    await claimAssignments(h.ctx, { worker_id: 'node-a', session, wait_s: 0 });
    const { state, attempt } = await job(id);
    expect(state, `job ${id} was placed`).toBe('RUNNING');
    await reportStarted(h.ctx, id, { worker_id: 'node-a', attempt });
    await finishAssignment(h.ctx, id, {
      worker_id: 'node-a',
      attempt,
      exit_code: exitCode,
      outcome: 'exited',
    });
    await h.settle();
  }

  it('afterok: the dependant runs only after its target COMPLETED', async () => {
    const first = await submit();
    const second = await submit({ dependency: `afterok:${first}` });
    await pass();
    expect(await job(first)).toMatchObject({ state: 'RUNNING' });
    expect(await job(second)).toMatchObject({
      state: 'PENDING',
      reason: 'Dependency',
      dependency: `afterok:${first}`,
      kill_on_invalid_dep: false,
    });
    await finish(first);
    await pass();
    expect((await job(second)).state).toBe('RUNNING');
    await finish(second);
    await checkInvariants(backend.db.db, backend.registry);
  });

  it('afterok on a failed target: DependencyNeverSatisfied, or CANCELLED with kill_on_invalid_dep', async () => {
    const first = await submit();
    const waits = await submit({ dependency: `afterok:${first}` });
    const killed = await submit({ dependency: `afterok:${first}`, kill_on_invalid_dep: true });
    await pass();
    await finish(first, '1:0');
    await pass();
    await pass();
    expect(await job(waits)).toMatchObject({ state: 'PENDING', reason: 'DependencyNeverSatisfied' });
    expect(await job(killed)).toMatchObject({
      state: 'CANCELLED',
      reason: 'DependencyNeverSatisfied',
      start_time: null,
      kill_on_invalid_dep: true,
    });
    expect((await job(killed)).end_time).not.toBeNull();
    await checkInvariants(backend.db.db, backend.registry);
  });

  it('kill_invalid_depend as the cluster default: cancels, unless the job said kill_on_invalid_dep false', async () => {
    const killing = testContext(backend, testConfig({ killInvalidDepend: true }));
    const first = await submit();
    const byDefault = (
      await submitJob(killing.ctx, { script: 'true', cpus: 1, dependency: `afterok:${first}` })
    ).id;
    const optedOut = (
      await submitJob(killing.ctx, {
        script: 'true',
        cpus: 1,
        dependency: `afterok:${first}`,
        kill_on_invalid_dep: false,
      })
    ).id;
    await killing.settle();
    expect(await job(byDefault)).toMatchObject({ kill_on_invalid_dep: true });
    await pass();
    await finish(first, '1:0');
    await pass();
    expect(await job(byDefault)).toMatchObject({ state: 'CANCELLED', reason: 'DependencyNeverSatisfied' });
    expect(await job(optedOut)).toMatchObject({ state: 'PENDING', reason: 'DependencyNeverSatisfied' });
    await checkInvariants(backend.db.db, backend.registry);
  });

  it('afternotok runs after a failure and never after a success; afterany after either', async () => {
    const ok = await submit();
    const bad = await submit();
    const afterBad = await submit({ dependency: `afternotok:${bad}` });
    const afterOk = await submit({ dependency: `afternotok:${ok}` });
    const any = await submit({ dependency: `afterany:${ok}:${bad}` });
    await pass();
    await finish(ok);
    await pass();
    expect((await job(any)).state).toBe('PENDING');
    await finish(bad, '2:0');
    await pass();
    expect((await job(afterBad)).state).toBe('RUNNING');
    expect((await job(any)).state).toBe('RUNNING');
    expect(await job(afterOk)).toMatchObject({ state: 'PENDING', reason: 'DependencyNeverSatisfied' });
    await finish(afterBad);
    await finish(any);
  });

  it('"?": any one item is enough; never satisfied only when every item is impossible', async () => {
    const a = await submit();
    const b = await submit();
    const either = await submit({ dependency: `afterok:${a}?afterok:${b}` });
    const neither = await submit({ dependency: `afternotok:${a}?afternotok:${b}` });
    await pass();
    await finish(a, '1:0');
    await pass();
    expect(await job(either)).toMatchObject({ state: 'PENDING', reason: 'Dependency' });
    expect(await job(neither)).toMatchObject({ state: 'RUNNING' });
    await finish(neither);
    await finish(b);
    await pass();
    expect((await job(either)).state).toBe('RUNNING');
    await finish(either);
    const c = await submit();
    const never = await submit({ dependency: `afternotok:${c}?afternotok:${c}` });
    await pass();
    await finish(c);
    await pass();
    expect(await job(never)).toMatchObject({ state: 'PENDING', reason: 'DependencyNeverSatisfied' });
  });

  it('singleton: one job of a name and owner at a time, in submission order', async () => {
    const name = `single-${backend.name}`;
    const ids = [
      await submit({ name, dependency: 'singleton' }),
      await submit({ name, dependency: 'singleton' }),
      await submit({ name, dependency: 'singleton' }),
    ];
    for (const id of ids) {
      await pass();
      await pass();
      const states = await Promise.all(ids.map(async (i) => (await job(i)).state));
      expect(states.filter((s) => s === 'RUNNING')).toHaveLength(1);
      expect((await job(id)).state).toBe('RUNNING');
      await finish(id);
    }
  });

  it('many concurrent scheduling passes never start a dependant before its target ended', {
    timeout: 60_000,
  }, async () => {
    for (let round = 0; round < 5; round++) {
      const first = await submit();
      const dependants = await Promise.all(
        Array.from({ length: 5 }, () => submit({ dependency: `afterok:${first}` })),
      );
      await Promise.all(Array.from({ length: 20 }, () => runSchedulingPass(h.ctx)));
      await h.settle();
      for (const id of dependants) expect((await job(id)).state).toBe('PENDING');
      await claimAssignments(h.ctx, { worker_id: 'node-a', session, wait_s: 0 });
      const { attempt } = await job(first);
      await reportStarted(h.ctx, first, { worker_id: 'node-a', attempt });
      await Promise.all([
        finishAssignment(h.ctx, first, { worker_id: 'node-a', attempt, exit_code: '0:0', outcome: 'exited' }),
        ...Array.from({ length: 20 }, () => runSchedulingPass(h.ctx)),
      ]);
      await h.settle();
      await pass();
      const end = (await job(first)).end_time as string;
      for (const id of dependants) {
        const dependant = await job(id);
        expect(dependant.state).toBe('RUNNING');
        await finish(id);
        const started = await job(id);
        expect(new Date(started.start_time as string).getTime()).toBeGreaterThanOrEqual(
          new Date(end).getTime(),
        );
      }
      await checkInvariants(backend.db.db, backend.registry);
    }
  });

  it('a batch stores each job dependency and kill_on_invalid_dep', async () => {
    const first = await submit();
    const { jobs } = await submitJobsBatch(h.ctx, [
      { script: 'true', cpus: 1, dependency: `afterany:${first}`, kill_on_invalid_dep: true },
      { script: 'true', cpus: 1 },
    ]);
    await h.settle();
    expect(jobs[0]).toMatchObject({ dependency: `afterany:${first}`, kill_on_invalid_dep: true });
    expect(jobs[1]).toMatchObject({ dependency: null, kill_on_invalid_dep: false });
    const [dependant, free] = jobs.map((j) => j.id) as [number, number];
    await pass();
    expect((await job(dependant)).state).toBe('PENDING');
    await finish(free);
    await finish(first, '1:0');
    await pass();
    await finish(dependant);
  });

  it('refuses a dependency that does not parse or names unknown jobs (400 invalid_dependency)', async () => {
    await expect(submit({ dependency: 'aftercorr:1' })).rejects.toMatchObject({ code: 'invalid_dependency' });
    await expect(submit({ dependency: 'afterok:999999999' })).rejects.toMatchObject({
      code: 'invalid_dependency',
      message: expect.stringContaining('999999999'),
    });
    const none = await submit({ dependency: '' });
    expect((await job(none)).dependency).toBeNull();
    await pass();
    await finish(none);
  });
});
