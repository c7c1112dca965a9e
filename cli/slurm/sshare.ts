/**
 * sshare(1) over GET /api/v1/fairshare?live=true (and the accounts' GrpTRESMins from /api/v1/accounts): the
 * association tree from a `root` row down, an account's users before the accounts under it, in Slurm 22.05's
 * classic columns, padded (truncated with `+`) or `|`-joined (-p, -P), and `-o` fields with their widths.
 */
import { ApiError } from '../api.ts';
import type { Io } from '../io.ts';
import { apiClient, guarded, has, optionHelp, parseOptions, SLURM_VERSION, SlurmError } from './command.ts';
import type { OptionSpec, ParsedOption } from './getopt.ts';
import { controllerError, currentUser, listOption, userNames } from './squeue.ts';

export const SSHARE_OPTIONS: readonly OptionSpec[] = [
  {
    long: 'accounts',
    short: 'A',
    arg: 'required',
    fate: 'honoured',
    note: 'only these accounts and the accounts under them, with all their users (a comma list)',
    value: '<account>',
  },
  { long: 'all', short: 'a', arg: 'none', fate: 'honoured', note: 'every user of every account' },
  {
    long: 'clusters',
    short: 'M',
    arg: 'required',
    fate: 'refused',
    note: 'one Conductor control plane is one cluster: talk to another with CONDUCTOR_URL',
    value: '<string>',
  },
  {
    long: 'format',
    short: 'o',
    arg: 'required',
    fate: 'honoured',
    note: 'the columns, a comma list of fields with an optional `%width` (Account, User, RawShares, NormShares, RawUsage, NormUsage, EffectvUsage, FairShare, LevelFS, GrpTRESMins, GrpTRESRaw, TRESRunMins, Partition, Cluster, ID)',
    value: '<output_format>',
  },
  { long: 'help', arg: 'none', fate: 'honoured', note: 'prints the help' },
  {
    long: 'long',
    short: 'l',
    arg: 'none',
    fate: 'honoured',
    note: 'adds NormUsage, LevelFS, GrpTRESMins and TRESRunMins',
  },
  { long: 'noheader', short: 'n', arg: 'none', fate: 'honoured', note: 'no header lines' },
  {
    long: 'parsable',
    short: 'p',
    arg: 'none',
    fate: 'honoured',
    note: 'fields joined by `|`, one at the end',
  },
  {
    long: 'parsable2',
    short: 'P',
    arg: 'none',
    fate: 'honoured',
    note: 'fields joined by `|`, none at the end',
  },
  {
    long: 'partition',
    short: 'm',
    arg: 'none',
    fate: 'honoured',
    note: 'adds the Partition column: empty, associations here are not per partition',
  },
  { long: 'usage', arg: 'none', fate: 'honoured', note: 'prints the options in brief' },
  {
    long: 'users',
    short: 'u',
    arg: 'required',
    fate: 'honoured',
    note: "these users' rows (names, or this user's uid; `all`: every user)",
    value: '<user_list>',
  },
  {
    long: 'Users',
    short: 'U',
    arg: 'none',
    fate: 'honoured',
    note: 'only the users’ rows, not the accounts above them',
  },
  { long: 'verbose', short: 'v', arg: 'none', fate: 'warned', note: 'sshare has nothing more to say here' },
  { long: 'version', short: 'V', arg: 'none', fate: 'honoured', note: `prints \`slurm ${SLURM_VERSION}\`` },
];

interface Figures {
  norm_shares: number;
  raw_usage: number;
  norm_usage: number;
  fairshare: number;
}
export interface FairShareAccount extends Figures {
  account: string;
  parent?: string | null;
  raw_shares?: number | null;
  users?: (Figures & { user: string; raw_shares: number })[];
}

/** One line of the report: the root, an account or a user in an account. */
interface Row {
  /** The cluster's own row: its usage, no factor. */
  root?: boolean;
  depth: number;
  account: string;
  user: string;
  rawShares: number | null;
  figures: Figures | null;
  grpCpuMins: number | null;
}

interface Field {
  name: string;
  /** Slurm's width: negative is left-justified. */
  width: number;
  value: (row: Row) => string;
}

const six = (n: number | undefined) => (n === undefined ? '' : n.toFixed(6));
/** Slurm matches a field by its first letters (at least `min` of them), case-insensitively. */
const FIELDS: { prefix: string; min: number; field: Field }[] = [
  {
    prefix: 'account',
    min: 1,
    field: { name: 'Account', width: -20, value: (r) => `${' '.repeat(r.depth)}${r.account}` },
  },
  { prefix: 'cluster', min: 2, field: { name: 'Cluster', width: 10, value: () => 'conductor' } },
  {
    prefix: 'effectvusage',
    min: 2,
    field: { name: 'EffectvUsage', width: 13, value: (r) => six(r.figures?.norm_usage) },
  },
  {
    prefix: 'fairshare',
    min: 2,
    field: { name: 'FairShare', width: 10, value: (r) => (r.root ? '' : six(r.figures?.fairshare)) },
  },
  {
    prefix: 'grptresmins',
    min: 4,
    field: {
      name: 'GrpTRESMins',
      width: 20,
      value: (r) => (r.grpCpuMins === null ? '' : `cpu=${r.grpCpuMins}`),
    },
  },
  {
    prefix: 'grptresraw',
    min: 8,
    field: {
      name: 'GrpTRESRaw',
      width: 20,
      value: (r) => (r.figures && !r.user ? `cpu=${Math.round(r.figures.raw_usage / 60)}` : ''),
    },
  },
  { prefix: 'id', min: 1, field: { name: 'ID', width: 6, value: () => '' } },
  {
    prefix: 'levelfs',
    min: 1,
    field: {
      name: 'LevelFS',
      width: 10,
      value: (r) => {
        if (!r.figures || r.root) return '';
        return r.figures.norm_usage > 0 ? six(r.figures.norm_shares / r.figures.norm_usage) : 'inf';
      },
    },
  },
  {
    prefix: 'normshares',
    min: 5,
    field: { name: 'NormShares', width: 11, value: (r) => six(r.figures?.norm_shares) },
  },
  {
    prefix: 'normusage',
    min: 5,
    field: { name: 'NormUsage', width: 11, value: (r) => six(r.figures?.norm_usage) },
  },
  { prefix: 'partition', min: 1, field: { name: 'Partition', width: 12, value: () => '' } },
  {
    prefix: 'rawshares',
    min: 4,
    field: { name: 'RawShares', width: 10, value: (r) => (r.rawShares === null ? '' : String(r.rawShares)) },
  },
  {
    prefix: 'rawusage',
    min: 4,
    field: {
      name: 'RawUsage',
      width: 11,
      value: (r) => (r.figures ? String(Math.round(r.figures.raw_usage)) : ''),
    },
  },
  { prefix: 'user', min: 1, field: { name: 'User', width: 10, value: (r) => r.user } },
  { prefix: 'tresrunmins', min: 1, field: { name: 'TRESRunMins', width: 20, value: () => '' } },
];

const CLASSIC = 'Account,User,RawShares,NormShares,RawUsage,EffectvUsage,FairShare';
const LONG =
  'Account,User,RawShares,NormShares,RawUsage,NormUsage,EffectvUsage,FairShare,LevelFS,GrpTRESMins,TRESRunMins';

/** `-o`'s comma list: `Name[%width]`, a name by any prefix sshare accepts. */
export function parseSshareFormat(format: string): Field[] {
  return format
    .split(',')
    .filter((item) => item !== '')
    .map((item) => {
      const m = /^([A-Za-z]+)(?:%(-?\d+))?$/.exec(item.trim());
      const word = m?.[1]?.toLowerCase() ?? '';
      const known = FIELDS.find((f) => word.length >= f.min && f.prefix.startsWith(word));
      if (!m || !known) throw new SlurmError(`Invalid field requested: "${item}"`);
      return m[2] === undefined ? known.field : { ...known.field, width: Number(m[2]) };
    });
}

/** Rows from the fair-share tree: `root`, then depth-first, an account's users before its sub-accounts. */
export function sshareRows(
  accounts: readonly FairShareAccount[],
  grpCpuMins: ReadonlyMap<string, number | null>,
  select: { accounts?: string[]; users?: string[] | 'all'; usersOnly: boolean },
): Row[] {
  // Jobs without an account count in the cluster's usage, but are no association.
  const shown = accounts.filter((a) => a.account !== '');
  const names = new Set(shown.map((a) => a.account));
  const children = new Map<string | null, FairShareAccount[]>();
  for (const a of shown) {
    const parent = a.parent && names.has(a.parent) ? a.parent : null;
    children.set(parent, [...(children.get(parent) ?? []), a]);
  }
  const total = accounts.reduce((sum, a) => sum + a.raw_usage, 0);
  const rows: Row[] = [];
  const wantUser = (user: string, inSelected: boolean) =>
    select.users === 'all' || (select.users === undefined ? inSelected : select.users.includes(user));
  const walk = (account: FairShareAccount, depth: number, inSelected: boolean) => {
    const selected = inSelected || (select.accounts?.includes(account.account) ?? true);
    if (selected && !select.usersOnly)
      rows.push({
        depth,
        account: account.account,
        user: '',
        rawShares: account.raw_shares ?? null,
        figures: account,
        grpCpuMins: grpCpuMins.get(account.account) ?? null,
      });
    if (selected)
      for (const u of account.users ?? []) {
        if (!wantUser(u.user, select.accounts !== undefined)) continue;
        rows.push({
          depth: depth + 1,
          account: account.account,
          user: u.user,
          rawShares: u.raw_shares,
          figures: u,
          grpCpuMins: null,
        });
      }
    for (const child of children.get(account.account) ?? []) walk(child, depth + 1, selected);
  };
  if (!select.usersOnly && select.accounts === undefined)
    rows.push({
      root: true,
      depth: 0,
      account: 'root',
      user: '',
      rawShares: null,
      figures: { norm_shares: 1, raw_usage: total, norm_usage: total > 0 ? 1 : 0, fairshare: 0 },
      grpCpuMins: null,
    });
  for (const top of children.get(null) ?? []) walk(top, 1, false);
  // -U: the users' rows alone, without the indentation of the tree they were in.
  if (select.usersOnly) for (const r of rows) r.depth = 0;
  return rows;
}

/** Slurm's print_fields: padded columns (a `+` marks a cut) under a dashes line, or `|`-joined. */
export function renderSshare(
  rows: readonly Row[],
  fields: readonly Field[],
  options: { header: boolean; parsable: '' | 'p' | 'P' },
): string {
  const lines: string[] = [];
  if (options.parsable) {
    const end = options.parsable === 'p' ? '|' : '';
    if (options.header) lines.push(fields.map((f) => f.name).join('|') + end);
    for (const r of rows) lines.push(fields.map((f) => f.value(r)).join('|') + end);
  } else {
    const cell = (text: string, width: number) => {
      const size = Math.abs(width);
      const cut = text.length > size ? `${text.slice(0, size - 1)}+` : text;
      return width < 0 ? cut.padEnd(size) : cut.padStart(size);
    };
    if (options.header) {
      lines.push(fields.map((f) => cell(f.name, f.width)).join(' '));
      lines.push(fields.map((f) => '-'.repeat(Math.abs(f.width))).join(' '));
    }
    for (const r of rows) lines.push(fields.map((f) => cell(f.value(r), f.width)).join(' '));
  }
  return lines.length > 0 ? `${lines.map((l) => l.trimEnd()).join('\n')}\n` : '';
}

const USAGE =
  'Usage:  sshare [-A Accounts] [-a] [-l] [-m] [-M Clusters] [-o Format] [-p] [-P] [-n] [-U] [-u Users] [-v] [-V]\n';

const lastValue = (options: readonly ParsedOption[], long: string) =>
  options.findLast((o) => o.spec.long === long)?.value;

export async function runSshare(args: string[], io: Io, env: NodeJS.ProcessEnv): Promise<number> {
  return guarded('sshare', io, async () => {
    const parsed = parseOptions('sshare', args, SSHARE_OPTIONS, io);
    if (has(parsed, 'help')) {
      io.out(`${USAGE}${optionHelp(SSHARE_OPTIONS)}\n`);
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
    if (parsed.positionals.length > 0)
      throw new SlurmError(`Unknown arguments: ${parsed.positionals.join(' ')}`);
    let format = lastValue(parsed.options, 'format') ?? (has(parsed, 'long') ? LONG : CLASSIC);
    if (has(parsed, 'partition') && !lastValue(parsed.options, 'format'))
      format = format.replace('User,', 'User,Partition,');
    const fields = parseSshareFormat(format);
    const userList = listOption(parsed.options, 'users');
    const users: string[] | 'all' | undefined = has(parsed, 'all')
      ? 'all'
      : userList?.includes('all')
        ? 'all'
        : userList
          ? userNames(userList.join(','), env)
          : undefined;
    const accounts = listOption(parsed.options, 'accounts');
    const client = apiClient(env);
    const [fair, list] = await Promise.all([
      client.request<{ accounts: FairShareAccount[] }>('GET', '/api/v1/fairshare?live=true'),
      client.request<{ accounts: { name: string; grp_cpu_mins: number | null }[] }>(
        'GET',
        '/api/v1/accounts',
      ),
    ]).catch((error) => {
      throw error instanceof ApiError ? new SlurmError(controllerError(error)) : error;
    });
    const rows = sshareRows(fair.accounts, new Map(list.accounts.map((a) => [a.name, a.grp_cpu_mins])), {
      accounts,
      // Without -a or -u: the accounts, and the rows of whoever runs it.
      users: users ?? (accounts ? undefined : [currentUser(env).name]),
      usersOnly: has(parsed, 'Users'),
    });
    io.out(
      renderSshare(rows, fields, {
        header: !has(parsed, 'noheader'),
        parsable: has(parsed, 'parsable2') ? 'P' : has(parsed, 'parsable') ? 'p' : '',
      }),
    );
    return 0;
  });
}
