/**
 * Agent configuration: environment variables, overridden by command-line flags. Parsing is pure (argv and env
 * in, a config or an error out) so it can be tested and so an embedding (tests, other tools) can build an
 * AgentConfig directly with `agentConfig({...})`.
 */
import { chmodSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { availableParallelism, homedir, hostname } from 'node:os';
import { isAbsolute, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { CONTAINMENT_CHOICES, type ContainmentChoice } from './containment.ts';
import type { GpuDevice } from './protocol.ts';
import { parseGpus, parseGres, parseMemoryMb, parseNameList } from './resources.ts';

export const AGENT_VERSION = '0.1.0';

/** The configuration cannot work (bad value, unusable state dir): exit code 2. */
export class ConfigError extends Error {
  override readonly name: string = 'ConfigError';
}

export interface BackoffRange {
  initialMs: number;
  maxMs: number;
}

/** Timers and limits; the defaults are the production values, tests shrink them. */
export interface AgentTiming {
  /** Timeout of every request but claim. */
  requestTimeoutMs: number;
  /** A claim's timeout is its wait plus this. */
  claimTimeoutMarginMs: number;
  /** Output is uploaded at least this often while a job prints. */
  outputIntervalMs: number;
  /** How often output files are checked for growth (64 KiB of new output is sent without waiting). */
  outputPollMs: number;
  /** SIGTERM → SIGKILL delay for a cancel. */
  cancelGraceMs: number;
  /** SIGTERM → SIGKILL delay when a job runs over its time limit. */
  timeoutGraceMs: number;
  registerBackoff: BackoffRange;
  claimBackoff: BackoffRange;
  reportBackoff: BackoffRange;
  /** On shutdown, how long reports of ended jobs may still be retried before they are left on disk. */
  shutdownReportTimeoutMs: number;
  unregisterTimeoutMs: number;
  /** How often the RSS of a job with a memory limit is summed, when no cgroup holds it to the limit. */
  memorySampleMs: number;
}

export const DEFAULT_TIMING: AgentTiming = {
  requestTimeoutMs: 15_000,
  claimTimeoutMarginMs: 10_000,
  outputIntervalMs: 1_000,
  outputPollMs: 200,
  cancelGraceMs: 1_000,
  timeoutGraceMs: 5_000,
  registerBackoff: { initialMs: 1_000, maxMs: 30_000 },
  claimBackoff: { initialMs: 500, maxMs: 10_000 },
  reportBackoff: { initialMs: 500, maxMs: 30_000 },
  shutdownReportTimeoutMs: 30_000,
  unregisterTimeoutMs: 5_000,
  memorySampleMs: 500,
};

/**
 * Seconds: a dropped push channel is reconnected after a uniform random delay up to this, so that agents
 * dropped together (a deploy, a restart) come back spread out (CONDUCTOR_CHANNEL_RECONNECT_WINDOW).
 */
export const DEFAULT_CHANNEL_RECONNECT_WINDOW_S = 10;

/** Bytes of each output stream of a job kept on the agent's disk (CONDUCTOR_OUTPUT_LIMIT). */
export const DEFAULT_OUTPUT_LIMIT_BYTES = 64 * 1024 * 1024;

export interface AgentConfig {
  /** Control plane base URL. */
  url: string;
  /** Bearer token; never passed to jobs. */
  token?: string;
  /** Worker id, unique per node. */
  nodeName: string;
  cpus: number;
  /** MB of memory offered to jobs (TOTAL_MEMORY); undefined: the machine's, less the reserve. */
  memoryMb?: number;
  /** MB kept for the system (MEMORY_RESERVE); undefined: the smaller of 1 GiB and 10 % of the machine. */
  memoryReserveMb?: number;
  /** The node's GPUs (GPUS); undefined: what `nvidia-smi` lists. */
  gpus?: GpuDevice[];
  /** Generic resources other than GPUs (GRES). */
  gres?: Record<string, number>;
  /** Node features (FEATURES). */
  features?: string[];
  /** Partitions served (PARTITIONS); none: the default one. */
  partitions?: string[];
  /** Holds job folders (scripts, output, undelivered results). */
  stateDir: string;
  /** On SIGTERM/SIGINT, let running jobs finish instead of cancelling them. */
  drain: boolean;
  /** Seconds; overrides the interval the server returns. */
  heartbeatIntervalS?: number;
  /** Seconds; overrides the server's claim_wait_s (tests). */
  claimWaitS?: number;
  /**
   * Seconds without contact with the control plane after which running `requeue` jobs are stopped (reported
   * `lost`); undefined: the TTL the server announces; 0: never.
   */
  stopAfterDisconnectS?: number;
  labels?: Record<string, string>;
  debug: boolean;
  timing: AgentTiming;
  /** Jobs run as this user (the agent runs as root and switches for each job). */
  runAs?: RunAsUser;
  /**
   * Jobs run as their owner's user (`CONDUCTOR_RUN_AS=alice:alice,*:nobody`): keyed by owner, `*` for every
   * other owner and for jobs without one. Instead of runAs.
   */
  runAsByOwner?: Record<string, RunAsUser>;
  /** With runAsByOwner: each job's working directory must be inside its user's home (no CONDUCTOR_JOB_ROOT). */
  jobRootIsHome?: boolean;
  /**
   * Jobs' working directories must resolve (symlinks followed) inside this directory, else they run in /tmp;
   * undefined: anywhere. The command line defaults it to the run-as user's home (CONDUCTOR_JOB_ROOT,
   * CONDUCTOR_ALLOW_ANY_WORKDIR).
   */
  jobRoot?: string;
  /** How jobs' processes are tracked and killed (CONDUCTOR_JOB_CONTAINMENT); `auto` by default. */
  containment?: ContainmentChoice;
  /** Bytes of each stream of a job kept on disk (the first ones; CONDUCTOR_OUTPUT_LIMIT). */
  outputLimitBytes: number;
  /**
   * Hold the push channel (a WebSocket) where the control plane offers one: assignments are pushed, pings
   * replace heartbeats. false (`--no-channel`, CONDUCTOR_CHANNEL=off): HTTP heartbeats and long polls only.
   */
  channel: boolean;
  /** Seconds: a dropped channel is reconnected after a uniform random delay up to this (then back-off). */
  channelReconnectWindowS: number;
}

/** An unprivileged user jobs run as (CONDUCTOR_RUN_AS). */
export interface RunAsUser {
  name: string;
  uid: number;
  gid: number;
  home: string;
}

/** What the command line read about whom jobs run as and where; resolved by resolveSafety (safety.ts). */
export interface SafetySettings {
  /** CONDUCTOR_RUN_AS: a user name or uid, or an owner → user map (parseRunAsMap). */
  runAs?: string;
  /** CONDUCTOR_ALLOW_ROOT=1: jobs may run as root. */
  allowRoot: boolean;
  /** CONDUCTOR_JOB_ROOT. */
  jobRoot?: string;
  /** CONDUCTOR_ALLOW_ANY_WORKDIR=1: work_dir may be anywhere. */
  allowAnyWorkDir: boolean;
}

export type AgentConfigInput = Partial<Omit<AgentConfig, 'timing'>> & { timing?: Partial<AgentTiming> };

/** A complete config from a partial one, with the same defaults as the command line. */
export function agentConfig(input: AgentConfigInput = {}, env: NodeJS.ProcessEnv = process.env): AgentConfig {
  const nodeName = input.nodeName ?? hostname();
  return {
    url: input.url ?? 'http://localhost:8000',
    token: input.token,
    nodeName,
    cpus: input.cpus ?? availableParallelism(),
    stateDir: input.stateDir ?? defaultStateDir(nodeName, env),
    drain: input.drain ?? false,
    heartbeatIntervalS: input.heartbeatIntervalS,
    claimWaitS: input.claimWaitS,
    stopAfterDisconnectS: input.stopAfterDisconnectS,
    labels: input.labels,
    debug: input.debug ?? false,
    timing: { ...DEFAULT_TIMING, ...input.timing },
    containment: input.containment ?? 'auto',
    outputLimitBytes: input.outputLimitBytes ?? DEFAULT_OUTPUT_LIMIT_BYTES,
    channel: input.channel ?? true,
    channelReconnectWindowS: input.channelReconnectWindowS ?? DEFAULT_CHANNEL_RECONNECT_WINDOW_S,
    ...(input.memoryMb !== undefined ? { memoryMb: input.memoryMb } : {}),
    ...(input.memoryReserveMb !== undefined ? { memoryReserveMb: input.memoryReserveMb } : {}),
    ...(input.gpus ? { gpus: input.gpus } : {}),
    ...(input.gres ? { gres: input.gres } : {}),
    ...(input.features ? { features: input.features } : {}),
    ...(input.partitions ? { partitions: input.partitions } : {}),
    ...(input.runAs ? { runAs: input.runAs } : {}),
    ...(input.runAsByOwner ? { runAsByOwner: input.runAsByOwner } : {}),
    ...(input.jobRootIsHome ? { jobRootIsHome: true } : {}),
    ...(input.jobRoot ? { jobRoot: input.jobRoot } : {}),
  };
}

/** `$XDG_STATE_HOME/conductor-agent/<node>`, else `~/.local/state/conductor-agent/<node>`. */
export function defaultStateDir(nodeName: string, env: NodeJS.ProcessEnv = process.env): string {
  const xdg = env.XDG_STATE_HOME;
  const base = xdg && isAbsolute(xdg) ? xdg : join(env.HOME || homedir(), '.local', 'state');
  return join(base, 'conductor-agent', nodeName);
}

/**
 * Creates the state dir (and its `jobs/` folder) with mode 0700; throws with a readable message. With
 * `traversable` (jobs run as another user, who must reach its own script and work folder) both are 0711:
 * others may pass through but not list them, and each job folder keeps its files to itself.
 */
export function ensureStateDir(dir: string, options: { traversable?: boolean } = {}): void {
  const mode = options.traversable ? 0o711 : 0o700;
  try {
    mkdirSync(join(dir, 'jobs'), { recursive: true, mode });
    const mine = typeof process.getuid === 'function' ? process.getuid() : undefined;
    for (const path of [dir, join(dir, 'jobs')]) {
      const stat = statSync(path);
      if ((stat.mode & 0o777) !== mode && stat.uid === mine && (path === dir || options.traversable)) {
        chmodSync(path, mode);
      }
    }
  } catch (err) {
    throw new ConfigError(`cannot use state dir ${dir}: ${(err as Error).message}`);
  }
}

export const USAGE = `Usage: conductor-agent [options]

Runs Conductor jobs on this node: registers with the control plane, heartbeats,
claims jobs, runs them and reports their output and results.

Options (each overrides the environment variable named after it):
  --url <url>                  control plane URL           CONDUCTOR_URL (default http://localhost:8000)
  --node-name <name>           worker id, unique per node  NODE_NAME (default: the hostname)
  --cpus <n>                   CPUs offered to jobs        TOTAL_CPUS (default: the machine's CPU count)
  --memory <size>              memory offered to jobs (MB, or 64G, 512M, 1T)   TOTAL_MEMORY
                               (default: the machine's, less the reserve)
  --memory-reserve <size>      memory kept for the system  MEMORY_RESERVE
                               (default: the smaller of 1G and 10 % of the machine)
  --gpus <[model:]n>           GPUs offered (a100:4, 4, 0 for none)            GPUS
                               (default: what nvidia-smi lists)
  --gres <list>                generic resources, e.g. nvme:1,license_matlab:2 GRES
  --features <list>            node features for --constraint, e.g. avx512,ssd FEATURES
  --partitions <list>          partitions this node serves, e.g. gpu,batch     PARTITIONS
                               (default: the default partition)
  --heartbeat-interval <s>     heartbeat every <s> seconds CONDUCTOR_HEARTBEAT_INTERVAL (default: the server's)
  --stop-after-disconnect <s>  stop requeue jobs after <s> seconds without contact with the control plane
                               CONDUCTOR_STOP_AFTER_DISCONNECT (default: the server's worker TTL; 0: never)
  --state-dir <dir>            job folders and results     CONDUCTOR_STATE_DIR
                               (default $XDG_STATE_HOME/conductor-agent/<node>,
                                else ~/.local/state/conductor-agent/<node>)
  --drain                      on SIGTERM/SIGINT let running jobs finish   CONDUCTOR_DRAIN=1
  --run-as <user>              run jobs as this unprivileged user          CONDUCTOR_RUN_AS
                               (the agent then runs as root); or per owner:
                               alice:alice,bob:bob-jobs,*:nobody
  --job-root <dir>             a job's working directory must be inside it, else the job runs in /tmp
                               CONDUCTOR_JOB_ROOT (default: the run-as user's home; none without --run-as)
  --job-containment <how>      auto, cgroup2, cgroup1 or sweep: how a job's processes are found and
                               killed                      CONDUCTOR_JOB_CONTAINMENT (default auto)
  --no-channel                 no push channel: HTTP heartbeats and long polls only   CONDUCTOR_CHANNEL=off
  --channel-reconnect-window <s>
                               reconnect a dropped channel after a random delay of up to <s> seconds
                               CONDUCTOR_CHANNEL_RECONNECT_WINDOW (default 10)
  --debug                      log more                    CONDUCTOR_DEBUG=1
  -h, --help                   show this help
  -V, --version                show the version

CONDUCTOR_TOKEN (environment only) is sent as "Authorization: Bearer <token>"; or CONDUCTOR_TOKEN_FILE
names a file holding it (/dev/stdin: standard input), read once at start: the token then stays out of
the agent's environment.
CONDUCTOR_OUTPUT_LIMIT (environment only, default 64M): bytes of each output stream of a job kept on
this node's disk (the first ones; K, M, G suffixes); the rest is dropped and a line says so.
Jobs run with a clean environment: the agent's variables (the token included) never reach them.
As root the agent refuses to start unless CONDUCTOR_RUN_AS names the user jobs run as, or
CONDUCTOR_ALLOW_ROOT=1 lets them run as root. CONDUCTOR_ALLOW_ANY_WORKDIR=1 lifts the job root.
A job runs in its work_dir (--chdir), else its submit dir, else a folder of its own. A directory it
cannot enter (missing, not a directory, no permission, outside the job root): /tmp, and its stderr
says so as slurmstepd does. Jobs with a submit dir or -o/-e/-i get their output file (slurm-%j.out by
default, stderr in it unless -e) written there by the agent, as the job's user; a file that cannot be
opened fails the job. Those files get all the output; CONDUCTOR_OUTPUT_LIMIT holds what is sent to the
control plane.
A second SIGTERM/SIGINT kills running jobs and exits at once (exit code 130).
Exit codes: 0 stopped, 1 fatal error (e.g. registration rejected), 2 bad configuration.`;

export type ParseResult =
  | { kind: 'run'; config: AgentConfig; safety: SafetySettings }
  | { kind: 'help'; text: string }
  | { kind: 'version'; text: string }
  | { kind: 'error'; message: string };

const NODE_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$/;

/** Reads the configuration from `argv` (without node and script) and `env`. */
export function parseAgentArgs(argv: string[], env: NodeJS.ProcessEnv = process.env): ParseResult {
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        url: { type: 'string' },
        'node-name': { type: 'string' },
        cpus: { type: 'string' },
        memory: { type: 'string' },
        'memory-reserve': { type: 'string' },
        gpus: { type: 'string' },
        gres: { type: 'string' },
        features: { type: 'string' },
        partitions: { type: 'string' },
        'heartbeat-interval': { type: 'string' },
        'stop-after-disconnect': { type: 'string' },
        'state-dir': { type: 'string' },
        'run-as': { type: 'string' },
        'job-root': { type: 'string' },
        'job-containment': { type: 'string' },
        'no-channel': { type: 'boolean' },
        'channel-reconnect-window': { type: 'string' },
        drain: { type: 'boolean' },
        debug: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
        version: { type: 'boolean', short: 'V' },
      },
    }));
  } catch (err) {
    return { kind: 'error', message: `${(err as Error).message} (see --help)` };
  }
  if (values.help) return { kind: 'help', text: USAGE };
  if (values.version) return { kind: 'version', text: `conductor-agent ${AGENT_VERSION}` };

  const pick = (flag: string, name: string): { value: string; source: string } | undefined => {
    const fromFlag = values[flag];
    if (typeof fromFlag === 'string') return { value: fromFlag, source: `--${flag}` };
    const fromEnv = env[name];
    if (fromEnv !== undefined && fromEnv.trim() !== '') return { value: fromEnv.trim(), source: name };
    return undefined;
  };
  const errors: string[] = [];

  const urlIn = pick('url', 'CONDUCTOR_URL');
  const url = urlIn?.value ?? 'http://localhost:8000';
  let parsedUrl: URL | undefined;
  try {
    parsedUrl = new URL(url);
  } catch {
    errors.push(`${urlIn?.source ?? 'CONDUCTOR_URL'} is not a valid URL: ${JSON.stringify(url)}`);
  }
  if (parsedUrl && parsedUrl.protocol !== 'http:' && parsedUrl.protocol !== 'https:') {
    errors.push(`${urlIn?.source ?? 'CONDUCTOR_URL'} must be an http:// or https:// URL, got ${url}`);
  }

  const nodeIn = pick('node-name', 'NODE_NAME');
  const nodeName = nodeIn?.value ?? hostname();
  if (!NODE_NAME_RE.test(nodeName)) {
    errors.push(
      `${nodeIn?.source ?? 'NODE_NAME (from the hostname)'} must be letters, digits, '.', '_' or '-' ` +
        `(starting with a letter or digit), got ${JSON.stringify(nodeName)}`,
    );
  }

  const cpusIn = pick('cpus', 'TOTAL_CPUS');
  let cpus = availableParallelism();
  if (cpusIn) {
    const n = /^\d+$/.test(cpusIn.value) ? Number(cpusIn.value) : Number.NaN;
    if (!Number.isSafeInteger(n) || n < 1) {
      errors.push(`${cpusIn.source} must be a positive integer, got ${JSON.stringify(cpusIn.value)}`);
    } else cpus = n;
  }

  const memoryIn = pick('memory', 'TOTAL_MEMORY');
  const reserveIn = pick('memory-reserve', 'MEMORY_RESERVE');
  const memoryMb = memoryIn ? parseMemoryMb(memoryIn.value) : undefined;
  const memoryReserveMb = reserveIn ? parseMemoryMb(reserveIn.value) : undefined;
  for (const [given, mb] of [
    [memoryIn, memoryMb],
    [reserveIn, memoryReserveMb],
  ] as const) {
    if (given && mb === undefined) {
      errors.push(
        `${given.source} must be MB, or a size with K, M, G or T (KiB to TiB) such as 64G, got ${JSON.stringify(given.value)}`,
      );
    }
  }
  const gpusIn = pick('gpus', 'GPUS');
  const gpus = gpusIn ? parseGpus(gpusIn.value) : undefined;
  if (gpus && 'error' in gpus) errors.push(`${gpusIn?.source} ${gpus.error}`);
  const gresIn = pick('gres', 'GRES');
  const gres = gresIn ? parseGres(gresIn.value) : undefined;
  if (gres && 'error' in gres) errors.push(`${gresIn?.source} ${gres.error}`);
  const featuresIn = pick('features', 'FEATURES');
  const features = featuresIn ? parseNameList(featuresIn.value) : undefined;
  if (features && 'error' in features) errors.push(`${featuresIn?.source} ${features.error}`);
  const partitionsIn = pick('partitions', 'PARTITIONS');
  const partitions = partitionsIn ? parseNameList(partitionsIn.value) : undefined;
  if (partitions && 'error' in partitions) errors.push(`${partitionsIn?.source} ${partitions.error}`);

  const hbIn = pick('heartbeat-interval', 'CONDUCTOR_HEARTBEAT_INTERVAL');
  let heartbeatIntervalS: number | undefined;
  if (hbIn) {
    const n = /^\d+(\.\d+)?$/.test(hbIn.value) ? Number(hbIn.value) : Number.NaN;
    if (!Number.isFinite(n) || n <= 0) {
      errors.push(`${hbIn.source} must be a positive number of seconds, got ${JSON.stringify(hbIn.value)}`);
    } else heartbeatIntervalS = n;
  }

  const stopIn = pick('stop-after-disconnect', 'CONDUCTOR_STOP_AFTER_DISCONNECT');
  let stopAfterDisconnectS: number | undefined;
  if (stopIn) {
    const n = /^\d+(\.\d+)?$/.test(stopIn.value) ? Number(stopIn.value) : Number.NaN;
    if (!Number.isFinite(n)) {
      errors.push(
        `${stopIn.source} must be a number of seconds (0: never), got ${JSON.stringify(stopIn.value)}`,
      );
    } else stopAfterDisconnectS = n;
  }

  const drain = values.drain === true || parseBool(env.CONDUCTOR_DRAIN, 'CONDUCTOR_DRAIN', errors);
  const debug = values.debug === true || parseBool(env.CONDUCTOR_DEBUG, 'CONDUCTOR_DEBUG', errors);

  const stateIn = pick('state-dir', 'CONDUCTOR_STATE_DIR');
  const stateDir = stateIn ? resolve(stateIn.value) : defaultStateDir(nodeName, env);

  const runAs = pick('run-as', 'CONDUCTOR_RUN_AS')?.value;
  if (runAs !== undefined && isRunAsMap(runAs)) {
    const map = parseRunAsMap(runAs);
    if ('error' in map) errors.push(map.error);
  } else if (runAs !== undefined && !USER_RE.test(runAs)) {
    errors.push(`CONDUCTOR_RUN_AS must be a user name or uid, got ${JSON.stringify(runAs)}`);
  }
  const jobRootIn = pick('job-root', 'CONDUCTOR_JOB_ROOT');
  if (jobRootIn && !isAbsolute(jobRootIn.value)) {
    errors.push(`${jobRootIn.source} must be an absolute path, got ${JSON.stringify(jobRootIn.value)}`);
  }
  const containmentIn = pick('job-containment', 'CONDUCTOR_JOB_CONTAINMENT');
  const containment = (containmentIn?.value ?? 'auto') as ContainmentChoice;
  if (!CONTAINMENT_CHOICES.includes(containment)) {
    errors.push(
      `${containmentIn?.source} must be one of ${CONTAINMENT_CHOICES.join(', ')}, got ${JSON.stringify(containmentIn?.value)}`,
    );
  }
  const limitIn = env.CONDUCTOR_OUTPUT_LIMIT?.trim();
  let outputLimitBytes = DEFAULT_OUTPUT_LIMIT_BYTES;
  if (limitIn) {
    const m = /^(\d+)([KMG]?)$/i.exec(limitIn);
    const n = m ? Number(m[1]) * 1024 ** ' KMG'.indexOf((m[2] || ' ').toUpperCase()) : Number.NaN;
    if (!Number.isSafeInteger(n) || n < 1024) {
      errors.push(
        `CONDUCTOR_OUTPUT_LIMIT must be a number of bytes of at least 1024, optionally with K, M or G (KiB, MiB, GiB), got ${JSON.stringify(env.CONDUCTOR_OUTPUT_LIMIT)}`,
      );
    } else outputLimitBytes = n;
  }
  const channelEnv = env.CONDUCTOR_CHANNEL?.trim() ? env.CONDUCTOR_CHANNEL : 'on';
  const channel = values['no-channel'] !== true && parseBool(channelEnv, 'CONDUCTOR_CHANNEL', errors);
  const windowIn = pick('channel-reconnect-window', 'CONDUCTOR_CHANNEL_RECONNECT_WINDOW');
  let channelReconnectWindowS = DEFAULT_CHANNEL_RECONNECT_WINDOW_S;
  if (windowIn) {
    const n = /^\d+(\.\d+)?$/.test(windowIn.value) ? Number(windowIn.value) : Number.NaN;
    if (!Number.isFinite(n) || n > 3600) {
      errors.push(
        `${windowIn.source} must be a number of seconds from 0 to 3600, got ${JSON.stringify(windowIn.value)}`,
      );
    } else channelReconnectWindowS = n;
  }
  const allowRoot = parseBool(env.CONDUCTOR_ALLOW_ROOT, 'CONDUCTOR_ALLOW_ROOT', errors);
  const allowAnyWorkDir = parseBool(env.CONDUCTOR_ALLOW_ANY_WORKDIR, 'CONDUCTOR_ALLOW_ANY_WORKDIR', errors);

  const token = readToken(env, errors);
  if (errors.length > 0) return { kind: 'error', message: errors.join('\n') };
  return {
    kind: 'run',
    config: agentConfig(
      {
        url,
        token,
        nodeName,
        cpus,
        ...(memoryMb !== undefined ? { memoryMb } : {}),
        ...(memoryReserveMb !== undefined ? { memoryReserveMb } : {}),
        ...(gpus && !('error' in gpus) ? { gpus } : {}),
        ...(gres && !('error' in gres) ? { gres } : {}),
        ...(features && !('error' in features) ? { features } : {}),
        ...(partitions && !('error' in partitions) ? { partitions } : {}),
        heartbeatIntervalS,
        stopAfterDisconnectS,
        stateDir,
        drain,
        debug,
        containment,
        outputLimitBytes,
        channel,
        channelReconnectWindowS,
      },
      env,
    ),
    safety: {
      ...(runAs !== undefined ? { runAs } : {}),
      allowRoot,
      ...(jobRootIn ? { jobRoot: resolve(jobRootIn.value) } : {}),
      allowAnyWorkDir,
    },
  };
}

const USER_RE = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,31}\$?$/;

/** CONDUCTOR_RUN_AS in its map form: `<owner>:<user>` pairs separated by commas. */
export function isRunAsMap(value: string): boolean {
  return value.includes(':') || value.includes(',');
}

/**
 * `alice:alice, bob:bob-jobs, *:nobody` → owner and user pairs (an owner may contain `:`, the user after the
 * last one may not; `*` stands for every other owner and for jobs without one), or why not.
 */
export function parseRunAsMap(value: string): { owner: string; user: string }[] | { error: string } {
  const entries: { owner: string; user: string }[] = [];
  for (const part of value.split(',')) {
    const colon = part.lastIndexOf(':');
    const owner = colon < 0 ? '' : part.slice(0, colon).trim();
    const user = colon < 0 ? '' : part.slice(colon + 1).trim();
    if (!owner || !USER_RE.test(user)) {
      return {
        error:
          'CONDUCTOR_RUN_AS must be a user name or uid, or <owner>:<user> pairs separated by commas ' +
          `(* for any other owner), got ${JSON.stringify(part.trim())} in ${JSON.stringify(value)}`,
      };
    }
    if (entries.some((e) => e.owner === owner)) {
      return { error: `CONDUCTOR_RUN_AS maps owner ${JSON.stringify(owner)} twice` };
    }
    entries.push({ owner, user });
  }
  return entries;
}

/**
 * CONDUCTOR_TOKEN, or the file CONDUCTOR_TOKEN_FILE names, read once here: the token then lives in the
 * agent's memory only, not in its environment, which its jobs (as the same user) could read in /proc.
 */
function readToken(env: NodeJS.ProcessEnv, errors: string[]): string | undefined {
  const file = env.CONDUCTOR_TOKEN_FILE?.trim();
  if (!file) return env.CONDUCTOR_TOKEN?.trim() || undefined;
  if (env.CONDUCTOR_TOKEN?.trim()) {
    errors.push('Set CONDUCTOR_TOKEN or CONDUCTOR_TOKEN_FILE, not both');
    return undefined;
  }
  try {
    // /dev/stdin read as fd 0: opening it by name fails when stdin is a socket (a Node parent's pipe).
    const token = readFileSync(file === '/dev/stdin' ? 0 : file, 'utf8').trim();
    if (token === '') errors.push(`CONDUCTOR_TOKEN_FILE ${file} is empty`);
    return token || undefined;
  } catch (error) {
    errors.push(`cannot read CONDUCTOR_TOKEN_FILE ${file}: ${(error as Error).message}`);
    return undefined;
  }
}

function parseBool(value: string | undefined, name: string, errors: string[]): boolean {
  const v = value?.trim().toLowerCase() ?? '';
  if (['1', 'true', 'yes', 'on'].includes(v)) return true;
  if (['', '0', 'false', 'no', 'off'].includes(v)) return false;
  errors.push(`${name} must be 1 or 0, got ${JSON.stringify(value)}`);
  return false;
}

/**
 * Every environment variable and flag parseAgentArgs reads, for docs/configuration.md (scripts/docs-config.ts
 * writes the table from it; test/docs fails when config.ts or cli.ts reads a variable or flag missing here).
 */
export const AGENT_OPTION_DOCS: readonly {
  env: string;
  flag?: string;
  default: string;
  description: string;
}[] = [
  {
    env: 'CONDUCTOR_URL',
    flag: '--url',
    default: '`http://localhost:8000`',
    description: 'the control plane',
  },
  {
    env: 'CONDUCTOR_TOKEN',
    default: 'none',
    description: 'an agent token, sent as `Authorization: Bearer`; never passed to jobs (environment only)',
  },
  {
    env: 'CONDUCTOR_TOKEN_FILE',
    default: 'none',
    description:
      "instead of `CONDUCTOR_TOKEN`: a file holding it (`/dev/stdin`: standard input), read once at start, so the token is not in the agent's environment (`/proc/<pid>/environ`, which jobs running as the agent's user can read); the local cluster hands its agent the token this way, on a pipe",
  },
  {
    env: 'NODE_NAME',
    flag: '--node-name',
    default: 'the hostname',
    description: 'the worker id, unique per node',
  },
  {
    env: 'TOTAL_CPUS',
    flag: '--cpus',
    default: "the machine's CPU count",
    description: 'CPUs this node offers',
  },
  {
    env: 'TOTAL_MEMORY',
    flag: '--memory',
    default: "the machine's memory less the reserve",
    description:
      'memory jobs may use on this node: MB, or a size with `K`, `M`, `G`, `T` (`64G`); taken as given (the reserve is subtracted only when `MEMORY_RESERVE` is set too)',
  },
  {
    env: 'MEMORY_RESERVE',
    flag: '--memory-reserve',
    default: 'the smaller of 1 GiB and 10 % of the machine',
    description: 'memory kept for the system and the agent, not offered to jobs (MB or a size: `2G`)',
  },
  {
    env: 'GPUS',
    flag: '--gpus',
    default: 'what `nvidia-smi` lists (none without it)',
    description:
      "the node's GPUs: `a100:4` (indexes 0-3, model `a100`), `4` (model `gpu`), `0` (none); overrides detection",
  },
  {
    env: 'GRES',
    flag: '--gres',
    default: 'none',
    description:
      'generic resources other than GPUs, `name[:count]` separated by commas: `nvme:1,license_matlab:2`',
  },
  {
    env: 'FEATURES',
    flag: '--features',
    default: 'none',
    description: "node features jobs' `--constraint` picks by: `avx512,ssd,arm64`",
  },
  {
    env: 'PARTITIONS',
    flag: '--partitions',
    default: 'the default partition',
    description: 'the partitions this node serves: `gpu,batch`',
  },
  {
    env: 'CONDUCTOR_HEARTBEAT_INTERVAL',
    flag: '--heartbeat-interval',
    default: 'what the server says (30 s)',
    description: 'seconds between heartbeats',
  },
  {
    env: 'CONDUCTOR_STOP_AFTER_DISCONNECT',
    flag: '--stop-after-disconnect',
    default: "the server's TTL (60 s)",
    description: 'seconds without contact after which running `requeue` jobs are stopped; `0`: never',
  },
  {
    env: 'CONDUCTOR_STATE_DIR',
    flag: '--state-dir',
    default: '`$XDG_STATE_HOME/conductor-agent/<NODE_NAME>` (else `~/.local/state/...`)',
    description: 'job folders, output files, undelivered results (created with mode 0700)',
  },
  {
    env: 'CONDUCTOR_DRAIN',
    flag: '--drain',
    default: 'off',
    description: 'on stop, let running jobs finish first',
  },
  {
    env: 'CONDUCTOR_RUN_AS',
    flag: '--run-as',
    default: 'none',
    description:
      "run jobs as this user (name or uid), or each owner's jobs as its user (`alice:alice,*:nobody`); the agent must be root",
  },
  {
    env: 'CONDUCTOR_ALLOW_ROOT',
    default: '`0`',
    description:
      '`1`: jobs may run as root (without it an agent running as root refuses to start, unless `CONDUCTOR_RUN_AS` is set)',
  },
  {
    env: 'CONDUCTOR_JOB_ROOT',
    flag: '--job-root',
    default: "the run-as user's home (`CONDUCTOR_RUN_AS`); none without it",
    description:
      "a job's working directory (`work_dir`, else its submit dir) must resolve inside it; one outside it, like one the job's user cannot enter, gives `/tmp` and slurmstepd's `couldn't chdir` message on the job's stderr",
  },
  {
    env: 'CONDUCTOR_ALLOW_ANY_WORKDIR',
    default: '`0`',
    description: '`1`: no job root, even with `CONDUCTOR_RUN_AS`',
  },
  {
    env: 'CONDUCTOR_OUTPUT_LIMIT',
    default: '`64M`',
    description:
      "bytes of each output stream of a job kept on the node's disk and sent to the control plane (the first ones; `K`, `M`, `G` suffixes, at least 1024); a job's own output files (`slurm-%j.out`, `-o`, `-e`) get all of it",
  },
  {
    env: 'CONDUCTOR_JOB_CONTAINMENT',
    flag: '--job-containment',
    default: '`auto`',
    description:
      "`cgroup2`, `cgroup1` or `sweep`: how a job's processes are found and killed (`auto`: the first that works)",
  },
  {
    env: 'CONDUCTOR_CHANNEL',
    flag: '--no-channel',
    default: '`on`',
    description:
      '`off` (or `--no-channel`): no push channel. With it on, the agent holds a WebSocket to the control plane where it offers one (`GET /api/v1/agents/channel`): assignments, cancels and drains are pushed, a `ping` every heartbeat interval replaces the HTTP heartbeat, and no claim long-polls; without one (an older server, a proxy that strips WebSockets) or while it is down, HTTP heartbeats and long polls as before',
  },
  {
    env: 'CONDUCTOR_CHANNEL_RECONNECT_WINDOW',
    flag: '--channel-reconnect-window',
    default: '`10`',
    description:
      'seconds: a dropped channel is reconnected after a uniform random delay up to this (agents dropped together come back spread out), then with exponential back-off (full jitter) up to 5 minutes while it fails; a server without a channel is asked again about every 5 minutes',
  },
  { env: 'CONDUCTOR_DEBUG', flag: '--debug', default: 'off', description: 'log more' },
  { env: 'LOG_FORMAT', default: '`text`', description: '`json`: one JSON object per line' },
];
