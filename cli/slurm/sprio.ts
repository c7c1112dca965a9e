/**
 * sprio(1) over GET /api/v1/jobs/priority: the factors of each pending job's multifactor priority, weighted
 * (default) or normalized (-n), Slurm 22.05's columns and `-o` format letters, and the weights (-w).
 */
import { ApiError } from '../api.ts';
import type { Io } from '../io.ts';
import { optionHelp } from './command.ts';
import { fit } from './format.ts';
import { getoptLong, type OptionSpec } from './getopt.ts';
import {
  controllerError,
  given,
  listOption,
  reportParse,
  slurmClient,
  userNames,
  VERSION,
  withEnvironment,
} from './squeue.ts';

export const SPRIO_OPTIONS: readonly OptionSpec[] = [
  {
    long: 'clusters',
    short: 'M',
    arg: 'required',
    fate: 'refused',
    note: 'one Conductor control plane is one cluster: talk to another with CONDUCTOR_URL',
    value: '<string>',
  },
  { long: 'federation', arg: 'none', fate: 'warned', note: 'Conductor has no federations' },
  {
    long: 'format',
    short: 'o',
    arg: 'required',
    fate: 'honoured',
    note: 'the columns, `%[.][size]type`: i r u Y y S A a F f J j P p Q q N (B b T t c print 0 or nothing: no association, TRES or cluster factors here)',
    value: '<output_format>',
  },
  { long: 'help', arg: 'none', fate: 'honoured', note: 'prints the help' },
  {
    long: 'jobs',
    short: 'j',
    arg: 'optional',
    fate: 'honoured',
    note: 'only these pending jobs (a comma list of ids)',
    value: '<job_id_list>',
  },
  { long: 'local', arg: 'none', fate: 'warned', note: 'Conductor has no federations: every job is local' },
  { long: 'long', short: 'l', arg: 'none', fate: 'honoured', note: 'adds USER and NICE' },
  { long: 'noheader', short: 'h', arg: 'none', fate: 'honoured', note: 'no header line' },
  { long: 'norm', short: 'n', arg: 'none', fate: 'honoured', note: 'the factors from 0 to 1, not weighted' },
  {
    long: 'partition',
    short: 'p',
    arg: 'required',
    fate: 'honoured',
    note: 'only jobs of these partitions (a comma list)',
    value: '<partition_list>',
  },
  { long: 'sibling', arg: 'none', fate: 'warned', note: 'Conductor has no federations: no sibling jobs' },
  {
    long: 'sort',
    short: 'S',
    arg: 'required',
    fate: 'honoured',
    note: 'order by these format letters, `+` ascending (the default) or `-` descending; default `i`',
    value: '<sort_list>',
  },
  { long: 'usage', arg: 'none', fate: 'honoured', note: 'prints the options in brief' },
  {
    long: 'user',
    short: 'u',
    arg: 'required',
    fate: 'honoured',
    note: "only these users' jobs (names, or this user's uid)",
    value: '<user_list>',
  },
  { long: 'verbose', short: 'v', arg: 'none', fate: 'warned', note: 'sprio has nothing more to say here' },
  { long: 'version', short: 'V', arg: 'none', fate: 'honoured', note: `prints \`${VERSION}\`` },
  {
    long: 'weights',
    short: 'w',
    arg: 'none',
    fate: 'honoured',
    note: 'the configured weights (CONDUCTOR_PRIORITY_WEIGHT_*), no jobs',
  },
];

interface Factors {
  age: number;
  fairshare: number;
  jobsize: number;
  partition: number;
  qos: number;
}

export interface PriorityJob {
  job_id: number;
  partition: string | null;
  user: string | null;
  account: string | null;
  priority: number;
  nice: number;
  factors: Factors;
  weighted: Factors;
}

interface Field {
  header: string;
  /** The value printed: weighted (or raw, `normalized`), as text. */
  value: (job: PriorityJob, normalized: boolean) => string;
  /** What -S sorts on. */
  key: (job: PriorityJob) => number | string;
  /** The weights row (-w) of this column. */
  weight?: (weights: Factors) => string;
}

const decimals = (n: number) => n.toFixed(7);
const factor = (name: keyof Factors, header: string, normalized: boolean): Field => ({
  header,
  value: (j, norm) => (norm || normalized ? decimals(j.factors[name]) : String(Math.round(j.weighted[name]))),
  key: (j) => j.weighted[name],
  weight: (w) => String(w[name]),
});

/** Slurm's job priority normalized: over the largest 32-bit priority. */
const normalizedPriority = (p: number) => (p / 0xffffffff).toFixed(8);

const FIELDS: Record<string, Field> = {
  i: { header: 'JOBID', value: (j) => String(j.job_id), key: (j) => j.job_id },
  r: { header: 'PARTITION', value: (j) => j.partition ?? '', key: (j) => j.partition ?? '' },
  u: { header: 'USER', value: (j) => j.user ?? '', key: (j) => j.user ?? '' },
  Y: {
    header: 'PRIORITY',
    value: (j, norm) => (norm ? normalizedPriority(j.priority) : String(j.priority)),
    key: (j) => j.priority,
  },
  y: { header: 'PRIORITY', value: (j) => normalizedPriority(j.priority), key: (j) => j.priority },
  S: { header: 'SITE', value: () => '0', key: () => 0, weight: () => '0' },
  A: factor('age', 'AGE', false),
  a: factor('age', 'AGE', true),
  F: factor('fairshare', 'FAIRSHARE', false),
  f: factor('fairshare', 'FAIRSHARE', true),
  J: factor('jobsize', 'JOBSIZE', false),
  j: factor('jobsize', 'JOBSIZE', true),
  P: factor('partition', 'PARTITION', false),
  p: factor('partition', 'PARTITION', true),
  Q: factor('qos', 'QOS', false),
  q: factor('qos', 'QOS', true),
  B: { header: 'ASSOC', value: () => '0', key: () => 0, weight: () => '0' },
  b: { header: 'ASSOC', value: () => '0', key: () => 0, weight: () => '0' },
  N: { header: 'NICE', value: (j) => String(j.nice), key: (j) => j.nice },
  T: { header: 'TRES', value: () => '', key: () => '' },
  t: { header: 'TRES', value: () => '', key: () => '' },
  c: { header: 'CLUSTER', value: () => '', key: () => '' },
};

/** Slurm's default columns (SITE, AGE, FAIRSHARE, JOBSIZE, PARTITION, QOS), and -l's USER and NICE. */
const DEFAULT_FORMAT = '%.15i %9r %.10Y %.10S %.10A %.10F %.10J %.10P %.10Q';
const LONG_FORMAT = '%.15i %9r %.8u %.10Y %.10S %.10A %.10F %.10J %.10P %.10Q %.11N';

type Piece = string | { field: Field; letter: string; width: number | undefined; right: boolean };

/** `%[.][size]type` items and the text between them; an unknown letter is an error, as in sprio. */
export function parseSprioFormat(format: string): Piece[] {
  const pieces: Piece[] = [];
  const re = /%(\.)?(\d+)?([A-Za-z])|([^%]+)|(%)/g;
  for (let m = re.exec(format); m !== null; m = re.exec(format)) {
    if (m[4] !== undefined || m[5] !== undefined) {
      pieces.push(m[4] ?? '%');
      continue;
    }
    const letter = m[3] as string;
    const field = FIELDS[letter];
    if (!field) throw new Error(`Invalid job format specification: ${letter}`);
    pieces.push({ field, letter, width: m[2] === undefined ? undefined : Number(m[2]), right: m[1] === '.' });
  }
  return pieces;
}

function line(pieces: Piece[], text: (p: Exclude<Piece, string>) => string): string {
  return pieces
    .map((p) => (typeof p === 'string' ? p : fit(text(p), p.width, p.right)))
    .join('')
    .trimEnd();
}

/** The -S keys: letters with `+`/`-`, comma-separated (`u,-y`). */
function sorter(spec: string): (a: PriorityJob, b: PriorityJob) => number {
  const keys = spec
    .split(',')
    .filter((k) => k !== '')
    .map((k) => {
      const descending = k.startsWith('-');
      const letter = k.replace(/^[+-]/, '');
      const field = FIELDS[letter];
      if (!field) throw new Error(`Invalid sort specification: ${k}`);
      return { field, descending };
    });
  return (a, b) => {
    for (const { field, descending } of keys) {
      const x = field.key(a);
      const y = field.key(b);
      if (x === y) continue;
      const order = x < y ? -1 : 1;
      return descending ? -order : order;
    }
    return 0;
  };
}

/** The report: the header (unless -h) and a line per job, or the weights line (-w). */
export function renderSprio(
  answer: { weights: Factors; jobs: PriorityJob[] },
  options: { format: string; normalized: boolean; header: boolean; weights: boolean; sort: string },
): string {
  const pieces = parseSprioFormat(options.format);
  const lines: string[] = [];
  if (options.header) lines.push(line(pieces, (p) => p.field.header));
  if (options.weights) {
    lines.push(
      line(pieces, (p) =>
        p.letter === 'i' ? 'Weights' : p.field.weight ? p.field.weight(answer.weights) : '',
      ),
    );
    return `${lines.join('\n')}\n`;
  }
  const jobs = [...answer.jobs].sort(sorter(options.sort));
  for (const job of jobs) lines.push(line(pieces, (p) => p.field.value(job, options.normalized)));
  return lines.length > 0 ? `${lines.join('\n')}\n` : '';
}

export async function runSprio(args: string[], io: Io, env: NodeJS.ProcessEnv): Promise<number> {
  const parsed = getoptLong(args, SPRIO_OPTIONS);
  const code = reportParse('sprio', parsed, io);
  if (code !== null) return code;
  const options = withEnvironment(parsed.options, SPRIO_OPTIONS, env, { SPRIO_FORMAT: 'format' });
  if (given(options, 'help')) {
    io.out(`Usage: sprio [OPTIONS]\n${optionHelp(SPRIO_OPTIONS)}\n`);
    return 0;
  }
  if (given(options, 'usage')) {
    io.out(
      'Usage: sprio [-j jid[s]] [-u user_name[s]] [-p partition[s]] [-o format] [-S sort] [-w] [--usage] [-hlnvV]\n',
    );
    return 0;
  }
  if (given(options, 'version')) {
    io.out(`${VERSION}\n`);
    return 0;
  }
  const value = (long: string) => options.findLast((o) => o.spec.long === long)?.value;
  const format = value('format') ?? (given(options, 'long') ? LONG_FORMAT : DEFAULT_FORMAT);
  const query = new URLSearchParams();
  const ids = listOption(options, 'jobs');
  if (ids) {
    const bad = ids.find((id) => !/^[1-9]\d{0,15}$/.test(id));
    if (bad !== undefined) {
      io.err(`sprio: error: Invalid job id: ${bad}\n`);
      return 1;
    }
    query.set('ids', ids.join(','));
  }
  const users = listOption(options, 'user');
  if (users) query.set('owner', userNames(users.join(','), env).join(','));
  const partitions = listOption(options, 'partition');
  if (partitions) query.set('partition', partitions.join(','));
  try {
    parseSprioFormat(format);
    sorter(value('sort') ?? 'i');
  } catch (error) {
    io.err(`sprio: error: ${(error as Error).message}\n`);
    return 1;
  }
  let answer: { weights: Factors; jobs: PriorityJob[] };
  try {
    answer = await slurmClient(env).request('GET', `/api/v1/jobs/priority?${query}`);
  } catch (error) {
    if (error instanceof ApiError) {
      io.err(`sprio: error: ${controllerError(error)}\n`);
      return 1;
    }
    throw error;
  }
  if (ids && answer.jobs.length === 0 && !given(options, 'weights')) {
    io.err('Unable to find jobs matching user/id(s) specified\n');
    return 1;
  }
  io.out(
    renderSprio(answer, {
      format,
      normalized: given(options, 'norm'),
      header: !given(options, 'noheader'),
      weights: given(options, 'weights'),
      sort: value('sort') ?? 'i',
    }),
  );
  return 0;
}
