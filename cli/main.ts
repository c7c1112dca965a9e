/**
 * `conductor`: the command line for people and scripts, over the HTTP API. This module and what it imports
 * use Node built-ins and fetch only (test/cli/module-graph.test.ts checks it), so the CLI ships alone as the
 * `conductor-cli` package (cli/package.json, built from cli/standalone.ts). `conductor token|webhook` work
 * on the database: the repository's own `conductor` (cli/conductor.ts) passes them in as `databaseCommands`,
 * which loads cli/commands.ts when they run; without it (the package) they say where to run them.
 *
 * Exit codes: 0 ok, 1 an API error or a failed job, 2 a usage error; `submit --wait`/`--follow` exit with
 * the job's own code (a signal N is 128+N).
 */
import { userInfo } from 'node:os';
import { resolve } from 'node:path';
import { type ParseArgsConfig, parseArgs } from 'node:util';
import { ApiError, Client, resolveConfig } from './api.ts';
import { followJob } from './follow.ts';
import { type Io, jobExitStatus, UsageError } from './io.ts';
import { currentEntry, runSlurm, SLURM_COMMANDS, writeSlurmCommands } from './slurm/index.ts';
import { buildSubmission, readScript, requestLine, submitOrigin, testOnly } from './slurm/sbatch.ts';

export { type Io, jobExitStatus };

interface Job {
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
  script?: string;
  environment?: Record<string, string>;
  memory_mb?: number | null;
  gpus?: number;
  gpu_type?: string | null;
  gres?: Record<string, number>;
  constraint?: string | null;
  exclusive?: boolean;
  nodelist?: string[] | null;
  exclude?: string[];
  allocated_gpus?: number[];
  reason_detail?: string | null;
}

interface Partition {
  name: string;
  default: boolean;
  state: string;
  live_nodes: string[];
  total_cpus: number;
  [field: string]: unknown;
}

/** A partition as the dashboard sums it (GET /api/v1/dashboard): what its live nodes hold. */
interface PartitionUsage {
  name: string;
  live_nodes: number;
  total_cpus: number;
  allocated_cpus: number;
  total_gpus: number;
  allocated_gpus: number;
}

interface Explanation {
  job_id: number;
  state: string;
  reason: string | null;
  reason_detail: string | null;
  nodes: { node: string; fits: boolean; why: string[] }[];
}

interface Worker {
  worker_id: string;
  cpus: number;
  allocated_cpus: number;
  available_cpus?: number;
  status: string;
  live?: boolean;
  last_heartbeat: string;
}

const FINAL = new Set(['COMPLETED', 'FAILED', 'CANCELLED', 'TIMEOUT', 'NODE_FAIL', 'OUT_OF_MEMORY']);

/** One run of a job on a node, as GET /api/v1/jobs/:id shows it. */
interface Attempt {
  attempt: number;
  node: string | null;
  start_time: string | null;
  end_time: string | null;
  state: string;
  exit_code: string | null;
  requeued: boolean;
}

/** What a job asked for beyond CPUs, and why it waits: `show` prints these only when they say something. */
export const SHOWN_WHEN_SET = new Set([
  'memory_mb',
  'memory_per_cpu',
  'ntasks',
  'cpus_per_task',
  'gpus',
  'gpu_type',
  'gres',
  'constraint',
  'exclusive',
  'nodelist',
  'exclude',
  'allocated_gpus',
  'reason_detail',
]);

function isSet(value: unknown): boolean {
  if (value === null || value === undefined || value === false || value === 0 || value === '') return false;
  if (Array.isArray(value)) return value.length > 0;
  if (typeof value === 'object') return Object.keys(value).length > 0;
  return true;
}

/** squeue's NODELIST(REASON): the node, or for a pending job its reason code in parentheses. */
function nodeOrReason(job: { state: string; node: string | null; reason: string | null }): string {
  if (job.state === 'PENDING') return `(${job.reason || 'None'})`;
  return job.node ?? '';
}

const GLOBAL = `Global options (every command; before or after it):
  --url <url>       the control plane (else CONDUCTOR_URL, else "url" in ~/.config/conductor/config.json,
                    else http://localhost:8000)
  --token <token>   an API token (else CONDUCTOR_TOKEN, else "token" in the config file)
  -h, --help        this command's help`;

export const HELP: Record<string, string> = {
  '': `Usage: conductor <command> [options]

Commands:
  submit <script>       submit a batch script (#SBATCH / #CONDUCTOR directives honoured)
  jobs                  list jobs (like squeue)
  show <id>             one job, in full
  cancel <id>...        cancel jobs
  logs <id>             a job's output (-f: follow it live)
  hold <id>...          keep pending jobs from starting (scontrol hold)
  release <id>...       let held jobs start again (scontrol release)
  explain <id>          why a job waits, node by node
  nodes                 the compute nodes (like sinfo)
  drain <node>          stop placing jobs on a node (its jobs finish)
  undrain <node>        put a node back
  partitions            the partitions (like sinfo -s)
  partition <name> ...  show, create, change or delete a partition (admin)
  sacctmgr ...          accounts, users and their limits, as Slurm's sacctmgr (conductor sacctmgr --help)
  sprio                 pending jobs' priorities and their factors (Slurm's sprio; sprio --help)
  sshare                accounts' and users' fair-share (Slurm's sshare; sshare --help)
  slurm <cmd> ...       Slurm's own commands over Conductor: ${Object.keys(SLURM_COMMANDS).join(', ')}
  slurm-commands <dir>  write those commands into dir as executables (put dir first on PATH)
  token ...             API tokens, straight in the database (conductor token --help)
  webhook ...           webhooks, straight in the database

${GLOBAL}

Exit codes: 0 ok, 1 API error or failed job, 2 usage error; submit --wait exits with the job's code.

Examples:
  conductor submit job.sh --wait
  conductor jobs --state RUNNING,PENDING
  conductor logs 42 -f
`,
  submit: `Usage: conductor submit <script | -> [options]

Submits a batch script (a file, or - for stdin) with sbatch's options (Slurm 22.05: every one is honoured,
ignored with a warning, or refused; docs/slurm/sbatch.md lists them). Options may also be given as SBATCH_*
variables and in the script as #SBATCH or #CONDUCTOR lines before its first command; the command line wins
over SBATCH_* variables, which win over #CONDUCTOR lines, which win over #SBATCH lines. Every problem is
reported at once, a directive's with its line number.

  -c, --cpus-per-task <n>   CPUs per task (default 1)
  -n, --ntasks <n>          tasks (default 1); the job gets ntasks x cpus-per-task CPUs, on one node
      --cpus <n>            CPUs, directly
  -J, --job-name <name>     -A, --account <name>     -q, --qos <qos>     --comment <text>
  -t, --time <time>         time limit: minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS, UNLIMITED
  -b, --begin <time>        not before: now+1hour, 16:00, 2026-12-24T08:00, tomorrow, teatime...
  -H, --hold                submit it held (conductor release starts it)
  -p, --partition <name>    a partition, or a comma list (the first that can run the job)
  -D, --chdir <dir>         the job's working directory (relative: to this directory)
      --export <list>       ALL (this shell's variables but CONDUCTOR_*), NONE, or [ALL,]VAR[=value],...
                            (default: none sent)
      --env VAR[=value]     one variable (repeatable; a bare VAR takes this shell's value)
  -o, --output <pattern>    the job's stdout file, written by the agent (default slurm-%j.out in the
                            job's working directory; %j job id, %x job name, %u user, %N node...)
  -e, --error <pattern>     its stderr file (default: into the output file)
  -i, --input <pattern>     its stdin file (default /dev/null)
      --open-mode <mode>    append or truncate (default) the output files
      --signal <[B:]sig[@s]> send sig s seconds (default 60) before the time limit (B: the shell only)
      --requeue             put the job back in the queue if its node is lost (--no-requeue: don't)
      --max-requeues <n>    requeues at most (lost node, --retry-on-failure); default: the partition's
      --retry-on-failure    a non-zero exit puts it back in the queue too, while requeues are left
      --retry-backoff <s>   seconds a requeued job waits before it starts again (doubled each time)
      --crash-limit <n>     the n-th loss of its node while it runs ends it NODE_FAIL (0: none)
      --priority <n>
      --mem <size>          memory for the job (per node): MB, or with a unit K, M, G, T (4G, 512M)
      --mem-per-cpu <size>  memory per CPU instead (not with --mem, as in Slurm)
  -G, --gpus <[type:]n>     GPUs, any or of one type (2, a100:2); --gpus-per-node is the same here
      --gres <list>         generic resources: name[:type][:count],... (gpu:a100:2,nvme:1,license_matlab)
  -C, --constraint <expr>   node features: a&b (and), a|b (or), [a|b] (one of), parentheses
      --exclusive           the whole node to itself (--exclusive=user or =mcs: the same here)
  -w, --nodelist <hosts>    the node to run on (a hostlist: node[01-03],gpu01)
  -x, --exclude <hosts>     nodes not to run on
  -N, --nodes <n>           1 (or 1-1): each job runs on one node; more is refused
      --wrap <command>      run this command instead of a script
      --wait                wait for the job to end (a spinner on a terminal), exit with its exit code
      --follow              stream its output while it runs, then exit with its exit code
      --parsable            print the job id only
      --json                print the job as JSON
  -Q, --quiet               no warnings

${GLOBAL}

Examples:
  conductor submit train.sh                      # prints: Submitted batch job 42
  conductor submit -c 8 -J train -t 2:00:00 train.sh --wait
  conductor submit -c 8 --mem 32G -G a100:1 -p gpu -o train-%j.log train.sh
  echo 'echo hi' | conductor submit - --follow
`,
  jobs: `Usage: conductor jobs [--state S1,S2] [--me] [--limit N] [--json]

Lists jobs, newest first: JOBID NAME STATE CPUS TIME NODELIST(REASON). A pending job shows why it waits,
as squeue does: (Resources), (Priority), (PartitionDown)... (conductor show <id>: the reason in words).
  --state <list>   PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, TIMEOUT, NODE_FAIL, OUT_OF_MEMORY
                   (comma list)
  --me             only the jobs owned by your token's owner (CONDUCTOR_OWNER, else your user name)
  --limit <n>      at most n jobs (default 100)
  --json           the API's JSON

${GLOBAL}

Examples:
  conductor jobs
  conductor jobs --state RUNNING --json | jq '.jobs[].id'
`,
  show: `Usage: conductor show <id> [--json]

One job, with its script and environment. What it asked for beyond CPUs (memory_mb, memory_per_cpu, ntasks,
cpus_per_task, gpus, gpu_type, gres, constraint, exclusive, nodelist, exclude), its allocated_gpus and
reason_detail (why it waits, in words) are shown when set; --json has every field.

${GLOBAL}

Example:
  conductor show 42
`,
  cancel: `Usage: conductor cancel <id>...

Cancels jobs: pending ones at once, running ones are killed by their agent.

${GLOBAL}

Example:
  conductor cancel 42 43
`,
  logs: `Usage: conductor logs <id> [-f] [--tail <bytes>]

Prints a job's captured stdout (on stdout) and stderr (on stderr). The server keeps the last 1 MiB of
each; older output is marked as truncated.
  -f, --follow       stream new output until the job ends (then exit with its code)
      --tail <bytes> only the last bytes of each stream

${GLOBAL}

Examples:
  conductor logs 42
  conductor logs 42 -f
`,
  nodes: `Usage: conductor nodes [--all] [--json]

The compute nodes (like sinfo): NODE STATUS CPUS ALLOC FREE HEARTBEAT. Needs an admin token.
  --all    every node ever seen, down ones too

${GLOBAL}

Example:
  conductor nodes
`,
  drain: `Usage: conductor drain <node>

Stops placing jobs on a node; its running jobs finish. Needs an admin token.

${GLOBAL}

Example:
  conductor drain worker-node-01
`,
  hold: `Usage: conductor hold <id>...

Holds pending jobs (Slurm's scontrol hold): they stay in the queue, in their place, and do not start until
released. A job held by its owner shows (JobHeldUser), by an admin (JobHeldAdmin); only an admin releases
an admin's hold.

${GLOBAL}

Example:
  conductor hold 42 43
`,
  release: `Usage: conductor release <id>...

Releases held jobs (Slurm's scontrol release): they wait in the queue again, in their old place.

${GLOBAL}

Example:
  conductor release 42
`,
  explain: `Usage: conductor explain <id> [--json]

Why a job waits: its reason code and the reason in words, then every known node: whether the job could
start there now (FITS) and, when not, why (its partition, node list, features, sizes, what is free,
reservations, down).

${GLOBAL}

Example:
  conductor explain 42
`,
  partitions: `Usage: conductor partitions [--json]

The partitions, the default first (like sinfo -s): NAME STATE DEFAULT NODES CPUS GPUS, where NODES counts
the live nodes in it and CPUS and GPUS are allocated/total on them. --json: the API's partitions, with
their settings.

${GLOBAL}

Examples:
  conductor partitions
  conductor partitions --json | jq '.partitions[] | {name, max_time}'
`,
  partition: `Usage: conductor partition <name> [options]

With no option, shows the partition. With options, creates it or changes what is given (an admin token);
the rest stays as it was. --delete deletes it (no waiting or running job may name it; never the default).
  --state <state>              UP, DOWN (takes jobs, starts none), DRAIN (starts queued jobs, takes no
                               new ones) or INACTIVE
  --nodes <hostlist>           nodes in it besides those whose agents declare it (node[01-16],gpu01);
                               "" clears the list
  --max-time <time>            the longest time limit (minutes or a Slurm time: 1:30:00, 2-00:00:00)
  --default-time <time>        the time limit of jobs that give none
  --max-cpus-per-node <n>      at most n CPUs per job
  --def-mem-per-cpu <size>     memory per CPU of jobs that ask for none (MB, or 4G, 512M)
  --max-mem-per-cpu <size>     at most this memory per CPU
  --allow-accounts <a,b>       only jobs of these accounts (ALL: any account)
  --priority-tier <n>          jobs of a higher tier are served first
  --policy <pack|spread>       fill nodes one by one, or spread jobs over them
  --max-requeues <n>           automatic requeues at most of its jobs that set none
  --retry-on-failure <yes|no>  its jobs that set none are requeued after a non-zero exit
  --retry-backoff <s>          seconds before a requeued job of it may start again (doubled each time)
  --crash-limit <n>            the n-th loss of a node under one of its jobs ends the job NODE_FAIL
  --default                    make it the default partition (jobs that name none go there)
  --delete                     delete it
  --json                       print the partition as JSON
The limits take "none" (or UNLIMITED for times) to remove them; the retry options "none" to go back to
the cluster's settings.

${GLOBAL}

Examples:
  conductor partition gpu
  conductor partition gpu --nodes 'gpu[01-04]' --max-time 2-00:00:00 --def-mem-per-cpu 4G --policy spread
  conductor partition debug --state DOWN
  conductor partition old --delete
`,
  sprio: `Usage: conductor sprio [options]

Each pending job's multifactor priority and the factors it comes from (age, fair-share, job size, partition,
QOS, and the submitter's priority as NICE), weighted, in Slurm's sprio columns: Slurm's sprio itself, as
\`conductor slurm sprio\` runs it (\`conductor sprio --help\` lists its options: -l, -n, -w, -o, -S, -j, -u, -p).
See docs/priority.md.

${GLOBAL}

Examples:
  conductor sprio -l
  conductor sprio -w
`,
  sshare: `Usage: conductor sshare [options]

The association tree with each account's and user's shares, decayed usage and fair-share factor, computed
now, in Slurm's sshare columns: Slurm's sshare itself, as \`conductor slurm sshare\` runs it
(\`conductor sshare --help\` lists its options: -a, -A, -u, -U, -l, -m, -n, -p, -P, -o). See docs/accounts.md.

${GLOBAL}

Examples:
  conductor sshare -a
  conductor sshare -A physics -P
  conductor sshare -o Account,User,FairShare%12
`,
  slurm: `Usage: conductor slurm <command> [options]

Runs one of Slurm's commands over Conductor, with Slurm's own options and output (scripts and workflow
tools parse it): ${Object.keys(SLURM_COMMANDS).join(', ')}. \`conductor slurm <command> --help\` lists its options;
docs/slurm/<command>.md says what each one does here. Errors print as Slurm's do (\`sinfo: error: ...\`).

The control plane is found as for every command (CONDUCTOR_URL, CONDUCTOR_TOKEN, the config file); --url and
--token go before the Slurm command's name (conductor slurm --url <url> sinfo): after it, every option is
that command's own.

Examples:
  conductor slurm sinfo
  conductor slurm scontrol show job 42
  conductor slurm srun -n2 hostname
`,
  'slurm-commands': `Usage: conductor slurm-commands <dir>

Writes executables named ${Object.keys(SLURM_COMMANDS).join(', ')} into dir (created if missing), each
running \`conductor slurm <command>\` with this same node and conductor; put dir first on PATH and tools
that call Slurm's commands (snakemake, nextflow, scripts) run on Conductor. They find the control plane as
conductor does (CONDUCTOR_URL, CONDUCTOR_TOKEN, the config file).

${GLOBAL}

Example:
  conductor slurm-commands ~/.conductor/bin && export PATH=~/.conductor/bin:$PATH
`,
  undrain: `Usage: conductor undrain <node>

Puts a drained node back in service. Needs an admin token.

${GLOBAL}

Example:
  conductor undrain worker-node-01
`,
};

const COMMON = {
  url: { type: 'string' },
  token: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

function parse(
  args: string[],
  options: NonNullable<ParseArgsConfig['options']>,
  positionals: [number, number],
) {
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({ args, options: { ...COMMON, ...options }, strict: true, allowPositionals: true });
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  const values = parsed.values as Record<string, string | boolean | string[] | undefined>;
  if (!values.help) {
    const n = parsed.positionals.length;
    if (n < positionals[0] || n > positionals[1]) {
      throw new UsageError(
        positionals[0] === positionals[1]
          ? `expected ${positionals[0]} argument(s), got ${n}`
          : `expected at least ${positionals[0]} argument(s), got ${n}`,
      );
    }
  }
  return { values, positionals: parsed.positionals };
}

function jobId(text: string): number {
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(Number(text)) || Number(text) < 1) {
    throw new UsageError(`a job id is a positive whole number, got ${JSON.stringify(text)}`);
  }
  return Number(text);
}

function colours(io: Io, env: NodeJS.ProcessEnv, stream: 'out' | 'err' = 'out') {
  const on = (stream === 'out' ? io.isTTY : io.errIsTTY) === true && !env.NO_COLOR;
  const paint = (code: string) => (text: string) => (on ? `\x1b[${code}m${text}\x1b[0m` : text);
  const state = (s: string) =>
    s === 'COMPLETED' || s === 'ready'
      ? paint('32')(s)
      : s === 'RUNNING'
        ? paint('36')(s)
        : s === 'PENDING' || s === 'draining'
          ? paint('33')(s)
          : FINAL.has(s) || s === 'down'
            ? paint('31')(s)
            : s;
  return { bold: paint('1'), dim: paint('2'), state };
}

/** Elapsed time as squeue shows it: M:SS, H:MM:SS, D-HH:MM:SS. */
export function elapsed(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = String(s % 60).padStart(2, '0');
  if (d > 0) return `${d}-${String(h).padStart(2, '0')}:${String(m).padStart(2, '0')}:${sec}`;
  if (h > 0) return `${h}:${String(m).padStart(2, '0')}:${sec}`;
  return `${m}:${sec}`;
}

function jobTime(job: Job, now = Date.now()): string {
  if (!job.start_time) return '0:00';
  const end = job.end_time ? Date.parse(job.end_time) : now;
  return elapsed((end - Date.parse(job.start_time)) / 1000);
}

// biome-ignore lint/suspicious/noControlCharactersInRegex: escape sequences are measured without their codes
const ANSI = /\x1b\[[0-9;]*m/g;

function table(header: string[], rows: string[][]): string {
  const all = [header, ...rows];
  const width = (s: string) => s.replace(ANSI, '').length;
  const widths = header.map((_, i) => Math.max(...all.map((r) => width(r[i] ?? ''))));
  return `${all
    .map((r) =>
      r
        .map((cell, i) => cell + ' '.repeat(Math.max(0, (widths[i] ?? 0) - width(cell))))
        .join('  ')
        .trimEnd(),
    )
    .join('\n')}\n`;
}

/**
 * An object as aligned `key  value` lines (values in one column, two spaces after the longest key); an
 * object value (the environment) as its own heading with its keys indented below it, sorted.
 */
function keyValueLines(
  object: object,
  c: ReturnType<typeof colours>,
  indent = '',
  sortKeys = false,
): string[] {
  const entries = Object.entries(object);
  if (sortKeys) entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  const scalars = entries.filter(([, v]) => v === null || typeof v !== 'object' || Array.isArray(v));
  const width = Math.max(0, ...scalars.map(([k]) => k.length)) + 2;
  const lines: string[] = [];
  for (const [key, value] of entries) {
    if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
      const nested = keyValueLines(value, c, `${indent}  `, true);
      lines.push(`${indent}${c.bold(key)}${nested.length === 0 ? `  ${c.dim('-')}` : ''}`, ...nested);
      continue;
    }
    const text =
      value === null || value === undefined
        ? c.dim('-')
        : value === ''
          ? '""'
          : key === 'state' && indent === ''
            ? c.state(String(value))
            : Array.isArray(value)
              ? value.map((v) => (typeof v === 'object' ? JSON.stringify(v) : String(v))).join(', ')
              : String(value);
    lines.push(`${indent}${c.bold(key.padEnd(width))}${text}`.trimEnd());
  }
  return lines;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls a job until it ends; on a terminal, a spinner on stderr says where it is. */
async function waitForJob(client: Client, id: number, io: Io, env: NodeJS.ProcessEnv): Promise<Job> {
  const frames = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
  const spin = io.errIsTTY === true;
  const c = colours(io, env, 'err');
  let frame = 0;
  let job = await client.request<Job>('GET', `/api/v1/jobs/${id}`);
  let lastPoll = Date.now();
  while (!FINAL.has(job.state)) {
    if (spin) {
      const where = job.node ? ` on ${job.node}` : job.reason ? ` (${job.reason})` : '';
      io.err(
        `\r\x1b[2K${frames[frame++ % frames.length]} job ${id} ${c.state(job.state)}${where} ${jobTime(job)}`,
      );
    }
    await sleep(spin ? 100 : 500);
    if (Date.now() - lastPoll >= (spin ? 1000 : 500)) {
      job = await client.request<Job>('GET', `/api/v1/jobs/${id}`);
      lastPoll = Date.now();
    }
  }
  if (spin) io.err('\r\x1b[2K');
  return job;
}

/** A followed job's end, with the reason the job has when it did not complete. */
async function withReason(api: Client, id: number, end: { state: string; exit_code: string | null }) {
  if (end.state === 'COMPLETED') return end;
  return { ...end, reason: (await api.request<Job>('GET', `/api/v1/jobs/${id}`)).reason };
}

/** How a waited-for job ended; one that did not complete says why, when the control plane knows. */
function finishedLine(
  job: { state: string; exit_code: string | null; reason?: string | null },
  id: number,
  io: Io,
  env: NodeJS.ProcessEnv,
) {
  const c = colours(io, env, 'err');
  const why = job.state !== 'COMPLETED' && job.reason ? `: ${job.reason}` : '';
  io.err(`Job ${id} ${c.state(job.state)} (exit code ${job.exit_code ?? 'none'})${why}\n`);
}

type Command = (args: string[], io: Io, env: NodeJS.ProcessEnv) => Promise<number>;

const client = (values: Record<string, unknown>, env: NodeJS.ProcessEnv) =>
  new Client(
    resolveConfig(
      {
        ...(typeof values.url === 'string' ? { url: values.url } : {}),
        ...(typeof values.token === 'string' ? { token: values.token } : {}),
      },
      env,
    ),
  );

/** --url and --token given before a Slurm command reach it as the environment it reads them from. */
function slurmEnvironment(args: string[], env: NodeJS.ProcessEnv) {
  const commandEnv = { ...env };
  let i = 0;
  for (; i < args.length; i++) {
    const match = /^--(url|token)(?:=(.*))?$/.exec(args[i] as string);
    if (!match) break;
    const value = match[2] ?? args[++i];
    if (value === undefined) throw new UsageError(`option --${match[1]} needs a value`);
    commandEnv[match[1] === 'url' ? 'CONDUCTOR_URL' : 'CONDUCTOR_TOKEN'] = value;
  }
  return { rest: args.slice(i), commandEnv };
}

const COMMANDS: Record<string, Command> = {
  async submit(args, io, env) {
    const submission = buildSubmission({ command: 'submit', args, env, readScript, origin: submitOrigin() });
    const { flags } = submission;
    if (flags.has('help') || flags.has('usage')) return help('submit', io);
    if (flags.has('version')) {
      io.out('conductor 0.1.0\n');
      return 0;
    }
    if (!flags.has('quiet')) {
      for (const warning of submission.warnings) io.err(`conductor submit: warning: ${warning}\n`);
    }
    if (submission.problems.length > 0) {
      for (const problem of submission.problems) io.err(`conductor submit: ${problem}\n`);
      io.err('(see conductor submit --help)\n');
      return 2;
    }
    const body = submission.body!;
    if (flags.has('verbose')) io.err(`conductor submit: ${requestLine(body)}\n`);
    const api = client({ url: submission.url, token: submission.token }, env);
    if (flags.has('test-only')) {
      io.err(`conductor submit: ${await testOnly(api, body)}\n`);
      return 0;
    }
    const job = await api.request<Job>('POST', '/api/v1/jobs/submit', body);
    const following = flags.has('wait') || flags.has('follow');
    if (flags.has('json')) io.out(`${JSON.stringify(job, null, 2)}\n`);
    else if (flags.has('parsable')) io.out(`${job.id}\n`);
    else if (following) io.err(`Submitted batch job ${job.id}\n`);
    else if (!flags.has('quiet')) io.out(`Submitted batch job ${job.id}\n`);
    if (!following) return 0;
    const ended = flags.has('follow')
      ? await withReason(api, job.id, await followJob(api, job.id, io))
      : await waitForJob(api, job.id, io, env);
    finishedLine(ended, job.id, io, env);
    return jobExitStatus(ended);
  },

  async jobs(args, io, env) {
    const { values } = parse(
      args,
      {
        state: { type: 'string' },
        me: { type: 'boolean' },
        limit: { type: 'string' },
        json: { type: 'boolean' },
      },
      [0, 0],
    );
    if (values.help) return help('jobs', io);
    const limit = values.limit === undefined ? 100 : Number(values.limit);
    if (!Number.isInteger(limit) || limit < 1 || limit > 1000) {
      throw new UsageError('--limit is a whole number from 1 to 1000');
    }
    const query = new URLSearchParams({ limit: String(limit) });
    if (typeof values.state === 'string') query.set('state', values.state.toUpperCase());
    const api = client(values, env);
    const result = await api.request<{ jobs: Job[]; next_before: number | null }>(
      'GET',
      `/api/v1/jobs?${query}`,
    );
    if (values.me) {
      const me = env.CONDUCTOR_OWNER || safeUser();
      result.jobs = result.jobs.filter((j) => j.owner === me || (j.owner === null && !api.config.token));
    }
    if (values.json) {
      io.out(`${JSON.stringify(result, null, 2)}\n`);
      return 0;
    }
    const c = colours(io, env);
    const now = Date.now();
    io.out(
      table(
        ['JOBID', 'NAME', 'STATE', 'CPUS', 'TIME', 'NODELIST(REASON)'],
        result.jobs.map((j) => [
          String(j.id),
          j.name,
          c.state(j.state),
          String(j.cpus),
          jobTime(j, now),
          nodeOrReason(j),
        ]),
      ),
    );
    return 0;
  },

  async show(args, io, env) {
    const { values, positionals } = parse(args, { json: { type: 'boolean' } }, [1, 1]);
    if (values.help) return help('show', io);
    const job = await client(values, env).request<Job>(
      'GET',
      `/api/v1/jobs/${jobId(positionals[0] as string)}`,
    );
    if (values.json) {
      io.out(`${JSON.stringify(job, null, 2)}\n`);
      return 0;
    }
    const { script, attempts, ...all } = job as Job & { attempts?: Attempt[] };
    const fields = Object.fromEntries(
      Object.entries(all).filter(([key, value]) => !SHOWN_WHEN_SET.has(key) || isSet(value)),
    );
    const lines = keyValueLines(fields, colours(io, env));
    // Each run on a node, first to last: number, node, start - end, how it ended, exit code.
    if (attempts && attempts.length > 0) {
      const c = colours(io, env);
      const rows = attempts.map((a) => [
        String(a.attempt),
        a.node ?? '-',
        `${a.start_time ?? '-'} - ${a.end_time ?? '-'}`,
        a.state + (a.requeued ? ' (requeued)' : ''),
        a.exit_code ?? '-',
      ]);
      const widths = rows[0]!.map((_, k) => Math.max(...rows.map((r) => r[k]!.length)));
      lines.push(
        c.bold('attempts'),
        ...rows.map((r) => `  ${r.map((cell, k) => cell.padEnd(widths[k]!)).join('  ')}`.trimEnd()),
      );
    }
    if (script !== undefined) {
      lines.push(
        colours(io, env).bold('script'),
        ...script
          .replace(/\n$/, '')
          .split('\n')
          .map((l) => `  ${l}`),
      );
    }
    io.out(`${lines.join('\n')}\n`);
    return 0;
  },

  async cancel(args, io, env) {
    const { values, positionals } = parse(args, {}, [1, Number.MAX_SAFE_INTEGER]);
    if (values.help) return help('cancel', io);
    const ids = positionals.map(jobId);
    const api = client(values, env);
    let failed = 0;
    for (const id of ids) {
      try {
        const job = await api.request<Job>('POST', `/api/v1/jobs/${id}/cancel`);
        io.out(`Job ${id}: ${job.state === 'CANCELLED' ? 'cancelled' : 'cancel requested'}\n`);
      } catch (error) {
        if (!(error instanceof ApiError)) throw error;
        io.err(`conductor: job ${id}: ${error.message}\n`);
        failed++;
      }
    }
    return failed > 0 ? 1 : 0;
  },

  async logs(args, io, env) {
    const { values, positionals } = parse(
      args,
      { follow: { type: 'boolean', short: 'f' }, tail: { type: 'string' } },
      [1, 1],
    );
    if (values.help) return help('logs', io);
    const id = jobId(positionals[0] as string);
    let tail: number | undefined;
    if (values.tail !== undefined) {
      tail = Number(values.tail);
      if (!Number.isInteger(tail) || tail < 0) throw new UsageError('--tail is a number of bytes');
    }
    const api = client(values, env);
    if (values.follow) return jobExitStatus(await followJob(api, id, io, tail));
    type Stream = { content: string };
    const logs = await api.request<{ stdout: Stream; stderr: Stream }>(
      'GET',
      `/api/v1/jobs/${id}/logs${tail === undefined ? '' : `?tail=${tail}`}`,
    );
    io.out(logs.stdout.content);
    io.err(logs.stderr.content);
    return 0;
  },

  async nodes(args, io, env) {
    const { values } = parse(args, { all: { type: 'boolean' }, json: { type: 'boolean' } }, [0, 0]);
    if (values.help) return help('nodes', io);
    const { workers } = await client(values, env).request<{ workers: Worker[] }>(
      'GET',
      `/api/v1/workers${values.all ? '?all=true' : ''}`,
    );
    if (values.json) {
      io.out(`${JSON.stringify(workers, null, 2)}\n`);
      return 0;
    }
    const c = colours(io, env);
    const now = Date.now();
    io.out(
      table(
        ['NODE', 'STATUS', 'CPUS', 'ALLOC', 'FREE', 'HEARTBEAT'],
        workers.map((w) => [
          w.worker_id,
          c.state(w.live === false ? 'down' : w.status),
          String(w.cpus),
          String(w.allocated_cpus),
          String(w.available_cpus ?? Math.max(0, w.cpus - w.allocated_cpus)),
          `${elapsed((now - Date.parse(w.last_heartbeat)) / 1000)} ago`,
        ]),
      ),
    );
    return 0;
  },

  drain: (args, io, env) => setDrain('drain', args, io, env),
  undrain: (args, io, env) => setDrain('undrain', args, io, env),
  hold: (args, io, env) => setHold('hold', args, io, env),
  release: (args, io, env) => setHold('release', args, io, env),

  async explain(args, io, env) {
    const { values, positionals } = parse(args, { json: { type: 'boolean' } }, [1, 1]);
    if (values.help) return help('explain', io);
    const id = jobId(positionals[0] as string);
    const explanation = await client(values, env).request<Explanation>('GET', `/api/v1/jobs/${id}/explain`);
    if (values.json) {
      io.out(`${JSON.stringify(explanation, null, 2)}\n`);
      return 0;
    }
    const c = colours(io, env);
    const reason = explanation.reason ?? 'None';
    io.out(`Job ${id} ${c.state(explanation.state)}: ${reason}\n`);
    if (explanation.reason_detail) io.out(`  ${explanation.reason_detail}\n`);
    if (explanation.nodes.length === 0) {
      io.out('No node has registered yet.\n');
      return 0;
    }
    io.out(
      table(
        ['NODE', 'FITS', 'WHY'],
        explanation.nodes.map((n) => [n.node, n.fits ? 'yes' : 'no', n.why.join('; ')]),
      ),
    );
    return 0;
  },

  async partitions(args, io, env) {
    const { values } = parse(args, { json: { type: 'boolean' } }, [0, 0]);
    if (values.help) return help('partitions', io);
    const api = client(values, env);
    const [list, dashboard] = await Promise.all([
      api.request<{ partitions: Partition[] }>('GET', '/api/v1/partitions'),
      values.json
        ? undefined
        : api.request<{ partitions?: PartitionUsage[] }>('GET', '/api/v1/dashboard').catch(() => undefined),
    ]);
    if (values.json) {
      io.out(`${JSON.stringify(list, null, 2)}\n`);
      return 0;
    }
    const usage = new Map((dashboard?.partitions ?? []).map((p) => [p.name, p]));
    const c = colours(io, env);
    io.out(
      table(
        ['NAME', 'STATE', 'DEFAULT', 'NODES', 'CPUS', 'GPUS'],
        list.partitions.map((p) => {
          const u = usage.get(p.name);
          return [
            p.name,
            c.state(p.state),
            p.default ? 'yes' : 'no',
            String(u?.live_nodes ?? p.live_nodes.length),
            u ? `${u.allocated_cpus}/${u.total_cpus}` : String(p.total_cpus),
            u ? `${u.allocated_gpus}/${u.total_gpus}` : '-',
          ];
        }),
      ),
    );
    return 0;
  },

  async slurm(args, io, env) {
    const { rest, commandEnv } = slurmEnvironment(args, env);
    if (rest[0] === undefined || rest[0] === '-h' || rest[0] === '--help') return help('slurm', io);
    return runSlurm(rest, io, commandEnv);
  },

  async sprio(args, io, env) {
    const { rest, commandEnv } = slurmEnvironment(args, env);
    return runSlurm(['sprio', ...rest], io, commandEnv);
  },

  async sshare(args, io, env) {
    const { rest, commandEnv } = slurmEnvironment(args, env);
    return runSlurm(['sshare', ...rest], io, commandEnv);
  },

  async sacctmgr(args, io, env) {
    const { rest, commandEnv } = slurmEnvironment(args, env);
    return runSlurm(['sacctmgr', ...rest], io, commandEnv);
  },

  async 'slurm-commands'(args, io) {
    const { values, positionals } = parse(args, {}, [1, 1]);
    if (values.help) return help('slurm-commands', io);
    const dir = resolve(positionals[0] as string);
    for (const path of writeSlurmCommands(dir, currentEntry())) io.out(`${path}\n`);
    io.err(`Put them first on PATH:\n  export PATH=${dir}:$PATH\n`);
    return 0;
  },

  async partition(args, io, env) {
    const { values, positionals } = parse(args, PARTITION_OPTIONS, [1, 1]);
    if (values.help) return help('partition', io);
    const name = positionals[0] as string;
    const path = `/api/v1/partitions/${encodeURIComponent(name)}`;
    const body = partitionBody(values);
    const api = client(values, env);
    let partition: Partition;
    if (values.delete) {
      if (Object.keys(body).length > 0) throw new UsageError('--delete takes no other option');
      partition = await api.request<Partition>('DELETE', path);
      if (values.json) io.out(`${JSON.stringify(partition, null, 2)}\n`);
      else io.out(`Partition ${name} deleted\n`);
      return 0;
    }
    if (Object.keys(body).length === 0) {
      try {
        partition = await api.request<Partition>('GET', path);
      } catch (error) {
        if (error instanceof ApiError && error.status === 404) {
          throw new ApiError(`${error.message} (create it with an option, e.g. --state UP)`, 404, error.code);
        }
        throw error;
      }
    } else {
      partition = await api.request<Partition>('POST', path, body);
    }
    if (values.json) io.out(`${JSON.stringify(partition, null, 2)}\n`);
    else io.out(`${keyValueLines(partition, colours(io, env)).join('\n')}\n`);
    return 0;
  },
};

const PARTITION_OPTIONS = {
  state: { type: 'string' },
  nodes: { type: 'string' },
  'max-time': { type: 'string' },
  'default-time': { type: 'string' },
  'max-cpus-per-node': { type: 'string' },
  'def-mem-per-cpu': { type: 'string' },
  'max-mem-per-cpu': { type: 'string' },
  'allow-accounts': { type: 'string' },
  'priority-tier': { type: 'string' },
  policy: { type: 'string' },
  'max-requeues': { type: 'string' },
  'retry-on-failure': { type: 'string' },
  'retry-backoff': { type: 'string' },
  'crash-limit': { type: 'string' },
  default: { type: 'boolean' },
  delete: { type: 'boolean' },
  json: { type: 'boolean' },
} as const;

const PARTITION_STATES = ['UP', 'DOWN', 'DRAIN', 'INACTIVE'];
const NO_LIMIT = /^(none|unlimited|infinite)$/i;

/** The POST /api/v1/partitions/:name body of the options given (empty: none given). */
export function partitionBody(values: Record<string, unknown>): Record<string, unknown> {
  const body: Record<string, unknown> = {};
  const text = (key: string) => (typeof values[key] === 'string' ? (values[key] as string) : undefined);
  const state = text('state');
  if (state !== undefined) {
    if (!PARTITION_STATES.includes(state.toUpperCase())) {
      throw new UsageError(`--state is one of ${PARTITION_STATES.join(', ')}, got ${JSON.stringify(state)}`);
    }
    body.state = state.toUpperCase();
  }
  const nodes = text('nodes');
  if (nodes !== undefined) body.nodes = nodes.trim() === '' ? null : nodes.trim();
  const limit = (key: string, field: string) => {
    const value = text(key);
    if (value !== undefined) body[field] = NO_LIMIT.test(value.trim()) ? null : value.trim();
  };
  limit('max-time', 'max_time');
  limit('default-time', 'default_time');
  limit('def-mem-per-cpu', 'def_mem_per_cpu');
  limit('max-mem-per-cpu', 'max_mem_per_cpu');
  const whole = (key: string, field: string, nullable: boolean) => {
    const value = text(key);
    if (value === undefined) return;
    if (nullable && NO_LIMIT.test(value.trim())) {
      body[field] = null;
      return;
    }
    if (!/^\d+$/.test(value.trim()))
      throw new UsageError(`--${key} is a whole number, got ${JSON.stringify(value)}`);
    body[field] = Number(value.trim());
  };
  whole('max-cpus-per-node', 'max_cpus_per_node', true);
  whole('priority-tier', 'priority_tier', false);
  whole('max-requeues', 'max_requeues', true);
  whole('retry-backoff', 'retry_backoff_s', true);
  whole('crash-limit', 'crash_limit', true);
  const onFailure = text('retry-on-failure');
  if (onFailure !== undefined) {
    const word = onFailure.trim().toLowerCase();
    if (!['yes', 'no', 'none'].includes(word)) {
      throw new UsageError(`--retry-on-failure is yes, no or none, got ${JSON.stringify(onFailure)}`);
    }
    body.retry_on_failure = word === 'none' ? null : word === 'yes';
  }
  const accounts = text('allow-accounts');
  if (accounts !== undefined) {
    const list = accounts
      .split(',')
      .map((a) => a.trim())
      .filter((a) => a !== '');
    body.allow_accounts =
      list.length === 0 || (list.length === 1 && /^all$/i.test(list[0] as string)) ? null : list;
  }
  const policy = text('policy');
  if (policy !== undefined) {
    if (policy !== 'pack' && policy !== 'spread') {
      throw new UsageError(`--policy is pack or spread, got ${JSON.stringify(policy)}`);
    }
    body.policy = policy;
  }
  if (values.default === true) body.default = true;
  return body;
}

async function setHold(action: 'hold' | 'release', args: string[], io: Io, env: NodeJS.ProcessEnv) {
  const { values, positionals } = parse(args, {}, [1, Number.MAX_SAFE_INTEGER]);
  if (values.help) return help(action, io);
  const ids = positionals.map(jobId);
  const api = client(values, env);
  let failed = 0;
  for (const id of ids) {
    try {
      const job = await api.request<Job>('POST', `/api/v1/jobs/${id}/${action}`);
      io.out(`Job ${id}: ${action === 'hold' ? `held (${job.reason})` : 'released'}\n`);
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      io.err(`conductor: job ${id}: ${error.message}\n`);
      failed++;
    }
  }
  return failed > 0 ? 1 : 0;
}

async function setDrain(action: 'drain' | 'undrain', args: string[], io: Io, env: NodeJS.ProcessEnv) {
  const { values, positionals } = parse(args, {}, [1, 1]);
  if (values.help) return help(action, io);
  const node = positionals[0] as string;
  const worker = await client(values, env).request<{ status?: string }>(
    'POST',
    `/api/v1/workers/${encodeURIComponent(node)}/${action}`,
  );
  io.out(`Node ${node}: ${worker.status ?? (action === 'drain' ? 'draining' : 'ready')}\n`);
  return 0;
}

function help(command: string, io: Io): number {
  io.out(HELP[command] ?? HELP['']!);
  return 0;
}

function safeUser(): string {
  try {
    return userInfo().username;
  } catch {
    return '';
  }
}

/** `conductor token|webhook`: administration straight in the control plane's database (cli/commands.ts). */
export type DatabaseCommands = (argv: string[], env: NodeJS.ProcessEnv, io: Io) => Promise<number>;

export interface MainOptions {
  /** Only where the control plane's code is installed (the repository): see cli/conductor.ts. */
  databaseCommands?: DatabaseCommands;
}

/** What `conductor token|webhook` say where the control plane's code is not installed (the package). */
export function databaseCommandsUnavailable(command: string): string {
  return `conductor ${command}: not available in this installation (the conductor-cli package talks to the HTTP API only).
\`conductor ${command}\` works straight in the control plane's database, so it runs where the control plane is
installed, with its DATABASE_URL: in a checkout of the Conductor repository,
  npm run conductor -- ${command} ...        (or npx conductor ${command} ...)
With an admin token the HTTP API does the same from anywhere, e.g.
  curl -X POST "$CONDUCTOR_URL/api/v1/${command === 'token' ? 'tokens' : 'webhooks'}" -H "Authorization: Bearer $CONDUCTOR_TOKEN" \\
    -H "Content-Type: application/json" -d '${command === 'token' ? '{"name": "ci", "scopes": ["jobs:read", "jobs:write"]}' : '{"name": "deploy", "template": {"script": "...", "cpus": 1}}'}'
`;
}

/**
 * The global options given before the command (`conductor --url X submit ...`): `--url`/`--token` (as
 * `--url X` or `--url=X`), kept to hand to the command, and `-h`/`--help`, `--version`.
 */
function leadingOptions(argv: string[]) {
  const options: string[] = [];
  let help = false;
  let version = false;
  let i = 0;
  for (; i < argv.length; i++) {
    const arg = argv[i] as string;
    if (arg === '-h' || arg === '--help') help = true;
    else if (arg === '--version') version = true;
    else if (/^--(url|token)=/.test(arg)) options.push(arg);
    else if (arg === '--url' || arg === '--token') {
      const value = argv[i + 1];
      if (value === undefined) throw new UsageError(`option ${arg} needs a value`);
      options.push(arg, value);
      i++;
    } else if (arg.startsWith('-')) {
      throw new UsageError(
        `unknown global option ${arg} (before the command: --url, --token, --help, --version)`,
      );
    } else break;
  }
  return { options, help, version, rest: argv.slice(i) };
}

/** Runs one command; returns the exit code. */
export async function main(
  argv: string[],
  env: NodeJS.ProcessEnv,
  io: Io,
  options: MainOptions = {},
): Promise<number> {
  let leading: ReturnType<typeof leadingOptions>;
  try {
    leading = leadingOptions(argv);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    io.err(`conductor: ${error.message} (see conductor --help)\n`);
    return 2;
  }
  const { options: globals, help: wantsHelp, version } = leading;
  const [command, ...rest] = leading.rest;
  if (wantsHelp || command === 'help') {
    const topic = command === 'help' ? rest[0] : command;
    return help(topic && HELP[topic] ? topic : '', io);
  }
  if (version) {
    io.out('conductor 0.1.0\n');
    return 0;
  }
  if (command === undefined) {
    io.err(HELP['']!);
    return 2;
  }
  if (command === 'token' || command === 'webhook') {
    if (globals.length > 0) {
      io.err(
        `conductor ${command}: works straight in the database (DATABASE_URL): --url and --token do not apply\n`,
      );
      return 2;
    }
    // The database commands: the only ones that need the control plane's code, loaded only now.
    if (options.databaseCommands) return options.databaseCommands(leading.rest, env, io);
    io.err(databaseCommandsUnavailable(command));
    return 2;
  }
  const run = COMMANDS[command];
  if (!run) {
    io.err(`conductor: unknown command ${command} (see conductor --help)\n`);
    return 2;
  }
  try {
    // Given before the command, the global options go first: the same ones after the command win.
    return await run([...globals, ...rest], io, env);
  } catch (error) {
    if (error instanceof UsageError) {
      io.err(`conductor ${command}: ${error.message} (see conductor ${command} --help)\n`);
      return 2;
    }
    if (error instanceof ApiError) {
      io.err(`conductor ${command}: ${error.message}\n`);
      return 1;
    }
    io.err(`conductor ${command}: ${error instanceof Error ? error.message : String(error)}\n`);
    return 1;
  }
}
