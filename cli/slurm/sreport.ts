/**
 * `sreport` on Conductor: Slurm's usage reports (cluster Utilization, user TopUsage, and account TopUsage, a
 * Conductor addition) from GET /api/v1/usage/report, printed as sreport prints them: a banner with the period
 * and the unit, then the columns (`-P`/`-p`: `|`-separated, `-n`: no banner and no header).
 */
import type { Io } from '../io.ts';
import { apiClient, guarded, has, parseOptions, SLURM_VERSION, SlurmError } from './command.ts';
import { fit, timestamp } from './format.ts';
import type { OptionSpec } from './getopt.ts';

export const SREPORT_OPTIONS: readonly OptionSpec[] = [
  {
    long: 'all_clusters',
    short: 'a',
    arg: 'none',
    fate: 'honoured',
    note: 'the one cluster this control plane is',
  },
  {
    long: 'cluster',
    short: 'M',
    arg: 'required',
    fate: 'warned',
    note: 'one Conductor control plane is one cluster: talk to another with CONDUCTOR_URL',
    value: 'cluster_list',
  },
  { long: 'federation', arg: 'none', fate: 'warned', note: 'Conductor has no federation' },
  { long: 'help', short: 'h', arg: 'none', fate: 'honoured', note: 'this help' },
  {
    long: 'local',
    arg: 'none',
    fate: 'warned',
    note: 'Conductor has no federation: the one cluster is local',
  },
  { long: 'noheader', short: 'n', arg: 'none', fate: 'honoured', note: 'no banner and no column header' },
  { long: 'parsable', short: 'p', arg: 'none', fate: 'honoured', note: '`|` after every field' },
  { long: 'parsable2', short: 'P', arg: 'none', fate: 'honoured', note: '`|` between fields' },
  {
    long: 'quiet',
    short: 'Q',
    arg: 'none',
    fate: 'honoured',
    note: 'no warnings (there are no other messages)',
  },
  {
    long: 'time',
    short: 't',
    arg: 'required',
    fate: 'honoured',
    note: 'the unit: Seconds, Minutes (default), Hours, Percent, SecPer, MinPer, HourPer (case-insensitive, abbreviated)',
    value: 'time_format',
  },
  {
    long: 'tres',
    short: 'T',
    arg: 'required',
    fate: 'refused',
    note: 'reports are in CPU time (the roll-ups also keep GPU- and memory-seconds: the API gives them)',
    value: 'tres_names',
  },
  { long: 'usage', arg: 'none', fate: 'honoured', note: 'a short usage line' },
  { long: 'verbose', short: 'v', arg: 'none', fate: 'warned', note: 'sreport prints no event log here' },
  { long: 'version', short: 'V', arg: 'none', fate: 'honoured', note: `prints \`slurm ${SLURM_VERSION}\`` },
];

const USAGE =
  'Usage: sreport [-a|-M cluster] [-n] [-p|-P] [-t time_format] <cluster|user|account> <report> [options]\n';

const HELP = `${USAGE}
Reports:
  cluster Utilization        Allocated, Down, PLND Down, Idle, Planned, Reported CPU time
  user TopUsage              the users who used the most CPU time (one line per user and account)
  account TopUsage           the accounts that used the most CPU time (a Conductor addition)
Options after the report (case-insensitive, abbreviated):
  Start=<time> End=<time>    the period (default: yesterday); YYYY-MM-DD[THH:MM[:SS]], MM/DD[/YY][-HH:MM[:SS]],
                             HH:MM[:SS], now[{+|-}count[seconds|minutes|hours|days|weeks]], today, yesterday
  Accounts=<list> Users=<list> TopCount=<n> Group
Usage counts when a job's attempt ends; periods go down to whole hours.
`;

type Unit = 'Seconds' | 'Minutes' | 'Hours' | 'Percent' | 'SecPer' | 'MinPer' | 'HourPer';
const UNITS: readonly Unit[] = ['Seconds', 'Minutes', 'Hours', 'Percent', 'SecPer', 'MinPer', 'HourPer'];
const UNIT_WORDS: Record<Unit, string> = {
  Seconds: 'CPU Seconds',
  Minutes: 'CPU Minutes',
  Hours: 'CPU Hours',
  Percent: 'Percentage of Total',
  SecPer: 'CPU Seconds/Percentage of Total',
  MinPer: 'CPU Minutes/Percentage of Total',
  HourPer: 'CPU Hours/Percentage of Total',
};

/** A word that starts one name of `names` (case-insensitive), or that name exactly. */
function pick<T extends string>(word: string, names: readonly T[]): T | undefined {
  const w = word.toLowerCase();
  const exact = names.find((n) => n.toLowerCase() === w);
  if (exact) return exact;
  const found = names.filter((n) => n.toLowerCase().startsWith(w));
  return w.length > 0 && found.length === 1 ? found[0] : undefined;
}

/** sreport's time as seconds: floor to the unit, with the share of `total` for the Per formats. */
export function usageText(seconds: number, total: number, unit: Unit): string {
  const percent = `${(total > 0 ? (seconds / total) * 100 : 0).toFixed(2)}%`;
  const divisor = unit.startsWith('Sec') ? 1 : unit.startsWith('Min') ? 60 : 3600;
  const value = String(Math.floor(seconds / divisor));
  if (unit === 'Percent') return percent;
  return unit.endsWith('Per') ? `${value}(${percent})` : value;
}

/**
 * Slurm's time forms (parse_time.c), in local time: what Start= and End= take. Returns undefined for a form
 * it does not know.
 */
export function parseSlurmTime(text: string, now = new Date()): Date | undefined {
  const t = text.trim().toLowerCase();
  const day = (offset: number) => new Date(now.getFullYear(), now.getMonth(), now.getDate() + offset);
  if (t === 'today' || t === 'midnight') return day(0);
  if (t === 'yesterday') return day(-1);
  if (t === 'tomorrow') return day(1);
  const rel = /^now(?:([+-])(\d+)(seconds?|minutes?|hours?|days?|weeks?)?)?$/.exec(t);
  if (rel) {
    const unit = rel[3] ?? 'seconds';
    const size = unit.startsWith('w')
      ? 604800
      : unit.startsWith('d')
        ? 86400
        : unit.startsWith('h')
          ? 3600
          : unit.startsWith('m')
            ? 60
            : 1;
    const sign = rel[1] === '-' ? -1 : 1;
    return new Date(now.getTime() + sign * Number(rel[2] ?? 0) * size * 1000);
  }
  const clock = (h?: string, m?: string, s?: string) =>
    [Number(h ?? 0), Number(m ?? 0), Number(s ?? 0)] as const;
  let m = /^(\d{4})-(\d{2})-(\d{2})(?:t(\d{2}):(\d{2})(?::(\d{2}))?)?$/.exec(t);
  if (m) return exact(Number(m[1]), Number(m[2]), Number(m[3]), ...clock(m[4], m[5], m[6]));
  m = /^(\d{1,2})[/.](\d{1,2})(?:[/.](\d{2}|\d{4}))?(?:-(\d{1,2}):(\d{2})(?::(\d{2}))?)?$/.exec(t);
  if (m) return exact(year(m[3], now), Number(m[1]), Number(m[2]), ...clock(m[4], m[5], m[6]));
  m = /^(\d{2})(\d{2})(\d{2})?$/.exec(t);
  if (m) return exact(year(m[3], now), Number(m[1]), Number(m[2]), 0, 0, 0);
  m = /^(\d{1,2}):(\d{2})(?::(\d{2}))?$/.exec(t);
  if (m) return exact(now.getFullYear(), now.getMonth() + 1, now.getDate(), ...clock(m[1], m[2], m[3]));
  return undefined;
}

const year = (y: string | undefined, now: Date) =>
  y === undefined ? now.getFullYear() : y.length === 2 ? 2000 + Number(y) : Number(y);

/** The local time of these fields, unless one is out of range (Date would roll 13/45 into next year). */
function exact(y: number, month: number, day: number, h: number, m: number, s: number): Date | undefined {
  const d = new Date(y, month - 1, day, h, m, s);
  const same =
    d.getFullYear() === y &&
    d.getMonth() === month - 1 &&
    d.getDate() === day &&
    d.getHours() === h &&
    d.getMinutes() === m &&
    d.getSeconds() === s;
  return same ? d : undefined;
}

interface ReportAnswer {
  cluster: string;
  start: string;
  end: string;
  reported_cpu_seconds: number;
  rows: Record<string, string | number>[];
}

interface Column {
  title: string;
  width: number;
  value: (row: Record<string, string | number>) => string;
}

const KINDS = ['cluster', 'user', 'account'] as const;
const REPORTS: Record<(typeof KINDS)[number], readonly string[]> = {
  cluster: [
    'Utilization',
    'AccountUtilizationByUser',
    'UserUtilizationByAccount',
    'UserUtilizationByWckey',
    'WCKeyUtilizationByUser',
  ],
  user: ['TopUsage'],
  account: ['TopUsage'],
};
const SETTINGS = [
  'Start',
  'End',
  'TopCount',
  'Accounts',
  'Users',
  'Group',
  'Clusters',
  'Format',
  'Tree',
] as const;

export async function runSreport(args: string[], io: Io, env: NodeJS.ProcessEnv): Promise<number> {
  return guarded('sreport', io, async () => {
    const parsed = parseOptions('sreport', args, SREPORT_OPTIONS, io);
    if (has(parsed, 'help')) {
      io.out(HELP);
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
    const [kindWord, reportWord, ...rest] = parsed.positionals;
    if (kindWord === undefined)
      throw new SlurmError(`no report given (sreport runs no interactive mode here)\n${USAGE.trim()}`);
    const kind = pick(kindWord, KINDS);
    if (!kind)
      throw new SlurmError(`Not valid report ${kindWord}\nValid reports are cluster, user and account`);
    const report = reportWord === undefined ? undefined : pick(reportWord, REPORTS[kind]);
    if (!report)
      throw new SlurmError(
        `Not valid report ${reportWord ?? ''} for ${kind}\nValid ${kind} reports are ${REPORTS[kind].join(', ')}`,
      );
    if (report !== 'Utilization' && report !== 'TopUsage') {
      throw new SlurmError(
        `cluster ${report} is not available on Conductor: use user TopUsage or account TopUsage`,
      );
    }
    const unitOption = parsed.options.filter((o) => o.spec.long === 'time').at(-1)?.value;
    const unit = unitOption === undefined ? 'Minutes' : pick(unitOption, UNITS);
    if (!unit) throw new SlurmError(`unknown time format ${unitOption}: one of ${UNITS.join(', ')}`);

    const query = new URLSearchParams({
      report: kind === 'cluster' ? 'cluster-utilization' : `${kind}-topusage`,
    });
    for (const word of rest) {
      const eq = word.indexOf('=');
      const key = eq < 0 ? word : word.slice(0, eq);
      const value = eq < 0 ? '' : word.slice(eq + 1);
      const setting = pick(key, SETTINGS);
      if (!setting) throw new SlurmError(`Unknown condition: ${word}\nUse keyword set to modify value`);
      if (setting === 'Start' || setting === 'End') {
        const when = parseSlurmTime(value);
        if (!when) throw new SlurmError(`Invalid time specification (pos=0): ${value}`);
        query.set(setting.toLowerCase(), when.toISOString());
      } else if (setting === 'TopCount') query.set('top', value);
      else if (setting === 'Accounts') query.set('accounts', value);
      else if (setting === 'Users') query.set('users', value);
      else if (setting === 'Group') query.set('group', 'true');
      else if (setting === 'Format')
        throw new SlurmError('Format= is not supported: the columns are sreport’s defaults');
      // Clusters= and Tree change nothing: one cluster, no account tree.
    }
    if (!query.has('start') && !query.has('end')) {
      // sreport's default period: yesterday, in local time.
      const today = parseSlurmTime('today') as Date;
      query.set('start', new Date(today.getTime() - 86_400_000).toISOString());
      query.set('end', today.toISOString());
    }
    const answer = await apiClient(env).request<ReportAnswer>('GET', `/api/v1/usage/report?${query}`);
    io.out(render(kind, answer, unit, parsed, Number(query.get('top') ?? 10)));
    return 0;
  });
}

function render(
  kind: (typeof KINDS)[number],
  answer: ReportAnswer,
  unit: Unit,
  parsed: Parameters<typeof has>[0],
  top: number,
): string {
  const total = answer.reported_cpu_seconds;
  const time = (key: string) => (row: Record<string, string | number>) =>
    usageText(Number(row[key] ?? 0), total, unit);
  const text = (key: string) => (row: Record<string, string | number>) => String(row[key] ?? '');
  const cluster = () => answer.cluster;
  const columns: Column[] =
    kind === 'cluster'
      ? [
          { title: 'Cluster', width: 9, value: cluster },
          { title: 'Allocated', width: 13, value: time('allocated') },
          { title: 'Down', width: 10, value: time('down') },
          { title: 'PLND Down', width: 9, value: time('planned_down') },
          { title: 'Idle', width: 13, value: time('idle') },
          { title: 'Planned', width: 9, value: time('planned') },
          { title: 'Reported', width: 13, value: time('reported') },
        ]
      : kind === 'user'
        ? [
            { title: 'Cluster', width: 9, value: cluster },
            { title: 'Login', width: 9, value: text('user') },
            { title: 'Proper Name', width: 15, value: text('user') },
            { title: 'Account', width: 15, value: text('account') },
            { title: 'Used', width: 10, value: time('cpu_seconds') },
            { title: 'Energy', width: 9, value: () => '0' },
          ]
        : [
            { title: 'Cluster', width: 9, value: cluster },
            { title: 'Account', width: 15, value: text('account') },
            { title: 'Used', width: 10, value: time('cpu_seconds') },
            { title: 'Energy', width: 9, value: () => '0' },
          ];
  const parsable = has(parsed, 'parsable') || has(parsed, 'parsable2');
  const trailing = has(parsed, 'parsable') && !has(parsed, 'parsable2') ? '|' : '';
  const line = (cells: string[]) =>
    parsable
      ? `${cells.join('|')}${trailing}\n`
      : `${cells.map((c, i) => fit(c, columns[i]?.width, true)).join(' ')} \n`;
  const lines: string[] = [];
  if (!has(parsed, 'noheader')) {
    const start = Date.parse(answer.start);
    const end = Date.parse(answer.end);
    const period = `${timestamp(answer.start)} - ${timestamp(new Date(end - 1000).toISOString())}`;
    const title =
      kind === 'cluster'
        ? `Cluster Utilization ${period}`
        : `Top ${top} ${kind === 'user' ? 'Users' : 'Accounts'} ${period} (${Math.round((end - start) / 1000)} secs)`;
    const rule = '-'.repeat(80);
    lines.push(`${rule}\n`, `${title}\n`, `Usage reported in ${UNIT_WORDS[unit]}\n`, `${rule}\n`);
    lines.push(line(columns.map((c) => c.title)));
    if (!parsable) lines.push(line(columns.map((c) => '-'.repeat(c.width))));
  }
  for (const row of answer.rows) lines.push(line(columns.map((c) => c.value(row))));
  return lines.join('');
}
