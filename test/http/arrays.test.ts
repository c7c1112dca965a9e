/**
 * Job arrays over HTTP: submission (400 invalid_array with the error envelope), the array as one row with its
 * progress (GET /api/v1/arrays/{id}, the dashboard's job list), its tasks (GET /api/v1/jobs?array=), cancel,
 * hold and release of the whole array (its job id) or of `?tasks=`.
 */
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { query } from '../../functions/domain/sql.ts';
import { type SecureApp, secureApp } from '../security/support.ts';
import { availableBackends, type Backend } from '../support/cluster.ts';

const backends = await availableBackends();

interface ArrayBody {
  array_job_id: number;
  spec: string;
  counts: Record<string, number>;
  pending_id: string | null;
}

describe.each(backends)('job arrays over HTTP on $name', (factory) => {
  let backend: Backend;
  let s: SecureApp;
  beforeAll(async () => {
    backend = await factory.create({ keyPrefix: `arrays-${Date.now()}:` });
    s = secureApp(backend);
  });
  afterAll(async () => {
    await backend?.close();
  });

  const json = async <T>(method: string, path: string, body?: unknown) => {
    const res = await s.request(method, path, body === undefined ? {} : { body });
    return { status: res.status, body: (await res.json()) as T };
  };

  it('submits an array, shows it as one row with its progress, and acts on all tasks or some', async () => {
    const sub = await json<{ id: number; array_job_id: number; array_task_id: number; slurm_id: string }>(
      'POST',
      '/api/v1/jobs/submit',
      { script: 'true', cpus: 1, name: 'arr', array: '0-9%3' },
    );
    expect(sub.status).toBe(201);
    const id = sub.body.id;
    expect(sub.body).toMatchObject({ array_job_id: id, array_task_id: 0, slurm_id: `${id}_0` });

    let a = await json<ArrayBody>('GET', `/api/v1/arrays/${id}`);
    expect(a.body).toMatchObject({
      spec: '0-9%3',
      counts: { pending: 10, running: 0, completed: 0, failed: 0, cancelled: 0 },
      pending_id: `${id}_[0-9%3]`,
    });
    const tasks = await json<{ jobs: { slurm_id: string }[] }>('GET', `/api/v1/jobs?array=${id}&order=asc`);
    expect(tasks.body.jobs.map((j) => j.slurm_id)).toEqual(
      Array.from({ length: 10 }, (_, k) => `${id}_${k}`),
    );
    // ids=<array job id> names every task, as squeue -j and sacct -j mean it.
    const byId = await json<{ jobs: unknown[] }>('GET', `/api/v1/jobs?ids=${id}`);
    expect(byId.body.jobs).toHaveLength(10);

    // Some tasks: hold 1-2, cancel 3; the whole array: hold, release.
    const held = await json<{ affected: number }>('POST', `/api/v1/arrays/${id}/hold?tasks=1-2`);
    expect(held.body.affected).toBe(2);
    const cancelled = await json<{ affected: number; array: ArrayBody }>(
      'POST',
      `/api/v1/arrays/${id}/cancel?tasks=%5B3%5D`,
    );
    expect(cancelled.body.affected).toBe(1);
    expect(cancelled.body.array.pending_id).toBe(`${id}_[0-2,4-9%3]`);
    expect((await json('POST', `/api/v1/arrays/${id}/release?tasks=1`)).status).toBe(200);
    const heldRows = await query<{ array_task_id: number }>(
      backend.db.db,
      sql`SELECT array_task_id FROM jobs WHERE array_job_id = ${id} AND held IS NOT NULL ORDER BY 1`,
    );
    expect(heldRows.map((r) => r.array_task_id)).toEqual([2]);

    // The dashboard: one row for the array with its progress; ?array= its tasks.
    const listHtml = await (await s.request('GET', '/api/v1/ui/fragments/jobs')).text();
    expect(listHtml.match(new RegExp(`data-array="${id}"`, 'g'))).toHaveLength(1);
    expect(listHtml).toContain('9 pending · 0 running · 0 done · 0 failed · 1 cancelled');
    expect(listHtml).toContain(`href="/?array=${id}"`);
    const tasksHtml = await (await s.request('GET', `/api/v1/ui/fragments/jobs?array=${id}`)).text();
    expect(tasksHtml.match(/data-job="/g)).toHaveLength(10);
    expect(tasksHtml).toContain(`#${id}_9`);

    // The array's job id cancels every task, as scancel 123 does.
    expect((await json('POST', `/api/v1/jobs/${id}/cancel`)).status).toBe(200);
    a = await json<ArrayBody>('GET', `/api/v1/arrays/${id}`);
    expect(a.body.counts).toEqual({ pending: 0, running: 0, completed: 0, failed: 0, cancelled: 10 });
  });

  it('refuses a bad array or task list with a 400 in the error envelope, storing nothing', async () => {
    const before = await query<{ n: string }>(backend.db.db, sql`SELECT count(*) AS n FROM jobs`);
    const big = await json<{ error: { code: string; message: string } }>('POST', '/api/v1/jobs/submit', {
      script: 'true',
      cpus: 1,
      array: '0-100001',
    });
    expect(big.status).toBe(400);
    expect(big.body.error.code).toBe('invalid_array');
    expect(big.body.error.message).toContain('MaxArraySize');
    expect((await json('POST', '/api/v1/jobs/submit', { script: 'true', cpus: 1, array: 'x' })).status).toBe(
      400,
    );
    const after = await query<{ n: string }>(backend.db.db, sql`SELECT count(*) AS n FROM jobs`);
    expect(after[0]?.n).toBe(before[0]?.n);
    const sub = await json<{ id: number }>('POST', '/api/v1/jobs/submit', {
      script: 'true',
      cpus: 1,
      array: '0-1',
    });
    const bad = await json<{ error: { code: string } }>(
      'POST',
      `/api/v1/arrays/${sub.body.id}/cancel?tasks=9-1`,
    );
    expect(bad.status).toBe(400);
    expect(bad.body.error.code).toBe('invalid_tasks');
    expect((await json('GET', '/api/v1/arrays/987654321')).status).toBe(404);
  });
});
