import { mkdtempSync, readFileSync } from 'node:fs';
import http from 'node:http';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sql } from 'drizzle-orm';
import { Redis } from 'ioredis';
import { Miniflare, type MiniflareOptions, type WorkerOptions } from 'miniflare';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { queryOne } from '../../functions/domain/sql.ts';
import { AgentProcess, eventually } from '../support/agent-process.ts';
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

  /** Resolves with the next frame (from now) equal to `frame`, or that `frame` matches. */
  next(frame: string | ((f: string) => boolean), timeoutMs = 10_000): Promise<string> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no ${frame} within ${timeoutMs} ms`)), timeoutMs);
      this.waiters.push({
        match: typeof frame === 'string' ? (f) => f === frame : frame,
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

/** A switch in front of the Upstash bridge: while `down`, every request fails as an unreachable Upstash would. */
async function startSwitch(target: string): Promise<{ url: string; down: boolean; close(): Promise<void> }> {
  const state = { url: '', down: false, close: async () => {} };
  const server = http.createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    if (state.down) {
      res.writeHead(503, { 'content-type': 'application/json' }).end('{"error":"down"}');
      return;
    }
    const answer = await fetch(`${target}${req.url}`, {
      method: req.method ?? 'POST',
      headers: Object.fromEntries(
        Object.entries(req.headers).filter(([k, v]) => typeof v === 'string' && k !== 'host'),
      ) as Record<string, string>,
      body: Buffer.concat(chunks),
    });
    res
      .writeHead(answer.status, { 'content-type': 'application/json' })
      .end(Buffer.from(await answer.arrayBuffer()));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  state.url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  state.close = async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  };
  return state;
}

/** The touchWorkers script's SHA-1 (functions/registry/redis-store.ts): one command per heartbeat round. */
const TOUCH_WORKERS_SHA = '0a91ea10ae2eda90e7c0e0cd47c37764f1924dc3';

/** A wake, bare or carrying assignments. */
const isWake = (frame: string) => frame.startsWith('{"type":"wake"');
const REGISTER = JSON.stringify({ type: 'register' });

describe.runIf(available)('push channel on Workers (AgentChannel Durable Object)', () => {
  let database: TestDatabase;
  let bridge: UpstashBridge;
  let upstash: Awaited<ReturnType<typeof startSwitch>>;
  let proxy: Awaited<ReturnType<typeof startNeonProxy>>;
  let redis: Redis;
  let mf: Miniflare;
  let options: MiniflareOptions;
  let urls: [string, string];
  let agentToken: string;
  const clients: ChannelClient[] = [];
  const agents: AgentProcess[] = [];
  const runtimeLines: string[] = [];

  beforeAll(async () => {
    const bundle = bundleWorker();
    database = await createPostgresDatabase();
    redis = new Redis(REDIS_DB_URL);
    await redis.flushdb();
    bridge = await startUpstashBridge({ redisUrl: REDIS_DB_URL });
    upstash = await startSwitch(bridge.url);
    proxy = await startNeonProxy();
    const bindings = {
      DATABASE_URL: database.url!,
      UPSTASH_REDIS_REST_URL: upstash.url,
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
      // The runtime's log lines (the Worker's JSON logger), for the runbook's lines.
      handleRuntimeStdio(stdout: NodeJS.ReadableStream, stderr: NodeJS.ReadableStream) {
        for (const stream of [stdout, stderr]) {
          stream.on('data', (chunk: Buffer) => runtimeLines.push(...chunk.toString().split('\n')));
        }
      },
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
    await Promise.all(agents.map((a) => a.stop().catch(() => a.kill9())));
    await mf?.dispose();
    await proxy?.close();
    await upstash?.close();
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

  async function register(workerId: string, cpus = 2, url = urls[0], previous?: string): Promise<string> {
    const { status, body } = await api<{ session: string }>(
      '/api/v1/agents/register',
      {
        method: 'POST',
        token: agentToken,
        body: JSON.stringify({
          worker_id: workerId,
          hostname: `${workerId}.test`,
          cpus,
          ...(previous ? { previous_session: previous } : {}),
        }),
      },
      url,
    );
    expect(status).toBe(200);
    sessions.set(workerId, body.session);
    return body.session;
  }
  /** The latest session of each worker this file registered by hand. */
  const sessions = new Map<string, string>();

  /** Opens the channel: the client, or the refusal's status and body. */
  function connect(
    workerId: string,
    session: string,
    url = urls[0],
    token: string | null = agentToken,
  ): Promise<ChannelClient | { status: number; body: string }> {
    const target = `${url.replace(/^http/, 'ws')}/api/v1/agents/channel?worker_id=${encodeURIComponent(workerId)}&session=${encodeURIComponent(session)}`;
    const ws = new WebSocket(target, { headers: token ? { authorization: `Bearer ${token}` } : {} });
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

  it("opens only for the current session of the caller's worker: refusals are the JSON error envelope", async () => {
    const session = await register('ch-refused');
    const unknown = await connect('ch-nobody', session);
    expect(unknown).toMatchObject({ status: 404 });
    expect(JSON.parse((unknown as { body: string }).body).error.code).toBe('unknown_worker');
    const newer = await register('ch-refused', 2, urls[1], session);
    const superseded = await connect('ch-refused', session);
    expect(superseded).toMatchObject({ status: 409 });
    expect(JSON.parse((superseded as { body: string }).body).error.code).toBe('session_superseded');
    // Without the upgrade it is no channel; without a token, no access.
    const plain = await fetch(`${urls[0]}/api/v1/agents/channel?worker_id=ch-refused&session=${newer}`, {
      headers: { authorization: `Bearer ${agentToken}` },
    });
    expect(plain.status).toBe(400);
    expect(await connect('ch-refused', newer, urls[0], null)).toMatchObject({ status: 401 });
    const client = await connected('ch-refused', newer);
    client.close();
  });

  it('keeps connected idle workers live with one registry command per interval for all of them, no Postgres, pings answered without waking the object', async () => {
    const ids = ['ch-idle-1', 'ch-idle-2', 'ch-idle-3'];
    const idle = await Promise.all(
      ids.map(async (id) => {
        const client = await connected(id, await register(id));
        const pong = client.next('pong');
        client.startPinging();
        await pong;
        return client;
      }),
    );
    const postgresBefore = await Promise.all(ids.map(lastHeartbeat));
    const connectionsBefore = proxy.stats.connections;
    const before = await stats();
    const fieldBefore = await redis.hget('worker:ch-idle-1', 'last_heartbeat');
    const commandsBefore = bridge.commands.length;
    const started = Date.now();
    // Longer than the TTL: without refreshes the keys would expire.
    for (let i = 0; i < 7; i++) {
      await new Promise((resolve) => setTimeout(resolve, 1_000));
      for (const id of ids) expect(await redis.ttl(`worker:${id}`)).toBeGreaterThan(TTL_S - 3);
    }
    const seconds = (Date.now() - started) / 1000;
    expect(await redis.hget('worker:ch-idle-1', 'last_heartbeat')).not.toBe(fieldBefore);
    expect(await Promise.all(ids.map(lastHeartbeat))).toEqual(postgresBefore);
    expect(proxy.stats.connections).toBe(connectionsBefore);
    // Every Redis command of the window: one touchWorkers per round, carrying the three workers.
    const window = bridge.commands.slice(commandsBefore);
    const rounds = window.filter((c) => c.includes(TOUCH_WORKERS_SHA));
    expect(window.length).toBe(rounds.length);
    expect(rounds.length).toBeGreaterThanOrEqual(Math.floor(seconds) - 2);
    expect(rounds.length).toBeLessThanOrEqual(Math.ceil(seconds) + 1);
    for (const round of rounds) for (const id of ids) expect(round).toContain(id);
    const after = await stats();
    // One alarm a round; the pings (7 from each) never reached the object as messages.
    expect(after.alarms - before.alarms).toBeGreaterThanOrEqual(rounds.length);
    expect(after.messages).toBe(before.messages);
    for (const client of idle) {
      expect(client.frames.filter((f) => f === 'pong').length).toBeGreaterThanOrEqual(7);
      client.close();
    }
  }, 40_000);

  it('pushes a job submitted through the other isolate to its connected worker in the wake; its started report, with the session, is its claim', async () => {
    const session = await register('ch-push', 48);
    const client = await connected('ch-push', session, urls[0]);
    client.startPinging();
    const wake = client.next(isWake);
    const submitted = Date.now();
    // 48 CPUs: only this worker fits.
    const { status, body: job } = await api<{ id: number }>(
      '/api/v1/jobs/submit',
      { method: 'POST', body: JSON.stringify({ script: 'sleep 30', cpus: 48 }) },
      urls[1],
    );
    expect(status).toBe(201);
    const pushed = JSON.parse(await wake) as { jobs?: { job_id: number; attempt: number; script: string }[] };
    const wokenAfterMs = Date.now() - submitted;
    console.log(`submit (isolate b) -> wake on the socket (object of isolate a): ${wokenAfterMs} ms`);
    expect(pushed.jobs?.map((j) => [j.job_id, j.attempt, j.script])).toEqual([[job.id, 1, 'sleep 30']]);
    const started = await api(`/api/v1/agents/jobs/${job.id}/started`, {
      method: 'POST',
      token: agentToken,
      body: JSON.stringify({ worker_id: 'ch-push', attempt: 1, session }),
    });
    expect(started).toEqual({ status: 200, body: { state: 'RUNNING' } });
    const row = await queryOne<{ claimed_session: string | null }>(
      database.db,
      sql`SELECT claimed_session FROM jobs WHERE id = ${job.id}`,
    );
    expect(row?.claimed_session).toBe(session);
    expect((await api<{ state: string }>(`/api/v1/jobs/${job.id}`)).body.state).toBe('RUNNING');
    // Far below the long-poll's 200 ms look-again on another isolate, let alone a claim wait.
    expect(wokenAfterMs).toBeLessThan(2_000);
    await api(`/api/v1/jobs/${job.id}/cancel`, { method: 'POST' });
    client.close();
  }, 30_000);

  it('closes a socket that stopped pinging (4408); its key expires and the reaper declares the worker lost', async () => {
    const alive = await connected('ch-alive', await register('ch-alive'));
    alive.startPinging();
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
    // The pinging worker, whose Postgres heartbeat is as old, is live by its key and stays.
    const other = await queryOne<{ status: string; silent_s: number }>(
      database.db,
      sql`SELECT status, extract(epoch FROM now() - last_heartbeat)::float8 AS silent_s FROM workers WHERE id = 'ch-alive'`,
    );
    expect(other?.silent_s).toBeGreaterThan(TTL_S);
    expect(other?.status).toBe('ready');
    alive.close();
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

  it("writes the connected workers' heartbeats to Postgres in one statement while the registry is down", async () => {
    const client = await connected('ch-fallback', await register('ch-fallback'));
    client.startPinging();
    await client.next('pong');
    const before = await lastHeartbeat('ch-fallback');
    upstash.down = true;
    try {
      await eventually(async () => (await lastHeartbeat('ch-fallback')) !== before, {
        timeoutMs: 5_000,
        what: 'a Postgres heartbeat',
      });
    } finally {
      upstash.down = false;
    }
    client.close();
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
    const wake = again.next(isWake);
    const { body: job } = await api<{ id: number }>(
      '/api/v1/jobs/submit',
      { method: 'POST', body: JSON.stringify({ script: 'true', cpus: 40 }) },
      urls[0],
    );
    await wake;
    await api(`/api/v1/jobs/${job.id}/cancel`, { method: 'POST' });
    again.close();
  }, 60_000);

  it("with two shards, a worker's socket and the pushes for it meet in its shard", async () => {
    const sharded = {
      ...options,
      workers: (options.workers as WorkerOptions[]).map((w) => ({
        ...w,
        bindings: { ...w.bindings, CONDUCTOR_CHANNEL_SHARDS: '2' },
      })),
    } as MiniflareOptions;
    await mf.setOptions(sharded);
    try {
      // ch-shard-a hashes to shard 1, ch-shard-b to shard 0.
      const pair = await Promise.all(
        [
          ['ch-shard-a', 30],
          ['ch-shard-b', 31],
        ].map(async ([id, cpus]) => {
          const client = await connected(id as string, await register(id as string, cpus as number));
          client.startPinging();
          return client;
        }),
      );
      for (const [i, cpus] of [30, 31].entries()) {
        const wake = pair[i]!.next(isWake);
        const { body: job } = await api<{ id: number }>(
          '/api/v1/jobs/submit',
          { method: 'POST', body: JSON.stringify({ script: 'true', cpus }) },
          urls[1],
        );
        await wake;
        await api(`/api/v1/jobs/${job.id}/cancel`, { method: 'POST' });
      }
      // The other socket got no wake: each push went to one shard.
      expect(pair[0]!.frames.filter(isWake)).toHaveLength(1);
      expect(pair[1]!.frames.filter(isWake)).toHaveLength(1);
      // Both objects run their alarm rounds, each refreshing its own worker: both keys outlive the TTL.
      const commandsBefore = bridge.commands.length;
      await new Promise((resolve) => setTimeout(resolve, (TTL_S + 1) * 1000));
      for (const id of ['ch-shard-a', 'ch-shard-b']) expect(await redis.exists(`worker:${id}`)).toBe(1);
      const rounds = bridge.commands.slice(commandsBefore).filter((c) => c.includes(TOUCH_WORKERS_SHA));
      for (const round of rounds) {
        expect(round.includes('ch-shard-a') !== round.includes('ch-shard-b')).toBe(true);
      }
      expect(rounds.filter((r) => r.includes('ch-shard-a')).length).toBeGreaterThanOrEqual(TTL_S - 1);
      expect(rounds.filter((r) => r.includes('ch-shard-b')).length).toBeGreaterThanOrEqual(TTL_S - 1);
      for (const client of pair) client.close();
    } finally {
      await mf.setOptions(options);
    }
  }, 40_000);

  it('sets no alarm while no socket is open', async () => {
    const client = await connected('ch-last', await register('ch-last'));
    client.startPinging();
    const first = await stats();
    await new Promise((resolve) => setTimeout(resolve, 2_500));
    expect((await stats()).alarms).toBeGreaterThan(first.alarms);
    client.close();
    // The round after the close finds no open socket and sets none.
    await new Promise((resolve) => setTimeout(resolve, 2 * INTERVAL_S * 1000));
    const idle = await stats();
    await new Promise((resolve) => setTimeout(resolve, 3 * INTERVAL_S * 1000));
    expect((await stats()).alarms).toBe(idle.alarms);
  }, 20_000);

  it('real agents on the channel: the runtime restarts (every socket and the object dropped) while jobs are being assigned; every job starts exactly once and every result arrives', async () => {
    // The hand-played workers leave: jobs go to the real agents only.
    for (const [workerId, session] of sessions) {
      await api('/api/v1/agents/unregister', {
        method: 'POST',
        token: agentToken,
        body: JSON.stringify({ worker_id: workerId, session }),
      });
    }
    const ids = ['ch-agent-1', 'ch-agent-2', 'ch-agent-3'];
    const started = ids.map(
      (id, i) =>
        new AgentProcess(id, urls[i % 2]!, {
          cpus: 2,
          env: { CONDUCTOR_TOKEN: agentToken, CONDUCTOR_CHANNEL_RECONNECT_WINDOW: '1' },
        }),
    );
    agents.push(...started);
    await Promise.all(started.map((a) => a.waitForLine(/Channel open/)));
    const dir = mkdtempSync(join(tmpdir(), 'channel-starts-'));
    const starts = join(dir, 'starts');
    // 1 CPU each, 6 slots: the 24 jobs are placed over several rounds, as slots free.
    const script = (n: number) =>
      `echo "$SLURM_JOB_ID $CONDUCTOR_ATTEMPT" >> ${starts}; sleep 0.5; echo "result ${n}"`;
    const submitted: { id: number; n: number }[] = [];
    const submit = async (n: number) => {
      const { status, body } = await api<{ id: number }>(
        '/api/v1/jobs/submit',
        { method: 'POST', body: JSON.stringify({ script: script(n), cpus: 1 }) },
        urls[n % 2],
      );
      expect(status).toBe(201);
      submitted.push({ id: body.id, n });
    };
    for (let n = 0; n < 12; n++) await submit(n);
    // Mid-flight: jobs running, others placed and being pushed, the rest pending.
    await new Promise((resolve) => setTimeout(resolve, 400));
    const done = await Promise.all(
      submitted.map(async (j) => (await api<{ state: string }>(`/api/v1/jobs/${j.id}`)).body.state),
    );
    expect(done.filter((state) => state === 'COMPLETED').length).toBeLessThan(12);
    await mf.setOptions(options);
    for (let n = 12; n < 24; n++) await submit(n);
    await eventually(
      async () => {
        const states = await Promise.all(
          submitted.map(async (j) => (await api<{ state: string }>(`/api/v1/jobs/${j.id}`)).body.state),
        );
        return states.every((state) => state === 'COMPLETED');
      },
      { timeoutMs: 60_000, intervalMs: 500, what: 'every job to complete' },
    );
    const lines = readFileSync(starts, 'utf8').trim().split('\n');
    expect(lines.sort()).toEqual(submitted.map((j) => `${j.id} 1`).sort());
    for (const job of submitted) {
      const logs = await api<{ stdout: { content: string } }>(`/api/v1/jobs/${job.id}/logs`);
      expect(logs.body.stdout.content).toBe(`result ${job.n}\n`);
    }
    // Each agent comes back to the channel after the restart (within its reconnect back-off).
    for (const agent of started) {
      await eventually(() => agent.lines.filter((l) => /Channel open/.test(l)).length >= 2, {
        timeoutMs: 30_000,
        what: `${agent.nodeName} back on the channel:\n${agent.lines.join('\n')}`,
      });
    }
  }, 120_000);

  it('a real agent whose socket silently dies (process stopped, TCP open) is declared lost within TTL + one reap; its job ends NODE_FAIL', async () => {
    const agent = new AgentProcess('ch-frozen', urls[0]!, {
      cpus: 3,
      env: { CONDUCTOR_TOKEN: agentToken, CONDUCTOR_CHANNEL_RECONNECT_WINDOW: '1' },
    });
    agents.push(agent);
    await agent.waitForLine(/Channel open/);
    // 3 CPUs: only this agent fits.
    const { body: job } = await api<{ id: number }>('/api/v1/jobs/submit', {
      method: 'POST',
      body: JSON.stringify({ script: 'sleep 30', cpus: 3 }),
    });
    await eventually(
      async () => (await api<{ state: string }>(`/api/v1/jobs/${job.id}`)).body.state === 'RUNNING',
      { what: 'the job to run' },
    );
    agent.child.kill('SIGSTOP');
    const frozen = Date.now();
    try {
      // Its last ping is at most an interval old: the object stops refreshing the key within two
      // intervals, the key's TTL runs out, and one reap declares the worker lost.
      await eventually(async () => (await redis.exists('worker:ch-frozen')) === 0, {
        timeoutMs: (TTL_S + 3 * INTERVAL_S) * 1000 + 2_000,
        intervalMs: 200,
        what: 'the frozen worker key to expire',
      });
      const expiredAfterMs = Date.now() - frozen;
      await fireCron(mf, '* * * * *');
      const worker = await queryOne<{ status: string }>(
        database.db,
        sql`SELECT status FROM workers WHERE id = 'ch-frozen'`,
      );
      expect(worker?.status).toBe('down');
      expect((await api<{ state: string }>(`/api/v1/jobs/${job.id}`)).body.state).toBe('NODE_FAIL');
      expect(expiredAfterMs).toBeLessThan((TTL_S + 3 * INTERVAL_S) * 1000 + 1_000);
    } finally {
      await agent.kill9();
    }
  }, 60_000);

  it("the runbook's statistics line on an idle cluster: the minute cron prints it from the registry without Postgres, and a worker that stops pinging leaves it when its key expires", async () => {
    // The keys of the tests before expire (their clients and agents are gone), and nothing is pending or
    // running: an idle cluster.
    await new Promise((resolve) => setTimeout(resolve, (TTL_S + 1) * 1000));
    const pinging = await Promise.all(
      ['ch-stats-1', 'ch-stats-2'].map(async (id, i) => {
        const client = await connected(id, await register(id, 8 * (i + 1)));
        client.startPinging();
        return client;
      }),
    );
    const liveLine = async () => {
      const ids = (await redis.keys('worker:*')).map((k) => k.slice('worker:'.length)).sort();
      let cpus = 0;
      for (const id of ids) cpus += Number(await redis.hget(`worker:${id}`, 'cpus'));
      return `Active workers: ${ids.length}, Total CPUs: ${cpus}`;
    };
    const lastStatsLine = () => runtimeLines.filter((l) => l.includes('Active workers:')).at(-1) ?? '';
    // The first crons after the registrations look (they were activity), find nothing to do, mark quiet;
    // the first cache sync fills the cache from Postgres.
    await fireCron(mf, '* * * * *');
    await fireCron(mf, '*/5 * * * *');
    // A quiet cron prints the registry's figures and sends Postgres nothing. (On a loaded machine a key of an
    // earlier test may lapse between two crons: that cron rightly wakes the reaper, so try a few.)
    let quietLine = '';
    let connectionsBefore = 0;
    for (let attempt = 0; attempt < 5; attempt++) {
      connectionsBefore = proxy.stats.connections;
      quietLine = await liveLine();
      await fireCron(mf, '* * * * *');
      await eventually(() => lastStatsLine().includes(quietLine), { timeoutMs: 2_000 }).catch(() => {});
      if (lastStatsLine().includes(quietLine) && proxy.stats.connections === connectionsBefore) break;
    }
    expect(lastStatsLine()).toContain(quietLine);
    expect(proxy.stats.connections).toBe(connectionsBefore); // Postgres asleep
    // The cache sync skips too: nothing allocated, the cluster quiet.
    await fireCron(mf, '*/5 * * * *');
    expect(proxy.stats.connections).toBe(connectionsBefore);
    expect(await redis.exists('worker:ch-stats-2')).toBe(1);

    // Scale down: one stops pinging (its socket stays open: silent). Its key expires; the next cron sees the
    // expired key, runs the backstop (the reaper) and prints the smaller line.
    pinging[1]!.stopPinging();
    await eventually(async () => (await redis.exists('worker:ch-stats-2')) === 0, {
      timeoutMs: 3 * TTL_S * 1000,
      what: 'the silent worker key expiring',
    });
    const smaller = await liveLine();
    expect(smaller).not.toBe(quietLine);
    await fireCron(mf, '* * * * *');
    await eventually(() => lastStatsLine().includes(smaller), { what: smaller });
    expect(proxy.stats.connections).toBeGreaterThan(connectionsBefore); // the reaper's pass
    for (const client of pinging) client.close();
  }, 60_000);
});
