/**
 * The node agent: registers, heartbeats on its own timer, long-polls for assignments, runs them through
 * JobRunner, and shuts down cleanly (cancel or drain, then unregister). Where the control plane offers the
 * push channel (a WebSocket, see protocol.ts ChannelQuery) the agent holds it instead: pings replace the
 * heartbeats, and it claims when told to (`wake`) instead of long-polling; whenever the channel is not open,
 * heartbeats and long polls run as before.
 *
 *   const agent = new Agent(agentConfig({ url, nodeName, cpus, stateDir }));
 *   await agent.start();     // resolves once registered
 *   ...
 *   await agent.stop();      // or agent.stop({ drain: true })
 */
import { hostname } from 'node:os';
import { join } from 'node:path';
import { Backoff, sleep } from './backoff.ts';
import {
  channelAbsentDelayMs,
  channelReconnectDelayMs,
  channelRefusal,
  parseChannelMessage,
} from './channel.ts';
import { AgentApiError, AgentClient, needsReregistration } from './client.ts';
import { AGENT_VERSION, type AgentConfig, ensureStateDir } from './config.ts';
import {
  closeAgentSupervisor,
  detectContainment,
  detectMemoryEnforcement,
  removeContainment,
} from './containment.ts';
import type { ExecutorOptions } from './executor.ts';
import { JobRunner, type JobRunnerDeps, jobKey, jobLabel } from './job-runner.ts';
import { type AgentLogger, createLogger, describeError } from './log.ts';
import type {
  Assignment,
  JobRef,
  JobSignal,
  MemoryEnforcement,
  RegisterRequest,
  RegisterResponse,
} from './protocol.ts';
import { describeGpus, detectGpus, formatGres, jobMemoryMb } from './resources.ts';
import { acquireStateLock, readSavedSession, saveSession, scanLeftovers } from './state.ts';
import { closeWarmStarts, openWarmStarts } from './warm-start.ts';
import type { WebSocket, WebSocketCloseInfo } from './websocket.ts';

/** The agent cannot go on (e.g. its registration is refused): exit code 1. */
export class FatalAgentError extends Error {
  override readonly name = 'FatalAgentError';
}

export interface AgentDeps {
  client?: AgentClient;
  logger?: AgentLogger;
  /** Where jobs' PATH, HOME, ... come from; process.env by default. */
  jobEnv?: NodeJS.ProcessEnv;
}

function describeRunAs(config: AgentConfig): string {
  if (config.runAsByOwner) {
    const pairs = Object.entries(config.runAsByOwner).map(
      ([owner, u]) => `${owner} → ${u.name} (uid ${u.uid})`,
    );
    return `their owner's user: ${pairs.join(', ')}`;
  }
  if (config.runAs) return `${config.runAs.name} (uid ${config.runAs.uid})`;
  return `this agent's user${process.getuid?.() === 0 ? ' (root: CONDUCTOR_ALLOW_ROOT=1)' : ''}`;
}

export type AgentState = 'new' | 'starting' | 'running' | 'stopping' | 'stopped';

/** What the node offers jobs, as registered. */
export type NodeResources = Required<
  Pick<RegisterRequest, 'cpus' | 'memory_mb' | 'gpus' | 'gres' | 'features' | 'partitions'>
> & { memory_enforcement: MemoryEnforcement };

/** `Resources: 96 CPUs, 191000 MB memory, 2 GPUs (a100:0,1), gres nvme:1, features avx512,ssd, partitions gpu`. */
export function describeResources(r: NodeResources): string {
  return [
    `${r.cpus} CPUs`,
    `${r.memory_mb} MB memory`,
    describeGpus(r.gpus),
    ...(Object.keys(r.gres).length > 0 ? [`gres ${formatGres(r.gres)}`] : []),
    ...(r.features.length > 0 ? [`features ${r.features.join(',')}`] : []),
    `partitions ${r.partitions.length > 0 ? r.partitions.join(',') : '(the default)'}`,
  ].join(', ');
}

/** How long a finished attempt's key is remembered to ignore re-deliveries of it. */
const RECENT_TTL_MS = 10 * 60_000;

/**
 * A failed heartbeat is retried after 1-2 s, then 2-4 s, 4-8 s, ... (never later than the next regular one),
 * and each retry within a third of the time left until the server's TTL runs out, so that at least two more
 * fit before it would declare the node lost. With the defaults (30 s heartbeats, 60 s TTL) one failure leaves
 * about 30 s for several retries; without retries the next heartbeat came just after the TTL.
 */
const HEARTBEAT_RETRY = { initialMs: 2_000, maxMs: 30_000 };
const HEARTBEAT_RETRY_MIN_MS = 100;

/** How long the first claim waits for the channel's first try (open, the agent claims without long-polling). */
const FIRST_CHANNEL_WAIT_MS = 2_000;

export class Agent {
  readonly config: AgentConfig;
  readonly client: AgentClient;
  readonly logger: AgentLogger;
  /** Resolves when the agent has stopped (after unregistering); rejects with FatalAgentError. */
  readonly closed: Promise<void>;

  private stateValue: AgentState = 'new';
  private workerIdValue: string;
  private sessionValue: string | undefined;
  private heartbeatIntervalS = 30;
  /** The TTL the server announced: it declares the node lost after that long without a heartbeat. */
  private workerTtlS: number | undefined;
  /** When the last heartbeat (or registration) that the server accepted was sent. */
  private lastContactAt = 0;
  private readonly heartbeatRetry = new Backoff(HEARTBEAT_RETRY);
  private fenceTimer: NodeJS.Timeout | undefined;
  /** Set while a drain waits for running jobs: heartbeats then say so. */
  private draining = false;
  /** The status the server last reported for this worker. */
  private serverStatus: 'ready' | 'draining' | undefined;
  private claimWaitS = 20;
  private readonly runners = new Map<string, JobRunner>();
  private readonly recent = new Map<string, number>();
  private readonly claimAbort = new AbortController();
  private readonly lifeAbort = new AbortController();
  private readonly reportsAbort = new AbortController();
  private reregistering: Promise<void> | undefined;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private heartbeatInFlight: Promise<void> | undefined;
  private claimLoopDone: Promise<void> = Promise.resolve();
  private releaseLock: (() => void) | undefined;
  private stopping: Promise<void> | undefined;
  private openRecoveredGate: ((go: boolean) => void) | undefined;
  private resolveClosed!: () => void;
  private rejectClosed!: (err: unknown) => void;
  private readonly executor: ExecutorOptions;
  private readonly runnerDeps: JobRunnerDeps;
  private resourcesValue: NodeResources | undefined;

  // The push channel. Held (open, or being replaced at once) => no heartbeats, no long polls.
  private channel: WebSocket | undefined;
  /** The session the open channel was opened with. */
  private channelSession: string | undefined;
  /** Set while a closed channel is replaced at once (after a re-registration): still no HTTP meanwhile. */
  private channelSwitching = false;
  private channelConnecting: Promise<void> | undefined;
  /** Try again as soon as the try in progress ends (the session changed under it). */
  private channelAgain = false;
  /** The next try. */
  private channelTimer: NodeJS.Timeout | undefined;
  /** Tries in a row that failed or dropped before a pong; 0 once a pong came. */
  private channelFailures = 0;
  private channelGotPong = false;
  /** The control plane asked for a re-registration over the channel (or refused it as unknown): reconnect after it. */
  private channelRegisterAsked = false;
  private channelPingTimer: NodeJS.Timeout | undefined;
  /** No pong within 2 heartbeat intervals: the channel is dropped. */
  private channelPongTimer: NodeJS.Timeout | undefined;
  /** When the pings not answered yet were sent, oldest first. */
  private channelPingsSentAt: number[] = [];
  /** Closing channel sockets, waited for on shutdown. */
  private readonly channelClosing = new Set<Promise<void>>();
  private readonly channelAbort = new AbortController();
  private firstChannelTry: Promise<void> = Promise.resolve();
  /** A claim is owed (a wake, the channel opened): the claim loop makes one, however many were asked. */
  private claimWanted = false;
  private claimKick: (() => void) | undefined;

  constructor(config: AgentConfig, deps: AgentDeps = {}) {
    this.config = config;
    this.workerIdValue = config.nodeName;
    this.logger = deps.logger ?? createLogger({ debug: config.debug });
    this.client =
      deps.client ??
      new AgentClient({
        url: config.url,
        token: config.token,
        requestTimeoutMs: config.timing.requestTimeoutMs,
        claimTimeoutMarginMs: config.timing.claimTimeoutMarginMs,
        userAgent: `conductor-agent/${AGENT_VERSION}`,
      });
    this.closed = new Promise<void>((resolve, reject) => {
      this.resolveClosed = resolve;
      this.rejectClosed = reject;
    });
    this.closed.catch(() => {}); // a fatal error is reported through start() or by whoever awaits closed
    this.executor = {
      jobsDir: join(config.stateDir, 'jobs'),
      agentEnv: deps.jobEnv ?? process.env,
      cancelGraceMs: config.timing.cancelGraceMs,
      timeoutGraceMs: config.timing.timeoutGraceMs,
      outputLimitBytes: config.outputLimitBytes,
      ...(config.runAs ? { runAs: config.runAs } : {}),
      ...(config.runAsByOwner ? { runAsByOwner: config.runAsByOwner } : {}),
      ...(config.jobRoot ? { jobRoot: config.jobRoot } : {}),
      ...(config.jobRootIsHome ? { jobRootIsHome: true } : {}),
      nodeName: config.nodeName,
    };
    this.runnerDeps = {
      client: this.client,
      logger: this.logger,
      timing: config.timing,
      workerId: () => this.workerIdValue,
      session: () => this.sessionValue,
      reportSignal: this.reportsAbort.signal,
      onSessionLost: () => void this.reregister(this.sessionValue, 'a report was refused: unknown worker'),
    };
  }

  get state(): AgentState {
    return this.stateValue;
  }

  /** What the node offers jobs (known once start() has begun). */
  get resources(): NodeResources | undefined {
    return this.resourcesValue;
  }

  get workerId(): string {
    return this.workerIdValue;
  }

  /** The current registration's session, once registered. */
  get session(): string | undefined {
    return this.sessionValue;
  }

  /** Attempts this agent runs or holds an undelivered result for. */
  activeJobs(): JobRef[] {
    return [...this.runners.values()].map((r) => r.ref);
  }

  /** Attempts whose process is running. */
  runningJobs(): JobRef[] {
    return [...this.runners.values()].filter((r) => r.running).map((r) => r.ref);
  }

  /**
   * Prepares the state dir, picks up results left by a previous run, registers (retrying with backoff) and
   * starts heartbeating and claiming. Resolves once registered (or when stop() came first); rejects with
   * FatalAgentError when registration is refused, or with the state-dir error.
   */
  async start(): Promise<void> {
    if (this.stateValue !== 'new') throw new Error(`agent already ${this.stateValue}`);
    this.stateValue = 'starting';
    const { config, logger } = this;
    let leftovers: ReturnType<typeof scanLeftovers>;
    try {
      ensureStateDir(config.stateDir, {
        traversable: config.runAs !== undefined || config.runAsByOwner !== undefined,
      });
      this.releaseLock = acquireStateLock(config.stateDir);
      this.executor.containment = detectContainment(this.executor.jobsDir, config.containment);
      if (config.runAs === undefined && config.runAsByOwner === undefined) {
        openWarmStarts(this.executor.jobsDir, this.executor.containment);
      }
      logger.info(
        `conductor-agent ${AGENT_VERSION}: node ${config.nodeName}, ${config.cpus} CPUs, ` +
          `control plane ${config.url}, state dir ${config.stateDir}${config.drain ? ', drain on stop' : ''}, ` +
          `jobs run as ${describeRunAs(config)}` +
          `${config.jobRoot ? `, work_dir inside ${config.jobRoot}` : config.jobRootIsHome ? ", work_dir inside the user's home" : ''}`,
      );
      logger.info(`Job containment: ${this.executor.containment.description}`);
      this.detectResources();
      leftovers = scanLeftovers(this.executor.jobsDir);
    } catch (err) {
      this.finishClosed(err);
      throw err;
    }
    for (const orphan of leftovers.orphans) {
      logger.warn(
        `Job ${jobLabel(orphan.ref)} was running when the previous agent stopped; its result is lost` +
          (orphan.killed ? ' (its leftover processes were killed)' : ''),
      );
    }
    // Undelivered results are part of `running` at registration; their reports go out once registered.
    const registered = new Promise<boolean>((resolve) => {
      this.openRecoveredGate = resolve;
    });
    for (const { result, dir } of leftovers.results) {
      this.track(JobRunner.recover(result, dir, this.runnerDeps, registered));
    }

    try {
      await this.registerUntilDone(this.activeJobs(), 'initial');
    } catch (err) {
      await this.shutdown({ drain: false, fatal: err });
      throw err;
    }
    if (this.stateValue !== 'starting' || !this.sessionValue) return; // stopped meanwhile
    this.stateValue = 'running';
    this.openRecoveredGate?.(true);
    this.scheduleHeartbeat(this.heartbeatIntervalS * 1000);
    if (this.config.channel) this.firstChannelTry = this.connectChannel();
    this.claimLoopDone = this.claimLoop().catch((err) => {
      this.logger.error(`Claim loop stopped: ${describeError(err)}`);
      void this.shutdown({ drain: false, fatal: err });
    });
  }

  /**
   * Stops claiming; cancels running jobs (outcome `cancelled`, message `agent stopped`) or, with `drain`,
   * waits for them; delivers their results (for at most shutdownReportTimeoutMs after they ended), then
   * unregisters. Resolves when all is done. Safe to call more than once.
   */
  stop(options: { drain?: boolean } = {}): Promise<void> {
    const drain = options.drain ?? this.config.drain;
    return this.shutdown({ drain }).then(
      () => {},
      () => {},
    );
  }

  /** SIGKILLs every job's process group at once (the agent is about to exit without waiting). */
  killAllNow(): void {
    for (const runner of this.runners.values()) runner.process?.killNow();
  }

  // ---- registration -------------------------------------------------------------------------------------

  /**
   * Registers, retrying with backoff until it works or the agent stops; throws FatalAgentError on a refusal
   * that retrying will not fix (a 4xx other than 408, 409 and 429).
   */
  private async registerUntilDone(running: JobRef[] | undefined, why: 'initial' | 'again'): Promise<void> {
    const backoff = new Backoff(this.config.timing.registerBackoff);
    const { config, logger } = this;
    const previousSession = this.sessionValue ?? readSavedSession(config.stateDir);
    for (;;) {
      if (this.lifeAbort.signal.aborted) return;
      let response: RegisterResponse;
      const sentAt = Date.now();
      try {
        response = await this.client.register(
          {
            worker_id: config.nodeName,
            hostname: hostname(),
            cpus: config.cpus,
            ...this.resourcesValue,
            ...(config.labels ? { labels: config.labels } : {}),
            agent_version: AGENT_VERSION,
            running: running ?? this.activeJobs(),
            // Proves this is the same agent (or its restart) when the name's session is still live.
            ...(previousSession ? { previous_session: previousSession } : {}),
          },
          { signal: this.lifeAbort.signal },
        );
      } catch (err) {
        if (this.lifeAbort.signal.aborted) return;
        logger.error(`✗ Worker registration failed: ${describeError(err)}`);
        if (
          err instanceof AgentApiError &&
          err.status >= 400 &&
          err.status < 500 &&
          ![408, 409, 429].includes(err.status)
        ) {
          throw new FatalAgentError(`registration refused: ${err.message}`, { cause: err });
        }
        await sleep(backoff.next(), this.lifeAbort.signal);
        continue;
      }
      this.workerIdValue = response.worker_id || config.nodeName;
      this.executor.nodeName = this.workerIdValue;
      this.sessionValue = response.session;
      try {
        saveSession(config.stateDir, response.session);
      } catch (err) {
        logger.warn(`Cannot save the session in ${config.stateDir}: ${describeError(err)}`);
      }
      if (config.heartbeatIntervalS === undefined && response.heartbeat_interval_s > 0) {
        this.heartbeatIntervalS = response.heartbeat_interval_s;
      } else if (config.heartbeatIntervalS !== undefined) {
        this.heartbeatIntervalS = config.heartbeatIntervalS;
      }
      const wait = config.claimWaitS ?? response.claim_wait_s;
      if (typeof wait === 'number' && wait >= 0) this.claimWaitS = wait;
      if (typeof response.worker_ttl_s === 'number' && response.worker_ttl_s > 0) {
        this.workerTtlS = response.worker_ttl_s;
      }
      this.markContact(sentAt);
      logger.info(`✓ Worker registered: ${this.workerIdValue} (${config.cpus} CPUs)`);
      // Attempts the server took away while we were gone (reaped, requeued, cancelled): stop them.
      for (const ref of response.cancel ?? []) {
        const runner = this.runners.get(jobKey(ref));
        if (runner?.running && !runner.process?.terminating) {
          logger.warn(`Job ${jobKey(ref)} is no longer assigned to this worker: stopping it`);
          runner.cancel('no longer assigned to this worker', 'registration');
        }
      }
      logger.debug(
        `session ${response.session}, heartbeat every ${this.heartbeatIntervalS} s, claim wait ${this.claimWaitS} s` +
          (why === 'again' ? `, ${this.activeJobs().length} job(s) kept` : ''),
      );
      return;
    }
  }

  /**
   * Memory (the machine's less the reserve, or TOTAL_MEMORY), GPUs (GPUS, else nvidia-smi), the configured
   * gres, features and partitions, and how memory limits are enforced; logged once each.
   */
  private detectResources(): void {
    const { config, logger } = this;
    let gpus = config.gpus;
    if (!gpus) {
      const found = detectGpus(process.env.PATH);
      if (found.warning) logger.warn(found.warning);
      gpus = found.gpus;
    }
    const memory = detectMemoryEnforcement(this.executor.containment!, config.timing.memorySampleMs);
    this.resourcesValue = {
      cpus: config.cpus,
      memory_mb: jobMemoryMb(config.memoryMb, config.memoryReserveMb),
      gpus,
      gres: config.gres ?? {},
      features: config.features ?? [],
      partitions: config.partitions ?? [],
      memory_enforcement: memory.kind,
    };
    this.executor.memoryEnforcement = memory.kind;
    this.executor.memorySampleMs = config.timing.memorySampleMs;
    this.executor.nodeHasGpus = gpus.length > 0;
    logger.info(`Resources: ${describeResources(this.resourcesValue)}`);
    logger.info(`Memory enforcement: ${memory.description}`);
  }

  /**
   * Registers again after the server forgot our session (`failedSession`): one re-registration at a time,
   * and none when the session has already been replaced since. Running jobs keep running.
   */
  private reregister(failedSession: string | undefined, reason: string): Promise<void> {
    if (this.reregistering) return this.reregistering;
    if (failedSession !== this.sessionValue || this.lifeAbort.signal.aborted) return Promise.resolve();
    this.logger.warn(`Registering again: ${reason}`);
    const run = this.registerUntilDone(undefined, 'again')
      .catch((err) => {
        this.logger.error(`Giving up: ${describeError(err)}`);
        void this.shutdown({ drain: false, fatal: err });
      })
      .finally(() => {
        if (this.reregistering === run) this.reregistering = undefined;
        this.channelAfterRegistration();
      });
    this.reregistering = run;
    return run;
  }

  // ---- heartbeat ----------------------------------------------------------------------------------------

  private scheduleHeartbeat(delayMs: number): void {
    if (this.lifeAbort.signal.aborted || this.channelHeld()) return;
    if (this.heartbeatTimer) clearTimeout(this.heartbeatTimer);
    this.heartbeatTimer = setTimeout(() => {
      this.heartbeatTimer = undefined;
      const beat = this.heartbeat().catch((err) => this.logger.error(`Heartbeat: ${describeError(err)}`));
      this.heartbeatInFlight = beat;
      void beat.finally(() => {
        if (this.heartbeatInFlight === beat) this.heartbeatInFlight = undefined;
      });
    }, delayMs);
  }

  private async heartbeat(): Promise<void> {
    const began = Date.now();
    let failed = false;
    try {
      if (this.reregistering) await this.reregistering;
      if (this.lifeAbort.signal.aborted || this.channelHeld()) return;
      const session = this.sessionValue;
      if (!session) return;
      try {
        const response = await this.client.heartbeat(
          {
            worker_id: this.workerIdValue,
            session,
            ...(this.draining ? { status: 'draining' as const } : {}),
          },
          { signal: this.lifeAbort.signal },
        );
        this.logger.info(`Heartbeat sent: ${this.workerIdValue}`);
        this.markContact(began);
        this.heartbeatRetry.reset();
        this.noteServerStatus(response?.status);
        if (this.config.heartbeatIntervalS === undefined && (response?.heartbeat_interval_s ?? 0) > 0) {
          this.heartbeatIntervalS = response.heartbeat_interval_s;
        }
        this.applyCancels(response?.cancel, 'heartbeat');
        this.applySignals(response?.signal, 'heartbeat');
      } catch (err) {
        if (this.lifeAbort.signal.aborted) return;
        failed = true;
        this.logger.warn(`Heartbeat failed: ${describeError(err)}`);
        if (needsReregistration(err))
          void this.reregister(session, `heartbeat answered ${describeError(err)}`);
      }
    } finally {
      const elapsed = Date.now() - began;
      this.scheduleHeartbeat(
        failed ? this.heartbeatRetryDelay() : Math.max(0, this.heartbeatIntervalS * 1000 - elapsed),
      );
    }
  }

  /** The worker's status as a heartbeat or claim answer has it (an operator may have drained the node). */
  private noteServerStatus(status: 'ready' | 'draining' | undefined): void {
    if (!status || status === this.serverStatus) return;
    if (this.serverStatus !== undefined || status === 'draining')
      this.logger.info(`Worker status: ${status}`);
    this.serverStatus = status;
  }

  /** See HEARTBEAT_RETRY. */
  private heartbeatRetryDelay(): number {
    const intervalMs = this.heartbeatIntervalS * 1000;
    const ttlMs = (this.workerTtlS ?? 2 * this.heartbeatIntervalS) * 1000;
    const left = this.lastContactAt + ttlMs - Date.now();
    const backoff = this.heartbeatRetry.next();
    // Jittered within the bound too, so that agents that failed together do not retry together.
    const bound = left > 0 ? (left / 3) * (0.5 + Math.random() / 2) : intervalMs;
    return Math.max(HEARTBEAT_RETRY_MIN_MS, Math.min(backoff, bound, intervalMs));
  }

  // ---- out of touch: stopping requeue jobs ---------------------------------------------------------------

  /**
   * How long without contact before the agent stops its `requeue` jobs: CONDUCTOR_STOP_AFTER_DISCONNECT, by
   * default the server's TTL (after which the server may have declared the node lost and placed those jobs
   * elsewhere); 0 never.
   */
  private stopAfterDisconnectS(): number {
    return this.config.stopAfterDisconnectS ?? this.workerTtlS ?? 0;
  }

  private markContact(sentAt: number): void {
    this.lastContactAt = Math.max(this.lastContactAt, sentAt);
    this.armFence();
  }

  private armFence(): void {
    if (this.fenceTimer) clearTimeout(this.fenceTimer);
    this.fenceTimer = undefined;
    const afterS = this.stopAfterDisconnectS();
    if (!(afterS > 0) || this.lifeAbort.signal.aborted) return;
    const due = this.lastContactAt + afterS * 1000 - Date.now();
    this.fenceTimer = setTimeout(() => this.fence(afterS), Math.max(0, due));
  }

  /**
   * Out of touch for `afterS`: stops the running `requeue` jobs, which the server may be running elsewhere by
   * now (Nomad's stop_on_client_after). Other jobs run on: the server never runs them again, and a control
   * plane that was down itself gives its nodes a TTL of grace when it is back. Checks again every heartbeat
   * interval until a heartbeat gets through.
   */
  private fence(afterS: number): void {
    this.fenceTimer = undefined;
    if (this.lifeAbort.signal.aborted) return;
    const now = Date.now();
    for (const runner of this.runners.values()) {
      // An attempt handed out after the last heartbeat came from a server that still counted this node in:
      // its own hand-out is its last contact.
      const contact = Math.max(this.lastContactAt, runner.acceptedAt);
      if (runner.requeue && runner.running && now - contact >= afterS * 1000) {
        runner.stopLost(`no contact with the control plane for ${afterS} s`);
      }
    }
    this.fenceTimer = setTimeout(() => this.fence(afterS), this.heartbeatIntervalS * 1000);
  }

  // ---- claiming -----------------------------------------------------------------------------------------

  /**
   * Claims: long polls while the channel is not held; while it is, one claim (`wait_s` 0) each time one is
   * owed (the channel opened, a wake), however many wakes came meanwhile.
   */
  private async claimLoop(): Promise<void> {
    const backoff = new Backoff(this.config.timing.claimBackoff);
    const signal = this.claimAbort.signal;
    if (this.config.channel) {
      // The channel's first try is quick: open, the first claim need not be a long poll.
      const wait = new AbortController();
      const stop = () => wait.abort();
      signal.addEventListener('abort', stop, { once: true });
      await Promise.race([this.firstChannelTry, sleep(FIRST_CHANNEL_WAIT_MS, wait.signal)]);
      wait.abort();
      signal.removeEventListener('abort', stop);
    }
    while (!signal.aborted) {
      if (this.reregistering) {
        await this.reregistering;
        continue;
      }
      const session = this.sessionValue;
      if (!session) return;
      const pushed = this.channelHeld();
      if (pushed && !this.claimWanted) {
        await this.claimKicked(signal);
        continue;
      }
      this.claimWanted = false;
      const began = Date.now();
      let response: Awaited<ReturnType<AgentClient['claim']>>;
      try {
        response = await this.client.claim(
          { worker_id: this.workerIdValue, session, wait_s: pushed ? 0 : this.claimWaitS },
          { signal },
        );
        backoff.reset();
      } catch (err) {
        if (signal.aborted) return;
        if (needsReregistration(err)) {
          await this.reregister(session, `claim answered ${describeError(err)}`);
          continue;
        }
        if (pushed) this.claimWanted = true; // still owed
        const delay = backoff.next();
        const log = err instanceof AgentApiError && err.status > 0 && err.status < 500 ? 'error' : 'warn';
        this.logger[log](`Claim failed: ${describeError(err)} (retrying in ${(delay / 1000).toFixed(1)} s)`);
        await sleep(delay, signal);
        continue;
      }
      this.noteServerStatus(response?.status);
      // Start first, then cancel: a job assigned and cancelled in one answer is started and reported cancelled.
      let news = 0;
      if (!signal.aborted)
        for (const assignment of response?.jobs ?? []) news += this.accept(assignment) ? 1 : 0;
      news += this.applyCancels(response?.cancel, 'claim');
      news += this.applySignals(response?.signal, 'claim');
      // Answers with nothing new (assignments whose `started` is still on its way, cancels already acted on, a
      // server that does not long-poll) come back at once: pace the loop instead of spinning.
      const elapsed = Date.now() - began;
      if (!pushed && news === 0 && elapsed < 1000) await sleep(1000 - elapsed, signal);
    }
  }

  /** Resolves at the next kickClaims() (or when `signal` aborts). */
  private claimKicked(signal: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      if (signal.aborted) return resolve();
      const done = () => {
        signal.removeEventListener('abort', done);
        if (this.claimKick === done) this.claimKick = undefined;
        resolve();
      };
      this.claimKick = done;
      signal.addEventListener('abort', done, { once: true });
    });
  }

  /** Wakes the claim loop if it waits for a wake (to claim, or to long-poll again once the channel is gone). */
  private kickClaims(): void {
    this.claimKick?.();
  }

  /** One more claim is owed (coalesced with any other owed before it is made). */
  private wantClaim(): void {
    this.claimWanted = true;
    this.kickClaims();
  }

  // ---- the push channel ---------------------------------------------------------------------------------

  /** Open, or being replaced at once: the agent neither heartbeats nor long-polls. */
  private channelHeld(): boolean {
    return this.channel !== undefined || this.channelSwitching;
  }

  /**
   * One try at opening the channel with the current session (none when one is open or being opened).
   * `switching`: the channel was just closed to be replaced; no HTTP unless this try fails.
   */
  private connectChannel(switching = false): Promise<void> {
    if (this.channelConnecting) return this.channelConnecting;
    if (!this.config.channel || this.channel || this.stateValue !== 'running' || !this.sessionValue) {
      if (switching) this.resumeHttp();
      return Promise.resolve();
    }
    if (this.channelTimer) clearTimeout(this.channelTimer);
    this.channelTimer = undefined;
    const session = this.sessionValue;
    if (this.reregistering) {
      // The re-registration reconnects when it is done (heartbeats and claims wait for it meanwhile).
      this.channelRegisterAsked = true;
      return Promise.resolve();
    }
    if (switching) this.channelSwitching = true;
    const attempt = this.tryChannel(session).finally(() => {
      this.channelConnecting = undefined;
      if (this.channelAgain) {
        this.channelAgain = false;
        if (!this.channel) void this.connectChannel();
      }
    });
    this.channelConnecting = attempt;
    return attempt;
  }

  private async tryChannel(session: string): Promise<void> {
    let ws: WebSocket;
    try {
      ws = await this.client.openChannel(
        { worker_id: this.workerIdValue, session },
        { signal: this.channelAbort.signal, timeoutMs: this.config.timing.requestTimeoutMs },
      );
    } catch (err) {
      if (this.channelAbort.signal.aborted || this.stateValue !== 'running') return;
      this.channelFailed(err, session);
      return;
    }
    if (this.stateValue !== 'running' || this.channel) {
      this.closeChannelSocket(ws, 1000, 'agent stopping');
      return;
    }
    if (this.sessionValue !== session) {
      // Registered again meanwhile: this one is for the old session.
      this.closeChannelSocket(ws, 1000, 'registered again');
      this.channelAgain = true;
      return;
    }
    this.channelOpened(ws, session);
  }

  private channelOpened(ws: WebSocket, session: string): void {
    this.channel = ws;
    this.channelSession = session;
    this.channelSwitching = false;
    this.channelGotPong = false;
    this.channelPingsSentAt = [];
    ws.on('message', (text) => this.onChannelMessage(ws, text));
    ws.on('close', (info) => this.onChannelClose(ws, info));
    if (this.heartbeatTimer) clearTimeout(this.heartbeatTimer);
    this.heartbeatTimer = undefined;
    this.logger.info('Channel open: pushed assignments, heartbeats as pings');
    this.channelPing();
    this.armPongDeadline(ws);
    this.wantClaim(); // whatever was pushed while the channel was not open
  }

  /** Sends `ping` now and every heartbeat interval while the channel is open. */
  private channelPing(): void {
    const ws = this.channel;
    if (!ws) return;
    this.channelPingsSentAt.push(Date.now());
    if (this.channelPingsSentAt.length > 8) this.channelPingsSentAt.shift();
    ws.send('ping');
    this.channelPingTimer = setTimeout(() => this.channelPing(), this.heartbeatIntervalS * 1000);
  }

  private armPongDeadline(ws: WebSocket): void {
    if (this.channelPongTimer) clearTimeout(this.channelPongTimer);
    const afterMs = 2 * this.heartbeatIntervalS * 1000;
    this.channelPongTimer = setTimeout(() => {
      this.channelPongTimer = undefined;
      if (this.channel === ws) this.channelDropped(ws, `no pong for ${(afterMs / 1000).toFixed(0)} s`);
    }, afterMs);
  }

  private onChannelMessage(ws: WebSocket, text: string): void {
    if (ws !== this.channel) return;
    if (text === 'pong') {
      const sentAt = this.channelPingsSentAt.shift();
      if (sentAt === undefined) return; // not ours
      // The server took it as a heartbeat.
      this.channelGotPong = true;
      this.channelFailures = 0;
      this.markContact(sentAt);
      this.armPongDeadline(ws);
      this.logger.info(`Heartbeat sent: ${this.workerIdValue}`);
      return;
    }
    const message = parseChannelMessage(text);
    if (message?.type === 'wake' && message.jobs) {
      // The assignments came with the wake: no claim (their started reports say they arrived).
      this.logger.debug(`Channel: wake with ${message.jobs.length} assignment(s)`);
      for (const assignment of message.jobs) this.accept(assignment, 'pushed');
    } else if (message?.type === 'wake') {
      this.logger.debug('Channel: wake');
      this.wantClaim();
    } else if (message?.type === 'register') {
      this.logger.debug('Channel: register again');
      this.channelRegisterAsked = true;
      void this.reregister(this.channelSession, 'the control plane asked on the channel');
    } else {
      this.logger.debug(`Channel: ignored a message: ${text.slice(0, 200)}`);
    }
  }

  private onChannelClose(ws: WebSocket, info: WebSocketCloseInfo): void {
    if (ws !== this.channel) return;
    const why = `closed${info.wasClean ? '' : ' without a close handshake'}, code ${info.code}${info.reason ? ` ${info.reason}` : ''}${info.error ? `: ${describeError(info.error)}` : ''}`;
    this.channelDropped(ws, why, true);
  }

  /** Lets go of the open channel: timers, and the socket (closed, unless it is already). */
  private releaseChannel(code: number, reason: string): void {
    const ws = this.channel;
    this.channel = undefined;
    this.channelSession = undefined;
    if (this.channelPingTimer) clearTimeout(this.channelPingTimer);
    if (this.channelPongTimer) clearTimeout(this.channelPongTimer);
    this.channelPingTimer = undefined;
    this.channelPongTimer = undefined;
    this.channelPingsSentAt = [];
    if (ws) this.closeChannelSocket(ws, code, reason);
  }

  private closeChannelSocket(ws: WebSocket, code: number, reason: string): void {
    if (ws.state === 'closed') return;
    const closed = new Promise<void>((resolve) => ws.once('close', () => resolve()));
    this.channelClosing.add(closed);
    void closed.then(() => this.channelClosing.delete(closed));
    ws.close(code, reason);
  }

  /**
   * The channel broke: a new try after a random delay (spread over the window). A channel that worked (a
   * deploy or restart dropped it, most likely every agent's at once) holds HTTP until that try, which then
   * catches up with a claim: a thousand agents then reconnect spread over the window instead of all sending
   * a heartbeat and a long poll at the same moment. HTTP comes back when the try fails (channelFailed), or
   * at once when the channel never worked.
   */
  private channelDropped(ws: WebSocket, why: string, closed = false): void {
    if (ws !== this.channel) return;
    this.releaseChannel(4000, 'dropped');
    if (this.stateValue !== 'running') return;
    if (!this.channelGotPong) this.channelFailures++; // it never worked: back off
    const delay = channelReconnectDelayMs(this.channelFailures, this.config.channelReconnectWindowS);
    // Closed by the server (or its TCP connection ended): a restart. Pongs that stopped coming are another
    // matter (a control plane that hangs): HTTP at once then. So is a wait that would leave the server
    // without a heartbeat for more than half of what its TTL has left (a short TTL, a long window).
    const ttlMs = (this.workerTtlS ?? 2 * this.heartbeatIntervalS) * 1000;
    const leftMs = this.lastContactAt + ttlMs - Date.now();
    const worked = this.channelGotPong && closed && delay < leftMs / 2;
    this.logger.warn(
      worked
        ? `Channel dropped (${why}): reconnecting in ${(delay / 1000).toFixed(1)} s (HTTP heartbeats and long polls if that fails)`
        : `Channel dropped (${why}): HTTP heartbeats and long polls until it reconnects in ${(delay / 1000).toFixed(1)} s`,
    );
    if (worked) this.channelSwitching = true;
    else this.resumeHttp();
    this.scheduleChannel(delay);
  }

  /** Opening the channel failed: HTTP meanwhile, and the next try when the failure says. */
  private channelFailed(err: unknown, session: string): void {
    const kind = channelRefusal(err);
    this.resumeHttp();
    if (kind === 'register') {
      this.logger.debug(`Channel refused: ${describeError(err)}; registering again`);
      this.channelRegisterAsked = true;
      void this.reregister(session, `the channel answered ${describeError(err)}`);
      // Registered again already (under another session): try that one.
      if (!this.reregistering && this.sessionValue !== session) this.scheduleChannel(0);
      return;
    }
    if (kind === 'absent') {
      const delay = channelAbsentDelayMs();
      this.logger.debug(
        `No channel at the control plane (${describeError(err)}): HTTP heartbeats and long polls; asking again in ${Math.round(delay / 1000)} s`,
      );
      this.scheduleChannel(delay);
      return;
    }
    this.channelFailures++;
    const delay = channelReconnectDelayMs(this.channelFailures, this.config.channelReconnectWindowS);
    this.logger.debug(`Channel not open: ${describeError(err)}; next try in ${(delay / 1000).toFixed(1)} s`);
    this.scheduleChannel(delay);
  }

  private scheduleChannel(delayMs: number): void {
    if (this.channelTimer) clearTimeout(this.channelTimer);
    this.channelTimer = undefined;
    if (this.stateValue !== 'running') return;
    this.channelTimer = setTimeout(() => {
      this.channelTimer = undefined;
      void this.connectChannel();
    }, delayMs);
  }

  /** Heartbeats and long polls again (the channel is not held): a heartbeat at once, unless one is on its way. */
  private resumeHttp(): void {
    this.channelSwitching = false;
    if (!this.heartbeatTimer && !this.heartbeatInFlight) this.scheduleHeartbeat(0);
    this.kickClaims();
  }

  /**
   * After a re-registration: a channel opened with the old session is replaced at once, and so is one the
   * control plane asked to re-register for; one waiting for its next try keeps waiting (it uses the new one).
   */
  private channelAfterRegistration(): void {
    if (!this.config.channel || this.stateValue !== 'running' || !this.sessionValue) return;
    const asked = this.channelRegisterAsked;
    this.channelRegisterAsked = false;
    if (this.channel && this.channelSession === this.sessionValue) return; // the same session: keep it
    if (!this.channel && !asked) return;
    const wasOpen = this.channel !== undefined;
    if (wasOpen) this.releaseChannel(1000, 'registered again');
    void this.connectChannel(wasOpen);
  }

  /** On shutdown: no more tries; the open channel closed cleanly; heartbeats again while jobs end. */
  private stopChannel(): void {
    this.channelAbort.abort();
    if (this.channelTimer) clearTimeout(this.channelTimer);
    this.channelTimer = undefined;
    const held = this.channelHeld();
    this.channelSwitching = false;
    this.releaseChannel(1000, 'agent stopping');
    if (held && !this.heartbeatTimer && !this.heartbeatInFlight) {
      this.scheduleHeartbeat(Math.max(0, this.lastContactAt + this.heartbeatIntervalS * 1000 - Date.now()));
    }
  }

  /**
   * Starts an assignment unless it is a re-delivery (claimed, or pushed, again: by (job_id, attempt)); true
   * when it was new.
   */
  private accept(assignment: Assignment, via: 'claimed' | 'pushed' = 'claimed'): boolean {
    const key = jobKey(assignment);
    this.pruneRecent();
    if (this.runners.has(key) || this.recent.has(key)) {
      this.logger.debug(`Job ${jobLabel(assignment)}: assignment delivered again, ignored`);
      return false;
    }
    if (this.stateValue !== 'running') return false;
    for (const runner of this.runners.values()) {
      if (
        runner.ref.job_id === assignment.job_id &&
        runner.ref.attempt < assignment.attempt &&
        runner.running
      ) {
        runner.cancel(`superseded by attempt ${assignment.attempt}`);
      }
    }
    const busy = [...this.runners.values()].reduce((n, r) => n + (r.running ? r.cpus : 0), 0);
    if (busy + assignment.cpus > this.config.cpus) {
      this.logger.warn(
        `Job ${jobLabel(assignment)} needs ${assignment.cpus} CPUs; ${busy} of ${this.config.cpus} are in use already`,
      );
    }
    let runner: JobRunner;
    try {
      runner = JobRunner.launch(assignment, this.runnerDeps, this.executor, via === 'pushed');
    } catch (err) {
      // The job folder could not be written (disk full, permissions): report it, or the assignment would hold
      // its CPUs, handed out again and again, and never start.
      const message = `cannot prepare its folder: ${describeError(err)}`;
      this.logger.error(`Job ${jobLabel(assignment)}: ${message}`);
      runner = JobRunner.unstartable(assignment, this.runnerDeps, message);
    }
    this.track(runner);
    return true;
  }

  private track(runner: JobRunner): void {
    this.runners.set(runner.key, runner);
    void runner.done.then(() => {
      this.runners.delete(runner.key);
      this.recent.set(runner.key, Date.now());
    });
  }

  private pruneRecent(): void {
    const cutoff = Date.now() - RECENT_TTL_MS;
    for (const [key, at] of this.recent) {
      if (at >= cutoff) break; // insertion order is time order
      this.recent.delete(key);
    }
  }

  /** Cancels the running attempts named; returns how many were not being cancelled already. */
  private applyCancels(refs: JobRef[] | undefined, source: string): number {
    let acted = 0;
    for (const ref of refs ?? []) {
      const runner = this.runners.get(jobKey(ref));
      if (runner?.running && !runner.process?.terminating) {
        runner.cancel('cancelled by user', source);
        acted++;
      }
    }
    return acted;
  }

  /** Delivers signals to the running attempts named; returns how many were delivered. */
  private applySignals(signals: JobSignal[] | undefined, source: string): number {
    let acted = 0;
    for (const signal of signals ?? []) {
      const runner = this.runners.get(jobKey(signal));
      if (runner?.running) {
        runner.signal(signal.signal, signal.batch_only, source);
        acted++;
      }
    }
    return acted;
  }

  // ---- shutdown -----------------------------------------------------------------------------------------

  /** Stops the agent once; later calls share the first one's shutdown. */
  private shutdown(options: { drain: boolean; fatal?: unknown }): Promise<void> {
    this.stopping ??= this.runShutdown(options);
    return this.stopping;
  }

  private async runShutdown(options: { drain: boolean; fatal?: unknown }): Promise<void> {
    if (this.stateValue === 'stopped') return;
    const wasRegistered = this.sessionValue !== undefined && this.stateValue === 'running';
    this.stateValue = 'stopping';
    this.claimAbort.abort();
    this.stopChannel();
    const { logger } = this;
    if (!wasRegistered) {
      this.lifeAbort.abort(); // nothing to keep alive: stop registering
      this.openRecoveredGate?.(false); // undelivered results stay on disk
    }

    const running = [...this.runners.values()].filter((r) => r.running);
    if (running.length > 0) {
      if (options.drain && !options.fatal) {
        logger.info(`Draining: waiting for ${running.length} running job(s) to finish`);
        this.draining = true;
        // Tell the server at once, so that it places nothing more here while the jobs finish.
        if (this.heartbeatTimer) {
          clearTimeout(this.heartbeatTimer);
          this.scheduleHeartbeat(0);
        }
      } else {
        logger.info(`Stopping: cancelling ${running.length} running job(s)`);
        for (const runner of running) runner.cancel('agent stopped');
      }
    }
    await this.claimLoopDone;
    await Promise.all([...this.runners.values()].map((r) => r.processDone));
    // No job starts from here on: the spare shell goes (before the cgroup holding it is removed).
    await closeWarmStarts(this.executor.jobsDir);

    // Results of ended jobs: give their reports a bounded time, then leave them on disk for the next start.
    const all = () => Promise.all([...this.runners.values()].map((r) => r.done));
    const timeout = new AbortController();
    await Promise.race([all(), sleep(this.config.timing.shutdownReportTimeoutMs, timeout.signal)]);
    timeout.abort();
    // Unregistering would make the server end those jobs as lost (NODE_FAIL, or run them again) and refuse
    // their results at the next start. Staying registered, the next start within the TTL delivers them.
    const undelivered = this.runners.size;
    if (undelivered > 0) {
      logger.warn(
        `${undelivered} job result(s) not delivered yet; giving up until the next start, and not unregistering ` +
          `(start the agent again within ${this.workerTtlS ?? 2 * this.heartbeatIntervalS} s to deliver them)`,
      );
    }
    this.reportsAbort.abort();
    await all();

    this.lifeAbort.abort();
    if (this.heartbeatTimer) clearTimeout(this.heartbeatTimer);
    this.heartbeatTimer = undefined;
    if (this.fenceTimer) clearTimeout(this.fenceTimer);
    this.fenceTimer = undefined;
    await this.heartbeatInFlight;
    await this.reregistering;
    await this.channelConnecting;
    await Promise.all(this.channelClosing);

    const session = this.sessionValue;
    if (session && !options.fatal && undelivered === 0) {
      try {
        await this.client.unregister(
          { worker_id: this.workerIdValue, session },
          { timeoutMs: this.config.timing.unregisterTimeoutMs },
        );
        logger.info(`Worker unregistered: ${this.workerIdValue}`);
      } catch (err) {
        logger.warn(`Unregister failed: ${describeError(err)}`);
      }
    }
    this.finishClosed(options.fatal);
  }

  private finishClosed(fatal?: unknown): void {
    this.stateValue = 'stopped';
    closeAgentSupervisor(this.executor.jobsDir);
    void closeWarmStarts(this.executor.jobsDir);
    removeContainment(this.executor.containment);
    this.releaseLock?.();
    this.releaseLock = undefined;
    if (fatal) this.rejectClosed(fatal);
    else this.resolveClosed();
  }
}
