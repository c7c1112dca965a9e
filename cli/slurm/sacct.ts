/**
 * sacct(1) over Conductor's job table, which keeps every job: Slurm 22.05's options, every field of
 * `sacct --helpformat` with its width and justification, the header and dashes line, `-p`/`-P`, the
 * default time window, and a `<id>.batch` step line under each job that started (as Slurm records the
 * batch step), so scripts that parse sacct read the same text here.
 */
import { ApiError } from '../api.ts';
import type { Io } from '../io.ts';
import { clockSeconds, timestamp } from './format.ts';
import { getoptLong, lastValue, type OptionSpec, type ParsedOption } from './getopt.ts';
import {
  currentUser,
  elapsedSeconds,
  expandHostlist,
  given,
  type JobFilter,
  jobPriority,
  listJobs,
  listOption,
  memoryPerNode,
  memoryUnits,
  parseStates,
  reportParse,
  type SlurmJob,
  slurmClient,
  userNames,
  VERSION,
} from './squeue.ts';

const NOT_HERE = 'Conductor has';

export const SACCT_OPTIONS: readonly OptionSpec[] = [
  {
    long: 'accounts',
    short: 'A',
    arg: 'required',
    fate: 'honoured',
    note: 'only jobs of these accounts (comma list)',
    value: '<account_list>',
  },
  {
    long: 'allclusters',
    short: 'L',
    arg: 'none',
    fate: 'warned',
    note: 'one Conductor control plane is one cluster: its jobs are shown',
  },
  {
    long: 'allocations',
    short: 'X',
    arg: 'none',
    fate: 'honoured',
    note: 'the job lines only, without their `.batch` step lines',
  },
  {
    long: 'allusers',
    short: 'a',
    arg: 'none',
    fate: 'honoured',
    note: "every user's jobs (that your token may see)",
  },
  {
    long: 'associations',
    short: 'x',
    arg: 'required',
    fate: 'refused',
    note: `${NOT_HERE} no accounting associations`,
    value: '<assoc_list>',
  },
  {
    long: 'batch-script',
    short: 'B',
    arg: 'none',
    fate: 'honoured',
    note: "prints each job's batch script (needs -j)",
  },
  { long: 'brief', short: 'b', arg: 'none', fate: 'honoured', note: 'the fields JobID, State, ExitCode' },
  {
    long: 'clusters',
    short: 'M',
    arg: 'required',
    fate: 'refused',
    note: 'one Conductor control plane is one cluster: talk to another with CONDUCTOR_URL',
    value: '<cluster_list>',
  },
  {
    long: 'completion',
    short: 'c',
    arg: 'none',
    fate: 'refused',
    note: `${NOT_HERE} no job completion plugin: the job table is the accounting`,
  },
  {
    long: 'constraints',
    short: 'C',
    arg: 'required',
    fate: 'honoured',
    note: 'only jobs whose constraint names all these features',
    value: '<constraint_list>',
  },
  {
    long: 'delimiter',
    arg: 'required',
    fate: 'honoured',
    note: 'the separator of -p and -P (default `|`)',
    value: '<characters>',
  },
  {
    long: 'duplicates',
    short: 'D',
    arg: 'none',
    fate: 'honoured',
    note: "also the earlier runs of requeued jobs, before the job's line: each attempt's node, start, end, state (NODE_FAIL, FAILED, REQUEUED) and exit code",
  },
  {
    long: 'endtime',
    short: 'E',
    arg: 'required',
    fate: 'honoured',
    note: "the window's end, in Slurm's time forms (HH:MM[:SS], MMDD[YY], MM/DD[/YY], YYYY-MM-DD[THH:MM[:SS]], now[-N[units]], today, midnight, noon, fika, teatime)",
    value: '<end_time>',
  },
  { long: 'env-vars', arg: 'none', fate: 'honoured', note: "prints each job's environment (needs -j)" },
  {
    long: 'federation',
    arg: 'none',
    fate: 'warned',
    note: `${NOT_HERE} no federation: the local jobs are shown`,
  },
  {
    long: 'file',
    short: 'f',
    arg: 'required',
    fate: 'refused',
    note: `${NOT_HERE} no job completion log file`,
    value: '<file>',
  },
  {
    long: 'flags',
    short: 'F',
    arg: 'required',
    fate: 'refused',
    note: 'Conductor records no scheduler flags (SchedSubmit, SchedMain, SchedBackfill)',
    value: '<flag_list>',
  },
  {
    long: 'format',
    short: 'o',
    arg: 'required',
    fate: 'honoured',
    note: 'the fields (comma list, any case, any unambiguous prefix, `%N` for a width); fields without meaning here print empty, as Slurm prints an unset field',
    value: '<field_list>',
  },
  {
    long: 'gid',
    short: 'g',
    arg: 'required',
    fate: 'refused',
    note: 'Conductor does not record the group a job ran as',
    value: '<gid_or_group_list>',
  },
  {
    long: 'group',
    arg: 'required',
    fate: 'refused',
    note: 'Conductor does not record the group a job ran as',
    value: '<gid_or_group_list>',
  },
  { long: 'help', short: 'h', arg: 'none', fate: 'honoured', note: 'prints the help' },
  { long: 'helpformat', short: 'e', arg: 'none', fate: 'honoured', note: 'prints the fields -o takes' },
  {
    long: 'jobs',
    short: 'j',
    arg: 'required',
    fate: 'honoured',
    note: 'only these jobs (`id` or `id.batch`, comma list); the default window is then unlimited',
    value: '<job[.step]>',
  },
  {
    long: 'json',
    arg: 'none',
    fate: 'refused',
    note: "Slurm's JSON (its data_parser schema) is not reproduced; `conductor show ID --json` gives Conductor's",
  },
  { long: 'local', arg: 'none', fate: 'warned', note: `${NOT_HERE} no federation: the local jobs are shown` },
  { long: 'long', short: 'l', arg: 'none', fate: 'honoured', note: "Slurm's long field list" },
  {
    long: 'name',
    arg: 'required',
    fate: 'honoured',
    note: 'only jobs of these names (comma list)',
    value: '<jobname_list>',
  },
  {
    long: 'nnodes',
    short: 'i',
    arg: 'required',
    fate: 'honoured',
    note: 'only jobs on this many nodes (`min[-max]`; a Conductor job runs on one)',
    value: '<min[-max]>',
  },
  {
    long: 'ncpus',
    short: 'I',
    arg: 'required',
    fate: 'honoured',
    note: 'only jobs of this many CPUs (`min[-max]`)',
    value: '<min[-max]>',
  },
  {
    long: 'noconvert',
    arg: 'none',
    fate: 'honoured',
    note: 'sizes in their own unit (ReqMem in M, MaxRSS in K)',
  },
  {
    long: 'nodelist',
    short: 'N',
    arg: 'required',
    fate: 'honoured',
    note: 'only jobs that ran on these nodes (a hostlist: `n[1-3],gpu1`)',
    value: '<node_list>',
  },
  { long: 'noheader', short: 'n', arg: 'none', fate: 'honoured', note: 'no header lines' },
  {
    long: 'parsable',
    short: 'p',
    arg: 'none',
    fate: 'honoured',
    note: '`|` after every field, the last too',
  },
  { long: 'parsable2', short: 'P', arg: 'none', fate: 'honoured', note: '`|` between fields' },
  {
    long: 'partition',
    short: 'r',
    arg: 'required',
    fate: 'honoured',
    note: 'only jobs of these partitions (comma list)',
    value: '<partition_list>',
  },
  {
    long: 'qos',
    short: 'q',
    arg: 'required',
    fate: 'honoured',
    note: 'only jobs of these QOS (a job without one is `normal`)',
    value: '<qos_list>',
  },
  {
    long: 'reason',
    short: 'R',
    arg: 'required',
    fate: 'honoured',
    note: 'only jobs with these reasons',
    value: '<reason_list>',
  },
  {
    long: 'starttime',
    short: 'S',
    arg: 'required',
    fate: 'honoured',
    note: "the window's start (Slurm's time forms); default midnight today, Epoch 0 with -j, now with -s",
    value: '<start_time>',
  },
  {
    long: 'state',
    short: 's',
    arg: 'required',
    fate: 'honoured',
    note: 'only jobs in these states during the window (long or compact names, any case)',
    value: '<state_list>',
  },
  {
    long: 'timelimit-max',
    short: 'K',
    arg: 'required',
    fate: 'honoured',
    note: 'with -k: only jobs whose time limit is at most this',
    value: '<time>',
  },
  {
    long: 'timelimit-min',
    short: 'k',
    arg: 'required',
    fate: 'honoured',
    note: 'only jobs whose time limit is at least this (exactly this without -K)',
    value: '<time>',
  },
  {
    long: 'truncate',
    short: 'T',
    arg: 'none',
    fate: 'honoured',
    note: 'start and end times clipped to the window',
  },
  {
    long: 'uid',
    short: 'u',
    arg: 'required',
    fate: 'honoured',
    note: 'only jobs of these users (names, or your uid); default your own (CONDUCTOR_OWNER, else your user name)',
    value: '<uid_or_user_list>',
  },
  { long: 'user', arg: 'required', fate: 'honoured', note: 'the same as --uid', value: '<uid_or_user_list>' },
  {
    long: 'units',
    arg: 'required',
    fate: 'honoured',
    note: 'sizes in this unit (K, M, G, T, P)',
    value: '[KMGTP]',
  },
  { long: 'usage', arg: 'none', fate: 'honoured', note: 'prints the usage' },
  { long: 'use-local-uid', arg: 'none', fate: 'warned', note: 'a uid is only known here for your own user' },
  { long: 'verbose', short: 'v', arg: 'none', fate: 'honoured', note: 'says the time window on stderr' },
  { long: 'version', short: 'V', arg: 'none', fate: 'honoured', note: `prints \`${VERSION}\`` },
  {
    long: 'wckeys',
    short: 'W',
    arg: 'required',
    fate: 'refused',
    note: `${NOT_HERE} no workload characterization keys`,
    value: '<wckey_list>',
  },
  {
    long: 'whole-hetjob',
    arg: 'optional',
    fate: 'warned',
    note: `${NOT_HERE} no heterogeneous jobs`,
    value: 'yes|no',
  },
  {
    long: 'yaml',
    arg: 'none',
    fate: 'refused',
    note: "Slurm's YAML (its data_parser schema) is not reproduced; `conductor show ID --json` gives Conductor's JSON",
  },
];

const DEFAULT_FIELDS = 'jobid,jobname,partition,account,alloccpus,state,exitcode';
const BRIEF_FIELDS = 'jobid,state,exitcode';
const LONG_FIELDS =
  'jobid,jobidraw,jobname,partition,maxvmsize,maxvmsizenode,maxvmsizetask,avevmsize,maxrss,maxrssnode,maxrsstask,averss,maxpages,maxpagesnode,maxpagestask,avepages,mincpu,mincpunode,mincputask,avecpu,ntasks,alloccpus,elapsed,state,exitcode,avecpufreq,reqcpufreqmin,reqcpufreqmax,reqcpufreqgov,reqmem,consumedenergy,maxdiskread,maxdiskreadnode,maxdiskreadtask,avediskread,maxdiskwrite,maxdiskwritenode,maxdiskwritetask,avediskwrite,reqtres,alloctres,tresusageinave,tresusageinmax,tresusageinmaxn,tresusageinmaxt,tresusageinmin,tresusageinminn,tresusageinmint,tresusageintot,tresusageoutmax,tresusageoutmaxn,tresusageoutmaxt,tresusageoutave,tresusageouttot';

/** One line of output: a job, or its batch step. */
export interface Row {
  job: SlurmJob;
  step: boolean;
  now: number;
  me: { name: string; uid: number | null };
  /** Sizes: converted as Slurm does, raw (--noconvert), or to one unit (--units). */
  units: 'exact' | 'none' | 'K' | 'M' | 'G' | 'T' | 'P';
  /** --truncate: the window the times are clipped to. */
  clip?: { start: number; end: number };
}

/**
 * How Slurm prints a field: `str` cuts an over-long value to the width with `+` as its last character,
 * `date` cuts it, `num` and `time` never cut. An undefined value is unset: blank.
 */
type Kind = 'str' | 'num' | 'date' | 'time';

interface FieldDef {
  name: string;
  width: number;
  kind: Kind;
  value?(row: Row): string | number | undefined;
}

const started = (job: SlurmJob) => job.start_time !== null;
const jobOnly =
  (get: (job: SlurmJob, row: Row) => string | number | undefined | null) =>
  (row: Row): string | number | undefined =>
    row.step ? undefined : (get(row.job, row) ?? undefined);
const both =
  (get: (job: SlurmJob, row: Row) => string | number | undefined | null) =>
  (row: Row): string | number | undefined =>
    get(row.job, row) ?? undefined;
const stepOnly =
  (get: (job: SlurmJob, row: Row) => string | number | undefined | null) =>
  (row: Row): string | number | undefined =>
    row.step ? (get(row.job, row) ?? undefined) : undefined;

/** A size as sacct prints it; `value` in `unit`. */
function size(row: Row, value: number, unit: 'K' | 'M'): string {
  if (row.units === 'none') return `${value}${unit}`;
  if (row.units === 'exact') return memoryUnits(value, unit);
  const order = ['K', 'M', 'G', 'T', 'P'];
  const n = value / 1024 ** (order.indexOf(row.units) - order.indexOf(unit));
  return `${Number.isInteger(n) ? n : n.toFixed(2)}${row.units}`;
}

/** Start and end as sacct shows them: a job that ended without starting (cancelled while pending) started when it ended, as slurmctld records it. */
function times(row: Row): { start: number | null; end: number | null } {
  const { job, clip, now } = row;
  let end = job.end_time ? Date.parse(job.end_time) : null;
  let start = job.start_time ? Date.parse(job.start_time) : end;
  if (clip && start !== null) {
    start = Math.max(start, clip.start);
    end = Math.min(end ?? now, clip.end);
  }
  return { start, end };
}

function elapsed(row: Row): number {
  if (!row.clip) return elapsedSeconds(row.job, row.now);
  const { start, end } = times(row);
  return start === null ? 0 : Math.max(0, Math.floor(((end ?? row.now) - start) / 1000));
}

const allocCpus = (row: Row) => (row.step || started(row.job) ? row.job.cpus : 0);
const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

function tres(row: Row, job: SlurmJob): string {
  const mem = memoryPerNode(job);
  const parts = [
    ...(row.step ? [] : [`billing=${job.cpus}`]),
    `cpu=${job.cpus}`,
    ...(job.gpus ? [`gres/gpu=${job.gpus}`] : []),
    ...(mem ? [`mem=${size(row, mem, 'M')}`] : []),
    'node=1',
  ];
  return parts.join(',');
}

/** `State`: a job cancelled by someone says by whom (a uid when it is you, as Slurm prints uids). */
function state(row: Row): string {
  const { job, me } = row;
  if (row.step || job.state !== 'CANCELLED' || !job.cancelled_by) return job.state;
  const by = job.cancelled_by === me.name && me.uid !== null ? String(me.uid) : job.cancelled_by;
  return `CANCELLED by ${by}`;
}

function reserved(job: SlurmJob, now: number): number | undefined {
  const eligible = job.eligible_time ?? (job.held ? null : job.submit_time);
  if (!eligible) return undefined;
  const until = job.start_time ? Date.parse(job.start_time) : job.end_time ? Date.parse(job.end_time) : now;
  return Math.max(0, Math.floor((until - Date.parse(eligible)) / 1000));
}

const rss = stepOnly((job, row) => (job.max_rss_kb == null ? undefined : size(row, job.max_rss_kb, 'K')));
const rssNode = stepOnly((job) => (job.max_rss_kb == null ? undefined : job.node));
const rssTask = stepOnly((job) => (job.max_rss_kb == null ? undefined : 0));
const unknownFreq = () => 'Unknown';

/** Every field of Slurm 22.05's `sacct --helpformat`, in its order (prefixes resolve in this order). */
export const SACCT_FIELDS: readonly FieldDef[] = [
  { name: 'Account', width: 10, kind: 'str', value: both((j) => j.account) },
  { name: 'AdminComment', width: 15, kind: 'str' },
  { name: 'AllocCPUS', width: 10, kind: 'num', value: allocCpus },
  { name: 'AllocNodes', width: 10, kind: 'str', value: (r) => (r.step || started(r.job) ? '1' : '0') },
  {
    name: 'AllocTRES',
    width: 10,
    kind: 'str',
    value: (r) => (r.step || started(r.job) ? tres(r, r.job) : undefined),
  },
  { name: 'AssocID', width: 7, kind: 'num' },
  { name: 'AveCPU', width: 10, kind: 'str' },
  { name: 'AveCPUFreq', width: 10, kind: 'str' },
  { name: 'AveDiskRead', width: 14, kind: 'str' },
  { name: 'AveDiskWrite', width: 14, kind: 'str' },
  { name: 'AvePages', width: 10, kind: 'str' },
  { name: 'AveRSS', width: 10, kind: 'str', value: rss },
  { name: 'AveVMSize', width: 10, kind: 'str' },
  { name: 'BlockID', width: 16, kind: 'str' },
  { name: 'Cluster', width: 10, kind: 'str' },
  { name: 'Comment', width: 14, kind: 'str', value: jobOnly((j) => j.comment) },
  { name: 'Constraints', width: 19, kind: 'str', value: jobOnly((j) => j.constraint) },
  { name: 'ConsumedEnergy', width: 14, kind: 'str', value: jobOnly(() => '0') },
  { name: 'ConsumedEnergyRaw', width: 17, kind: 'num', value: jobOnly(() => 0) },
  { name: 'Container', width: 19, kind: 'str' },
  { name: 'CPUTime', width: 10, kind: 'time', value: (r) => elapsed(r) * allocCpus(r) },
  { name: 'CPUTimeRAW', width: 10, kind: 'num', value: (r) => elapsed(r) * allocCpus(r) },
  { name: 'DBIndex', width: -21, kind: 'num' },
  { name: 'DerivedExitCode', width: 15, kind: 'str', value: jobOnly((j) => j.exit_code ?? '0:0') },
  { name: 'Elapsed', width: 10, kind: 'time', value: elapsed },
  { name: 'ElapsedRaw', width: 10, kind: 'num', value: elapsed },
  {
    name: 'Eligible',
    width: 19,
    kind: 'date',
    value: (r) =>
      (r.step ? r.job.start_time : (r.job.eligible_time ?? (r.job.held ? null : r.job.submit_time))) ?? '',
  },
  { name: 'End', width: 19, kind: 'date', value: (r) => iso(times(r).end) ?? '' },
  { name: 'ExitCode', width: 8, kind: 'str', value: both((j) => j.exit_code ?? '0:0') },
  { name: 'Flags', width: 19, kind: 'str' },
  { name: 'GID', width: 6, kind: 'num' },
  { name: 'Group', width: 9, kind: 'str' },
  // An array task is `<array_job_id>_<index>` (JobIDRaw: its own job id), as Slurm's sacct shows it.
  {
    name: 'JobID',
    width: -12,
    kind: 'str',
    value: (r) => {
      const id =
        r.job.array_job_id === null || r.job.array_job_id === undefined
          ? String(r.job.id)
          : `${r.job.array_job_id}_${r.job.array_task_id}`;
      return r.step ? `${id}.batch` : id;
    },
  },
  {
    name: 'JobIDRaw',
    width: -12,
    kind: 'str',
    value: (r) => (r.step ? `${r.job.id}.batch` : String(r.job.id)),
  },
  { name: 'JobName', width: 10, kind: 'str', value: (r) => (r.step ? 'batch' : r.job.name) },
  { name: 'Layout', width: 9, kind: 'str' },
  { name: 'MaxDiskRead', width: 12, kind: 'str' },
  { name: 'MaxDiskReadNode', width: 15, kind: 'str' },
  { name: 'MaxDiskReadTask', width: 15, kind: 'num' },
  { name: 'MaxDiskWrite', width: 12, kind: 'str' },
  { name: 'MaxDiskWriteNode', width: 16, kind: 'str' },
  { name: 'MaxDiskWriteTask', width: 16, kind: 'num' },
  { name: 'MaxPages', width: 8, kind: 'str' },
  { name: 'MaxPagesNode', width: 12, kind: 'str' },
  { name: 'MaxPagesTask', width: 14, kind: 'num' },
  { name: 'MaxRSS', width: 10, kind: 'str', value: rss },
  { name: 'MaxRSSNode', width: 10, kind: 'str', value: rssNode },
  { name: 'MaxRSSTask', width: 10, kind: 'num', value: rssTask },
  { name: 'MaxVMSize', width: 10, kind: 'str' },
  { name: 'MaxVMSizeNode', width: 14, kind: 'str' },
  { name: 'MaxVMSizeTask', width: 14, kind: 'num' },
  { name: 'McsLabel', width: 12, kind: 'str' },
  { name: 'MinCPU', width: 10, kind: 'str' },
  { name: 'MinCPUNode', width: 10, kind: 'str' },
  { name: 'MinCPUTask', width: 10, kind: 'num' },
  { name: 'NCPUS', width: 10, kind: 'num', value: allocCpus },
  { name: 'NNodes', width: 8, kind: 'num', value: () => 1 },
  {
    name: 'NodeList',
    width: 15,
    kind: 'str',
    value: (r) => r.job.node ?? (r.step ? undefined : 'None assigned'),
  },
  { name: 'NTasks', width: 8, kind: 'num', value: stepOnly(() => 1) },
  { name: 'Partition', width: 10, kind: 'str', value: jobOnly((j) => j.partition) },
  { name: 'Priority', width: 10, kind: 'num', value: jobOnly(jobPriority) },
  { name: 'QOS', width: 10, kind: 'str', value: jobOnly((j) => j.qos ?? 'normal') },
  { name: 'QOSRAW', width: 6, kind: 'num' },
  { name: 'Reason', width: 22, kind: 'str', value: jobOnly((j) => reasonOf(j)) },
  { name: 'ReqCPUFreq', width: 10, kind: 'str', value: unknownFreq },
  { name: 'ReqCPUFreqGov', width: 13, kind: 'str', value: unknownFreq },
  { name: 'ReqCPUFreqMax', width: 13, kind: 'str', value: unknownFreq },
  { name: 'ReqCPUFreqMin', width: 13, kind: 'str', value: unknownFreq },
  { name: 'ReqCPUS', width: 8, kind: 'num', value: both((j) => j.cpus) },
  { name: 'ReqMem', width: 10, kind: 'str', value: jobOnly((j, r) => size(r, memoryPerNode(j) ?? 0, 'M')) },
  { name: 'ReqNodes', width: 8, kind: 'str', value: () => '1' },
  { name: 'ReqTRES', width: 10, kind: 'str', value: jobOnly((j, r) => tres(r, j)) },
  { name: 'Reservation', width: 20, kind: 'str' },
  { name: 'ReservationId', width: 8, kind: 'num' },
  { name: 'Reserved', width: 10, kind: 'time', value: jobOnly((j, r) => reserved(j, r.now)) },
  { name: 'ResvCPU', width: 10, kind: 'time', value: jobOnly((j, r) => mul(reserved(j, r.now), j.cpus)) },
  { name: 'ResvCPURAW', width: 10, kind: 'num', value: jobOnly((j, r) => mul(reserved(j, r.now), j.cpus)) },
  { name: 'Start', width: 19, kind: 'date', value: (r) => iso(times(r).start) ?? '' },
  { name: 'State', width: 10, kind: 'str', value: state },
  {
    name: 'Submit',
    width: 19,
    kind: 'date',
    value: (r) => (r.step ? r.job.start_time : r.job.submit_time) ?? '',
  },
  { name: 'SubmitLine', width: 20, kind: 'str' },
  { name: 'Suspended', width: 10, kind: 'time', value: () => 0 },
  { name: 'SystemComment', width: 15, kind: 'str' },
  { name: 'SystemCPU', width: 10, kind: 'str' },
  {
    name: 'Timelimit',
    width: 10,
    kind: 'str',
    value: jobOnly((j) => (j.time_limit === null ? 'UNLIMITED' : clockSeconds(j.time_limit * 60))),
  },
  {
    name: 'TimelimitRaw',
    width: 10,
    kind: 'str',
    value: jobOnly((j) => (j.time_limit === null ? 'UNLIMITED' : String(j.time_limit))),
  },
  { name: 'TotalCPU', width: 10, kind: 'str' },
  { name: 'TRESUsageInAve', width: 14, kind: 'str' },
  { name: 'TRESUsageInMax', width: 14, kind: 'str' },
  { name: 'TRESUsageInMaxNode', width: 18, kind: 'str' },
  { name: 'TRESUsageInMaxTask', width: 18, kind: 'str' },
  { name: 'TRESUsageInMin', width: 14, kind: 'str' },
  { name: 'TRESUsageInMinNode', width: 18, kind: 'str' },
  { name: 'TRESUsageInMinTask', width: 18, kind: 'str' },
  { name: 'TRESUsageInTot', width: 14, kind: 'str' },
  { name: 'TRESUsageOutAve', width: 15, kind: 'str' },
  { name: 'TRESUsageOutMax', width: 15, kind: 'str' },
  { name: 'TRESUsageOutMaxNode', width: 19, kind: 'str' },
  { name: 'TRESUsageOutMaxTask', width: 19, kind: 'str' },
  { name: 'TRESUsageOutMin', width: 15, kind: 'str' },
  { name: 'TRESUsageOutMinNode', width: 19, kind: 'str' },
  { name: 'TRESUsageOutMinTask', width: 19, kind: 'str' },
  { name: 'TRESUsageOutTot', width: 15, kind: 'str' },
  {
    name: 'UID',
    width: 6,
    kind: 'num',
    value: jobOnly((j, r) => (j.owner === r.me.name ? r.me.uid : undefined)),
  },
  { name: 'User', width: 9, kind: 'str', value: jobOnly((j) => j.owner) },
  { name: 'UserCPU', width: 10, kind: 'str' },
  { name: 'WCKey', width: 10, kind: 'str' },
  { name: 'WCKeyID', width: 10, kind: 'num' },
  { name: 'WorkDir', width: 20, kind: 'str', value: jobOnly((j) => j.work_dir ?? j.submit_dir) },
];

const mul = (a: number | undefined, b: number) => (a === undefined ? undefined : a * b);

/** sacct's Reason: the last reason the job waited for, as a Slurm reason code (`None` when none). */
function reasonOf(job: SlurmJob): string {
  return job.reason && /^[A-Za-z][A-Za-z0-9_]*$/.test(job.reason) ? job.reason : 'None';
}

export interface Column {
  def: FieldDef;
  width: number;
}

/** `-o` fields: any case, any prefix (the first field it starts wins), `%N` for the width; or the bad one. */
export function parseFields(list: string): Column[] | { bad: string } {
  const columns: Column[] = [];
  for (const raw of list.split(',')) {
    const item = raw.trim();
    if (item === '') continue;
    const percent = item.indexOf('%');
    const name = (percent < 0 ? item : item.slice(0, percent)).toLowerCase();
    const width = percent < 0 ? undefined : Number.parseInt(item.slice(percent + 1), 10) || 0;
    if ('all'.startsWith(name) && name !== '') {
      for (const def of SACCT_FIELDS) columns.push({ def, width: width ?? def.width });
      continue;
    }
    const def = SACCT_FIELDS.find((f) => f.name.toLowerCase().startsWith(name));
    if (!def || name === '') return { bad: percent < 0 ? item : item.slice(0, percent) };
    columns.push({ def, width: width ?? def.width });
  }
  return columns;
}

export interface PrintSettings {
  /** -p: `|` after each field; -P: between fields. */
  parsable?: 'trailing' | 'between';
  delimiter?: string;
  header: boolean;
}

/** A cell as print_fields prints it: width and side from the field, `+` marking a cut string. */
function cell(column: Column, row: Row): string {
  const { def, width } = column;
  const raw = def.value?.(row);
  const abs = Math.abs(width);
  const pad = (text: string) => (width < 0 ? text.padEnd(abs) : text.padStart(abs));
  if (raw === undefined) return ' '.repeat(abs);
  if (def.kind === 'time') return pad(clockSeconds(Number(raw)));
  if (def.kind === 'num') return pad(String(raw));
  const text = def.kind === 'date' ? timestamp(String(raw) || null) : String(raw);
  if (text.length <= abs) return pad(text);
  return def.kind === 'str' ? `${text.slice(0, abs - 1)}+` : text.slice(0, abs);
}

function parsableCell(column: Column, row: Row): string {
  const raw = column.def.value?.(row);
  if (raw === undefined) return '';
  if (column.def.kind === 'time') return clockSeconds(Number(raw));
  if (column.def.kind === 'date') return timestamp(String(raw) || null);
  return String(raw);
}

/** sacct's text for these rows: header and dashes (unless -n), fields as print_fields prints them. */
export function renderSacct(rows: Row[], columns: Column[], settings: PrintSettings): string {
  const lines: string[] = [];
  if (settings.parsable) {
    const delimiter = settings.delimiter ?? '|';
    const join = (cells: string[]) =>
      settings.parsable === 'trailing'
        ? cells.map((c) => `${c}${delimiter}`).join('')
        : cells.join(delimiter);
    if (settings.header) lines.push(join(columns.map((c) => c.def.name)));
    for (const row of rows) lines.push(join(columns.map((c) => parsableCell(c, row))));
  } else {
    if (settings.header) {
      lines.push(
        columns
          .map((c) => {
            const abs = Math.abs(c.width);
            const name = c.def.name.slice(0, abs);
            return `${c.width < 0 ? name.padEnd(abs) : name.padStart(abs)} `;
          })
          .join(''),
        columns.map((c) => `${'-'.repeat(Math.abs(c.width))} `).join(''),
      );
    }
    for (const row of rows) lines.push(columns.map((c) => `${cell(c, row)} `).join(''));
  }
  return lines.map((l) => `${l}\n`).join('');
}

/** The field list as `sacct -e` prints it: four to a line, 19 wide. */
export function helpFormat(): string {
  let text = '';
  SACCT_FIELDS.forEach((f, i) => {
    if (i % 4) text += ' ';
    else if (i) text += '\n';
    text += f.name.padEnd(19);
  });
  return `${text}\n`;
}

/**
 * Slurm's parse_time with `past` set (sacct's -S and -E): a time without a date is today, or yesterday
 * when that is still to come; a date without a year is this year, or last year when still to come.
 */
export function parseSlurmTime(text: string, now: Date): Date | null {
  const word = text.trim().toLowerCase();
  const today = (h: number, m = 0, s = 0) =>
    new Date(now.getFullYear(), now.getMonth(), now.getDate(), h, m, s);
  const named: Record<string, () => Date> = {
    today: () => today(0),
    midnight: () => today(0),
    noon: () => today(12),
    fika: () => today(15),
    teatime: () => today(16),
    tomorrow: () => new Date(now.getFullYear(), now.getMonth(), now.getDate() + 1),
  };
  if (named[word]) return named[word]();
  const relative = /^now(?:([+-])(\d+)(seconds?|minutes?|hours?|days?|weeks?)?)?$/.exec(word);
  if (relative) {
    const unit = { s: 1, m: 60, h: 3600, d: 86400, w: 604800 }[(relative[3] ?? 's')[0] as 's'];
    const delta = Number(relative[2] ?? 0) * unit * (relative[1] === '-' ? -1 : 1);
    return new Date(now.getTime() + delta * 1000);
  }
  const clock = (t: string | undefined): [number, number, number] | null => {
    if (t === undefined || t === '') return [0, 0, 0];
    const m = /^(\d{1,2}):(\d{2})(?::(\d{2}))?\s*(am|pm)?$/.exec(t);
    if (!m) return null;
    let h = Number(m[1]);
    if (m[4] === 'pm' && h < 12) h += 12;
    if (m[4] === 'am' && h === 12) h = 0;
    const min = Number(m[2]);
    const sec = Number(m[3] ?? 0);
    return h > 23 || min > 59 || sec > 59 ? null : [h, min, sec];
  };
  const onlyClock = clock(word);
  if (onlyClock && word !== '') {
    const at = today(...onlyClock);
    if (at > now) at.setDate(at.getDate() - 1);
    return at;
  }
  const iso = /^(\d{4})-(\d{2})-(\d{2})(?:[t-](.+))?$/.exec(word);
  const short =
    /^(\d{2})(\d{2})(\d{2})?(?:-(.+))?$/.exec(word) ??
    /^(\d{1,2})\.(\d{1,2})(?:\.(\d{2}))?(?:-(.+))?$/.exec(word) ??
    /^(\d{1,2})\/(\d{1,2})(?:\/(\d{2}))?(?:-(.+))?$/.exec(word);
  let year: number;
  let month: number;
  let day: number;
  let rest: string | undefined;
  let yearGiven = true;
  if (iso) {
    [year, month, day, rest] = [Number(iso[1]), Number(iso[2]), Number(iso[3]), iso[4]];
  } else if (short) {
    yearGiven = short[3] !== undefined;
    [year, month, day, rest] = [
      yearGiven ? 2000 + Number(short[3]) : now.getFullYear(),
      Number(short[1]),
      Number(short[2]),
      short[4],
    ];
  } else return null;
  const hms = clock(rest);
  if (!hms || month < 1 || month > 12 || day < 1 || day > 31) return null;
  const at = new Date(year, month - 1, day, ...hms);
  if (!yearGiven && at > now) at.setFullYear(at.getFullYear() - 1);
  return at;
}

/** slurm_ctime2_r: `%a %b %d %T %Y` in local time. */
function ctime2(date: Date): string {
  const two = (n: number) => String(n).padStart(2, '0');
  const day = date.toLocaleString('en-US', { weekday: 'short' });
  const month = date.toLocaleString('en-US', { month: 'short' });
  return `${day} ${month} ${two(date.getDate())} ${two(date.getHours())}:${two(date.getMinutes())}:${two(date.getSeconds())} ${date.getFullYear()}`;
}

/** Slurm's time_str2mins: `M`, `M:S`, `H:M:S`, `D-H`, `D-H:M`, `D-H:M:S`; or null. */
function minutesOf(text: string): number | null {
  const m = /^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$/.exec(text.trim());
  if (!m) return null;
  const [, d, a, b, c] = m;
  if (d !== undefined) return Number(d) * 1440 + Number(a) * 60 + Number(b ?? 0) + (c ? Number(c) / 60 : 0);
  if (c !== undefined) return Number(a) * 60 + Number(b) + Number(c) / 60;
  if (b !== undefined) return Number(a) + Number(b) / 60;
  return Number(a);
}

function range(text: string): [number, number] | null {
  const m = /^(\d+)(?:-(\d+))?$/.exec(text.trim());
  return m ? [Number(m[1]), Number(m[2] ?? m[1])] : null;
}

/** Whether the job was in one of `states` during [start, end] (sacct's meaning of -s). */
function inStateDuring(job: SlurmJob, states: string[], start: number, end: number): boolean {
  const submit = job.submit_time ? Date.parse(job.submit_time) : 0;
  const began = job.start_time ? Date.parse(job.start_time) : null;
  const ended = job.end_time ? Date.parse(job.end_time) : null;
  return states.some((s) => {
    if (s === 'PENDING') return submit <= end && (began ?? ended ?? Number.POSITIVE_INFINITY) >= start;
    if (s === 'RUNNING')
      return began !== null && began <= end && (ended ?? Number.POSITIVE_INFINITY) >= start;
    return job.state === s && ended !== null && ended >= start && ended <= end;
  });
}

const SACCT_USAGE = `Usage: sacct [options]
	Use --help for help
`;

function sacctHelp(): string {
  const lines = [...SACCT_OPTIONS]
    .sort((a, b) => a.long.localeCompare(b.long))
    .map((s) => {
      const names = `${s.short ? `-${s.short}, ` : '    '}--${s.long}${s.arg === 'none' ? '' : s.arg === 'optional' ? `[=${s.value}]` : `=${s.value}`}`;
      return `  ${names.padEnd(40)} ${s.fate === 'honoured' ? s.note : `(${s.fate === 'warned' ? 'ignored' : 'refused'}: ${s.note})`}`;
    });
  return `sacct [<OPTION>]\n${lines.join('\n')}\n`;
}

const last = (options: readonly ParsedOption[], long: string) => lastValue(options, long)?.value;

/** A selected job id: the job line, its batch step line, or both. */
interface Selection {
  job: boolean;
  step: boolean;
}

export async function runSacct(args: string[], io: Io, env: NodeJS.ProcessEnv): Promise<number> {
  const parsed = getoptLong(args, SACCT_OPTIONS);
  const stop = reportParse('sacct', parsed, io);
  if (stop !== null) return stop;
  const { options } = parsed;
  if (given(options, 'help')) {
    io.out(sacctHelp());
    return 0;
  }
  if (given(options, 'usage')) {
    io.out(SACCT_USAGE);
    return 0;
  }
  if (given(options, 'version')) {
    io.out(`${VERSION}\n`);
    return 0;
  }
  if (given(options, 'helpformat')) {
    io.out(helpFormat());
    return 0;
  }
  if (parsed.positionals.length > 0) {
    io.err(
      `sacct: error: Unknown arguments:\n${parsed.positionals.map((p) => `sacct: error:  ${p}\n`).join('')}`,
    );
    return 1;
  }
  const formats = options.filter((o) => o.spec.long === 'format').map((o) => o.value ?? '');
  if (given(options, 'long') && formats.length > 0) {
    io.err(
      'sacct: fatal: Options -o(--format) and -l(--long) are mutually exclusive. Please remove one and retry.\n',
    );
    return 1;
  }
  const fieldList = [
    ...(given(options, 'brief') ? [BRIEF_FIELDS] : []),
    ...(given(options, 'long') ? [LONG_FIELDS] : []),
    ...formats,
  ];
  const columns = parseFields(
    fieldList.length > 0 ? fieldList.join(',') : (env.SACCT_FORMAT ?? DEFAULT_FIELDS),
  );
  if ('bad' in columns) {
    io.err(`sacct: error: Invalid field requested: "${columns.bad}"\n`);
    return 1;
  }

  const selections = new Map<number, Selection>();
  for (const item of listOption(options, 'jobs') ?? []) {
    const m = /^(\d+)(?:\.(batch|\d+))?$/.exec(item);
    if (!m) {
      if (/^\d+_\d+/.test(item)) continue; // array elements: Conductor has none yet (issue 16)
      io.err(`sacct: fatal: Bad job/step specified: ${item}\n`);
      return 1;
    }
    const id = Number(m[1]);
    const selection = selections.get(id) ?? { job: false, step: false };
    if (m[2] === undefined) selection.job = true;
    else if (m[2] === 'batch') selection.step = true;
    selections.set(id, selection);
  }
  const jobsGiven = given(options, 'jobs');
  const dump = given(options, 'batch-script')
    ? 'job scripts'
    : given(options, 'env-vars')
      ? 'job environment'
      : null;
  if (dump && selections.size === 0) {
    io.err(
      `sacct: fatal: When requesting ${dump} you must also request specific jobs with the '-j' option.\n`,
    );
    return 1;
  }
  if (given(options, 'batch-script') && given(options, 'env-vars')) {
    io.err('sacct: fatal: Options --batch-script and --env-vars are mutually exclusive\n');
    return 1;
  }

  const now = new Date();
  const stateWords = listOption(options, 'state');
  let states: string[] | undefined;
  if (stateWords) {
    const result = parseStates(stateWords.join(','));
    if ('bad' in result) {
      io.err(`sacct: error: Invalid state: ${result.bad}\n`);
      return 1;
    }
    states = result.states;
  }
  const timeOption = (long: string): Date | null | undefined => {
    const text = last(options, long);
    if (text === undefined) return undefined;
    const at = parseSlurmTime(text, now);
    if (!at) io.err(`Invalid time specification (pos=0): ${text}\n`);
    return at;
  };
  const startGiven = timeOption('starttime');
  const endGiven = timeOption('endtime');
  if (startGiven === null || endGiven === null) return 1;
  const midnight = new Date(now.getFullYear(), now.getMonth(), now.getDate());
  const start = startGiven ?? (jobsGiven ? new Date(0) : states ? now : midnight);
  const end = endGiven ?? (states && startGiven ? startGiven : now);
  if (start > end) {
    io.err(
      `sacct: error: Start time (${timestamp(start.toISOString())}) requested is after end time (${timestamp(end.toISOString())}).\n`,
    );
    return 1;
  }
  if (given(options, 'verbose')) {
    const words = states?.join(',') ?? 'Eligible';
    const from = start.getTime() === 0 ? 'Epoch 0' : ctime2(start);
    io.err(`sacct: Jobs ${words} in the time window from ${from} to ${ctime2(end)}\n`);
  }

  const me = currentUser(env);
  const client = slurmClient(env);
  const filter: JobFilter = {};
  if (selections.size > 0) filter.ids = [...selections.keys()];
  const names = listOption(options, 'name');
  if (names) filter.names = names;
  const users = listOption(options, 'uid', 'user');
  const nodes = listOption(options, 'nodelist');
  if (users) filter.owners = userNames(users.join(','), env);
  else if (!given(options, 'allusers') && !jobsGiven && !nodes && me.uid !== 0) filter.owners = [me.name];
  filter.ownerlessIsMine = filter.owners?.includes(me.name) === true && !client.config.token;
  const accounts = listOption(options, 'accounts');
  if (accounts) filter.accounts = accounts;
  const partitions = listOption(options, 'partition');
  if (partitions) filter.partitions = partitions;
  const qos = listOption(options, 'qos');
  if (qos) filter.qos = qos;
  if (nodes) filter.nodes = nodes.flatMap(expandHostlist);
  filter.activeSince = start;
  filter.activeUntil = end;

  const ncpus = last(options, 'ncpus');
  const nnodes = last(options, 'nnodes');
  const cpuRange = ncpus === undefined ? undefined : range(ncpus);
  const nodeRange = nnodes === undefined ? undefined : range(nnodes);
  if (cpuRange === null || nodeRange === null) {
    io.err(`sacct: error: Invalid range: ${cpuRange === null ? ncpus : nnodes}\n`);
    return 1;
  }
  const limitMin = last(options, 'timelimit-min');
  const limitMax = last(options, 'timelimit-max');
  const minMinutes = limitMin === undefined ? undefined : minutesOf(limitMin);
  const maxMinutes = limitMax === undefined ? undefined : minutesOf(limitMax);
  if (minMinutes === null || maxMinutes === null) {
    io.err(`sacct: error: Invalid time limit: ${minMinutes === null ? limitMin : limitMax}\n`);
    return 1;
  }
  const constraints = listOption(options, 'constraints');
  const reasons = listOption(options, 'reason');

  let jobs: SlurmJob[];
  try {
    jobs = await listJobs(client, filter);
    // On an open cluster (no tokens) jobs have no owner: they are the caller's, and run as the agent's user.
    if (!client.config.token) for (const job of jobs) job.owner ??= me.name;
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    const reason =
      error.code === 'unreachable' ? `Problem talking to the database: ${error.message}` : error.message;
    io.err(`sacct: error: ${reason}\n`);
    return 1;
  }
  const from = start.getTime();
  const to = end.getTime();
  jobs = jobs.filter((job) => {
    if (states) {
      if (!inStateDuring(job, states, from, to)) return false;
    } else if (!jobsGiven || startGiven || endGiven) {
      const eligible = job.eligible_time ?? job.submit_time;
      if (!eligible || Date.parse(eligible) > to) return false;
      if (job.end_time && Date.parse(job.end_time) < from) return false;
    }
    if (cpuRange && (job.cpus < cpuRange[0] || job.cpus > cpuRange[1])) return false;
    if (nodeRange && (1 < nodeRange[0] || 1 > nodeRange[1])) return false;
    if (minMinutes !== undefined) {
      const limit = job.time_limit ?? Number.POSITIVE_INFINITY;
      if (maxMinutes === undefined ? limit !== minMinutes : limit < minMinutes || limit > maxMinutes)
        return false;
    }
    if (constraints) {
      const features = (job.constraint ?? '').split(/[&,|*\s()[\]]+/);
      if (!constraints.every((c) => features.includes(c))) return false;
    }
    if (reasons && !reasons.includes(reasonOf(job))) return false;
    return true;
  });

  if (dump) return printScripts(jobs, dump === 'job scripts' ? 'script' : 'env', client, io);

  const units = last(options, 'units')?.toUpperCase();
  if (units !== undefined && !['K', 'M', 'G', 'T', 'P'].includes(units)) {
    io.err(`sacct: error: Invalid unit type '${units}'. Possible options are 'KMGTP'\n`);
    return 1;
  }
  const base: Omit<Row, 'job' | 'step'> = {
    now: now.getTime(),
    me,
    units: (units as Row['units'] | undefined) ?? (given(options, 'noconvert') ? 'none' : 'exact'),
    ...(given(options, 'truncate') ? { clip: { start: from, end: to } } : {}),
  };
  const rows: Row[] = [];
  const steps = !given(options, 'allocations');
  const duplicates = given(options, 'duplicates');
  for (const job of jobs) {
    const selected = selections.get(job.id) ?? { job: true, step: false };
    // -D: a requeued job's earlier runs first, one line (and its batch step's) each, as Slurm keeps them
    // (asked only for jobs that went back to the queue or were placed more than once).
    const again = (job.requeues ?? 0) > 0 || (job.attempt ?? 0) > 1;
    const runs = duplicates && again ? await earlierRuns(client, job) : [];
    for (const run of [...runs, job]) {
      if (selected.job) rows.push({ ...base, job: run, step: false });
      if (started(run) && ((selected.job && steps) || selected.step))
        rows.push({ ...base, job: run, step: true });
    }
  }
  const parsable = given(options, 'parsable2')
    ? 'between'
    : given(options, 'parsable')
      ? 'trailing'
      : undefined;
  const delimiter = last(options, 'delimiter');
  io.out(
    renderSacct(rows, columns, {
      header: !given(options, 'noheader'),
      ...(parsable ? { parsable } : {}),
      ...(delimiter !== undefined ? { delimiter } : {}),
    }),
  );
  return 0;
}

/** One attempt of a job as GET /api/v1/jobs/{id} shows it (`attempts`). */
interface Attempt {
  attempt: number;
  node: string | null;
  start_time: string | null;
  end_time: string | null;
  state: string;
  exit_code: string | null;
  reason: string | null;
  requeued: boolean;
  /** What it held (null: recorded before usage accounting). */
  cpus?: number | null;
  partition?: string | null;
  max_rss_kb?: number | null;
}

/**
 * The runs of a job before the one its line shows (the attempts after which it was requeued), each as the job
 * was then: its node, start and end, how it ended and its exit code, the CPUs it held, its partition, its MaxRSS.
 */
async function earlierRuns(client: ReturnType<typeof slurmClient>, job: SlurmJob): Promise<SlurmJob[]> {
  const full = await client.request<{ attempts?: Attempt[] }>('GET', `/api/v1/jobs/${job.id}`);
  return (full.attempts ?? [])
    .filter((a) => a.requeued)
    .map((a) => ({
      ...job,
      state: a.state,
      node: a.node,
      start_time: a.start_time,
      end_time: a.end_time,
      exit_code: a.exit_code ?? '0:0',
      reason: a.reason,
      attempt: a.attempt,
      cpus: a.cpus ?? job.cpus,
      partition: a.partition ?? job.partition,
      max_rss_kb: a.max_rss_kb ?? null,
    }));
}

/** `-B` / `--env-vars`: each job's script or environment, under Slurm's heading (`NONE` without one). */
async function printScripts(
  jobs: SlurmJob[],
  what: 'script' | 'env',
  client: ReturnType<typeof slurmClient>,
  io: Io,
): Promise<number> {
  for (const { id } of jobs) {
    const full = await client.request<{ script?: string; environment?: Record<string, string> }>(
      'GET',
      `/api/v1/jobs/${id}`,
    );
    const rule = '-'.repeat(80);
    if (what === 'script') {
      io.out(`Batch Script for ${id}\n${rule}\n${full.script ?? 'NONE\n'}\n`);
    } else {
      const env = full.environment
        ? `${Object.entries(full.environment)
            .map(([k, v]) => `${k}=${v}`)
            .join('\n')}\n`
        : 'NONE\n';
      io.out(`Environment used for ${id} (must be batch to display)\n${rule}\n${env}\n`);
    }
  }
  return 0;
}
