import { createServer } from 'node:net';
import { sql } from 'drizzle-orm';
import { Redis } from 'ioredis';
import { Miniflare, type MiniflareOptions } from 'miniflare';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { queryOne } from '../../functions/domain/sql.ts';
import { eventually } from '../support/agent-process.ts';
import { createPostgresDatabase, type TestDatabase } from '../support/databases.ts';
import { startNeonProxy } from '../support/neon-proxy.ts';
import { serviceAvailable } from '../support/services.ts';
import { startUpstashBridge, type UpstashBridge } from '../support/upstash-bridge.ts';
import { bundleWorker, workerModules } from '../support/worker-bundle.ts';

/**
 * The agents' push channel on Workers: the AgentChannel Durable Object in workerd (Miniflare), bundled by
 * wrangler. Two Workers ("a" and "b": two isolates, as two Cloudflare colos' isolates would be) share the
 * one object namespace, as every isolate of a deployment does; each has its own port. Agents are played by a
 * `ws` client speaking the wire protocol (ping/pong, wake, register). Redis database 11 is this file's.
 */
const available = (await serviceAvailable('postgres')) && (await serviceAvailable('redis'));
const REDIS_DB_URL = 'redis://127.0.0.1:6379/11';
const ADMIN_TOKEN = 'channel-admin-token-0123456789abcdefghijkl';
const TTL_S = 5;
const INTERVAL_S = 1;

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** Runs worker "a"'s scheduled handler as a cron trigger would. */
async function fireCron(mf: Miniflare, cron: string): Promise<void> {
  const worker = (await mf.getWorker('a')) as unknown as {
    scheduled(options: { cron: string }): Promise<unknown>;
  };
  await worker.scheduled({ cron });
}

/** An agent's end of the channel: the frames it received, and how the server closed it. */
class ChannelClient {
  readonly frames: string[] = [];
  readonly closed: Promise<{ code: number; reason: string }>;
  private waiters: { match: (frame: string) => boolean; resolve: (frame: string) => void }[] = [];
  private pinger?: NodeJS.Timeout;

  constructor(readonly ws: WebSocket) {
    ws.on('message', (data) => {
      const frame = data.toString();
      this.frames.push(frame);
      this.waiters = this.waiters.filter((w) => {
        if (!w.match(frame)) return true;
        w.resolve(frame);
        return false;
      });
    });
    this.closed = new Promise((resolve) =>
      ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() })),
    );
    // workerd ends the TCP connection some 10 s after a server-initiated close handshake completes, and
    // ws reports the close only then: once the close frame is in (CLOSING), end the connection here.
    const watch = setInterval(() => {
      if (ws.readyState === WebSocket.CLOSING) ws.terminate();
      if (ws.readyState === WebSocket.CLOSED) clearInterval(watch);
    }, 20);
  }

  /** Resolves with the next frame (from now) equal to `frame`. */
  next(frame: string, timeoutMs = 10_000): Promise<string> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no ${frame} within ${timeoutMs} ms`)), timeoutMs);
      this.waiters.push({
        match: (f) => f === frame,
        resolve: (f) => {
          clearTimeout(timer);
          resolve(f);
        },
      });
    });
  }

  /** Pings every interval, as an agent does. */
  startPinging(): void {
    this.ws.send('ping');
    this.pinger = setInterval(() => this.ws.send('ping'), INTERVAL_S * 1000);
  }

  stopPinging(): void {
    clearInterval(this.pinger);
  }

  close(): void {
    this.stopPinging();
    this.ws.terminate();
  }
}

const WAKE = JSON.stringify({ type: 'wake' });
const REGISTER = JSON.stringify({ type: 'register' });

describe.runIf(available)('push channel on Workers (AgentChannel Durable Object)', () => {
  let database: TestDatabase;
  let bridge: UpstashBridge;
  let proxy: Awaited<ReturnType<typeof startNeonProxy>>;
  let redis: Redis;
  let mf: Miniflare;
  let options: MiniflareOptions;
  let urls: [string, string];
  let agentToken: string;
  const clients: ChannelClient[] = [];

  beforeAll(async () => {
    const bundle = bundleWorker();
    database = await createPostgresDatabase();
    redis = new Redis(REDIS_DB_URL);
    await redis.flushdb();
    bridge = await startUpstashBridge({ redisUrl: REDIS_DB_URL });
    proxy = await startNeonProxy();
    const bindings = {
      DATABASE_URL: database.url!,
      UPSTASH_REDIS_REST_URL: bridge.url,
      UPSTASH_REDIS_REST_TOKEN: bridge.token,
      NEON_WS_PROXY: proxy.url,
      CONDUCTOR_WORKER_TTL: String(TTL_S),
      CONDUCTOR_HEARTBEAT_INTERVAL: String(INTERVAL_S),
      CONDUCTOR_CLAIM_WAIT: '2',
      CONDUCTOR_CLAIM_POLL_MS: '200',
      CONDUCTOR_COUNT_EVENTS: '1',
      ADMIN_TOKEN,
    };
    // Fixed ports, so that a restarted runtime (setOptions) answers where the agents reconnect.
    const ports = [await freePort(), await freePort()];
    const worker = (name: string, port: number, scriptName?: string) => ({
      name,
      ...workerModules(bundle),
      bindings,
      durableObjects: {
        AGENT_CHANNEL: { className: 'AgentChannel', useSQLite: true, ...(scriptName ? { scriptName } : {}) },
      },
      unsafeDirectSockets: [{ host: '127.0.0.1', port }],
    });
    options = {
      host: '127.0.0.1',
      port: 0,
      workers: [worker('a', ports[0]!), worker('b', ports[1]!, 'a')],
    };
    mf = new Miniflare(options);
    await mf.ready;
    urls = [
      (await mf.unsafeGetDirectURL('a')).toString().replace(/\/$/, ''),
      (await mf.unsafeGetDirectURL('b')).toString().replace(/\/$/, ''),
    ];
    const created = await api<{ token: string }>('/api/v1/tokens', {
      method: 'POST',
      body: JSON.stringify({ name: 'channel-agents', scopes: ['agent'] }),
    });
    expect(created.status).toBe(201);
    agentToken = created.body.token;
    // The reaper's clock starts with its first pass (then one TTL of grace): start it now.
    await fireCron(mf, '* * * * *');
  }, 120_000);

  afterAll(async () => {
    for (const client of clients) client.close();
    await mf?.dispose();
    await proxy?.close();
    await bridge?.close();
    await redis?.flushdb();
    await redis?.quit();
    await database?.close();
  });

  async function api<T>(
    path: string,
    init?: RequestInit & { token?: string },
    url = urls[0],
  ): Promise<{ status: number; body: T }> {
    const res = await fetch(`${url}${path}`, {
      ...init,
      headers: {
        'content-type': 'application/json',
        authorization: `Bearer ${init?.token ?? ADMIN_TOKEN}`,
        ...(init?.headers ?? {}),
      },
    });
    return { status: res.status, body: (await res.json()) as T };
  }

  async function register(workerId: string, cpus = 2, url = urls[0]): Promise<string> {
    const { status, body } = await api<{ session: string }>(
      '/api/v1/agents/register',
      {
        method: 'POST',
        token: agentToken,
        body: JSON.stringify({ worker_id: workerId, hostname: `${workerId}.test`, cpus }),
      },
      url,
    );
    expect(status).toBe(200);
    return body.session;
  }

  /** Opens the channel: the client, or the refusal's status and body. */
  function connect(
    workerId: string,
    session: string,
    url = urls[0],
  ): Promise<ChannelClient | { status: number; body: string }> {
    const target = `${url.replace(/^http/, 'ws')}/api/v1/agents/channel?worker_id=${encodeURIComponent(workerId)}&session=${encodeURIComponent(session)}`;
    const ws = new WebSocket(target, { headers: { authorization: `Bearer ${agentToken}` } });
    return new Promise((resolve, reject) => {
      ws.once('open', () => {
        const client = new ChannelClient(ws);
        clients.push(client);
        resolve(client);
      });
      ws.once('unexpected-response', (_req, res) => {
        let body = '';
        res.on('data', (chunk: Buffer) => {
          body += chunk.toString();
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      });
      ws.once('error', reject);
    });
  }

  async function connected(workerId: string, session: string, url = urls[0]): Promise<ChannelClient> {
    const client = await connect(workerId, session, url);
    if (!(client instanceof ChannelClient)) {
      throw new Error(`channel refused: ${client.status} ${client.body}`);
    }
    return client;
  }

  const lastHeartbeat = async (workerId: string): Promise<string> => {
    const row = await queryOne<{ last_heartbeat: string }>(
      database.db,
      sql`SELECT last_heartbeat::text AS last_heartbeat FROM workers WHERE id = ${workerId}`,
    );
    return row!.last_heartbeat;
  };

  const stats = async () =>
    (await api<{ requests: number; messages: number; alarms: number; wakeups: number }>('/__channel/stats'))
      .body;

  it('keeps a connected idle worker live with one registry call per interval, no Postgres, pings answered without waking the object', async () => {
    const session = await register('ch-idle');
    const client = await connected('ch-idle', session);
    const pong = client.next('pong');
    client.startPinging();
    await pong;
    const postgresBefore = await lastHeartbeat('ch-idle');
    const connectionsBefore = proxy.stats.connections;
    const before = await stats();
    const fieldBefore = await redis.hget('worker:ch-idle', 'last_heartbeat');
    // Longer than the TTL: without refreshes the key would expire.
    for (let i = 0; i < 7; i++) {
      await new Promise((resolve) => setTimeout(resolve, 1_000));
      expect(await redis.ttl('worker:ch-idle')).toBeGreaterThan(TTL_S - 3);
    }
    expect(await redis.hget('worker:ch-idle', 'last_heartbeat')).not.toBe(fieldBefore);
    expect(await lastHeartbeat('ch-idle')).toBe(postgresBefore);
    expect(proxy.stats.connections).toBe(connectionsBefore);
    const after = await stats();
    // ~7 alarms; the pings (7 of them) never reached the object as messages.
    expect(after.alarms - before.alarms).toBeGreaterThanOrEqual(5);
    expect(after.messages).toBe(before.messages);
    expect(client.frames.filter((f) => f === 'pong').length).toBeGreaterThanOrEqual(7);
    client.close();
  }, 30_000);

  it('pushes a wake to a connected worker for a job submitted through the other isolate; the worker claims and starts it', async () => {
    const session = await register('ch-push', 48);
    const client = await connected('ch-push', session, urls[0]);
    client.startPinging();
    const wake = client.next(WAKE);
    const submitted = Date.now();
    // 48 CPUs: only this worker fits.
    const { status, body: job } = await api<{ id: number }>(
      '/api/v1/jobs/submit',
      { method: 'POST', body: JSON.stringify({ script: 'sleep 30', cpus: 48 }) },
      urls[1],
    );
    expect(status).toBe(201);
    await wake;
    const wokenAfterMs = Date.now() - submitted;
    const claim = await api<{ jobs: { job_id: number; attempt: number }[] }>('/api/v1/agents/claim', {
      method: 'POST',
      token: agentToken,
      body: JSON.stringify({ worker_id: 'ch-push', session, wait_s: 0 }),
    });
    expect(claim.body.jobs.map((j) => j.job_id)).toEqual([job.id]);
    const started = await api(`/api/v1/agents/jobs/${job.id}/started`, {
      method: 'POST',
      token: agentToken,
      body: JSON.stringify({ worker_id: 'ch-push', attempt: claim.body.jobs[0]!.attempt }),
    });
    expect(started.status).toBe(200);
    expect((await api<{ state: string }>(`/api/v1/jobs/${job.id}`)).body.state).toBe('RUNNING');
    // Far below the long-poll's 200 ms look-again on another isolate, let alone a claim wait.
    expect(wokenAfterMs).toBeLessThan(2_000);
    await api(`/api/v1/jobs/${job.id}/cancel`, { method: 'POST' });
    client.close();
  }, 30_000);

  it('closes a socket that stopped pinging (4408); its key expires and the reaper declares the worker lost', async () => {
    const session = await register('ch-silent');
    const client = await connected('ch-silent', session);
    const opened = Date.now();
    // No ping at all: the TCP connection stays open, the agent is silent.
    const { code } = await client.closed;
    const closedAfterMs = Date.now() - opened;
    expect(code).toBe(4408);
    expect(closedAfterMs).toBeLessThan((TTL_S + 2 * INTERVAL_S) * 1000 + 1_000);
    await eventually(async () => (await redis.exists('worker:ch-silent')) === 0, {
      timeoutMs: (TTL_S + 2) * 1000,
      what: 'the key to expire',
    });
    await fireCron(mf, '* * * * *');
    const row = await queryOne<{ status: string }>(
      database.db,
      sql`SELECT status FROM workers WHERE id = 'ch-silent'`,
    );
    expect(row?.status).toBe('down');
  }, 30_000);

  it('a second socket of the same worker supersedes the first (4409); register is asked of a worker whose key is gone', async () => {
    const session = await register('ch-twice');
    const first = await connected('ch-twice', session);
    const second = await connected('ch-twice', session, urls[1]);
    expect((await first.closed).code).toBe(4409);
    second.startPinging();
    await second.next('pong');
    const reregister = second.next(REGISTER);
    await redis.del('worker:ch-twice');
    await reregister;
    second.close();
  }, 20_000);

  it('a restarted runtime drops every socket; a reconnected agent is woken again', async () => {
    const session = await register('ch-restart', 40);
    const client = await connected('ch-restart', session);
    client.startPinging();
    await client.next('pong');
    const restarted = Date.now();
    await mf.setOptions(options);
    const { code } = await client.closed;
    console.log('restart close code', code, Date.now() - restarted);
    const again = await connected('ch-restart', session, urls[1]);
    again.startPinging();
    await again.next('pong');
    const wake = again.next(WAKE);
    const { body: job } = await api<{ id: number }>(
      '/api/v1/jobs/submit',
      { method: 'POST', body: JSON.stringify({ script: 'true', cpus: 40 }) },
      urls[0],
    );
    await wake;
    await api(`/api/v1/jobs/${job.id}/cancel`, { method: 'POST' });
    again.close();
  }, 60_000);
});
