/**
 * `srun` on Conductor. Inside a job (SLURM_JOB_ID set) it runs a job step on the job's own allocation, here
 * on the job's node: `-n` copies of the command in parallel, each with its task ids in the environment,
 * their output on srun's (`-l` labels it), and srun's exit code is the highest task's. Outside a job it
 * submits the command as a batch job with srun's resource options and follows it: its output streams back
 * and srun exits with the job's exit code, as `srun` without an allocation does on Slurm.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createWriteStream, mkdirSync, openSync, readdirSync, readFileSync, type WriteStream } from 'node:fs';
import { constants, hostname, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { followJob } from '../follow.ts';
import { type Io, jobExitStatus } from '../io.ts';
import { apiClient, guarded, has, optionHelp, parseOptions, SLURM_VERSION, SlurmError } from './command.ts';
import { lastValue, type OptionSpec, type Parsed } from './getopt.ts';

const NO_EFFECT_ONE_NODE = 'a Conductor job step runs on the one node of its job';
const NO_BINDING = 'Conductor does not pin tasks to CPUs, memory or devices';

export const SRUN_OPTIONS: readonly OptionSpec[] = [
  { long: 'accel-bind', arg: 'required', fate: 'warned', note: NO_BINDING, value: 'options' },
  {
    long: 'account',
    short: 'A',
    arg: 'required',
    fate: 'honoured',
    note: "outside a job: the job's account (a step is in its job's)",
    value: 'account',
  },
  {
    long: 'acctg-freq',
    arg: 'required',
    fate: 'warned',
    note: 'the agent samples memory every second or so',
    value: 'datatype=interval',
  },
  { long: 'bb', arg: 'required', fate: 'refused', note: 'Conductor has no burst buffers', value: 'spec' },
  {
    long: 'bbf',
    arg: 'required',
    fate: 'refused',
    note: 'Conductor has no burst buffers',
    value: 'file_name',
  },
  {
    long: 'bcast',
    arg: 'optional',
    fate: 'refused',
    note: "the command runs where it is, on the job's node: nothing to copy",
    value: 'dest_path',
  },
  { long: 'bcast-exclude', arg: 'required', fate: 'refused', note: 'no --bcast here', value: 'paths' },
  {
    long: 'begin',
    short: 'b',
    arg: 'required',
    fate: 'refused',
    note: 'srun waits for its job; `sbatch --begin` defers one',
    value: 'time',
  },
  {
    long: 'chdir',
    short: 'D',
    arg: 'required',
    fate: 'honoured',
    note: "the tasks' working directory (outside a job: the job's)",
    value: 'path',
  },
  {
    long: 'cluster-constraint',
    arg: 'required',
    fate: 'refused',
    note: 'a Conductor control plane is one cluster',
    value: 'list',
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
    long: 'comment',
    arg: 'required',
    fate: 'honoured',
    note: "outside a job: the job's comment",
    value: 'string',
  },
  { long: 'compress', arg: 'optional', fate: 'warned', note: 'no --bcast here', value: 'type' },
  {
    long: 'constraint',
    short: 'C',
    arg: 'required',
    fate: 'honoured',
    note: "outside a job: node features the job needs (a step runs on its job's node)",
    value: 'list',
  },
  {
    long: 'container',
    arg: 'required',
    fate: 'refused',
    note: 'Conductor runs no OCI containers',
    value: 'path_to_container',
  },
  { long: 'contiguous', arg: 'none', fate: 'warned', note: NO_EFFECT_ONE_NODE },
  {
    long: 'core-spec',
    short: 'S',
    arg: 'required',
    fate: 'warned',
    note: 'Conductor reserves no cores for system use',
    value: 'num',
  },
  {
    long: 'cores-per-socket',
    arg: 'required',
    fate: 'warned',
    note: 'Conductor counts CPUs, not sockets and cores',
    value: 'cores',
  },
  {
    long: 'cpu-bind',
    arg: 'required',
    fate: 'honoured',
    note: 'tasks run unbound, as `none`; quiet, verbose and none are exactly that, a binding type (cores, map_cpu, ...) warns that it is not applied',
    value: 'type',
  },
  {
    long: 'cpu-freq',
    arg: 'required',
    fate: 'warned',
    note: 'Conductor does not set CPU frequencies',
    value: 'p1[-p2[:p3]]',
  },
  {
    long: 'cpus-per-gpu',
    arg: 'required',
    fate: 'refused',
    note: 'give CPUs with -c and GPUs with -G',
    value: 'ncpus',
  },
  {
    long: 'cpus-per-task',
    short: 'c',
    arg: 'required',
    fate: 'honoured',
    note: 'CPUs per task (SLURM_CPUS_PER_TASK); tasks × CPUs must fit the job',
    value: 'ncpus',
  },
  {
    long: 'deadline',
    arg: 'required',
    fate: 'refused',
    note: 'Conductor has no job deadlines',
    value: 'OPT',
  },
  {
    long: 'delay-boot',
    arg: 'required',
    fate: 'warned',
    note: 'Conductor does not reboot nodes',
    value: 'minutes',
  },
  {
    long: 'dependency',
    short: 'd',
    arg: 'required',
    fate: 'warned',
    note: 'Conductor has no job dependencies: the step or job starts when it can',
    value: 'dependency_list',
  },
  {
    long: 'disable-status',
    short: 'X',
    arg: 'none',
    fate: 'warned',
    note: 'Ctrl-C is passed to the tasks as it is',
  },
  {
    long: 'distribution',
    short: 'm',
    arg: 'required',
    fate: 'warned',
    note: 'tasks are numbered in order on the one node',
    value: 'spec',
  },
  {
    long: 'epilog',
    arg: 'required',
    fate: 'refused',
    note: 'run it after srun in the job script',
    value: 'executable',
  },
  {
    long: 'error',
    short: 'e',
    arg: 'required',
    fate: 'honoured',
    note: "stderr to a file (%j %s %t %N %n %u %x %% expanded; %t: a file per task); outside a job: the job's",
    value: 'filename_pattern',
  },
  {
    long: 'exact',
    arg: 'none',
    fate: 'honoured',
    note: 'the step gets only what it asks for: always so here',
  },
  {
    long: 'exclude',
    short: 'x',
    arg: 'required',
    fate: 'honoured',
    note: 'outside a job: nodes not to run on',
    value: 'host1,host2,...',
  },
  {
    long: 'exclusive',
    arg: 'optional',
    fate: 'honoured',
    note: "outside a job: the whole node; inside, the step's CPUs are checked against the job's",
    value: 'user|mcs',
  },
  {
    long: 'export',
    arg: 'required',
    fate: 'honoured',
    note: "ALL (the default), NONE (SLURM_* only) or [ALL,]VAR[=value],...: the tasks' (or the job's) environment",
    value: 'ALL|NONE|variables',
  },
  {
    long: 'extra-node-info',
    short: 'B',
    arg: 'required',
    fate: 'warned',
    note: 'Conductor counts CPUs, not sockets and cores',
    value: 'sockets[:cores[:threads]]',
  },
  { long: 'gid', arg: 'required', fate: 'refused', note: 'the API token says who you are', value: 'group' },
  { long: 'gpu-bind', arg: 'required', fate: 'warned', note: NO_BINDING, value: 'type' },
  {
    long: 'gpu-freq',
    arg: 'required',
    fate: 'warned',
    note: 'Conductor does not set GPU frequencies',
    value: 'spec',
  },
  {
    long: 'gpus',
    short: 'G',
    arg: 'required',
    fate: 'honoured',
    note: "outside a job: the job's GPUs (a step sees its job's)",
    value: '[type:]number',
  },
  {
    long: 'gpus-per-node',
    arg: 'required',
    fate: 'honoured',
    note: 'the same as --gpus: one node',
    value: '[type:]number',
  },
  {
    long: 'gpus-per-socket',
    arg: 'required',
    fate: 'refused',
    note: 'Conductor counts GPUs per job, not per socket',
    value: '[type:]number',
  },
  {
    long: 'gpus-per-task',
    arg: 'required',
    fate: 'refused',
    note: 'give the GPUs of the whole job with -G',
    value: '[type:]number',
  },
  {
    long: 'gres',
    arg: 'required',
    fate: 'honoured',
    note: 'outside a job: generic resources of the job',
    value: 'list',
  },
  {
    long: 'gres-flags',
    arg: 'required',
    fate: 'warned',
    note: 'GRES are not bound to CPUs here',
    value: 'type',
  },
  { long: 'help', short: 'h', arg: 'none', fate: 'honoured', note: 'this help' },
  {
    long: 'het-group',
    arg: 'required',
    fate: 'refused',
    note: 'Conductor has no heterogeneous jobs',
    value: 'expr',
  },
  { long: 'hint', arg: 'required', fate: 'warned', note: NO_BINDING, value: 'type' },
  {
    long: 'hold',
    short: 'H',
    arg: 'none',
    fate: 'honoured',
    note: 'outside a job: the job is submitted held; srun waits until it is released and ends',
  },
  {
    long: 'immediate',
    short: 'I',
    arg: 'optional',
    fate: 'refused',
    note: 'Conductor does not promise an immediate start',
    value: 'seconds',
  },
  {
    long: 'input',
    short: 'i',
    arg: 'required',
    fate: 'honoured',
    note: "a file (pattern) for every task's stdin, none, or the task id that reads srun's stdin (default and `all`: task 0; Slurm gives it to all); outside a job: the job's",
    value: 'mode',
  },
  {
    long: 'job-name',
    short: 'J',
    arg: 'required',
    fate: 'honoured',
    note: 'the step name (SLURM_STEP_NAME); outside a job: the job name',
    value: 'jobname',
  },
  {
    long: 'jobid',
    arg: 'required',
    fate: 'honoured',
    note: 'the job to run the step in: only the job srun runs inside (SLURM_JOB_ID)',
    value: 'jobid',
  },
  {
    long: 'kill-on-bad-exit',
    short: 'K',
    arg: 'optional',
    fate: 'honoured',
    note: 'a task that exits non-zero ends the others (=0: it does not)',
    value: '0|1',
  },
  {
    long: 'label',
    short: 'l',
    arg: 'none',
    fate: 'honoured',
    note: 'each output line starts with its task id (`0: `)',
  },
  {
    long: 'licenses',
    short: 'L',
    arg: 'required',
    fate: 'refused',
    note: 'Conductor has no licenses',
    value: 'license',
  },
  {
    long: 'mail-type',
    arg: 'required',
    fate: 'warned',
    note: 'Conductor sends no mail (webhooks tell about jobs)',
    value: 'type',
  },
  {
    long: 'mail-user',
    arg: 'required',
    fate: 'warned',
    note: 'Conductor sends no mail (webhooks tell about jobs)',
    value: 'user',
  },
  { long: 'mcs-label', arg: 'required', fate: 'warned', note: 'Conductor has no MCS labels', value: 'mcs' },
  {
    long: 'mem',
    arg: 'required',
    fate: 'honoured',
    note: "outside a job: the job's memory (a step shares its job's)",
    value: 'size',
  },
  { long: 'mem-bind', arg: 'required', fate: 'warned', note: NO_BINDING, value: 'type' },
  {
    long: 'mem-per-cpu',
    arg: 'required',
    fate: 'honoured',
    note: "outside a job: memory per CPU (a step shares its job's)",
    value: 'size',
  },
  {
    long: 'mem-per-gpu',
    arg: 'required',
    fate: 'refused',
    note: 'give the memory with --mem or --mem-per-cpu',
    value: 'size',
  },
  {
    long: 'mincpus',
    arg: 'required',
    fate: 'warned',
    note: 'the CPUs are the tasks × CPUs per task',
    value: 'n',
  },
  {
    long: 'mpi',
    arg: 'required',
    fate: 'honoured',
    note: 'none: tasks start as they are; any MPI plugin warns that there is none (use mpirun in the job)',
    value: 'mpi_type',
  },
  {
    long: 'msg-timeout',
    arg: 'required',
    fate: 'warned',
    note: 'srun does not wait for launch messages here',
    value: 'seconds',
  },
  { long: 'multi-prog', arg: 'none', fate: 'refused', note: 'each task runs the same command here' },
  {
    long: 'network',
    arg: 'required',
    fate: 'warned',
    note: 'Conductor has no network options',
    value: 'type',
  },
  {
    long: 'nice',
    arg: 'optional',
    fate: 'warned',
    note: 'outside a job, --priority orders jobs',
    value: 'adjustment',
  },
  { long: 'no-allocate', short: 'Z', arg: 'none', fate: 'refused', note: 'every Conductor job is scheduled' },
  { long: 'no-kill', short: 'k', arg: 'optional', fate: 'warned', note: NO_EFFECT_ONE_NODE, value: 'off' },
  {
    long: 'nodefile',
    short: 'F',
    arg: 'required',
    fate: 'refused',
    note: 'name the node with -w',
    value: 'node_file',
  },
  {
    long: 'nodelist',
    short: 'w',
    arg: 'required',
    fate: 'honoured',
    note: "outside a job: the node to run on; inside, it must be the job's node",
    value: 'host1,host2,...',
  },
  {
    long: 'nodes',
    short: 'N',
    arg: 'required',
    fate: 'honoured',
    note: '1 (or a range from 1): one node; more is refused',
    value: 'minnodes[-maxnodes]',
  },
  {
    long: 'ntasks',
    short: 'n',
    arg: 'required',
    fate: 'honoured',
    note: 'tasks to run in parallel (SLURM_PROCID 0..n-1); default SLURM_NTASKS inside a job, else 1',
    value: 'number',
  },
  {
    long: 'ntasks-per-core',
    arg: 'required',
    fate: 'warned',
    note: 'Conductor counts CPUs, not cores',
    value: 'ntasks',
  },
  {
    long: 'ntasks-per-gpu',
    arg: 'required',
    fate: 'warned',
    note: 'the tasks share the GPUs of the job',
    value: 'ntasks',
  },
  {
    long: 'ntasks-per-node',
    arg: 'required',
    fate: 'honoured',
    note: 'the tasks when -n is not given (one node)',
    value: 'ntasks',
  },
  {
    long: 'ntasks-per-socket',
    arg: 'required',
    fate: 'warned',
    note: 'Conductor counts CPUs, not sockets',
    value: 'ntasks',
  },
  {
    long: 'open-mode',
    arg: 'required',
    fate: 'honoured',
    note: 'append or truncate the -o/-e files (default truncate)',
    value: 'append|truncate',
  },
  {
    long: 'output',
    short: 'o',
    arg: 'required',
    fate: 'honoured',
    note: "stdout to a file (%j %s %t %N %n %u %x %% expanded; %t: a file per task); outside a job: the job's",
    value: 'filename_pattern',
  },
  {
    long: 'overcommit',
    short: 'O',
    arg: 'none',
    fate: 'honoured',
    note: "more tasks × CPUs than the job's CPUs: not checked",
  },
  { long: 'overlap', arg: 'none', fate: 'honoured', note: "steps share their job's CPUs: always so here" },
  {
    long: 'oversubscribe',
    short: 's',
    arg: 'none',
    fate: 'warned',
    note: 'Conductor does not share CPUs between jobs',
  },
  {
    long: 'partition',
    short: 'p',
    arg: 'required',
    fate: 'honoured',
    note: "outside a job: the job's partition (a comma list: the first that can run it)",
    value: 'partition_names',
  },
  {
    long: 'power',
    arg: 'required',
    fate: 'warned',
    note: 'Conductor has no power management',
    value: 'flags',
  },
  {
    long: 'prefer',
    arg: 'required',
    fate: 'warned',
    note: 'only required features (-C) choose nodes',
    value: 'list',
  },
  {
    long: 'preserve-env',
    short: 'E',
    arg: 'none',
    fate: 'warned',
    note: "SLURM_NTASKS and SLURM_NNODES are always the step's own here",
  },
  {
    long: 'priority',
    arg: 'required',
    fate: 'honoured',
    note: "outside a job: the job's priority",
    value: 'value',
  },
  {
    long: 'profile',
    arg: 'required',
    fate: 'warned',
    note: 'Conductor has no HDF5 profiling (MaxRSS is recorded)',
    value: 'type',
  },
  {
    long: 'prolog',
    arg: 'required',
    fate: 'refused',
    note: 'run it before srun in the job script',
    value: 'executable',
  },
  {
    long: 'propagate',
    arg: 'optional',
    fate: 'warned',
    note: 'tasks get the limits srun runs with',
    value: 'rlimit',
  },
  { long: 'pty', arg: 'none', fate: 'refused', note: 'tasks have no terminal through Conductor' },
  {
    long: 'qos',
    short: 'q',
    arg: 'required',
    fate: 'honoured',
    note: "outside a job: the job's QOS (SLURM_JOB_QOS)",
    value: 'qos',
  },
  {
    long: 'quiet',
    short: 'Q',
    arg: 'none',
    fate: 'honoured',
    note: 'no srun informational messages (errors still print)',
  },
  { long: 'quit-on-interrupt', arg: 'none', fate: 'warned', note: 'Ctrl-C is passed to the tasks as it is' },
  { long: 'reboot', arg: 'none', fate: 'warned', note: 'Conductor does not reboot nodes' },
  { long: 'relative', short: 'r', arg: 'required', fate: 'warned', note: NO_EFFECT_ONE_NODE, value: 'n' },
  {
    long: 'reservation',
    arg: 'required',
    fate: 'refused',
    note: 'srun does not pass a reservation yet (sbatch --reservation does)',
    value: 'reservation_names',
  },
  {
    long: 'resv-ports',
    arg: 'optional',
    fate: 'warned',
    note: 'Conductor reserves no ports',
    value: 'count',
  },
  { long: 'send-libs', arg: 'optional', fate: 'warned', note: 'no --bcast here', value: 'yes|no' },
  {
    long: 'signal',
    arg: 'required',
    fate: 'honoured',
    note: "outside a job: [R:]sig[@seconds] before the time limit (a step gets its job's)",
    value: '[R:]sig_num[@sig_time]',
  },
  { long: 'slurmd-debug', arg: 'required', fate: 'warned', note: 'there is no slurmd', value: 'level' },
  {
    long: 'sockets-per-node',
    arg: 'required',
    fate: 'warned',
    note: 'Conductor counts CPUs, not sockets',
    value: 'sockets',
  },
  { long: 'spread-job', arg: 'none', fate: 'warned', note: NO_EFFECT_ONE_NODE },
  { long: 'switches', arg: 'required', fate: 'warned', note: NO_EFFECT_ONE_NODE, value: 'count[@max-time]' },
  {
    long: 'task-epilog',
    arg: 'required',
    fate: 'refused',
    note: 'run it in the command itself',
    value: 'executable',
  },
  {
    long: 'task-prolog',
    arg: 'required',
    fate: 'refused',
    note: 'run it in the command itself',
    value: 'executable',
  },
  {
    long: 'test-only',
    arg: 'none',
    fate: 'refused',
    note: '`sbatch --test-only` says where and when a job would start',
  },
  {
    long: 'thread-spec',
    arg: 'required',
    fate: 'warned',
    note: 'Conductor reserves no threads for system use',
    value: 'num',
  },
  {
    long: 'threads',
    short: 'T',
    arg: 'required',
    fate: 'warned',
    note: 'tasks are started at once here',
    value: 'nthreads',
  },
  {
    long: 'threads-per-core',
    arg: 'required',
    fate: 'warned',
    note: 'Conductor counts CPUs, not threads',
    value: 'threads',
  },
  {
    long: 'time',
    short: 't',
    arg: 'required',
    fate: 'honoured',
    note: "outside a job: the job's time limit (a step ends with its job)",
    value: 'time',
  },
  {
    long: 'time-min',
    arg: 'required',
    fate: 'warned',
    note: 'the time limit is the one given with -t',
    value: 'time',
  },
  {
    long: 'tmp',
    arg: 'required',
    fate: 'warned',
    note: 'Conductor does not count temporary disk',
    value: 'size',
  },
  { long: 'uid', arg: 'required', fate: 'refused', note: 'the API token says who you are', value: 'user' },
  {
    long: 'unbuffered',
    short: 'u',
    arg: 'none',
    fate: 'honoured',
    note: 'output is passed on as it comes: always so here',
  },
  { long: 'usage', arg: 'none', fate: 'honoured', note: 'a short usage message' },
  { long: 'use-min-nodes', arg: 'none', fate: 'warned', note: NO_EFFECT_ONE_NODE },
  {
    long: 'verbose',
    short: 'v',
    arg: 'none',
    fate: 'honoured',
    note: 'says what srun starts, or which control plane it asks',
  },
  { long: 'version', short: 'V', arg: 'none', fate: 'honoured', note: `prints "slurm ${SLURM_VERSION}"` },
  {
    long: 'wait',
    short: 'W',
    arg: 'required',
    fate: 'warned',
    note: 'every task runs until it ends',
    value: 'seconds',
  },
  {
    long: 'wckey',
    arg: 'required',
    fate: 'warned',
    note: 'Conductor has no workload characterization keys',
    value: 'wckey',
  },
  {
    long: 'x11',
    arg: 'optional',
    fate: 'refused',
    note: 'tasks have no display through Conductor',
    value: 'all|first|last',
  },
];

const USAGE = `Usage: srun [-N nnodes] [-n ntasks] [-c ncpus] [-l] [-K] [-o out] [-e err] [--export=...] executable [args...]\n`;

const value = (parsed: Parsed, long: string) => lastValue(parsed.options, long)?.value;

function positive(text: string, option: string): number {
  if (!/^\d+$/.test(text) || Number(text) < 1)
    throw new SlurmError(`Invalid numeric value "${text}" for ${option}`);
  return Number(text);
}

/** The task count, CPUs per task and node count asked for (inside a job, the job's are the defaults). */
function sizes(parsed: Parsed, env: NodeJS.ProcessEnv) {
  const nodes = value(parsed, 'nodes');
  if (nodes !== undefined && !/^1(-\d+)?$/.test(nodes)) {
    throw new SlurmError(`--nodes=${nodes}: a Conductor job runs on one node`);
  }
  const n = value(parsed, 'ntasks') ?? value(parsed, 'ntasks-per-node') ?? env.SLURM_NTASKS;
  const c = value(parsed, 'cpus-per-task') ?? env.SLURM_CPUS_PER_TASK;
  return {
    ntasks: n === undefined ? 1 : positive(n, '--ntasks'),
    cpusPerTask: c === undefined ? 1 : positive(c, '--cpus-per-task'),
    cpusGiven: value(parsed, 'cpus-per-task') !== undefined,
  };
}

/** Variables per `--export`: ALL (the default) / NONE, with VAR and VAR=value additions. */
function exported(
  spec: string | undefined,
  env: NodeJS.ProcessEnv,
): { env: Record<string, string>; mode: string } {
  const source = Object.fromEntries(
    Object.entries(env).filter((e): e is [string, string] => e[1] !== undefined),
  );
  if (spec === undefined) return { env: source, mode: 'ALL' };
  const items = spec.split(',').filter((i) => i !== '');
  const base = items[0]?.toUpperCase();
  const out: Record<string, string> =
    base === 'ALL'
      ? { ...source }
      : Object.fromEntries(Object.entries(source).filter(([k]) => k.startsWith('SLURM_')));
  for (const item of items) {
    if (/^(ALL|NONE)$/i.test(item)) continue;
    const eq = item.indexOf('=');
    if (eq >= 0) out[item.slice(0, eq)] = item.slice(eq + 1);
    else if (source[item] !== undefined) out[item] = source[item];
  }
  return { env: out, mode: spec };
}

const SIGNAL_WORDS: Record<string, string> = {
  SIGKILL: 'Killed',
  SIGTERM: 'Terminated',
  SIGINT: 'Interrupt',
  SIGSEGV: 'Segmentation fault',
  SIGABRT: 'Aborted',
  SIGBUS: 'Bus error',
  SIGHUP: 'Hangup',
  SIGPIPE: 'Broken pipe',
};

/** A step id of this job: the next free one (steps of a job on its node count from 0, as Slurm's). */
function nextStepId(jobId: string): number {
  const dir = join(tmpdir(), `conductor-steps-${jobId.replace(/[^0-9A-Za-z_.-]/g, '_')}`);
  mkdirSync(dir, { recursive: true });
  for (let id = 0; ; id++) {
    try {
      openSync(join(dir, String(id)), 'wx');
      return id;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
  }
}

/** The process and its descendants, through /proc (without it: the process alone). */
function processTree(pid: number): number[] {
  const children = new Map<number, number[]>();
  try {
    for (const entry of readdirSync('/proc')) {
      if (!/^\d+$/.test(entry)) continue;
      try {
        const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
        const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
        children.set(ppid, [...(children.get(ppid) ?? []), Number(entry)]);
      } catch {
        // The process ended while the list was read.
      }
    }
  } catch {
    // No /proc.
  }
  const all: number[] = [];
  for (let queue = [pid]; queue.length > 0; ) {
    const next = queue.shift() as number;
    all.push(next);
    queue = queue.concat(children.get(next) ?? []);
  }
  return all;
}

const signal = (pid: number, name: NodeJS.Signals) => {
  try {
    process.kill(pid, name);
  } catch {
    // Already gone.
  }
};

/**
 * Kills a task and what it started. The tasks share srun's process group (so that ending the job ends
 * them), so the descendants are found through /proc, each stopped first so that none forks unseen.
 */
function killTree(pid: number) {
  const stopped = new Set<number>();
  for (;;) {
    const fresh = processTree(pid).filter((p) => !stopped.has(p));
    if (fresh.length === 0) break;
    for (const p of fresh) {
      signal(p, 'SIGSTOP');
      stopped.add(p);
    }
  }
  for (const p of stopped) signal(p, 'SIGKILL');
}

/** An -o/-e/-i pattern for one task: %% %j %J %s %t %N %n %u %x (a number after % zero-pads). */
function expand(pattern: string, vars: Record<string, string>): string {
  return pattern.replace(/%(\d*)([%jJsStNnux])/g, (whole, digits: string, letter: string) => {
    if (letter === '%') return '%';
    const text = vars[letter];
    return text === undefined ? whole : text.padStart(Number(digits || 0), '0');
  });
}

interface Sink {
  write(text: string): void;
}

/** Output of one task's stream: to srun's own (or a file), whole lines prefixed when labelled. */
function taskSink(target: Sink, label: string | undefined) {
  let partial = '';
  return {
    data(text: string) {
      if (label === undefined) {
        target.write(text);
        return;
      }
      const lines = (partial + text).split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) target.write(`${label}${line}\n`);
    },
    end() {
      if (label !== undefined && partial !== '') target.write(`${label}${partial}\n`);
      partial = '';
    },
  };
}

/** A task's file, or srun's error naming it as slurmstepd does. */
function openFile(path: string, flags: string, what: 'input' | 'output'): number {
  try {
    return openSync(path, flags);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const why =
      code === 'ENOENT'
        ? 'No such file or directory'
        : code === 'EACCES'
          ? 'Permission denied'
          : (error as Error).message;
    throw new SlurmError(`Could not open ${what} file ${path}: ${why}`);
  }
}

/** Runs the step's tasks on this node; resolves with srun's exit code. */
async function runStep(command: string[], parsed: Parsed, io: Io, env: NodeJS.ProcessEnv): Promise<number> {
  const jobId = env.SLURM_JOB_ID as string;
  const asked = value(parsed, 'jobid');
  if (asked !== undefined && asked !== jobId) {
    throw new SlurmError(`--jobid=${asked}: srun runs steps only of the job it runs in (${jobId})`);
  }
  const node = env.SLURMD_NODENAME ?? hostname();
  const nodelist = value(parsed, 'nodelist');
  if (nodelist !== undefined && nodelist !== node) {
    throw new SlurmError(
      `Unable to create step for job ${jobId}: Requested node configuration is not available`,
    );
  }
  const { ntasks, cpusPerTask, cpusGiven } = sizes(parsed, env);
  const allocated = Number(env.SLURM_CPUS_ON_NODE ?? env.SLURM_JOB_CPUS_PER_NODE ?? Number.NaN);
  if (!has(parsed, 'overcommit') && Number.isFinite(allocated) && ntasks * cpusPerTask > allocated) {
    throw new SlurmError(`Unable to create step for job ${jobId}: More processors requested than permitted`);
  }
  const bind = value(parsed, 'cpu-bind');
  if (bind !== undefined) {
    const types = bind.split(',').filter((t) => !/^(q|quiet|v|verbose|none|no)$/i.test(t));
    if (types.length > 0 && !has(parsed, 'quiet')) {
      io.err(`srun: warning: --cpu-bind=${types.join(',')} is not applied: ${NO_BINDING}\n`);
    }
  }
  const mpi = value(parsed, 'mpi');
  if (mpi !== undefined && mpi !== 'none' && !has(parsed, 'quiet')) {
    io.err(`srun: warning: --mpi=${mpi}: Conductor has no MPI plugin; the tasks start without PMI\n`);
  }
  const stepId = nextStepId(jobId);
  const { env: base } = exported(value(parsed, 'export'), env);
  const cwd =
    value(parsed, 'chdir') === undefined ? process.cwd() : resolve(value(parsed, 'chdir') as string);
  const label = has(parsed, 'label');
  const killOnBadExit = has(parsed, 'kill-on-bad-exit') && value(parsed, 'kill-on-bad-exit') !== '0';
  const flags = value(parsed, 'open-mode') === 'append' ? 'a' : 'w';
  const files = new Map<string, WriteStream>();
  const fileSink = (pattern: string | undefined, task: number): Sink | undefined => {
    if (pattern === undefined || pattern === 'none') return undefined;
    const path = resolve(
      cwd,
      expand(pattern, {
        j: jobId,
        J: `${jobId}.${stepId}`,
        s: String(stepId),
        t: String(task),
        N: node,
        n: '0',
        u: env.SLURM_JOB_USER ?? env.USER ?? '',
        x: env.SLURM_JOB_NAME ?? '',
      }),
    );
    let stream = files.get(path);
    if (!stream) {
      stream = createWriteStream('', { fd: openFile(path, flags, 'output') });
      files.set(path, stream);
    }
    return stream;
  };
  const input = value(parsed, 'input');
  const inputFile = (pattern: string, task: number) => {
    const path = resolve(
      cwd,
      expand(pattern, { t: String(task), j: jobId, s: String(stepId), N: node, n: '0' }),
    );
    return openFile(path, 'r', 'input');
  };
  const width = String(ntasks - 1).length;
  const name = value(parsed, 'job-name');
  if (has(parsed, 'verbose'))
    io.err(`srun: launching StepId=${jobId}.${stepId} with ${ntasks} task(s) on ${node}\n`);
  // Every file is opened before any task starts: one that cannot be is srun's error, with nothing running.
  const sinks = Array.from({ length: ntasks }, (_, task) => {
    const out = fileSink(value(parsed, 'output'), task);
    const reader =
      input === undefined || input === 'all' ? 0 : /^\d+$/.test(input) ? Number(input) : undefined;
    const stdin: 'inherit' | 'ignore' | number =
      reader !== undefined
        ? task === reader
          ? 'inherit'
          : 'ignore'
        : input === 'none'
          ? 'ignore'
          : inputFile(input as string, task);
    return { out, err: fileSink(value(parsed, 'error'), task) ?? out, stdin };
  });
  const children: ChildProcess[] = [];
  const results = await Promise.all(
    Array.from({ length: ntasks }, (_, task) => {
      const taskEnv: Record<string, string> = {
        ...base,
        SLURM_PROCID: String(task),
        SLURM_LOCALID: String(task),
        SLURM_NODEID: '0',
        SLURM_STEP_ID: String(stepId),
        SLURM_STEPID: String(stepId),
        SLURM_STEP_NUM_TASKS: String(ntasks),
        SLURM_STEP_NUM_NODES: '1',
        SLURM_STEP_NODELIST: node,
        SLURM_STEP_TASKS_PER_NODE: String(ntasks),
        SLURM_NTASKS: String(ntasks),
        SLURM_NPROCS: String(ntasks),
        SLURM_NNODES: '1',
        ...(cpusGiven ? { SLURM_CPUS_PER_TASK: String(cpusPerTask) } : {}),
        ...(name === undefined ? {} : { SLURM_STEP_NAME: name }),
      };
      const prefix = label ? `${String(task).padStart(width)}: ` : undefined;
      const out = taskSink(sinks[task]?.out ?? { write: (t) => io.out(t) }, prefix);
      const err = taskSink(sinks[task]?.err ?? { write: (t) => io.err(t) }, prefix);
      return new Promise<{ task: number; code: number | null; signal: NodeJS.Signals | null }>((done) => {
        const child = spawn(command[0] as string, command.slice(1), {
          cwd,
          env: taskEnv,
          stdio: [sinks[task]?.stdin ?? 'ignore', 'pipe', 'pipe'],
        });
        children.push(child);
        child.stdout?.setEncoding('utf8').on('data', (t: string) => out.data(t));
        child.stderr?.setEncoding('utf8').on('data', (t: string) => err.data(t));
        child.on('error', (error: NodeJS.ErrnoException) => {
          const why =
            error.code === 'ENOENT'
              ? 'No such file or directory'
              : error.code === 'EACCES'
                ? 'Permission denied'
                : error.message;
          io.err(`slurmstepd: error: execve(): ${command[0]}: ${why}\n`);
          done({ task, code: 2, signal: null });
        });
        child.on('close', (code, signal) => {
          out.end();
          err.end();
          if (killOnBadExit && (code !== 0 || signal)) {
            for (const other of children) if (other !== child && other.pid) killTree(other.pid);
          }
          done({ task, code, signal });
        });
      });
    }),
  );
  await Promise.all([...files.values()].map((s) => new Promise((r) => s.end(r))));
  let exit = 0;
  for (const { task, code, signal } of results) {
    if (signal) {
      io.err(`srun: error: ${node}: task ${task}: ${SIGNAL_WORDS[signal] ?? signal}\n`);
      exit = Math.max(exit, 128 + (constants.signals[signal] ?? 0));
    } else if (code !== 0 && code !== null) {
      io.err(`srun: error: ${node}: task ${task}: Exited with exit code ${code}\n`);
      exit = Math.max(exit, code);
    }
  }
  return exit;
}

const shellQuote = (word: string) =>
  /^[A-Za-z0-9_@%+=:,./-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;

/**
 * The batch script of a job srun submits: the command itself, or with several tasks (or labels) each a copy
 * in the background with its task ids, and the highest exit code as the script's.
 */
export function stepScript(command: string[], ntasks: number, label: boolean): string {
  const line = command.map(shellQuote).join(' ');
  if (ntasks === 1 && !label) return `#!/bin/bash\nexec ${line}\n`;
  const labelled = label ? `exec > >(sed -u "s/^/$i: /") 2> >(sed -u "s/^/$i: /" >&2); ` : '';
  return [
    '#!/bin/bash',
    `for ((i = 0; i < ${ntasks}; i++)); do`,
    `  ( ${labelled}export SLURM_PROCID=$i SLURM_LOCALID=$i SLURM_NODEID=0 SLURM_STEP_ID=0 SLURM_STEPID=0 SLURM_STEP_NUM_TASKS=${ntasks}; exec ${line} ) &`,
    'done',
    'rc=0',
    `for ((i = 0; i < ${ntasks}; i++)); do wait -n; code=$?; if ((code > rc)); then rc=$code; fi; done`,
    'exit $rc',
    '',
  ].join('\n');
}

/** `--signal=[{R|B}:]sig[@seconds]` as the submit body takes it. */
function signalOf(spec: string) {
  const m = /^(?:([RB]+):)?([A-Za-z0-9]+)(?:@(\d+))?$/.exec(spec);
  if (!m) throw new SlurmError(`Invalid --signal specification: ${spec}`);
  return {
    signal: (m[2] as string).replace(/^SIG/i, ''),
    before_s: m[3] === undefined ? 60 : Number(m[3]),
    batch_only: (m[1] ?? '').includes('B'),
  };
}

/** The submit body of the job srun runs outside an allocation. */
export function submitBody(command: string[], parsed: Parsed, env: NodeJS.ProcessEnv, cwd: string) {
  const { ntasks, cpusPerTask } = sizes(parsed, env);
  const { env: environment, mode } = exported(value(parsed, 'export'), env);
  const given = (long: string, field: string) => {
    const v = value(parsed, long);
    return v === undefined ? {} : { [field]: v };
  };
  const gpus = value(parsed, 'gpus') ?? value(parsed, 'gpus-per-node');
  const signal = value(parsed, 'signal');
  const priority = value(parsed, 'priority');
  return {
    script: stepScript(command, ntasks, has(parsed, 'label')),
    cpus: ntasks * cpusPerTask,
    ntasks,
    cpus_per_task: cpusPerTask,
    name: value(parsed, 'job-name') ?? (command[0] as string).split('/').pop(),
    work_dir: resolve(cwd, value(parsed, 'chdir') ?? '.'),
    submit_dir: cwd,
    environment,
    export_env: mode,
    ...given('account', 'account'),
    ...given('partition', 'partition'),
    ...given('time', 'time_limit'),
    ...given('mem', 'memory_per_node'),
    ...given('mem-per-cpu', 'memory_per_cpu'),
    ...given('gres', 'gres'),
    ...given('constraint', 'constraint'),
    ...given('nodelist', 'nodelist'),
    ...given('exclude', 'exclude'),
    ...given('qos', 'qos'),
    ...given('comment', 'comment'),
    ...given('output', 'stdout'),
    ...given('error', 'stderr'),
    ...given('input', 'stdin'),
    ...given('open-mode', 'open_mode'),
    ...(gpus === undefined ? {} : { gpus: /^\d+$/.test(gpus) ? Number(gpus) : gpus }),
    ...(has(parsed, 'exclusive') ? { exclusive: true } : {}),
    ...(has(parsed, 'hold') ? { hold: true } : {}),
    ...(signal === undefined ? {} : { signal: signalOf(signal) }),
    ...(priority === undefined ? {} : { priority: Number(priority) }),
  };
}

/** Outside a job: submit the command as a job, stream its output, exit with its code. */
async function runAsJob(command: string[], parsed: Parsed, io: Io, env: NodeJS.ProcessEnv): Promise<number> {
  if (value(parsed, 'jobid') !== undefined) {
    throw new SlurmError(
      '--jobid: srun runs steps of a job only inside it (SLURM_JOB_ID); run srun in the job script',
    );
  }
  const body = submitBody(command, parsed, env, process.cwd());
  const api = apiClient(env);
  if (has(parsed, 'verbose')) io.err(`srun: submitting to ${api.config.url}\n`);
  const job = await api.request<{ id: number; state: string }>('POST', '/api/v1/jobs/submit', body);
  if (job.state === 'PENDING' && !has(parsed, 'quiet'))
    io.err(`srun: job ${job.id} queued and waiting for resources\n`);
  // As Slurm's srun: interrupted, it ends its job (which then ends the stream below).
  const cancel = () => {
    io.err('srun: forcing job termination\n');
    api.request('POST', `/api/v1/jobs/${job.id}/cancel`).catch((error: Error) => {
      io.err(`srun: error: cannot cancel job ${job.id}: ${error.message}\n`);
    });
  };
  process.on('SIGINT', cancel).on('SIGTERM', cancel);
  let ended: Awaited<ReturnType<typeof followJob>>;
  try {
    ended = await followJob(api, job.id, io);
  } finally {
    process.off('SIGINT', cancel).off('SIGTERM', cancel);
  }
  const code = jobExitStatus(ended);
  if (code !== 0)
    io.err(`srun: error: job ${job.id} ${ended.state} (exit code ${ended.exit_code ?? 'none'})\n`);
  return code;
}

export async function runSrun(args: string[], io: Io, env: NodeJS.ProcessEnv): Promise<number> {
  return guarded('srun', io, async () => {
    const parsed = parseOptions('srun', args, SRUN_OPTIONS, io, { stopAtPositional: true });
    if (has(parsed, 'help')) {
      io.out(`${USAGE}\n${optionHelp(SRUN_OPTIONS)}\n`);
      return 0;
    }
    if (has(parsed, 'usage')) {
      io.out(USAGE);
      return 0;
    }
    if (has(parsed, 'version')) {
      io.out(`slurm ${SLURM_VERSION}\n`);
      return 0;
    }
    if (parsed.positionals.length === 0) throw new SlurmError('No command given to execute.');
    return env.SLURM_JOB_ID === undefined
      ? runAsJob(parsed.positionals, parsed, io, env)
      : runStep(parsed.positionals, parsed, io, env);
  });
}
