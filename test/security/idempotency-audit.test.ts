import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pruneSubmissionKeys } from '../../functions/domain/jobs.ts';
import { query } from '../../functions/domain/sql.ts';
import { availableBackends, type Backend } from '../support/cluster.ts';
import { errorOf, type SecureApp, secureApp } from './support.ts';

const backends = await availableBackends();

describe.each(backends)('Idempotency-Key on $name', (factory) => {
  let backend: Backend;
  let s: SecureApp;
  let t1: string;
  let t2: string;
  beforeAll(async () => {
    backend = await factory.create();
    s = secureApp(backend);
    t1 = (await s.token(['jobs:write', 'jobs:read'], 'idem-1')).token;
    t2 = (await s.token(['jobs:write', 'jobs:read'], 'idem-2')).token;
  });
  afterAll(async () => {
    await s?.harness.settle();
    await backend?.close();
  });

  const submit = (token: string, key: string | undefined, body: unknown = { script: 'echo once', cpus: 1 }) =>
    s.request('POST', '/api/v1/jobs/submit', { token, body, headers: key ? { 'idempotency-key': key } : {} });
  const count = async (script: string) =>
    Number(
      (
        await query<{ n: string }>(
          backend.db.db,
          sql`SELECT count(*) AS n FROM jobs WHERE script = ${script}`,
        )
      )[0]?.n,
    );

  it('returns the original job for the same key, never a second one', async () => {
    const first = await submit(t1, 'key-1');
    expect(first.status).toBe(201);
    const job = (await first.json()) as { id: number };
    const again = await submit(t1, 'key-1');
    expect(again.status).toBe(201);
    expect(again.headers.get('idempotent-replayed')).toBe('true');
    expect(((await again.json()) as { id: number }).id).toBe(job.id);
    expect(await count('echo once')).toBe(1);
  });

  it('holds under 25 concurrent retries (a unique key, not a read-then-write)', async () => {
    const body = { script: 'echo concurrent', cpus: 1 };
    const answers = await Promise.all(Array.from({ length: 25 }, () => submit(t1, 'key-concurrent', body)));
    expect(answers.map((r) => r.status).every((status) => status === 201)).toBe(true);
    const ids = new Set(await Promise.all(answers.map(async (r) => ((await r.json()) as { id: number }).id)));
    expect(ids.size).toBe(1);
    expect(await count('echo concurrent')).toBe(1);
  });

  it('is per token: another token with the same key gets its own job', async () => {
    const body = { script: 'echo per-token', cpus: 1 };
    const a = (await (await submit(t1, 'shared-key', body)).json()) as { id: number };
    const b = (await (await submit(t2, 'shared-key', body)).json()) as { id: number };
    expect(a.id).not.toBe(b.id);
  });

  it('refuses the same key with another request (422), and a malformed key (400)', async () => {
    await submit(t1, 'key-body', { script: 'echo a', cpus: 1 });
    const other = await submit(t1, 'key-body', { script: 'echo b', cpus: 1 });
    expect(other.status).toBe(422);
    expect(await errorOf(other)).toMatchObject({ code: 'idempotency_key_reused' });
    expect(await count('echo b')).toBe(0);
    // The same request with its fields in another order is the same request.
    const reordered = await submit(t1, 'key-body', { cpus: 1, script: 'echo a' });
    expect(reordered.status).toBe(201);
    const bad = await submit(t1, 'has spaces in it');
    expect(bad.status).toBe(400);
    expect((await errorOf(bad)).message).toContain('Idempotency-Key');
  });

  it('lasts 24 hours: an expired key makes a new job', async () => {
    const body = { script: 'echo expiry', cpus: 1 };
    const first = (await (await submit(t1, 'key-expiring', body)).json()) as { id: number };
    const row = await query<{ expires_in: number }>(
      backend.db.db,
      sql`SELECT extract(epoch FROM expires_at - created_at)::int AS expires_in FROM submission_keys WHERE key = 'key-expiring'`,
    );
    expect(Number(row[0]?.expires_in)).toBe(24 * 3600);
    await query(
      backend.db.db,
      sql`UPDATE submission_keys SET expires_at = now() - interval '1 second' WHERE key = 'key-expiring'`,
    );
    const second = (await (await submit(t1, 'key-expiring', body)).json()) as { id: number };
    expect(second.id).not.toBe(first.id);
    expect((await (await submit(t1, 'key-expiring', body)).json()) as { id: number }).toMatchObject({
      id: second.id,
    });
    // Housekeeping deletes expired keys only.
    await query(
      backend.db.db,
      sql`UPDATE submission_keys SET expires_at = now() - interval '1 second' WHERE key = 'key-1'`,
    );
    expect(await pruneSubmissionKeys(backend.db.db)).toBe(1);
    const left = await query<{ key: string }>(
      backend.db.db,
      sql`SELECT key FROM submission_keys WHERE key IN ('key-1', 'key-expiring')`,
    );
    expect(left.map((r) => r.key)).toEqual(['key-expiring']);
  });
});

describe.each(backends)('audit log on $name', (factory) => {
  let backend: Backend;
  let s: SecureApp;
  beforeAll(async () => {
    backend = await factory.create();
    s = secureApp(backend);
  });
  afterAll(async () => {
    await s?.harness.settle();
    await backend?.close();
  });

  it('records who submitted, cancelled, drained, created and revoked tokens; admins read it, paged', async () => {
    const admin = await s.token(['admin'], 'auditor');
    const user = await s.token(['jobs:write', 'jobs:read'], 'submitter', 'team-x');
    const job = (await (
      await s.request('POST', '/api/v1/jobs/submit', {
        token: user.token,
        body: { script: 'true', cpus: 1, name: 'audited' },
        headers: { 'x-request-id': 'req-audit-1' },
      })
    ).json()) as { id: number };
    await s.request('POST', `/api/v1/jobs/${job.id}/cancel`, { token: user.token });
    await s.request('POST', '/api/v1/agents/register', {
      token: (await s.token(['agent'], 'auditee-agent')).token,
      body: { worker_id: 'audit-node', hostname: 'h', cpus: 1 },
    });
    await s.request('POST', '/api/v1/workers/audit-node/drain', { token: admin.token });
    const created = (await (
      await s.request('POST', '/api/v1/tokens', {
        token: admin.token,
        body: { name: 'made-by-api', scopes: ['jobs:read'] },
      })
    ).json()) as { id: number };
    await s.request('DELETE', `/api/v1/tokens/${created.id}`, { token: admin.token });

    expect((await s.request('GET', '/api/v1/audit', { token: user.token })).status).toBe(403);
    const page = (await (
      await s.request('GET', '/api/v1/audit?limit=100', { token: admin.token })
    ).json()) as {
      entries: {
        action: string;
        actor: string;
        target: string;
        token_id: number | null;
        request_id: string | null;
        details: Record<string, unknown>;
      }[];
      next_before: number | null;
    };
    const find = (action: string) => page.entries.find((e) => e.action === action);
    expect(find('job.submit')).toMatchObject({
      actor: `token:${user.id} (submitter)`,
      token_id: user.id,
      target: `job:${job.id}`,
      request_id: 'req-audit-1',
      details: { name: 'audited', cpus: 1, owner: 'team-x' },
    });
    expect(find('job.cancel')).toMatchObject({
      actor: `token:${user.id} (submitter)`,
      target: `job:${job.id}`,
    });
    expect(find('worker.drain')).toMatchObject({
      actor: `token:${admin.id} (auditor)`,
      target: 'worker:audit-node',
    });
    expect(page.entries.some((e) => e.action === 'token.create' && e.actor === 'cli:test')).toBe(true);
    expect(
      page.entries.some(
        (e) =>
          e.action === 'token.create' && e.target === `token:${created.id}` && e.actor.includes('auditor'),
      ),
    ).toBe(true);
    expect(find('token.revoke')).toMatchObject({
      target: `token:${created.id}`,
      actor: `token:${admin.id} (auditor)`,
    });

    // Paging: newest first, next_before continues.
    const first = (await (
      await s.request('GET', '/api/v1/audit?limit=2', { token: admin.token })
    ).json()) as {
      entries: { id: number }[];
      next_before: number;
    };
    expect(first.entries).toHaveLength(2);
    expect(first.entries[0]!.id).toBeGreaterThan(first.entries[1]!.id);
    const next = (await (
      await s.request('GET', `/api/v1/audit?limit=2&before=${first.next_before}`, { token: admin.token })
    ).json()) as { entries: { id: number }[] };
    expect(next.entries[0]!.id).toBeLessThan(first.next_before);
    const filtered = (await (
      await s.request('GET', '/api/v1/audit?action=job.submit', { token: admin.token })
    ).json()) as {
      entries: { action: string }[];
    };
    expect(filtered.entries.every((e) => e.action === 'job.submit')).toBe(true);
    expect((await s.request('GET', '/api/v1/audit?limit=0', { token: admin.token })).status).toBe(400);
  });
});
