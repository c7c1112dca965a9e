/**
 * Event subscriptions over HTTP (the app in-process, on real Postgres and on PGlite): who may subscribe to
 * what, the 400s, owner-scoped subscriptions seeing only their jobs, the Slack body, the delivery log, retries
 * that give up and a replay, TIME_LIMIT_* once per attempt, mail_type accepted with a warning when no SMTP
 * server is configured, and nothing written when nobody subscribed. Job state changes are made by plain
 * UPDATEs: the trigger sees every path that changes a job.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { sql } from 'drizzle-orm';
import { Webhook } from 'standardwebhooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  deliverNotifications,
  emitTimeLimitEvents,
  pruneNotificationEvents,
} from '../../functions/domain/notifications.ts';
import { query } from '../../functions/domain/sql.ts';
import { errorOf, type SecureApp, secureApp } from '../security/support.ts';
import { availableBackends, type Backend } from '../support/cluster.ts';

const backends = await availableBackends();

interface Received {
  headers: http.IncomingHttpHeaders;
  body: string;
}

async function receiver(answer: () => number = () => 204) {
  const received: Received[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      received.push({ headers: req.headers, body: Buffer.concat(chunks).toString('utf8') });
      res.writeHead(answer()).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`;
  return {
    url,
    received,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

describe.each(backends)('event subscriptions over HTTP on $name', (factory) => {
  let backend: Backend;
  let s: SecureApp;
  let admin: string;
  let alice: string;
  let bob: string;
  beforeAll(async () => {
    backend = await factory.create();
    s = secureApp(backend, {
      notifyRetryBaseSeconds: 0.01,
      notifyRetryMaxSeconds: 0.01,
      notifyMaxAttempts: 2,
    });
    admin = (await s.token(['admin'], 'root', 'root')).token;
    alice = (await s.token(['jobs:read', 'jobs:write'], 'alice', 'alice')).token;
    bob = (await s.token(['jobs:read', 'jobs:write'], 'bob', 'bob')).token;
  });
  afterAll(async () => {
    await s?.harness.settle();
    await backend?.close();
  });

  const post = (token: string, path: string, body: unknown) => s.request('POST', path, { token, body });
  const get = (token: string, path: string) => s.request('GET', path, { token });
  const db = () => backend.db.db;
  const submit = async (token: string, body: Record<string, unknown> = {}) => {
    const res = await post(token, '/api/v1/jobs/submit', { script: 'true', cpus: 1, ...body });
    expect(res.status).toBe(201);
    return { job: (await res.json()) as { id: number; mail_type: string | null }, res };
  };
  /** The job's life as the scheduler and an agent would write it, one UPDATE each. */
  const live = async (id: number, end: 'COMPLETED' | 'FAILED') => {
    await db().execute(
      sql`UPDATE jobs SET state = 'RUNNING', node = 'n1', attempt = attempt + 1 WHERE id = ${id}`,
    );
    await db().execute(sql`UPDATE jobs SET start_time = now() WHERE id = ${id}`);
    await db().execute(
      sql`UPDATE jobs SET state = ${end}, end_time = now(), exit_code = ${end === 'FAILED' ? '1:0' : '0:0'} WHERE id = ${id}`,
    );
  };
  const deliverAll = async () => {
    while ((await deliverNotifications(s.harness.ctx)) > 0) {}
  };

  it('refuses bad subscriptions with 400/403 and the error envelope, storing nothing', async () => {
    const before = await query<{ n: string }>(
      db(),
      sql`SELECT count(*) AS n FROM notification_subscriptions`,
    );
    const cases: [string, Record<string, unknown>, number, string][] = [
      [alice, { url: 'ftp://x/y', events: ['END'] }, 400, 'invalid_request'],
      [alice, { url: 'http://x/y', events: [] }, 400, 'invalid_request'],
      [alice, { url: 'http://x/y', events: ['FINISH'] }, 400, 'invalid_event'],
      [alice, { url: 'http://x/y', events: ['WORKER_LOST'] }, 400, 'invalid_event'],
      [alice, { url: 'http://x/y', events: ['END'], scope: 'cluster' }, 403, 'cluster_scope_forbidden'],
      [alice, { url: 'http://x/y', events: ['END'], secret: 'not-whsec' }, 400, 'invalid_request'],
      [alice, { url: 'http://x/y', events: ['END'], format: 'teams' }, 400, 'invalid_request'],
      [alice, { url: 'http://x/y', events: ['NONE'] }, 400, 'invalid_event'],
    ];
    for (const [token, body, status, code] of cases) {
      const res = await post(token, '/api/v1/subscriptions', body);
      expect(res.status, JSON.stringify(body)).toBe(status);
      expect((await errorOf(res)).code, JSON.stringify(body)).toBe(code);
    }
    const after = await query<{ n: string }>(db(), sql`SELECT count(*) AS n FROM notification_subscriptions`);
    expect(Number(after[0]!.n)).toBe(Number(before[0]!.n));
    const anonymous = await s.request('POST', '/api/v1/subscriptions', {
      body: { url: 'http://x/y', events: ['END'] },
    });
    expect(anonymous.status).toBe(401);
  });

  it('an array without ARRAY_TASKS: one BEGIN when its first task starts, one FAIL once no task is left (one failed); with ARRAY_TASKS: each task', async () => {
    const carol = (await s.token(['jobs:read', 'jobs:write'], 'carol', 'carol')).token;
    const r = await receiver();
    try {
      const whole = (await (
        await post(carol, '/api/v1/subscriptions', { url: r.url, events: ['BEGIN', 'END', 'FAIL'] })
      ).json()) as { id: number; secret: string };
      const tasks = (await (
        await post(carol, '/api/v1/subscriptions', { url: r.url, events: ['BEGIN', 'END', 'ARRAY_TASKS'] })
      ).json()) as { id: number; secret: string };
      const { job } = await submit(carol, { array: '0-2', mail_type: 'BEGIN,END' });
      const arrayId = (job as unknown as { array_job_id: number }).array_job_id;
      const ids = (
        await query<{ id: string }>(
          db(),
          sql`SELECT id FROM jobs WHERE array_job_id = ${arrayId} ORDER BY array_task_id`,
        )
      ).map((x) => Number(x.id));
      const [t0, t1, t2] = ids as [number, number, number];
      const run = (id: number) =>
        db().execute(
          sql`UPDATE jobs SET state = 'RUNNING', node = 'n1', attempt = attempt + 1 WHERE id = ${id}`,
        );
      const start = (id: number) => db().execute(sql`UPDATE jobs SET start_time = now() WHERE id = ${id}`);
      const end = (id: number, state: string) =>
        db().execute(sql`UPDATE jobs SET state = ${state}, end_time = now() WHERE id = ${id}`);
      await run(t0);
      await run(t1);
      await start(t0);
      await start(t1);
      await end(t0, 'COMPLETED');
      await end(t1, 'FAILED');
      await run(t2);
      await start(t2);
      await end(t2, 'COMPLETED');
      await deliverAll();
      const got = (sub: { id: number; secret: string }) =>
        r.received
          .filter((x) => {
            try {
              new Webhook(sub.secret).verify(x.body, x.headers as Record<string, string>);
              return true;
            } catch {
              return false;
            }
          })
          .map((x) => JSON.parse(x.body) as { type: string; data: { job_id: number; tasks?: unknown } });
      const forWhole = got(whole);
      expect(forWhole.map((e) => [e.type, e.data.job_id])).toEqual([
        ['job.begin', arrayId],
        ['job.fail', arrayId],
      ]);
      expect(forWhole[1]?.data.tasks).toEqual({ COMPLETED: 2, FAILED: 1 });
      expect(got(tasks).map((e) => [e.type, e.data.job_id])).toEqual([
        ['job.begin', t0],
        ['job.begin', t1],
        ['job.end', t0],
        ['job.fail', t1],
        ['job.begin', t2],
        ['job.end', t2],
      ]);
      // Mail without ARRAY_TASKS: the array's BEGIN and its end (a FAIL goes to END's subscribers), not each task's.
      const mails = await query<{ type: string; job_id: string }>(
        db(),
        sql`SELECT type, job_id FROM notification_events WHERE mail_to IS NOT NULL AND owner = 'carol' ORDER BY id`,
      );
      expect(mails.map((m) => [m.type, Number(m.job_id)])).toEqual([
        ['BEGIN', arrayId],
        ['FAIL', arrayId],
      ]);
    } finally {
      await r.close();
    }
  });

  it("an array's tasks ending in concurrent transactions give exactly one array END", async () => {
    const dave = (await s.token(['jobs:read', 'jobs:write'], 'dave', 'dave')).token;
    expect(
      (await post(dave, '/api/v1/subscriptions', { url: 'http://127.0.0.1:9/none', events: ['END'] })).status,
    ).toBe(201);
    const { job } = await submit(dave, { array: '0-19' });
    const arrayId = (job as unknown as { array_job_id: number }).array_job_id;
    await db().execute(
      sql`UPDATE jobs SET state = 'RUNNING', node = 'n1', attempt = 1, start_time = now() WHERE array_job_id = ${arrayId}`,
    );
    const ids = await query<{ id: string }>(db(), sql`SELECT id FROM jobs WHERE array_job_id = ${arrayId}`);
    await Promise.all(
      ids.map((x) =>
        db().execute(sql`UPDATE jobs SET state = 'COMPLETED', end_time = now() WHERE id = ${Number(x.id)}`),
      ),
    );
    const ends = await query<{ n: string }>(
      db(),
      sql`SELECT count(*) AS n FROM notification_events WHERE job_id = ${arrayId} AND type = 'END' AND array_scope = 'array'`,
    );
    expect(Number(ends[0]?.n)).toBe(1);
  });

  it("an owner's subscription gets only that owner's job events; an admin's gets every job's; both verify", async () => {
    const r = await receiver();
    try {
      const mine = await post(alice, '/api/v1/subscriptions', { url: r.url, events: ['ALL'] });
      expect(mine.status).toBe(201);
      const aliceSub = (await mine.json()) as { id: number; secret: string; scope: string; events: string[] };
      expect(aliceSub).toMatchObject({ scope: 'own', events: ['BEGIN', 'END', 'FAIL', 'REQUEUE'] });
      expect(aliceSub.secret).toMatch(/^whsec_/);
      const all = (await (
        await post(admin, '/api/v1/subscriptions', { url: r.url, events: ['FAIL'] })
      ).json()) as {
        id: number;
        secret: string;
        scope: string;
      };
      expect(all.scope).toBe('cluster');
      // Listing: alice sees hers only (never a secret); bob none; the admin both.
      const listed = (await (await get(alice, '/api/v1/subscriptions')).json()) as {
        subscriptions: { id: number }[];
      };
      expect(listed.subscriptions.map((x) => x.id)).toEqual([aliceSub.id]);
      expect(JSON.stringify(listed)).not.toContain('whsec_');
      expect((await get(bob, `/api/v1/subscriptions/${aliceSub.id}`)).status).toBe(404);
      expect((await get(bob, `/api/v1/subscriptions/${aliceSub.id}/deliveries`)).status).toBe(404);

      const a = (await submit(alice)).job;
      const b = (await submit(bob)).job;
      await live(a.id, 'COMPLETED');
      await live(b.id, 'FAILED');
      await deliverAll();
      const secrets = new Map<string, string>([
        [String(aliceSub.id), aliceSub.secret],
        [String(all.id), all.secret],
      ]);
      const seen: { sub: string; type: string; job: unknown }[] = [];
      for (const got of r.received) {
        // Which subscription: try both secrets, exactly one verifies.
        const verified = [...secrets].filter(([, secret]) => {
          try {
            new Webhook(secret).verify(got.body, got.headers as Record<string, string>);
            return true;
          } catch {
            return false;
          }
        });
        expect(verified).toHaveLength(1);
        const payload = JSON.parse(got.body) as { type: string; data: { job_id: number } };
        seen.push({ sub: verified[0]![0], type: payload.type, job: payload.data.job_id });
      }
      const forAlice = seen.filter((x) => x.sub === String(aliceSub.id));
      expect(forAlice).toEqual([
        { sub: String(aliceSub.id), type: 'job.begin', job: a.id },
        { sub: String(aliceSub.id), type: 'job.end', job: a.id },
      ]);
      expect(seen.filter((x) => x.sub === String(all.id))).toEqual([
        { sub: String(all.id), type: 'job.fail', job: b.id },
      ]);
      expect((await s.request('DELETE', `/api/v1/subscriptions/${aliceSub.id}`, { token: bob })).status).toBe(
        404,
      );
      expect(
        (await s.request('DELETE', `/api/v1/subscriptions/${aliceSub.id}`, { token: alice })).status,
      ).toBe(200);
      expect((await s.request('DELETE', `/api/v1/subscriptions/${all.id}`, { token: admin })).status).toBe(
        200,
      );
    } finally {
      await r.close();
    }
  });

  it('slack format: a {"text"} body, signed the same way', async () => {
    const r = await receiver();
    try {
      const sub = (await (
        await post(bob, '/api/v1/subscriptions', { url: r.url, events: ['END'], format: 'slack' })
      ).json()) as { id: number; secret: string };
      const job = (await submit(bob, { name: 'nightly' })).job;
      await live(job.id, 'COMPLETED');
      await deliverAll();
      expect(r.received).toHaveLength(1);
      const body = new Webhook(sub.secret).verify(
        r.received[0]!.body,
        r.received[0]!.headers as Record<string, string>,
      );
      expect(body).toEqual({
        text: `Conductor job ${job.id} (nightly) ended: state COMPLETED, exit code 0:0, on n1`,
      });
      await s.request('DELETE', `/api/v1/subscriptions/${sub.id}`, { token: bob });
    } finally {
      await r.close();
    }
  });

  it('the delivery log: failed attempts recorded, given up after notifyMaxAttempts, then a replay delivers with the same webhook-id', async () => {
    let status = 500;
    const r = await receiver(() => status);
    try {
      const sub = (await (
        await post(alice, '/api/v1/subscriptions', { url: r.url, events: ['END'] })
      ).json()) as {
        id: number;
      };
      const job = (await submit(alice)).job;
      await live(job.id, 'COMPLETED');
      await deliverNotifications(s.harness.ctx);
      type Log = { deliveries: Record<string, unknown>[] };
      let log = (await (await get(alice, `/api/v1/subscriptions/${sub.id}/deliveries`)).json()) as Log;
      expect(log.deliveries).toHaveLength(1);
      expect(log.deliveries[0]).toMatchObject({
        state: 'pending',
        attempts: 1,
        last_status: 500,
        type: 'END',
      });
      await new Promise((resolve) => setTimeout(resolve, 50));
      await deliverNotifications(s.harness.ctx);
      log = (await (
        await get(alice, `/api/v1/subscriptions/${sub.id}/deliveries?state=failed`)
      ).json()) as Log;
      expect(log.deliveries).toHaveLength(1);
      const delivery = log.deliveries[0]! as { id: number; webhook_id: string; attempts: number };
      expect(delivery.attempts).toBe(2);
      await deliverAll();
      expect(r.received).toHaveLength(2); // given up: no third attempt

      status = 200;
      const replay = await post(
        alice,
        `/api/v1/subscriptions/${sub.id}/deliveries/${delivery.id}/replay`,
        {},
      );
      expect(replay.status).toBe(200);
      await s.harness.settle(); // the replay kicked a sender
      await deliverAll();
      expect(r.received).toHaveLength(3);
      expect(new Set(r.received.map((x) => x.headers['webhook-id']))).toEqual(new Set([delivery.webhook_id]));
      log = (await (await get(alice, `/api/v1/subscriptions/${sub.id}/deliveries`)).json()) as Log;
      expect(log.deliveries[0]).toMatchObject({ state: 'delivered', last_status: 200 });
      expect((await post(alice, `/api/v1/subscriptions/${sub.id}/deliveries/987654/replay`, {})).status).toBe(
        404,
      );
      await s.request('DELETE', `/api/v1/subscriptions/${sub.id}`, { token: alice });
    } finally {
      await r.close();
    }
  });

  it('TIME_LIMIT_50/80/90: each once per attempt, from the maintenance pass', async () => {
    const r = await receiver();
    try {
      const sub = (await (
        await post(alice, '/api/v1/subscriptions', { url: r.url, events: ['TIME_LIMIT'] })
      ).json()) as { id: number };
      const job = (await submit(alice, { time_limit: 10 })).job; // 600 s
      await db().execute(
        sql`UPDATE jobs SET state = 'RUNNING', node = 'n1', attempt = 1, start_time = now() - interval '500 s' WHERE id = ${job.id}`,
      );
      expect(await emitTimeLimitEvents(s.harness.ctx)).toBe(2); // 50 % and 80 %, not yet 90 %
      expect(await emitTimeLimitEvents(s.harness.ctx)).toBe(0);
      await db().execute(sql`UPDATE jobs SET start_time = now() - interval '550 s' WHERE id = ${job.id}`);
      expect(await emitTimeLimitEvents(s.harness.ctx)).toBe(1);
      // A new attempt warns again.
      await db().execute(sql`UPDATE jobs SET attempt = 2 WHERE id = ${job.id}`);
      expect(await emitTimeLimitEvents(s.harness.ctx)).toBe(3);
      await deliverAll();
      expect(r.received.map((x) => JSON.parse(x.body).type)).toEqual([
        'job.time_limit_50',
        'job.time_limit_80',
        'job.time_limit_90',
        'job.time_limit_50',
        'job.time_limit_80',
        'job.time_limit_90',
      ]);
      await db().execute(sql`UPDATE jobs SET state = 'CANCELLED', end_time = now() WHERE id = ${job.id}`);
      await s.request('DELETE', `/api/v1/subscriptions/${sub.id}`, { token: alice });
    } finally {
      await r.close();
    }
  });

  it('mail_type without an SMTP server: accepted with a Conductor-Warning, shown on the job, its mail skipped', async () => {
    const { job, res } = await submit(alice, { mail_type: 'ALL', mail_user: 'alice@example.com' });
    expect(res.headers.get('conductor-warning')).toContain('no SMTP server is configured');
    expect(job).toMatchObject({ mail_type: 'BEGIN,END,FAIL,REQUEUE', mail_user: 'alice@example.com' });
    const plain = await submit(alice);
    expect(plain.res.headers.get('conductor-warning')).toBeNull();
    await live(job.id, 'COMPLETED');
    await deliverAll();
    const rows = await query<{ recipient: string; state: string; last_error: string }>(
      db(),
      sql`SELECT d.recipient, d.state, d.last_error FROM notification_deliveries d
          JOIN notification_events e ON e.id = d.event_id WHERE e.job_id = ${job.id} ORDER BY d.id`,
    );
    expect(rows.map((x) => [x.recipient, x.state])).toEqual([
      ['alice@example.com', 'skipped'],
      ['alice@example.com', 'skipped'],
    ]);
    expect(rows[0]!.last_error).toContain('no SMTP server');
    for (const bad of ['BEGIN,SOMETIMES', 'WORKER_LOST']) {
      const refused = await post(alice, '/api/v1/jobs/submit', { script: 'true', cpus: 1, mail_type: bad });
      expect(refused.status).toBe(400);
    }
    const badUser = await post(alice, '/api/v1/jobs/submit', {
      script: 'true',
      cpus: 1,
      mail_user: 'a b <c>',
    });
    expect(badUser.status).toBe(400);
  });

  it('settled events older than the log retention are pruned with their deliveries; pending ones stay', async () => {
    const settled = (await submit(bob)).job;
    const owed = (await submit(bob)).job;
    const sub = (await (
      await post(bob, '/api/v1/subscriptions', { url: 'http://127.0.0.1:9/x', events: ['END'] })
    ).json()) as {
      id: number;
    };
    await live(settled.id, 'COMPLETED');
    await live(owed.id, 'COMPLETED');
    await db().execute(
      sql`UPDATE notification_deliveries SET state = 'delivered' WHERE event_id IN (SELECT id FROM notification_events WHERE job_id = ${settled.id})`,
    );
    await db().execute(
      sql`UPDATE notification_events SET created_at = now() - interval '31 days' WHERE job_id IN (${settled.id}, ${owed.id})`,
    );
    expect(await pruneNotificationEvents(s.harness.ctx)).toBe(1);
    const left = await query<{ job_id: string }>(
      db(),
      sql`SELECT job_id FROM notification_events WHERE job_id IN (${settled.id}, ${owed.id})`,
    );
    expect(left.map((r) => Number(r.job_id))).toEqual([owed.id]);
    await s.request('DELETE', `/api/v1/subscriptions/${sub.id}`, { token: bob });
  });

  it('nobody subscribed and no mail asked: state changes write no event', async () => {
    await db().execute(sql`DELETE FROM notification_subscriptions`);
    const before = await query<{ n: string }>(db(), sql`SELECT count(*) AS n FROM notification_events`);
    const job = (await submit(bob)).job;
    await live(job.id, 'FAILED');
    const after = await query<{ n: string }>(db(), sql`SELECT count(*) AS n FROM notification_events`);
    expect(Number(after[0]!.n)).toBe(Number(before[0]!.n));
  });
});
