/**
 * Slurm's job options and verbs over HTTP (issue 15): sbatch's output, input, export, signal, QOS, begin time,
 * hold and comment fields at submit; their 400s.
 */
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runSchedulingPass } from '../../functions/domain/scheduler.ts';
import { query } from '../../functions/domain/sql.ts';
import { errorOf, type SecureApp, secureApp } from '../security/support.ts';
import { availableBackends, type Backend } from '../support/cluster.ts';

const backends = await availableBackends();

interface Job {
  id: number;
  state: string;
  [field: string]: unknown;
}

describe.each(backends)('Slurm job fields and verbs on $name', (factory) => {
  let backend: Backend;
  let s: SecureApp;
  let admin: string;
  let alice: string;
  let bob: string;
  let agent: string;
  let session: string;
  beforeAll(async () => {
    backend = await factory.create();
    s = secureApp(backend);
    admin = (await s.token(['admin'], 'admin')).token;
    alice = (await s.token(['jobs:read', 'jobs:write'], 'alice', 'alice')).token;
    bob = (await s.token(['jobs:read', 'jobs:write'], 'bob', 'bob')).token;
    agent = (await s.token(['agent'], 'agent')).token;
    const reg = await s.request('POST', '/api/v1/agents/register', {
      token: agent,
      body: { worker_id: 'node-a', hostname: 'node-a', cpus: 64 },
    });
    expect(reg.status).toBe(200);
    session = ((await reg.json()) as { session: string }).session;
  });
  afterAll(async () => {
    await s?.harness.settle();
    await backend?.close();
  });

  const jobCount = async () =>
    Number((await query<{ n: string }>(backend.db.db, sql`SELECT count(*) AS n FROM jobs`))[0]?.n);

  async function submit(token: string, body: Record<string, unknown>): Promise<Job> {
    const res = await s.request('POST', '/api/v1/jobs/submit', {
      token,
      body: { script: 'true', cpus: 1, ...body },
    });
    expect(res.status, JSON.stringify(await res.clone().json())).toBe(201);
    return (await res.json()) as Job;
  }

  it('stores and shows the sbatch fields of a submission, and of a batch', async () => {
    const fields = {
      qos: 'normal',
      stdout: 'out-%j.txt',
      stderr: '/tmp/err-%x.txt',
      stdin: 'input.txt',
      open_mode: 'append',
      export_env: 'ALL,FOO=1',
      signal: { signal: 'SIGusr1', before_s: 120, batch_only: true },
      comment: 'a note',
    };
    const job = await submit(alice, fields);
    const expected = { ...fields, signal: { signal: 'USR1', before_s: 120, batch_only: true } };
    expect(job).toMatchObject({ ...expected, max_rss_kb: null, cancelled_by: null, requeues: 0, held: null });
    const read = await s.request('GET', `/api/v1/jobs/${job.id}`, { token: alice });
    expect(await read.json()).toMatchObject(expected);
    const batch = await s.request('POST', '/api/v1/jobs/batch', {
      token: alice,
      body: {
        jobs: [
          { script: 'true', cpus: 1, ...fields },
          { script: 'true', cpus: 1, signal: { signal: '10' } },
        ],
      },
    });
    expect(batch.status).toBe(201);
    const [first, second] = ((await batch.json()) as { jobs: Job[] }).jobs;
    expect(first).toMatchObject(expected);
    // Slurm's defaults: 60 s before the limit, to the whole job.
    expect(second).toMatchObject({ signal: { signal: '10', before_s: 60, batch_only: false }, stdout: null });
  });

  it('submits held by the user with hold: true (sbatch -H); the owner releases it', async () => {
    const job = await submit(alice, { hold: true });
    expect(job).toMatchObject({ state: 'PENDING', held: 'user', reason: 'JobHeldUser' });
    expect(job.reason_detail).toContain('release it');
    const batch = await s.request('POST', '/api/v1/jobs/batch', {
      token: alice,
      body: { jobs: [{ script: 'true', cpus: 1, hold: true }] },
    });
    expect(((await batch.json()) as { jobs: Job[] }).jobs[0]).toMatchObject({
      held: 'user',
      reason: 'JobHeldUser',
    });
    const released = await s.request('POST', `/api/v1/jobs/${job.id}/release`, { token: alice });
    expect(released.status).toBe(200);
    expect(await released.json()).toMatchObject({ held: null });
  });

  it('takes up to 1024 environment variables, not 1025', async () => {
    const env = (n: number) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`V${i}`, 'x']));
    await submit(alice, { environment: env(1024) });
    const res = await s.request('POST', '/api/v1/jobs/submit', {
      token: alice,
      body: { script: 'true', cpus: 1, environment: env(1025) },
    });
    expect(res.status).toBe(400);
    expect((await errorOf(res)).message).toContain('at most 1024 variables');
  });

  it('refuses bad values with a 400 naming the field, on /submit and /batch, and stores nothing', async () => {
    const before = await jobCount();
    const cases: [Record<string, unknown>, string][] = [
      [{ open_mode: 'overwrite' }, 'open_mode is append or truncate'],
      [{ signal: { signal: 'FOO' } }, 'signal is a name such as USR1'],
      [{ signal: { signal: '65' } }, 'signal is a name such as USR1'],
      [{ signal: { signal: 'USR1', before_s: 70_000 } }, 'signal.before_s is at most 65535'],
      [{ signal: { signal: 'USR1', extra: 1 } }, 'extra'],
      [{ begin_time: 'tomorrow' }, 'begin_time is an ISO 8601 date and time'],
      [{ qos: 'not a name' }, 'qos is a name'],
      [{ qos: 'q'.repeat(65) }, 'qos is at most 64 characters'],
      [{ stdout: 'a\u0000b' }, 'stdout: contains a NUL'],
      [{ stdin: '' }, 'stdin must not be empty'],
      [{ stderr: 'e'.repeat(4097) }, 'stderr is at most 4096 characters'],
      [{ export_env: 'ALL\nX' }, 'export_env has control characters'],
      [{ comment: 'c'.repeat(1025) }, 'comment is at most 1024 characters'],
      [{ hold: 'yes' }, 'hold'],
    ];
    for (const [extra, message] of cases) {
      const res = await s.request('POST', '/api/v1/jobs/submit', {
        token: alice,
        body: { script: 'true', cpus: 1, ...extra },
      });
      expect(res.status, JSON.stringify(extra)).toBe(400);
      expect((await errorOf(res)).message, JSON.stringify(extra)).toContain(message);
      const batch = await s.request('POST', '/api/v1/jobs/batch', {
        token: alice,
        body: {
          jobs: [
            { script: 'true', cpus: 1 },
            { script: 'true', cpus: 1, ...extra },
          ],
        },
      });
      expect(batch.status, JSON.stringify(extra)).toBe(400);
      expect((await errorOf(batch)).message).toContain('jobs[1]');
    }
    expect(await jobCount()).toBe(before);
  });

  const agentCall = async (path: string, body: Record<string, unknown>) => {
    const res = await s.request('POST', `/api/v1/agents${path}`, { token: agent, body });
    expect(res.status, `${path}: ${JSON.stringify(await res.clone().json())}`).toBe(200);
    return (await res.json()) as Record<string, unknown> & {
      jobs: { job_id: number; attempt: number; [k: string]: unknown }[];
      cancel: { job_id: number; attempt: number }[];
      signal: { job_id: number; attempt: number; signal: string; batch_only: boolean }[];
    };
  };
  const heartbeat = () => agentCall('/heartbeat', { worker_id: 'node-a', session });
  const claim = () => agentCall('/claim', { worker_id: 'node-a', session, wait_s: 0 });
  const getJob = async (id: number, token = admin) =>
    (await (await s.request('GET', `/api/v1/jobs/${id}`, { token })).json()) as Job;

  /** A job of alice's placed on node-a, claimed and started by its agent: RUNNING at attempt `attempt`. */
  async function runningJob(body: Record<string, unknown> = {}) {
    const job = await submit(alice, body);
    await runSchedulingPass(s.harness.ctx);
    const claimed = await claim();
    const assignment = claimed.jobs.find((j) => j.job_id === job.id);
    expect(assignment, 'claimed').toBeDefined();
    const attempt = assignment?.attempt as number;
    const started = await s.request('POST', `/api/v1/agents/jobs/${job.id}/started`, {
      token: agent,
      body: { worker_id: 'node-a', attempt },
    });
    expect(started.status).toBe(200);
    return { id: job.id, attempt, assignment: assignment as Record<string, unknown> };
  }

  it('hands the agent the sbatch fields in the assignment and stores MaxRSS from the finish report', async () => {
    const { id, attempt, assignment } = await runningJob({
      qos: 'high',
      stdout: 'o-%j',
      stderr: 'e-%j',
      stdin: 'in.txt',
      open_mode: 'truncate',
      export_env: 'NONE',
      signal: { signal: 'USR2', before_s: 30 },
    });
    expect(assignment).toMatchObject({
      qos: 'high',
      stdout: 'o-%j',
      stderr: 'e-%j',
      stdin: 'in.txt',
      open_mode: 'truncate',
      export_env: 'NONE',
      signal: { signal: 'USR2', before_s: 30, batch_only: false },
      start_time: null,
    });
    const finish = await s.request('POST', `/api/v1/agents/jobs/${id}/finish`, {
      token: agent,
      body: { worker_id: 'node-a', attempt, exit_code: '0:0', outcome: 'exited', max_rss_kb: 123_456 },
    });
    expect(finish.status).toBe(200);
    expect(await getJob(id)).toMatchObject({ state: 'COMPLETED', max_rss_kb: 123_456 });
    const bad = await s.request('POST', `/api/v1/agents/jobs/${id}/finish`, {
      token: agent,
      body: { worker_id: 'node-a', attempt, exit_code: '0:0', outcome: 'exited', max_rss_kb: -1 },
    });
    expect(bad.status).toBe(400);
  });

  it('records who cancelled: the owner, or admin', async () => {
    const mine = await submit(alice, { hold: true });
    await s.request('POST', `/api/v1/jobs/${mine.id}/cancel`, { token: alice });
    expect(await getJob(mine.id)).toMatchObject({ state: 'CANCELLED', cancelled_by: 'alice' });
    const { id } = await runningJob();
    expect((await s.request('POST', `/api/v1/jobs/${id}/cancel`, { token: admin })).status).toBe(200);
    expect(await getJob(id)).toMatchObject({
      state: 'RUNNING',
      cancel_requested: true,
      cancelled_by: 'admin',
    });
  });

  it('signals a running job: handed out once, on the next heartbeat or claim; 409 unless running; 400 on bad signals', async () => {
    const { id, attempt } = await runningJob();
    const res = await s.request('POST', `/api/v1/jobs/${id}/signal`, {
      token: alice,
      body: { signal: 'sigusr1', batch_only: true },
    });
    expect(res.status).toBe(200);
    await s.request('POST', `/api/v1/jobs/${id}/signal`, { token: alice, body: { signal: '15' } });
    expect((await heartbeat()).signal).toEqual([
      { job_id: id, attempt, signal: 'USR1', batch_only: true },
      { job_id: id, attempt, signal: '15', batch_only: false },
    ]);
    expect((await heartbeat()).signal).toEqual([]);
    await s.request('POST', `/api/v1/jobs/${id}/signal`, { token: alice, body: { signal: 'HUP' } });
    expect((await claim()).signal).toEqual([{ job_id: id, attempt, signal: 'HUP', batch_only: false }]);
    expect((await claim()).signal).toEqual([]);

    for (const signal of ['FOO', '0', '65', 'SIG', '']) {
      const bad = await s.request('POST', `/api/v1/jobs/${id}/signal`, { token: alice, body: { signal } });
      expect(bad.status, signal).toBe(400);
      expect((await errorOf(bad)).message).toContain('signal is a name such as USR1');
    }
    const others = await s.request('POST', `/api/v1/jobs/${id}/signal`, {
      token: bob,
      body: { signal: 'TERM' },
    });
    expect(others.status).toBe(404);
    const pending = await submit(alice, { hold: true });
    const notRunning = await s.request('POST', `/api/v1/jobs/${pending.id}/signal`, {
      token: alice,
      body: { signal: 'TERM' },
    });
    expect(notRunning.status).toBe(409);
    expect((await errorOf(notRunning)).code).toBe('job_not_running');
    expect((await heartbeat()).signal).toEqual([]);
  });

  it('requeues a running job: PENDING again, allocation released, old attempt fenced and in the cancel list', async () => {
    const { id, attempt } = await runningJob({ cpus: 4 });
    // Drained: the pass the requeue asks for places it nowhere until this test says so.
    expect((await s.request('POST', '/api/v1/workers/node-a/drain', { token: admin })).status).toBe(200);
    const res = await s.request('POST', `/api/v1/jobs/${id}/requeue`, { token: alice, body: {} });
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ state: 'PENDING', node: null, requeues: 1, attempt });
    const [alloc] = await query<{ released: boolean }>(
      backend.db.db,
      sql`SELECT released FROM resource_allocations WHERE job_id = ${id}`,
    );
    expect(alloc?.released).toBe(true);
    expect((await heartbeat()).cancel).toContainEqual({ job_id: id, attempt });
    // The old attempt's late reports are stale.
    const late = await s.request('POST', `/api/v1/agents/jobs/${id}/finish`, {
      token: agent,
      body: { worker_id: 'node-a', attempt, exit_code: '0:15', outcome: 'cancelled' },
    });
    expect(late.status).toBe(409);
    expect((await errorOf(late)).code).toBe('stale_assignment');
    // It runs again as the next attempt; the old one stays in the cancel list.
    expect((await s.request('POST', '/api/v1/workers/node-a/undrain', { token: admin })).status).toBe(200);
    await runSchedulingPass(s.harness.ctx);
    const again = (await claim()).jobs.find((j) => j.job_id === id);
    expect(again?.attempt).toBe(attempt + 1);
    expect(again?.requeues).toBe(1);
    expect((await heartbeat()).cancel).toContainEqual({ job_id: id, attempt });
    expect((await heartbeat()).cancel).not.toContainEqual({ job_id: id, attempt: attempt + 1 });
    const [sums] = await query<{ db: string; cache: string }>(
      backend.db.db,
      sql`SELECT (SELECT coalesce(sum(allocated_cpus), 0) FROM resource_allocations WHERE NOT released) AS db,
                 (SELECT allocated_cpus FROM cluster_state WHERE id = 1) AS cache`,
    );
    expect(Number(sums?.db)).toBe(Number(sums?.cache));
  });

  it('requeues an ended job (held with hold: true); a pending one is a 409 job_pending', async () => {
    const { id, attempt } = await runningJob();
    await s.request('POST', `/api/v1/agents/jobs/${id}/finish`, {
      token: agent,
      body: { worker_id: 'node-a', attempt, exit_code: '3:0', outcome: 'exited' },
    });
    const res = await s.request('POST', `/api/v1/jobs/${id}/requeue`, { token: alice, body: { hold: true } });
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({
      state: 'PENDING',
      exit_code: null,
      end_time: null,
      held: 'user',
      reason: 'JobHeldUser',
      requeues: 1,
    });
    const again = await s.request('POST', `/api/v1/jobs/${id}/requeue`, { token: alice, body: {} });
    expect(again.status).toBe(409);
    expect((await errorOf(again)).code).toBe('job_pending');
    const others = await s.request('POST', `/api/v1/jobs/${id}/requeue`, { token: bob, body: {} });
    expect(others.status).toBe(404);
    const bad = await s.request('POST', `/api/v1/jobs/${id}/requeue`, { token: alice, body: { hold: 1 } });
    expect(bad.status).toBe(400);
  });

  it('updates name, comment, QOS and time limit; only an admin raises a time limit', async () => {
    const job = await submit(alice, { hold: true, time_limit: 60 });
    const patch = (token: string, body: unknown) =>
      s.request('PATCH', `/api/v1/jobs/${job.id}`, { token, body });
    const res = await patch(alice, { name: 'renamed', comment: 'why', qos: 'low', time_limit: '0:30:00' });
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ name: 'renamed', comment: 'why', qos: 'low', time_limit: 30 });
    const raise = await patch(alice, { time_limit: 31 });
    expect(raise.status).toBe(403);
    const error = await errorOf(raise);
    expect(error.code).toBe('time_limit_not_allowed');
    expect(error.message).toContain('only an admin may raise a time limit');
    expect((await getJob(job.id)).time_limit).toBe(30);
    expect((await patch(admin, { time_limit: 120 })).status).toBe(200);
    expect((await getJob(job.id)).time_limit).toBe(120);
    expect((await patch(bob, { name: 'x' })).status).toBe(404);
    for (const body of [{}, { name: '' }, { time_limit: 'soon' }, { state: 'RUNNING' }, { qos: 'a b' }]) {
      expect((await patch(alice, body)).status, JSON.stringify(body)).toBe(400);
    }
    expect(await getJob(job.id)).toMatchObject({ name: 'renamed', time_limit: 120 });
  });

  it('moves a pending job to another partition that exists; not a running or ended one', async () => {
    expect(
      (await s.request('POST', '/api/v1/partitions/other', { token: admin, body: {} })).status,
    ).toBeLessThan(300);
    const job = await submit(alice, { hold: true });
    const patch = (id: number, body: unknown) =>
      s.request('PATCH', `/api/v1/jobs/${id}`, { token: alice, body });
    const moved = await patch(job.id, { partition: 'other' });
    expect(moved.status, JSON.stringify(await moved.clone().json())).toBe(200);
    expect(await moved.json()).toMatchObject({ partition: 'other' });
    const missing = await patch(job.id, { partition: 'nowhere' });
    expect(missing.status).toBe(400);
    expect((await errorOf(missing)).code).toBe('invalid_partition');
    expect((await getJob(job.id)).partition).toBe('other');
    const { id, attempt } = await runningJob();
    const running = await patch(id, { partition: 'other' });
    expect(running.status).toBe(409);
    expect((await errorOf(running)).code).toBe('job_not_pending');
    await s.request('POST', `/api/v1/agents/jobs/${id}/finish`, {
      token: agent,
      body: { worker_id: 'node-a', attempt, exit_code: '0:0', outcome: 'exited' },
    });
    const ended = await patch(id, { comment: 'late' });
    expect(ended.status).toBe(409);
    expect((await errorOf(ended)).code).toBe('job_finished');
  });

  it('tests a submission (sbatch --test-only): same refusals, stores nothing, names a node', async () => {
    const before = await jobCount();
    const ok = await s.request('POST', '/api/v1/jobs/test', {
      token: alice,
      body: { script: 'true', cpus: 2 },
    });
    expect(ok.status).toBe(200);
    expect(await ok.json()).toEqual({
      ok: true,
      node: 'node-a',
      partition: 'default',
      cpus: 2,
      start: 'now',
      reason: null,
    });
    const held = await s.request('POST', '/api/v1/jobs/test', {
      token: alice,
      body: { script: 'true', cpus: 2, hold: true },
    });
    expect(await held.json()).toMatchObject({ node: null, start: null, reason: 'JobHeldUser' });
    const tooBig = await s.request('POST', '/api/v1/jobs/test', {
      token: alice,
      body: { script: 'true', cpus: 65 },
    });
    const tooBigSubmit = await s.request('POST', '/api/v1/jobs/submit', {
      token: alice,
      body: { script: 'true', cpus: 65 },
    });
    expect(tooBig.status).toBe(tooBigSubmit.status);
    expect((await errorOf(tooBig)).code).toBe((await errorOf(tooBigSubmit)).code);
    const bad = await s.request('POST', '/api/v1/jobs/test', {
      token: alice,
      body: { script: 'true', cpus: 0 },
    });
    expect(bad.status).toBe(400);
    expect(await jobCount()).toBe(before);
  });
});
