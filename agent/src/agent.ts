/**
 * The node agent: registers, heartbeats on its own timer, long-polls for assignments, runs them through
 * JobRunner, and shuts down cleanly (cancel or drain, then unregister).
 *
 *   const agent = new Agent(agentConfig({ url, nodeName, cpus, stateDir }));
 *   await agent.start();     // resolves once registered
 *   ...
 *   await agent.stop();      // or agent.stop({ drain: true })
 */
import { hostname } from 'node:os';
import { join } from 'node:path';
import { Backoff, sleep } from './backoff.ts';
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
      });
    this.reregistering = run;
    return run;
  }

  // ---- heartbeat ----------------------------------------------------------------------------------------

  private scheduleHeartbeat(delayMs: number): void {
    if (this.lifeAbort.signal.aborted) return;
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
      if (this.lifeAbort.signal.aborted) return;
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
        if (response?.status && response.status !== this.serverStatus) {
          if (this.serverStatus !== undefined || response.status === 'draining') {
            this.logger.info(`Worker status: ${response.status}`);
          }
          this.serverStatus = response.status;
        }
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

  private async claimLoop(): Promise<void> {
    const backoff = new Backoff(this.config.timing.claimBackoff);
    const signal = this.claimAbort.signal;
    while (!signal.aborted) {
      if (this.reregistering) {
        await this.reregistering;
        continue;
      }
      const session = this.sessionValue;
      if (!session) return;
      const began = Date.now();
      let response: Awaited<ReturnType<AgentClient['claim']>>;
      try {
        response = await this.client.claim(
          { worker_id: this.workerIdValue, session, wait_s: this.claimWaitS },
          { signal },
        );
        backoff.reset();
      } catch (err) {
        if (signal.aborted) return;
        if (needsReregistration(err)) {
          await this.reregister(session, `claim answered ${describeError(err)}`);
          continue;
        }
        const delay = backoff.next();
        const log = err instanceof AgentApiError && err.status > 0 && err.status < 500 ? 'error' : 'warn';
        this.logger[log](`Claim failed: ${describeError(err)} (retrying in ${(delay / 1000).toFixed(1)} s)`);
        await sleep(delay, signal);
        continue;
      }
      // Start first, then cancel: a job assigned and cancelled in one answer is started and reported cancelled.
      let news = 0;
      if (!signal.aborted)
        for (const assignment of response?.jobs ?? []) news += this.accept(assignment) ? 1 : 0;
      news += this.applyCancels(response?.cancel, 'claim');
      news += this.applySignals(response?.signal, 'claim');
      // Answers with nothing new (assignments whose `started` is still on its way, cancels already acted on, a
      // server that does not long-poll) come back at once: pace the loop instead of spinning.
      const elapsed = Date.now() - began;
      if (news === 0 && elapsed < 1000) await sleep(1000 - elapsed, signal);
    }
  }

  /** Starts an assignment unless it is a re-delivery; true when it was new. */
  private accept(assignment: Assignment): boolean {
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
      runner = JobRunner.launch(assignment, this.runnerDeps, this.executor);
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
    removeContainment(this.executor.containment);
    this.releaseLock?.();
    this.releaseLock = undefined;
    if (fatal) this.rejectClosed(fatal);
    else this.resolveClosed();
  }
}
