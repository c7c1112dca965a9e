/**
 * sbatch, as Slurm 22.05's: options from the command line, from SBATCH_* variables and from the script's
 * `#SBATCH` lines (and, for `conductor submit`, `#CONDUCTOR` lines) become one submit body. Every option has a
 * fate (cli/slurm/sbatch-options.ts); every problem of a submission is reported at once, a directive's with
 * its script line.
 *
 * Directives are read as sbatch reads them: `#SBATCH` at the start of a line, only before the first line that
 * is neither blank nor a comment (a `#SBATCH` after the first command, in a heredoc say, is the script's
 * business); in a directive, a word starting with an unquoted `#` begins a comment.
 *
 * Precedence, later wins: `#SBATCH`, then `#CONDUCTOR`, then SBATCH_* variables, then the command line. The
 * variables and the command line are what one submission says, so they win over what the script says, as in
 * Slurm; `#CONDUCTOR` lines are for Conductor, so they win over `#SBATCH` lines.
 */
import { readFileSync, realpathSync } from 'node:fs';
import { hostname } from 'node:os';
import { basename } from 'node:path';
import { Client, resolveConfig } from '../api.ts';
import { type Io, jobExitStatus } from '../io.ts';
import { SLURM_VERSION } from './command.ts';
import { timestamp } from './format.ts';
import { fatesOf, getoptLong, type OptionSpec, type ParsedOption } from './getopt.ts';
import { SBATCH_ENV, SBATCH_OPTIONS, SUBMIT_OPTIONS } from './sbatch-options.ts';

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
  qos?: string;
  /** ISO: the job is not started before. */
  begin_time?: string;
  hold?: boolean;
  /** `-o`, `-e`, `-i` patterns as given: the agent expands them and resolves them against the job's cwd. */
  stdout?: string;
  stderr?: string;
  stdin?: string;
  open_mode?: 'append' | 'truncate';
  /** `--export` as given, for SLURM_EXPORT_ENV. */
  export_env?: string;
  signal?: { signal: string; before_s: number; batch_only: boolean };
  comment?: string;
  reservation?: string;
  /** `-d`, in Slurm's syntax; the control plane parses it. */
  dependency?: string;
  kill_on_invalid_dep?: boolean;
  max_requeues?: number;
  retry_on_failure?: boolean;
  retry_backoff_s?: number;
  crash_limit?: number;
  mail_type?: string;
  mail_user?: string;
  /** `-a`/`--array`, in Slurm's syntax; the control plane parses it. */
  array?: string;
}

export type SubmitCommand = 'sbatch' | 'submit';

/** Where an option was given, lowest precedence first. */
type Origin = 'sbatch' | 'conductor' | 'env' | 'cmdline';
const ORIGIN_LABEL: Record<Origin, string> = {
  sbatch: '#SBATCH',
  conductor: '#CONDUCTOR',
  env: 'the environment',
  cmdline: 'the command line',
};

interface Setting {
  option: ParsedOption;
  origin: Origin;
  /** `line 4`, `SBATCH_QOS`, or '' for the command line. */
  where: string;
}

/** One directive line: its number (from 1) and its words. */
export interface Directive {
  line: number;
  kind: 'SBATCH' | 'CONDUCTOR';
  words: string[];
  /** An unmatched quote, as sbatch says it. */
  problem?: string;
}

/** Splits a directive's text as sbatch does: quotes group and go, a word starting with `#` ends the line. */
export function directiveWords(text: string): { words: string[]; problem?: string } {
  const words: string[] = [];
  let at = 0;
  while (at < text.length) {
    while (at < text.length && /\s/.test(text[at] as string)) at++;
    if (at >= text.length || text[at] === '#') break;
    let word = '';
    let quote: string | undefined;
    for (; at < text.length; at++) {
      const c = text[at] as string;
      if (quote) {
        if (c === quote) quote = undefined;
        else word += c;
      } else if (c === '"' || c === "'") quote = c;
      else if (/\s/.test(c)) break;
      else word += c;
    }
    if (quote) return { words, problem: `unmatched ${quote} in ${JSON.stringify(text.trim())}` };
    words.push(word);
  }
  return { words };
}

/** The directives of the given kinds before the script's first command. */
export function scriptDirectives(script: string, kinds: readonly Directive['kind'][]): Directive[] {
  const directives: Directive[] = [];
  for (const [index, line] of script.split('\n').entries()) {
    const match = /^#(SBATCH|CONDUCTOR)(?:\s(.*))?$/.exec(line.replace(/\r$/, ''));
    if (match && kinds.includes(match[1] as Directive['kind'])) {
      directives.push({
        line: index + 1,
        kind: match[1] as Directive['kind'],
        ...directiveWords(match[2] ?? ''),
      });
      continue;
    }
    const text = line.trim();
    if (text !== '' && !text.startsWith('#')) break;
  }
  return directives;
}

class Problem extends Error {}

const TIME = /^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$/;
/** Slurm's memory sizes (str_to_mbytes): a whole number, an optional unit K, M, G or T (and B), MB by default. */
const MEMORY_SIZE = /^\d+(?:[KMGT]B?)?$/i;
/** `--gpus`: `[type:]count`. */
const GPU_REQUEST = /^(?:([A-Za-z0-9_.-]+):)?(\d+)$/;
/** `--gres`: a comma list of `name[:type][:count]`. */
const GRES_LIST = /^[^\s,:]+(?::[^\s,:]+){0,2}(?:,[^\s,:]+(?::[^\s,:]+){0,2})*$/;
const NODE_COUNT = /^(\d+)(?:-(\d+))?$/;
const VARIABLE = /^[A-Za-z_][A-Za-z0-9_]*$/;
/** Signal names as sig_name2num knows them. */
const SIGNALS = new Set(
  'HUP INT QUIT ILL TRAP ABRT BUS FPE KILL USR1 SEGV USR2 PIPE ALRM TERM STKFLT CHLD CONT STOP TSTP TTIN TTOU URG XCPU XFSZ VTALRM PROF WINCH IO POLL PWR SYS'.split(
    ' ',
  ),
);

function text(value: string | undefined, option: string): string {
  const trimmed = (value ?? '').trim();
  if (trimmed === '') throw new Problem(`${option} needs a value`);
  return trimmed;
}

function positive(value: string | undefined, option: string): number {
  const n = Number(value);
  if (!/^\d+$/.test((value ?? '').trim()) || !Number.isSafeInteger(n) || n < 1) {
    throw new Problem(`${option} must be a positive whole number, got ${JSON.stringify(value)}`);
  }
  return n;
}

function memorySize(value: string | undefined, option: string): string {
  const size = (value ?? '').trim();
  if (!MEMORY_SIZE.test(size)) {
    throw new Problem(
      `${option} ${JSON.stringify(value)} is not a memory size: a whole number with an optional unit K, M, G or T (default M), e.g. 4G or 512`,
    );
  }
  return size;
}

function gpuRequest(value: string | undefined, option: string): number | string {
  const request = (value ?? '').trim();
  const match = GPU_REQUEST.exec(request);
  if (!match || !Number.isSafeInteger(Number(match[2]))) {
    throw new Problem(
      `${option} ${JSON.stringify(value)} is not a GPU request: [type:]count, e.g. 2 or a100:2`,
    );
  }
  return match[1] === undefined ? Number(match[2]) : request;
}

/** `-w`/`-x`: a hostlist. Slurm reads a value with a `/` as a file of names, which is not supported here. */
function hostlist(value: string | undefined, option: string): string {
  const list = text(value, option);
  if (list.includes('/')) {
    throw new Problem(
      `${option} ${JSON.stringify(value)}: a file of node names is not supported; list the nodes (node[01-03],gpu01)`,
    );
  }
  return list;
}

function timeLimit(value: string | undefined): string | null {
  const time = (value ?? '').trim();
  if (/^(UNLIMITED|INFINITE)$/i.test(time)) return null;
  if (!TIME.test(time)) {
    throw new Problem(
      `--time ${JSON.stringify(time)} is not a Slurm time: minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS`,
    );
  }
  return time;
}

const UNITS: [string, number][] = [
  ['seconds', 1],
  ['minutes', 60],
  ['hours', 3600],
  ['days', 86400],
  ['weeks', 604800],
];
const NAMED_HOURS: Record<string, number> = { midnight: 0, elevenses: 11, noon: 12, fika: 15, teatime: 16 };

/**
 * `--begin` as Slurm's parse_time reads it, in local time: `now[+N[unit]]`, `HH:MM[:SS][AM|PM]` (tomorrow
 * when already past), `YYYY-MM-DD[THH:MM[:SS]]`, `MM/DD[/YY]`, `today`, `tomorrow`, and midnight, noon,
 * elevenses, fika, teatime (the next one).
 */
export function parseBegin(value: string | undefined, now: Date): string {
  const spec = (value ?? '').trim();
  const bad = () =>
    new Problem(
      `--begin ${JSON.stringify(spec)} is not a Slurm time: now+N[seconds|minutes|hours|days|weeks], HH:MM[:SS], YYYY-MM-DD[THH:MM[:SS]], MM/DD[/YY], today, tomorrow, midnight, noon, teatime`,
    );
  const lower = spec.toLowerCase();
  const relative = /^now(?:\+(\d+)([a-z]*))?$/.exec(lower);
  if (relative) {
    const unit = relative[2] ?? '';
    const seconds = unit === '' ? 1 : UNITS.find(([name]) => name.startsWith(unit))?.[1];
    if (seconds === undefined) throw bad();
    return new Date(now.getTime() + Number(relative[1] ?? 0) * seconds * 1000).toISOString();
  }
  const at = new Date(now);
  at.setMilliseconds(0);
  if (lower === 'today' || lower === 'tomorrow') {
    at.setHours(0, 0, 0);
    if (lower === 'tomorrow') at.setDate(at.getDate() + 1);
    return at.toISOString();
  }
  const clock = (hours: number, minutes: number, seconds: number) => {
    if (hours > 23 || minutes > 59 || seconds > 59) throw bad();
    at.setHours(hours, minutes, seconds);
    if (at.getTime() <= now.getTime()) at.setDate(at.getDate() + 1);
    return at.toISOString();
  };
  if (lower in NAMED_HOURS) return clock(NAMED_HOURS[lower] as number, 0, 0);
  const time = /^(\d{1,2}):(\d{2})(?::(\d{2}))?\s*(am|pm)?$/.exec(lower);
  if (time) {
    let hours = Number(time[1]);
    if (time[4]) {
      if (hours < 1 || hours > 12) throw bad();
      hours = (hours % 12) + (time[4] === 'pm' ? 12 : 0);
    }
    return clock(hours, Number(time[2]), Number(time[3] ?? 0));
  }
  const date = (year: number, month: number, day: number, h = 0, m = 0, s = 0) => {
    const when = new Date(year, month - 1, day, h, m, s);
    if (when.getMonth() !== month - 1 || when.getDate() !== day || h > 23 || m > 59 || s > 59) throw bad();
    return when.toISOString();
  };
  const iso = /^(\d{4})-(\d{2})-(\d{2})(?:t(\d{2}):(\d{2})(?::(\d{2}))?)?$/.exec(lower);
  if (iso) {
    const [, y, mo, d, h, mi, s] = iso.map(Number) as number[];
    return date(y as number, mo as number, d as number, h || 0, mi || 0, s || 0);
  }
  const us = /^(\d{1,2})\/(\d{1,2})(?:\/(\d{2}|\d{4}))?$/.exec(lower);
  if (us) {
    const year = us[3] === undefined ? now.getFullYear() : Number(us[3]) + (us[3].length === 2 ? 2000 : 0);
    return date(year, Number(us[1]), Number(us[2]));
  }
  throw bad();
}

/** `--signal=[{R|B}:]sig[@time]`: R (reservations) means nothing here; B is the batch shell only. */
export function parseSignal(value: string | undefined): NonNullable<SubmitBody['signal']> {
  const spec = (value ?? '').trim();
  const match = /^(?:([RB]{1,2}):)?([A-Za-z0-9]+)(?:@(\d+))?$/.exec(spec);
  const bad = (why: string) =>
    new Problem(`--signal ${JSON.stringify(spec)}: ${why}; the form is [{R|B}:]sig_num[@sig_time]`);
  if (!match) throw bad('not a signal');
  let signal = (match[2] as string).toUpperCase();
  if (/^\d+$/.test(signal)) {
    const n = Number(signal);
    if (n < 1 || n > 64) throw bad('a signal number is 1 to 64');
    signal = String(n);
  } else {
    signal = signal.replace(/^SIG/, '');
    if (!SIGNALS.has(signal)) throw bad(`no signal is called ${match[2]}`);
  }
  const before = match[3] === undefined ? 60 : Number(match[3]);
  if (before > 65535) throw bad('sig_time is at most 65535 seconds');
  return { signal, before_s: before, batch_only: (match[1] ?? '').includes('B') };
}

/** The value of `--export` as a list: `ALL`, `NONE`, names, `NAME=value`. */
function exportItems(spec: string): string[] {
  const items = spec
    .split(',')
    .map((item) => item.trim())
    .filter((item) => item !== '');
  for (const item of items) {
    const name = item.includes('=') ? item.slice(0, item.indexOf('=')) : item;
    if (!VARIABLE.test(name)) throw new Problem(`--export: ${JSON.stringify(name)} is not a variable name`);
  }
  return items;
}

/** What this process's own configuration is: never sent to the job (the agent gives it its own). */
const NOT_EXPORTED = /^CONDUCTOR_/;

/**
 * The environment `--export` sends: ALL is this environment, NONE nothing; with a list, only the listed names
 * (a bare name takes this environment's value) on top. ALL leaves out the CLI's own CONDUCTOR_* settings (the
 * token stays here) and the names a job's environment cannot have (exported shell functions such as Lmod's
 * `BASH_FUNC_module%%`, which the API would refuse with the whole submission).
 */
export function exportedEnvironment(spec: string, env: NodeJS.ProcessEnv): Record<string, string> {
  const items = exportItems(spec);
  const out: Record<string, string> = {};
  if (items.includes('ALL')) {
    for (const [name, value] of Object.entries(env)) {
      if (value !== undefined && VARIABLE.test(name) && !NOT_EXPORTED.test(name)) out[name] = value;
    }
  }
  for (const item of items) {
    if (item === 'ALL' || item === 'NONE' || item === 'NIL') continue;
    const at = item.indexOf('=');
    if (at >= 0) out[item.slice(0, at)] = item.slice(at + 1);
    else if (env[item] !== undefined) out[item] = env[item] as string;
  }
  return out;
}

/** Checks one option's value; the converted value goes into the body. */
function convert(option: ParsedOption, now: Date): unknown {
  const name = `--${option.spec.long}`;
  const v = option.value;
  switch (option.spec.long) {
    case 'cpus-per-task':
    case 'ntasks':
    case 'ntasks-per-node':
    case 'cpus':
      return positive(v, name);
    case 'time':
      return timeLimit(v);
    case 'begin':
      return parseBegin(v, now);
    case 'signal':
      return parseSignal(v);
    case 'mem':
    case 'mem-per-cpu':
      return memorySize(v, name);
    case 'gpus':
    case 'gpus-per-node':
      return gpuRequest(v, name);
    case 'gres': {
      const gres = text(v, name);
      if (!GRES_LIST.test(gres)) {
        throw new Problem(
          `--gres ${JSON.stringify(v)} is not a list of name[:type][:count], e.g. gpu:a100:2,nvme:1`,
        );
      }
      return gres;
    }
    case 'nodelist':
    case 'exclude':
      return hostlist(v, name);
    case 'nodes': {
      const match = NODE_COUNT.exec((v ?? '').trim());
      if (!match) throw new Problem(`--nodes ${JSON.stringify(v)} is not a node count: N or MIN-MAX, e.g. 1`);
      if (Number(match[1]) !== 1 || (match[2] !== undefined && Number(match[2]) !== 1)) {
        throw new Problem(
          `conductor runs each job on one node: --nodes ${(v ?? '').trim()} is not supported yet (use --nodes=1)`,
        );
      }
      return 1;
    }
    case 'exclusive':
      // `user` and `mcs` share the node with the same user's (or MCS label's) jobs only: the whole node is
      // stricter than asked, never looser.
      if (v !== undefined && !/^(user|mcs)$/i.test(v)) {
        throw new Problem(
          `--exclusive takes no value, or =user or =mcs (both mean the whole node here), got ${JSON.stringify(v)}`,
        );
      }
      return true;
    case 'max-requeues':
    case 'crash-limit':
    case 'retry-backoff': {
      const n = Number(v);
      if (!/^\d+$/.test((v ?? '').trim()) || !Number.isSafeInteger(n)) {
        throw new Problem(`${name} must be a whole number, 0 or more, got ${JSON.stringify(v)}`);
      }
      return n;
    }
    case 'priority': {
      const p = Number(v);
      if (!/^-?\d+$/.test((v ?? '').trim()) || !Number.isSafeInteger(p)) {
        throw new Problem(`--priority must be a whole number, got ${JSON.stringify(v)}`);
      }
      return p;
    }
    case 'open-mode': {
      // As sbatch: the first letter decides.
      const mode = (v ?? '').trim().toLowerCase();
      if (mode.startsWith('a')) return 'append';
      if (mode.startsWith('t')) return 'truncate';
      throw new Problem(`--open-mode ${JSON.stringify(v)}: append or truncate`);
    }
    case 'kill-on-invalid-dep':
      if (!/^(yes|no)$/i.test((v ?? '').trim())) {
        throw new Problem(`--kill-on-invalid-dep ${JSON.stringify(v)}: yes or no`);
      }
      return (v ?? '').trim().toLowerCase() === 'yes';
    case 'export':
      exportItems(text(v, name));
      return v;
    case 'env': {
      const item = text(v, name);
      exportItems(item);
      return item;
    }
    case 'account':
    case 'partition':
    case 'job-name':
    case 'qos':
    case 'comment':
    case 'reservation':
    case 'mail-type':
    case 'mail-user':
    case 'chdir':
    case 'output':
    case 'error':
    case 'input':
    case 'constraint':
    case 'wrap':
    case 'url':
      return text(v, name);
    default:
      return v ?? true;
  }
}

export interface Submission {
  /** Absent when there are problems, or nothing is to be submitted (--help, --usage, --version). */
  body?: SubmitBody;
  /** Every problem, each as `line 4: ...`, `SBATCH_QOS: ...` or (the command line) as is. */
  problems: string[];
  warnings: string[];
  /** The options that say what the command does besides submitting, by long name (`parsable`, `wait`...). */
  flags: Set<string>;
  /** `--url` / `--token` (conductor submit). */
  url?: string;
  token?: string;
}

export interface SubmissionInput {
  command: SubmitCommand;
  args: string[];
  env: NodeJS.ProcessEnv;
  /** The script: the file, or stdin when `path` is undefined or `-`. Throws when it cannot be read. */
  readScript(path: string | undefined): string;
  /** The submit directory and host (SLURM_SUBMIT_DIR, SLURM_SUBMIT_HOST). */
  origin: { dir: string; host?: string };
  now?: Date;
}

const FLAGS = [
  'help',
  'usage',
  'version',
  'parsable',
  'test-only',
  'wait',
  'quiet',
  'verbose',
  'follow',
  'json',
];
/** Options that act at once, before the script is read. */
const IMMEDIATE = ['help', 'usage', 'version'];

/** The script `--wrap` makes, as sbatch writes it. */
function wrapped(command: string): string {
  return `#!/bin/sh\n# This script was created by sbatch --wrap.\n\n${command}\n`;
}

/** Reads the command line, the environment and the script into one submit body, or every problem found. */
export function buildSubmission(input: SubmissionInput): Submission {
  const table = input.command === 'sbatch' ? SBATCH_OPTIONS : SUBMIT_OPTIONS;
  const problems: string[] = [];
  const warnings: string[] = [];
  const settings: Setting[] = [];
  const at = (where: string, message: string) => (where === '' ? message : `${where}: ${message}`);

  const cmdline = getoptLong(input.args, table, { stopAtPositional: input.command === 'sbatch' });
  for (const p of cmdline.problems) problems.push(p.message);
  const flags = new Set(cmdline.options.map((o) => o.spec.long).filter((long) => FLAGS.includes(long)));
  if (IMMEDIATE.some((flag) => flags.has(flag))) return { problems, warnings, flags };

  const wrap = [...cmdline.options].reverse().find((o) => o.spec.long === 'wrap')?.value;
  const [path, ...scriptArgs] = cmdline.positionals;
  let script = '';
  if (wrap !== undefined) {
    if (path !== undefined) problems.push(`a script (${path}) and --wrap exclude each other`);
    script = wrapped(wrap);
  } else {
    if (scriptArgs.length > 0) {
      problems.push(`arguments after the script are not supported yet: ${scriptArgs.join(' ')}`);
    }
    if (path === undefined && input.command === 'submit') {
      problems.push('give a script: a file, or - for stdin (or --wrap)');
    } else {
      try {
        script = input.readScript(path);
      } catch (error) {
        // "no such file or directory", not "ENOENT: no such file or directory, open 'job.sh'".
        const message = (error as Error).message;
        const why = /^[A-Z]+: (.+?), \w+ '.*'$/.exec(message)?.[1] ?? message;
        problems.push(`unable to open file ${path ?? '-'}: ${why}`);
      }
      if (input.command === 'sbatch' && script !== '' && !script.startsWith('#!')) {
        problems.push(
          'This does not look like a batch script.  The first line must start with #! followed by the path to an interpreter.',
        );
      }
      if (input.command === 'sbatch' && script.includes('\r\n')) {
        problems.push(
          'Batch script contains DOS line breaks (\\r\\n) instead of expected UNIX line breaks (\\n).',
        );
      }
    }
  }

  const kinds: Directive['kind'][] = input.command === 'sbatch' ? ['SBATCH'] : ['SBATCH', 'CONDUCTOR'];
  const directives = scriptDirectives(script, kinds);
  for (const kind of kinds) {
    for (const directive of directives.filter((d) => d.kind === kind)) {
      const where = `line ${directive.line}`;
      if (directive.problem) problems.push(at(where, directive.problem));
      const parsed = getoptLong(directive.words, table);
      for (const p of parsed.problems) problems.push(at(where, p.message));
      for (const word of parsed.positionals) problems.push(at(where, `invalid directive argument '${word}'`));
      for (const option of parsed.options) {
        if (IMMEDIATE.includes(option.spec.long)) {
          problems.push(at(where, `--${option.spec.long} is for the command line, not a directive`));
        } else settings.push({ option, origin: kind === 'SBATCH' ? 'sbatch' : 'conductor', where });
      }
    }
  }
  for (const [variable, long] of Object.entries(SBATCH_ENV)) {
    const value = input.env[variable];
    const spec = table.find((s) => s.long === long) as OptionSpec;
    if (value === undefined) continue;
    const option: ParsedOption = { spec, written: variable, index: 0 };
    if (spec.arg === 'required' || (spec.arg === 'optional' && value !== '')) option.value = value;
    settings.push({ option, origin: 'env', where: variable });
  }
  for (const option of cmdline.options) settings.push({ option, origin: 'cmdline', where: '' });

  // Each option as given, checked; later settings win.
  const effective = new Map<string, { value: unknown; setting: Setting }>();
  const given = (long: string) => settings.filter((s) => s.option.spec.long === long);
  const environmentItems: string[] = [];
  for (const setting of settings) {
    const { spec } = setting.option;
    const fates = fatesOf([setting.option]);
    for (const w of fates.warnings) warnings.push(at(setting.where, w.message));
    for (const p of fates.problems) problems.push(at(setting.where, p.message));
    if (spec.fate === 'refused') continue;
    let converted: unknown;
    try {
      converted = convert(setting.option, input.now ?? new Date());
    } catch (error) {
      if (!(error instanceof Problem)) throw error;
      problems.push(at(setting.where, error.message));
      continue;
    }
    if (spec.long === 'env') environmentItems.push(converted as string);
    else if (spec.long === 'no-requeue') effective.set('requeue', { value: false, setting });
    else if (spec.long === 'gpus-per-node') effective.set('gpus', { value: converted, setting });
    else effective.set(spec.long, { value: converted, setting });
  }

  // As in Slurm's sbatch, --mem and --mem-per-cpu exclude each other wherever each was given.
  const origins = (long: string) => [...new Set(given(long).map((s) => ORIGIN_LABEL[s.origin]))];
  if (given('mem').length > 0 && given('mem-per-cpu').length > 0) {
    problems.push(
      `--mem (${origins('mem').join(', ')}) and --mem-per-cpu (${origins('mem-per-cpu').join(', ')}) are mutually exclusive, as in Slurm: give one`,
    );
  }
  // --gpus and --gpus-per-node are one request on one node: one place giving both must agree.
  for (const origin of Object.keys(ORIGIN_LABEL) as Origin[]) {
    const last = (long: string) =>
      given(long)
        .filter((s) => s.origin === origin)
        .at(-1)
        ?.option.value?.trim();
    const [gpus, perNode] = [last('gpus'), last('gpus-per-node')];
    if (gpus !== undefined && perNode !== undefined && gpus !== perNode) {
      problems.push(
        `${ORIGIN_LABEL[origin]}: --gpus ${gpus} and --gpus-per-node ${perNode} differ; a job runs on one node, where both mean the same`,
      );
    }
  }
  const value = <T>(long: string) => effective.get(long)?.value as T | undefined;
  const cpusPerTask = value<number>('cpus-per-task');
  let ntasks = value<number>('ntasks');
  const perNode = value<number>('ntasks-per-node');
  if (perNode !== undefined) {
    if (ntasks === undefined) ntasks = perNode;
    else if (ntasks > perNode) {
      problems.push(
        `--ntasks ${ntasks} with --ntasks-per-node ${perNode} needs more than one node: a job runs on one node`,
      );
    }
  }
  for (const setting of settings)
    if (FLAGS.includes(setting.option.spec.long)) flags.add(setting.option.spec.long);
  if (problems.length > 0) return { problems: inScriptOrder(problems), warnings, flags };

  const body: SubmitBody = { script, cpus: value<number>('cpus') ?? (cpusPerTask ?? 1) * (ntasks ?? 1) };
  if (ntasks !== undefined) body.ntasks = ntasks;
  if (cpusPerTask !== undefined) body.cpus_per_task = cpusPerTask;
  body.submit_dir = input.origin.dir;
  if (input.origin.host !== undefined) body.submit_host = input.origin.host;
  const fields: [long: string, field: keyof SubmitBody][] = [
    ['job-name', 'name'],
    ['account', 'account'],
    ['partition', 'partition'],
    ['chdir', 'work_dir'],
    ['priority', 'priority'],
    ['requeue', 'requeue'],
    ['mem', 'memory_per_node'],
    ['mem-per-cpu', 'memory_per_cpu'],
    ['gpus', 'gpus'],
    ['gres', 'gres'],
    ['constraint', 'constraint'],
    ['exclusive', 'exclusive'],
    ['nodelist', 'nodelist'],
    ['exclude', 'exclude'],
    ['qos', 'qos'],
    ['begin', 'begin_time'],
    ['hold', 'hold'],
    ['output', 'stdout'],
    ['error', 'stderr'],
    ['input', 'stdin'],
    ['open-mode', 'open_mode'],
    ['signal', 'signal'],
    ['comment', 'comment'],
    ['reservation', 'reservation'],
    ['dependency', 'dependency'],
    ['kill-on-invalid-dep', 'kill_on_invalid_dep'],
    ['max-requeues', 'max_requeues'],
    ['retry-on-failure', 'retry_on_failure'],
    ['retry-backoff', 'retry_backoff_s'],
    ['crash-limit', 'crash_limit'],
    ['mail-type', 'mail_type'],
    ['mail-user', 'mail_user'],
    ['array', 'array'],
    ['export', 'export_env'],
  ];
  const record = body as unknown as Record<string, unknown>;
  for (const [long, field] of fields) if (effective.has(long)) record[field] = value(long);
  // sbatch(1) -J: "the default is the name of the batch script, or just "sbatch" if the script is read on
  // standard input"; a --wrap job is named "wrap".
  if (body.name === undefined) {
    if (wrap !== undefined) body.name = 'wrap';
    else if (path !== undefined && path !== '-') body.name = basename(path);
    else if (input.command === 'sbatch') body.name = 'sbatch';
  }
  const time = value<string | null>('time');
  if (time) body.time_limit = time;

  // sbatch sends the whole environment unless told otherwise; `conductor submit` only what it is told.
  const exportSpec = value<string>('export') ?? (input.command === 'sbatch' ? 'ALL' : undefined);
  const environment = exportSpec === undefined ? {} : exportedEnvironment(exportSpec, input.env);
  for (const item of environmentItems) Object.assign(environment, exportedEnvironment(item, input.env));
  if (Object.keys(environment).length > 0) body.environment = environment;

  const url = value<string>('url');
  const token = effective.get('token')?.setting.option.value;
  return {
    body,
    problems,
    warnings,
    flags,
    ...(url === undefined ? {} : { url }),
    ...(token === undefined ? {} : { token }),
  };
}

/** sbatch --help: every option and its fate here. */
export function sbatchHelp(): string {
  const lines = [...SBATCH_OPTIONS]
    .sort((a, b) => a.long.localeCompare(b.long))
    .map((s) => {
      const value = s.arg === 'none' ? '' : s.arg === 'optional' ? `[=${s.value}]` : `=${s.value}`;
      const names = `${s.short ? `-${s.short}, ` : '    '}--${s.long}${value}`;
      const fate = s.fate === 'honoured' ? '' : s.fate === 'warned' ? '(ignored, warns) ' : '(refused) ';
      return `  ${names}\n        ${fate}${s.note}`;
    });
  return `Usage: sbatch [OPTIONS...] [script [args...]]

Submits a batch script to Conductor (a Slurm 22.05 sbatch drop-in): the file, or stdin when none is given,
or --wrap. Options are also read from SBATCH_* variables and from #SBATCH lines before the script's first
command; the command line wins over the variables, which win over #SBATCH lines.

${lines.join('\n')}
`;
}

const USAGE = `Usage: sbatch [-N nnodes] [-n ntasks] [-c ncpus] [-J jobname] [-A account] [-p partition] [-q qos]
              [-t minutes] [-b time] [-D path] [-o file] [-e file] [-i file] [--open-mode=append|truncate]
              [--mem=MB] [--mem-per-cpu=MB] [-G [type:]n] [--gres=list] [-C list] [--exclusive]
              [-w hosts] [-x hosts] [--export=names] [--signal=[B:]num[@time]] [--comment=text]
              [--priority=value] [--requeue] [--no-requeue] [-H] [-W] [--test-only] [--parsable]
              [-Q] [-v] [--wrap=command] [script [args...]]
`;

/** How this process submits: the realpath of its directory and its host (a name the API refuses is left out). */
export function submitOrigin(): { dir: string; host?: string } {
  let dir = process.cwd();
  try {
    dir = realpathSync(dir);
  } catch {
    // A directory removed under us: as the shell says it.
  }
  const host = hostname();
  return { dir, ...(/^[A-Za-z0-9._-]{1,255}$/.test(host) ? { host } : {}) };
}

/** Reads a script file, or stdin for none or `-`. */
export function readScript(path: string | undefined): string {
  return readFileSync(path === undefined || path === '-' ? 0 : path, 'utf8');
}

const FINAL = new Set(['COMPLETED', 'FAILED', 'CANCELLED', 'TIMEOUT', 'NODE_FAIL', 'OUT_OF_MEMORY']);

/**
 * `--test-only`: asks the control plane where and when the job would start (it stores nothing) and says it
 * as sbatch does, without a job id since none is given.
 */
export async function testOnly(api: Client, body: SubmitBody, now = new Date()): Promise<string> {
  const answer = await api.request<{
    node: string | null;
    partition: string;
    cpus: number;
    start: 'now' | null;
    reason: string | null;
  }>('POST', '/api/v1/jobs/test', body);
  const start = answer.start === 'now' ? timestamp(now.toISOString()) : 'a later time';
  const reason = answer.start === 'now' || !answer.reason ? '' : ` (${answer.reason})`;
  return `Job to start at ${start}${reason} using ${answer.cpus} processors on nodes ${answer.node ?? '(none yet)'} in partition ${answer.partition}`;
}

/** `--verbose`: the request, but for the script (the file has it) and the environment's values (secrets). */
export function requestLine(body: SubmitBody): string {
  const { script: _, environment, ...rest } = body;
  const names = environment ? { environment: Object.keys(environment).sort() } : {};
  return `submitting ${JSON.stringify({ ...rest, ...names })}`;
}

/** `sbatch`: submits as Slurm's does; prints and exits as it does. */
const lineOf = (problem: string) => Number(/^line (\d+): /.exec(problem)?.[1] ?? Number.POSITIVE_INFINITY);

/** The script's problems by line, then those of SBATCH_* variables and the command line (a stable sort). */
function inScriptOrder(problems: string[]): string[] {
  return problems
    .map((p, i) => [p, i] as const)
    .sort(([a, i], [b, j]) => lineOf(a) - lineOf(b) || i - j)
    .map(([p]) => p);
}

export async function runSbatch(
  args: string[],
  io: Io,
  env: NodeJS.ProcessEnv,
  options: { now?: Date; pollMs?: number } = {},
): Promise<number> {
  const submission = buildSubmission({
    command: 'sbatch',
    args,
    env,
    readScript,
    origin: submitOrigin(),
    ...(options.now ? { now: options.now } : {}),
  });
  const { flags } = submission;
  const quiet = flags.has('quiet');
  if (!quiet) for (const warning of submission.warnings) io.err(`sbatch: warning: ${warning}\n`);
  for (const problem of submission.problems) io.err(`sbatch: error: ${problem}\n`);
  if (submission.problems.length > 0) return 1;
  if (flags.has('help')) {
    io.out(sbatchHelp());
    return 0;
  }
  if (flags.has('usage')) {
    io.out(USAGE);
    return 0;
  }
  if (flags.has('version')) {
    io.out(`slurm ${SLURM_VERSION} (Conductor 0.1.0)\n`);
    return 0;
  }
  const body = submission.body as SubmitBody;
  if (flags.has('verbose')) io.err(`sbatch: ${requestLine(body)}\n`);
  try {
    const api = new Client(resolveConfig({}, env));
    if (flags.has('test-only')) {
      io.err(`sbatch: ${await testOnly(api, body, options.now)}\n`);
      return 0;
    }
    const job = await api.request<{ id: number }>('POST', '/api/v1/jobs/submit', body, {
      onHeaders: (headers) => {
        const warning = headers.get('conductor-warning');
        if (warning && !quiet) io.err(`sbatch: warning: ${warning}\n`);
      },
    });
    if (flags.has('parsable')) io.out(`${job.id}\n`);
    else if (!quiet) io.out(`Submitted batch job ${job.id}\n`);
    if (!flags.has('wait')) return 0;
    // An array ends when its last task does: 0 when every task COMPLETED, else 1.
    while (body.array !== undefined) {
      const now = await api.request<{ counts: Record<string, number> }>('GET', `/api/v1/arrays/${job.id}`);
      if ((now.counts.pending ?? 0) + (now.counts.running ?? 0) === 0) {
        return (now.counts.failed ?? 0) + (now.counts.cancelled ?? 0) === 0 ? 0 : 1;
      }
      await new Promise((resolve) => setTimeout(resolve, options.pollMs ?? 1000));
    }
    for (;;) {
      const now = await api.request<{ state: string; exit_code: string | null }>(
        'GET',
        `/api/v1/jobs/${job.id}`,
      );
      if (FINAL.has(now.state)) return jobExitStatus(now);
      await new Promise((resolve) => setTimeout(resolve, options.pollMs ?? 1000));
    }
  } catch (error) {
    // The server's refusal, an unreachable server, an unreadable config file: one line, no stack.
    io.err(`sbatch: error: ${error instanceof Error ? error.message : String(error)}\n`);
    return 1;
  }
}
