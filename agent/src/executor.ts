/**
 * Runs one assignment as `bash <jobdir>/script.sh` in its own process group (and cgroup, see
 * containment.ts), with a clean environment and stdout/stderr written straight to files in the job folder
 * (no pipe through the agent: a busy agent never slows a job down). An sbatch job's own output files are
 * filled from those (job-files.ts). Cancels and time limits signal all the job's processes: SIGTERM, then
 * SIGKILL after a grace period; whatever is left when the job ends is SIGKILLed.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import {
  appendFileSync,
  chmodSync,
  chownSync,
  closeSync,
  constants as fsConstants,
  mkdirSync,
  openSync,
  readFileSync,
  realpathSync,
  renameSync,
  rmSync,
  statSync,
  truncateSync,
  writeFile,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { constants, hostname, userInfo } from 'node:os';
import { basename, dirname, isAbsolute, join, resolve, sep } from 'node:path';
import type { Writable } from 'node:stream';
import { DEFAULT_OUTPUT_LIMIT_BYTES, type RunAsUser } from './config.ts';
import {
  type AgentSupervisor,
  agentSupervisor,
  type Containment,
  findJobProcesses,
  JOB_MARKER_VAR,
  JobCgroup,
  jobMarker,
  sweepJobProcesses,
} from './containment.ts';
import {
  chdirMessage,
  expandFilenamePattern,
  JobFileCopier,
  type PreparedPlace,
  prepareJobPlace,
  writesJobFiles,
} from './job-files.ts';
import type { Assignment, ExitCode, JobOutcome, JobRef, MemoryEnforcement } from './protocol.ts';
import { processRssKb } from './resources.ts';
import { takeWarmShell, warmStartable, warmStartFile } from './warm-start.ts';

export interface JobResult {
  exit_code: ExitCode;
  outcome: JobOutcome;
  /** Why, for outcomes other than `exited`. */
  message?: string;
  /** The peak resident memory of the job's processes seen by the agent's sampling, in KiB. */
  max_rss_kb?: number;
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

/** The variables that tell a job which GPUs it has (CUDA and ROCm read the first, Slurm sets all three). */
export const GPU_ENV = ['CUDA_VISIBLE_DEVICES', 'SLURM_JOB_GPUS', 'GPU_DEVICE_ORDINAL'] as const;

/**
 * The Slurm variables the agent owns (sbatch(1) "OUTPUT ENVIRONMENT VARIABLES"): whatever the submitted
 * environment said of them is dropped (it came from another machine or job), then those that apply are set.
 */
export const SLURM_JOB_ENV = [
  'SLURM_JOB_ID',
  'SLURM_JOBID',
  'SLURM_JOB_NAME',
  'SLURM_JOB_USER',
  'SLURM_JOB_ACCOUNT',
  'SLURM_JOB_PARTITION',
  'SLURM_SUBMIT_DIR',
  'SLURM_SUBMIT_HOST',
  'SLURM_CLUSTER_NAME',
  'SLURM_JOB_NODELIST',
  'SLURM_NODELIST',
  'SLURMD_NODENAME',
  'SLURM_JOB_NUM_NODES',
  'SLURM_NNODES',
  'SLURM_NTASKS',
  'SLURM_NPROCS',
  'SLURM_NTASKS_PER_NODE',
  'SLURM_TASKS_PER_NODE',
  'SLURM_CPUS_PER_TASK',
  'SLURM_CPUS_ON_NODE',
  'SLURM_JOB_CPUS_PER_NODE',
  'SLURM_MEM_PER_NODE',
  'SLURM_MEM_PER_CPU',
  'SLURM_RESTART_COUNT',
  'SLURM_GPUS_ON_NODE',
  'SLURM_JOB_GRES',
  'SLURM_JOB_QOS',
  'SLURM_EXPORT_ENV',
  'SLURM_JOB_START_TIME',
  'SLURM_JOB_END_TIME',
  'SLURM_JOB_UID',
  'SLURM_JOB_GID',
  'SLURM_GTIDS',
  'SLURM_LOCALID',
  'SLURM_NODEID',
  'SLURM_PROCID',
  'SLURM_ARRAY_JOB_ID',
  'SLURM_ARRAY_TASK_ID',
  'SLURM_ARRAY_TASK_COUNT',
  'SLURM_ARRAY_TASK_MIN',
  'SLURM_ARRAY_TASK_MAX',
  'SLURM_ARRAY_TASK_STEP',
] as const;

/** What buildJobEnv needs to know of the node the job runs on. */
export interface JobNode {
  /** The node's name as the control plane knows it (SLURMD_NODENAME, SLURM_JOB_NODELIST). */
  name?: string;
  /** The node has GPUs: a job assigned none gets them hidden. */
  hasGpus?: boolean;
}

/**
 * The job's environment: PATH, HOME, USER, LOGNAME, LANG, LC_ALL, TZ, TMPDIR and SHELL from the agent (when
 * set), then the assignment's variables, then CONDUCTOR_JOB_ID, CONDUCTOR_JOB_NAME, CONDUCTOR_CPUS,
 * CONDUCTOR_ATTEMPT and (with `marker`) CONDUCTOR_JOB_MARKER, by which the agent finds the job's processes.
 *
 * Then Slurm's variables for a one-node batch job (SLURM_JOB_ENV), with sbatch's meanings: each replaces a
 * submitted variable of the same name, and each the job has no value for is unset. SLURM_JOB_USER is the
 * job's owner, else the user the job runs as. SLURM_NTASKS (and SLURM_NPROCS, SLURM_NTASKS_PER_NODE,
 * SLURM_TASKS_PER_NODE) is `ntasks`, 1 when not asked; SLURM_CPUS_PER_TASK only when asked;
 * SLURM_CPUS_ON_NODE and SLURM_JOB_CPUS_PER_NODE the CPUs it holds (all of the node's for an exclusive job).
 * SLURM_MEM_PER_CPU when memory was asked per CPU, else SLURM_MEM_PER_NODE = memory_mb. SLURM_JOB_QOS and
 * SLURM_EXPORT_ENV (`--export` as given) when set. SLURM_JOB_START_TIME is the attempt's `start_time` (else
 * now) in Unix seconds, SLURM_JOB_END_TIME that plus the time limit, when there is one. SLURM_JOB_UID and
 * SLURM_JOB_GID are the ids the job runs as. The batch script is the job's only task, on its only node:
 * SLURM_GTIDS, SLURM_LOCALID, SLURM_NODEID and SLURM_PROCID are 0. An array task (`array`) has SLURM_ARRAY_JOB_ID,
 * SLURM_ARRAY_TASK_ID, SLURM_ARRAY_TASK_COUNT, _MIN, _MAX and _STEP (the common difference of evenly spaced
 * indexes, else 1).
 *
 * Resources: GPU_ENV = the assigned GPU indexes (`0,1`), SLURM_GPUS_ON_NODE their count; SLURM_JOB_GRES =
 * `gpu:<n>,<name>:<count>,...`. One exception to "unset when it has none": a job without GPUs on a node that
 * has some gets CUDA_VISIBLE_DEVICES empty, which hides every GPU from CUDA; unset, it would see them all,
 * including those assigned to other jobs.
 */
export function buildJobEnv(
  assignment: Assignment,
  agentEnv: NodeJS.ProcessEnv,
  runAs?: RunAsUser,
  marker?: string,
  node: JobNode = {},
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
  for (const name of [...GPU_ENV, ...SLURM_JOB_ENV]) delete env[name];
  Object.assign(env, slurmJobEnv(assignment, runAs, agentEnv, node.name));
  const gpus = assignment.gpus ?? [];
  if (gpus.length > 0) {
    for (const name of GPU_ENV) env[name] = gpus.join(',');
    env.SLURM_GPUS_ON_NODE = String(gpus.length);
  } else if (node.hasGpus) {
    env.CUDA_VISIBLE_DEVICES = '';
  }
  const gres = [
    ...(gpus.length > 0 ? [`gpu:${gpus.length}`] : []),
    ...Object.entries(assignment.gres ?? {}).map(([name, count]) => `${name}:${count}`),
  ];
  if (gres.length > 0) env.SLURM_JOB_GRES = gres.join(',');
  if (marker !== undefined) env[JOB_MARKER_VAR] = marker;
  return env;
}

/** The user the job runs as: the run-as user, else the agent's (USER, or the process's own). */
function jobUser(runAs: RunAsUser | undefined, agentEnv: NodeJS.ProcessEnv): string | undefined {
  if (runAs) return runAs.name;
  if (agentEnv.USER) return agentEnv.USER;
  try {
    return userInfo().username;
  } catch {
    return undefined;
  }
}

/** Slurm's job variables other than the GPU ones, for a job on one node. */
function slurmJobEnv(
  assignment: Assignment,
  runAs: RunAsUser | undefined,
  agentEnv: NodeJS.ProcessEnv,
  nodeName: string | undefined,
): Record<string, string> {
  const env: Record<string, string> = {};
  const set = (name: (typeof SLURM_JOB_ENV)[number], value: string | number | null | undefined) => {
    if (value !== null && value !== undefined && value !== '') env[name] = String(value);
  };
  set('SLURM_JOB_ID', assignment.job_id);
  set('SLURM_JOBID', assignment.job_id);
  set('SLURM_JOB_NAME', assignment.name);
  set('SLURM_JOB_USER', assignment.owner ?? jobUser(runAs, agentEnv));
  set('SLURM_JOB_ACCOUNT', assignment.account);
  set('SLURM_JOB_PARTITION', assignment.partition);
  set('SLURM_SUBMIT_DIR', assignment.submit_dir);
  set('SLURM_SUBMIT_HOST', assignment.submit_host);
  set('SLURM_CLUSTER_NAME', assignment.cluster_name);
  set('SLURM_JOB_NODELIST', nodeName);
  set('SLURM_NODELIST', nodeName);
  set('SLURMD_NODENAME', nodeName);
  set('SLURM_JOB_NUM_NODES', 1);
  set('SLURM_NNODES', 1);
  const ntasks = assignment.ntasks ?? 1;
  set('SLURM_NTASKS', ntasks);
  set('SLURM_NPROCS', ntasks);
  set('SLURM_NTASKS_PER_NODE', ntasks);
  set('SLURM_TASKS_PER_NODE', ntasks);
  set('SLURM_CPUS_PER_TASK', assignment.cpus_per_task);
  set('SLURM_CPUS_ON_NODE', assignment.cpus);
  set('SLURM_JOB_CPUS_PER_NODE', assignment.cpus);
  if (typeof assignment.memory_per_cpu === 'number' && assignment.memory_per_cpu > 0) {
    set('SLURM_MEM_PER_CPU', assignment.memory_per_cpu);
  } else if (typeof assignment.memory_mb === 'number' && assignment.memory_mb > 0) {
    set('SLURM_MEM_PER_NODE', assignment.memory_mb);
  }
  // Slurm sets it only once the job was restarted (requeued): a first run has none.
  if ((assignment.requeues ?? 0) > 0) set('SLURM_RESTART_COUNT', assignment.requeues);
  set('SLURM_JOB_QOS', assignment.qos);
  set('SLURM_EXPORT_ENV', assignment.export_env);
  const startedMs = assignment.start_time ? Date.parse(assignment.start_time) : Number.NaN;
  const startS = Math.floor((Number.isNaN(startedMs) ? Date.now() : startedMs) / 1000);
  set('SLURM_JOB_START_TIME', startS);
  if (assignment.time_limit_s !== null && assignment.time_limit_s > 0) {
    set('SLURM_JOB_END_TIME', startS + assignment.time_limit_s);
  }
  set('SLURM_JOB_UID', runAs ? runAs.uid : process.getuid?.());
  set('SLURM_JOB_GID', runAs ? runAs.gid : process.getgid?.());
  for (const name of ['SLURM_GTIDS', 'SLURM_LOCALID', 'SLURM_NODEID', 'SLURM_PROCID'] as const) set(name, 0);
  const array = assignment.array;
  if (array) {
    set('SLURM_ARRAY_JOB_ID', array.job_id);
    set('SLURM_ARRAY_TASK_ID', array.task_id);
    set('SLURM_ARRAY_TASK_COUNT', array.count);
    set('SLURM_ARRAY_TASK_MIN', array.min);
    set('SLURM_ARRAY_TASK_MAX', array.max);
    set('SLURM_ARRAY_TASK_STEP', array.step);
  }
  return env;
}

/**
 * The directory a job asks to run in: its work_dir (`~` expanded; relative to the submit dir, else to HOME),
 * else its submit dir (sbatch's default), else undefined: the job's own folder.
 */
export function resolveWorkDir(
  assignment: Pick<Assignment, 'work_dir' | 'submit_dir'>,
  jobDir: string,
  home: string | undefined,
): string | undefined {
  const workDir = assignment.work_dir;
  const submitDir = assignment.submit_dir || undefined;
  if (!workDir) return submitDir;
  if (home && (workDir === '~' || workDir.startsWith('~/'))) return join(home, workDir.slice(1));
  if (isAbsolute(workDir)) return workDir;
  return resolve(submitDir ?? home ?? jobDir, workDir);
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
  /** Instead of runAs: each job runs as its owner's user (`*`: any other owner, and jobs without one). */
  runAsByOwner?: Record<string, RunAsUser>;
  /** A work_dir must resolve inside this directory (symlinks followed); undefined: anywhere. */
  jobRoot?: string;
  /** Without jobRoot: a work_dir must resolve inside the home of the user the job runs as. */
  jobRootIsHome?: boolean;
  /** How a job's processes are found and killed (containment.ts); the /proc sweep by default. */
  containment?: Containment;
  /** The agent's supervisor kills its jobs if the agent dies before them (containment.ts); on by default. */
  supervise?: boolean;
  /** Bytes of each output stream kept on disk (the first ones); DEFAULT_OUTPUT_LIMIT_BYTES by default. */
  outputLimitBytes?: number;
  /** How often the output files are held to the limit; 200 ms by default. */
  outputCheckMs?: number;
  /**
   * How a job's memory_mb is enforced (detectMemoryEnforcement): `cgroup` writes memory.max in its cgroup
   * (falling back to `rss` should that fail), `rss` samples its processes' resident memory; `none` by default.
   */
  memoryEnforcement?: MemoryEnforcement;
  /** How often `rss` sums a limited job's memory; 500 ms by default. */
  memorySampleMs?: number;
  /** The node has GPUs: jobs assigned none get them hidden (see buildJobEnv). */
  nodeHasGpus?: boolean;
  /** The node's name as the control plane knows it, which jobs see as SLURMD_NODENAME (see buildJobEnv). */
  nodeName?: string;
}

/** The line that ends a stream the agent cut at its limit. */
export function outputLimitMarker(limit: number, dropped: number): string {
  return `\n[... output truncated: this agent keeps the first ${limit} bytes of a stream (CONDUCTOR_OUTPUT_LIMIT); at least ${dropped} more bytes were dropped ...]\n`;
}

/** Output files are opened for appending: cut back to the limit, the job's next write lands at the cut. */
const OUTPUT_FLAGS = fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_TRUNC | fsConstants.O_APPEND;

type Termination = { outcome: 'cancelled' | 'timeout' | 'lost' | 'out_of_memory'; message: string };

/** How often a job's processes' resident memory is summed for its MaxRSS (when no limit asks for more). */
const RSS_SAMPLE_MS = 1_000;

/** How long a result waits for SIGKILLed processes to leave the job's cgroup. */
const REAP_WAIT_MS = 5_000;

/** Runs the job's script once its first line arrives on fd 4: the agent puts the process in its cgroup first. */
const GATED_START = 'IFS= read -r go <&4 && [ "$go" = go ] || exit 126; exec 4<&-; exec bash "$1"';

/** Runs "$@" with its standard input read from the file $0. */
const WITH_INPUT = 'exec <"$0" || exit 1; exec "$@"';

/**
 * The same gate inside the job's own bash: its startup file (BASH_ENV, read by a non-interactive bash before
 * the script) waits for the line, then leaves no trace in the script's environment. It spares every job the
 * start of a shell before bash (≈ 4 ms of CPU each on a small VM). Used when the job runs as the agent's own
 * user (the file is the agent's) and its environment sets no BASH_ENV of its own.
 */
const BASH_GATE = `IFS= read -r CONDUCTOR_GATE <&4 && [ "$CONDUCTOR_GATE" = go ] || exit 126
exec 4<&-
unset CONDUCTOR_GATE BASH_ENV
`;

/**
 * `job-gate.bash` beside the jobs folder (in the agent's state dir: the jobs folder holds attempts only),
 * holding BASH_GATE (written when missing or changed), or undefined if it cannot be written.
 */
function bashGateFile(jobsDir: string): string | undefined {
  const path = join(dirname(resolve(jobsDir)), 'job-gate.bash');
  try {
    if (readFileSync(path, 'utf8') === BASH_GATE) return path;
  } catch {
    // not there yet
  }
  try {
    const partial = `${path}.${process.pid}.partial`;
    writeFileSync(partial, BASH_GATE, { mode: 0o600 });
    renameSync(partial, path);
    return path;
  } catch {
    return undefined;
  }
}

/** One attempt of a job: its folder, its process (if it started) and its result. */
export class JobProcess {
  readonly ref: JobRef;
  readonly dir: string;
  readonly stdoutPath: string;
  readonly stderrPath: string;
  /** Leader pid (and process group id); undefined if the job failed to start. */
  pid: number | undefined;
  /** Resolves once the job is over (leader gone, and every process of the job gone or SIGKILLed). */
  readonly result: Promise<JobResult>;
  readonly startedAt = new Date();

  private resolveResult!: (result: JobResult) => void;
  private settled = false;
  private leaderExit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  private termination: Termination | undefined;
  private killSent = false;
  private reapDeadline: number | undefined;
  private limitTimer: LongTimeout | undefined;
  private killTimer: NodeJS.Timeout | undefined;
  private pollTimer: NodeJS.Timeout | undefined;
  private readonly cancelGraceMs: number;
  private readonly timeoutGraceMs: number;
  private readonly groupPollMs: number;
  private readonly containment: Containment;
  private readonly supervise: boolean;
  private cgroup: JobCgroup | undefined;
  /** The start a spare shell ran to become this job (warm-start.ts), removed with the cgroup. */
  private warmStartFile: string | undefined;
  private supervisor: AgentSupervisor | undefined;
  readonly outputLimit: number;
  private readonly outputCheckMs: number;
  private outputTimer: NodeJS.Timeout | undefined;
  private memoryTimer: NodeJS.Timeout | undefined;
  /** Sends the job its `--signal` ahead of its time limit. */
  private warningTimer: LongTimeout | undefined;
  /** The job's output and error files (sbatch jobs), which the agent fills from its captured streams. */
  private copier: JobFileCopier | undefined;
  /** The largest sum of the job's resident memory seen (KiB), 0 before the first sample. */
  private peakRssKb = 0;
  private readonly memoryEnforcement: MemoryEnforcement;
  private readonly memorySampleMs: number;
  /** The MB memory.max holds the job's cgroup to (the kernel then OOM-kills in it). */
  private cgroupMemoryLimitMb: number | undefined;
  /** Bytes cut off each output file so far (at least: what the job wrote while it was being cut is not counted). */
  private readonly dropped = new Map<string, number>();
  /** The value of CONDUCTOR_JOB_MARKER in the job's environment. */
  readonly marker: string;
  private readonly jobsDir: string;

  constructor(ref: JobRef, dir: string, options: ExecutorOptions) {
    this.ref = ref;
    this.marker = jobMarker(options.jobsDir, ref);
    this.jobsDir = options.jobsDir;
    this.dir = dir;
    this.stdoutPath = join(dir, STDOUT_FILE);
    this.stderrPath = join(dir, STDERR_FILE);
    this.cancelGraceMs = options.cancelGraceMs ?? 1_000;
    this.timeoutGraceMs = options.timeoutGraceMs ?? 5_000;
    this.groupPollMs = options.groupPollMs ?? 50;
    this.containment = options.containment ?? { kind: 'sweep', description: 'sweep' };
    this.supervise = options.supervise ?? true;
    this.outputLimit = options.outputLimitBytes ?? DEFAULT_OUTPUT_LIMIT_BYTES;
    this.outputCheckMs = options.outputCheckMs ?? 200;
    this.memoryEnforcement = options.memoryEnforcement ?? 'none';
    this.memorySampleMs = options.memorySampleMs ?? 500;
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

  /** Cancels the job: SIGTERM to its processes, SIGKILL after the cancel grace; outcome `cancelled`. */
  cancel(message = 'cancelled'): void {
    this.terminate({ outcome: 'cancelled', message }, this.cancelGraceMs);
  }

  /** Kills every process of the job at once with SIGKILL (last resort, e.g. the agent exits immediately). */
  killNow(): void {
    if (this.pid === undefined || this.settled) return;
    this.termination ??= { outcome: 'cancelled', message: 'agent stopped' };
    this.signalAll('SIGKILL');
    this.killSent = true;
  }

  /** SIGTERM to the job's processes now, SIGKILL after `graceMs`, whether or not the leader exited. */
  terminate(termination: Termination, graceMs: number): void {
    if (this.settled || this.pid === undefined || this.termination) return;
    this.termination = termination;
    this.clearLimitTimer();
    this.signalAll('SIGTERM');
    this.killTimer = setTimeout(() => {
      this.killTimer = undefined;
      this.signalAll('SIGKILL');
      this.killSent = true;
      this.maybeSettle();
    }, graceMs);
    this.pollTimer ??= setInterval(() => this.maybeSettle(), this.groupPollMs);
  }

  /** @internal */
  start(
    assignment: Assignment,
    env: Record<string, string>,
    place: PreparedPlace,
    scriptPath: string,
    runAs?: RunAsUser,
  ): void {
    let outFd: number | undefined;
    let errFd: number | undefined;
    let scriptFd: number | undefined;
    const files = place.files;
    try {
      outFd = openSync(this.stdoutPath, OUTPUT_FLAGS, 0o600);
      errFd = openSync(this.stderrPath, OUTPUT_FLAGS, 0o600);
      // Without an error file the job's stderr is its stdout's open file, as slurmstepd gives it.
      const jobErrFd = files && files.error === undefined ? outFd : errFd;
      if (place.chdirMessage) writeSync(jobErrFd, place.chdirMessage);
      if (files) {
        this.copier = new JobFileCopier(
          { stdout: this.stdoutPath, stderr: this.stderrPath },
          files,
          runAs,
          env.PATH,
        );
      }
      // As another user, bash reads its script through fd 3 (opened here): the state dir's parents (root's
      // home, say) need not be passable by that user. cwd is entered before the switch of user.
      if (runAs) scriptFd = openSync(scriptPath, 'r');
      const script = scriptFd === undefined ? scriptPath : '/dev/fd/3';
      // A spare shell already in a cgroup spares the job the move's wait (warm-start.ts).
      const errorFile = files && files.error === undefined ? undefined : this.stderrPath;
      const warm =
        !runAs &&
        files?.input === undefined &&
        env.BASH_ENV === undefined &&
        warmStartable(env, place.cwd, scriptPath, this.stdoutPath, errorFile)
          ? takeWarmShell(this.jobsDir)
          : undefined;
      this.cgroup = warm ? warm.cgroup : JobCgroup.create(this.containment, this.ref);
      const memoryMb =
        typeof assignment.memory_mb === 'number' && assignment.memory_mb > 0
          ? assignment.memory_mb
          : undefined;
      let enforceByRss = memoryMb !== undefined && this.memoryEnforcement !== 'none';
      if (memoryMb !== undefined && this.cgroup && this.memoryEnforcement === 'cgroup') {
        try {
          this.cgroup.limitMemory(memoryMb);
          this.cgroupMemoryLimitMb = memoryMb;
          enforceByRss = false;
        } catch {
          // memory.max refused (the controller went away): the sampling below still holds the job to it
        }
      }
      let child: ChildProcess;
      if (warm) {
        child = warm.child;
        this.warmStartFile = warmStartFile(this.jobsDir, basename(this.dir));
        warm.launch(
          { cwd: place.cwd, stdout: this.stdoutPath, stderr: errorFile, env, script },
          this.warmStartFile,
        );
      } else {
        // In a cgroup, the job waits at a gate (reading fd 4) until it has been moved into it: nothing it
        // starts can be outside.
        const gated = this.cgroup !== undefined;
        const gateFile =
          gated && !runAs && env.BASH_ENV === undefined ? bashGateFile(this.jobsDir) : undefined;
        const run =
          gated && !gateFile ? ['/bin/sh', '-c', GATED_START, 'conductor-job', script] : ['bash', script];
        // The input file is opened by the job's own first process, as its user.
        const argv = files?.input !== undefined ? ['/bin/sh', '-c', WITH_INPUT, files.input, ...run] : run;
        child = spawn(argv[0]!, argv.slice(1), {
          cwd: place.cwd,
          env: gateFile ? { ...env, BASH_ENV: gateFile } : env,
          detached: true,
          stdio: ['ignore', outFd, jobErrFd, scriptFd ?? 'ignore', ...(gated ? (['pipe'] as const) : [])],
          ...(runAs ? { uid: runAs.uid, gid: runAs.gid } : {}),
        });
      }
      child.once('error', (err) => {
        // The process could not be spawned (bash missing, cwd vanished, ...): no exit event follows.
        if (child.pid === undefined) {
          this.cleanUp();
          this.settle({
            exit_code: '1:0',
            outcome: 'failed_to_start',
            message: `cannot start bash: ${err.message}`,
          });
        }
      });
      child.once('exit', (code, signal) => {
        this.leaderExit = { code, signal };
        this.maybeSettle();
      });
      this.pid = child.pid;
      if (this.pid !== undefined) {
        if (this.cgroup && !warm) this.openGate(this.cgroup, this.pid, child.stdio[4] as Writable);
        if (this.supervise) {
          this.supervisor = agentSupervisor(this.jobsDir, this.containment);
          this.supervisor.watch(this.pid);
        }
        writeProcessMarker(this.dir, this.pid, this.cgroup?.path);
        this.outputTimer = setInterval(() => this.holdOutputToLimit(false), this.outputCheckMs);
        const enforcedMb = enforceByRss ? memoryMb : undefined;
        this.memoryTimer = setInterval(
          () => this.sampleMemory(enforcedMb),
          enforcedMb !== undefined ? this.memorySampleMs : RSS_SAMPLE_MS,
        );
        if (assignment.time_limit_s !== null && assignment.time_limit_s > 0) {
          const limit = assignment.time_limit_s;
          const warning = assignment.signal;
          if (warning) {
            this.warningTimer = setLongTimeout(
              () => this.signal(warning.signal, warning.batch_only),
              Math.max(0, limit - warning.before_s) * 1000,
            );
          }
          this.limitTimer = setLongTimeout(
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
      if (this.pid !== undefined) this.signalGroup('SIGKILL');
      this.cleanUp();
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

  /**
   * Puts the gated job in its cgroup, then lets it run. Moving a process between cgroups can sleep for
   * milliseconds in the kernel (cgroup v1 waits for an RCU grace period): done off the agent's event loop.
   */
  private openGate(cgroup: JobCgroup, pid: number, gate: Writable): void {
    gate.on('error', () => {});
    cgroup.add(pid).then(
      () => gate.end('go\n'),
      (err: Error) => {
        gate.destroy();
        this.signalGroup('SIGKILL');
        this.cleanUp();
        this.cgroup = undefined;
        this.settle({
          exit_code: '1:0',
          outcome: 'failed_to_start',
          message: `cannot start job: cannot put the job in its cgroup: ${err.message}`,
        });
      },
    );
  }

  /**
   * Sums the resident memory of the job's processes (its cgroup's, else what the /proc sweep finds: its
   * process group and what descends from it), keeps the peak (MaxRSS), and SIGKILLs them all once it is past
   * `limitMb` (when the agent enforces one this way): outcome `out_of_memory`.
   */
  private sampleMemory(limitMb: number | undefined): void {
    if (this.settled || this.termination || this.pid === undefined) return;
    const pids = this.cgroup
      ? this.cgroup.pids()
      : findJobProcesses(this.marker, this.pid, this.supervisor?.pid ? [this.supervisor.pid] : []);
    const rssKb = pids.reduce((sum, pid) => sum + processRssKb(pid), 0);
    this.peakRssKb = Math.max(this.peakRssKb, rssKb);
    if (limitMb === undefined || rssKb <= limitMb * 1024) return;
    this.termination = {
      outcome: 'out_of_memory',
      message: `exceeded its memory limit of ${limitMb} MB (resident memory ${Math.round(rssKb / 1024)} MB)`,
    };
    this.clearLimitTimer();
    this.signalAll('SIGKILL');
    this.killSent = true;
    this.pollTimer ??= setInterval(() => this.maybeSettle(), this.groupPollMs);
  }

  /**
   * Sends `name` (`USR1`, `SIGUSR1` or a number) to the job's batch shell only, or to its whole process
   * group; false when the job is not running or the signal is unknown.
   */
  signal(name: string, batchOnly: boolean): boolean {
    if (this.settled || this.pid === undefined) return false;
    const upper = name.toUpperCase();
    const signal = /^\d+$/.test(name)
      ? Number(name)
      : constants.signals[(upper.startsWith('SIG') ? upper : `SIG${upper}`) as NodeJS.Signals];
    if (signal === undefined) return false;
    try {
      process.kill(batchOnly ? this.pid : -this.pid, signal);
      return true;
    } catch {
      return false;
    }
  }

  /** Why copying into the job's output or error file stopped, if it did. */
  get fileProblems(): string[] {
    return this.copier?.failures ?? [];
  }

  /** @internal */
  settle(result: JobResult): void {
    if (this.settled) return;
    this.settled = true;
    if (this.memoryTimer) clearInterval(this.memoryTimer);
    this.memoryTimer = undefined;
    const ran = this.outputTimer !== undefined;
    if (this.outputTimer) clearInterval(this.outputTimer);
    this.outputTimer = undefined;
    this.clearLimitTimer();
    if (this.killTimer) clearTimeout(this.killTimer);
    if (this.pollTimer) clearInterval(this.pollTimer);
    this.killTimer = this.pollTimer = undefined;
    const full = { ...result, ...(this.peakRssKb > 0 ? { max_rss_kb: this.peakRssKb } : {}) };
    // The user's files get the whole output before the captured streams are cut to the limit.
    const copied = this.copier?.finish() ?? Promise.resolve();
    void copied.then(() => {
      if (ran) {
        this.holdOutputToLimit(true);
        this.markCutOutput();
      }
      this.resolveResult(full);
    });
  }

  /**
   * Settles once the leader exited and, after a cancel or a time limit, its processes left within the grace
   * or were SIGKILLed. Whatever the job left behind is SIGKILLed, and the result waits (up to REAP_WAIT_MS)
   * until it is gone: the cgroup is empty, or without one the /proc sweep finds nothing.
   */
  private maybeSettle(): void {
    if (this.settled || !this.leaderExit) return;
    if (this.termination && !this.killSent && this.anyAlive()) return;
    if (this.reapDeadline === undefined) {
      this.reapDeadline = Date.now() + REAP_WAIT_MS;
      this.signalAll('SIGKILL');
      this.killSent = true;
    }
    if (this.leftBehind() && Date.now() < this.reapDeadline) {
      this.signalAll('SIGKILL');
      this.pollTimer ??= setInterval(() => this.maybeSettle(), this.groupPollMs);
      return;
    }
    // The kernel killed a process of the job at its memory.max: the job ran out of memory, however its
    // script went on (Slurm's OUT_OF_MEMORY). Read before cleanUp removes the cgroup.
    const oomKills = this.cgroupMemoryLimitMb !== undefined ? (this.cgroup?.oomKills() ?? 0) : 0;
    if (oomKills > 0 && !this.termination) {
      this.termination = {
        outcome: 'out_of_memory',
        message: `exceeded its memory limit of ${this.cgroupMemoryLimitMb} MB (the kernel killed ${oomKills} of its processes)`,
      };
    }
    this.cleanUp();
    const { code, signal } = this.leaderExit;
    const exit_code = exitCodeOf(code, signal);
    if (this.termination) this.settle({ exit_code, ...this.termination });
    else this.settle({ exit_code, outcome: 'exited' });
  }

  /**
   * Cuts an output file that grew past the limit back to it. While a job with files of its own runs, its
   * output is copied into them instead, and cut only once it is over: a cut while the job writes could drop
   * bytes not copied yet.
   */
  private holdOutputToLimit(final: boolean): void {
    if (this.copier && !final) {
      this.copier.copyNew();
      return;
    }
    for (const path of [this.stdoutPath, this.stderrPath]) {
      try {
        const size = statSync(path).size;
        if (size <= this.outputLimit) continue;
        truncateSync(path, this.outputLimit);
        this.dropped.set(path, (this.dropped.get(path) ?? 0) + size - this.outputLimit);
      } catch {
        // the folder is gone (stale job removed): nothing to hold
      }
    }
  }

  /** Ends each stream that was cut with a line saying so (the job is over: nothing is appended after it). */
  private markCutOutput(): void {
    for (const [path, dropped] of this.dropped) {
      try {
        appendFileSync(path, outputLimitMarker(this.outputLimit, dropped));
      } catch {
        // as above
      }
    }
  }

  /** Removes the cgroup; the supervisor no longer needs to watch the job. */
  private cleanUp(): void {
    this.cgroup?.remove();
    if (this.warmStartFile) rmSync(this.warmStartFile, { force: true });
    if (this.pid !== undefined) this.supervisor?.release(this.pid);
    this.supervisor = undefined;
  }

  /**
   * Whether a SIGKILLed process of the job has not exited yet (a loaded machine may take a moment to run
   * it to its end): the cgroup is still populated, or without one the /proc sweep still finds one.
   */
  private leftBehind(): boolean {
    if (this.cgroup) return this.cgroup.populated();
    return (
      findJobProcesses(this.marker, this.pid, this.supervisor?.pid ? [this.supervisor.pid] : []).length > 0
    );
  }

  private anyAlive(): boolean {
    if (this.pid === undefined) return false;
    return groupAlive(this.pid) || (this.cgroup?.populated() ?? false);
  }

  /** Signals the process group, and the cgroup or (without one) every process the /proc sweep finds. */
  private signalAll(signal: NodeJS.Signals): void {
    this.signalGroup(signal);
    if (this.cgroup) this.cgroup.signal(signal);
    else sweepJobProcesses(this.marker, this.pid, signal, this.supervisor?.pid ? [this.supervisor.pid] : []);
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
    this.limitTimer?.clear();
    this.limitTimer = undefined;
    this.warningTimer?.clear();
    this.warningTimer = undefined;
  }
}

/** The longest delay setTimeout honours; a longer one fires after 1 ms. */
export const MAX_TIMER_DELAY_MS = 2 ** 31 - 1;

export interface LongTimeout {
  clear(): void;
}

/** setTimeout for any delay: waits in steps of at most MAX_TIMER_DELAY_MS until `delayMs` have passed. */
export function setLongTimeout(callback: () => void, delayMs: number): LongTimeout {
  let left = delayMs;
  let timer: NodeJS.Timeout;
  const arm = () => {
    const step = Math.min(left, MAX_TIMER_DELAY_MS);
    left -= step;
    timer = setTimeout(left > 0 ? arm : callback, step);
  };
  arm();
  return { clear: () => clearTimeout(timer) };
}

/**
 * Starts an assignment: creates its folder, writes `script.sh`, and spawns it. Never throws for job-level
 * problems: a missing work_dir or a spawn failure gives a JobProcess whose result is `failed_to_start`.
 */
export function startJob(assignment: Assignment, options: ExecutorOptions): JobProcess {
  const user = runAsOf(assignment, options);
  const runAs = typeof user === 'string' ? undefined : user;
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
  const place =
    typeof user === 'string' ? { problem: user } : jobPlace(assignment, ownFolder, runAs, options);
  if ('problem' in place) {
    // Output files exist for every attempt, even one that never ran.
    writeFileSync(job.stdoutPath, '', { mode: 0o600 });
    writeFileSync(job.stderrPath, '', { mode: 0o600 });
    job.settle({ exit_code: '1:0', outcome: 'failed_to_start', message: place.problem });
    return job;
  }
  const env = buildJobEnv(assignment, agentEnv, runAs, job.marker, {
    hasGpus: options.nodeHasGpus ?? false,
    ...(options.nodeName !== undefined ? { name: options.nodeName } : {}),
  });
  job.start(assignment, env, place, scriptPath, runAs);
  return job;
}

/**
 * Where the job runs and which files it reads and writes. A job that asks for no directory (work_dir,
 * submit dir) and names no file runs in its own folder, as it always did. Otherwise its directory is
 * entered and its files are opened as its user (prepareJobPlace): a directory that cannot be entered, or
 * lies outside the job root, gives /tmp and slurmstepd's message on the job's stderr; a file that cannot be
 * opened, a failed start.
 */
function jobPlace(
  assignment: Assignment,
  ownFolder: string,
  runAs: RunAsUser | undefined,
  options: ExecutorOptions,
): PreparedPlace | { problem: string } {
  const agentEnv = options.agentEnv ?? process.env;
  const asked = resolveWorkDir(assignment, ownFolder, runAs ? runAs.home : agentEnv.HOME);
  const files = writesJobFiles(assignment);
  if (asked === undefined && !files) return { cwd: ownFolder };
  let dir = asked ?? ownFolder;
  let outsideRoot: string | undefined;
  const jobRoot = options.jobRoot ?? (options.jobRootIsHome ? runAs?.home : undefined);
  if (asked !== undefined && jobRoot) {
    const inside = insideRoot(asked, jobRoot);
    if (typeof inside === 'string') dir = inside;
    else if (inside.outside) {
      outsideRoot = chdirMessage(asked, `outside the agent's job root (CONDUCTOR_JOB_ROOT=${jobRoot})`);
      dir = '/tmp';
    }
  }
  const values = {
    jobId: assignment.job_id,
    jobName: assignment.name,
    user: jobUser(runAs, agentEnv) ?? '',
    node: (options.nodeName ?? hostname()).split('.')[0] ?? '',
    ...(assignment.array
      ? { arrayJobId: assignment.array.job_id, arrayTaskId: assignment.array.task_id }
      : {}),
  };
  const expand = (pattern: string | null | undefined) =>
    pattern ? expandFilenamePattern(pattern, values) : undefined;
  const place = prepareJobPlace(
    dir,
    files
      ? {
          // sbatch's default: slurm-%j.out, and slurm-%A_%a.out for an array task.
          output: expand(assignment.stdout || (assignment.array ? 'slurm-%A_%a.out' : 'slurm-%j.out'))!,
          ...(assignment.stderr ? { error: expand(assignment.stderr)! } : {}),
          ...(assignment.stdin ? { input: expand(assignment.stdin)! } : {}),
          append: assignment.open_mode === 'append',
        }
      : undefined,
    runAs,
    agentEnv.PATH,
  );
  if (outsideRoot && !('problem' in place)) place.chdirMessage = outsideRoot;
  return place;
}

/** The user a job runs as (undefined: the agent's own), or why it has none. */
function runAsOf(assignment: Assignment, options: ExecutorOptions): RunAsUser | undefined | string {
  const map = options.runAsByOwner;
  if (!map) return options.runAs;
  const owner = assignment.owner ?? null;
  const user = (owner !== null ? map[owner] : undefined) ?? map['*'];
  if (user) return user;
  const mapped = Object.keys(map).filter((o) => o !== '*');
  return (
    `no run-as user for ${owner === null ? 'jobs without an owner' : `owner ${JSON.stringify(owner)}`} on this ` +
    `node (CONDUCTOR_RUN_AS maps ${mapped.join(', ')})`
  );
}

/**
 * The real path of `dir` when it is `root` or inside it (symlinks followed, so a link cannot lead out), or
 * why not: `outside` when it resolves elsewhere, else it cannot be resolved (it does not exist, say).
 */
export function insideRoot(dir: string, root: string): string | { problem: string; outside: boolean } {
  let real: string;
  let realRoot: string;
  try {
    real = realpathSync(dir);
    realRoot = realpathSync(root);
  } catch (err) {
    return {
      problem: `work_dir ${dir} cannot be checked against the job root ${root}: ${(err as Error).message}`,
      outside: false,
    };
  }
  if (real === realRoot || real.startsWith(realRoot.endsWith(sep) ? realRoot : realRoot + sep)) return real;
  return {
    problem:
      `work_dir ${dir}${real !== dir ? ` (${real})` : ''} is outside this agent's job root ${root} ` +
      '(CONDUCTOR_JOB_ROOT; CONDUCTOR_ALLOW_ANY_WORKDIR=1 lifts the limit)',
    outside: true,
  };
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

function writeProcessMarker(dir: string, pid: number, cgroup: string | undefined): void {
  // Only used to clean up after a crash (the job runs regardless): written off the event loop.
  writeFile(
    join(dir, PID_FILE),
    `${JSON.stringify({ pid, start_time: processStartTime(pid) ?? null, ...(cgroup ? { cgroup } : {}) })}\n`,
    () => {},
  );
}

/**
 * After an agent crash, kills what is left of the job a folder's `pid` file names: its cgroup (when it had
 * one), its process group unless the leader pid now belongs to a different process (start time differs),
 * and what the /proc sweep finds carrying its marker. Without /proc nothing can be verified and only the
 * cgroup is killed. Returns true when any process was signalled.
 */
export function killOrphanGroup(dir: string): boolean {
  let marker: { pid?: unknown; start_time?: unknown; cgroup?: unknown };
  try {
    marker = JSON.parse(readFileSync(join(dir, PID_FILE), 'utf8'));
  } catch {
    return false;
  }
  let killed = false;
  if (typeof marker.cgroup === 'string' && /\/conductor-[0-9a-f]{12}\/\d+\.\d+$/.test(marker.cgroup)) {
    const cgroup = new JobCgroup(marker.cgroup);
    if (cgroup.populated()) killed = cgroup.signal('SIGKILL');
    for (let tries = 0; tries < 50 && !cgroup.remove(); tries++) Atomics.wait(PAUSE, 0, 0, 20);
  }
  const pid = marker.pid;
  if (typeof pid !== 'number' || !Number.isSafeInteger(pid) || pid <= 1) return killed;
  if (processStartTime(process.pid) === undefined) return killed; // no /proc: cannot verify
  const ref = parseJobDirName(basename(dir));
  if (ref) killed = sweepJobProcesses(jobMarker(dirname(dir), ref), undefined, 'SIGKILL') > 0 || killed;
  const now = processStartTime(pid);
  if (now !== undefined && now !== marker.start_time) return killed; // pid reused by someone else
  if (!groupAlive(pid)) return killed;
  try {
    process.kill(-pid, 'SIGKILL');
    return true;
  } catch {
    return killed;
  }
}

const PAUSE = new Int32Array(new SharedArrayBuffer(4));
