/**
 * Retries (issue 16 item 4): the retry policy (max_requeues, retry_on_failure, retry_backoff_s, crash_limit) of
 * a job, else of its partition, else of the cluster, applied by the statements that end attempts; every
 * attempt recorded by the transition that ends it (job_attempts). On every backend.
 */
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp } from '../../functions/app.ts';
import type { Principal } from '../../functions/domain/auth.ts';
import {
  getJob,
  jobAttempts,
  requeueJob,
  type SubmitJobInput,
  submitJob,
} from '../../functions/domain/jobs.ts';
import { putPartition } from '../../functions/domain/partitions.ts';
import { reapLostWorkers } from '../../functions/domain/reaper.ts';
import { runSchedulingPass } from '../../functions/domain/scheduler.ts';
import { queryOne } from '../../functions/domain/sql.ts';
import {
  claimAssignments,
  finishAssignment,
  registerWorker,
  reportStarted,
} from '../../functions/domain/workers.ts';
import { configFromEnv, parseNodeEnv } from '../../functions/node/env.ts';
import { configFromWorkerEnv, parseWorkerEnv } from '../../functions/worker-env.ts';
import { availableBackends, type Backend, testConfig, testContext } from '../support/cluster.ts';
import { checkInvariants } from '../support/invariants.ts';

const backends = await availableBackends();
const admin: Principal = { kind: 'token', tokenId: 8, name: 'ops', owner: 'ops', scopes: ['admin'] };

describe.each(backends)('retries on $name', (factory) => {
  let backend: Backend;
  beforeAll(async () => {
    backend = await factory.create();
  });
  afterAll(async () => backend?.close());

  type Harness = ReturnType<typeof testContext>;
  let serial = 0;

  /** The partition's earlier workers leave the cluster: a job goes to the next one made. */
  const retire = (partition: string) =>
    backend.db.db.execute(
      sql`UPDATE workers SET status = 'down' WHERE starts_with(id, ${`${partition}-w`}) AND status <> 'down'`,
    );

  /** A fresh worker serving only `partition` (so that no other test's worker takes the job). */
  async function worker(h: Harness, partition: string) {
    await retire(partition);
    const id = `${partition}-w${++serial}`;
    const reg = await registerWorker(h.ctx, {
      worker_id: id,
      hostname: id,
      cpus: 2,
      running: [],
      partitions: [partition],
    });
    await h.settle();
    return { id, session: reg.session };
  }

  /** Places the job on a fresh worker and has its agent claim it (and report it started unless `started` is false). */
  async function runOnNewWorker(h: Harness, partition: string, jobId: number, started = true) {
    const w = await worker(h, partition);
    await runSchedulingPass(h.ctx);
    const claim = await claimAssignments(h.ctx, { worker_id: w.id, session: w.session, wait_s: 0 });
    const assignment = claim.jobs.find((j) => j.job_id === jobId);
    expect(assignment, `job ${jobId} assigned to ${w.id}`).toBeDefined();
    if (started) await reportStarted(h.ctx, jobId, { worker_id: w.id, attempt: assignment!.attempt });
    return { ...w, attempt: assignment!.attempt, requeues: assignment!.requeues };
  }

  /** The worker's heartbeat lapsed long ago and the reaper has been running all along: the next reap loses it. */
  async function loseWorker(h: Harness, id: string) {
    await backend.db.db.execute(
      sql`UPDATE workers SET last_heartbeat = now() - interval '10 minutes' WHERE id = ${id}`,
    );
    await backend.db.db.execute(
      sql`UPDATE maintenance_state SET reaper_seen_at = now(), reaper_resumed_at = now() - interval '1 hour'`,
    );
    const reaped = await reapLostWorkers(h.ctx);
    expect(reaped.lostWorkers).toContain(id);
    await h.settle();
  }

  const jobRow = (id: number) =>
    queryOne<{ state: string; requeues: number; crashes: number; reason: string; wait_s: number | null }>(
      backend.db.db,
      sql`SELECT state, requeues, crashes, reason,
                 extract(epoch FROM begin_time - now())::float8 AS wait_s FROM jobs WHERE id = ${id}`,
    );

  async function submit(h: Harness, partition: string, input: Partial<SubmitJobInput>) {
    const exists = await queryOne(backend.db.db, sql`SELECT 1 FROM partitions WHERE name = ${partition}`);
    if (!exists) await putPartition(h.ctx, partition, {}, admin);
    await retire(partition);
    const job = await submitJob(h.ctx, { script: 'true', cpus: 1, partition, ...input });
    await h.settle();
    return job;
  }

  it('a job whose node is lost is requeued exactly its max_requeues, then ends NODE_FAIL, every attempt recorded', {
    timeout: 60_000,
  }, async () => {
    // The cluster would allow 3; the job's own 2 wins.
    const h = testContext(backend, testConfig({ maxRequeues: 3 }));
    const job = await submit(h, 'rt-lost', { requeue: true, max_requeues: 2 });
    const nodes: string[] = [];
    for (let round = 0; round < 3; round++) {
      const run = await runOnNewWorker(h, 'rt-lost', job.id);
      expect(run).toMatchObject({ attempt: round + 1, requeues: round });
      nodes.push(run.id);
      await loseWorker(h, run.id);
      const now = await jobRow(job.id);
      if (round < 2) expect(now).toMatchObject({ state: 'PENDING', requeues: round + 1 });
    }
    const final = await getJob(backend.db.db, job.id);
    expect(final).toMatchObject({
      state: 'NODE_FAIL',
      requeues: 2,
      crashes: 3,
      exit_code: '0:0',
      node: nodes[2],
    });
    expect(final.reason).toMatch(/not requeued: it was requeued 2 times already \(max requeues 2\)/);
    const attempts = await jobAttempts(backend.db.db, final);
    expect(attempts.map((a) => [a.attempt, a.node, a.state, a.requeued])).toEqual([
      [1, nodes[0], 'NODE_FAIL', true],
      [2, nodes[1], 'NODE_FAIL', true],
      [3, nodes[2], 'NODE_FAIL', false],
    ]);
    for (const a of attempts) {
      expect(a.start_time, `attempt ${a.attempt} started`).not.toBeNull();
      expect(Date.parse(a.end_time!)).toBeGreaterThanOrEqual(Date.parse(a.start_time!));
      expect(a.reason).toMatch(/^node lost: its heartbeat lapsed/);
    }
    // One attempt after another: each started after the one before ended.
    for (let k = 1; k < attempts.length; k++) {
      expect(Date.parse(attempts[k]!.start_time!)).toBeGreaterThanOrEqual(
        Date.parse(attempts[k - 1]!.end_time!),
      );
    }
    await checkInvariants(backend.db.db, backend.registry);
  });

  it('the crash limit ends a job NODE_FAIL at its n-th crash although requeues are left; a loss before it started is no crash', {
    timeout: 60_000,
  }, async () => {
    const h = testContext(backend);
    const job = await submit(h, 'rt-crash', { requeue: true, max_requeues: 10, crash_limit: 2 });
    // Lost before its agent started it: requeued, not counted as a crash.
    const unstarted = await runOnNewWorker(h, 'rt-crash', job.id, false);
    await loseWorker(h, unstarted.id);
    expect(await jobRow(job.id)).toMatchObject({ state: 'PENDING', crashes: 0, requeues: 1 });
    const first = await runOnNewWorker(h, 'rt-crash', job.id);
    await loseWorker(h, first.id);
    expect(await jobRow(job.id)).toMatchObject({ state: 'PENDING', crashes: 1, requeues: 2 });
    const second = await runOnNewWorker(h, 'rt-crash', job.id);
    await loseWorker(h, second.id);
    const after = await jobRow(job.id);
    expect(after).toMatchObject({ state: 'NODE_FAIL', crashes: 2, requeues: 2 });
    expect(after?.reason).toMatch(/not requeued: its node was lost while it ran 2 times \(crash limit 2\)/);
    const attempts = await jobAttempts(backend.db.db, await getJob(backend.db.db, job.id));
    expect(attempts.map((a) => [a.attempt, a.state, a.start_time === null, a.requeued])).toEqual([
      [1, 'NODE_FAIL', true, true],
      [2, 'NODE_FAIL', false, true],
      [3, 'NODE_FAIL', false, false],
    ]);
  });

  it("a job that sets no policy takes its partition's, else the cluster's", { timeout: 60_000 }, async () => {
    const h = testContext(backend, testConfig({ maxRequeues: 3, crashLimit: 0 }));
    await putPartition(h.ctx, 'rt-part', {}, admin);
    await putPartition(h.ctx, 'rt-part', { max_requeues: 1 }, admin);
    const byPartition = await submit(h, 'rt-part', { requeue: true });
    for (let round = 0; round < 2; round++) {
      const run = await runOnNewWorker(h, 'rt-part', byPartition.id);
      await loseWorker(h, run.id);
    }
    expect(await jobRow(byPartition.id)).toMatchObject({ state: 'NODE_FAIL', requeues: 1 });
    expect((await jobRow(byPartition.id))?.reason).toMatch(/max requeues 1\)/);

    // The job's own setting beats the partition's; the partition's crash limit applies.
    await putPartition(h.ctx, 'rt-part', { max_requeues: 0, crash_limit: 3 }, admin);
    const own = await submit(h, 'rt-part', { requeue: true, max_requeues: 5 });
    for (let round = 0; round < 3; round++) {
      const run = await runOnNewWorker(h, 'rt-part', own.id);
      await loseWorker(h, run.id);
    }
    expect(await jobRow(own.id)).toMatchObject({ state: 'NODE_FAIL', requeues: 2, crashes: 3 });
    expect((await jobRow(own.id))?.reason).toMatch(/crash limit 3\)/);

    // Back to null: the cluster's 3 (and no crash limit).
    await putPartition(h.ctx, 'rt-part', { max_requeues: null, crash_limit: null }, admin);
    const cluster = await submit(h, 'rt-part', { requeue: true });
    for (let round = 0; round < 4; round++) {
      const run = await runOnNewWorker(h, 'rt-part', cluster.id);
      await loseWorker(h, run.id);
    }
    expect(await jobRow(cluster.id)).toMatchObject({ state: 'NODE_FAIL', requeues: 3 });
  });

  it('retry_on_failure: a non-zero exit requeues the job after its back-off, doubled per requeue; the last failure stays FAILED', {
    timeout: 60_000,
  }, async () => {
    const h = testContext(backend);
    const job = await submit(h, 'rt-fail', { retry_on_failure: true, max_requeues: 2, retry_backoff_s: 30 });
    const exits = ['3:0', '4:0', '5:0'];
    for (let round = 0; round < 3; round++) {
      const run = await runOnNewWorker(h, 'rt-fail', job.id);
      const answer = await finishAssignment(h.ctx, job.id, {
        worker_id: run.id,
        attempt: run.attempt,
        exit_code: exits[round] as `${number}:${number}`,
        outcome: 'exited',
      });
      await h.settle();
      if (round === 2) {
        expect(answer.state).toBe('FAILED');
        break;
      }
      expect(answer.state).toBe('PENDING');
      // The same report again (its answer lost) is harmless.
      expect(
        (
          await finishAssignment(h.ctx, job.id, {
            worker_id: run.id,
            attempt: run.attempt,
            exit_code: exits[round] as `${number}:${number}`,
            outcome: 'exited',
          })
        ).state,
      ).toBe('PENDING');
      const now = await jobRow(job.id);
      // Waiting for its back-off, as Slurm shows a requeued job.
      expect(now).toMatchObject({ state: 'PENDING', requeues: round + 1, reason: 'BeginTime' });
      // 30 s, then 60 s: not placed before.
      expect(now!.wait_s).toBeGreaterThan(30 * 2 ** round - 5);
      expect(now!.wait_s).toBeLessThanOrEqual(30 * 2 ** round);
      const extra = await worker(h, 'rt-fail');
      await runSchedulingPass(h.ctx);
      expect((await jobRow(job.id))?.state, 'not placed during its back-off').toBe('PENDING');
      await backend.db.db.execute(sql`UPDATE workers SET status = 'down' WHERE id = ${extra.id}`);
      // The back-off is over (moved into the past rather than waited for).
      await backend.db.db.execute(
        sql`UPDATE jobs SET begin_time = now() - interval '1 second' WHERE id = ${job.id}`,
      );
    }
    const final = await getJob(backend.db.db, job.id);
    expect(final).toMatchObject({ state: 'FAILED', exit_code: '5:0', requeues: 2 });
    expect(final.reason_detail).toMatch(/not requeued: it was requeued 2 times already \(max requeues 2\)/);
    const attempts = await jobAttempts(backend.db.db, final);
    expect(attempts.map((a) => [a.attempt, a.state, a.exit_code, a.requeued, a.reason])).toEqual([
      [1, 'FAILED', '3:0', true, 'NonZeroExitCode'],
      [2, 'FAILED', '4:0', true, 'NonZeroExitCode'],
      [3, 'FAILED', '5:0', false, null],
    ]);
    await checkInvariants(backend.db.db, backend.registry);
  });

  it('without retry_on_failure a non-zero exit ends the job FAILED; a job without requeue ends NODE_FAIL at the first loss', {
    timeout: 30_000,
  }, async () => {
    const h = testContext(backend);
    const failing = await submit(h, 'rt-plain', { max_requeues: 5 });
    const run = await runOnNewWorker(h, 'rt-plain', failing.id);
    await finishAssignment(h.ctx, failing.id, {
      worker_id: run.id,
      attempt: run.attempt,
      exit_code: '1:0',
      outcome: 'exited',
    });
    expect(await jobRow(failing.id)).toMatchObject({ state: 'FAILED', requeues: 0 });
    const plain = await submit(h, 'rt-plain', { max_requeues: 5 });
    const run2 = await runOnNewWorker(h, 'rt-plain', plain.id);
    await loseWorker(h, run2.id);
    expect(await jobRow(plain.id)).toMatchObject({ state: 'NODE_FAIL', requeues: 0, crashes: 1 });
    expect(
      (await jobAttempts(backend.db.db, await getJob(backend.db.db, plain.id))).map((a) => a.state),
    ).toEqual(['NODE_FAIL']);
  });

  it('scontrol requeue of a running job records its attempt REQUEUED; the running attempt shows as RUNNING', {
    timeout: 30_000,
  }, async () => {
    const h = testContext(backend);
    const job = await submit(h, 'rt-manual', {});
    const run = await runOnNewWorker(h, 'rt-manual', job.id);
    const running = await getJob(backend.db.db, job.id);
    expect(await jobAttempts(backend.db.db, running)).toEqual([
      expect.objectContaining({ attempt: 1, node: run.id, state: 'RUNNING', end_time: null }),
    ]);
    await requeueJob(h.ctx, job.id, { hold: true });
    await h.settle();
    const attempts = await jobAttempts(backend.db.db, await getJob(backend.db.db, job.id));
    expect(attempts.map((a) => [a.attempt, a.node, a.state, a.requeued])).toEqual([
      [1, run.id, 'REQUEUED', true],
    ]);
  });

  it('GET /api/v1/jobs/{id} shows the attempts; bad retry values are a 400 that changes nothing', async () => {
    const h = testContext(backend);
    const app = createApp(h.ctx);
    const json = (body: unknown) => ({
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    const before = await queryOne<{ n: number }>(backend.db.db, sql`SELECT count(*)::int AS n FROM jobs`);
    for (const bad of [
      { max_requeues: -1 },
      { max_requeues: 1.5 },
      { max_requeues: 'three' },
      { max_requeues: 1001 },
      { retry_backoff_s: 86_401 },
      { retry_backoff_s: -3 },
      { crash_limit: -1 },
      { retry_on_failure: 'yes' },
    ]) {
      const res = await app.request('/api/v1/jobs/submit', json({ script: 'true', cpus: 1, ...bad }));
      expect(res.status, JSON.stringify(bad)).toBe(400);
      const body = (await res.json()) as { error: { code: string; message: string } };
      expect(body.error.message).toMatch(new RegExp(Object.keys(bad)[0]!));
      const batch = await app.request(
        '/api/v1/jobs/batch',
        json({ jobs: [{ script: 'true', cpus: 1, ...bad }] }),
      );
      expect(batch.status, `batch ${JSON.stringify(bad)}`).toBe(400);
    }
    expect(await queryOne<{ n: number }>(backend.db.db, sql`SELECT count(*)::int AS n FROM jobs`)).toEqual(
      before,
    );

    await putPartition(h.ctx, 'rt-api', {}, admin);
    for (const bad of [
      { max_requeues: -1 },
      { crash_limit: 2000 },
      { retry_backoff_s: 'soon' },
      { retry_on_failure: 1 },
    ]) {
      const res = await app.request('/api/v1/partitions/rt-api', json(bad));
      expect(res.status, JSON.stringify(bad)).toBe(400);
    }
    const part = await app.request('/api/v1/partitions/rt-api');
    expect(await part.json()).toMatchObject({ max_requeues: null, crash_limit: null, retry_backoff_s: null });
    const set = await app.request(
      '/api/v1/partitions/rt-api',
      json({ max_requeues: 4, retry_on_failure: true, retry_backoff_s: 10, crash_limit: 2 }),
    );
    expect(set.status).toBe(200);
    expect(await set.json()).toMatchObject({
      max_requeues: 4,
      retry_on_failure: true,
      retry_backoff_s: 10,
      crash_limit: 2,
    });

    const res = await app.request(
      '/api/v1/jobs/submit',
      json({
        script: 'true',
        cpus: 1,
        partition: 'rt-api',
        requeue: true,
        max_requeues: 1,
        retry_backoff_s: 0,
        crash_limit: 0,
      }),
    );
    expect(res.status).toBe(201);
    const job = (await res.json()) as { id: number };
    const run = await runOnNewWorker(h, 'rt-api', job.id);
    await loseWorker(h, run.id);
    const shown = await app.request(`/api/v1/jobs/${job.id}`);
    expect(await shown.json()).toMatchObject({
      state: 'PENDING',
      requeues: 1,
      max_requeues: 1,
      retry_backoff_s: 0,
      crash_limit: 0,
      retry_on_failure: null,
      attempts: [{ attempt: 1, node: run.id, state: 'NODE_FAIL', exit_code: null, requeued: true }],
    });
    // The dashboard's job page lists them too.
    const page = await (await app.request(`/api/v1/ui/fragments/jobs/${job.id}`)).text();
    expect(page).toMatch(
      /<table id="attempts-table">[\s\S]*NODE_FAIL<\/span> requeued[\s\S]*node lost: its heartbeat lapsed/,
    );
  });
});

describe('the cluster retry settings (Node and Workers)', () => {
  const workerBindings = {
    DATABASE_URL: 'postgres://db.example/conductor',
    UPSTASH_REDIS_REST_URL: 'https://redis.example',
    UPSTASH_REDIS_REST_TOKEN: 'token',
  };

  it('default to 3 requeues, crash limit 5, no back-off; whole numbers are taken', () => {
    for (const config of [
      configFromEnv(parseNodeEnv({})),
      configFromWorkerEnv(parseWorkerEnv(workerBindings)),
    ]) {
      expect(config).toMatchObject({ maxRequeues: 3, crashLimit: 5, retryBackoffSeconds: 0 });
    }
    const set = { CONDUCTOR_MAX_REQUEUES: '10', CONDUCTOR_CRASH_LIMIT: '0', CONDUCTOR_RETRY_BACKOFF: '120' };
    expect(configFromEnv(parseNodeEnv(set))).toMatchObject({
      maxRequeues: 10,
      crashLimit: 0,
      retryBackoffSeconds: 120,
    });
    expect(configFromWorkerEnv(parseWorkerEnv({ ...workerBindings, ...set }))).toMatchObject({
      maxRequeues: 10,
      crashLimit: 0,
      retryBackoffSeconds: 120,
    });
  });

  it('refuse negative, fractional, non-numeric and too large values, naming the variable', () => {
    for (const name of ['CONDUCTOR_CRASH_LIMIT', 'CONDUCTOR_RETRY_BACKOFF', 'CONDUCTOR_MAX_REQUEUES']) {
      for (const value of ['-1', '1.5', 'many', '100000']) {
        expect(() => parseNodeEnv({ [name]: value }), `${name}=${value}`).toThrow(new RegExp(name));
        expect(() => parseWorkerEnv({ ...workerBindings, [name]: value }), `${name}=${value}`).toThrow(
          new RegExp(name),
        );
      }
    }
  });
});
