import { execFileSync } from 'node:child_process';
import { createServer } from 'node:net';
import { Redis } from 'ioredis';
import { Miniflare, type MiniflareOptions } from 'miniflare';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { channelReconnectDelayMs } from '../../agent/src/channel.ts';
import { eventually } from '../support/agent-process.ts';
import { createPostgresDatabase, type TestDatabase } from '../support/databases.ts';
import { startNeonProxy } from '../support/neon-proxy.ts';
import { serviceAvailable } from '../support/services.ts';
import { startUpstashBridge, type UpstashBridge } from '../support/upstash-bridge.ts';
import { bundleWorker, workerModules } from '../support/worker-bundle.ts';

/**
 * A thousand agents on the Workers channel (the AgentChannel Durable Object in workerd, two isolates) when
 * the runtime restarts, as a deploy does: every socket drops at once while jobs are being submitted. Each
 * agent is played by a `ws` client that does what the agent does: it reconnects after the agent's own delay
 * (uniform over CONDUCTOR_CHANNEL_RECONNECT_WINDOW, then full-jitter back-off), claims once to catch up,
 * takes assignments from wakes and claims (once per job and attempt), and reports them started and
 * finished. Postgres is reached through a pooler-like proxy (at most POOL connections, the rest wait),
 * Redis through the Upstash REST bridge. Redis database 12 is this file's.
 */
const available = (await serviceAvailable('postgres')) && (await serviceAvailable('redis'));
const REDIS_DB_URL = 'redis://127.0.0.1:6379/12';
const ADMIN_TOKEN = 'reconnect-admin-token-0123456789abcdefghij';
const AGENTS = 1000;
const JOBS = 20;
/** The agent's default CONDUCTOR_CHANNEL_RECONNECT_WINDOW (s). */
const WINDOW_S = 10;
const INTERVAL_S = 5;
const TTL_S = 60;
/** Registrations at once while the fleet is set up. */
const REGISTERING = 5;
/** Postgres connections at once, as behind Neon's pooler (the rest queue). */
const POOL = 50;

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

interface Assignment {
  job_id: number;
  attempt: number;
}

/** What one agent does on the channel, with the statuses of what it asked. */
class FakeAgent {
  socket?: WebSocket;
  failures = 0;
  /** Connection attempts after the drop (ms after its socket closed). */
  readonly attempts: number[] = [];
  back?: number;
  readonly statuses: number[] = [];
  readonly taken = new Set<string>();
  private pinger?: NodeJS.Timeout;

  constructor(
    readonly id: string,
    readonly session: string,
    private readonly token: string,
    private readonly base: () => string,
    private readonly onJob: (agent: FakeAgent, job: Assignment) => Promise<void>,
  ) {}

  async call(path: string, body: unknown): Promise<unknown> {
    for (let tries = 0; ; tries++) {
      const res = await fetch(`${this.base()}${path}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${this.token}` },
        body: JSON.stringify(body),
      }).catch(() => null);
      this.statuses.push(res?.status ?? 0);
      if (res && res.status < 500) return res.json();
      // The agent retries what did not get through (no answer, 5xx), with back-off.
      await new Promise((r) => setTimeout(r, Math.min(5000, 200 * 2 ** tries) * Math.random()));
    }
  }

  open(): Promise<boolean> {
    const url = `${this.base().replace(/^http/, 'ws')}/api/v1/agents/channel?worker_id=${this.id}&session=${this.session}`;
    const ws = new WebSocket(url, { headers: { authorization: `Bearer ${this.token}` } });
    return new Promise((resolve) => {
      ws.once('open', () => {
        this.socket = ws;
        ws.on('message', (data) => this.onFrame(data.toString()));
        ws.send('ping');
        this.pinger = setInterval(
          () => ws.readyState === WebSocket.OPEN && ws.send('ping'),
          INTERVAL_S * 1000,
        );
        resolve(true);
      });
      ws.once('unexpected-response', (_req, res) => {
        this.statuses.push(res.statusCode ?? 0);
        resolve(false);
      });
      ws.once('error', () => resolve(false));
      // workerd ends the TCP connection some seconds after its close: take the close frame as the end.
      const watch = setInterval(() => {
        if (ws.readyState === WebSocket.CLOSING) ws.terminate();
        if (ws.readyState === WebSocket.CLOSED) clearInterval(watch);
      }, 20);
    });
  }

  /** After a drop: tries after the agent's delay, backs off while refused, then claims once to catch up. */
  reconnect(closedAt: number): void {
    setTimeout(
      async () => {
        this.attempts.push(Date.now() - closedAt);
        if (!(await this.open())) {
          this.failures++;
          this.reconnect(closedAt);
          return;
        }
        this.failures = 0;
        this.back = Date.now() - closedAt;
        await this.claim();
      },
      channelReconnectDelayMs(this.failures, WINDOW_S),
    );
  }

  async claim(): Promise<void> {
    const answer = (await this.call('/api/v1/agents/claim', {
      worker_id: this.id,
      session: this.session,
      wait_s: 0,
    })) as { jobs?: Assignment[] };
    for (const job of answer.jobs ?? []) void this.take(job);
  }

  private onFrame(frame: string): void {
    if (frame === 'pong') return;
    const message = JSON.parse(frame) as { type: string; jobs?: Assignment[] };
    if (message.type === 'wake' && message.jobs) for (const job of message.jobs) void this.take(job);
    else if (message.type === 'wake') void this.claim();
  }

  private async take(job: Assignment): Promise<void> {
    const key = `${job.job_id}.${job.attempt}`;
    if (this.taken.has(key)) return;
    this.taken.add(key);
    await this.onJob(this, job);
  }

  stop(): void {
    clearInterval(this.pinger);
    this.socket?.terminate();
  }
}

describe.runIf(available)('a thousand agents reconnecting to the Workers channel after a restart', () => {
  let database: TestDatabase;
  let bridge: UpstashBridge;
  let proxy: Awaited<ReturnType<typeof startNeonProxy>>;
  let redis: Redis;
  let mf: Miniflare;
  let options: MiniflareOptions;
  let urls: [string, string];
  const agents: FakeAgent[] = [];
  const runtimeErrors: string[] = [];
  /** Every (job, attempt) an agent took, with the agent. */
  const starts: { job: number; attempt: number; worker: string }[] = [];
  const psql = (statement: string) =>
    execFileSync('psql', [database.url!, '-Atc', statement], { encoding: 'utf8' }).trim();

  beforeAll(async () => {
    const bundle = bundleWorker();
    database = await createPostgresDatabase();
    redis = new Redis(REDIS_DB_URL);
    await redis.flushdb();
    bridge = await startUpstashBridge({ redisUrl: REDIS_DB_URL });
    proxy = await startNeonProxy({ maxConnections: POOL });
    const bindings = {
      DATABASE_URL: database.url!,
      UPSTASH_REDIS_REST_URL: bridge.url,
      UPSTASH_REDIS_REST_TOKEN: bridge.token,
      NEON_WS_PROXY: proxy.url,
      CONDUCTOR_WORKER_TTL: String(TTL_S),
      CONDUCTOR_HEARTBEAT_INTERVAL: String(INTERVAL_S),
      CONDUCTOR_SUBMIT_RATE: '0',
      ADMIN_TOKEN,
    };
    // Fixed ports: the restarted runtime answers where the agents reconnect.
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
      handleRuntimeStdio(stdout: NodeJS.ReadableStream, stderr: NodeJS.ReadableStream) {
        for (const stream of [stdout, stderr]) {
          stream.on('data', (chunk: Buffer) => {
            for (const line of chunk.toString().split('\n'))
              if (/error|warn/i.test(line)) runtimeErrors.push(line);
          });
        }
      },
    };
    mf = new Miniflare(options);
    await mf.ready;
    urls = [
      (await mf.unsafeGetDirectURL('a')).toString().replace(/\/$/, ''),
      (await mf.unsafeGetDirectURL('b')).toString().replace(/\/$/, ''),
    ];
  }, 180_000);

  afterAll(async () => {
    if (runtimeErrors.length > 0)
      console.log(
        `runtime errors and warnings (${runtimeErrors.length}):\n${runtimeErrors.slice(0, 20).join('\n')}`,
      );
    for (const agent of agents) agent.stop();
    await mf?.dispose();
    await proxy?.close();
    await bridge?.close();
    await redis?.flushdb();
    await redis?.quit();
    await database?.close();
  });

  /** An admin's request; a 503 (the database busy, Retry-After) is tried again, as a client would. */
  async function admin<T>(path: string, body: unknown): Promise<{ status: number; body: T }> {
    for (;;) {
      const res = await fetch(`${urls[0]}${path}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${ADMIN_TOKEN}` },
        body: JSON.stringify(body),
      });
      if (res.status !== 503) return { status: res.status, body: (await res.json()) as T };
      adminRetries++;
      await new Promise((r) => setTimeout(r, 1000 * Number(res.headers.get('retry-after') ?? 1)));
    }
  }
  let adminRetries = 0;

  it('every one comes back spread over the window, none is lost, and every job submitted meanwhile runs exactly once', {
    timeout: 600_000,
  }, async () => {
    const created = await admin<{ token: string }>('/api/v1/tokens', { name: 'fleet', scopes: ['agent'] });
    expect(created.status).toBe(201);
    const token = created.body.token;
    const onJob = async (agent: FakeAgent, job: Assignment) => {
      starts.push({ job: job.job_id, attempt: job.attempt, worker: agent.id });
      const report = { worker_id: agent.id, attempt: job.attempt };
      await agent.call(`/api/v1/agents/jobs/${job.job_id}/started`, { ...report, session: agent.session });
      await agent.call(`/api/v1/agents/jobs/${job.job_id}/finish`, {
        ...report,
        exit_code: '0:0',
        outcome: 'exited',
      });
    };
    // Half the fleet on each isolate, as a load balancer would spread it. Each registration asks for a
    // scheduling pass: a few at a time, as a fleet booting over minutes would.
    for (let batch = 0; batch < AGENTS; batch += REGISTERING) {
      await Promise.all(
        Array.from({ length: Math.min(REGISTERING, AGENTS - batch) }, async (_, i) => {
          const n = batch + i;
          const id = `fleet-${String(n).padStart(4, '0')}`;
          const base = () => urls[n % 2]!;
          const res = await fetch(`${base()}/api/v1/agents/register`, {
            method: 'POST',
            headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
            body: JSON.stringify({ worker_id: id, hostname: id, cpus: 1 }),
          });
          expect(res.status).toBe(200);
          const { session } = (await res.json()) as { session: string };
          const agent = new FakeAgent(id, session, token, base, onJob);
          expect(await agent.open()).toBe(true);
          agents.push(agent);
        }),
      );
    }
    expect(psql('SELECT count(*) FROM workers WHERE channel AND channel_generation = 1')).toBe(
      String(AGENTS),
    );

    // The deploy: the runtime restarts, every socket drops; jobs keep coming meanwhile.
    for (const agent of agents) agent.socket!.once('close', () => agent.reconnect(Date.now()));
    await mf.setOptions(options);
    const submitted: number[] = [];
    for (let n = 0; n < JOBS; n++) {
      const { status, body } = await admin<{ id: number }>('/api/v1/jobs/submit', {
        script: 'true',
        cpus: 1,
        name: `during-${n}`,
      });
      expect(status).toBe(201);
      submitted.push(body.id);
      await new Promise((r) => setTimeout(r, (WINDOW_S * 1000) / JOBS));
    }

    await eventually(() => agents.every((a) => a.back !== undefined), {
      timeoutMs: 240_000,
      what: 'every agent back on the channel',
    });
    await eventually(() => psql(`SELECT count(*) FROM jobs WHERE state = 'COMPLETED'`) === String(JOBS), {
      timeoutMs: 240_000,
      intervalMs: 1000,
      what: 'every job submitted during the drop completed',
    });
    // Every session reopened its channel, none was declared lost.
    expect(psql('SELECT count(*) FROM workers WHERE channel AND channel_generation >= 2')).toBe(
      String(AGENTS),
    );
    expect(psql(`SELECT count(*) FROM workers WHERE status = 'down'`)).toBe('0');
    // Each job ran once, on one worker, in its first attempt.
    expect(starts.map((s) => s.job).sort((a, b) => a - b)).toEqual([...submitted].sort((a, b) => a - b));
    expect(starts.every((s) => s.attempt === 1)).toBe(true);
    // Spread: each first try comes within the window after its socket closed (a busy test process fires
    // timers a little late); no second holds more than a quarter of them.
    const first = agents.map((a) => a.attempts[0]!);
    expect(Math.max(...first)).toBeLessThanOrEqual(WINDOW_S * 1000 + 2000);
    const perSecond = new Map<number, number>();
    for (const at of first)
      perSecond.set(Math.floor(at / 1000), (perSecond.get(Math.floor(at / 1000)) ?? 0) + 1);
    expect(Math.max(...perSecond.values())).toBeLessThanOrEqual(AGENTS / 4);
    const statuses = agents.flatMap((a) => a.statuses);
    const failed = statuses.filter((s) => s === 0 || s >= 500).length;
    const lastBack = Math.max(...agents.map((a) => a.back!));
    console.log(
      `[channel-reconnect workerd] ${AGENTS} agents back within ${(lastBack / 1000).toFixed(1)} s of their drop; ` +
        `${agents.reduce((n, a) => n + a.attempts.length, 0)} connection attempts; ` +
        `${statuses.length} agent requests, ${failed} not answered or 5xx (retried); ` +
        `Postgres connections ${proxy.stats.connections} (at most ${POOL} at once, ${proxy.stats.queued} waited); ` +
        `${adminRetries} submissions answered 503 and tried again`,
    );
    // Nothing an agent sent was refused for being wrong (a 4xx would be a lost report or claim).
    expect(statuses.filter((s) => s >= 400 && s < 500)).toEqual([]);
  });
});
