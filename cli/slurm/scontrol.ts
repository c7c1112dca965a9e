/**
 * `scontrol` over Conductor: `show job|node|partition` in Slurm's key=value layout (scripts grep it:
 * snakemake reads `JobState=(\w+)` from `scontrol show jobid -dd <id>`), hold/release/requeue and
 * `update JobId=...` on the job routes, `update NodeName=... State=DRAIN|RESUME` as drain/undrain, and
 * `create|update|delete|show reservation` on /api/v1/reservations.
 * Interactive mode and the controller's own administration have no counterpart and are refused by name.
 */
import type { Client } from '../api.ts';
import type { Io } from '../io.ts';
import {
  apiClient,
  count,
  guarded,
  has,
  optionHelp,
  parseOptions,
  SLURM_VERSION,
  SlurmError,
} from './command.ts';
import { clockSeconds, timeLimit, timestamp } from './format.ts';
import type { Fate, OptionSpec } from './getopt.ts';
import { compressHostlist } from './hostlist.ts';
import { loadCluster, type NodeInfo, nodesOf, type SinfoPartition } from './sinfo.ts';
import { currentUser } from './squeue.ts';

export const SCONTROL_OPTIONS: readonly OptionSpec[] = [
  {
    long: 'all',
    short: 'a',
    arg: 'none',
    fate: 'honoured',
    note: 'every partition (none is hidden on Conductor)',
  },
  {
    long: 'clusters',
    short: 'M',
    arg: 'required',
    fate: 'refused',
    note: 'a Conductor control plane is one cluster',
    value: 'string',
  },
  {
    long: 'details',
    short: 'd',
    arg: 'none',
    fate: 'honoured',
    note: "show job adds a running job's allocation line (Nodes= Mem= GRES= with the GPU indexes; CPU ids are not known here)",
  },
  { long: 'federation', arg: 'none', fate: 'warned', note: 'Conductor has no federation' },
  { long: 'future', short: 'F', arg: 'none', fate: 'warned', note: 'Conductor has no FUTURE nodes' },
  { long: 'help', short: 'h', arg: 'none', fate: 'honoured', note: 'this help' },
  { long: 'hide', arg: 'none', fate: 'honoured', note: 'the default: Conductor has no hidden partitions' },
  {
    long: 'local',
    arg: 'none',
    fate: 'warned',
    note: 'Conductor has no federation: the one cluster is local',
  },
  { long: 'oneliner', short: 'o', arg: 'none', fate: 'honoured', note: 'each record on one line' },
  {
    long: 'quiet',
    short: 'Q',
    arg: 'none',
    fate: 'honoured',
    note: 'no error message when a job, node or partition is not found',
  },
  { long: 'sibling', arg: 'none', fate: 'refused', note: 'Conductor has no federation siblings' },
  {
    long: 'uid',
    short: 'u',
    arg: 'required',
    fate: 'refused',
    note: 'the API token says who you are',
    value: 'uid',
  },
  { long: 'verbose', short: 'v', arg: 'none', fate: 'honoured', note: 'says which control plane it asks' },
  { long: 'version', short: 'V', arg: 'none', fate: 'honoured', note: `prints "slurm ${SLURM_VERSION}"` },
];

export interface CommandSpec {
  name: string;
  fate: Fate;
  note: string;
}

const CONTROLLER =
  'the control plane is administered with `conductor` (partitions, drain) and its own settings, not through scontrol';

/** scontrol(1)'s COMMANDS, each with its fate here. */
export const SCONTROL_COMMANDS: readonly CommandSpec[] = [
  { name: 'abort', fate: 'refused', note: CONTROLLER },
  { name: 'cancel_reboot', fate: 'refused', note: 'Conductor does not reboot nodes' },
  { name: 'cluster', fate: 'refused', note: 'a Conductor control plane is one cluster' },
  {
    name: 'completing',
    fate: 'refused',
    note: 'Conductor has no COMPLETING state: a job ends when its agent reports it',
  },
  {
    name: 'create',
    fate: 'honoured',
    note: 'create reservation with ReservationName, StartTime, EndTime or Duration, Nodes or NodeCnt (PartitionName), Users, Accounts, Flags=MAINT,DAILY,WEEKLY (POST /api/v1/reservations); partitions are created with `conductor partition <name> --state UP ...`, nodes join by running an agent',
  },
  {
    name: 'delete',
    fate: 'honoured',
    note: 'ReservationName=<name> (DELETE /api/v1/reservations/{name}); `conductor partition <name> --delete` deletes a partition',
  },
  {
    name: 'errnumstr',
    fate: 'refused',
    note: "Conductor's errors carry their message, not a Slurm error number",
  },
  { name: 'fsdampeningfactor', fate: 'refused', note: 'Conductor has no fair-share factor' },
  { name: 'help', fate: 'honoured', note: 'this help' },
  {
    name: 'hold',
    fate: 'honoured',
    note: "holds pending jobs (POST /api/v1/jobs/{id}/hold: an array's job id holds all its tasks); a task (123_4) or tasks (123_[1-3]) through POST /api/v1/arrays/{id}/hold",
  },
  {
    name: 'listpids',
    fate: 'refused',
    note: "a job's processes are on its node, which the CLI does not reach",
  },
  { name: 'notify', fate: 'refused', note: 'Conductor does not write messages into a job' },
  {
    name: 'pidinfo',
    fate: 'refused',
    note: "a job's processes are on its node, which the CLI does not reach",
  },
  { name: 'ping', fate: 'honoured', note: 'asks the control plane (GET /api/v1/health) whether it is up' },
  { name: 'reboot', fate: 'refused', note: 'Conductor does not reboot nodes' },
  { name: 'reconfigure', fate: 'refused', note: CONTROLLER },
  {
    name: 'release',
    fate: 'honoured',
    note: "releases held jobs (POST /api/v1/jobs/{id}/release: an array's job id releases all its tasks); a task (123_4) or tasks (123_[1-3]) through POST /api/v1/arrays/{id}/release",
  },
  {
    name: 'requeue',
    fate: 'honoured',
    note: 'puts running or finished jobs back in the queue (POST /api/v1/jobs/{id}/requeue)',
  },
  { name: 'requeuehold', fate: 'honoured', note: 'the same, held (requeue with hold)' },
  { name: 'resume', fate: 'refused', note: 'Conductor does not suspend jobs' },
  { name: 'schedloglevel', fate: 'refused', note: CONTROLLER },
  { name: 'setdebug', fate: 'refused', note: CONTROLLER },
  { name: 'setdebugflags', fate: 'refused', note: CONTROLLER },
  {
    name: 'show',
    fate: 'honoured',
    note: 'show job, node, partition, reservation (and jobid, nodes, partitions, reservations, res); other entities are refused by name',
  },
  { name: 'shutdown', fate: 'refused', note: CONTROLLER },
  { name: 'suspend', fate: 'refused', note: 'Conductor does not suspend jobs' },
  { name: 'takeover', fate: 'refused', note: 'Conductor has no backup controller to hand over to' },
  {
    name: 'top',
    fate: 'refused',
    note: "a job's place in the queue is its priority; Conductor has no per-user reordering",
  },
  { name: 'token', fate: 'refused', note: '`conductor token` issues API tokens' },
  {
    name: 'uhold',
    fate: 'honoured',
    note: 'holds pending jobs as their user (the same hold as `hold` with a user token)',
  },
  {
    name: 'update',
    fate: 'honoured',
    note: 'JobId=<id> with TimeLimit, Partition, Name (JobName), Comment, QOS (PATCH /api/v1/jobs/{id}); NodeName=<node> State=DRAIN|RESUME (drain, undrain); ReservationName=<name> with the fields of create (PATCH /api/v1/reservations/{name}); other fields are refused by name',
  },
  { name: 'version', fate: 'honoured', note: `prints "slurm ${SLURM_VERSION}"` },
  {
    name: 'wait_job',
    fate: 'refused',
    note: 'Conductor starts jobs itself, with no launch to wait for; `conductor submit --wait` waits for a job to end',
  },
  {
    name: 'write',
    fate: 'refused',
    note: '`conductor show <id>` prints the batch script; Conductor has no slurm.conf to write',
  },
];

/** The docs table of scontrol's commands (docs/slurm/scontrol.md, after the options). */
export function renderCommandTable(commands: readonly CommandSpec[]): string {
  const label: Record<Fate, string> = { honoured: 'honoured', warned: 'accepted, warns', refused: 'refused' };
  return [
    '### Commands',
    '',
    `${commands.length} commands of Slurm 22.05's scontrol(1); a command may be abbreviated to any unambiguous prefix.`,
    '',
    '| Command | Fate | On Conductor |',
    '| --- | --- | --- |',
    ...commands.map((c) => `| \`${c.name}\` | ${label[c.fate]} | ${c.note.replace(/\|/g, '\\|')} |`),
    '',
  ].join('\n');
}

/** A job as GET /api/v1/jobs/{id} returns it: the fields `show job` prints. */
export interface ScontrolJob {
  id: number;
  /** sbatch `--array`: the task's array and index (absent or null: no array). */
  array_job_id?: number | null;
  array_task_id?: number | null;
  name: string;
  state: string;
  cpus: number;
  exit_code: string | null;
  node: string | null;
  account: string | null;
  partition: string | null;
  time_limit: number | null;
  work_dir: string | null;
  priority: number;
  computed_priority?: number;
  requeue: boolean;
  attempt: number;
  reason: string | null;
  owner: string | null;
  memory_mb: number | null;
  memory_per_cpu: number | null;
  submit_dir: string | null;
  ntasks: number | null;
  cpus_per_task: number | null;
  gpus: number;
  gpu_type: string | null;
  gres: Record<string, number>;
  constraint: string | null;
  exclusive: boolean;
  nodelist: string[] | null;
  exclude: string[];
  submit_time: string | null;
  start_time: string | null;
  end_time: string | null;
  allocated_gpus?: number[] | null;
  qos?: string | null;
  eligible_time?: string | null;
  stdout?: string | null;
  stderr?: string | null;
  stdin?: string | null;
  comment?: string | null;
  requeues?: number;
  dependency?: string | null;
}

/** Memory as Slurm prints it in TRES and limits: whole gigabytes as `G`, else `M`. */
const memory = (mb: number) => (mb % 1024 === 0 ? `${mb / 1024}G` : `${mb}M`);

/** An output pattern with what scontrol expands in it (%j, %x, %u, %%), relative to the working dir. */
function outputPath(pattern: string, job: ScontrolJob, dir: string): string {
  const expanded = pattern.replace(/%(\d*)([%AajJNnstux])/g, (whole, digits: string, letter: string) => {
    const padded = (value: string | number) => String(value).padStart(Number(digits || 0), '0');
    switch (letter) {
      case '%':
        return '%';
      case 'j':
      case 'A':
        return padded(job.id);
      case 'x':
        return job.name;
      case 'u':
        return job.owner ?? whole;
      default:
        return whole;
    }
  });
  return expanded.startsWith('/') ? expanded : `${dir.replace(/\/$/, '')}/${expanded}`;
}

/** `scontrol show job`: Slurm's layout, with the fields Conductor has. */
export function formatJob(job: ScontrolJob, options: { now?: number; details?: boolean } = {}): string[] {
  const now = options.now ?? Date.now();
  const started = job.start_time ? Date.parse(job.start_time) : undefined;
  const runSeconds =
    started === undefined ? 0 : ((job.end_time ? Date.parse(job.end_time) : now) - started) / 1000;
  const workDir = job.work_dir ?? job.submit_dir ?? '/';
  const stdout = outputPath(job.stdout ?? 'slurm-%j.out', job, workDir);
  const gpus = job.gpus > 0 ? `gres/gpu=${job.gpus}` : '';
  const mem = job.memory_mb ? `mem=${memory(job.memory_mb)}` : '';
  const tres = [`cpu=${job.cpus}`, mem, 'node=1', `billing=${job.cpus}`, gpus].filter(Boolean).join(',');
  const gresPerNode = [
    ...(job.gpus > 0 ? [`gres:gpu${job.gpu_type ? `:${job.gpu_type}` : ''}:${job.gpus}`] : []),
    ...Object.entries(job.gres).map(([name, n]) => `gres:${name}:${n}`),
  ].join(',');
  const running = job.state === 'RUNNING';
  return [
    // An array task: Slurm's `JobId=124 ArrayJobId=123 ArrayTaskId=1 JobName=...`.
    typeof job.array_job_id === 'number'
      ? `JobId=${job.id} ArrayJobId=${job.array_job_id} ArrayTaskId=${job.array_task_id} JobName=${job.name}`
      : `JobId=${job.id} JobName=${job.name}`,
    `UserId=${job.owner ?? '(null)'} GroupId=${job.owner ?? '(null)'} MCS_label=N/A`,
    // A server without computed priorities has no adjustment apart: its priority is the job's, Nice 0.
    `Priority=${job.computed_priority ?? job.priority} Nice=${job.computed_priority === undefined ? 0 : -job.priority || 0} Account=${job.account ?? '(null)'} QOS=${job.qos ?? 'normal'}`,
    `JobState=${job.state} Reason=${job.reason ?? 'None'} Dependency=${job.dependency || '(null)'}`,
    `Requeue=${job.requeue ? 1 : 0} Restarts=${job.requeues ?? Math.max(0, job.attempt - 1)} BatchFlag=1 Reboot=0 ExitCode=${job.exit_code ?? '0:0'}`,
    `RunTime=${clockSeconds(runSeconds)} TimeLimit=${timeLimit(job.time_limit, 'clock')} TimeMin=N/A`,
    `SubmitTime=${timestamp(job.submit_time)} EligibleTime=${timestamp(job.eligible_time ?? job.submit_time)}`,
    `AccrueTime=${timestamp(job.eligible_time ?? job.submit_time)}`,
    `StartTime=${timestamp(job.start_time)} EndTime=${timestamp(job.end_time ?? (running && started !== undefined && job.time_limit !== null ? new Date(started + job.time_limit * 60_000).toISOString() : null))} Deadline=N/A`,
    `Partition=${job.partition ?? '(null)'} AllocNode:Sid=${job.submit_dir ? 'submit' : '(null)'}:0`,
    `ReqNodeList=${job.nodelist && job.nodelist.length > 0 ? compressHostlist(job.nodelist) : '(null)'} ExcNodeList=${job.exclude.length > 0 ? compressHostlist(job.exclude) : '(null)'}`,
    `NodeList=${job.node ?? '(null)'}`,
    ...(job.node ? [`BatchHost=${job.node}`] : []),
    `NumNodes=1 NumCPUs=${job.cpus} NumTasks=${job.ntasks ?? 1} CPUs/Task=${job.cpus_per_task ?? 1} ReqB:S:C:T=0:0:*:*`,
    `TRES=${tres}`,
    `Socks/Node=* NtasksPerN:B:S:C=0:0:*:* CoreSpec=*`,
    ...(options.details && running && job.node ? [`  ${allocationLine(job)}`] : []),
    job.memory_per_cpu
      ? `MinCPUsNode=${job.cpus_per_task ?? 1} MinMemoryCPU=${memory(job.memory_per_cpu)} MinTmpDiskNode=0`
      : `MinCPUsNode=${job.cpus_per_task ?? 1} MinMemoryNode=${job.memory_mb ? memory(job.memory_mb) : '0'} MinTmpDiskNode=0`,
    `Features=${job.constraint ?? '(null)'} DelayBoot=00:00:00`,
    `OverSubscribe=${job.exclusive ? 'NO' : 'OK'} Contiguous=0 Licenses=(null) Network=(null)`,
    `Command=(null)`,
    `WorkDir=${workDir}`,
    ...(job.comment ? [`Comment=${job.comment}`] : []),
    `StdErr=${job.stderr ? outputPath(job.stderr, job, workDir) : stdout}`,
    `StdIn=${job.stdin ? outputPath(job.stdin, job, workDir) : '/dev/null'}`,
    `StdOut=${stdout}`,
    ...(gresPerNode ? [`TresPerNode=${gresPerNode}`] : []),
  ];
}

/** `-d`: the job's allocation on its node, as Slurm's detail line (without CPU ids, which are not known). */
function allocationLine(job: ScontrolJob): string {
  const indexes = job.allocated_gpus ?? [];
  const gpus =
    job.gpus > 0
      ? `gpu${job.gpu_type ? `:${job.gpu_type}` : ''}:${job.gpus}${indexes.length > 0 ? `(IDX:${indexes.join(',')})` : ''}`
      : '';
  const gres = [gpus, ...Object.entries(job.gres).map(([name, n]) => `${name}:${n}`)]
    .filter(Boolean)
    .join(',');
  return `Nodes=${job.node} Mem=${job.memory_mb ?? 0} GRES=${gres}`;
}

const SLURM_NODE_STATE: Record<NodeInfo['state'], string> = {
  idle: 'IDLE',
  mixed: 'MIXED',
  allocated: 'ALLOCATED',
  draining: 'MIXED+DRAIN',
  drained: 'IDLE+DRAIN',
  down: 'DOWN+NOT_RESPONDING',
};

/** `scontrol show node`: Slurm's layout, with the fields Conductor has. */
export function formatNode(node: NodeInfo): string[] {
  const state =
    node.state === 'draining' && node.allocCpus >= node.cpus
      ? 'ALLOCATED+DRAIN'
      : SLURM_NODE_STATE[node.state];
  const alloc = [
    node.allocCpus > 0 ? `cpu=${node.allocCpus}` : '',
    node.allocMemoryMb > 0 ? `mem=${memory(node.allocMemoryMb)}` : '',
  ].filter(Boolean);
  return [
    `NodeName=${node.name} CoresPerSocket=${node.cpus}`,
    `CPUAlloc=${node.allocCpus} CPUEfctv=${node.cpus} CPUTot=${node.cpus} CPULoad=N/A`,
    `AvailableFeatures=${node.features}`,
    `ActiveFeatures=${node.features}`,
    `Gres=${node.gres}`,
    `NodeAddr=${node.name} NodeHostName=${node.name}`,
    `RealMemory=${node.memoryMb} AllocMem=${node.allocMemoryMb} FreeMem=N/A Sockets=1 Boards=1`,
    `State=${state} ThreadsPerCore=1 TmpDisk=0 Weight=1 Owner=N/A MCS_label=N/A`,
    `Partitions=${node.partitions.join(',')}`,
    `CfgTRES=cpu=${node.cpus}${node.memoryMb > 0 ? `,mem=${memory(node.memoryMb)}` : ''},billing=${node.cpus}`,
    `AllocTRES=${alloc.join(',')}`,
    ...(node.reason
      ? [`Reason=${node.reason}${node.reasonTime ? ` [root@${timestamp(node.reasonTime)}]` : ''}`]
      : []),
  ];
}

/** `scontrol show partition`: Slurm's layout, with the fields Conductor has. */
export function formatPartition(
  partition: SinfoPartition & {
    allow_accounts?: string[] | null;
    def_mem_per_cpu?: number | null;
    max_mem_per_cpu?: number | null;
    total_cpus?: number;
  },
  nodes: readonly NodeInfo[],
): string[] {
  const members = nodes.filter((n) => n.partitions.includes(partition.name));
  const time = (minutes: number | null, none: string) =>
    minutes === null ? none : timeLimit(minutes, 'clock');
  return [
    `PartitionName=${partition.name}`,
    `AllowGroups=ALL AllowAccounts=${partition.allow_accounts?.join(',') ?? 'ALL'} AllowQos=ALL`,
    `AllocNodes=ALL Default=${partition.default ? 'YES' : 'NO'} QoS=N/A`,
    `DefaultTime=${time(partition.default_time, 'NONE')} DisableRootJobs=NO ExclusiveUser=NO GraceTime=0 Hidden=NO`,
    `MaxNodes=1 MaxTime=${time(partition.max_time, 'UNLIMITED')} MinNodes=0 LLN=NO MaxCPUsPerNode=${partition.max_cpus_per_node ?? 'UNLIMITED'}`,
    `Nodes=${members.length > 0 ? compressHostlist(members.map((n) => n.name)) : (partition.nodes ?? '(null)')}`,
    `PriorityJobFactor=1 PriorityTier=${partition.priority_tier ?? 1} RootOnly=NO ReqResv=NO OverSubscribe=NO`,
    `OverTimeLimit=NONE PreemptMode=OFF`,
    `State=${partition.state} TotalCPUs=${members.reduce((n, m) => n + m.cpus, 0)} TotalNodes=${members.length} SelectTypeParameters=NONE`,
    `JobDefaults=(null)`,
    partition.def_mem_per_cpu
      ? `DefMemPerCPU=${partition.def_mem_per_cpu} MaxMemPerCPU=${partition.max_mem_per_cpu ?? 'UNLIMITED'}`
      : `DefMemPerNode=UNLIMITED ${partition.max_mem_per_cpu ? `MaxMemPerCPU=${partition.max_mem_per_cpu}` : 'MaxMemPerNode=UNLIMITED'}`,
  ];
}

/** Records as scontrol prints them: continuation lines indented by three, a blank line after each. */
function printRecords(io: Io, records: string[][], oneliner: boolean) {
  for (const lines of records) {
    if (oneliner) io.out(`${lines.join(' ')}\n`);
    else io.out(`${lines.map((line, i) => (i === 0 ? line : `   ${line}`)).join('\n')}\n\n`);
  }
}

/** `123`, `123,124` or several words: job ids (array and step suffixes are not Conductor's). */
function jobIds(words: string[]): number[] {
  const ids = words.flatMap((w) => w.split(',')).filter((w) => w !== '');
  if (ids.length === 0) throw new SlurmError('Invalid job id specified');
  return ids.map((id) => {
    if (!/^\d+$/.test(id)) throw new SlurmError(`Invalid job id specified: ${id}`);
    return Number(id);
  });
}

/** A command word: exact, else the only command it abbreviates (as scontrol takes `sh job 1`). */
function commandOf(word: string): CommandSpec {
  const lower = word.toLowerCase();
  const exact = SCONTROL_COMMANDS.find((c) => c.name === lower);
  const candidates = exact ? [exact] : SCONTROL_COMMANDS.filter((c) => c.name.startsWith(lower));
  if (candidates.length !== 1) throw new SlurmError(`invalid keyword: ${word}`);
  return candidates[0] as CommandSpec;
}

interface Context {
  io: Io;
  api: Client;
  /** Who a job without an owner belongs to: the caller on an open cluster (no token), else nobody known. */
  ownerlessAs: string | null;
  details: number;
  oneliner: boolean;
  quiet: boolean;
}

const owned = (job: ScontrolJob, ctx: Context): ScontrolJob =>
  job.owner === null && ctx.ownerlessAs !== null ? { ...job, owner: ctx.ownerlessAs } : job;

async function show(words: string[], ctx: Context): Promise<number> {
  const [entityWord, ...rest] = words;
  if (entityWord === undefined) throw new SlurmError('too few arguments for keyword:show');
  // `show job=5` is the same as `show job 5`.
  const [entityName = '', inline] = entityWord.split('=', 2);
  const id = inline ?? rest[0];
  const entity = entityName.toLowerCase();
  if (['job', 'jobs', 'jobid'].includes(entity)) {
    if (id === undefined) {
      const { jobs } = await ctx.api.request<{ jobs: ScontrolJob[] }>('GET', '/api/v1/jobs?limit=1000');
      if (jobs.length === 0) ctx.io.out('No jobs in the system\n');
      printRecords(
        ctx.io,
        jobs.map((j) => formatJob(owned(j, ctx))),
        ctx.oneliner,
      );
      return 0;
    }
    const ids = jobIds([id]);
    const records: string[][] = [];
    for (const jobId of ids) {
      try {
        const job = await ctx.api.request<ScontrolJob>('GET', `/api/v1/jobs/${jobId}`);
        records.push(formatJob(owned(job, ctx), { details: ctx.details > 0 }));
      } catch (error) {
        if ((error as { status?: number }).status !== 404) throw error;
        if (!ctx.quiet) ctx.io.err('slurm_load_jobs error: Invalid job id specified\n');
        return 1;
      }
    }
    printRecords(ctx.io, records, ctx.oneliner);
    return 0;
  }
  if (['reservation', 'reservations', 'reservationname', 'res'].includes(entity)) {
    const { reservations } = await ctx.api.request<{ reservations: Reservation[] }>(
      'GET',
      '/api/v1/reservations',
    );
    const shown = id === undefined ? reservations : reservations.filter((r) => r.name === id);
    if (shown.length === 0) {
      if (id === undefined) ctx.io.out('No reservations in the system\n');
      else if (!ctx.quiet) ctx.io.err(`Reservation ${id} not found\n`);
      return id === undefined ? 0 : 1;
    }
    printRecords(ctx.io, shown.map(formatReservation), ctx.oneliner);
    return 0;
  }
  const isNode = ['node', 'nodes', 'nodename'].includes(entity);
  const isPartition = ['partition', 'partitions', 'partitionname'].includes(entity);
  if (!isNode && !isPartition) {
    throw new SlurmError(
      `show ${entityName}: not supported on Conductor (show job, node, partition or reservation)`,
    );
  }
  const { partitions, workers } = await loadCluster(ctx.api);
  const nodes = nodesOf(partitions, workers).sort((a, b) => (a.name < b.name ? -1 : 1));
  if (isNode) {
    const shown = id === undefined ? nodes : nodes.filter((n) => n.name === id);
    if (shown.length === 0) {
      if (!ctx.quiet) ctx.io.err(`Node ${id ?? ''} not found\n`);
      return 1;
    }
    printRecords(ctx.io, shown.map(formatNode), ctx.oneliner);
    return 0;
  }
  const shown = id === undefined ? partitions : partitions.filter((p) => p.name === id);
  if (shown.length === 0) {
    if (!ctx.quiet) ctx.io.err(`Partition ${id ?? ''} not found\n`);
    return 1;
  }
  printRecords(
    ctx.io,
    shown.map((p) => formatPartition(p, nodes)),
    ctx.oneliner,
  );
  return 0;
}

/** What `scontrol update JobId=` sets, by Slurm's (case-insensitive) name: the PATCH body's field. */
const UPDATABLE: Record<string, 'time_limit' | 'partition' | 'name' | 'comment' | 'qos'> = {
  timelimit: 'time_limit',
  partition: 'partition',
  name: 'name',
  jobname: 'name',
  comment: 'comment',
  qos: 'qos',
};

async function update(words: string[], ctx: Context): Promise<number> {
  const pairs = words.map((word) => {
    const eq = word.indexOf('=');
    if (eq < 0) throw new SlurmError(`Invalid input: ${word}`);
    return { key: word.slice(0, eq), value: word.slice(eq + 1) };
  });
  const first = pairs[0];
  if (!first) throw new SlurmError('too few arguments for keyword:update');
  const key = first.key.toLowerCase();
  if (key === 'nodename') {
    const other = pairs.slice(1).filter((p) => !['state', 'reason'].includes(p.key.toLowerCase()));
    if (other.length > 0)
      throw new SlurmError(
        `Update of ${other.map((p) => p.key).join(', ')} is not supported on Conductor (State=DRAIN|RESUME only)`,
      );
    const state = pairs.find((p) => p.key.toLowerCase() === 'state')?.value.toUpperCase();
    const action =
      state === 'DRAIN' ? 'drain' : state === 'RESUME' || state === 'UNDRAIN' ? 'undrain' : undefined;
    if (!action)
      throw new SlurmError(
        `Invalid node state specified: ${state ?? '(none)'} (DRAIN or RESUME on Conductor)`,
      );
    for (const node of first.value.split(',')) {
      await ctx.api.request('POST', `/api/v1/workers/${encodeURIComponent(node)}/${action}`);
    }
    return 0;
  }
  if (key === 'reservationname' || key === 'reservation') {
    const body = reservationBody(pairs.slice(1));
    if (Object.keys(body).length === 0) throw new SlurmError('No changes specified');
    try {
      await ctx.api.request('PATCH', `/api/v1/reservations/${encodeURIComponent(first.value)}`, body);
    } catch (error) {
      throw new SlurmError(`Error updating the reservation: ${(error as Error).message}`);
    }
    ctx.io.out('Reservation updated.\n');
    return 0;
  }
  if (key !== 'jobid') {
    throw new SlurmError(
      `Update of ${first.key} is not supported on Conductor (JobId=, NodeName= or ReservationName=)`,
    );
  }
  const body: Record<string, string> = {};
  const refused: string[] = [];
  for (const { key: name, value } of pairs.slice(1)) {
    const field = UPDATABLE[name.toLowerCase()];
    if (field) body[field] = value;
    else refused.push(name);
  }
  if (refused.length > 0) {
    throw new SlurmError(
      `Update of ${refused.join(', ')} is not supported on Conductor (TimeLimit, Partition, Name, Comment, QOS)`,
    );
  }
  if (Object.keys(body).length === 0) throw new SlurmError('No changes specified');
  let failed = 0;
  for (const id of jobIds([first.value])) {
    try {
      await ctx.api.request('PATCH', `/api/v1/jobs/${id}`, body);
    } catch (error) {
      ctx.io.err(`Job ${id}: ${(error as Error).message}\n`);
      failed++;
    }
  }
  return failed > 0 ? 1 : 0;
}

/** A reservation as GET /api/v1/reservations returns it. */
export interface Reservation {
  name: string;
  start_time: string;
  end_time: string;
  duration: number;
  nodes: string;
  node_count: number;
  cpu_count: number;
  partition: string | null;
  users: string[];
  accounts: string[];
  flags: string[];
  state: 'ACTIVE' | 'INACTIVE';
}

/** `scontrol show reservation`: Slurm's layout, with the fields Conductor has. */
export function formatReservation(r: Reservation): string[] {
  const list = (names: string[]) => (names.length > 0 ? names.join(',') : '(null)');
  return [
    `ReservationName=${r.name} StartTime=${timestamp(r.start_time)} EndTime=${timestamp(r.end_time)} Duration=${clockSeconds(r.duration * 60)}`,
    `Nodes=${r.nodes} NodeCnt=${r.node_count} CoreCnt=${r.cpu_count} Features=(null) PartitionName=${r.partition ?? '(null)'} Flags=${r.flags.join(',')}`,
    `TRES=cpu=${r.cpu_count}`,
    `Users=${list(r.users)} Groups=(null) Accounts=${list(r.accounts)} Licenses=(null) State=${r.state} BurstBuffer=(null) Watts=n/a`,
    'MaxStartDelay=(null)',
  ];
}

/** What `create|update reservation` sets, by Slurm's (case-insensitive) name: the API body's field. */
const RESERVATION_FIELDS: Record<string, string> = {
  reservationname: 'name',
  reservation: 'name',
  starttime: 'start_time',
  endtime: 'end_time',
  duration: 'duration',
  nodes: 'nodes',
  nodelist: 'nodes',
  nodecnt: 'node_count',
  partitionname: 'partition',
  partition: 'partition',
  users: 'users',
  user: 'users',
  accounts: 'accounts',
  account: 'accounts',
  flags: 'flags',
};

function reservationBody(pairs: { key: string; value: string }[]): Record<string, unknown> {
  const body: Record<string, unknown> = {};
  const refused: string[] = [];
  for (const { key, value } of pairs) {
    const field = RESERVATION_FIELDS[key.toLowerCase()];
    if (!field) refused.push(key);
    else if (field === 'users' || field === 'accounts') body[field] = value.split(',').filter(Boolean);
    else if (field === 'flags') body[field] = value.toUpperCase().split(',').filter(Boolean);
    else if (field === 'node_count') {
      if (!/^\d+$/.test(value)) throw new SlurmError(`Invalid node count: ${value}`);
      body[field] = Number(value);
    } else body[field] = value;
  }
  if (refused.length > 0) {
    throw new SlurmError(
      `${refused.join(', ')} not supported on Conductor (ReservationName, StartTime, EndTime, Duration, Nodes, NodeCnt, PartitionName, Users, Accounts, Flags)`,
    );
  }
  return body;
}

/** `create reservation Key=Value ...`, as `scontrol create res ...`. */
async function create(words: string[], ctx: Context): Promise<number> {
  const [entity, ...rest] = words;
  const pairs = (entity && !entity.includes('=') ? rest : words).map((word) => {
    const eq = word.indexOf('=');
    if (eq < 0) throw new SlurmError(`Invalid input: ${word}`);
    return { key: word.slice(0, eq), value: word.slice(eq + 1) };
  });
  if (
    entity &&
    !entity.includes('=') &&
    !['reservation', 'res', 'reservations'].includes(entity.toLowerCase())
  ) {
    throw new SlurmError(
      `create ${entity}: not supported on Conductor (create reservation); \`conductor partition\` creates partitions`,
    );
  }
  const body = reservationBody(pairs);
  if (typeof body.name !== 'string') throw new SlurmError('ReservationName is required on Conductor');
  try {
    await ctx.api.request('POST', '/api/v1/reservations', body);
  } catch (error) {
    throw new SlurmError(`Error creating the reservation: ${(error as Error).message}`);
  }
  ctx.io.out(`Reservation created: ${body.name}\n`);
  return 0;
}

/** `delete ReservationName=<name>`. */
async function remove(words: string[], ctx: Context): Promise<number> {
  const [word] = words;
  const m = word ? /^(?:reservationname|reservation)=(.+)$/i.exec(word) : null;
  if (!m) {
    throw new SlurmError(
      'delete: ReservationName=<name> only on Conductor (`conductor partition <name> --delete` deletes a partition)',
    );
  }
  try {
    await ctx.api.request('DELETE', `/api/v1/reservations/${encodeURIComponent(m[1] as string)}`);
  } catch (error) {
    throw new SlurmError(`Error deleting the reservation: ${(error as Error).message}`);
  }
  return 0;
}

/** hold, uhold, release, requeue, requeuehold: each job in turn, as scontrol reports them. */
async function jobAction(command: string, words: string[], ctx: Context): Promise<number> {
  // requeue's only option (Incomplete) is about jobs that ended badly; all requeueable jobs qualify here.
  const rest = words.filter((w) => !/^incomplete$/i.test(w) && !/^state=/i.test(w));
  let failed = 0;
  // Array tasks (`123_4`, `123_[1-3]`) and, for hold and release, a whole array (`123`): the array's route.
  const arrayWords = rest.flatMap((w) => w.split(/,(?![^[]*\])/)).filter((w) => /^\d+_/.test(w));
  const hold = command === 'hold' || command === 'uhold' || command === 'release';
  for (const word of arrayWords) {
    const m = /^(\d+)_(\d+|\[[\d,:-]+\])$/.exec(word);
    try {
      if (!m || !hold) throw new SlurmError(`Invalid job id specified: ${word}`);
      const tasks = encodeURIComponent((m[2] as string).replace(/^\[|\]$/g, ''));
      await ctx.api.request(
        'POST',
        `/api/v1/arrays/${m[1]}/${command === 'release' ? 'release' : 'hold'}?tasks=${tasks}`,
      );
    } catch (error) {
      ctx.io.err(`Job ${word}: ${(error as Error).message}\n`);
      failed++;
    }
  }
  const plain = rest
    .map((w) =>
      w
        .split(/,(?![^[]*\])/)
        .filter((x) => !/^\d+_/.test(x))
        .join(','),
    )
    .filter((w) => w !== '');
  const ids = plain.length === 0 && arrayWords.length > 0 ? [] : jobIds(plain);
  for (const id of ids) {
    try {
      if (command === 'requeue' || command === 'requeuehold') {
        await ctx.api.request('POST', `/api/v1/jobs/${id}/requeue`, { hold: command === 'requeuehold' });
      } else {
        await ctx.api.request('POST', `/api/v1/jobs/${id}/${command === 'release' ? 'release' : 'hold'}`);
      }
    } catch (error) {
      ctx.io.err(`Job ${id}: ${(error as Error).message}\n`);
      failed++;
    }
  }
  return failed > 0 ? 1 : 0;
}

const USAGE = `Usage: scontrol [<OPTION>] [<COMMAND>]\n`;

export async function runScontrol(args: string[], io: Io, env: NodeJS.ProcessEnv): Promise<number> {
  return guarded('scontrol', io, async () => {
    const parsed = parseOptions('scontrol', args, SCONTROL_OPTIONS, io);
    const words = parsed.positionals;
    if (has(parsed, 'version')) {
      io.out(`slurm ${SLURM_VERSION}\n`);
      return 0;
    }
    if (has(parsed, 'help')) {
      io.out(
        `${USAGE}\n${optionHelp(SCONTROL_OPTIONS)}\n\nCommands:\n${SCONTROL_COMMANDS.filter(
          (c) => c.fate === 'honoured',
        )
          .map((c) => `  ${c.name.padEnd(14)} ${c.note}`)
          .join('\n')}\n`,
      );
      return 0;
    }
    const [word, ...rest] = words;
    if (word === undefined) {
      throw new SlurmError(
        'interactive mode is not supported on Conductor: give a command (scontrol show job <id>)',
      );
    }
    const command = commandOf(word);
    if (command.fate === 'refused') throw new SlurmError(`${command.name} is not supported: ${command.note}`);
    const api = apiClient(env);
    if (has(parsed, 'verbose')) io.err(`scontrol: asking ${api.config.url}\n`);
    const ctx: Context = {
      io,
      api,
      ownerlessAs: api.config.token ? null : currentUser(env).name,
      details: count(parsed, 'details'),
      oneliner: has(parsed, 'oneliner'),
      quiet: has(parsed, 'quiet'),
    };
    switch (command.name) {
      case 'help':
        return runScontrol(['--help'], io, env);
      case 'version':
        io.out(`slurm ${SLURM_VERSION}\n`);
        return 0;
      case 'ping': {
        const health = await api.request<{ status: string }>('GET', '/api/v1/health').catch(() => undefined);
        io.out(
          `Slurmctld(primary) at ${api.config.url} is ${health && health.status !== 'down' ? 'UP' : 'DOWN'}\n`,
        );
        return health && health.status !== 'down' ? 0 : 1;
      }
      case 'show':
        return show(rest, ctx);
      case 'update':
        return update(rest, ctx);
      case 'create':
        return create(rest, ctx);
      case 'delete':
        return remove(rest, ctx);
      default:
        return jobAction(command.name, rest, ctx);
    }
  });
}
