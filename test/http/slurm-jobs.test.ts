/**
 * Slurm's job options and verbs over HTTP (issue 15): sbatch's output, input, export, signal, QOS, begin time,
 * hold and comment fields at submit; their 400s.
 */
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
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
  beforeAll(async () => {
    backend = await factory.create();
    s = secureApp(backend);
    admin = (await s.token(['admin'], 'admin')).token;
    alice = (await s.token(['jobs:read', 'jobs:write'], 'alice', 'alice')).token;
    bob = (await s.token(['jobs:read', 'jobs:write'], 'bob', 'bob')).token;
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
});
