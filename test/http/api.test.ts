import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp } from '../../functions/app.ts';
import { query } from '../../functions/domain/sql.ts';
import { availableBackends, type Backend, testContext } from '../support/cluster.ts';
import { checkResponses } from './response-checks.ts';

const backends = await availableBackends();

describe.each(backends)('HTTP API on $name', (factory) => {
  let backend: Backend;
  let app: ReturnType<typeof createApp>;
  let harness: ReturnType<typeof testContext>;
  beforeAll(async () => {
    backend = await factory.create();
    harness = testContext(backend);
    app = createApp(harness.ctx);
    checkResponses(app);
  });
  afterAll(async () => {
    await harness?.settle();
    await backend?.close();
  });

  const post = (path: string, body: unknown) =>
    app.request(path, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: typeof body === 'string' ? body : JSON.stringify(body),
    });

  it('submits the contract minimal body and reads the job back', async () => {
    const res = await post('/api/v1/jobs/submit', { script: 'sleep 60', cpus: 4 });
    expect(res.status).toBe(201);
    const job = (await res.json()) as Record<string, unknown>;
    expect(job).toMatchObject({
      state: 'PENDING',
      cpus: 4,
      exit_code: null,
      node: null,
      start_time: null,
      end_time: null,
    });
    for (const field of [
      'id',
      'name',
      'state',
      'cpus',
      'exit_code',
      'node',
      'submit_time',
      'start_time',
      'end_time',
    ]) {
      expect(job).toHaveProperty(field);
    }
    const read = await app.request(`/api/v1/jobs/${job.id}`);
    expect(read.status).toBe(200);
    expect(await read.json()).toMatchObject({ id: job.id, script: 'sleep 60' });
  });

  it.each([
    [{ cpus: 4 }, 'script'],
    [{ script: 'true' }, 'cpus'],
    [{ script: 'true', cpus: 0 }, 'cpus'],
    [{ script: 'true', cpus: 1.5 }, 'cpus'],
    [{ script: 'true', cpus: '4' }, 'cpus'],
    [{ script: '', cpus: 1 }, 'script'],
    [{ script: 'true', cpus: 1, time_limit: 'soon' }, 'time_limit'],
    [{ script: 'true', cpus: 1, environment: { 'BAD-NAME': 'x' } }, 'environment'],
    [{ script: 'true', cpus: 1, work_dir: 'relative/path' }, 'work_dir'],
    [{ script: 'true', cpus: 1, surprise: true }, 'surprise'],
    [[1, 2], 'body'],
  ])('rejects %j with a 400 naming %s, and stores nothing', async (body, field) => {
    const before = await query<{ n: string }>(backend.db.db, sql`SELECT count(*) AS n FROM jobs`);
    const res = await post('/api/v1/jobs/submit', body);
    expect(res.status).toBe(400);
    const error = ((await res.json()) as { error: { code: string; message: string } }).error;
    expect(error.code).toBe('invalid_request');
    expect(error.message).toContain(field);
    const after = await query<{ n: string }>(backend.db.db, sql`SELECT count(*) AS n FROM jobs`);
    expect(after[0]?.n).toBe(before[0]?.n);
  });

  it('rejects malformed JSON, an empty body and oversized bodies with a 4xx', async () => {
    const malformed = await post('/api/v1/jobs/submit', '{"script": ');
    expect(malformed.status).toBe(400);
    expect(((await malformed.json()) as { error: { code: string } }).error.code).toBe('invalid_json');
    expect((await post('/api/v1/jobs/submit', '')).status).toBe(400);
    const huge = await post('/api/v1/jobs/submit', { script: 'x'.repeat(3 * 1024 * 1024), cpus: 1 });
    expect(huge.status).toBe(413);
  });

  it('answers unknown jobs and bad ids with 404 and 400', async () => {
    expect((await app.request('/api/v1/jobs/999999')).status).toBe(404);
    expect((await app.request('/api/v1/jobs/abc')).status).toBe(400);
    expect((await app.request('/api/v1/jobs/abc/cancel', { method: 'POST' })).status).toBe(400);
    expect((await app.request('/api/v1/nope')).status).toBe(404);
  });

  it('lists jobs newest first with a state filter and pagination', async () => {
    for (let i = 0; i < 3; i++)
      await post('/api/v1/jobs/submit', { script: 'true', cpus: 1, name: `list-${i}` });
    const page = (await (await app.request('/api/v1/jobs?limit=2&state=PENDING')).json()) as {
      jobs: { id: number; state: string }[];
      next_before: number | null;
    };
    expect(page.jobs).toHaveLength(2);
    expect(page.jobs[0]!.id).toBeGreaterThan(page.jobs[1]!.id);
    expect(page.jobs.every((j) => j.state === 'PENDING')).toBe(true);
    expect(page.next_before).toBe(page.jobs[1]!.id);
    const next = (await (await app.request(`/api/v1/jobs?limit=2&before=${page.next_before}`)).json()) as {
      jobs: { id: number }[];
    };
    expect(next.jobs[0]!.id).toBeLessThan(page.next_before!);
    expect((await app.request('/api/v1/jobs?state=SLEEPING')).status).toBe(400);
    expect((await app.request('/api/v1/jobs?limit=0')).status).toBe(400);
  });

  it('cancels a pending job at once and answers 409 for a finished one', async () => {
    const job = (await (await post('/api/v1/jobs/submit', { script: 'true', cpus: 1 })).json()) as {
      id: number;
    };
    const res = await app.request(`/api/v1/jobs/${job.id}/cancel`, { method: 'POST' });
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ state: 'CANCELLED' });
    const again = await app.request(`/api/v1/jobs/${job.id}/cancel`, { method: 'POST' });
    expect(again.status).toBe(409);
    expect(((await again.json()) as { error: { code: string } }).error.code).toBe('job_finished');
  });

  it('validates agent calls too', async () => {
    const res = await post('/api/v1/agents/register', { worker_id: 'bad id!', hostname: 'h', cpus: 0 });
    expect(res.status).toBe(400);
    const message = ((await res.json()) as { error: { message: string } }).error.message;
    expect(message).toContain('worker_id');
    expect(message).toContain('cpus');
    const unknown = await post('/api/v1/agents/heartbeat', { worker_id: 'ghost', session: 'nope' });
    expect(unknown.status).toBe(404);
    expect(((await unknown.json()) as { error: { code: string } }).error.code).toBe('unknown_worker');
  });

  it('serves the dashboard and health', async () => {
    const dash = (await (await app.request('/api/v1/dashboard')).json()) as {
      resources: Record<string, number>;
      workers: unknown[];
      jobs: Record<string, number>;
    };
    expect(Object.keys(dash.resources).sort()).toEqual([
      'allocated_cpus',
      'available_cpus',
      'total_cpus',
      'utilization',
    ]);
    expect(dash.jobs).toHaveProperty('PENDING');
    const health = await app.request('/api/v1/health');
    expect(health.status).toBe(200);
    expect(await health.json()).toMatchObject({
      status: 'ok',
      database: { status: 'ok' },
      cache: { status: 'ok' },
    });
  });
});
