/**
 * What a submitter may ask for: a priority above the ceiling is an admin's right (403 for others, /submit and
 * /batch alike), and a time limit must be at least one second once rounded.
 */
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { query } from '../../functions/domain/sql.ts';
import { errorOf, type SecureApp, secureApp } from '../security/support.ts';
import { availableBackends, type Backend } from '../support/cluster.ts';

const backends = await availableBackends();

describe.each(backends)('submission limits on $name', (factory) => {
  let backend: Backend;
  let s: SecureApp;
  let admin: string;
  let alice: string;
  beforeAll(async () => {
    backend = await factory.create();
    s = secureApp(backend);
    admin = (await s.token(['admin'], 'admin')).token;
    alice = (await s.token(['jobs:read', 'jobs:write'], 'alice', 'alice')).token;
  });
  afterAll(async () => {
    await s?.harness.settle();
    await backend?.close();
  });

  const jobCount = async () =>
    Number((await query<{ n: string }>(backend.db.db, sql`SELECT count(*) AS n FROM jobs`))[0]?.n);

  it('refuses a priority above the ceiling from a non-admin (403), on /submit and /batch, and writes nothing', async () => {
    const before = await jobCount();
    const raised = await s.request('POST', '/api/v1/jobs/submit', {
      token: alice,
      body: { script: 'true', cpus: 1, priority: 1_000_000 },
    });
    expect(raised.status).toBe(403);
    const error = await errorOf(raised);
    expect(error.code).toBe('priority_not_allowed');
    expect(error.message).toContain('priority 1000000 is above 0');
    const batch = await s.request('POST', '/api/v1/jobs/batch', {
      token: alice,
      body: {
        jobs: [
          { script: 'true', cpus: 1 },
          { script: 'true', cpus: 1, priority: 5 },
        ],
      },
    });
    expect(batch.status).toBe(403);
    expect((await errorOf(batch)).message).toContain('jobs[1].priority');
    expect(await jobCount()).toBe(before);
  });

  it('lets a non-admin lower its priority or stay at the ceiling, and an admin raise it', async () => {
    for (const [token, priority] of [
      [alice, -10],
      [alice, 0],
      [admin, 1_000_000],
    ] as const) {
      const res = await s.request('POST', '/api/v1/jobs/submit', {
        token,
        body: { script: 'true', cpus: 1, priority },
      });
      expect(res.status, `priority ${priority}`).toBe(201);
      expect(((await res.json()) as { priority: number }).priority).toBe(priority);
    }
    const batch = await s.request('POST', '/api/v1/jobs/batch', {
      token: admin,
      body: { jobs: [{ script: 'true', cpus: 1, priority: 7 }] },
    });
    expect(batch.status).toBe(201);
  });

  it('follows a configured ceiling', async () => {
    const open = secureApp(backend, { priorityCeiling: 100 });
    const ok = await open.request('POST', '/api/v1/jobs/submit', {
      token: alice,
      body: { script: 'true', cpus: 1, priority: 100 },
    });
    expect(ok.status).toBe(201);
    const above = await open.request('POST', '/api/v1/jobs/submit', {
      token: alice,
      body: { script: 'true', cpus: 1, priority: 101 },
    });
    expect(above.status).toBe(403);
    expect((await errorOf(above)).message).toContain('priority 101 is above 100');
    await open.harness.settle();
  });

  it('refuses a time limit that rounds to 0 seconds (400), and accepts one second', async () => {
    const before = await jobCount();
    for (const time_limit of [0.001, 0.008]) {
      const res = await s.request('POST', '/api/v1/jobs/submit', {
        token: admin,
        body: { script: 'true', cpus: 1, time_limit },
      });
      expect(res.status, `time_limit ${time_limit}`).toBe(400);
      expect((await errorOf(res)).message).toContain('time_limit must be at least 1 second');
    }
    expect(await jobCount()).toBe(before);
    const second = await s.request('POST', '/api/v1/jobs/submit', {
      token: admin,
      body: { script: 'true', cpus: 1, time_limit: 1 / 60 },
    });
    expect(second.status).toBe(201);
    expect(((await second.json()) as { time_limit: number }).time_limit).toBeCloseTo(1 / 60);
  });
});
