/**
 * `POST /api/v1/jobs/batch`: many jobs in one request and ONE statement, all or nothing, in request order,
 * with the scopes, validation, defaults, rate limit, audit and Idempotency-Key of /submit.
 */
import { randomUUID } from 'node:crypto';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp } from '../../functions/app.ts';
import { createToken, type TokenScope } from '../../functions/domain/auth.ts';
import { submitJobsBatch } from '../../functions/domain/jobs.ts';
import type { ConductorConfig } from '../../functions/domain/ports.ts';
import { MemoryRateLimiter } from '../../functions/domain/rate-limit.ts';
import { query } from '../../functions/domain/sql.ts';
import { createIoredisScripts } from '../../functions/node/ioredis.ts';
import { RedisRateLimiter } from '../../functions/registry/rate-limiter.ts';
import { CLI_PRINCIPAL, errorOf } from '../security/support.ts';
import { availableBackends, type Backend, testConfig, testContext } from '../support/cluster.ts';
import { REDIS_URL, serviceAvailable } from '../support/services.ts';
import { checkResponses } from './response-checks.ts';

const backends = await availableBackends();
const redisUp = await serviceAvailable('redis');

interface JobOut {
  id: number;
  name: string;
  state: string;
  cpus: number;
  owner: string | null;
  node: string | null;
  reason: string | null;
  [field: string]: unknown;
}

describe.each(backends)('batch submission on $name', (factory) => {
  let backend: Backend;
  const closers: (() => Promise<void>)[] = [];
  beforeAll(async () => {
    backend = await factory.create();
  });
  afterAll(async () => {
    for (const close of closers) await close();
    await backend?.close();
  });

  /** An app over the backend; counts the scheduling passes asked for. */
  function makeApp(overrides: Partial<ConductorConfig> = {}) {
    const harness = testContext(backend, testConfig({ submitRatePerSecond: 0, ...overrides }));
    let passes = 0;
    const ctx = {
      ...harness.ctx,
      requestSchedule: () => {
        passes++;
        return harness.ctx.requestSchedule();
      },
    };
    const app = createApp(ctx);
    checkResponses(app);
    closers.push(() => harness.settle());
    const token = async (scopes: TokenScope[], owner?: string) =>
      (
        await createToken(
          backend.db.db,
          { name: `batch-${randomUUID().slice(0, 8)}`, scopes, ...(owner ? { owner } : {}) },
          CLI_PRINCIPAL,
        )
      ).token;
    const request = (
      method: string,
      path: string,
      options: { token?: string; body?: unknown; headers?: Record<string, string> } = {},
    ) =>
      app.request(path, {
        method,
        headers: {
          'content-type': 'application/json',
          ...(options.token ? { authorization: `Bearer ${options.token}` } : {}),
          ...(options.headers ?? {}),
        },
        ...(options.body === undefined
          ? {}
          : { body: typeof options.body === 'string' ? options.body : JSON.stringify(options.body) }),
      });
    const batch = (token: string, jobs: unknown, headers: Record<string, string> = {}) =>
      request('POST', '/api/v1/jobs/batch', { token, body: { jobs }, headers });
    return { app, harness, ctx, token, request, batch, passes: () => passes };
  }

  const count = async (where = sql`true`) =>
    Number(
      (await query<{ n: string }>(backend.db.db, sql`SELECT count(*) AS n FROM jobs WHERE ${where}`))[0]?.n,
    );
  const auditCount = async () =>
    Number((await query<{ n: string }>(backend.db.db, sql`SELECT count(*) AS n FROM audit_log`))[0]?.n);

  it('stores 1,000 jobs from one request, PENDING, in request order, and one pass schedules them', async () => {
    const t = makeApp();
    const writer = await t.token(['jobs:write', 'jobs:read'], 'team-batch');
    const agent = await t.token(['agent']);
    const reg = await t.request('POST', '/api/v1/agents/register', {
      token: agent,
      body: { worker_id: `batch-node-${factory.name.replace(/\W/g, '-')}`, hostname: 'h', cpus: 1000 },
    });
    expect(reg.status).toBe(200);
    await t.harness.settle();
    const before = t.passes();
    const jobs = Array.from({ length: 1000 }, (_, i) => ({ script: `echo ${i}`, cpus: 1, name: `big-${i}` }));
    const started = performance.now();
    const res = await t.batch(writer, jobs);
    const elapsed = performance.now() - started;
    expect(res.status).toBe(201);
    const out = ((await res.json()) as { jobs: JobOut[] }).jobs;
    expect(out).toHaveLength(1000);
    expect(out.map((j) => j.name)).toEqual(jobs.map((j) => j.name));
    for (let i = 1; i < out.length; i++) expect(out[i]!.id).toBeGreaterThan(out[i - 1]!.id);
    expect(out.every((j) => j.state === 'PENDING' && j.owner === 'team-batch' && j.cpus === 1)).toBe(true);
    // Stored as answered: script by script, in id order.
    const rows = await query<{ id: string; script: string; state: string }>(
      backend.db.db,
      sql`SELECT id, script, state FROM jobs WHERE name LIKE 'big-%' ORDER BY id`,
    );
    expect(rows.map((r) => Number(r.id))).toEqual(out.map((j) => j.id));
    expect(rows.map((r) => r.script)).toEqual(jobs.map((j) => j.script));
    // ONE scheduling pass asked for, and it places them all (1,000 CPUs, 1,000 one-CPU jobs).
    expect(t.passes() - before).toBe(1);
    await t.harness.settle();
    expect(await count(sql`name LIKE 'big-%' AND state = 'RUNNING' AND node IS NOT NULL`)).toBe(1000);
    expect(elapsed).toBeLessThan(10_000);
  }, 60_000);

  it('is ONE statement for 1,000 jobs, and all or nothing when the database refuses one row', async () => {
    const t = makeApp();
    let statements = 0;
    const db = backend.db.db;
    const counting = new Proxy(db, {
      get(target, prop) {
        if (prop === 'execute') {
          return (...args: Parameters<typeof db.execute>) => {
            statements++;
            return target.execute(...args);
          };
        }
        return Reflect.get(target, prop);
      },
    });
    const ctx = { ...t.ctx, db: counting };
    const jobs = Array.from({ length: 1000 }, (_, i) => ({
      script: 'echo one-statement',
      cpus: 1,
      name: `o-${i}`,
    }));
    const { jobs: out } = await submitJobsBatch(ctx, jobs);
    expect(out).toHaveLength(1000);
    // One read of the partitions and known nodes (what the jobs may ask), then ONE statement writes them all.
    expect(statements).toBe(2);
    // Past the schema (cpus 0 at index 500): the table's check refuses that row, and with it the batch.
    const [jobsBefore, auditBefore] = [await count(), await auditCount()];
    const bad = jobs.map((j, i) => ({ ...j, script: 'echo refused', cpus: i === 500 ? 0 : 1 }));
    await expect(submitJobsBatch(ctx, bad)).rejects.toThrow();
    expect(await count()).toBe(jobsBefore);
    expect(await auditCount()).toBe(auditBefore);
  });

  it('gives each job the defaults and view of /submit', async () => {
    const t = makeApp();
    const writer = await t.token(['jobs:write'], 'team-defaults');
    const batch = await t.request('POST', '/api/v1/partitions/batch', {
      token: await t.token(['admin']),
      body: {},
    });
    expect(batch.status).toBe(200);
    const bodies = [
      { script: 'true', cpus: 2 },
      {
        script: 'python3 train.py',
        cpus: 65_536,
        name: 'train',
        account: 'ml',
        partition: 'batch',
        time_limit: '1:30:00',
        work_dir: '/srv/work',
        environment: { EPOCHS: '10' },
        priority: -7,
        requeue: true,
      },
    ];
    const single: JobOut[] = [];
    for (const body of bodies) {
      const res = await t.request('POST', '/api/v1/jobs/submit', { token: writer, body });
      expect(res.status).toBe(201);
      single.push((await res.json()) as JobOut);
    }
    const res = await t.batch(writer, bodies);
    expect(res.status).toBe(201);
    const batched = ((await res.json()) as { jobs: JobOut[] }).jobs;
    const strip = ({ id: _id, slurm_id: _j, submit_time: _s, eligible_time: _e, ...rest }: JobOut) => rest;
    expect(batched.map(strip)).toEqual(single.map(strip));
    // The large one is admitted (no node of partition batch is known yet) and waits with the reason /submit gives
    // (Resources when no node at all is live, else None until a pass looks at it).
    expect(['None', 'Resources']).toContain(batched[1]!.reason);
    const stored = (await (
      await t.request('GET', `/api/v1/jobs/${batched[1]!.id}`, { token: await t.token(['admin']) })
    ).json()) as JobOut;
    expect(stored).toMatchObject({
      script: 'python3 train.py',
      environment: { EPOCHS: '10' },
      time_limit: 90,
    });
  });

  it.each([
    [7, { script: 'true', cpus: 0 }, 'jobs[7].cpus'],
    [0, { script: 'true', cpus: 1, surprise: true }, 'jobs[0]'],
    [4, { cpus: 1 }, 'jobs[4].script'],
    [3, { script: 'true', cpus: 1, environment: { 'BAD-NAME': 'x' } }, 'jobs[3].environment'],
    [2, { script: 'true', cpus: 1, name: 'bad\ud800' }, 'jobs[2].name'],
    [9, 'not a job', 'jobs[9]'],
  ])('refuses a bad job at index %i with a 400 naming it, and stores nothing', async (k, bad, field) => {
    const t = makeApp();
    const writer = await t.token(['jobs:write']);
    const jobs: unknown[] = Array.from({ length: 10 }, (_, i) => ({ script: `echo ok-${i}`, cpus: 1 }));
    jobs[k] = bad;
    const [jobsBefore, auditBefore] = [await count(), await auditCount()];
    const res = await t.batch(writer, jobs);
    expect(res.status).toBe(400);
    const error = await errorOf(res);
    expect(error.code).toBe('invalid_request');
    expect(error.message).toContain(field);
    expect(await count()).toBe(jobsBefore);
    expect(await auditCount()).toBe(auditBefore);
  });

  it('names every bad job, not only the first', async () => {
    const t = makeApp();
    const writer = await t.token(['jobs:write']);
    const res = await t.batch(writer, [
      { script: 'true', cpus: 1 },
      { script: 'true', cpus: -1 },
      { script: 'true', cpus: 1, time_limit: 'soon' },
    ]);
    expect(res.status).toBe(400);
    const error = (await res.json()) as {
      error: { message: string; details: { issues: { path: string }[] } };
    };
    expect(error.error.details.issues.map((i) => i.path)).toEqual(['jobs[1].cpus', 'jobs[2].time_limit']);
  });

  it('refuses an empty list, more than 1,000 jobs, and a body that is not {jobs: [...]}', async () => {
    const t = makeApp();
    const writer = await t.token(['jobs:write']);
    const before = await count();
    const cases: [unknown, string][] = [
      [{ jobs: [] }, 'at least 1 job'],
      [{ jobs: Array.from({ length: 1001 }, () => ({ script: 'true', cpus: 1 })) }, 'at most 1000 jobs'],
      [{}, 'jobs'],
      [{ jobs: { script: 'true', cpus: 1 } }, 'jobs'],
      [{ jobs: [{ script: 'true', cpus: 1 }], extra: 1 }, 'extra'],
      [[{ script: 'true', cpus: 1 }], 'body'],
    ];
    for (const [body, words] of cases) {
      const res = await t.request('POST', '/api/v1/jobs/batch', { token: writer, body });
      expect(res.status, JSON.stringify(body).slice(0, 80)).toBe(400);
      expect((await errorOf(res)).message).toContain(words);
    }
    expect(
      (await t.request('POST', '/api/v1/jobs/batch', { token: writer, body: '{"jobs": [' })).status,
    ).toBe(400);
    expect(await count()).toBe(before);
  });

  it('needs jobs:write (or admin): agent and read-only tokens get 403, no token 401', async () => {
    const t = makeApp();
    const jobs = [{ script: 'echo scoped', cpus: 1 }];
    const agent = await t.token(['agent']);
    const reader = await t.token(['jobs:read']);
    const before = await count();
    for (const token of [agent, reader]) {
      const res = await t.batch(token, jobs);
      expect(res.status).toBe(403);
      expect((await errorOf(res)).code).toBe('insufficient_scope');
    }
    expect((await t.request('POST', '/api/v1/jobs/batch', { body: { jobs } })).status).toBe(401);
    expect(await count()).toBe(before);
    const admin = await t.batch(await t.token(['admin']), jobs);
    expect(admin.status).toBe(201);
    const owned = await t.batch(await t.token(['jobs:write'], 'team-w'), jobs);
    expect(owned.status).toBe(201);
    expect(((await owned.json()) as { jobs: JobOut[] }).jobs[0]!.owner).toBe('team-w');
  });

  it('counts a batch as N submissions against the rate limit: over it, 429 and nothing stored', async () => {
    const t = makeApp({ submitRatePerSecond: 0.01, submitBurst: 10 });
    const writer = await t.token(['jobs:write']);
    const other = await t.token(['jobs:write']);
    const mk = (n: number, tag: string) =>
      Array.from({ length: n }, () => ({ script: `echo ${tag}`, cpus: 1 }));
    expect((await t.batch(writer, mk(6, 'rl-a'))).status).toBe(201);
    const limited = await t.batch(writer, mk(5, 'rl-b'));
    expect(limited.status).toBe(429);
    expect(Number(limited.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    const error = await errorOf(limited);
    expect(error.code).toBe('rate_limited');
    expect(error.message).toContain('this batch counts as 5');
    expect(await count(sql`script = 'echo rl-b'`)).toBe(0);
    expect((await t.batch(writer, mk(4, 'rl-c'))).status).toBe(201);
    // 10 used: a single /submit is over too.
    expect(
      (await t.request('POST', '/api/v1/jobs/submit', { token: writer, body: { script: 'true', cpus: 1 } }))
        .status,
    ).toBe(429);
    // Larger than the burst: it could never pass, so it is a 400 that says to split it.
    const huge = await t.batch(other, mk(11, 'rl-d'));
    expect(huge.status).toBe(400);
    expect((await errorOf(huge)).code).toBe('batch_exceeds_burst');
    expect(await count(sql`script = 'echo rl-d'`)).toBe(0);
    // Another token is not held back, and the refused batch cost it nothing.
    expect((await t.batch(other, mk(10, 'rl-e'))).status).toBe(201);
  });

  it('writes a job.submit audit entry per job in the same statement, with the request id', async () => {
    const t = makeApp();
    const writer = await t.token(['jobs:write']);
    const res = await t.batch(writer, [
      { script: 'echo audited', cpus: 1, name: 'a0' },
      { script: 'echo audited', cpus: 2, name: 'a1' },
      { script: 'echo audited', cpus: 3, name: 'a2' },
    ]);
    expect(res.status).toBe(201);
    const requestId = res.headers.get('x-request-id');
    const out = ((await res.json()) as { jobs: JobOut[] }).jobs;
    const entries = await query<{
      target: string;
      details: Record<string, unknown> | string;
      request_id: string;
    }>(
      backend.db.db,
      sql`SELECT target, details, request_id FROM audit_log WHERE action = 'job.submit' AND request_id = ${requestId}
          ORDER BY id`,
    );
    expect(entries.map((e) => e.target).sort()).toEqual(out.map((j) => `job:${j.id}`).sort());
    const details = entries.map((e) => (typeof e.details === 'string' ? JSON.parse(e.details) : e.details));
    expect(details.map((d) => [d.name, d.cpus, d.batch_index, d.batch_size]).sort()).toEqual([
      ['a0', 1, 0, 3],
      ['a1', 2, 1, 3],
      ['a2', 3, 2, 3],
    ]);
  });

  it('Idempotency-Key: a retry returns the same batch, also under concurrent retries', async () => {
    const t = makeApp();
    const writer = await t.token(['jobs:write']);
    const jobs = Array.from({ length: 50 }, (_, i) => ({
      script: 'echo idem-batch',
      cpus: 1,
      name: `i-${i}`,
    }));
    const key = `batch-${randomUUID()}`;
    const first = await t.batch(writer, jobs, { 'idempotency-key': key });
    expect(first.status).toBe(201);
    expect(first.headers.get('idempotent-replayed')).toBeNull();
    const ids = ((await first.json()) as { jobs: JobOut[] }).jobs.map((j) => j.id);
    const again = await t.batch(writer, jobs, { 'idempotency-key': key });
    expect(again.status).toBe(201);
    expect(again.headers.get('idempotent-replayed')).toBe('true');
    expect(((await again.json()) as { jobs: JobOut[] }).jobs.map((j) => j.id)).toEqual(ids);
    expect(await count(sql`script = 'echo idem-batch'`)).toBe(50);

    const concurrentJobs = jobs.map((j) => ({ ...j, script: 'echo idem-concurrent' }));
    const concurrentKey = `batch-${randomUUID()}`;
    const answers = await Promise.all(
      Array.from({ length: 10 }, () => t.batch(writer, concurrentJobs, { 'idempotency-key': concurrentKey })),
    );
    expect(answers.map((r) => r.status)).toEqual(Array(10).fill(201));
    const idLists = await Promise.all(
      answers.map(async (r) =>
        JSON.stringify(((await r.json()) as { jobs: JobOut[] }).jobs.map((j) => j.id)),
      ),
    );
    expect(new Set(idLists).size).toBe(1);
    expect(await count(sql`script = 'echo idem-concurrent'`)).toBe(50);
  });

  it('Idempotency-Key: another body, or a key of /submit, is a 422; other tokens have their own keys', async () => {
    const t = makeApp();
    const writer = await t.token(['jobs:write']);
    const other = await t.token(['jobs:write']);
    const key = `batch-${randomUUID()}`;
    const jobs = [{ script: 'echo k1', cpus: 1 }];
    expect((await t.batch(writer, jobs, { 'idempotency-key': key })).status).toBe(201);
    const changed = await t.batch(writer, [...jobs, { script: 'echo k2', cpus: 1 }], {
      'idempotency-key': key,
    });
    expect(changed.status).toBe(422);
    expect((await errorOf(changed)).code).toBe('idempotency_key_reused');
    expect(await count(sql`script = 'echo k2'`)).toBe(0);
    // A batch key is not a /submit key and the other way round.
    const single = await t.request('POST', '/api/v1/jobs/submit', {
      token: writer,
      body: jobs[0],
      headers: { 'idempotency-key': key },
    });
    expect(single.status).toBe(422);
    const submitKey = `submit-${randomUUID()}`;
    expect(
      (
        await t.request('POST', '/api/v1/jobs/submit', {
          token: writer,
          body: { script: 'echo k3', cpus: 1 },
          headers: { 'idempotency-key': submitKey },
        })
      ).status,
    ).toBe(201);
    expect(
      (await t.batch(writer, [{ script: 'echo k3', cpus: 1 }], { 'idempotency-key': submitKey })).status,
    ).toBe(422);
    expect(await count(sql`script = 'echo k3'`)).toBe(1);
    expect((await t.batch(other, jobs, { 'idempotency-key': key })).status).toBe(201);
    expect(await count(sql`script = 'echo k1'`)).toBe(2);
    const bad = await t.batch(writer, jobs, { 'idempotency-key': 'has space' });
    expect(bad.status).toBe(400);
    expect((await errorOf(bad)).code).toBe('invalid_idempotency_key');
  });
});

describe('rate limiter: a cost of N units at once', () => {
  it('in-process: N units in one step, all or none', async () => {
    let now = 1_000_000;
    const limiter = new MemoryRateLimiter(() => now);
    const rule = { perSecond: 1, burst: 10 };
    expect((await limiter.take('k', rule, 6)).allowed).toBe(true);
    expect(await limiter.take('k', rule, 5)).toEqual({ allowed: false, retryAfterSeconds: 1 });
    expect((await limiter.take('k', rule, 4)).allowed).toBe(true);
    expect((await limiter.take('k', rule)).allowed).toBe(false);
    now += 3000;
    expect((await limiter.take('k', rule, 3)).allowed).toBe(true);
    expect((await limiter.take('k', rule)).allowed).toBe(false);
    expect((await limiter.take('other', rule, 11)).allowed).toBe(false);
    await expect(limiter.take('k', rule, 0)).rejects.toThrow(RangeError);
  });
});

describe.runIf(redisUp)('rate limiter on Redis: a cost of N units at once', () => {
  it('takes N units in one command, all or none', async () => {
    const redis = createIoredisScripts(REDIS_URL, { onError: () => {} });
    try {
      const limiter = new RedisRateLimiter(redis.scripts, { keyPrefix: `test:${randomUUID()}:` });
      const rule = { perSecond: 0.01, burst: 10 };
      expect((await limiter.take('token:1', rule, 6)).allowed).toBe(true);
      const refused = await limiter.take('token:1', rule, 5);
      expect(refused.allowed).toBe(false);
      expect(refused.retryAfterSeconds).toBeGreaterThanOrEqual(1);
      expect((await limiter.take('token:1', rule, 4)).allowed).toBe(true);
      expect((await limiter.take('token:1', rule)).allowed).toBe(false);
      expect((await limiter.take('token:2', rule, 11)).allowed).toBe(false);
      expect((await limiter.take('token:2', rule, 10)).allowed).toBe(true);
    } finally {
      await redis.close();
    }
  });
});
