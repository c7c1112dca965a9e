/**
 * Runs one assignment as `bash <jobdir>/script.sh` in its own process group, with a clean environment and
 * stdout/stderr written straight to files in the job folder (the agent never pipes job output through
 * itself). Cancels and time limits signal the whole group: SIGTERM, then SIGKILL after a grace period.
 */
import { spawn } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  closeSync,
  mkdirSync,
  openSync,
  readFileSync,
  realpathSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { constants } from 'node:os';
import { isAbsolute, join, resolve, sep } from 'node:path';
import type { RunAsUser } from './config.ts';
import type { Assignment, ExitCode, JobOutcome, JobRef } from './protocol.ts';

export interface JobResult {
  exit_code: ExitCode;
  outcome: JobOutcome;
  /** Why, for outcomes other than `exited`. */
  message?: string;
}

/** The agent variables a job inherits; everything else (CONDUCTOR_TOKEN included) stays out. */
export const PASSTHROUGH_ENV = [
  'PATH',
  'HOME',
  'USER',
  'LOGNAME',
  'LANG',
  'LC_ALL',
  'TZ',
  'TMPDIR',
  'SHELL',
] as const;

export const SCRIPT_FILE = 'script.sh';
export const STDOUT_FILE = 'stdout';
export const STDERR_FILE = 'stderr';
export const PID_FILE = 'pid';

/** Folder name of an attempt: `<job_id>.<attempt>` (numbers only: it cannot leave the jobs folder). */
export function jobDirName(ref: JobRef): string {
  if (
    !Number.isSafeInteger(ref.job_id) ||
    ref.job_id < 1 ||
    !Number.isSafeInteger(ref.attempt) ||
    ref.attempt < 0
  ) {
    throw new Error(`invalid job reference ${JSON.stringify(ref)}`);
  }
  return `${ref.job_id}.${ref.attempt}`;
}

/** The JobRef a job folder name stands for, or undefined for anything else. */
export function parseJobDirName(name: string): JobRef | undefined {
  const m = /^(\d+)\.(\d+)$/.exec(name);
  if (!m) return undefined;
  const job_id = Number(m[1]);
  const attempt = Number(m[2]);
  return Number.isSafeInteger(job_id) && Number.isSafeInteger(attempt) ? { job_id, attempt } : undefined;
}

/** Slurm's `code:signal`: exit n → `n:0`, killed by a signal → `0:<signal number>`. */
export function exitCodeOf(code: number | null, signal: NodeJS.Signals | null): ExitCode {
  if (signal) {
    const num = constants.signals[signal] ?? 0;
    return `0:${num}`;
  }
  return `${code ?? 0}:0`;
}

/**
 * The job's environment: PATH, HOME, USER, LOGNAME, LANG, LC_ALL, TZ, TMPDIR and SHELL from the agent (when
 * set), then the assignment's variables, then CONDUCTOR_JOB_ID, CONDUCTOR_JOB_NAME, CONDUCTOR_CPUS and
 * CONDUCTOR_ATTEMPT.
 */
export function buildJobEnv(
  assignment: Assignment,
  agentEnv: NodeJS.ProcessEnv,
  runAs?: RunAsUser,
): Record<string, string> {
  const env: Record<string, string> = {};
  for (const name of PASSTHROUGH_ENV) {
    const value = agentEnv[name];
    if (value !== undefined) env[name] = value;
  }
  if (runAs) {
    env.HOME = runAs.home;
    env.USER = runAs.name;
    env.LOGNAME = runAs.name;
  }
  for (const [name, value] of Object.entries(assignment.environment ?? {})) {
    if (typeof value === 'string') env[name] = value;
  }
  env.CONDUCTOR_JOB_ID = String(assignment.job_id);
  env.CONDUCTOR_JOB_NAME = assignment.name;
  env.CONDUCTOR_CPUS = String(assignment.cpus);
  env.CONDUCTOR_ATTEMPT = String(assignment.attempt);
  return env;
}

/** The directory a job runs in: its work_dir (`~` expanded, relative paths from HOME), else its folder. */
export function resolveWorkDir(workDir: string | null, jobDir: string, home: string | undefined): string {
  if (!workDir) return jobDir;
  if (home && (workDir === '~' || workDir.startsWith('~/'))) return join(home, workDir.slice(1));
  if (isAbsolute(workDir)) return workDir;
  return resolve(home ?? jobDir, workDir);
}

export interface ExecutorOptions {
  /** `<stateDir>/jobs`: each attempt gets `<jobsDir>/<job_id>.<attempt>/`. */
  jobsDir: string;
  /** Where PATH, HOME, ... come from; process.env by default. */
  agentEnv?: NodeJS.ProcessEnv;
  /** SIGTERM → SIGKILL delay for cancel; 1 s by default. */
  cancelGraceMs?: number;
  /** SIGTERM → SIGKILL delay at the time limit; 5 s by default. */
  timeoutGraceMs?: number;
  /** How long a finished leader waits for the rest of a signalled group to go; 50 ms polls by default. */
  groupPollMs?: number;
  /** Jobs run as this user (spawned with its uid/gid; the agent must be root). */
  runAs?: RunAsUser;
  /** A work_dir must resolve inside this directory (symlinks followed); undefined: anywhere. */
  jobRoot?: string;
}

type Termination = { outcome: 'cancelled' | 'timeout' | 'lost'; message: string };

/** One attempt of a job: its folder, its process (if it started) and its result. */
export class JobProcess {
  readonly ref: JobRef;
  readonly dir: string;
  readonly stdoutPath: string;
  readonly stderrPath: string;
  /** Leader pid (and process group id); undefined if the job failed to start. */
  pid: number | undefined;
  /** Resolves once the job is over (leader gone, and after a kill the whole group gone or SIGKILLed). */
  readonly result: Promise<JobResult>;
  readonly startedAt = new Date();

  private resolveResult!: (result: JobResult) => void;
  private settled = false;
  private leaderExit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  private termination: Termination | undefined;
  private killSent = false;
  private limitTimer: NodeJS.Timeout | undefined;
  private killTimer: NodeJS.Timeout | undefined;
  private pollTimer: NodeJS.Timeout | undefined;
  private readonly cancelGraceMs: number;
  private readonly timeoutGraceMs: number;
  private readonly groupPollMs: number;

  constructor(ref: JobRef, dir: string, options: ExecutorOptions) {
    this.ref = ref;
    this.dir = dir;
    this.stdoutPath = join(dir, STDOUT_FILE);
    this.stderrPath = join(dir, STDERR_FILE);
    this.cancelGraceMs = options.cancelGraceMs ?? 1_000;
    this.timeoutGraceMs = options.timeoutGraceMs ?? 5_000;
    this.groupPollMs = options.groupPollMs ?? 50;
    this.result = new Promise((resolve) => {
      this.resolveResult = resolve;
    });
  }

  /** True until the result is known. */
  get running(): boolean {
    return !this.settled;
  }

  /** The outcome a kill in progress will give, if any. */
  get terminating(): Termination | undefined {
    return this.termination;
  }

  /** Cancels the job: SIGTERM to its group, SIGKILL after the cancel grace; outcome `cancelled`. */
  cancel(message = 'cancelled'): void {
    this.terminate({ outcome: 'cancelled', message }, this.cancelGraceMs);
  }

  /** Kills the whole group at once with SIGKILL (last resort, e.g. the agent exits immediately). */
  killNow(): void {
    if (this.pid === undefined || this.settled) return;
    this.termination ??= { outcome: 'cancelled', message: 'agent stopped' };
    this.signalGroup('SIGKILL');
    this.killSent = true;
  }

  /** SIGTERM to the group now, SIGKILL after `graceMs`, whether or not the leader exited. */
  terminate(termination: Termination, graceMs: number): void {
    if (this.settled || this.pid === undefined || this.termination) return;
    this.termination = termination;
    this.clearLimitTimer();
    this.signalGroup('SIGTERM');
    this.killTimer = setTimeout(() => {
      this.killTimer = undefined;
      this.signalGroup('SIGKILL');
      this.killSent = true;
      this.maybeSettle();
    }, graceMs);
    this.pollTimer = setInterval(() => this.maybeSettle(), this.groupPollMs);
  }

  /** @internal */
  start(
    assignment: Assignment,
    env: Record<string, string>,
    cwd: string,
    scriptPath: string,
    runAs?: RunAsUser,
  ): void {
    let outFd: number | undefined;
    let errFd: number | undefined;
    let scriptFd: number | undefined;
    try {
      outFd = openSync(this.stdoutPath, 'w', 0o600);
      errFd = openSync(this.stderrPath, 'w', 0o600);
      // As another user, bash reads its script through fd 3 (opened here): the state dir's parents (root's
      // home, say) need not be passable by that user. cwd is entered before the switch of user.
      if (runAs) scriptFd = openSync(scriptPath, 'r');
      const child = spawn('bash', [scriptFd === undefined ? scriptPath : '/dev/fd/3'], {
        cwd,
        env,
        detached: true,
        stdio: scriptFd === undefined ? ['ignore', outFd, errFd] : ['ignore', outFd, errFd, scriptFd],
        ...(runAs ? { uid: runAs.uid, gid: runAs.gid } : {}),
      });
      child.once('error', (err) => {
        // The process could not be spawned (bash missing, cwd vanished, ...): no exit event follows.
        if (child.pid === undefined) {
          this.settle({
            exit_code: '1:0',
            outcome: 'failed_to_start',
            message: `cannot start bash: ${err.message}`,
          });
        }
      });
      child.once('exit', (code, signal) => {
        this.leaderExit = { code, signal };
        if (!this.termination) {
          // Leftover background processes do not outlive their job.
          this.signalGroup('SIGKILL');
        }
        this.maybeSettle();
      });
      this.pid = child.pid;
      if (this.pid !== undefined) {
        writeProcessMarker(this.dir, this.pid);
        if (assignment.time_limit_s !== null && assignment.time_limit_s > 0) {
          const limit = assignment.time_limit_s;
          this.limitTimer = setTimeout(
            () =>
              this.terminate(
                { outcome: 'timeout', message: `time limit of ${limit} s exceeded` },
                this.timeoutGraceMs,
              ),
            limit * 1000,
          );
        }
      }
    } catch (err) {
      this.settle({
        exit_code: '1:0',
        outcome: 'failed_to_start',
        message: `cannot start job: ${(err as Error).message}`,
      });
    } finally {
      if (outFd !== undefined) closeSync(outFd);
      if (errFd !== undefined) closeSync(errFd);
      if (scriptFd !== undefined) closeSync(scriptFd);
    }
  }

  /** @internal */
  settle(result: JobResult): void {
    if (this.settled) return;
    this.settled = true;
    this.clearLimitTimer();
    if (this.killTimer) clearTimeout(this.killTimer);
    if (this.pollTimer) clearInterval(this.pollTimer);
    this.killTimer = this.pollTimer = undefined;
    this.resolveResult(result);
  }

  private maybeSettle(): void {
    if (this.settled || !this.leaderExit) return;
    if (this.termination && !this.killSent && groupAlive(this.pid!)) return;
    const { code, signal } = this.leaderExit;
    const exit_code = exitCodeOf(code, signal);
    if (this.termination) this.settle({ exit_code, ...this.termination });
    else this.settle({ exit_code, outcome: 'exited' });
  }

  private signalGroup(signal: NodeJS.Signals): void {
    if (this.pid === undefined) return;
    try {
      process.kill(-this.pid, signal);
    } catch {
      // ESRCH: the group is gone already. Nothing else can be done about EPERM here.
    }
  }

  private clearLimitTimer(): void {
    if (this.limitTimer) clearTimeout(this.limitTimer);
    this.limitTimer = undefined;
  }
}

/**
 * Starts an assignment: creates its folder, writes `script.sh`, and spawns it. Never throws for job-level
 * problems: a missing work_dir or a spawn failure gives a JobProcess whose result is `failed_to_start`.
 */
export function startJob(assignment: Assignment, options: ExecutorOptions): JobProcess {
  const { runAs } = options;
  const dir = join(options.jobsDir, jobDirName(assignment));
  // Run as another user: the folder stays the agent's (the job cannot swap its output files for links to
  // something only the agent may read), passable but not listable; the user owns its script and `work/`.
  mkdirSync(dir, { recursive: true, mode: runAs ? 0o711 : 0o700 });
  const job = new JobProcess(assignment, dir, options);
  const scriptPath = join(dir, SCRIPT_FILE);
  writeFileSync(scriptPath, assignment.script, { mode: runAs ? 0o400 : 0o600 });
  let ownFolder = dir;
  if (runAs) {
    chmodSync(dir, 0o711);
    chownSync(scriptPath, runAs.uid, runAs.gid);
    ownFolder = join(dir, 'work');
    mkdirSync(ownFolder, { recursive: true, mode: 0o700 });
    chownSync(ownFolder, runAs.uid, runAs.gid);
  }
  const agentEnv = options.agentEnv ?? process.env;
  const home = runAs ? runAs.home : agentEnv.HOME;
  let cwd = resolveWorkDir(assignment.work_dir, ownFolder, home);
  let problem = workDirProblem(cwd);
  if (!problem && assignment.work_dir && options.jobRoot) {
    const inside = insideRoot(cwd, options.jobRoot);
    if (typeof inside === 'string') cwd = inside;
    else problem = inside.problem;
  }
  if (problem) {
    // Output files exist for every attempt, even one that never ran.
    writeFileSync(job.stdoutPath, '', { mode: 0o600 });
    writeFileSync(job.stderrPath, '', { mode: 0o600 });
    job.settle({ exit_code: '1:0', outcome: 'failed_to_start', message: problem });
    return job;
  }
  job.start(assignment, buildJobEnv(assignment, agentEnv, runAs), cwd, scriptPath, runAs);
  return job;
}

/**
 * The real path of `dir` when it is `root` or inside it (symlinks followed, so a link cannot lead out), or
 * why not.
 */
export function insideRoot(dir: string, root: string): string | { problem: string } {
  let real: string;
  let realRoot: string;
  try {
    real = realpathSync(dir);
    realRoot = realpathSync(root);
  } catch (err) {
    return {
      problem: `work_dir ${dir} cannot be checked against the job root ${root}: ${(err as Error).message}`,
    };
  }
  if (real === realRoot || real.startsWith(realRoot.endsWith(sep) ? realRoot : realRoot + sep)) return real;
  return {
    problem:
      `work_dir ${dir}${real !== dir ? ` (${real})` : ''} is outside this agent's job root ${root} ` +
      '(CONDUCTOR_JOB_ROOT; CONDUCTOR_ALLOW_ANY_WORKDIR=1 lifts the limit)',
  };
}

function workDirProblem(dir: string): string | undefined {
  try {
    if (!statSync(dir).isDirectory()) return `work_dir ${dir} is not a directory`;
    return undefined;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return `work_dir ${dir} does not exist`;
    return `work_dir ${dir} is not usable: ${(err as Error).message}`;
  }
}

/** True while any process of group `pgid` exists. */
export function groupAlive(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** State letter and start time (clock ticks since boot) of a process, from Linux /proc; undefined without. */
export function processStat(pid: number): { state: string; startTime: string } | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the parenthesised command name: state is field 3 overall, starttime field 22.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return { state: fields[0] ?? '', startTime: fields[19] ?? '' };
  } catch {
    return undefined;
  }
}

/** Start time of a process in clock ticks since boot (Linux /proc), or undefined. */
export function processStartTime(pid: number): string | undefined {
  return processStat(pid)?.startTime;
}

function writeProcessMarker(dir: string, pid: number): void {
  try {
    writeFileSync(
      join(dir, PID_FILE),
      `${JSON.stringify({ pid, start_time: processStartTime(pid) ?? null })}\n`,
    );
  } catch {
    // Only used to clean up after a crash; the job runs regardless.
  }
}

/**
 * After an agent crash, kills the process group a job folder's `pid` file names, if it is still ours: the
 * group is signalled unless its leader pid now belongs to a different process (start time differs). Without
 * /proc nothing can be verified and nothing is killed. Returns true when a group was signalled.
 */
export function killOrphanGroup(dir: string): boolean {
  let marker: { pid?: unknown; start_time?: unknown };
  try {
    marker = JSON.parse(readFileSync(join(dir, PID_FILE), 'utf8'));
  } catch {
    return false;
  }
  const pid = marker.pid;
  if (typeof pid !== 'number' || !Number.isSafeInteger(pid) || pid <= 1) return false;
  if (processStartTime(process.pid) === undefined) return false; // no /proc: cannot verify
  const now = processStartTime(pid);
  if (now !== undefined && now !== marker.start_time) return false; // pid reused by someone else
  if (!groupAlive(pid)) return false;
  try {
    process.kill(-pid, 'SIGKILL');
    return true;
  } catch {
    return false;
  }
}
