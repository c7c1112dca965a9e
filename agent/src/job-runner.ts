/**
 * The life of one assignment on this node: start it, report `started`, stream its output, and deliver its
 * result (kept in `result.json` until the control plane acknowledged it). Also used for results a previous
 * run of the agent left on disk.
 */
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Backoff, sleep } from './backoff.ts';
import {
  AgentApiError,
  type AgentClient,
  isRetryable,
  isStaleAssignment,
  needsReregistration,
} from './client.ts';
import type { AgentTiming } from './config.ts';
import {
  type ExecutorOptions,
  type JobProcess,
  type JobResult,
  STDERR_FILE,
  STDOUT_FILE,
  startJob,
} from './executor.ts';
import { type AgentLogger, describeError } from './log.ts';
import { OutputStreamer, type SendOutcome } from './output-streamer.ts';
import type { Assignment, ExitCode, JobOutcome, JobRef } from './protocol.ts';

export const RESULT_FILE = 'result.json';

export interface StoredResult extends JobRef, JobResult {
  ended_at: string;
}

export function jobKey(ref: JobRef): string {
  return `${ref.job_id}:${ref.attempt}`;
}

/** `12.1`, how logs name an attempt. */
export function jobLabel(ref: JobRef): string {
  return `${ref.job_id}.${ref.attempt}`;
}

/** Writes `result.json` atomically (temp file + rename). */
export function writeResultFile(dir: string, result: StoredResult): void {
  const path = join(dir, RESULT_FILE);
  writeFileSync(`${path}.tmp`, `${JSON.stringify(result)}\n`, { mode: 0o600 });
  renameSync(`${path}.tmp`, path);
}

const OUTCOMES: readonly JobOutcome[] = [
  'exited',
  'cancelled',
  'timeout',
  'failed_to_start',
  'lost',
  'out_of_memory',
];

/** The stored result of a job folder, or undefined when there is none (or it is unreadable). */
export function readResultFile(dir: string, ref: JobRef): StoredResult | undefined {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(join(dir, RESULT_FILE), 'utf8'));
  } catch {
    return undefined;
  }
  const r = raw as Partial<StoredResult>;
  if (typeof r.exit_code !== 'string' || !/^\d+:\d+$/.test(r.exit_code)) return undefined;
  if (!OUTCOMES.includes(r.outcome as JobOutcome)) return undefined;
  return {
    job_id: ref.job_id,
    attempt: ref.attempt,
    exit_code: r.exit_code as ExitCode,
    outcome: r.outcome as JobOutcome,
    ...(typeof r.message === 'string' ? { message: r.message } : {}),
    ...(typeof r.max_rss_kb === 'number' && Number.isSafeInteger(r.max_rss_kb) && r.max_rss_kb > 0
      ? { max_rss_kb: r.max_rss_kb }
      : {}),
    ended_at: typeof r.ended_at === 'string' ? r.ended_at : new Date().toISOString(),
  };
}

export type Delivery<T> =
  | { kind: 'ok'; value: T }
  | { kind: 'stale' }
  | { kind: 'mismatch'; expected: number }
  | { kind: 'rejected'; error: unknown }
  | { kind: 'aborted' };

export interface JobRunnerDeps {
  client: AgentClient;
  logger: AgentLogger;
  timing: AgentTiming;
  /** The worker id reports are sent as. */
  workerId: () => string;
  /** The agent's session now (a pushed assignment's started report carries it). */
  session: () => string | undefined;
  /** Aborted when the agent gives up delivering reports (shutdown); results then stay on disk. */
  reportSignal: AbortSignal;
  /** The server no longer knows our session. */
  onSessionLost: () => void;
}

/**
 * Sends one report until it is delivered: retries network errors, timeouts, 5xx, 408, 429, 401/403 (a token
 * fixed on the server heals) and unknown-worker answers (after asking for a re-registration) with backoff,
 * forever unless `reportSignal` aborts.
 */
export async function deliver<T>(
  deps: JobRunnerDeps,
  label: string,
  call: (signal: AbortSignal) => Promise<T>,
): Promise<Delivery<T>> {
  const backoff = new Backoff(deps.timing.reportBackoff);
  const signal = deps.reportSignal;
  for (;;) {
    if (signal.aborted) return { kind: 'aborted' };
    try {
      return { kind: 'ok', value: await call(signal) };
    } catch (err) {
      if (signal.aborted) return { kind: 'aborted' };
      if (isStaleAssignment(err)) return { kind: 'stale' };
      if (err instanceof AgentApiError && err.status === 409 && err.code === 'output_offset_mismatch') {
        const expected = (err.details as { expected?: unknown } | undefined)?.expected;
        if (typeof expected === 'number' && Number.isSafeInteger(expected) && expected >= 0) {
          return { kind: 'mismatch', expected };
        }
        return { kind: 'rejected', error: err };
      }
      const authProblem = err instanceof AgentApiError && (err.status === 401 || err.status === 403);
      if (needsReregistration(err)) deps.onSessionLost();
      else if (!isRetryable(err) && !authProblem) return { kind: 'rejected', error: err };
      const attempt = backoff.attempts + 1;
      if (attempt === 1 || attempt % 10 === 0) {
        deps.logger.warn(`${label} failed (attempt ${attempt}, retrying): ${describeError(err)}`);
      }
      await sleep(backoff.next(), signal);
    }
  }
}

export class JobRunner {
  readonly ref: JobRef;
  readonly key: string;
  readonly label: string;
  readonly dir: string;
  /** The process, for an attempt started by this agent run (none for a recovered result). */
  readonly process: JobProcess | undefined;
  /** Resolves when the job's processes are gone. */
  readonly processDone: Promise<void>;
  /** Resolves when the runner is finished with the attempt (result delivered or dropped, or left on disk). */
  readonly done: Promise<void>;
  /** CPUs the attempt was given (0 for a recovered result). */
  readonly cpus: number;
  /** The job may be run elsewhere if this node is lost (the assignment's `requeue`). */
  readonly requeue: boolean;
  /** When this agent took the attempt on (Date.now()). */
  readonly acceptedAt = Date.now();
  /** The server said this attempt is no longer ours. */
  stale = false;
  private streamer: OutputStreamer | undefined;
  /** Bytes of each stream the executor keeps (launched attempts). */
  private outputLimit: number | undefined;

  private constructor(
    private readonly deps: JobRunnerDeps,
    ref: JobRef | Assignment,
    dir: string,
    process: JobProcess | undefined,
    cpus: number,
    work: (self: JobRunner) => Promise<void>,
  ) {
    this.ref = { job_id: ref.job_id, attempt: ref.attempt };
    this.cpus = cpus;
    this.requeue = 'requeue' in ref && ref.requeue === true;
    this.key = jobKey(ref);
    this.label = jobLabel(ref);
    this.dir = dir;
    this.process = process;
    this.processDone = process ? process.result.then(() => {}) : Promise.resolve();
    this.done = work(this).catch((err) => {
      deps.logger.error(`Job ${this.label}: ${describeError(err)}`);
    });
  }

  /**
   * Starts an assignment and drives it to a delivered result. `pushed`: it came on the channel, not from a
   * claim, so its started report is its claim and carries the session.
   */
  static launch(
    assignment: Assignment,
    deps: JobRunnerDeps,
    executor: ExecutorOptions,
    pushed = false,
  ): JobRunner {
    const process = startJob(assignment, executor);
    return new JobRunner(deps, assignment, process.dir, process, assignment.cpus, (self) => {
      self.outputLimit = process.outputLimit;
      return self.runLaunched(assignment, process, pushed);
    });
  }

  /**
   * An assignment that could not even be given a folder (disk full, a broken state dir): reports it
   * `failed_to_start` with `message`, so that the control plane ends it and frees its CPUs. Nothing is kept
   * on disk: should the report not get through before the agent stops, the server's start deadline ends it.
   */
  static unstartable(assignment: Assignment, deps: JobRunnerDeps, message: string): JobRunner {
    return new JobRunner(deps, assignment, '', undefined, 0, async (self) => {
      await self.reportFinish({ exit_code: '1:0', outcome: 'failed_to_start', message });
    });
  }

  /**
   * Delivers a result a previous agent run left in `dir` (flushing its output first), once `go` resolves
   * true; when it resolves false the result just stays on disk.
   */
  static recover(result: StoredResult, dir: string, deps: JobRunnerDeps, go: Promise<boolean>): JobRunner {
    return new JobRunner(deps, result, dir, undefined, 0, async (self) => {
      if (await go) await self.runRecovered(result);
    });
  }

  /** True while the job's process runs. */
  get running(): boolean {
    return this.process?.running ?? false;
  }

  /** Delivers a signal to a running job (scancel --signal): its batch shell only, or all its processes. */
  signal(name: string, batchOnly: boolean, via: string): void {
    if (!this.process?.running) return;
    const sent = this.process.signal(name, batchOnly);
    this.deps.logger.info(
      `Job ${this.label}: ${sent ? 'sent' : 'could not send'} signal ${name} to ${batchOnly ? 'its batch shell' : 'its processes'} (via ${via})`,
    );
  }

  /** Cancels a running job (SIGTERM to its group, SIGKILL after the grace); reported as `cancelled`. */
  cancel(message = 'cancelled', via?: string): void {
    if (!this.process?.running || this.process.terminating) return;
    this.deps.logger.info(`Cancelling job ${this.label}: ${message}${via ? ` (via ${via})` : ''}`);
    this.process.cancel(message);
  }

  private async runLaunched(assignment: Assignment, process: JobProcess, pushed: boolean): Promise<void> {
    const { logger } = this.deps;
    if (process.pid === undefined) {
      const result = await process.result;
      logger.warn(`Job ${this.label} failed to start: ${result.message ?? result.outcome}`);
      this.saveResult(result);
      await this.reportFinish(result);
      return;
    }
    logger.info(
      `Job ${this.label} started: ${JSON.stringify(assignment.name)}, ${assignment.cpus} CPUs, pid ${process.pid}`,
    );
    const streamer = this.makeStreamer({});
    const started = deliver(this.deps, `Job ${this.label} started report`, (signal) => {
      // The session of now, not of the push: a re-registration since kept the job (it was running) for it.
      const session = pushed ? this.deps.session() : undefined;
      return this.deps.client.started(
        this.ref.job_id,
        { worker_id: this.deps.workerId(), attempt: this.ref.attempt, ...(session ? { session } : {}) },
        { signal },
      );
    }).then((delivery) => {
      if (delivery.kind === 'stale') this.markStale();
      else if (delivery.kind === 'ok') {
        // The server answers with the job's state: anything but RUNNING (e.g. cancelled before it started)
        // means the job must not go on; no cancel would come for it.
        const state = (delivery.value as { state?: unknown } | undefined)?.state;
        if (typeof state === 'string' && state !== 'RUNNING')
          this.cancel(`job is ${state} on the control plane`);
      } else if (delivery.kind === 'rejected') {
        logger.error(`Job ${this.label}: started report rejected: ${describeError(delivery.error)}`);
      }
      if (delivery.kind === 'ok' || delivery.kind === 'rejected') streamer.start();
      return delivery;
    });

    const result = await process.result;
    for (const problem of process.fileProblems) logger.warn(`Job ${this.label}: ${problem}`);
    if (this.stale) return this.dropStale();
    logger.info(`Job ${this.label} ended: ${describeResult(result)}`);
    this.saveResult(result);
    const startedDelivery = await started;
    if (this.stale) return this.dropStale();
    if (startedDelivery.kind === 'aborted') return this.keepOnDisk();
    await streamer.finish();
    if (streamer.stale) return this.markStaleAndDrop();
    await this.reportFinish(result);
  }

  private async runRecovered(result: StoredResult): Promise<void> {
    this.deps.logger.info(
      `Job ${this.label}: delivering the result left by a previous run (${describeResult(result)})`,
    );
    const streamer = this.makeStreamer({});
    await streamer.finish();
    if (streamer.stale) return this.markStaleAndDrop();
    await this.reportFinish(result);
  }

  private makeStreamer(initialOffsets: { stdout?: number; stderr?: number }): OutputStreamer {
    const streamer = new OutputStreamer({
      stdoutPath: join(this.dir, STDOUT_FILE),
      stderrPath: join(this.dir, STDERR_FILE),
      intervalMs: this.deps.timing.outputIntervalMs,
      pollMs: this.deps.timing.outputPollMs,
      ...(this.outputLimit !== undefined ? { limitBytes: this.outputLimit } : {}),
      initialOffsets,
      send: (chunk) => this.sendOutput(chunk),
      onError: (err) => this.deps.logger.warn(`Job ${this.label}: output upload: ${describeError(err)}`),
    });
    this.streamer = streamer;
    return streamer;
  }

  private async sendOutput(chunk: {
    stream: 'stdout' | 'stderr';
    offset: number;
    data: string;
    bytes: number;
  }): Promise<SendOutcome> {
    const delivery = await deliver(this.deps, `Job ${this.label} output upload`, (signal) =>
      this.deps.client.output(
        this.ref.job_id,
        { worker_id: this.deps.workerId(), attempt: this.ref.attempt, ...chunk },
        { signal },
      ),
    );
    switch (delivery.kind) {
      case 'ok':
        return { kind: 'ok' };
      case 'mismatch':
        return { kind: 'mismatch', expected: delivery.expected };
      case 'stale':
        this.markStale();
        return { kind: 'stale' };
      case 'aborted':
        return { kind: 'aborted' };
      case 'rejected':
        this.deps.logger.warn(
          `Job ${this.label}: ${chunk.stream} chunk at ${chunk.offset} (${chunk.bytes} bytes) rejected, skipped: ${describeError(delivery.error)}`,
        );
        return { kind: 'rejected' };
    }
  }

  private async reportFinish(result: JobResult): Promise<void> {
    const send = (withRss: boolean) =>
      deliver(this.deps, `Job ${this.label} finish report`, (signal) =>
        this.deps.client.finish(
          this.ref.job_id,
          {
            worker_id: this.deps.workerId(),
            attempt: this.ref.attempt,
            exit_code: result.exit_code,
            outcome: result.outcome,
            ...(result.message !== undefined ? { message: result.message } : {}),
            ...(withRss && result.max_rss_kb !== undefined ? { max_rss_kb: result.max_rss_kb } : {}),
          },
          { signal },
        ),
      );
    let delivery = await send(true);
    // A control plane older than max_rss_kb refuses the field (400): the result matters more than the MaxRSS.
    if (
      delivery.kind === 'rejected' &&
      result.max_rss_kb !== undefined &&
      delivery.error instanceof AgentApiError &&
      delivery.error.status === 400
    ) {
      delivery = await send(false);
    }
    switch (delivery.kind) {
      case 'ok':
        this.deps.logger.info(`Job ${this.label} reported: ${delivery.value?.state ?? result.outcome}`);
        this.removeDir();
        return;
      case 'stale':
        this.stale = true;
        this.deps.logger.warn(
          `Job ${this.label} is no longer assigned to this node (stale_assignment): result dropped`,
        );
        this.removeDir();
        return;
      case 'aborted':
        return this.keepOnDisk();
      case 'mismatch':
      case 'rejected':
        this.deps.logger.error(
          `Job ${this.label}: finish report rejected, result dropped: ${delivery.kind === 'rejected' ? describeError(delivery.error) : 'unexpected output_offset_mismatch'}`,
        );
        this.removeDir();
        return;
    }
  }

  /**
   * Stops a running job on the agent's own account (out of touch with the control plane for too long):
   * SIGTERM, SIGKILL after the cancel grace; reported as `lost`.
   */
  stopLost(message: string): void {
    if (!this.process?.running || this.process.terminating) return;
    this.deps.logger.warn(`Stopping job ${this.label}: ${message} (it may have been requeued elsewhere)`);
    this.process.terminate({ outcome: 'lost', message }, this.deps.timing.cancelGraceMs);
  }

  /** The attempt was taken away: kill the group if it still runs, stop all reports. */
  private markStale(): void {
    if (this.stale) return;
    this.stale = true;
    this.deps.logger.warn(
      `Job ${this.label} is no longer assigned to this node (stale_assignment): killing it, reports dropped`,
    );
    this.process?.terminate(
      { outcome: 'cancelled', message: 'stale assignment' },
      this.deps.timing.cancelGraceMs,
    );
    void this.streamer?.halt();
  }

  private async markStaleAndDrop(): Promise<void> {
    this.markStale();
    await this.dropStale();
  }

  private async dropStale(): Promise<void> {
    await this.processDone;
    await this.streamer?.halt();
    this.removeDir();
  }

  private keepOnDisk(): void {
    if (!this.dir) {
      this.deps.logger.warn(`Job ${this.label}: result not delivered (it has no folder to be kept in)`);
      return;
    }
    this.deps.logger.warn(`Job ${this.label}: result not delivered; kept in ${this.dir} for the next start`);
  }

  private saveResult(result: JobResult): void {
    try {
      writeResultFile(this.dir, { ...this.ref, ...result, ended_at: new Date().toISOString() });
    } catch (err) {
      this.deps.logger.error(`Job ${this.label}: cannot write ${RESULT_FILE}: ${describeError(err)}`);
    }
  }

  /** Off the event loop: a synchronous rm of each finished job's folder stalls job starts in a burst. */
  private removeDir(): void {
    if (!this.dir) return;
    rm(this.dir, { recursive: true, force: true }).catch((err) => {
      this.deps.logger.warn(`Job ${this.label}: cannot remove ${this.dir}: ${describeError(err)}`);
    });
  }
}

export function describeResult(result: JobResult): string {
  const why = result.message ? ` (${result.message})` : '';
  return `${result.outcome} ${result.exit_code}${why}`;
}
