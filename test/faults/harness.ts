/**
 * The fault-injection harness: real parts that a test can break. A private `redis-server` process (killed,
 * restarted, flushed by the test; the machine's shared Redis is never touched), a TCP proxy in front of the
 * shared Postgres that a test cuts and restores (Postgres itself is never stopped), a control plane in-process
 * or as its own process, real agent processes, and an HTTP client that records every answer it got so that a
 * test can check that none was a 5xx.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sql } from 'drizzle-orm';
import { expect } from 'vitest';
import type { ConductorConfig, RegistryStore } from '../../functions/domain/ports.ts';
import { queryOne } from '../../functions/domain/sql.ts';
import { createIoredisScripts } from '../../functions/node/ioredis.ts';
import type { RunningServer } from '../../functions/node/server.ts';
import { RedisRegistryStore } from '../../functions/registry/redis-store.ts';
import { AgentProcess, eventually } from '../support/agent-process.ts';
import { type RecordingLogger, startTestServer, testConfig } from '../support/cluster.ts';
import { createPostgresDatabase, type TestDatabase } from '../support/databases.ts';
import { checkInvariants } from '../support/invariants.ts';
import { serviceAvailable } from '../support/services.ts';
import { RedisServer } from './processes.ts';

export { alive, groupAlive, groupMembers, PgProxy, RedisServer, signalGroup } from './processes.ts';
export { AgentProcess, eventually };

/** Postgres is needed (each file clones its own database); Redis is always our own redis-server. */
export async function faultServicesAvailable(): Promise<boolean> {
  if (!(await serviceAvailable('postgres'))) return false;
  try {
    execFileSync('redis-server', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    if (process.env.CONDUCTOR_REQUIRE_SERVICES === '1') throw new Error('redis-server is required');
    console.warn('[conductor tests] redis-server not installed: the fault suites are skipped');
    return false;
  }
}

/** The timings of every fault scenario: a 4 s TTL, 1 s heartbeats, a 1 s scheduling and reaping backstop. */
export const FAULT_TIMING = { workerTtlSeconds: 4, heartbeatIntervalSeconds: 1, scheduleIntervalSeconds: 1 };

/** The same, as the Node server's environment. */
export const FAULT_SERVER_ENV = {
  CONDUCTOR_EMBEDDED_AGENT: '0',
  CONDUCTOR_WORKER_TTL: String(FAULT_TIMING.workerTtlSeconds),
  CONDUCTOR_HEARTBEAT_INTERVAL: String(FAULT_TIMING.heartbeatIntervalSeconds),
  CONDUCTOR_SCHEDULE_INTERVAL: String(FAULT_TIMING.scheduleIntervalSeconds),
  CONDUCTOR_CLAIM_WAIT: '2',
};

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** The Redis registry over a Redis URL, as functions/node.ts builds it (no key prefix: the contract's names). */
export function redisRegistry(url: string): { registry: RegistryStore; close(): Promise<void> } {
  const redis = createIoredisScripts(url, { onError: () => {} });
  return { registry: new RedisRegistryStore(redis.scripts), close: redis.close };
}

// ---- the HTTP API, every answer recorded -------------------------------------------------------------------

export interface Answer<T = unknown> {
  method: string;
  path: string;
  status: number;
  ms: number;
  headers: Headers;
  text: string;
  body: T;
}

export interface JobView {
  id: number;
  name: string;
  state: string;
  cpus: number;
  exit_code: string | null;
  node: string | null;
  attempt: number;
  requeue: boolean;
  reason: string | null;
  start_time: string | null;
  end_time: string | null;
}

export const FINAL = ['COMPLETED', 'FAILED', 'CANCELLED', 'TIMEOUT', 'NODE_FAIL'];

/** A client of the control plane's HTTP API that keeps every answer, to check them all at the end. */
export class Api {
  readonly answers: Answer[] = [];
  constructor(public base: string) {}

  async request<T = unknown>(
    method: string,
    path: string,
    body?: unknown,
    timeoutMs = 15_000,
  ): Promise<Answer<T>> {
    const started = performance.now();
    const res = await fetch(`${this.base}${path}`, {
      method,
      headers: body === undefined ? {} : { 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(timeoutMs),
    });
    const text = await res.text();
    let parsed: unknown = text;
    try {
      parsed = JSON.parse(text);
    } catch {}
    const answer: Answer<T> = {
      method,
      path,
      status: res.status,
      ms: Math.round(performance.now() - started),
      headers: res.headers,
      text,
      body: parsed as T,
    };
    this.answers.push(answer);
    return answer;
  }

  get<T = unknown>(path: string) {
    return this.request<T>('GET', path);
  }

  post<T = unknown>(path: string, body: unknown = {}) {
    return this.request<T>('POST', path, body);
  }

  async submit(body: Record<string, unknown>): Promise<JobView> {
    const res = await this.post<JobView>('/api/v1/jobs/submit', body);
    expect(res.status, res.text).toBe(201);
    return res.body;
  }

  async job(id: number): Promise<JobView> {
    const res = await this.get<JobView>(`/api/v1/jobs/${id}`);
    expect(res.status, res.text).toBe(200);
    return res.body;
  }

  async logs(id: number): Promise<{ stdout: string; stderr: string }> {
    const res = await this.get<{ stdout: { content: string }; stderr: { content: string } }>(
      `/api/v1/jobs/${id}/logs`,
    );
    expect(res.status, res.text).toBe(200);
    return { stdout: res.body.stdout.content, stderr: res.body.stderr.content };
  }

  /** Waits until the job satisfies `check` (default: it ended) and returns it. */
  waitJob(
    id: number,
    check: (job: JobView) => boolean = (job) => FINAL.includes(job.state),
    timeoutMs = 30_000,
    what = `job ${id} to end`,
  ): Promise<JobView> {
    return eventually(
      async () => {
        const job = await this.job(id);
        return check(job) ? job : undefined;
      },
      { timeoutMs, intervalMs: 100, what },
    );
  }

  /** Every answer so far with a 5xx status (optionally outside `allowed`). */
  serverErrors(allowed: (a: Answer) => boolean = () => false): Answer[] {
    return this.answers.filter((a) => a.status >= 500 && !allowed(a));
  }

  expectNo5xx(allowed?: (a: Answer) => boolean): void {
    const bad = this.serverErrors(allowed).map((a) => `${a.method} ${a.path} → ${a.status} ${a.text}`);
    expect(bad, 'answers with a 5xx status').toEqual([]);
  }
}

/** Agent log lines that quote a 5xx answer of the control plane (`503 database_unavailable: ...`). */
export function agent5xxLines(agent: AgentProcess): string[] {
  return agent.lines.filter((line) => / 5\d\d [a-z_]+:/.test(line) || /HTTP 5\d\d/.test(line));
}

// ---- processes ---------------------------------------------------------------------------------------------

/** The process group of a job an agent runs, from the `pid` file of its folder (`<job>.<attempt>`). */
export function jobPgid(agent: AgentProcess, jobId: number, attempt: number): number | undefined {
  const file = join(agent.stateDir, 'jobs', `${jobId}.${attempt}`, 'pid');
  if (!existsSync(file)) return undefined;
  try {
    return (JSON.parse(readFileSync(file, 'utf8')) as { pid: number }).pid;
  } catch {
    return undefined;
  }
}

export function waitPgid(agent: AgentProcess, jobId: number, attempt: number): Promise<number> {
  return eventually(() => jobPgid(agent, jobId, attempt), {
    timeoutMs: 15_000,
    what: `the pid file of job ${jobId}.${attempt} on ${agent.nodeName}`,
  });
}

/** Job folders left in an agent's state dir. */
export function jobFolders(agent: AgentProcess): string[] {
  try {
    return readdirSync(join(agent.stateDir, 'jobs'));
  } catch {
    return [];
  }
}

/** Starts an agent with the fault timings (1 s heartbeats) against `url`. */
export function startAgent(
  name: string,
  url: string,
  options: { cpus?: number; env?: Record<string, string>; stateDir?: string; args?: string[] } = {},
): AgentProcess {
  return new AgentProcess(name, url, {
    ...options,
    cpus: options.cpus ?? 2,
    env: { CONDUCTOR_HEARTBEAT_INTERVAL: '1', ...options.env },
  });
}

/** Stops agents that may still run (SIGCONT first, in case a test froze one), never waiting long. */
export async function stopAgents(agents: AgentProcess[]): Promise<void> {
  await Promise.all(
    agents.map(async (agent) => {
      if (agent.child.exitCode !== null || agent.child.signalCode !== null) return;
      agent.child.kill('SIGCONT');
      await agent.stop(8_000).catch(() => agent.kill9());
    }),
  );
}

export function tempDir(prefix: string): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

// ---- an in-process control plane over a private Redis ------------------------------------------------------

export interface FaultCluster {
  db: TestDatabase;
  redis: RedisServer;
  registry: RegistryStore;
  server: RunningServer & { logger: RecordingLogger };
  api: Api;
  config: ConductorConfig;
  /** checkInvariants, and `GET resource:allocated_cpus` (after one read) equals the Postgres SUM. */
  invariants(): Promise<void>;
  close(): Promise<void>;
}

/**
 * The control plane in this process (startServer, timers on) over a fresh Postgres database and a private
 * redis-server, with the fault timings.
 */
export async function startFaultCluster(overrides: Partial<ConductorConfig> = {}): Promise<FaultCluster> {
  const [db, redis] = await Promise.all([createPostgresDatabase(), RedisServer.start()]);
  const { registry, close: closeRegistry } = redisRegistry(redis.url);
  const config = testConfig({ ...FAULT_TIMING, ...overrides });
  const server = await startTestServer(
    { name: 'postgres+private-redis', db, registry, keyPrefix: '', close: async () => {} },
    config,
  );
  const api = new Api(server.url);
  return {
    db,
    redis,
    registry,
    server,
    api,
    config,
    invariants: async () => {
      // A missing key only records deltas until a read refills it: read once, then compare.
      expect((await api.get('/api/v1/dashboard')).status).toBe(200);
      expect(redis.cli('GET', 'resource:allocated_cpus'), 'resource:allocated_cpus').toBe(
        String(await allocationSum(db)),
      );
      await checkInvariants(db.db, registry);
    },
    async close() {
      await server.close();
      await closeRegistry();
      await redis.close();
      await db.close();
    },
  };
}

/** Seconds, rounded to a tenth, for the measurements the tests print. */
export const seconds = (ms: number) => Math.round(ms / 100) / 10;

/** The contract's live allocation: `SELECT SUM(allocated_cpus) FROM resource_allocations WHERE released = false`. */
export async function allocationSum(db: TestDatabase): Promise<number> {
  const row = await queryOne<{ total: string | number | null }>(
    db.db,
    sql`SELECT SUM(allocated_cpus) AS total FROM resource_allocations WHERE released = false`,
  );
  return Number(row?.total ?? 0);
}

/** A worker's durable row. */
export async function workerRow(db: TestDatabase, id: string) {
  return queryOne<{
    id: string;
    status: string;
    session: string;
    last_heartbeat: Date | string;
    down_at: Date | string | null;
    down_reason: string | null;
  }>(
    db.db,
    sql`SELECT id, status, session, last_heartbeat, down_at, down_reason FROM workers WHERE id = ${id}`,
  );
}
