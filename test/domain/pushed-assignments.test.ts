/**
 * Issue 17, the claim round trip taken off a pushed assignment's path: a scheduling pass hands the notifier
 * the assignments it placed on workers holding a push channel (the objects a claim answers with), and a
 * `started` report with the worker's current session is that assignment's claim. Fencing stays: worker,
 * attempt and session; a job cancelled before its agent started it answers CANCELLED.
 */
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Assignment } from '../../agent/src/protocol.ts';
import {
  BARE_WAKE,
  openChannelSession,
  WAKE_JOBS_MAX_BYTES,
  wakeFrame,
} from '../../functions/domain/channel.ts';
import { cancelJob, submitJob } from '../../functions/domain/jobs.ts';
import type { WorkNotifier } from '../../functions/domain/ports.ts';
import { runSchedulingPass } from '../../functions/domain/scheduler.ts';
import { queryOne } from '../../functions/domain/sql.ts';
import { claimAssignments, registerWorker, reportStarted } from '../../functions/domain/workers.ts';
import { availableBackends, type Backend, testContext } from '../support/cluster.ts';
import { checkInvariants } from '../support/invariants.ts';

const backends = (await availableBackends()).filter((b) => b.name !== 'neon+redis');

/** A notifier that records what it is told (and wakes nothing). */
function recordingNotifier() {
  const calls: { workerId: string; jobs: readonly Assignment[] | undefined }[] = [];
  const notifier: WorkNotifier = {
    notify: (workerId, jobs) => calls.push({ workerId, jobs }),
    wait: (_workerId, ms) => new Promise((resolve) => setTimeout(resolve, Math.min(ms, 10))),
  };
  return { calls, notifier };
}

describe('the wake frame', () => {
  const assignment = (script: string): Assignment => ({
    job_id: 1,
    attempt: 1,
    name: 'x',
    script,
    cpus: 1,
    work_dir: null,
    environment: {},
    time_limit_s: null,
  });

  it('carries the assignments up to 64 KiB of JSON (UTF-8 bytes), and goes bare beyond, or without any', () => {
    const small = wakeFrame([assignment('echo hi')]);
    expect(JSON.parse(small)).toEqual({ type: 'wake', jobs: [assignment('echo hi')] });
    expect(wakeFrame()).toBe(BARE_WAKE);
    expect(wakeFrame([])).toBe(BARE_WAKE);
    expect(BARE_WAKE).toBe('{"type":"wake"}');
    const overhead = small.length - 'echo hi'.length;
    expect(wakeFrame([assignment('x'.repeat(WAKE_JOBS_MAX_BYTES - overhead))])).not.toBe(BARE_WAKE);
    expect(wakeFrame([assignment('x'.repeat(WAKE_JOBS_MAX_BYTES - overhead + 1))])).toBe(BARE_WAKE);
    // Counted in bytes: 'é' is two.
    const half = Math.floor((WAKE_JOBS_MAX_BYTES - overhead) / 2);
    expect(wakeFrame([assignment('é'.repeat(half))])).not.toBe(BARE_WAKE);
    expect(wakeFrame([assignment('é'.repeat(half + 1))])).toBe(BARE_WAKE);
  });
});

describe.each(backends)('pushed assignments on $name', (factory) => {
  let backend: Backend;
  beforeAll(async () => {
    backend = await factory.create();
  });
  afterAll(async () => {
    await backend?.close();
  });

  const jobRow = (id: number) =>
    queryOne<{ state: string; claimed_session: string | null; claimed: boolean; started: boolean }>(
      backend.db.db,
      sql`SELECT state, claimed_session, claimed_at IS NOT NULL AS claimed, start_time IS NOT NULL AS started
          FROM jobs WHERE id = ${id}`,
    );

  /** A worker of `cpus` (its channel open when `channel`) and one job submitted for it, placed by one pass. */
  async function placed(name: string, options: { channel: boolean; cpus?: number; script?: string }) {
    const { calls, notifier } = recordingNotifier();
    const { ctx, settle } = testContext(backend, undefined, { notifier });
    const cpus = options.cpus ?? 7;
    const w = await registerWorker(ctx, { worker_id: name, hostname: name, cpus });
    if (options.channel) await openChannelSession(ctx, { worker_id: name, session: w.session });
    const job = await submitJob(ctx, { script: options.script ?? 'true', cpus, name: `for-${name}` });
    await settle();
    await runSchedulingPass(ctx);
    await settle();
    expect(await jobRow(job.id)).toMatchObject({ state: 'RUNNING', claimed_session: null, started: false });
    return { ctx, job, session: w.session, calls: calls.filter((c) => c.workerId === name) };
  }

  it('a pass hands a channel worker the assignments it placed there, the same objects a claim answers with; an HTTP worker gets a bare notify', async () => {
    const pushed = await placed('push-chan', { channel: true, script: 'echo pushed' });
    expect(pushed.calls).toHaveLength(1);
    const jobs = pushed.calls[0]!.jobs!;
    expect(jobs.map((j) => [j.job_id, j.attempt, j.script, j.cpus])).toEqual([
      [pushed.job.id, 1, 'echo pushed', 7],
    ]);
    // The claim (a bare wake's, or a reconnecting agent's) still hands it out until it is reported started.
    const claim = await claimAssignments(pushed.ctx, { worker_id: 'push-chan', session: pushed.session });
    expect(claim.jobs).toEqual(jobs);

    const http = await placed('push-http', { channel: false, cpus: 5 });
    expect(http.calls).toEqual([{ workerId: 'push-http', jobs: undefined }]);
    await checkInvariants(backend.db.db, backend.registry);
  });

  it('an exclusive array task with GPUs, gres and memory, in the second partition it lists: the pushed assignment is the claim answer, holding all the node’s CPUs', async () => {
    const { calls, notifier } = recordingNotifier();
    const { ctx, settle } = testContext(backend, undefined, { notifier });
    const w = await registerWorker(ctx, {
      worker_id: 'push-rich',
      hostname: 'push-rich',
      cpus: 12,
      memory_mb: 8000,
      gpus: [
        { index: 0, model: 'a100' },
        { index: 1, model: 'a100' },
      ],
      gres: { nvme: 2 },
      partitions: ['rich'],
    });
    await openChannelSession(ctx, { worker_id: 'push-rich', session: w.session });
    const array = await submitJob(ctx, {
      script: 'echo $SLURM_ARRAY_TASK_ID',
      cpus: 2,
      exclusive: true,
      array: '3-3',
      gpus: 1,
      gres: 'nvme:1',
      memory_per_node: '1G',
      partition: 'default,rich',
      environment: { FOO: 'bar' },
    });
    await settle();
    await runSchedulingPass(ctx);
    await settle();
    const pushed = calls.filter((c) => c.workerId === 'push-rich').flatMap((c) => c.jobs ?? []);
    expect(pushed).toHaveLength(1);
    expect(pushed[0]).toMatchObject({
      cpus: 12,
      partition: 'rich',
      gres: { nvme: 1 },
      memory_mb: 1024,
      environment: { FOO: 'bar' },
      array: { job_id: array.id, task_id: 3, count: 1, min: 3, max: 3, step: 1 },
    });
    const claim = await claimAssignments(ctx, { worker_id: 'push-rich', session: w.session });
    expect(claim.jobs).toEqual(pushed);
    await checkInvariants(backend.db.db, backend.registry);
  });

  it("a started report with the worker's current session is the pushed assignment's claim; a later claim does not hand it out", async () => {
    const { ctx, job, session } = await placed('push-start', { channel: true, cpus: 6 });
    expect(await reportStarted(ctx, job.id, { worker_id: 'push-start', attempt: 1, session })).toEqual({
      state: 'RUNNING',
    });
    expect(await jobRow(job.id)).toMatchObject({
      state: 'RUNNING',
      claimed_session: session,
      claimed: true,
      started: true,
    });
    expect((await claimAssignments(ctx, { worker_id: 'push-start', session })).jobs).toEqual([]);
    // The same report again (a retry) is harmless.
    expect(await reportStarted(ctx, job.id, { worker_id: 'push-start', attempt: 1, session })).toEqual({
      state: 'RUNNING',
    });
    await checkInvariants(backend.db.db, backend.registry);
  });

  it("another session's report for an unclaimed assignment is refused and changes nothing; after a registration that keeps the job, the new session's is taken", async () => {
    const { ctx, job, session } = await placed('push-fence', { channel: true, cpus: 9 });
    const report = (s?: string) =>
      reportStarted(ctx, job.id, { worker_id: 'push-fence', attempt: 1, ...(s ? { session: s } : {}) });
    await expect(report('not-the-session')).rejects.toMatchObject({
      kind: 'conflict',
      code: 'session_superseded',
    });
    await expect(report()).rejects.toMatchObject({ kind: 'conflict', code: 'session_superseded' });
    await expect(
      reportStarted(ctx, job.id, { worker_id: 'push-fence', attempt: 2, session }),
    ).rejects.toMatchObject({ kind: 'conflict', code: 'stale_assignment' });
    expect(await jobRow(job.id)).toMatchObject({ claimed_session: null, claimed: false, started: false });

    // The agent registers again, listing the job it runs: the new session holds it, and its report counts.
    const again = await registerWorker(ctx, {
      worker_id: 'push-fence',
      hostname: 'push-fence',
      cpus: 9,
      previous_session: session,
      running: [{ job_id: job.id, attempt: 1 }],
    });
    expect(await report(again.session)).toEqual({ state: 'RUNNING' });
    expect(await jobRow(job.id)).toMatchObject({ claimed_session: again.session, started: true });
    await checkInvariants(backend.db.db, backend.registry);
  });

  it('a job cancelled between its push and its start answers CANCELLED to the started report, and stays cancelled', async () => {
    const { ctx, job, session } = await placed('push-cancel', { channel: true, cpus: 3 });
    expect((await cancelJob(ctx, job.id)).state).toBe('CANCELLED');
    expect(await reportStarted(ctx, job.id, { worker_id: 'push-cancel', attempt: 1, session })).toEqual({
      state: 'CANCELLED',
    });
    expect(await jobRow(job.id)).toMatchObject({ state: 'CANCELLED', started: false });
    await checkInvariants(backend.db.db, backend.registry);
  });
});
