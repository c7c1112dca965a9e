import { execFileSync } from 'node:child_process';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { eventually } from '../support/agent-process.ts';
import { createPostgresDatabase, type TestDatabase } from '../support/databases.ts';
import { freePort, ServerProcess } from '../support/server-process.ts';
import { serviceAvailable } from '../support/services.ts';

/**
 * The push channel on the Node server, with two server processes on one Postgres and one Redis (how
 * self-hosters outgrow one machine): agents' sockets are split between them, and a placement decided in one
 * reaches an agent connected to the other. The agents here speak the wire protocol with the `ws` client, so
 * that each step can be observed; test/e2e/channel-agents.test.ts runs the real agent.
 */
const available = (await serviceAvailable('postgres')) && (await serviceAvailable('redis'));
const REDIS_DB = '12';

interface Registered {
  worker_id: string;
  session: string;
  /** The agent token the open local cluster hands an agent that registers without one. */
  token: string;
}

class ChannelClient {
  readonly messages: string[] = [];
  readonly socket: WebSocket;
  readonly opened: Promise<void>;
  closedWith: number | undefined;

  constructor(base: string, worker: Registered) {
    const url = `${base.replace(/^http/, 'ws')}/api/v1/agents/channel?worker_id=${worker.worker_id}&session=${worker.session}`;
    this.socket = new WebSocket(url, { headers: { authorization: `Bearer ${worker.token}` } });
    this.socket.on('message', (data) => this.messages.push(data.toString()));
    this.socket.on('close', (code) => {
      this.closedWith = code;
    });
    this.opened = new Promise((resolve, reject) => {
      this.socket.once('open', () => resolve());
      this.socket.once('error', reject);
    });
  }

  ping() {
    this.socket.send('ping');
  }

  /** The wakes received, bare or with assignments. */
  wakes(): { type: 'wake'; jobs?: { job_id: number; attempt: number }[] }[] {
    return this.messages.filter((m) => m.startsWith('{"type":"wake"')).map((m) => JSON.parse(m));
  }
}

describe.runIf(available)('push channel on Node (two server processes)', () => {
  let database: TestDatabase;
  const servers: ServerProcess[] = [];
  const clients: ChannelClient[] = [];
  let redis: Redis;
  const psql = (statement: string) =>
    execFileSync('psql', [database.url!, '-Atc', statement], { encoding: 'utf8' }).trim();

  const post = async (base: string, path: string, body: unknown, token?: string) => {
    const response = await fetch(`${base}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
      body: JSON.stringify(body),
    });
    return { status: response.status, body: (await response.json()) as Record<string, unknown> };
  };
  const register = async (base: string, id: string, cpus: number): Promise<Registered> => {
    const { status, body } = await post(base, '/api/v1/agents/register', {
      worker_id: id,
      hostname: id,
      cpus,
    });
    expect(status).toBe(200);
    return { worker_id: id, session: String(body.session), token: String(body.token) };
  };
  const connect = async (base: string, worker: Registered) => {
    const client = new ChannelClient(base, worker);
    clients.push(client);
    await client.opened;
    return client;
  };

  beforeAll(async () => {
    database = await createPostgresDatabase();
    redis = new Redis(`redis://127.0.0.1:6379/${REDIS_DB}`);
    await redis.flushdb();
    for (let i = 0; i < 2; i++) {
      const server = new ServerProcess(await freePort(), {
        DATABASE_URL: database.url!,
        REDIS_URL: `redis://127.0.0.1:6379/${REDIS_DB}`,
        CONDUCTOR_EMBEDDED_AGENT: '0',
        CONDUCTOR_WORKER_TTL: '4',
        CONDUCTOR_HEARTBEAT_INTERVAL: '1',
        CONDUCTOR_SCHEDULE_INTERVAL: '1',
      });
      servers.push(server);
    }
    await Promise.all(servers.map((s) => s.ready()));
  });
  afterAll(async () => {
    for (const client of clients) client.socket.terminate();
    await Promise.all(servers.map((s) => s.stop()));
    await redis?.flushdb();
    redis?.disconnect();
    await database?.close();
  });

  it('opens only for the current session of a registered worker, and never for a browser page', async () => {
    const [a] = servers;
    const worker = await register(a!.url, 'node-gate', 2);
    const refusal = (url: string, headers: Record<string, string> = {}) =>
      new Promise<number>((resolve) => {
        const socket = new WebSocket(url, {
          headers: { authorization: `Bearer ${worker.token}`, ...headers },
        });
        socket.on('unexpected-response', (_request, response) => resolve(response.statusCode ?? 0));
        socket.on('open', () => {
          socket.terminate();
          resolve(101);
        });
        socket.on('error', () => {});
      });
    const base = `${a!.url.replace(/^http/, 'ws')}/api/v1/agents/channel`;
    expect(await refusal(`${base}?worker_id=node-gate&session=wrong`)).toBe(409);
    expect(await refusal(`${base}?worker_id=nobody&session=x`)).toBe(404);
    expect(await refusal(`${base}?worker_id=node-gate`)).toBe(400);
    expect(
      await refusal(`${base}?worker_id=node-gate&session=${worker.session}`, {
        origin: 'http://evil.example',
      }),
    ).toBe(403);
    const plain = await fetch(
      `${a!.url}/api/v1/agents/channel?worker_id=node-gate&session=${worker.session}`,
      { headers: { authorization: `Bearer ${worker.token}` } },
    );
    expect(plain.status).toBe(400);
    expect(await refusal(`${base}?worker_id=node-gate&session=${worker.session}`)).toBe(101);
  });

  it('answers pings, and a connected worker stays live from its pings alone: its key is refreshed, Postgres is not written', async () => {
    const [a] = servers;
    const worker = await register(a!.url, 'node-idle', 2);
    const client = await connect(a!.url, worker);
    const registeredAt = psql(`SELECT last_heartbeat FROM workers WHERE id = 'node-idle'`);
    const pinger = setInterval(() => client.ping(), 500);
    try {
      await eventually(() => expect(client.messages).toContain('pong'));
      // Three TTLs of pings: the key (TTL 4 s) must have been refreshed by the hub to still exist.
      await new Promise((resolve) => setTimeout(resolve, 12_000));
      expect(await redis.exists('worker:node-idle')).toBe(1);
      expect(await redis.ttl('worker:node-idle')).toBeGreaterThan(0);
      expect(psql(`SELECT last_heartbeat FROM workers WHERE id = 'node-idle'`)).toBe(registeredAt);
      expect(psql(`SELECT status || ',' || channel FROM workers WHERE id = 'node-idle'`)).toBe('ready,true');
      // The contract's capacity figure counts it, from Postgres (workers.channel) as from the registry.
      const dashboard = (await (await fetch(`${a!.url}/api/v1/dashboard`)).json()) as {
        resources: { total_cpus: number };
        workers: { worker_id: string }[];
      };
      expect(dashboard.workers.map((w) => w.worker_id)).toContain('node-idle');
      expect(dashboard.resources.total_cpus).toBeGreaterThanOrEqual(2);
    } finally {
      clearInterval(pinger);
    }
  });

  it('pushes a placement decided in one server process to the agent connected to the other, the assignment in the wake', async () => {
    const [a, b] = servers;
    // Only the big node fits the job; its agent's socket is on server B, the job is submitted to server A.
    const big = await register(b!.url, 'node-big', 64);
    const client = await connect(b!.url, big);
    const pinger = setInterval(() => client.ping(), 500);
    try {
      const before = client.wakes().length;
      const submitted = await post(a!.url, '/api/v1/jobs/submit', { script: '#!/bin/sh\ntrue\n', cpus: 48 });
      expect(submitted.status).toBe(201);
      await eventually(() => expect(client.wakes().length).toBeGreaterThan(before), { timeoutMs: 5_000 });
      const wake = client.wakes()[before]!;
      expect(wake.jobs?.map((j) => j.job_id)).toEqual([Number(submitted.body.id)]);
      // The very assignment a claim answers with (a claim still hands it out until it is reported started).
      const claim = await post(
        b!.url,
        '/api/v1/agents/claim',
        { worker_id: big.worker_id, session: big.session, wait_s: 0 },
        big.token,
      );
      expect(claim.body.jobs).toEqual(wake.jobs);
      expect(claim.body.status).toBe('ready');
    } finally {
      clearInterval(pinger);
    }
  });

  it('a wake too large to carry its assignments goes bare; the claim brings them', async () => {
    const [a, b] = servers;
    const worker = await register(b!.url, 'node-large', 40);
    const client = await connect(b!.url, worker);
    const before = client.wakes().length;
    const script = `#!/bin/sh\n# ${'x'.repeat(70 * 1024)}\ntrue\n`;
    const submitted = await post(a!.url, '/api/v1/jobs/submit', { script, cpus: 40 });
    expect(submitted.status).toBe(201);
    await eventually(() => expect(client.wakes().length).toBeGreaterThan(before), { timeoutMs: 5_000 });
    expect(client.wakes()[before]).toEqual({ type: 'wake' });
    const claim = await post(
      b!.url,
      '/api/v1/agents/claim',
      { worker_id: worker.worker_id, session: worker.session, wait_s: 0 },
      worker.token,
    );
    expect(
      (claim.body.jobs as { job_id: number; script: string }[]).map((j) => [j.job_id, j.script]),
    ).toEqual([[Number(submitted.body.id), script]]);
  });

  it('pushes a drain, and the claim the wake makes tells the agent it is draining', async () => {
    const [a, b] = servers;
    const worker = await register(a!.url, 'node-drain', 2);
    const client = await connect(a!.url, worker);
    const before = client.wakes().length;
    const drained = await post(b!.url, '/api/v1/workers/node-drain/drain', {});
    expect(drained.status).toBe(200);
    await eventually(() => expect(client.wakes().length).toBeGreaterThan(before), { timeoutMs: 5_000 });
    expect(client.wakes()[before]).toEqual({ type: 'wake' });
    const claim = await post(
      a!.url,
      '/api/v1/agents/claim',
      { worker_id: worker.worker_id, session: worker.session, wait_s: 0 },
      worker.token,
    );
    expect(claim.body.status).toBe('draining');
  });

  it('closes a socket gone silent, and the reaper declares its worker lost within TTL + one reap', async () => {
    const [a] = servers;
    const worker = await register(a!.url, 'node-silent', 2);
    const client = await connect(a!.url, worker);
    const silentSince = Date.now();
    // No pings at all: the hub closes the socket after a TTL, the key expires, the reaper (1 s) acts.
    await eventually(() => expect(client.closedWith).toBe(4408), { timeoutMs: 10_000 });
    await eventually(() => expect(psql(`SELECT status FROM workers WHERE id = 'node-silent'`)).toBe('down'), {
      timeoutMs: 10_000,
    });
    // TTL 4 s from the last refresh (at most one interval after the accept) + one reap (1 s) + slack.
    expect(Date.now() - silentSince).toBeLessThan(4_000 + 1_000 + 1_000 + 3_000);
  });
});
