/**
 * `#SBATCH` and `#CONDUCTOR` directives of a batch script, and the same options on the command line, turned
 * into a submit body. Node built-ins only (see cli/main.ts).
 *
 * As in Slurm, directives are read from the comment block at the top of the script: the first line that is
 * neither blank nor a comment ends them. Command-line options win over `#CONDUCTOR` lines, which win over
 * `#SBATCH` lines.
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
}

/** Splits a directive's arguments like a shell would, for the simple cases (quotes, no expansion). */
function words(text: string): string[] {
  const out: string[] = [];
  const re = /"([^"]*)"|'([^']*)'|(\S+)/g;
  for (let m = re.exec(text); m; m = re.exec(text)) out.push(m[1] ?? m[2] ?? m[3] ?? '');
  return out;
}

/** Parses options (command-line or directive words) into values; unknown options are usage errors. */
export function parseSubmitOptions(args: string[], where: string): SubmitValues {
  try {
    const { values } = parseArgs({ args, options: SUBMIT_OPTIONS, strict: true, allowPositionals: false });
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

/**
 * The submit body for `script`: its directives, then the command line on top. `--output`/`--error` (with
 * `%j` for the job id, `%x` for the job name) are passed to the job as CONDUCTOR_OUTPUT / CONDUCTOR_ERROR:
 * the server keeps the output itself (`conductor logs`), the script may tee into those files.
 */
export function buildSubmitBody(script: string, flags: SubmitValues, env: NodeJS.ProcessEnv): SubmitBody {
  const { sbatch, conductor } = scriptDirectives(script);
  const v: SubmitValues = { ...sbatch, ...conductor, ...flags };
  const environment: Record<string, string> = {};
  for (const source of [sbatch, conductor, flags]) {
    if (typeof source.export === 'string') Object.assign(environment, parseExport(source.export, env));
    for (const pair of (source.env as string[] | undefined) ?? [])
      Object.assign(environment, parseExport(pair, env));
  }
  let cpus: number;
  if (typeof v.cpus === 'string') cpus = positive(v.cpus, '--cpus');
  else {
    const perTask =
      typeof v['cpus-per-task'] === 'string' ? positive(v['cpus-per-task'], '--cpus-per-task') : 1;
    const tasks = typeof v.ntasks === 'string' ? positive(v.ntasks, '--ntasks') : 1;
    cpus = perTask * tasks;
  }
  const body: SubmitBody = { script, cpus };
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
  return body;
}

/** `%j` → the job id, `%x` → the job name, `%%` → `%` (Slurm's filename patterns). */
export function expandPattern(pattern: string, job: { id: number; name: string }): string {
  return pattern.replace(/%(%|j|x)/g, (_, c: string) =>
    c === 'j' ? String(job.id) : c === 'x' ? job.name : '%',
  );
}
