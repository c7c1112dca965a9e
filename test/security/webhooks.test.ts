import { createHmac } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { sql } from 'drizzle-orm';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { hmacKey, hmacVerify, toBytes } from '../../functions/domain/crypto.ts';
import { pruneSubmissionKeys } from '../../functions/domain/jobs.ts';
import { query } from '../../functions/domain/sql.ts';
import { availableBackends, type Backend } from '../support/cluster.ts';
import { errorOf, type SecureApp, secureApp } from './support.ts';

const backends = await availableBackends();
/** A recorded GitHub push delivery body (test/fixtures/README.md), signed here as GitHub signs it. */
const PUSH = readFileSync(new URL('../fixtures/github-push.json', import.meta.url));
const SECRET = 'webhook-test-secret-0123456789';

const githubSignature = (body: Uint8Array | string, secret = SECRET) =>
  `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;
const conductorSignature = (body: Uint8Array | string, t: number, secret = SECRET) =>
  `t=${t},v1=${createHmac('sha256', secret).update(`${t}.`).update(body).digest('hex')}`;
const now = () => Math.floor(Date.now() / 1000);

describe('HMAC-SHA256 with Web Crypto', () => {
  it("matches GitHub's documented test vector, and compares with crypto.subtle.verify", async () => {
    // From GitHub's "Validating webhook deliveries": secret "It's a Secret to Everybody", body "Hello, World!".
    const key = await hmacKey("It's a Secret to Everybody");
    const expected = '757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17';
    expect(await hmacVerify(key, expected, toBytes('Hello, World!'))).toBe(true);
    expect(await hmacVerify(key, expected.replace(/7$/, '8'), toBytes('Hello, World!'))).toBe(false);
    expect(await hmacVerify(key, 'zz', toBytes('Hello, World!'))).toBe(false);
  });
});

describe.each(backends)('webhook submission on $name', (factory) => {
  let backend: Backend;
  let s: SecureApp;
  let admin: string;

  beforeAll(async () => {
    backend = await factory.create();
    s = secureApp(backend);
    admin = (await s.token(['admin'], 'admin')).token;
    const ci = await s.request('POST', '/api/v1/partitions/ci', { token: admin, body: {} });
    expect(ci.status).toBe(200);
    const created = await s.request('POST', '/api/v1/webhooks', {
      token: admin,
      body: {
        name: 'on-push',
        secret: SECRET,
        template: {
          script: 'echo "deploying $GIT_REF of $REPO"',
          cpus: 1,
          partition: 'ci',
          environment: { STAGE: 'prod' },
        },
        mapping: {
          ref: 'GIT_REF',
          'repository.full_name': 'REPO',
          'pusher.name': 'PUSHER',
          'commits.0.id': 'FIRST_COMMIT',
        },
        owner: 'ci-team',
      },
    });
    expect(created.status).toBe(201);
    expect(((await created.json()) as { secret: string }).secret).toBe(SECRET);
  });
  afterAll(async () => {
    await s?.harness.settle();
    await backend?.close();
  });

  const deliver = (body: Uint8Array | string, headers: Record<string, string>, name = 'on-push') =>
    s.app.request(`/api/v1/webhooks/${name}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...headers },
      body: typeof body === 'string' ? body : new Uint8Array(body),
    });
  type Delivered = {
    duplicate: boolean;
    job: { id: number; state: string; owner: string; partition: string };
  };
  const jobCount = async () =>
    Number((await query<{ n: string }>(backend.db.db, sql`SELECT count(*) AS n FROM jobs`))[0]?.n);

  it('runs the template for a signed GitHub push, with payload values only in the mapped variables', async () => {
    const res = await deliver(PUSH, {
      'x-hub-signature-256': githubSignature(PUSH),
      'x-github-event': 'push',
      'x-github-delivery': '72d3162e-cc78-11e3-81ab-4c9367dc0958',
    });
    expect(res.status).toBe(201);
    const body = (await res.json()) as Delivered;
    expect(body).toMatchObject({
      duplicate: false,
      job: { state: 'PENDING', owner: 'ci-team', partition: 'ci' },
    });
    const job = (await (await s.request('GET', `/api/v1/jobs/${body.job.id}`, { token: admin })).json()) as {
      script: string;
      environment: Record<string, string>;
    };
    expect(job.script).toBe('echo "deploying $GIT_REF of $REPO"');
    expect(job.environment).toEqual({
      STAGE: 'prod',
      GIT_REF: 'refs/tags/simple-tag',
      REPO: 'Codertocat/Hello-World',
      PUSHER: 'Codertocat',
    });
  });

  it('never interpolates payload text into the script', async () => {
    const hostile = JSON.stringify({
      ref: '$(touch /tmp/pwned); `id`; "; rm -rf / #',
      // biome-ignore lint/suspicious/noTemplateCurlyInString: shell syntax, not a template
      repository: { full_name: '${IFS}x' },
    });
    const res = await deliver(hostile, {
      'x-hub-signature-256': githubSignature(hostile),
      'x-github-delivery': 'hostile-1',
    });
    expect(res.status).toBe(201);
    const { job } = (await res.json()) as Delivered;
    const stored = (await (await s.request('GET', `/api/v1/jobs/${job.id}`, { token: admin })).json()) as {
      script: string;
      environment: Record<string, string>;
    };
    expect(stored.script).toBe('echo "deploying $GIT_REF of $REPO"');
    expect(stored.environment.GIT_REF).toBe('$(touch /tmp/pwned); `id`; "; rm -rf / #');
  });

  it('refuses a wrong secret, a missing or malformed signature, and a changed body (401, no job)', async () => {
    const before = await jobCount();
    const cases: [Record<string, string>, string | Uint8Array, string][] = [
      [
        { 'x-hub-signature-256': githubSignature(PUSH, 'the-wrong-secret-entirely') },
        PUSH,
        'invalid_signature',
      ],
      [{ 'x-hub-signature-256': githubSignature(PUSH) }, `${PUSH.toString()} `, 'invalid_signature'],
      [{ 'x-hub-signature-256': 'sha1=abc' }, PUSH, 'invalid_signature'],
      [
        { 'x-conductor-signature': conductorSignature(PUSH, now(), 'the-wrong-secret-entirely') },
        PUSH,
        'invalid_signature',
      ],
      [{ 'x-conductor-signature': 't=abc,v1=00' }, PUSH, 'invalid_signature'],
      [{}, PUSH, 'missing_signature'],
    ];
    for (const [headers, body, code] of cases) {
      const res = await deliver(body, headers);
      expect(res.status, JSON.stringify(headers)).toBe(401);
      const error = await errorOf(res);
      expect(error.code).toBe(code);
      expect(error.message).toMatch(/Signature|signed/);
    }
    expect(await jobCount()).toBe(before);
  });

  it('accepts the timestamped signature within 5 minutes only', async () => {
    const body = JSON.stringify({ ref: 'refs/heads/main' });
    const ok = await deliver(body, { 'x-conductor-signature': conductorSignature(body, now() - 200) });
    expect(ok.status).toBe(201);
    for (const t of [now() - 301, now() - 3600, now() + 400]) {
      const res = await deliver(body, { 'x-conductor-signature': conductorSignature(body, t) });
      expect(res.status).toBe(401);
      const error = await errorOf(res);
      expect(error.code).toBe('signature_expired');
      expect(error.message).toMatch(/at most 300 s/);
    }
  });

  it('accepts a delivery once: a replay returns the original job', async () => {
    const before = await jobCount();
    const headers = {
      'x-hub-signature-256': githubSignature(PUSH),
      'x-github-delivery': 'replayed-delivery-1',
      'x-github-event': 'push',
    };
    const first = (await (await deliver(PUSH, headers)).json()) as Delivered;
    const again = await deliver(PUSH, headers);
    expect(again.status).toBe(200);
    expect((await again.json()) as Delivered).toMatchObject({ duplicate: true, job: { id: first.job.id } });
    // Concurrent redeliveries: still one job.
    const burst = await Promise.all(
      Array.from({ length: 8 }, () => deliver(PUSH, { ...headers, 'x-github-delivery': 'burst-1' })),
    );
    const ids = new Set(await Promise.all(burst.map(async (r) => ((await r.json()) as Delivered).job.id)));
    expect(ids.size).toBe(1);
    expect(await jobCount()).toBe(before + 2);

    // The timestamped form: the same signature under a new delivery id is the same delivery.
    const body = JSON.stringify({ ref: 'refs/heads/replay' });
    const signature = conductorSignature(body, now());
    const a = (await (
      await deliver(body, { 'x-conductor-signature': signature, 'x-conductor-delivery': 'd-1' })
    ).json()) as Delivered;
    const b = await deliver(body, {
      'x-conductor-signature': signature,
      'x-conductor-delivery': 'd-2-forged',
    });
    expect(b.status).toBe(200);
    expect(((await b.json()) as Delivered).job.id).toBe(a.job.id);
  });

  it('answers ping without a job, and honours an event filter', async () => {
    const body = JSON.stringify({ zen: 'Keep it logically awesome.' });
    const ping = await deliver(body, {
      'x-hub-signature-256': githubSignature(body),
      'x-github-event': 'ping',
      'x-github-delivery': 'ping-1',
    });
    expect(ping.status).toBe(202);
    expect(await ping.json()).toMatchObject({ ignored: true, event: 'ping' });
    await s.request('POST', '/api/v1/webhooks', {
      token: admin,
      body: {
        name: 'releases-only',
        secret: SECRET,
        template: { script: 'true', cpus: 1 },
        events: ['release'],
      },
    });
    const push = await deliver(
      body,
      {
        'x-hub-signature-256': githubSignature(body),
        'x-github-event': 'push',
        'x-github-delivery': 'filter-1',
      },
      'releases-only',
    );
    expect(push.status).toBe(202);
    const release = await deliver(
      body,
      {
        'x-hub-signature-256': githubSignature(body),
        'x-github-event': 'release',
        'x-github-delivery': 'filter-2',
      },
      'releases-only',
    );
    expect(release.status).toBe(201);
  });

  it('checks the signature before reading the payload, and names payload problems', async () => {
    expect((await deliver('not json', {})).status).toBe(401);
    const notJson = await deliver('not json', {
      'x-hub-signature-256': githubSignature('not json'),
      'x-github-delivery': 'not-json-1',
    });
    expect(notJson.status).toBe(400);
    expect((await errorOf(notJson)).message).toContain('not JSON');
    const nul = JSON.stringify({ ref: 'a\u0000b' });
    const withNul = await deliver(nul, {
      'x-hub-signature-256': githubSignature(nul),
      'x-github-delivery': 'nul-1',
    });
    expect(withNul.status).toBe(400);
    expect((await errorOf(withNul)).message).toContain('ref');
    // An unknown name answers as a bad signature does (see the hardening tests).
    expect(
      (await deliver('{}', { 'x-hub-signature-256': githubSignature('{}') }, 'no-such-hook')).status,
    ).toBe(401);
  });

  describe('hardening (review M12, L8)', () => {
    /** Counts HMAC computations and checks (Web Crypto's sign and verify) while a delivery is handled. */
    const hmacCalls = () => {
      const sign = vi.spyOn(crypto.subtle, 'sign');
      const verify = vi.spyOn(crypto.subtle, 'verify');
      return () => sign.mock.calls.length + verify.mock.calls.length;
    };
    afterEach(() => {
      vi.restoreAllMocks();
    });

    it('refuses more than 3 v1 candidates before computing any HMAC, and computes one HMAC per delivery', async () => {
      const body = JSON.stringify({ ref: 'refs/heads/many', padding: 'x'.repeat(512 * 1024) });
      const t = now();
      const wrong = createHmac('sha256', 'the-wrong-secret-entirely')
        .update(`${t}.`)
        .update(body)
        .digest('hex');
      const before = await jobCount();
      const calls = hmacCalls();
      const flood = await deliver(body, {
        'x-conductor-signature': `t=${t},${Array.from({ length: 220 }, () => `v1=${wrong}`).join(',')}`,
      });
      expect(flood.status).toBe(401);
      const error = await errorOf(flood);
      expect(error.code).toBe('invalid_signature');
      expect(error.message).toContain('at most 3');
      expect(calls()).toBe(0);

      // Three candidates, the right one last: one HMAC computed, compared with each.
      const right = conductorSignature(body, t).replace(/^t=\d+,/, '');
      const ok = await deliver(body, {
        'x-conductor-signature': `t=${t},v1=${wrong},v1=${wrong.replace(/^./, 'f')},${right}`,
        'x-conductor-delivery': 'three-candidates',
      });
      expect(ok.status).toBe(201);
      expect(calls()).toBe(1);
      expect(await jobCount()).toBe(before + 1);
    });

    it('answers an unknown webhook exactly as a bad signature (401, same body): no name oracle', async () => {
      const body = JSON.stringify({ ref: 'refs/heads/probe' });
      const strip = async (res: Response) => {
        const { error } = (await res.json()) as { error: Record<string, unknown> };
        const { request_id: _, ...rest } = error;
        return { status: res.status, error: rest };
      };
      const variants: Record<string, string>[] = [
        {
          'x-hub-signature-256': githubSignature(body, 'the-wrong-secret-entirely'),
          'x-github-delivery': 'p1',
        },
        { 'x-conductor-signature': conductorSignature(body, now(), 'the-wrong-secret-entirely') },
        { 'x-conductor-signature': conductorSignature(body, now() - 3600) },
        {},
      ];
      for (const headers of variants) {
        const known = await strip(await deliver(body, headers));
        const unknown = await strip(await deliver(body, headers, 'no-such-hook'));
        expect(unknown, JSON.stringify(headers)).toEqual(known);
        expect(known.status).toBe(401);
      }
    });

    it('refuses a GitHub-signed delivery without X-GitHub-Delivery: a captured body cannot be replayed by dropping it', async () => {
      const body = JSON.stringify({ ref: 'refs/heads/captured' });
      const before = await jobCount();
      for (let i = 0; i < 3; i++) {
        const res = await deliver(body, {
          'x-hub-signature-256': githubSignature(body),
          'x-github-event': 'push',
        });
        expect(res.status).toBe(400);
        const error = await errorOf(res);
        expect(error.code).toBe('missing_delivery_id');
        expect(error.message).toContain('X-GitHub-Delivery');
      }
      expect(await jobCount()).toBe(before);
    });

    it('keeps delivery and signature dedupe keys for a bounded time; the housekeeping prune deletes them after', async () => {
      const body = JSON.stringify({ ref: 'refs/heads/expiring' });
      const github = await deliver(body, {
        'x-hub-signature-256': githubSignature(body),
        'x-github-delivery': 'expiring-delivery-1',
      });
      expect(github.status).toBe(201);
      const timestamped = await deliver(body, {
        'x-conductor-signature': conductorSignature(body, now()),
        'x-conductor-delivery': 'expiring-delivery-2',
      });
      expect(timestamped.status).toBe(201);
      const keys = await query<{ key: string; finite: boolean; hours: string | number }>(
        backend.db.db,
        sql`SELECT key, expires_at < 'infinity' AS finite,
                   extract(epoch FROM expires_at - now()) / 3600 AS hours
            FROM submission_keys
            WHERE scope LIKE 'webhook:%' AND key IN ('delivery:expiring-delivery-1', 'delivery:expiring-delivery-2')
               OR key LIKE ${`sig:%`} AND created_at > now() - interval '1 minute'`,
      );
      expect(keys.length).toBeGreaterThanOrEqual(3);
      for (const key of keys) {
        expect(key.finite, key.key).toBe(true);
        expect(Number(key.hours), key.key).toBeLessThanOrEqual(7 * 24);
      }
      // Past their time, the prune deletes them, and the same delivery id is a new delivery again.
      await backend.db.db.execute(
        sql`UPDATE submission_keys SET expires_at = now() - interval '1 second'
            WHERE key IN ('delivery:expiring-delivery-1', 'delivery:expiring-delivery-2') OR key LIKE 'sig:%'`,
      );
      expect(await pruneSubmissionKeys(backend.db.db)).toBeGreaterThanOrEqual(3);
      const left = await query<{ n: string }>(
        backend.db.db,
        sql`SELECT count(*) AS n FROM submission_keys
            WHERE key IN ('delivery:expiring-delivery-1', 'delivery:expiring-delivery-2') OR key LIKE 'sig:%'`,
      );
      expect(Number(left[0]?.n)).toBe(0);
    });
  });

  it('is managed by admins only, and never lists secrets', async () => {
    const writer = (await s.token(['jobs:write'])).token;
    const denied = await s.request('POST', '/api/v1/webhooks', {
      token: writer,
      body: { name: 'x', template: { script: 'true', cpus: 1 } },
    });
    expect(denied.status).toBe(403);
    const generated = await s.request('POST', '/api/v1/webhooks', {
      token: admin,
      body: { name: 'generated', template: { script: 'true', cpus: 1 } },
    });
    const secret = ((await generated.json()) as { secret: string }).secret;
    expect(secret).toMatch(/^whsec_[A-Za-z0-9_-]{43}$/);
    const listed = await (await s.request('GET', '/api/v1/webhooks', { token: admin })).text();
    expect(listed).toContain('generated');
    expect(listed).not.toContain(secret);
    expect(listed).not.toContain(SECRET);
    const bad = await s.request('POST', '/api/v1/webhooks', {
      token: admin,
      body: {
        name: 'bad',
        template: { script: 'true', cpus: 1 },
        mapping: { 'a..b': 'X', ok: 'CONDUCTOR_JOB_ID' },
      },
    });
    expect(bad.status).toBe(400);
    expect((await errorOf(bad)).message).toMatch(/mapping/);
    expect((await s.request('DELETE', '/api/v1/webhooks/generated', { token: admin })).status).toBe(200);
    expect(
      (await deliver('{}', { 'x-hub-signature-256': githubSignature('{}', secret) }, 'generated')).status,
    ).toBe(401);
  });
});
