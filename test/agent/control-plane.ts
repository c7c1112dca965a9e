/**
 * The real control plane for the agent's tests: the Node server (functions/) over a test backend, with a
 * FaultProxy in front of it that agents connect through. Helpers read the outcome where an operator would:
 * the HTTP API, Postgres, the registry.
 */
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type SQL, sql } from 'drizzle-orm';
import { afterAll, afterEach, beforeAll, expect } from 'vitest';
import { Agent } from '../../agent/src/agent.ts';
import { type AgentConfigInput, agentConfig } from '../../agent/src/config.ts';
import { memoryLogger } from '../../agent/src/log.ts';
import type { Context } from '../../functions/domain/context.ts';
import type { ConductorConfig } from '../../functions/domain/ports.ts';
import { type ReapResult, reapLostWorkers } from '../../functions/domain/reaper.ts';
import { pgArray, query, queryOne } from '../../functions/domain/sql.ts';
import type { RunningServer } from '../../functions/node/server.ts';
import { type AgentProcess, eventually } from '../support/agent-process.ts';
import {
  availableBackends,
  type Backend,
  type BackendFactory,
  type RecordingLogger,
  startTestServer,
  testConfig,
  testContext,
} from '../support/cluster.ts';
import { FaultProxy, type ProxiedRequest } from '../support/fault-proxy.ts';
import { checkInvariants } from '../support/invariants.ts';

export interface JobView {
  id: number;
  state: string;
  exit_code: string | null;
  node: string | null;
  attempt: number;
  reason: string | null;
  cancel_requested: boolean;
  start_time: string | null;
  end_time: string | null;
}

export interface JobLogs {
  stdout: { content: string; bytes: number; truncated: boolean };
  stderr: { content: string; bytes: number; truncated: boolean };
}

export interface WorkerRow {
  id: string;
  status: string;
  session: string;
  down_reason: string | null;
}

/**
 * The backends these suites run on: the zero-setup default always, and the production pair (Postgres +
 * Redis) when the services are up.
 */
export async function agentBackends(): Promise<{ all: BackendFactory[]; pglite: BackendFactory }> {
  const all = (await availableBackends()).filter((b) => ['pglite+memory', 'postgres+redis'].includes(b.name));
  return { all, pglite: all.find((b) => b.name === 'pglite+memory')! };
}

const FINAL = ['COMPLETED', 'FAILED', 'CANCELLED', 'TIMEOUT', 'NODE_FAIL'];

/**
 * Short intervals for tests. The backstop timer (reaper, scheduling) is off: scheduling is event-driven
 * anyway, and tests run the reaper themselves when a scenario needs a node declared lost, so nothing is
 * reaped behind a test's back.
 */
export function agentTestConfig(overrides: Partial<ConductorConfig> = {}): ConductorConfig {
  return testConfig({
    heartbeatIntervalSeconds: 1,
    workerTtlSeconds: 10,
    claimWaitSeconds: 20,
    claimRedeliverySeconds: 1,
    scheduleIntervalSeconds: 3600,
    cacheSyncIntervalSeconds: 3600,
    statsIntervalSeconds: 3600,
    ...overrides,
  });
}

export class ControlPlane {
  private constructor(
    readonly backend: Backend,
    readonly config: ConductorConfig,
    public server: (RunningServer & { logger: RecordingLogger }) | undefined,
    readonly port: number,
    readonly proxy: FaultProxy,
  ) {}

  /** `upgrades`: the proxy passes the push channel (else agents stay on HTTP). */
  static async start(
    factory: BackendFactory,
    config = agentTestConfig(),
    options: { upgrades?: boolean } = {},
  ): Promise<ControlPlane> {
    const backend = await factory.create();
    const server = await startTestServer(backend, config);
    const proxy = await FaultProxy.start(server.url, options);
    const cp = new ControlPlane(backend, config, server, server.port, proxy);
    // The backstop timer is off: start the reaper's clock as the server's first backstop pass would.
    await reapLostWorkers(cp.reaperContext());
    return cp;
  }

  /** Where agents connect: through the fault proxy. */
  get url(): string {
    return this.proxy.url;
  }

  /** The server itself, without the proxy. */
  get directUrl(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  get db() {
    return this.backend.db.db;
  }

  private get running(): RunningServer & { logger: RecordingLogger } {
    if (!this.server) throw new Error('the control plane is stopped');
    return this.server;
  }

  /** Stops the server; the database and the registry stay, and startServer() listens on its port again. */
  async stopServer(): Promise<void> {
    const server = this.running;
    this.server = undefined;
    await server.close();
  }

  /** Starts a new server where the old one was: same port, same database, same registry. */
  async startServer(): Promise<void> {
    if (this.server) throw new Error('the control plane is running');
    this.server = await startTestServer(this.backend, this.config, { port: this.port });
  }

  /**
   * The domain over the same backend, as another replica of the control plane sees it: its verbs change
   * the same database and registry but do not wake this server's long-polling claims.
   */
  otherReplica(): Context {
    return testContext(this.backend, this.config).ctx;
  }

  async api(method: string, path: string, body?: unknown): Promise<{ status: number; body: unknown }> {
    const res = await fetch(`${this.directUrl}/api/v1${path}`, {
      method,
      ...(body === undefined
        ? {}
        : { headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }),
    });
    return { status: res.status, body: await res.json() };
  }

  async submit(body: Record<string, unknown>): Promise<JobView> {
    const res = await this.api('POST', '/jobs/submit', body);
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    return res.body as JobView;
  }

  async job(id: number): Promise<JobView> {
    const res = await this.api('GET', `/jobs/${id}`);
    expect(res.status).toBe(200);
    return res.body as JobView;
  }

  async logs(id: number): Promise<JobLogs> {
    return (await this.api('GET', `/jobs/${id}/logs`)).body as JobLogs;
  }

  async cancel(id: number): Promise<number> {
    return (await this.api('POST', `/jobs/${id}/cancel`)).status;
  }

  /** Waits until the agent reported the job started. */
  started(id: number, timeoutMs = 10_000): Promise<JobView> {
    return eventually(
      async () => {
        const job = await this.job(id);
        return job.start_time !== null && job.state === 'RUNNING' ? job : undefined;
      },
      { timeoutMs, what: `job ${id} to start` },
    );
  }

  finished(id: number, timeoutMs = 15_000): Promise<JobView> {
    return eventually(
      async () => {
        const job = await this.job(id);
        return FINAL.includes(job.state) ? job : undefined;
      },
      { timeoutMs, what: `job ${id} to end` },
    );
  }

  rows<T>(statement: SQL): Promise<T[]> {
    return query<T>(this.db, statement);
  }

  worker(id: string): Promise<WorkerRow | undefined> {
    return queryOne<WorkerRow>(
      this.db,
      sql`SELECT id, status, session, down_reason FROM workers WHERE id = ${id}`,
    );
  }

  async claimedSession(jobId: number): Promise<string | null | undefined> {
    const row = await queryOne<{ claimed_session: string | null }>(
      this.db,
      sql`SELECT claimed_session FROM jobs WHERE id = ${jobId}`,
    );
    return row?.claimed_session;
  }

  /**
   * Declares workers lost the way the control plane does when their heartbeat lapsed: their last heartbeat
   * is made an hour old, and the reaper runs on this server's context. It runs as on a control plane whose
   * TTL is 1 s, so that its start-up grace (a TTL from its first pass, in start()) is not worth waiting for;
   * every worker silent for over a second is reaped with them, so call this with no other live agent.
   */
  async reapLostWorkersNow(ids?: string[]): Promise<ReapResult> {
    const which = ids ? sql`id = ANY(${pgArray(ids)}::text[])` : sql`true`;
    await query(
      this.db,
      sql`UPDATE workers SET last_heartbeat = now() - interval '1 hour' WHERE status <> 'down' AND ${which}`,
    );
    const deadline = Date.now() + 5000;
    for (;;) {
      const result = await reapLostWorkers(this.reaperContext());
      if (!result.inGrace) return result;
      if (Date.now() > deadline) throw new Error('the reaper is still in its start-up grace');
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }

  private reaperContext(): Context {
    return { ...this.running.ctx, config: { ...this.config, workerTtlSeconds: 1 } };
  }

  checkInvariants(): Promise<void> {
    return checkInvariants(this.db, this.backend.registry);
  }

  /**
   * Between tests: heals the network, brings the server back, and leaves no live worker and no pending job
   * behind (agents that were killed are reaped; pending jobs are cancelled), checking the invariants.
   */
  async reset(): Promise<void> {
    this.proxy.release();
    this.proxy.undrop();
    this.proxy.restore();
    if (!this.server) await this.startServer();
    await this.checkInvariants();
    const live = await this.rows<{ id: string }>(sql`SELECT id FROM workers WHERE status <> 'down'`);
    if (live.length > 0) await this.reapLostWorkersNow();
    const pending = await this.rows<{ id: string | number }>(
      sql`SELECT id FROM jobs WHERE state = 'PENDING'`,
    );
    for (const { id } of pending) await this.cancel(Number(id));
    await this.checkInvariants();
  }

  async close(): Promise<void> {
    await this.proxy.close();
    await this.server?.close();
    await this.backend.close();
  }
}

/** A file a job waits for: lets a test decide when a job ends. */
export function makeGate(): { env: { GATE: string }; wait: string; open(): void } {
  const path = join(mkdtempSync(join(tmpdir(), 'conductor-gate-')), 'open');
  return {
    env: { GATE: path },
    wait: 'while [ ! -e "$GATE" ]; do sleep 0.05; done',
    open: () => writeFileSync(path, ''),
  };
}

/** True when `pid` is gone (or a zombie waiting to be reaped). */
export function processGone(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return true;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
  } catch {
    return true;
  }
}

/**
 * A control plane for a describe block (started once), and in-process agents for its tests: each test's
 * agents and agent processes are stopped after it, and the cluster is reset (invariants checked).
 */
export function useControlPlane(
  factory: BackendFactory,
  root: string,
  config = agentTestConfig(),
  options: { upgrades?: boolean } = {},
) {
  let cp: ControlPlane | undefined;
  let agents: Agent[] = [];
  let processes: AgentProcess[] = [];
  let n = 0;
  beforeAll(async () => {
    cp = await ControlPlane.start(factory, config, options);
  });
  afterAll(async () => {
    await cp?.close();
  });
  afterEach(async () => {
    cp?.proxy.restore();
    cp?.proxy.release();
    cp?.proxy.undrop();
    for (const p of processes) await p.kill9();
    for (const a of agents) {
      a.killAllNow();
      await a.stop();
    }
    agents = [];
    processes = [];
    await cp?.reset();
  });

  const control = () => {
    if (!cp) throw new Error('no control plane');
    return cp;
  };
  return {
    control,
    /** A unique name, for nodes and files. */
    unique: (prefix: string) => `${prefix}-${++n}`,
    /** An in-process Agent with short timers, talking to the control plane through its proxy. */
    makeAgent(input: AgentConfigInput = {}) {
      const logger = memoryLogger();
      const id = ++n;
      const stateDir = input.stateDir ?? join(root, `state-${id}`);
      const config = agentConfig({
        url: control().url,
        nodeName: `node-${id}`,
        cpus: 4,
        stateDir,
        heartbeatIntervalS: 1,
        claimWaitS: 2,
        ...input,
        timing: {
          registerBackoff: { initialMs: 50, maxMs: 200 },
          claimBackoff: { initialMs: 50, maxMs: 200 },
          reportBackoff: { initialMs: 50, maxMs: 200 },
          outputIntervalMs: 100,
          outputPollMs: 20,
          shutdownReportTimeoutMs: 2000,
          ...input.timing,
        },
      });
      const agent = new Agent(config, { logger });
      agents.push(agent);
      return { agent, logger, stateDir, config };
    },
    /** Kills `p` with SIGKILL after the test if it still runs. */
    track<P extends AgentProcess>(p: P): P {
      processes.push(p);
      return p;
    },
  };
}

/** What the proxy saw `workerId` send to `path` (e.g. `/agents/claim`), in order. */
export function sentBy(cp: ControlPlane, path: string, workerId: string): ProxiedRequest[] {
  return cp.proxy
    .calls(path)
    .filter((r) => (r.body as { worker_id?: string } | undefined)?.worker_id === workerId);
}
