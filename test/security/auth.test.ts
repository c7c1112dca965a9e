import { createHash } from 'node:crypto';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../../cli/commands.ts';
import { authenticate, tokenHash } from '../../functions/domain/auth.ts';
import { query, queryOne } from '../../functions/domain/sql.ts';
import { availableBackends, type Backend } from '../support/cluster.ts';
import { errorOf, type SecureApp, secureApp } from './support.ts';

const backends = await availableBackends();

/**
 * Tokens and scopes over the HTTP app. Each backend gets its own database: the first test runs on the open
 * loopback cluster (no token yet), the rest after tokens exist.
 */
describe.each(backends)('API tokens on $name', (factory) => {
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

  it('with no token in existence the loopback cluster is open; a token that names nothing is ignored', async () => {
    expect(
      (await s.request('POST', '/api/v1/jobs/submit', { body: { script: 'true', cpus: 1 } })).status,
    ).toBe(201);
    expect((await s.request('GET', '/api/v1/jobs')).status).toBe(200);
    expect((await s.request('GET', '/api/v1/dashboard', { token: 'cnd_not-a-real-token' })).status).toBe(200);
    // An internal token (the embedded agent's) does not close it either.
    await query(
      backend.db.db,
      sql`INSERT INTO api_tokens (name, owner, scopes, token_hash, prefix, internal, created_by)
          VALUES ('embedded-agent:x', 'system', '{agent}', ${await tokenHash('cnd_internal')}, 'cnd_inte', true, 'test')`,
    );
    expect((await s.request('GET', '/api/v1/workers')).status).toBe(200);
  });

  it('creating the first token (admin API, open on loopback) closes every route but health', async () => {
    const res = await s.request('POST', '/api/v1/tokens', {
      body: { name: 'first-admin', scopes: ['admin'] },
    });
    expect(res.status).toBe(201);
    const created = (await res.json()) as { id: number; token: string; scopes: string[]; owner: string };
    expect(created.token).toMatch(/^cnd_[A-Za-z0-9_-]{43}$/);
    expect(created).toMatchObject({ scopes: ['admin'], owner: 'first-admin' });
    for (const [method, path] of [
      ['GET', '/'],
      ['GET', '/api/v1/jobs'],
      ['POST', '/api/v1/jobs/submit'],
      ['GET', '/api/v1/dashboard'],
      ['GET', '/api/v1/workers'],
      ['GET', '/api/v1/tokens'],
      ['GET', '/api/v1/audit'],
      ['POST', '/api/v1/agents/register'],
      ['GET', '/api/v1/nope'],
    ] as const) {
      const anonymous = await s.request(method, path, { body: method === 'POST' ? {} : undefined });
      expect(anonymous.status, `${method} ${path}`).toBe(401);
      expect(anonymous.headers.get('www-authenticate')).toContain('Bearer');
      expect((await errorOf(anonymous)).code).toBe('missing_token');
      const forged = await s.request(method, path, { token: 'cnd_forged' });
      expect(forged.status, `${method} ${path} forged`).toBe(401);
      expect((await errorOf(forged)).code).toBe('invalid_token');
    }
    const health = await s.request('GET', '/api/v1/health');
    expect(health.status).toBe(200);
    const ok = await s.request('GET', '/api/v1/tokens', { token: created.token });
    expect(ok.status).toBe(200);
  });

  it('stores only the SHA-256 of a token, and never lists it', async () => {
    const { token, id } = await s.token(['jobs:read'], 'hash-check');
    const row = await queryOne<Record<string, unknown>>(
      backend.db.db,
      sql`SELECT * FROM api_tokens WHERE id = ${id}`,
    );
    expect(row?.token_hash).toBe(createHash('sha256').update(token).digest('hex'));
    expect(JSON.stringify(row)).not.toContain(token);
    const admin = await s.token(['admin']);
    const listed = await (await s.request('GET', '/api/v1/tokens', { token: admin.token })).text();
    expect(listed).not.toContain(token);
    expect(listed).not.toContain(String(row?.token_hash));
    expect(listed).toContain('hash-check');
  });

  it('refuses a malformed Authorization header with a JSON 401', async () => {
    for (const header of ['Basic dXNlcjpwYXNz', 'Bearer', 'Bearer a b', 'cnd_abc']) {
      const res = await s.request('GET', '/api/v1/jobs', { headers: { authorization: header } });
      expect(res.status, header).toBe(401);
      expect((await errorOf(res)).message).toMatch(/Authorization|token/);
    }
  });

  it('a token revoked mid-session stops working at once (API and CLI)', async () => {
    const admin = await s.token(['admin']);
    const user = await s.token(['jobs:read', 'jobs:write'], 'session-user');
    expect((await s.request('GET', '/api/v1/jobs', { token: user.token })).status).toBe(200);
    const revoked = await s.request('DELETE', `/api/v1/tokens/${user.id}`, { token: admin.token });
    expect(revoked.status).toBe(200);
    expect(((await revoked.json()) as { revoked_at: string | null }).revoked_at).not.toBeNull();
    const after = await s.request('GET', '/api/v1/jobs', { token: user.token });
    expect(after.status).toBe(401);
    expect(await errorOf(after)).toMatchObject({
      code: 'token_revoked',
      message: 'This API token was revoked',
    });

    // The same through the CLI module, against the same database, between two requests of one client.
    const other = await s.token(['jobs:read'], 'cli-revoked');
    expect((await s.request('GET', '/api/v1/dashboard', { token: other.token })).status).toBe(200);
    const out: string[] = [];
    const code = await runCli(
      ['token', 'revoke', String(other.id)],
      {},
      { out: (t) => out.push(t), err: (t) => out.push(t) },
      {
        open: async () => ({ db: backend.db.db, where: 'test', close: async () => {} }),
        user: 'ops',
      },
    );
    expect(code).toBe(0);
    expect(out.join('')).toContain(`Token ${other.id} (cli-revoked) revoked`);
    expect((await s.request('GET', '/api/v1/dashboard', { token: other.token })).status).toBe(401);
  });

  it('scopes: jobs:read reads, jobs:write submits and cancels, only admin manages; agent tokens do nothing else', async () => {
    const reader = await s.token(['jobs:read'], 'reader', 'team-a');
    const writer = await s.token(['jobs:write'], 'writer', 'team-a');
    const agent = await s.token(['agent'], 'agent-1');
    const body = { script: 'true', cpus: 1 };
    expect((await s.request('POST', '/api/v1/jobs/submit', { token: reader.token, body })).status).toBe(403);
    const submitted = await s.request('POST', '/api/v1/jobs/submit', { token: writer.token, body });
    expect(submitted.status).toBe(201);
    const job = (await submitted.json()) as { id: number; owner: string };
    expect(job.owner).toBe('team-a');
    expect((await s.request('GET', `/api/v1/jobs/${job.id}`, { token: writer.token })).status).toBe(403);
    expect((await s.request('GET', `/api/v1/jobs/${job.id}`, { token: reader.token })).status).toBe(200);
    for (const [method, path, what] of [
      ['GET', '/api/v1/workers', 'see or drain workers'],
      ['POST', '/api/v1/workers/w1/drain', 'see or drain workers'],
      ['GET', '/api/v1/tokens', 'manage tokens'],
      ['GET', '/api/v1/audit', 'read the audit log'],
      ['POST', '/api/v1/agents/register', 'make agent calls'],
    ] as const) {
      const res = await s.request(method, path, {
        token: reader.token,
        body: method === 'POST' ? {} : undefined,
      });
      expect(res.status, path).toBe(403);
      const error = await errorOf(res);
      expect(error.code).toBe('insufficient_scope');
      expect(error.message).toContain(what);
    }
    // An agent token trying to submit, read jobs or use anything but the agent protocol: 403.
    const bySubmit = await s.request('POST', '/api/v1/jobs/submit', { token: agent.token, body });
    expect(bySubmit.status).toBe(403);
    expect((await errorOf(bySubmit)).message).toContain('cannot submit jobs');
    expect((await s.request('GET', `/api/v1/jobs/${job.id}`, { token: agent.token })).status).toBe(403);
    expect((await s.request('GET', '/api/v1/jobs', { token: agent.token })).status).toBe(403);
    expect((await s.request('GET', '/api/v1/dashboard', { token: agent.token })).status).toBe(403);
    expect((await s.request('GET', '/', { token: agent.token })).status).toBe(403);
    expect((await s.request('POST', `/api/v1/jobs/${job.id}/cancel`, { token: agent.token })).status).toBe(
      403,
    );
    // The API refuses to create a token that mixes agent with anything.
    const admin = await s.token(['admin']);
    const mixed = await s.request('POST', '/api/v1/tokens', {
      token: admin.token,
      body: { name: 'mixed', scopes: ['agent', 'jobs:read'] },
    });
    expect(mixed.status).toBe(400);
    expect((await errorOf(mixed)).message).toContain('scopes');
  });

  it("a non-admin sees and cancels only its owner's jobs; admin sees all", async () => {
    const a = await s.token(['jobs:read', 'jobs:write'], 'alice', 'team-alice');
    const a2 = await s.token(['jobs:read'], 'alice-ro', 'team-alice');
    const b = await s.token(['jobs:read', 'jobs:write'], 'bob', 'team-bob');
    const admin = await s.token(['admin']);
    const submit = async (token: string) =>
      (await (
        await s.request('POST', '/api/v1/jobs/submit', { token, body: { script: 'sleep 1', cpus: 1 } })
      ).json()) as {
        id: number;
      };
    const ja = await submit(a.token);
    const jb = await submit(b.token);
    const ids = async (token: string) =>
      (
        (await (await s.request('GET', '/api/v1/jobs?limit=1000', { token })).json()) as {
          jobs: { id: number }[];
        }
      ).jobs.map((j) => j.id);
    expect(await ids(a.token)).toContain(ja.id);
    expect(await ids(a.token)).not.toContain(jb.id);
    expect(await ids(a2.token)).toContain(ja.id); // same owner, another token
    expect(await ids(admin.token)).toEqual(expect.arrayContaining([ja.id, jb.id]));
    expect((await s.request('GET', `/api/v1/jobs/${jb.id}`, { token: a.token })).status).toBe(404);
    expect((await s.request('GET', `/api/v1/jobs/${jb.id}/logs`, { token: a.token })).status).toBe(404);
    const cancelOther = await s.request('POST', `/api/v1/jobs/${jb.id}/cancel`, { token: a.token });
    expect(cancelOther.status).toBe(404);
    expect(
      (
        (await (await s.request('GET', `/api/v1/jobs/${jb.id}`, { token: admin.token })).json()) as {
          state: string;
        }
      ).state,
    ).toBe('PENDING');
    const cancelOwn = await s.request('POST', `/api/v1/jobs/${ja.id}/cancel`, { token: a.token });
    expect(cancelOwn.status).toBe(200);
    expect((await s.request('POST', `/api/v1/jobs/${jb.id}/cancel`, { token: admin.token })).status).toBe(
      200,
    );
  });

  it('writes last_used_at at most once a minute per token', async () => {
    const t = await s.token(['jobs:read'], 'last-used');
    const read = async () =>
      (
        await queryOne<{ at: Date | string | null }>(
          backend.db.db,
          sql`SELECT last_used_at AS at FROM api_tokens WHERE id = ${t.id}`,
        )
      )?.at ?? null;
    expect(await read()).toBeNull();
    await s.request('GET', '/api/v1/dashboard', { token: t.token });
    await s.harness.settle();
    const first = await read();
    expect(first).not.toBeNull();
    for (let i = 0; i < 3; i++) await s.request('GET', '/api/v1/dashboard', { token: t.token });
    await s.harness.settle();
    expect(new Date((await read())!).getTime()).toBe(new Date(first!).getTime());
    // A minute later (moved back in time here), the next request writes it again.
    await query(
      backend.db.db,
      sql`UPDATE api_tokens SET last_used_at = now() - interval '61 seconds' WHERE id = ${t.id}`,
    );
    await s.request('GET', '/api/v1/dashboard', { token: t.token });
    await s.harness.settle();
    expect(new Date((await read())!).getTime()).toBeGreaterThan(new Date(first!).getTime() - 1);
  });
});

describe.each(backends)('auth required (Workers, or Node beyond loopback) on $name', (factory) => {
  let backend: Backend;
  beforeAll(async () => {
    backend = await factory.create();
  });
  afterAll(async () => {
    await backend?.close();
  });

  it('needs a token even when none exists; health stays public', async () => {
    const s = secureApp(backend, { auth: 'required' });
    expect((await s.request('GET', '/api/v1/dashboard')).status).toBe(401);
    expect((await s.request('POST', '/api/v1/agents/register', { body: {} })).status).toBe(401);
    expect((await s.request('GET', '/api/v1/health')).status).toBe(200);
  });

  it('stores the ADMIN_TOKEN binding hashed on first use; revoking it sticks', async () => {
    const secret = 'bootstrap-admin-token-0123456789abcdef';
    const s = secureApp(backend, { auth: 'required', bootstrapAdminTokenHash: await tokenHash(secret) });
    const count = async () =>
      Number(
        (
          await queryOne<{ n: string }>(
            backend.db.db,
            sql`SELECT count(*) AS n FROM api_tokens WHERE name = 'bootstrap-admin'`,
          )
        )?.n,
      );
    expect(await count()).toBe(0);
    const first = await s.request('GET', '/api/v1/tokens', { token: secret });
    expect(first.status).toBe(200);
    expect(await count()).toBe(1);
    const row = await queryOne<{ token_hash: string; scopes: unknown; id: string }>(
      backend.db.db,
      sql`SELECT id, token_hash, scopes FROM api_tokens WHERE name = 'bootstrap-admin'`,
    );
    expect(row?.token_hash).toBe(createHash('sha256').update(secret).digest('hex'));
    await Promise.all([1, 2, 3].map(() => s.request('GET', '/api/v1/workers', { token: secret })));
    expect(await count()).toBe(1);
    expect((await s.request('DELETE', `/api/v1/tokens/${row?.id}`, { token: secret })).status).toBe(200);
    expect((await s.request('GET', '/api/v1/tokens', { token: secret })).status).toBe(401);
    expect(await count()).toBe(1);
  });

  it('authenticate() answers from one query on the hash, nothing cached', async () => {
    const s = secureApp(backend, { auth: 'required' });
    const t = await s.token(['jobs:read'], 'no-cache');
    const ctx = s.harness.ctx;
    expect((await authenticate({ ctx, token: t.token })).tokenId).toBe(t.id);
    await query(backend.db.db, sql`UPDATE api_tokens SET revoked_at = now() WHERE id = ${t.id}`);
    await expect(authenticate({ ctx, token: t.token })).rejects.toMatchObject({ code: 'token_revoked' });
  });
});
