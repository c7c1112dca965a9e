/**
 * sbatch `--array`: the index specification, one-statement submission of every task, the `%N` cap in the
 * scheduling pass (reason JobArrayTaskLimit), the tasks' ids as agents get them.
 */
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { endJobsAndRelease } from '../../functions/domain/allocation.ts';
import {
  ArraySpecError,
  arrayBounds,
  foldIndexes,
  parseArraySpec,
  parseJobSelector,
} from '../../functions/domain/arrays.ts';
import { getJob, type SubmitJobInput, submitJob, submitJobsBatch } from '../../functions/domain/jobs.ts';
import { runSchedulingPass } from '../../functions/domain/scheduler.ts';
import { query } from '../../functions/domain/sql.ts';
import {
  claimAssignments,
  finishAssignment,
  registerWorker,
  reportStarted,
} from '../../functions/domain/workers.ts';
import { availableBackends, type Backend, testConfig, testContext } from '../support/cluster.ts';
import { checkInvariants } from '../support/invariants.ts';

describe('array specifications (sbatch --array)', () => {
  it('reads ranges, lists, steps and a %N cap', () => {
    expect(parseArraySpec('0-999').indexes).toHaveLength(1000);
    expect(parseArraySpec('1,3,5-9').indexes).toEqual([1, 3, 5, 6, 7, 8, 9]);
    expect(parseArraySpec('0-99:2').indexes).toEqual(Array.from({ length: 50 }, (_, k) => 2 * k));
    expect(parseArraySpec('0-9%2')).toMatchObject({ maxRunning: 2, text: '0-9' });
    expect(parseArraySpec('5,1,1-2').indexes).toEqual([1, 2, 5]);
  });
  it('refuses what Slurm refuses, and indexes from MaxArraySize on', () => {
    for (const bad of ['', '-1', 'a-b', '5-1', '0-9:0', '0-9%0', '0-9%x', '1,,2', '0-9%']) {
      expect(() => parseArraySpec(bad), bad).toThrow(ArraySpecError);
    }
    expect(() => parseArraySpec('0-1001', 1001)).toThrow(/largest index is 1000/);
    expect(parseArraySpec('0-1000', 1001).indexes).toHaveLength(1001);
  });
  it('gives SLURM_ARRAY_TASK_COUNT, _MIN, _MAX and _STEP', () => {
    expect(arrayBounds(parseArraySpec('0-99:2').indexes)).toEqual({ count: 50, min: 0, max: 98, step: 2 });
    expect(arrayBounds(parseArraySpec('1,3,5-9').indexes)).toEqual({ count: 7, min: 1, max: 9, step: 1 });
    expect(arrayBounds([7])).toEqual({ count: 1, min: 7, max: 7, step: 1 });
  });
  it('folds indexes as squeue does and reads job selectors', () => {
    expect(foldIndexes([9, 5, 6, 7, 8, 1, 3])).toBe('1,3,5-9');
    expect(parseJobSelector('123')).toEqual({ id: 123, tasks: null });
    expect(parseJobSelector('123_4')).toEqual({ id: 123, tasks: [4] });
    expect(parseJobSelector('123_[1-3,7]')).toEqual({ id: 123, tasks: [1, 2, 3, 7] });
    expect(parseJobSelector('123_x')).toBeNull();
    expect(parseJobSelector('abc')).toBeNull();
  });
});

const backends = await availableBackends();

describe.each(backends)('job arrays on $name', (factory) => {
  let backend: Backend;
  let h: ReturnType<typeof testContext>;
  beforeAll(async () => {
    backend = await factory.create();
    h = testContext(backend, testConfig({ scheduleBatchSize: 1000 }));
  });
  afterAll(async () => {
    await h?.settle();
    await backend?.close();
  });

  async function reset() {
    await backend.db.db.execute(
      sql`TRUNCATE jobs, job_arrays, job_dependencies, resource_allocations, workers, worker_gres, submission_keys, audit_log CASCADE`,
    );
    const [row] = await query<{ v: string }>(
      backend.db.db,
      sql`UPDATE cluster_state SET allocated_cpus = 0, allocated_memory_mb = 0, allocated_gpus = 0, allocation_version = allocation_version + 1 RETURNING allocation_version AS v`,
    );
    await backend.registry.setAllocationSnapshot(0, Number(row?.v));
  }
  const submit = async (input: Partial<SubmitJobInput>) => {
    const job = await submitJob(h.ctx, { script: 'true', cpus: 1, ...input });
    await h.settle();
    return job;
  };
  const tasks = (arrayJobId: number) =>
    query<{ id: string; array_task_id: number; state: string; reason: string | null }>(
      backend.db.db,
      sql`SELECT id, array_task_id, state, reason FROM jobs WHERE array_job_id = ${arrayJobId} ORDER BY array_task_id`,
    );

  // How fast is the bench's (2a: one INSERT, ~120 ms on this machine), not a timed unit test.
  it('submits a 10,000-task array in one statement, each task a job of its own', {
    timeout: 60_000,
  }, async () => {
    await reset();
    const first = await submit({ array: '0-9999', name: 'big' });
    expect(first.array_job_id).toBe(first.id);
    expect(first.array_task_id).toBe(0);
    expect(first.slurm_id).toBe(`${first.id}_0`);
    const rows = await tasks(first.id);
    expect(rows).toHaveLength(10_000);
    expect(rows.map((r) => r.array_task_id)).toEqual(Array.from({ length: 10_000 }, (_, k) => k));
    expect(new Set(rows.map((r) => r.id)).size).toBe(10_000);
    // Ids ascend with the index: the first task's id is the array's.
    expect(Number(rows[0]?.id)).toBe(first.id);
    expect(rows.every((r, k) => k === 0 || Number(r.id) > Number(rows[k - 1]?.id))).toBe(true);
    const [arr] = await query<Record<string, unknown>>(
      backend.db.db,
      sql`SELECT spec, task_count, task_min, task_max, task_step, max_running FROM job_arrays WHERE array_job_id = ${first.id}`,
    );
    expect(arr).toEqual({
      spec: '0-9999',
      task_count: 10_000,
      task_min: 0,
      task_max: 9999,
      task_step: 1,
      max_running: null,
    });
    const audits = await query<{ n: string }>(
      backend.db.db,
      sql`SELECT count(*) AS n FROM audit_log WHERE action = 'job.submit'`,
    );
    expect(Number(audits[0]?.n)).toBe(1);
  });

  it('refuses an index from MaxArraySize on, a bad specification and an array in a batch with 400, storing nothing', async () => {
    await reset();
    await expect(submit({ array: '0-100001' })).rejects.toMatchObject({
      code: 'invalid_array',
      kind: 'invalid',
    });
    await expect(submit({ array: '1-0' })).rejects.toMatchObject({ code: 'invalid_array' });
    await expect(submit({ array: '0-3%0' })).rejects.toMatchObject({ code: 'invalid_array' });
    await expect(submitJobsBatch(h.ctx, [{ script: 'true', cpus: 1, array: '0-3' }])).rejects.toMatchObject({
      code: 'invalid_array',
    });
    const small = testContext(backend, testConfig({ maxArraySize: 1001 }));
    await expect(submitJob(small.ctx, { script: 'true', cpus: 1, array: '0-1001' })).rejects.toMatchObject({
      code: 'invalid_array',
    });
    const [n] = await query<{ n: string }>(backend.db.db, sql`SELECT count(*) AS n FROM jobs`);
    expect(Number(n?.n)).toBe(0);
    const [a] = await query<{ n: string }>(backend.db.db, sql`SELECT count(*) AS n FROM job_arrays`);
    expect(Number(a?.n)).toBe(0);
  });

  it('%2: a pass places at most 2 tasks however many CPUs are free; the rest wait with JobArrayTaskLimit', async () => {
    await reset();
    const { session } = await registerWorker(h.ctx, { worker_id: 'node-a', hostname: 'node-a', cpus: 16 });
    const array = await submit({ array: '1-6%2' });
    const single = await submit({});
    await runSchedulingPass(h.ctx);
    await h.settle();
    let rows = await tasks(array.id);
    expect(rows.filter((r) => r.state === 'RUNNING').map((r) => r.array_task_id)).toEqual([1, 2]);
    expect(rows.filter((r) => r.state === 'PENDING').map((r) => r.reason)).toEqual(
      Array(4).fill('JobArrayTaskLimit'),
    );
    expect((await getJob(h.ctx.db, single.id)).state).toBe('RUNNING');
    // Another pass places nothing more.
    await runSchedulingPass(h.ctx);
    expect((await tasks(array.id)).filter((r) => r.state === 'RUNNING')).toHaveLength(2);

    // The agent sees the array's ids; a task's end lets the next one in.
    const { jobs } = await claimAssignments(h.ctx, { worker_id: 'node-a', session, wait_s: 0 });
    const assigned = jobs.filter((j) => j.array);
    expect(assigned.map((j) => j.array)).toEqual([
      { job_id: array.id, task_id: 1, count: 6, min: 1, max: 6, step: 1 },
      { job_id: array.id, task_id: 2, count: 6, min: 1, max: 6, step: 1 },
    ]);
    expect(jobs.find((j) => j.job_id === single.id)?.array).toBeUndefined();
    const done = assigned[0];
    if (!done) throw new Error('no task assigned');
    await reportStarted(h.ctx, done.job_id, { worker_id: 'node-a', attempt: done.attempt });
    await finishAssignment(h.ctx, done.job_id, {
      worker_id: 'node-a',
      attempt: done.attempt,
      exit_code: '0:0',
      outcome: 'exited',
    });
    await h.settle();
    await runSchedulingPass(h.ctx);
    rows = await tasks(array.id);
    expect(rows.filter((r) => r.state === 'RUNNING').map((r) => r.array_task_id)).toEqual([2, 3]);
    expect(rows.find((r) => r.array_task_id === 1)?.state).toBe('COMPLETED');
    await checkInvariants(backend.db.db, backend.registry);
  });

  /** Starts every task claimed on node-a and ends those in `ends` (job id -> exit code). */
  async function runOn(session: string, ends: Map<number, `${number}:${number}`>) {
    const { jobs } = await claimAssignments(h.ctx, { worker_id: 'node-a', session, wait_s: 0 });
    for (const j of jobs) await reportStarted(h.ctx, j.job_id, { worker_id: 'node-a', attempt: j.attempt });
    for (const [id, exit_code] of ends) {
      const { attempt } = await getJob(h.ctx.db, id);
      await finishAssignment(h.ctx, id, { worker_id: 'node-a', attempt, exit_code, outcome: 'exited' });
    }
    await h.settle();
  }
  const taskIds = async (arrayJobId: number) =>
    new Map((await tasks(arrayJobId)).map((r) => [r.array_task_id, Number(r.id)]));

  it('aftercorr: task i of B starts only after task i of A COMPLETED, and never when it failed', async () => {
    await reset();
    const { session } = await registerWorker(h.ctx, { worker_id: 'node-a', hostname: 'node-a', cpus: 16 });
    const a = await submit({ array: '0-2', name: 'a' });
    const b = await submit({ array: '0-2', name: 'b', dependency: `aftercorr:${a.id}` });
    await runSchedulingPass(h.ctx);
    const ta = await taskIds(a.id);
    let rows = await tasks(b.id);
    expect(rows.map((r) => [r.state, r.reason])).toEqual(Array(3).fill(['PENDING', 'Dependency']));
    // A_1 completes: B_1 (and only B_1) starts; A_0 fails: B_0 can never run.
    await runOn(
      session,
      new Map([
        [ta.get(1) as number, '0:0'],
        [ta.get(0) as number, '1:0'],
      ]),
    );
    await runSchedulingPass(h.ctx);
    rows = await tasks(b.id);
    expect(rows.map((r) => [r.array_task_id, r.state, r.reason])).toEqual([
      [0, 'PENDING', 'DependencyNeverSatisfied'],
      [1, 'RUNNING', null],
      [2, 'PENDING', 'Dependency'],
    ]);
    await runOn(session, new Map([[ta.get(2) as number, '0:0']]));
    await runSchedulingPass(h.ctx);
    expect((await tasks(b.id)).map((r) => r.state)).toEqual(['PENDING', 'RUNNING', 'RUNNING']);
    await checkInvariants(backend.db.db, backend.registry);
  });

  it('refuses aftercorr from a job that is no array, or to a job that is no array (400 invalid_dependency)', async () => {
    await reset();
    const a = await submit({ array: '0-1', hold: true });
    const single = await submit({ hold: true });
    await expect(submit({ dependency: `aftercorr:${a.id}` })).rejects.toMatchObject({
      code: 'invalid_dependency',
      message: expect.stringContaining('aftercorr pairs array tasks'),
    });
    await expect(submit({ array: '0-1', dependency: `aftercorr:${single.id}` })).rejects.toMatchObject({
      code: 'invalid_dependency',
      message: expect.stringContaining('is no job array'),
    });
  });

  it("afterok on an array's job id waits for every task (Slurm's meaning), and never runs once one failed", async () => {
    await reset();
    const { session } = await registerWorker(h.ctx, { worker_id: 'node-a', hostname: 'node-a', cpus: 16 });
    const good = await submit({ array: '0-2', name: 'good' });
    const bad = await submit({ array: '0-1', name: 'bad' });
    const afterGood = await submit({ name: 'after-good', dependency: `afterok:${good.id}` });
    const afterBad = await submit({ name: 'after-bad', dependency: `afterok:${bad.id}` });
    const anyBad = await submit({ name: 'any-bad', dependency: `afterany:${bad.id}` });
    await runSchedulingPass(h.ctx);
    const tg = await taskIds(good.id);
    const tbad = await taskIds(bad.id);
    // Task 0 of `good` (whose id is the array's) completes: not enough, two more to go.
    await runOn(
      session,
      new Map([
        [good.id, '0:0'],
        [tbad.get(0) as number, '2:0'],
      ]),
    );
    await runSchedulingPass(h.ctx);
    expect((await getJob(h.ctx.db, afterGood.id)).reason).toBe('Dependency');
    expect((await getJob(h.ctx.db, anyBad.id)).reason).toBe('Dependency');
    await runOn(
      session,
      new Map([
        [tg.get(1) as number, '0:0'],
        [tg.get(2) as number, '0:0'],
        [tbad.get(1) as number, '0:0'],
      ]),
    );
    await runSchedulingPass(h.ctx);
    expect((await getJob(h.ctx.db, afterGood.id)).state).toBe('RUNNING');
    expect((await getJob(h.ctx.db, anyBad.id)).state).toBe('RUNNING');
    expect(await getJob(h.ctx.db, afterBad.id)).toMatchObject({
      state: 'PENDING',
      reason: 'DependencyNeverSatisfied',
    });
    await checkInvariants(backend.db.db, backend.registry);
  });

  it("fan-out and fan-in of 10,000: the passes the target's end asks for free and start every task; the last task's end starts the fan-in job", {
    timeout: 300_000,
  }, async () => {
    await reset();
    // 10 nodes of 1,000 CPUs: room for every task at once.
    for (let k = 0; k < 10; k++) {
      await registerWorker(h.ctx, { worker_id: `wide-${k}`, hostname: `wide-${k}`, cpus: 1000 });
    }
    await h.settle();
    const source = await submit({ name: 'source', hold: true });
    const fan = await submit({ array: '0-9999', name: 'fan', dependency: `afterok:${source.id}` });
    const sink = await submit({ name: 'sink', dependency: `afterok:${fan.id}` });
    const count = async (where: ReturnType<typeof sql>) =>
      Number(
        (await query<{ n: string }>(backend.db.db, sql`SELECT count(*) AS n FROM jobs WHERE ${where}`))[0]?.n,
      );
    // The source runs and completes, as an agent would report it: one statement.
    await backend.db.db.execute(sql`UPDATE jobs SET held = NULL, reason = 'None' WHERE id = ${source.id}`);
    await runSchedulingPass(h.ctx);
    expect((await getJob(h.ctx.db, source.id)).state).toBe('RUNNING');
    // Its end asks for passes (as an agent's report does): they free every task at once and place them, 1,000
    // a pass.
    await endRunning(sql`id = ${source.id}`);
    expect(await count(sql`array_job_id = ${fan.id} AND dependency_pending`)).toBe(0);
    expect(await count(sql`array_job_id = ${fan.id} AND state = 'RUNNING'`)).toBe(10_000);
    expect(await getJob(h.ctx.db, sink.id)).toMatchObject({ state: 'PENDING', reason: 'Dependency' });
    // All but one task end, a thousand at a time (as batched reports would; 9,999 ends with their triggers in
    // one statement can outlast the pool's 5 s query timeout on a busy machine); then the last: the very next
    // pass starts the sink.
    for (let from = 0; from < 9999; from += 1000) {
      await endRunning(
        sql`array_job_id = ${fan.id} AND array_task_id >= ${from} AND array_task_id < ${Math.min(from + 1000, 9999)}`,
      );
    }
    expect(await getJob(h.ctx.db, sink.id)).toMatchObject({ state: 'PENDING', reason: 'Dependency' });
    await endRunning(sql`array_job_id = ${fan.id}`);
    expect((await getJob(h.ctx.db, sink.id)).state).toBe('RUNNING');
    await h.settle();
    await checkInvariants(backend.db.db, backend.registry);
  });

  /** Ends the running jobs `where` COMPLETED and releases what they held, in one statement (endJobsAndRelease). */
  async function endRunning(where: ReturnType<typeof sql>) {
    await endJobsAndRelease(h.ctx, {
      update: sql`UPDATE jobs SET state = 'COMPLETED', end_time = now(), exit_code = '0:0',
                    start_time = coalesce(start_time, now())
                  WHERE ${where} AND state = 'RUNNING' RETURNING id, state, node, attempt, exit_code`,
      workers: sql`SELECT DISTINCT node FROM jobs WHERE ${where} AND state = 'RUNNING' AND node IS NOT NULL`,
    });
    await h.settle();
  }
});
