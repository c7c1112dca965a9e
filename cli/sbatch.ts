/**
 * `#SBATCH` and `#CONDUCTOR` directives of a batch script, and the same options on the command line, turned
 * into a submit body. Node built-ins only (see cli/main.ts).
 *
 * As in Slurm, directives are read from the comment block at the top of the script: the first line that is
 * neither blank nor a comment ends them. Command-line options win over `#CONDUCTOR` lines, which win over
 * `#SBATCH` lines.
 *
 * Resource requests are checked for form only (a memory size, a GPU count, a node count); the control plane
 * decides whether they can be met. Sizes are passed as written: the server parses them.
 */
import { parseArgs } from 'node:util';

export class UsageError extends Error {}

/** The options `submit` understands, on the command line and in directives. */
export const SUBMIT_OPTIONS = {
  'cpus-per-task': { type: 'string', short: 'c' },
  ntasks: { type: 'string', short: 'n' },
  cpus: { type: 'string' },
  'job-name': { type: 'string', short: 'J' },
  time: { type: 'string', short: 't' },
  partition: { type: 'string', short: 'p' },
  account: { type: 'string', short: 'A' },
  chdir: { type: 'string', short: 'D' },
  export: { type: 'string' },
  env: { type: 'string', multiple: true },
  requeue: { type: 'boolean' },
  'no-requeue': { type: 'boolean' },
  output: { type: 'string', short: 'o' },
  error: { type: 'string', short: 'e' },
  priority: { type: 'string' },
  mem: { type: 'string' },
  'mem-per-cpu': { type: 'string' },
  gres: { type: 'string' },
  gpus: { type: 'string', short: 'G' },
  'gpus-per-node': { type: 'string' },
  constraint: { type: 'string', short: 'C' },
  exclusive: { type: 'boolean' },
  nodelist: { type: 'string', short: 'w' },
  exclude: { type: 'string', short: 'x' },
  nodes: { type: 'string', short: 'N' },
} as const;
export type SubmitOptionName = keyof typeof SUBMIT_OPTIONS;
export type SubmitValues = Partial<Record<SubmitOptionName, string | boolean | string[]>>;

export interface SubmitBody {
  script: string;
  cpus: number;
  name?: string;
  account?: string;
  partition?: string;
  time_limit?: string;
  work_dir?: string;
  environment?: Record<string, string>;
  priority?: number;
  requeue?: boolean;
  /** Where and from which host it is submitted: the job sees them as SLURM_SUBMIT_DIR and SLURM_SUBMIT_HOST. */
  submit_dir?: string;
  submit_host?: string;
  /** `-n` and `-c` as given (cpus is worked out from them): SLURM_NTASKS and SLURM_CPUS_PER_TASK. */
  ntasks?: number;
  cpus_per_task?: number;
  /** `--mem`, as written: MB, or with a unit K, M, G, T. */
  memory_per_node?: string;
  memory_per_cpu?: string;
  /** A bare count as a number, `type:count` as a string. */
  gpus?: number | string;
  gres?: string;
  constraint?: string;
  exclusive?: boolean;
  nodelist?: string;
  exclude?: string;
}

/** Splits a directive's arguments like a shell would, for the simple cases (quotes, no expansion). */
function words(text: string): string[] {
  const out: string[] = [];
  const re = /"([^"]*)"|'([^']*)'|(\S+)/g;
  for (let m = re.exec(text); m; m = re.exec(text)) out.push(m[1] ?? m[2] ?? m[3] ?? '');
  return out;
}

/**
 * Slurm's `--exclusive[=user|mcs]` has an optional value, which parseArgs cannot express: the valued forms
 * become the bare flag before parsing. `user` and `mcs` (share the node only with the same user's, or the
 * same MCS label's, jobs) are taken as the whole node: stricter than asked, never looser.
 */
export function plainExclusive(args: string[]): string[] {
  const end = args.indexOf('--');
  return args.map((arg, i) => {
    if ((end >= 0 && i > end) || !arg.startsWith('--exclusive=')) return arg;
    const mode = arg.slice('--exclusive='.length);
    if (/^(user|mcs)$/i.test(mode)) return '--exclusive';
    throw new UsageError(
      `--exclusive takes no value, or =user or =mcs (both mean the whole node here), got ${JSON.stringify(mode)}`,
    );
  });
}

/** Parses options (command-line or directive words) into values; unknown options are usage errors. */
export function parseSubmitOptions(args: string[], where: string): SubmitValues {
  try {
    const { values } = parseArgs({
      args: plainExclusive(args),
      options: SUBMIT_OPTIONS,
      strict: true,
      allowPositionals: false,
    });
    return values as SubmitValues;
  } catch (error) {
    throw new UsageError(`${where}: ${(error as Error).message}`);
  }
}

/** The `#SBATCH` and `#CONDUCTOR` directives at the top of a script. */
export function scriptDirectives(script: string): { sbatch: SubmitValues; conductor: SubmitValues } {
  const sbatch: string[] = [];
  const conductor: string[] = [];
  const lines = script.split('\n');
  for (const [index, raw] of lines.entries()) {
    const line = raw.trim();
    if (index === 0 && line.startsWith('#!')) continue;
    if (line === '') continue;
    if (!line.startsWith('#')) break;
    const match = /^#(SBATCH|CONDUCTOR)\s+(.*)$/.exec(line);
    if (!match) continue;
    const args = words((match[2] ?? '').replace(/\s+#.*$/, ''));
    (match[1] === 'SBATCH' ? sbatch : conductor).push(...args);
  }
  return {
    sbatch: parseSubmitOptions(sbatch, '#SBATCH'),
    conductor: parseSubmitOptions(conductor, '#CONDUCTOR'),
  };
}

const TIME = /^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$/;

function positive(value: string, what: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value.trim()) || !Number.isSafeInteger(n) || n < 1) {
    throw new UsageError(`${what} must be a positive whole number, got ${JSON.stringify(value)}`);
  }
  return n;
}

/** `--export`: `ALL`, `NONE`, or `[ALL,]VAR=value,...` (a bare `VAR` is taken from this environment). */
export function parseExport(spec: string, env: NodeJS.ProcessEnv): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of spec.split(',')) {
    const item = part.trim();
    if (item === '' || item === 'ALL' || item === 'NONE' || item === 'NIL') continue;
    const at = item.indexOf('=');
    const name = at < 0 ? item : item.slice(0, at);
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) {
      throw new UsageError(`--export: ${JSON.stringify(name)} is not a variable name`);
    }
    if (at >= 0) out[name] = item.slice(at + 1);
    else if (env[name] !== undefined) out[name] = env[name] as string;
  }
  return out;
}

/** Slurm's memory sizes (str_to_mbytes): a whole number, an optional unit K, M, G or T (and B), MB by default. */
const MEMORY_SIZE = /^\d+(?:[KMGT]B?)?$/i;
/** `--gpus`: `[type:]count`. */
const GPU_REQUEST = /^(?:([A-Za-z0-9_.-]+):)?(\d+)$/;
/** `--gres`: a comma list of `name[:type][:count]`. */
const GRES_LIST = /^[^\s,:]+(?::[^\s,:]+){0,2}(?:,[^\s,:]+(?::[^\s,:]+){0,2})*$/;
const NODE_COUNT = /^(\d+)(?:-(\d+))?$/;

function memorySize(value: string, option: string): string {
  const size = value.trim();
  if (!MEMORY_SIZE.test(size)) {
    throw new UsageError(
      `${option} ${JSON.stringify(value)} is not a memory size: a whole number with an optional unit K, M, G or T (default M), e.g. 4G or 512`,
    );
  }
  return size;
}

function gpuRequest(value: string, option: string): number | string {
  const request = value.trim();
  const match = GPU_REQUEST.exec(request);
  if (!match || !Number.isSafeInteger(Number(match[2]))) {
    throw new UsageError(
      `${option} ${JSON.stringify(value)} is not a GPU request: [type:]count, e.g. 2 or a100:2`,
    );
  }
  return match[1] === undefined ? Number(match[2]) : request;
}

function nonEmpty(value: string, option: string): string {
  const text = value.trim();
  if (text === '') throw new UsageError(`${option} needs a value`);
  return text;
}

/** `-w`/`-x`: a hostlist. Slurm reads a value with a `/` as a file of names, which is not supported here. */
function hostlist(value: string, option: string): string {
  const list = nonEmpty(value, option);
  if (list.includes('/')) {
    throw new UsageError(
      `${option} ${JSON.stringify(value)}: a file of node names is not supported; list the nodes (node[01-03],gpu01)`,
    );
  }
  return list;
}

/** Only one-node jobs exist: `-N 1` and `-N 1-1` are accepted and need nothing sent. */
function checkOneNode(value: string): void {
  const match = NODE_COUNT.exec(value.trim());
  if (!match) {
    throw new UsageError(`--nodes ${JSON.stringify(value)} is not a node count: N or MIN-MAX, e.g. 1`);
  }
  if (Number(match[1]) === 1 && (match[2] === undefined || Number(match[2]) === 1)) return;
  throw new UsageError(
    `conductor runs each job on one node: --nodes ${value.trim()} is not supported yet (use --nodes=1)`,
  );
}

type Source = readonly [where: string, values: SubmitValues];

/**
 * `--gpus` and `--gpus-per-node` mean the same for a one-node job: one request under two names, the
 * highest-precedence source that gives either wins; one source giving both with different counts is an error.
 */
function gpusOption(sources: Source[]): { option: string; value: string } | undefined {
  let chosen: { option: string; value: string } | undefined;
  for (const [where, values] of sources) {
    const gpus = values.gpus;
    const perNode = values['gpus-per-node'];
    if (typeof gpus === 'string' && typeof perNode === 'string' && gpus.trim() !== perNode.trim()) {
      throw new UsageError(
        `${where}: --gpus ${gpus} and --gpus-per-node ${perNode} differ; a job runs on one node, where both mean the same`,
      );
    }
    if (typeof gpus === 'string') chosen = { option: '--gpus', value: gpus };
    else if (typeof perNode === 'string') chosen = { option: '--gpus-per-node', value: perNode };
  }
  return chosen;
}

/** The resource requests of the body: memory, GPUs, generic resources, features, exclusivity, nodes. */
function resourceRequest(sources: Source[], v: SubmitValues): Partial<SubmitBody> {
  const request: Partial<SubmitBody> = {};
  // As in Slurm's sbatch, --mem and --mem-per-cpu exclude each other wherever each was given.
  const givenIn = (option: SubmitOptionName) =>
    sources.filter(([, values]) => values[option] !== undefined).map(([where]) => where);
  const mem = givenIn('mem');
  const memPerCpu = givenIn('mem-per-cpu');
  if (mem.length > 0 && memPerCpu.length > 0) {
    throw new UsageError(
      `--mem (${mem.join(', ')}) and --mem-per-cpu (${memPerCpu.join(', ')}) are mutually exclusive, as in Slurm: give one`,
    );
  }
  if (typeof v.mem === 'string') request.memory_per_node = memorySize(v.mem, '--mem');
  if (typeof v['mem-per-cpu'] === 'string') {
    request.memory_per_cpu = memorySize(v['mem-per-cpu'], '--mem-per-cpu');
  }
  const gpus = gpusOption(sources);
  if (gpus) request.gpus = gpuRequest(gpus.value, gpus.option);
  if (typeof v.gres === 'string') {
    const gres = nonEmpty(v.gres, '--gres');
    if (!GRES_LIST.test(gres)) {
      throw new UsageError(
        `--gres ${JSON.stringify(v.gres)} is not a list of name[:type][:count], e.g. gpu:a100:2,nvme:1`,
      );
    }
    request.gres = gres;
  }
  if (typeof v.constraint === 'string') request.constraint = nonEmpty(v.constraint, '--constraint');
  if (v.exclusive === true) request.exclusive = true;
  if (typeof v.nodelist === 'string') request.nodelist = hostlist(v.nodelist, '--nodelist');
  if (typeof v.exclude === 'string') request.exclude = hostlist(v.exclude, '--exclude');
  if (typeof v.nodes === 'string') checkOneNode(v.nodes);
  return request;
}

/**
 * The submit body for `script`: its directives, then the command line on top. `--output`/`--error` (with
 * `%j` for the job id, `%x` for the job name) are passed to the job as CONDUCTOR_OUTPUT / CONDUCTOR_ERROR:
 * the server keeps the output itself (`conductor logs`), the script may tee into those files.
 */
/** Where a submission comes from, as sbatch records it. */
export interface SubmitOrigin {
  /** The directory the command ran in. */
  dir: string;
  /** This machine's host name; absent: not sent. */
  host?: string;
}

export function buildSubmitBody(
  script: string,
  flags: SubmitValues,
  env: NodeJS.ProcessEnv,
  origin?: SubmitOrigin,
): SubmitBody {
  const { sbatch, conductor } = scriptDirectives(script);
  const v: SubmitValues = { ...sbatch, ...conductor, ...flags };
  const environment: Record<string, string> = {};
  for (const source of [sbatch, conductor, flags]) {
    if (typeof source.export === 'string') Object.assign(environment, parseExport(source.export, env));
    for (const pair of (source.env as string[] | undefined) ?? [])
      Object.assign(environment, parseExport(pair, env));
  }
  const cpusPerTask =
    typeof v['cpus-per-task'] === 'string' ? positive(v['cpus-per-task'], '--cpus-per-task') : undefined;
  const ntasks = typeof v.ntasks === 'string' ? positive(v.ntasks, '--ntasks') : undefined;
  const cpus = typeof v.cpus === 'string' ? positive(v.cpus, '--cpus') : (cpusPerTask ?? 1) * (ntasks ?? 1);
  const body: SubmitBody = { script, cpus };
  if (ntasks !== undefined) body.ntasks = ntasks;
  if (cpusPerTask !== undefined) body.cpus_per_task = cpusPerTask;
  if (origin) {
    body.submit_dir = origin.dir;
    if (origin.host !== undefined) body.submit_host = origin.host;
  }
  if (typeof v['job-name'] === 'string') body.name = v['job-name'];
  if (typeof v.account === 'string') body.account = v.account;
  if (typeof v.partition === 'string') body.partition = v.partition;
  if (typeof v.chdir === 'string') body.work_dir = v.chdir;
  if (typeof v.time === 'string') {
    const time = v.time.trim();
    if (!/^(UNLIMITED|INFINITE)$/i.test(time)) {
      if (!TIME.test(time)) {
        throw new UsageError(
          `--time ${JSON.stringify(time)} is not a Slurm time: minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS`,
        );
      }
      body.time_limit = time;
    }
  }
  if (typeof v.priority === 'string') {
    const p = Number(v.priority);
    if (!Number.isInteger(p)) throw new UsageError(`--priority must be a whole number, got ${v.priority}`);
    body.priority = p;
  }
  if (v.requeue === true) body.requeue = true;
  if (v['no-requeue'] === true) body.requeue = false;
  if (typeof v.output === 'string') environment.CONDUCTOR_OUTPUT = v.output;
  if (typeof v.error === 'string') environment.CONDUCTOR_ERROR = v.error;
  if (Object.keys(environment).length > 0) body.environment = environment;
  const sources: Source[] = [
    ['#SBATCH', sbatch],
    ['#CONDUCTOR', conductor],
    ['the command line', flags],
  ];
  return { ...body, ...resourceRequest(sources, v) };
}

/** `%j` → the job id, `%x` → the job name, `%%` → `%` (Slurm's filename patterns). */
export function expandPattern(pattern: string, job: { id: number; name: string }): string {
  return pattern.replace(/%(%|j|x)/g, (_, c: string) =>
    c === 'j' ? String(job.id) : c === 'x' ? job.name : '%',
  );
}
