/**
 * squeue(1) over Conductor's job list: Slurm 22.05's options, `-o` field codes and `-O` names, default
 * columns and widths, state codes and reasons, so scripts that parse squeue read the same text here.
 *
 * This file also holds what squeue, sacct and scancel share: the job as the API shows it, listing jobs
 * with the server's filters (applied here too, for servers that predate them), state names, the user.
 */
import { userInfo } from 'node:os';
import { join } from 'node:path';
import { ApiError, Client, resolveConfig } from '../api.ts';
import type { Io } from '../io.ts';
import { SLURM_VERSION } from './command.ts';
import { fit, squeueSeconds, timeLimit, timestamp } from './format.ts';
import { fatesOf, getoptLong, type OptionSpec, type Parsed, type ParsedOption } from './getopt.ts';

/** A job as GET /api/v1/jobs shows it; the issue-15 fields are optional (older servers lack them). */
export interface SlurmJob {
  id: number;
  name: string;
  state: string;
  cpus: number;
  exit_code: string | null;
  node: string | null;
  owner: string | null;
  account: string | null;
  partition: string | null;
  time_limit: number | null;
  reason: string | null;
  submit_time: string | null;
  start_time: string | null;
  end_time: string | null;
  /** PENDING: when the scheduler plans to start it (null or absent: not planned). */
  planned_start_time?: string | null;
  work_dir?: string | null;
  submit_dir?: string | null;
  submit_host?: string | null;
  /** The submitter's adjustment; `computed_priority` is the multifactor priority the queue is served by. */
  priority?: number;
  computed_priority?: number;
  requeue?: boolean;
  attempt?: number;
  memory_mb?: number | null;
  memory_per_cpu?: number | null;
  ntasks?: number | null;
  cpus_per_task?: number | null;
  gpus?: number;
  constraint?: string | null;
  exclusive?: boolean;
  nodelist?: string[] | null;
  exclude?: string[] | null;
  held?: boolean;
  cancel_requested?: boolean;
  qos?: string | null;
  begin_time?: string | null;
  eligible_time?: string | null;
  max_rss_kb?: number | null;
  cancelled_by?: string | null;
  comment?: string | null;
  stdout?: string | null;
  stderr?: string | null;
  stdin?: string | null;
  requeues?: number;
  /** `--dependency` as submitted. */
  dependency?: string | null;
  /** sbatch `--array`: the task's array and index; null or absent: no array. */
  array_job_id?: number | null;
  array_task_id?: number | null;
  /** squeue's folded line of an array's pending tasks: their indexes as Slurm folds them (`5-9%2`). */
  folded_tasks?: string;
}

/** Slurm's job states, long name → compact code (squeue(1) "JOB STATE CODES"). */
export const STATE_CODES: Record<string, string> = {
  BOOT_FAIL: 'BF',
  CANCELLED: 'CA',
  COMPLETED: 'CD',
  CONFIGURING: 'CF',
  COMPLETING: 'CG',
  DEADLINE: 'DL',
  FAILED: 'F',
  NODE_FAIL: 'NF',
  OUT_OF_MEMORY: 'OOM',
  PENDING: 'PD',
  PREEMPTED: 'PR',
  RUNNING: 'R',
  RESV_DEL_HOLD: 'RD',
  REQUEUE_FED: 'RF',
  REQUEUE_HOLD: 'RH',
  REQUEUED: 'RQ',
  RESIZING: 'RS',
  REVOKED: 'RV',
  SIGNALING: 'SI',
  SPECIAL_EXIT: 'SE',
  STAGE_OUT: 'SO',
  STOPPED: 'ST',
  SUSPENDED: 'S',
  TIMEOUT: 'TO',
};

/** Long state names from a comma list of long or compact names (any case); the bad word otherwise. */
export function parseStates(list: string): { states: string[] } | { bad: string } {
  const states: string[] = [];
  for (const word of list.split(',')) {
    const upper = word.trim().toUpperCase();
    if (upper === '') continue;
    const long =
      upper in STATE_CODES ? upper : Object.keys(STATE_CODES).find((s) => STATE_CODES[s] === upper);
    if (!long) return { bad: word };
    states.push(long);
  }
  return { states };
}

/**
 * The user as Conductor names owners: CONDUCTOR_OWNER, else the login name; its uid only when that owner
 * is the login user (Slurm prints uids, and only this one is known here).
 */
export function currentUser(env: NodeJS.ProcessEnv): { name: string; uid: number | null } {
  try {
    const info = userInfo();
    const name = env.CONDUCTOR_OWNER || info.username;
    return { name, uid: name === info.username ? info.uid : null };
  } catch {
    return { name: env.CONDUCTOR_OWNER ?? '', uid: null };
  }
}

/** User names from a list of names or uids (a uid is known when it is this user's). */
export function userNames(list: string, env: NodeJS.ProcessEnv): string[] {
  const me = currentUser(env);
  return list
    .split(',')
    .filter((u) => u !== '')
    .map((u) => (/^\d+$/.test(u) && Number(u) === me.uid ? me.name : u));
}

export interface JobFilter {
  states?: string[];
  ids?: number[];
  names?: string[];
  owners?: string[];
  accounts?: string[];
  partitions?: string[];
  qos?: string[];
  nodes?: string[];
  /** Jobs not ended before this. */
  activeSince?: Date;
  /** Jobs submitted before this. */
  activeUntil?: Date;
  /** Whether a job without an owner counts as one of `owners` (the caller's, on an open cluster without tokens). */
  ownerlessIsMine?: boolean;
}

/** Whether a job passes the filter, as the server's filters mean (AND of all given). */
export function matchesFilter(job: SlurmJob, filter: JobFilter): boolean {
  if (filter.states && !filter.states.includes(job.state)) return false;
  // An array's job id names all its tasks.
  if (filter.ids && !filter.ids.includes(job.id) && !filter.ids.includes(job.array_job_id ?? -1))
    return false;
  if (filter.names && !filter.names.includes(job.name)) return false;
  if (filter.owners) {
    const mine = job.owner === null && filter.ownerlessIsMine === true;
    if (!mine && !filter.owners.includes(job.owner ?? '')) return false;
  }
  if (filter.accounts && !filter.accounts.includes(job.account ?? '')) return false;
  // A pending job may name several partitions (`a,b`): any of them matches, as the server's filter does.
  if (filter.partitions && !(job.partition ?? '').split(',').some((p) => filter.partitions?.includes(p))) {
    return false;
  }
  if (filter.qos && !filter.qos.includes(job.qos ?? 'normal')) return false;
  if (filter.nodes && !filter.nodes.includes(job.node ?? '')) return false;
  if (filter.activeSince && job.end_time && Date.parse(job.end_time) < filter.activeSince.getTime()) {
    return false;
  }
  if (filter.activeUntil && job.submit_time && Date.parse(job.submit_time) > filter.activeUntil.getTime()) {
    return false;
  }
  return true;
}

/** The filters as GET /api/v1/jobs takes them (issue 15); `state` and paging are older than the rest. */
function serverQuery(filter: JobFilter, withNewFilters: boolean): URLSearchParams {
  const query = new URLSearchParams({ limit: '1000' });
  const real = filter.states?.filter((s) => KNOWN_STATES.has(s));
  if (real) query.set('state', real.join(','));
  if (!withNewFilters) return query;
  if (filter.ids) query.set('ids', filter.ids.join(','));
  if (filter.names) query.set('name', filter.names.join(','));
  if (filter.owners && !filter.ownerlessIsMine) query.set('owner', filter.owners.join(','));
  if (filter.accounts) query.set('account', filter.accounts.join(','));
  if (filter.partitions) query.set('partition', filter.partitions.join(','));
  if (filter.nodes?.length === 1) query.set('node', filter.nodes[0] as string);
  if (filter.activeSince) query.set('active_since', filter.activeSince.toISOString());
  if (filter.activeUntil) query.set('active_until', filter.activeUntil.toISOString());
  return query;
}

/** The states Conductor's jobs take; a state list of only others matches nothing. */
const KNOWN_STATES = new Set([
  'PENDING',
  'RUNNING',
  'COMPLETED',
  'FAILED',
  'CANCELLED',
  'TIMEOUT',
  'NODE_FAIL',
  'OUT_OF_MEMORY',
]);

/**
 * Every job passing `filter`, oldest first, over as many pages as it takes. A server that predates the
 * issue-15 filters refuses them (400 invalid_request): the list is then fetched with the old ones only,
 * and the filter is applied here in any case.
 */
export async function listJobs(client: Client, filter: JobFilter): Promise<SlurmJob[]> {
  if (filter.states && !filter.states.some((s) => KNOWN_STATES.has(s))) return [];
  let withNewFilters = true;
  const jobs: SlurmJob[] = [];
  let before: number | null = null;
  for (;;) {
    const query = serverQuery(filter, withNewFilters);
    if (before !== null) query.set('before', String(before));
    let page: { jobs: SlurmJob[]; next_before: number | null };
    try {
      page = await client.request('GET', `/api/v1/jobs?${query}`);
    } catch (error) {
      if (withNewFilters && error instanceof ApiError && error.code === 'invalid_request') {
        if (filter.ids && filter.ids.length <= ONE_BY_ONE) return jobsById(client, filter);
        withNewFilters = false;
        jobs.length = 0;
        before = null;
        continue;
      }
      throw error;
    }
    jobs.push(...page.jobs.filter((j) => matchesFilter(j, filter)));
    if (page.next_before === null || page.next_before === undefined) break;
    before = page.next_before;
  }
  return jobs.sort((a, b) => a.id - b.id);
}

/** Up to this many ids, a server without the `ids` filter is asked for each job rather than for all. */
const ONE_BY_ONE = 50;

async function jobsById(client: Client, filter: JobFilter): Promise<SlurmJob[]> {
  const jobs: SlurmJob[] = [];
  for (const id of filter.ids ?? []) {
    try {
      jobs.push(await client.request<SlurmJob>('GET', `/api/v1/jobs/${id}`));
    } catch (error) {
      if (!(error instanceof ApiError) || error.status !== 404) throw error;
    }
  }
  return jobs.filter((j) => matchesFilter(j, filter)).sort((a, b) => a.id - b.id);
}

/**
 * An API failure in Slurm's words where scripts look for them (an unreachable control plane is an
 * unreachable slurmctld), with Conductor's own reason after it.
 */
export function controllerError(error: ApiError): string {
  return error.code === 'unreachable'
    ? `Unable to contact slurm controller (connect failure): ${error.message}`
    : error.message;
}

export function slurmClient(env: NodeJS.ProcessEnv): Client {
  return new Client(resolveConfig({}, env));
}

/**
 * getopt's complaints and the refused options end the command as Slurm's do (exit 1, a hint to --help);
 * warned options are said on stderr. Returns the exit code, or null to go on.
 */
export function reportParse(command: string, parsed: Parsed, io: Io): number | null {
  const { warnings, problems } = fatesOf(parsed.options);
  for (const p of parsed.problems) io.err(`${command}: ${p.message}\n`);
  if (parsed.problems.length > 0) {
    io.err(`Try "${command} --help" for more information\n`);
    return 1;
  }
  for (const p of problems) io.err(`${command}: error: ${p.message}\n`);
  if (problems.length > 0) return 1;
  for (const w of warnings) io.err(`${command}: warning: ${w.message}\n`);
  return null;
}

/** Every value given for the options of these long names, in order. */
function allValues(options: readonly ParsedOption[], ...longs: string[]): string[] {
  return options.filter((o) => longs.includes(o.spec.long)).map((o) => o.value ?? '');
}

/**
 * The options as the command line and the environment give them: a variable (SQUEUE_SORT, SCANCEL_USER,
 * ...) stands for its option unless the command line gives that option, or one of its `group`; a flag's
 * variable sets it when `true` or `T`, as Slurm reads them.
 */
export function withEnvironment(
  options: readonly ParsedOption[],
  table: readonly OptionSpec[],
  env: NodeJS.ProcessEnv,
  variables: Record<string, string>,
  groups: string[][] = [],
): ParsedOption[] {
  const fromEnv: ParsedOption[] = [];
  for (const [variable, long] of Object.entries(variables)) {
    const value = env[variable];
    const group = groups.find((g) => g.includes(long)) ?? [long];
    const spec = table.find((s) => s.long === long);
    if (value === undefined || !spec || given(options, ...group)) continue;
    if (spec.arg === 'none' && !/^(true|t)$/i.test(value)) continue;
    fromEnv.push({ spec, written: variable, index: -1, ...(spec.arg === 'none' ? {} : { value }) });
  }
  return [...fromEnv, ...options];
}

export function given(options: readonly ParsedOption[], ...longs: string[]): boolean {
  return options.some((o) => longs.includes(o.spec.long));
}

/** A comma list from every occurrence of the options (`-p a -p b,c` → a, b, c), or undefined. */
export function listOption(options: readonly ParsedOption[], ...longs: string[]): string[] | undefined {
  const values = allValues(options, ...longs);
  if (values.length === 0) return undefined;
  return values.flatMap((v) => v.split(',')).filter((v) => v !== '');
}

/** Node names from a Slurm hostlist (`n[1-3,5],gpu1`); a path (with `/`) is not read here. */
export function expandHostlist(list: string): string[] {
  const names: string[] = [];
  for (const part of list.match(/[^,[]+(\[[^\]]*\])?[^,]*/g) ?? []) {
    const range = /^(.*)\[([^\]]*)\](.*)$/.exec(part);
    if (!range) {
      names.push(part);
      continue;
    }
    const [, prefix, inner, suffix] = range as unknown as [string, string, string, string];
    for (const piece of inner.split(',')) {
      const [from, to] = piece.split('-') as [string, string | undefined];
      if (to === undefined) names.push(`${prefix}${from}${suffix}`);
      else {
        for (let n = Number(from); n <= Number(to); n++) {
          names.push(`${prefix}${String(n).padStart(from.length, '0')}${suffix}`);
        }
      }
    }
  }
  return names;
}

export const VERSION = `slurm ${SLURM_VERSION}`;

/** The priority squeue, scontrol and sacct print: the computed one (a server before it: the submitted one). */
export const jobPriority = (j: SlurmJob): number => j.computed_priority ?? j.priority ?? 0;

const seconds = (from: string | null, to: number) => (from ? (to - Date.parse(from)) / 1000 : 0);

/** How long the job has run (squeue's TIME, sacct's Elapsed): start to end, or to now while it runs. */
export function elapsedSeconds(job: SlurmJob, now: number): number {
  if (!job.start_time) return 0;
  return Math.max(0, Math.floor(seconds(job.start_time, job.end_time ? Date.parse(job.end_time) : now)));
}

/** A memory size in MB as Slurm's convert_num_unit prints it (exact: `4G`, `4000M`, `1.50G`). */
export function memoryUnits(value: number, unit: 'B' | 'K' | 'M'): string {
  const units = ['', 'K', 'M', 'G', 'T', 'P'];
  let index = unit === 'B' ? 0 : unit === 'K' ? 1 : 2;
  let n = value;
  if (Math.trunc(n) === 0) return '0';
  while (n >= 1024 && Math.trunc(n) % 512 === 0 && index < 5) {
    n /= 1024;
    index++;
  }
  return `${Number.isInteger(n) ? n : n.toFixed(2)}${units[index]}`;
}

/** The job's memory request in MB per node (per-CPU requests times the CPUs), or null. */
export function memoryPerNode(job: SlurmJob): number | null {
  if (job.memory_per_cpu) return job.memory_per_cpu * job.cpus;
  return job.memory_mb ?? null;
}

// ---------------------------------------------------------------------------------------------------------
// squeue

const NOT_HERE = 'Conductor has';

export const SQUEUE_OPTIONS: readonly OptionSpec[] = [
  {
    long: 'account',
    short: 'A',
    arg: 'required',
    fate: 'honoured',
    note: 'only jobs of these accounts (comma list)',
    value: '<account_list>',
  },
  {
    long: 'all',
    short: 'a',
    arg: 'none',
    fate: 'warned',
    note: `${NOT_HERE} no hidden partitions: every job is shown anyway`,
  },
  {
    long: 'array',
    short: 'r',
    arg: 'none',
    fate: 'honoured',
    note: "one line per array task: an array's pending tasks are not folded into one line (`123_[5-9%2]`)",
  },
  {
    long: 'array-unique',
    arg: 'none',
    fate: 'honoured',
    note: 'one line per pending array task, as --array does',
  },
  {
    long: 'clusters',
    short: 'M',
    arg: 'required',
    fate: 'refused',
    note: 'one Conductor control plane is one cluster: talk to another with CONDUCTOR_URL',
    value: '<cluster_name>',
  },
  {
    long: 'federation',
    arg: 'none',
    fate: 'warned',
    note: `${NOT_HERE} no federation: the local jobs are shown`,
  },
  {
    long: 'format',
    short: 'o',
    arg: 'required',
    fate: 'honoured',
    note: 'the columns as `%[[.]size]type[suffix]`, every field code of squeue(1); codes without meaning here print what Slurm prints for a one-node job, or N/A',
    value: '<output_format>',
  },
  {
    long: 'Format',
    short: 'O',
    arg: 'required',
    fate: 'honoured',
    note: 'the columns as `type[:[.][size][suffix]]` names (default width 20); names without meaning here print N/A',
    value: '<output_format>',
  },
  { long: 'help', arg: 'none', fate: 'honoured', note: 'prints the help' },
  { long: 'hide', arg: 'none', fate: 'honoured', note: 'the default: there are no hidden partitions' },
  {
    long: 'iterate',
    short: 'i',
    arg: 'required',
    fate: 'honoured',
    note: 'prints again every so many seconds, each time under a time stamp, until interrupted',
    value: '<seconds>',
  },
  {
    long: 'jobs',
    short: 'j',
    arg: 'optional',
    fate: 'honoured',
    note: "only these job ids (comma list, or the next word); a finished job shows for 300 s after it ended (Slurm's MinJobAge); one unknown id is an error (`slurm_load_jobs error: Invalid job id specified`, exit 1)",
    value: '<job_id_list>',
  },
  {
    long: 'json',
    arg: 'none',
    fate: 'refused',
    note: "Slurm's JSON (its data_parser schema) is not reproduced; `conductor jobs --json` gives Conductor's",
  },
  {
    long: 'licenses',
    short: 'L',
    arg: 'required',
    fate: 'refused',
    note: `${NOT_HERE} no licenses`,
    value: '<license_list>',
  },
  { long: 'local', arg: 'none', fate: 'warned', note: `${NOT_HERE} no federation: the local jobs are shown` },
  {
    long: 'long',
    short: 'l',
    arg: 'none',
    fate: 'honoured',
    note: 'the long format `%.18i %.9P %.8j %.8u %.8T %.10M %.9l %.6D %R`',
  },
  {
    long: 'me',
    arg: 'none',
    fate: 'honoured',
    note: 'only your jobs (the owner named by CONDUCTOR_OWNER, else your user name)',
  },
  {
    long: 'name',
    short: 'n',
    arg: 'required',
    fate: 'honoured',
    note: 'only jobs of these names (comma list)',
    value: '<name_list>',
  },
  { long: 'noconvert', arg: 'none', fate: 'honoured', note: 'memory in MB as requested (`4096M`, not `4G`)' },
  {
    long: 'nodelist',
    short: 'w',
    arg: 'required',
    fate: 'honoured',
    note: 'only jobs on these nodes (a hostlist: `n[1-3],gpu1`)',
    value: '<hostlist>',
  },
  { long: 'noheader', short: 'h', arg: 'none', fate: 'honoured', note: 'no header line' },
  {
    long: 'partition',
    short: 'p',
    arg: 'required',
    fate: 'honoured',
    note: 'only jobs of these partitions (comma list)',
    value: '<part_list>',
  },
  {
    long: 'priority',
    short: 'P',
    arg: 'none',
    fate: 'warned',
    note: 'a Conductor job belongs to one partition: it is listed once anyway',
  },
  {
    long: 'qos',
    short: 'q',
    arg: 'required',
    fate: 'honoured',
    note: 'only jobs of these QOS (comma list; a job without one is `normal`)',
    value: '<qos_list>',
  },
  {
    long: 'reservation',
    short: 'R',
    arg: 'required',
    fate: 'refused',
    note: 'filtering by reservation is not supported yet',
    value: '<reservation_name>',
  },
  {
    long: 'sibling',
    arg: 'none',
    fate: 'warned',
    note: `${NOT_HERE} no federation: the local jobs are shown`,
  },
  {
    long: 'sort',
    short: 'S',
    arg: 'required',
    fate: 'honoured',
    note: 'the order, by field codes with + or - (default `P,t,-p`): i A F P t T p Q u U j M l L S V e C D N a q r m',
    value: '<sort_list>',
  },
  {
    long: 'start',
    arg: 'none',
    fate: 'honoured',
    note: 'pending jobs with their planned start (for a job that holds a node: when the time limits of the jobs running there free it; N/A: not planned), as `%.18i %.9P %.8j %.8u %.2t  %.19S %.6D %20Y %R`, sorted by start',
  },
  {
    long: 'states',
    short: 't',
    arg: 'required',
    fate: 'honoured',
    note: 'only jobs in these states (long or compact names, any case, or `all`); default pending, running and completing',
    value: '<state_list>',
  },
  {
    long: 'steps',
    short: 's',
    arg: 'optional',
    fate: 'refused',
    note: 'a Conductor job has no separate steps: its batch script is the job',
    value: '<step_list>',
  },
  { long: 'usage', arg: 'none', fate: 'honoured', note: 'prints the usage line' },
  {
    long: 'user',
    short: 'u',
    arg: 'required',
    fate: 'honoured',
    note: 'only jobs of these users (names, or your uid)',
    value: '<user_list>',
  },
  {
    long: 'verbose',
    short: 'v',
    arg: 'none',
    fate: 'honoured',
    note: 'prints the options in effect to stderr',
  },
  { long: 'version', short: 'V', arg: 'none', fate: 'honoured', note: `prints \`${VERSION}\`` },
  {
    long: 'yaml',
    arg: 'none',
    fate: 'refused',
    note: "Slurm's YAML (its data_parser schema) is not reproduced; `conductor jobs --json` gives Conductor's JSON",
  },
];

const DEFAULT_FORMAT = '%.18i %.9P %.8j %.8u %.2t %.10M %.6D %R';
const LONG_FORMAT = '%.18i %.9P %.8j %.8u %.8T %.10M %.9l %.6D %R';
const START_FORMAT = '%.18i %.9P %.8j %.8u %.2t  %.19S %.6D %20Y %R';
/** How long slurmctld keeps a finished job (MinJobAge's default): `squeue -j` shows it that long. */
const MIN_JOB_AGE_S = 300;

interface FieldContext {
  now: number;
  me: { name: string; uid: number | null };
  noconvert: boolean;
}

interface Field {
  header: string;
  value(job: SlurmJob, ctx: FieldContext): string;
  /** Values never cut to the width: node lists and times (squeue's _print_nodes, _print_secs). */
  uncut?: boolean | ((job: SlurmJob) => boolean);
}

/** The state squeue shows: a running job being cancelled is COMPLETING, as in Slurm. */
function shownState(job: SlurmJob): string {
  return job.state === 'RUNNING' && job.cancel_requested ? 'COMPLETING' : job.state;
}

const SLURM_REASON = /^[A-Za-z][A-Za-z0-9_*]*$/;

/** The reason as a Slurm reason code: the job's own when it is one, else what Slurm says for the state. */
function reasonCode(job: SlurmJob): string {
  if (job.reason && SLURM_REASON.test(job.reason)) return job.reason;
  if (job.state === 'TIMEOUT') return 'TimeLimit';
  if (job.state === 'FAILED') return 'NonZeroExitCode';
  if (job.state === 'PENDING' && job.held) return 'JobHeldUser';
  return 'None';
}

/** `%R`: pending, failed and timed-out jobs show their reason in parentheses, the others their node. */
function reasonList(job: SlurmJob): string {
  const state = shownState(job);
  if (state === 'PENDING' || state === 'FAILED' || state === 'TIMEOUT') return `(${reasonCode(job)})`;
  return job.node ?? '';
}

const plain = (v: string | number | null | undefined, none = '(null)') =>
  v === null || v === undefined || v === '' ? none : String(v);
const time = (iso: string | null | undefined) => timestamp(iso, 'N/A');

/** Slurm's StartTime: when it started, or for a pending job when it is planned to (backfill's estimate). */
const startOf = (job: SlurmJob) =>
  job.state === 'PENDING' ? (job.planned_start_time ?? null) : job.start_time;

function expectedEnd(job: SlurmJob): string | null {
  if (job.end_time) return job.end_time;
  if (job.start_time && job.time_limit !== null) {
    return new Date(Date.parse(job.start_time) + job.time_limit * 60_000).toISOString();
  }
  return null;
}

function timeLeft(job: SlurmJob, now: number): string {
  if (job.time_limit === null) return 'UNLIMITED';
  const left = job.time_limit * 60 - elapsedSeconds(job, now);
  return left < 0 ? 'INVALID' : squeueSeconds(left);
}

function uidOf(job: SlurmJob, ctx: FieldContext): string {
  return job.owner === ctx.me.name && ctx.me.uid !== null ? String(ctx.me.uid) : 'N/A';
}

function minMemory(job: SlurmJob, ctx: FieldContext): string {
  const mb = job.memory_per_cpu ?? job.memory_mb ?? 0;
  return ctx.noconvert ? `${mb}M` : memoryUnits(mb, 'M');
}

/** Where the batch output goes: the pattern (default slurm-%j.out) with %j, in the working directory. */
function outputPath(job: SlurmJob, pattern: string | null | undefined): string {
  const path = (pattern ?? 'slurm-%j.out').replace(/%(\d*)j/g, (_, pad: string) =>
    String(job.id).padStart(Number(pad || 0), '0'),
  );
  const dir = job.work_dir ?? job.submit_dir ?? '';
  return path.startsWith('/') || dir === '' ? path : join(dir, path);
}

/** Task indexes folded as Slurm writes them: `1,3,5-9`. */
export function foldIndexes(indexes: readonly number[]): string {
  const sorted = [...new Set(indexes)].sort((a, b) => a - b);
  const parts: string[] = [];
  for (let k = 0; k < sorted.length; ) {
    let end = k;
    while (end + 1 < sorted.length && (sorted[end + 1] as number) === (sorted[end] as number) + 1) end++;
    parts.push(end > k ? `${sorted[k]}-${sorted[end]}` : String(sorted[k]));
    k = end + 1;
  }
  return parts.join(',');
}

/** Slurm's job id: `123_4` for an array task, `123_[5-9%2]` for an array's folded pending tasks, else `123`. */
function slurmJobId(j: SlurmJob): string {
  if (j.array_job_id === null || j.array_job_id === undefined) return String(j.id);
  if (j.folded_tasks !== undefined) return `${j.array_job_id}_[${j.folded_tasks}]`;
  return `${j.array_job_id}_${j.array_task_id}`;
}

/**
 * squeue's view of arrays: each array's pending tasks on one line (`123_[5-9%2]`, `%N` its cap: `caps`), in
 * the place of its first pending task; running and ended tasks one line each. A lone pending task stays as it is.
 */
export function foldArrayTasks(jobs: SlurmJob[], caps: ReadonlyMap<number, number | null>): SlurmJob[] {
  const pending = new Map<number, SlurmJob[]>();
  for (const j of jobs) {
    if (j.state !== 'PENDING' || j.array_job_id === null || j.array_job_id === undefined) continue;
    const list = pending.get(j.array_job_id) ?? [];
    list.push(j);
    pending.set(j.array_job_id, list);
  }
  const out: SlurmJob[] = [];
  for (const j of jobs) {
    const group =
      j.array_job_id === null || j.array_job_id === undefined ? undefined : pending.get(j.array_job_id);
    if (j.state !== 'PENDING' || !group || group.length < 2) {
      out.push(j);
      continue;
    }
    if (group[0] !== j) continue;
    const cap = caps.get(j.array_job_id as number);
    const indexes = group.map((t) => t.array_task_id as number);
    out.push({ ...j, folded_tasks: `${foldIndexes(indexes)}${cap ? `%${cap}` : ''}` });
  }
  return out;
}

const FIELDS: Record<string, Field> = {
  a: { header: 'ACCOUNT', value: (j) => plain(j.account) },
  A: {
    header: 'JOBID',
    value: (j) => String(j.folded_tasks === undefined ? j.id : (j.array_job_id ?? j.id)),
  },
  B: { header: 'EXEC_HOST', value: (j) => j.node ?? 'n/a' },
  c: { header: 'MIN_CPUS', value: (j) => String(j.cpus_per_task ?? 1) },
  C: { header: 'CPUS', value: (j) => String(j.cpus) },
  d: { header: 'MIN_TMP_DISK', value: () => '0' },
  D: { header: 'NODES', value: () => '1' },
  e: {
    header: 'END_TIME',
    value: (j) => (j.time_limit === null && j.start_time && !j.end_time ? 'NONE' : time(expectedEnd(j))),
  },
  E: { header: 'DEPENDENCY', value: (j) => j.dependency || '(null)' },
  f: { header: 'FEATURES', value: (j) => plain(j.constraint) },
  F: { header: 'ARRAY_JOB_ID', value: (j) => String(j.array_job_id ?? j.id) },
  g: { header: 'GROUP', value: () => 'N/A' },
  G: { header: 'GROUP', value: () => 'N/A' },
  h: { header: 'OVER_SUBSCRIBE', value: (j) => (j.exclusive ? 'NO' : 'OK') },
  H: { header: 'SOCKETS_PER_NODE', value: () => '*' },
  i: { header: 'JOBID', value: (j) => slurmJobId(j) },
  I: { header: 'CORES_PER_SOCKET', value: () => '*' },
  j: { header: 'NAME', value: (j) => j.name },
  J: { header: 'THREADS_PER_CORE', value: () => '*' },
  k: { header: 'COMMENT', value: (j) => plain(j.comment) },
  K: {
    header: 'ARRAY_TASK_ID',
    value: (j) =>
      j.folded_tasks ??
      (j.array_task_id === null || j.array_task_id === undefined ? 'N/A' : String(j.array_task_id)),
  },
  l: { header: 'TIME_LIMIT', value: (j) => timeLimit(j.time_limit, 'squeue'), uncut: true },
  L: { header: 'TIME_LEFT', value: (j, c) => timeLeft(j, c.now), uncut: true },
  m: { header: 'MIN_MEMORY', value: minMemory },
  M: { header: 'TIME', value: (j, c) => squeueSeconds(elapsedSeconds(j, c.now)), uncut: true },
  n: { header: 'REQ_NODES', value: (j) => (j.nodelist ?? []).join(','), uncut: true },
  N: { header: 'NODELIST', value: (j) => j.node ?? '', uncut: true },
  o: { header: 'COMMAND', value: () => '(null)' },
  O: { header: 'CONTIGUOUS', value: () => '0' },
  p: { header: 'PRIORITY', value: (j) => (jobPriority(j) / 0xffffffff).toFixed(14) },
  P: { header: 'PARTITION', value: (j) => plain(j.partition) },
  q: { header: 'QOS', value: (j) => j.qos ?? 'normal' },
  Q: { header: 'PRIORITY', value: (j) => String(jobPriority(j)) },
  r: { header: 'REASON', value: reasonCode },
  R: { header: 'NODELIST(REASON)', value: reasonList, uncut: (j) => !reasonList(j).startsWith('(') },
  s: { header: 'SELECT_JOBINFO', value: () => 'N/A' },
  S: { header: 'START_TIME', value: (j) => time(startOf(j)) },
  t: { header: 'ST', value: (j) => STATE_CODES[shownState(j)] ?? shownState(j) },
  T: { header: 'STATE', value: shownState },
  u: { header: 'USER', value: (j) => j.owner ?? 'nobody' },
  U: { header: 'USER', value: uidOf },
  v: { header: 'RESERVATION', value: () => '(null)' },
  V: { header: 'SUBMIT_TIME', value: (j) => time(j.submit_time) },
  w: { header: 'WCKEY', value: () => '(null)' },
  W: { header: 'LICENSES', value: () => '(null)' },
  x: { header: 'EXC_NODES', value: (j) => (j.exclude ?? []).join(','), uncut: true },
  X: { header: 'CORE_SPEC', value: () => 'N/A' },
  y: { header: 'NICE', value: () => '0' },
  Y: { header: 'SCHEDNODES', value: () => '(null)' },
  z: { header: 'S:C:T', value: () => '*:*:*' },
  Z: { header: 'WORK_DIR', value: (j) => plain(j.work_dir ?? j.submit_dir) },
};

const na: Field['value'] = () => 'N/A';

/** `-O` names (lower case) → their column: a field code's, or their own. */
const LONG_FIELDS: Record<string, Field | string> = {
  account: 'a',
  accruetime: { header: 'ACCRUE_TIME', value: (j) => time(j.eligible_time ?? j.submit_time) },
  admin_comment: { header: 'ADMIN_COMMENT', value: () => '(null)' },
  allocnodes: { header: 'ALLOC_NODES', value: (j) => plain(j.submit_host) },
  allocsid: { header: 'ALLOC_SID', value: () => '0' },
  arrayjobid: 'F',
  arraytaskid: 'K',
  associd: { header: 'ASSOC_ID', value: () => '0' },
  batchflag: { header: 'BATCH_FLAG', value: () => '1' },
  batchhost: 'B',
  boardspernode: { header: 'BOARDS_PER_NODE', value: na },
  burstbuffer: { header: 'BURST_BUFFER', value: () => '(null)' },
  burstbufferstate: { header: 'BURST_BUFFER_STATE', value: () => '(null)' },
  cluster: { header: 'CLUSTER', value: na },
  clusterfeature: { header: 'CLUSTER_FEATURE', value: () => '(null)' },
  command: 'o',
  comment: 'k',
  contiguous: 'O',
  container: { header: 'CONTAINER', value: () => '(null)' },
  cores: 'I',
  corespec: 'X',
  cpufreq: { header: 'CPU_FREQ', value: na },
  'cpus-per-task': { header: 'CPUS_PER_TASK', value: (j) => String(j.cpus_per_task ?? 1) },
  'cpus-per-tres': { header: 'CPUS_PER_TRES', value: na },
  deadline: { header: 'DEADLINE', value: na },
  delayboot: { header: 'DELAY_BOOT', value: () => '0:00' },
  dependency: 'E',
  derivedec: { header: 'DERIVED_EC', value: (j) => j.exit_code ?? '0:0' },
  eligibletime: { header: 'ELIGIBLE_TIME', value: (j) => time(j.eligible_time ?? j.submit_time) },
  endtime: 'e',
  exit_code: { header: 'EXIT_CODE', value: (j) => j.exit_code ?? '0:0' },
  feature: 'f',
  groupid: 'G',
  groupname: 'g',
  hetjobid: { header: 'HET_JOB_ID', value: na },
  hetjobidset: { header: 'HET_JOB_ID_SET', value: na },
  hetjoboffset: { header: 'HET_JOB_OFFSET', value: na },
  jobarrayid: { header: 'JOBID', value: (j) => slurmJobId(j) },
  jobid: 'A',
  lastschedeval: { header: 'LAST_SCHED_EVAL', value: na },
  licenses: 'W',
  maxcpus: { header: 'MAX_CPUS', value: (j) => String(j.cpus) },
  maxnodes: { header: 'MAX_NODES', value: () => '1' },
  mcslabel: { header: 'MCSLABEL', value: na },
  'mem-per-tres': { header: 'MEM_PER_TRES', value: na },
  mincpus: 'c',
  minmemory: 'm',
  mintime: { header: 'MIN_TIME', value: () => '0:00' },
  mintmpdisk: 'd',
  name: 'j',
  network: { header: 'NETWORK', value: na },
  nice: 'y',
  nodelist: 'N',
  nodes: { header: 'NODES', value: (j) => j.node ?? '', uncut: true },
  ntperboard: { header: 'NTASKS_PER_BOARD', value: na },
  ntpercore: { header: 'NTASKS_PER_CORE', value: na },
  ntpernode: { header: 'NTASKS_PER_NODE', value: na },
  ntpersocket: { header: 'NTASKS_PER_SOCKET', value: na },
  numcpus: 'C',
  numnodes: 'D',
  numtasks: { header: 'NUM_TASKS', value: (j) => String(j.ntasks ?? 1) },
  origin: { header: 'ORIGIN', value: na },
  originraw: { header: 'ORIGIN_RAW', value: na },
  oversubscribe: 'h',
  partition: 'P',
  pendingtime: {
    header: 'PENDING_TIME',
    value: (j, c) =>
      String(
        Math.max(0, Math.floor(seconds(j.submit_time, j.start_time ? Date.parse(j.start_time) : c.now))),
      ),
  },
  preempttime: { header: 'PREEMPT_TIME', value: na },
  prefer: { header: 'PREFER', value: () => '(null)' },
  priority: 'p',
  prioritylong: 'Q',
  profile: { header: 'PROFILE', value: () => 'NotSet' },
  qos: 'q',
  reason: 'r',
  reasonlist: 'R',
  reboot: { header: 'REBOOT', value: () => '0' },
  reqnodes: 'n',
  reqswitch: { header: 'REQ_SWITCH', value: () => '0' },
  requeue: { header: 'REQUEUE', value: (j) => (j.requeue ? '1' : '0') },
  reservation: 'v',
  resizetime: { header: 'RESIZE_TIME', value: () => '0' },
  restartcnt: { header: 'RESTARTCNT', value: (j) => String(j.requeues ?? Math.max(0, (j.attempt ?? 1) - 1)) },
  resvport: { header: 'RESV_PORT', value: na },
  schednodes: 'Y',
  sct: 'z',
  selectjobinfo: 's',
  siblingsactive: { header: 'CLUSTERS_ACTIVE', value: na },
  siblingsactiveraw: { header: 'CLUSTER_IDS_ACTIVE', value: na },
  siblingsviable: { header: 'CLUSTERS_VIABLE', value: na },
  siblingsviableraw: { header: 'CLUSTER_IDS_VIABLE', value: na },
  sockets: 'H',
  sperboard: { header: 'SOCKETS_PER_BOARD', value: na },
  starttime: 'S',
  state: 'T',
  statecompact: 't',
  stderr: { header: 'STDERR', value: (j) => outputPath(j, j.stderr ?? j.stdout) },
  stdin: { header: 'STDIN', value: (j) => j.stdin ?? '/dev/null' },
  stdout: { header: 'STDOUT', value: (j) => outputPath(j, j.stdout) },
  stepid: { header: 'STEPID', value: na },
  stepname: { header: 'STEPNAME', value: na },
  stepstate: { header: 'STEPSTATE', value: na },
  submittime: 'V',
  system_comment: { header: 'SYSTEM_COMMENT', value: () => '(null)' },
  threads: 'J',
  timeleft: 'L',
  timelimit: 'l',
  timeused: 'M',
  'tres-alloc': {
    header: 'TRES_ALLOC',
    value: (j) => {
      const mem = memoryPerNode(j);
      return `cpu=${j.cpus},${mem ? `mem=${memoryUnits(mem, 'M')},` : ''}node=1,billing=${j.cpus}${j.gpus ? `,gres/gpu=${j.gpus}` : ''}`;
    },
  },
  'tres-bind': { header: 'TRES_BIND', value: na },
  'tres-freq': { header: 'TRES_FREQ', value: na },
  'tres-per-job': { header: 'TRES_PER_JOB', value: na },
  'tres-per-node': { header: 'TRES_PER_NODE', value: (j) => (j.gpus ? `gres:gpu:${j.gpus}` : 'N/A') },
  'tres-per-socket': { header: 'TRES_PER_SOCKET', value: na },
  'tres-per-step': { header: 'TRES_PER_STEP', value: na },
  'tres-per-task': { header: 'TRES_PER_TASK', value: na },
  userid: 'U',
  username: 'u',
  wait4switch: { header: 'WAIT4SWITCH', value: () => '0' },
  wckey: 'w',
  workdir: 'Z',
};

/** One column: what precedes it, its field, width, side and suffix. */
export interface Column {
  prefix: string;
  field: Field;
  width: number | undefined;
  right: boolean;
  suffix: string;
}

/** `-o`: `%[[.]size]type[suffix]` (text before the first field is printed too); or the bad code. */
export function parseFormat(format: string): Column[] | { bad: string } {
  const expanded = format.replace(
    /%all/g,
    Object.keys(FIELDS)
      .map((c) => `%${c}|`)
      .join(''),
  );
  const columns: Column[] = [];
  const first = expanded.indexOf('%');
  let prefix = first < 0 ? expanded : expanded.slice(0, first);
  const spec = /%(\.?)(\d*)([A-Za-z])([^%]*)/g;
  for (let match = spec.exec(expanded); match; match = spec.exec(expanded)) {
    const [, dot, size, code, suffix] = match as unknown as [string, string, string, string, string];
    const field = FIELDS[code];
    if (!field) return { bad: code };
    columns.push({
      prefix,
      field,
      width: size === '' ? undefined : Number(size),
      right: dot === '.',
      suffix,
    });
    prefix = '';
  }
  if (columns.length === 0 && prefix !== '') return { bad: prefix };
  return columns;
}

/** `-O`: `type[:[.][size][suffix]]`, comma separated; or the bad name. */
export function parseLongFormat(format: string): Column[] | { bad: string } {
  const columns: Column[] = [];
  for (const item of format.split(',')) {
    if (item === '') continue;
    const colon = item.indexOf(':');
    const name = (colon < 0 ? item : item.slice(0, colon)).toLowerCase();
    const found = LONG_FIELDS[name];
    if (found === undefined) return { bad: item };
    const field = typeof found === 'string' ? (FIELDS[found] as Field) : found;
    const spec = /^(\.?)(\d*)(.*)$/.exec(colon < 0 ? '' : item.slice(colon + 1)) as RegExpExecArray;
    const [, dot, size, suffix] = spec as unknown as [string, string, string, string];
    columns.push({
      prefix: '',
      field,
      width: size === '' ? 20 : Number(size),
      right: dot === '.',
      suffix,
    });
  }
  return columns;
}

/** A line of cells; a job's value of an uncut field may overflow its width (headers are always cut). */
function renderLine(columns: Column[], cell: (c: Column) => string, job?: SlurmJob): string {
  return columns
    .map((c) => {
      const text = cell(c);
      const { uncut } = c.field;
      const overflow = job !== undefined && (typeof uncut === 'function' ? uncut(job) : uncut === true);
      const shown =
        overflow && c.width !== undefined && text.length > c.width ? text : fit(text, c.width, c.right);
      return `${c.prefix}${shown}${c.suffix}`;
    })
    .join('');
}

/** squeue's text: the header (unless hidden) and a line per job, with Slurm's cut-and-pad. */
export function renderSqueue(
  jobs: SlurmJob[],
  columns: Column[],
  options: { header: boolean; now: number; me: { name: string; uid: number | null }; noconvert?: boolean },
): string {
  const ctx: FieldContext = { now: options.now, me: options.me, noconvert: options.noconvert === true };
  const lines = options.header ? [renderLine(columns, (c) => c.field.header)] : [];
  for (const job of jobs) {
    lines.push(renderLine(columns, (c) => c.field.value(job, ctx), job));
  }
  return lines.map((l) => `${l}\n`).join('');
}

/** Slurm's job state order (its enum), for sorting by state. */
const STATE_ORDER = [
  'PENDING',
  'RUNNING',
  'SUSPENDED',
  'COMPLETED',
  'CANCELLED',
  'FAILED',
  'TIMEOUT',
  'NODE_FAIL',
  'PREEMPTED',
  'BOOT_FAIL',
  'DEADLINE',
  'OUT_OF_MEMORY',
];

type SortKey = (job: SlurmJob, now: number) => number | string;
const ms = (iso: string | null | undefined) => (iso ? Date.parse(iso) : 0);
const SORT_KEYS: Record<string, SortKey> = {
  i: (j) => j.id,
  A: (j) => j.id,
  F: (j) => j.id,
  P: (j) => j.partition ?? '',
  t: (j) => STATE_ORDER.indexOf(j.state),
  T: (j) => STATE_ORDER.indexOf(j.state),
  p: jobPriority,
  Q: jobPriority,
  u: (j) => j.owner ?? '',
  U: (j) => j.owner ?? '',
  j: (j) => j.name,
  M: (j, now) => elapsedSeconds(j, now),
  l: (j) => j.time_limit ?? Number.MAX_SAFE_INTEGER,
  L: (j, now) => (j.time_limit ?? Number.MAX_SAFE_INTEGER) * 60 - elapsedSeconds(j, now),
  S: (j) => ms(startOf(j)),
  V: (j) => ms(j.submit_time),
  e: (j) => ms(expectedEnd(j)),
  C: (j) => j.cpus,
  D: () => 1,
  N: (j) => j.node ?? '',
  a: (j) => j.account ?? '',
  q: (j) => j.qos ?? 'normal',
  r: (j) => reasonCode(j),
  m: (j) => j.memory_per_cpu ?? j.memory_mb ?? 0,
};

/** Sorts by `-S` keys (Slurm applies them last to first, so the first key leads); bad keys are returned. */
export function sortJobs(jobs: SlurmJob[], sort: string, now: number): string[] {
  const bad: string[] = [];
  const keys: { key: SortKey; sign: number }[] = [];
  for (const item of sort.split(',')) {
    const match = /^([+-]?)(.+)$/.exec(item.trim());
    if (!match) continue;
    const key = SORT_KEYS[match[2] as string];
    if (!key) bad.push(match[2] as string);
    else keys.push({ key, sign: match[1] === '-' ? -1 : 1 });
  }
  jobs.sort((a, b) => {
    for (const { key, sign } of keys) {
      const x = key(a, now);
      const y = key(b, now);
      if (x < y) return -sign;
      if (x > y) return sign;
    }
    return a.id - b.id;
  });
  return bad;
}

const SQUEUE_USAGE = `Usage: squeue [-A account] [--clusters names] [-i seconds] [--job jobid]
              [-n name] [-o format] [--only-job-state] [-p partitions]
              [--qos qos] [--reservation reservation] [--sort fields] [--start]
              [--step step_id] [-t states] [-u user_name] [--usage]
              [-L licenses] [-w nodes] [--federation] [--local] [--sibling]
	      [--json=data_parser] [--yaml=data_parser]
	      [-ahjlrsv]
`;

function squeueHelp(): string {
  const lines = [...SQUEUE_OPTIONS]
    .sort((a, b) => a.long.localeCompare(b.long))
    .map((s) => {
      const names = `${s.short ? `-${s.short}, ` : '    '}--${s.long}${s.arg === 'none' ? '' : s.arg === 'optional' ? `[=${s.value}]` : `=${s.value}`}`;
      return `  ${names.padEnd(36)} ${s.fate === 'honoured' ? s.note : `(${s.fate === 'warned' ? 'ignored' : 'refused'}: ${s.note})`}`;
    });
  return `Usage: squeue [OPTIONS]\n${lines.join('\n')}\n\nHelp options:\n  --help     show this help message\n  --usage    display a brief summary of squeue options\n`;
}

/** The C library's ctime(3), which squeue prints above each iteration. */
function ctime(date: Date): string {
  const days = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
  const months = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
  const two = (n: number) => String(n).padStart(2, '0');
  return `${days[date.getDay()]} ${months[date.getMonth()]} ${String(date.getDate()).padStart(2)} ${two(date.getHours())}:${two(date.getMinutes())}:${two(date.getSeconds())} ${date.getFullYear()}`;
}

export async function runSqueue(args: string[], io: Io, env: NodeJS.ProcessEnv): Promise<number> {
  const parsed = getoptLong(args, SQUEUE_OPTIONS);
  const stop = reportParse('squeue', parsed, io);
  if (stop !== null) return stop;
  const options = withEnvironment(
    parsed.options,
    SQUEUE_OPTIONS,
    env,
    {
      SQUEUE_ACCOUNT: 'account',
      SQUEUE_FORMAT: 'format',
      SQUEUE_FORMAT2: 'Format',
      SQUEUE_NAMES: 'name',
      SQUEUE_PARTITION: 'partition',
      SQUEUE_QOS: 'qos',
      SQUEUE_SORT: 'sort',
      SQUEUE_STATES: 'states',
      SQUEUE_USERS: 'user',
    },
    [['format', 'Format']],
  );
  if (given(options, 'help')) {
    io.out(squeueHelp());
    return 0;
  }
  if (given(options, 'usage')) {
    io.out(SQUEUE_USAGE);
    return 0;
  }
  if (given(options, 'version')) {
    io.out(`${VERSION}\n`);
    return 0;
  }
  const positionals = [...parsed.positionals];
  const jobOption = options.filter((o) => o.spec.long === 'jobs');
  const jobWords = jobOption.map((o) => o.value ?? positionals.shift() ?? '');
  if (positionals.length > 0) {
    io.err(`squeue: error: Unrecognized option: ${positionals[0]}\n${SQUEUE_USAGE}`);
    return 1;
  }
  const me = currentUser(env);
  const filter: JobFilter = {};
  let idsGiven: number[] | undefined;
  if (jobOption.length > 0) {
    const words = jobWords.flatMap((w) => w.split(',')).filter((w) => w !== '');
    const bad = words.find((w) => !/^\d+$/.test(w));
    if (bad !== undefined) {
      io.err(`squeue: error: Invalid job id: ${bad}\n`);
      return 1;
    }
    idsGiven = words.map(Number);
    if (idsGiven.length > 0) filter.ids = idsGiven;
  }
  const stateList = listOption(options, 'states');
  let shownStates: string[] | undefined;
  const start = given(options, 'start');
  if (stateList) {
    if (!stateList.some((s) => s.toLowerCase() === 'all')) {
      const states = parseStates(stateList.join(','));
      if ('bad' in states) {
        io.err(
          `squeue: error: Invalid job state specified: ${states.bad}\nsqueue: error: Valid job states include: ${Object.keys(STATE_CODES).join(',')}\n`,
        );
        return 1;
      }
      shownStates = states.states;
    }
  } else if (start) shownStates = ['PENDING'];
  else if (!filter.ids) shownStates = ['PENDING', 'RUNNING', 'COMPLETING'];
  if (shownStates) {
    filter.states = [...new Set(shownStates.map((s) => (s === 'COMPLETING' ? 'RUNNING' : s)))];
  }
  const users = listOption(options, 'user');
  if (given(options, 'me')) filter.owners = [...(users ? userNames(users.join(','), env) : []), me.name];
  else if (users) filter.owners = userNames(users.join(','), env);
  filter.names = listOption(options, 'name');
  filter.accounts = listOption(options, 'account');
  filter.partitions = listOption(options, 'partition');
  filter.qos = listOption(options, 'qos');
  const nodes = listOption(options, 'nodelist');
  if (nodes) filter.nodes = nodes.flatMap(expandHostlist);
  for (const key of Object.keys(filter) as (keyof JobFilter)[]) {
    if (filter[key] === undefined) delete filter[key];
  }

  const formatOption = options.filter((o) => o.spec.long === 'format' || o.spec.long === 'Format').at(-1);
  const formatText =
    formatOption?.value ?? (given(options, 'long') ? LONG_FORMAT : start ? START_FORMAT : DEFAULT_FORMAT);
  const columns =
    formatOption?.spec.long === 'Format' ? parseLongFormat(formatText) : parseFormat(formatText);
  if ('bad' in columns) {
    io.err(`squeue: error: Invalid job format specification: ${columns.bad}\n`);
    return 1;
  }
  const sort = options.filter((o) => o.spec.long === 'sort').at(-1)?.value ?? (start ? 'S' : 'P,t,-p');
  const iterate = options.filter((o) => o.spec.long === 'iterate').at(-1)?.value;
  if (iterate !== undefined && !/^[1-9]\d*$/.test(iterate)) {
    io.err('squeue: error: --iterate=<seconds> must be a positive integer\n');
    return 1;
  }
  const verbose = given(options, 'verbose');
  if (verbose) {
    io.err(
      `-----------------------------\nformat     = ${formatText}\niterate    = ${iterate ?? 0}\njobs       = ${filter.ids?.join(',') ?? '(null)'}\nsort       = ${sort}\nstates     = ${filter.states?.join(',') ?? 'all'}\nusers      = ${filter.owners?.join(',') ?? '(null)'}\n-----------------------------\n\n\n`,
    );
  }
  const client = slurmClient(env);
  filter.ownerlessIsMine = filter.owners?.includes(me.name) === true && !client.config.token;
  const header = !given(options, 'noheader');
  const once = async (): Promise<number> => {
    let jobs: SlurmJob[];
    try {
      jobs = await listJobs(client, filter);
      // On an open cluster (no tokens) jobs have no owner: they are the caller's, and run as the agent's user.
      if (!client.config.token) for (const job of jobs) job.owner ??= me.name;
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      io.err(`slurm_load_jobs error: ${controllerError(error)}\n`);
      return 1;
    }
    const now = Date.now();
    if (shownStates) jobs = jobs.filter((j) => shownStates.includes(shownState(j)));
    if (!given(options, 'array') && !given(options, 'array-unique')) {
      jobs = foldArrayTasks(jobs, await arrayCaps(client, jobs));
    }
    if (idsGiven && !stateList) {
      jobs = jobs.filter(
        (j) => !j.end_time || !FINISHED.has(j.state) || now - Date.parse(j.end_time) <= MIN_JOB_AGE_S * 1000,
      );
      if (idsGiven.length === 1 && jobs.length === 0) {
        io.err('slurm_load_jobs error: Invalid job id specified\n');
        return 1;
      }
    }
    for (const bad of sortJobs(jobs, sort, now))
      io.err(`squeue: error: Invalid sort specification: ${bad}\n`);
    if (header && (iterate !== undefined || verbose || given(options, 'long')))
      io.out(`${ctime(new Date(now))}\n`);
    io.out(renderSqueue(jobs, columns, { header, now, me, noconvert: given(options, 'noconvert') }));
    return 0;
  };
  if (iterate === undefined) return once();
  for (;;) {
    await once();
    io.out('\n');
    await new Promise((resolve) => setTimeout(resolve, Number(iterate) * 1000));
  }
}

/** The `%N` caps of the arrays with more than one pending task among `jobs` (one request per array). */
async function arrayCaps(client: Client, jobs: SlurmJob[]): Promise<Map<number, number | null>> {
  const counts = new Map<number, number>();
  for (const j of jobs) {
    if (j.state === 'PENDING' && typeof j.array_job_id === 'number') {
      counts.set(j.array_job_id, (counts.get(j.array_job_id) ?? 0) + 1);
    }
  }
  const caps = new Map<number, number | null>();
  for (const [id, n] of counts) {
    if (n < 2) continue;
    try {
      caps.set(
        id,
        (await client.request<{ max_running: number | null }>('GET', `/api/v1/arrays/${id}`)).max_running,
      );
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      caps.set(id, null);
    }
  }
  return caps;
}

const FINISHED = new Set(['COMPLETED', 'FAILED', 'CANCELLED', 'TIMEOUT', 'NODE_FAIL', 'OUT_OF_MEMORY']);
