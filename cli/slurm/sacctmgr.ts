/**
 * sacctmgr(1) over Conductor's accounts API: `add|modify|delete|show account|user|assoc` with Slurm's
 * `Key=Value` words (case-insensitive; `where ... set ...` for modify), `-i`, `-n`, `-p`, `-P`, and `show`'s
 * table (right-justified columns, a dashes line) as sacctmgr prints it. A limit of -1 clears it, as in Slurm.
 */
import type { Io } from '../io.ts';
import { apiClient, guarded, has, parseOptions, SLURM_VERSION, SlurmError } from './command.ts';
import type { OptionSpec } from './getopt.ts';

export const SACCTMGR_OPTIONS: readonly OptionSpec[] = [
  {
    long: 'associations',
    short: 's',
    arg: 'none',
    fate: 'warned',
    note: 'show prints associations as they are',
  },
  { long: 'help', short: 'h', arg: 'none', fate: 'honoured', note: 'prints the usage' },
  {
    long: 'immediate',
    short: 'i',
    arg: 'none',
    fate: 'honoured',
    note: 'changes are made at once: nothing is asked',
  },
  { long: 'noheader', short: 'n', arg: 'none', fate: 'honoured', note: 'show prints no header lines' },
  {
    long: 'parsable',
    short: 'p',
    arg: 'none',
    fate: 'honoured',
    note: 'show prints fields with a trailing |',
  },
  { long: 'parsable2', short: 'P', arg: 'none', fate: 'honoured', note: 'show prints fields joined by |' },
  {
    long: 'quiet',
    short: 'Q',
    arg: 'none',
    fate: 'honoured',
    note: 'nothing is printed but errors and show tables',
  },
  {
    long: 'readonly',
    short: 'r',
    arg: 'none',
    fate: 'honoured',
    note: 'refuses any command but show and list',
  },
  {
    long: 'verbose',
    short: 'v',
    arg: 'none',
    fate: 'warned',
    note: 'the answers are already what there is to say',
  },
  { long: 'version', short: 'V', arg: 'none', fate: 'honoured', note: 'prints the Slurm release imitated' },
];

interface Limits {
  fairshare: number;
  max_jobs: number | null;
  max_submit_jobs: number | null;
  grp_cpus: number | null;
  grp_gpus: number | null;
  max_wall: number | null;
  grp_cpu_mins: number | null;
}
interface AccountUser extends Limits {
  user: string;
  default: boolean;
}
interface Account extends Limits {
  name: string;
  parent: string | null;
  description: string;
  users: AccountUser[];
}

const USAGE = `Usage: sacctmgr [-i] [-n] [-p|-P] <command> <entity> [specs]
  add account <name>[,<name>...] [Parent=] [Description=] [Fairshare=] [limits]
  add user <name> Account=<account>[,...] [DefaultAccount=] [Fairshare=] [limits]
  modify account [where] Name=<name> set <specs>     (or: modify account <name> set <specs>)
  modify user [where] Name=<name> [Account=<account>] set <specs>
  delete account <name>[,...]
  delete user <name> [Account=<account>]
  show account|user|assoc [Name=<name>] [Account=<account>] [User=<user>]
limits: MaxJobs= MaxSubmitJobs= MaxWall= GrpTRES=cpu=N,gres/gpu=N GrpTRESMins=cpu=N (-1: no limit)
`;

/** One `Key=Value` word (or a bare value, key ''), the key lowercased. */
interface Spec {
  key: string;
  value: string;
}

const words = (args: string[]): Spec[] =>
  args.map((a) => {
    const eq = a.indexOf('=');
    return eq < 0 ? { key: '', value: a } : { key: a.slice(0, eq).toLowerCase(), value: a.slice(eq + 1) };
  });

const LIMIT_KEYS: Record<string, keyof Limits | 'tres' | 'tresmins'> = {
  fairshare: 'fairshare',
  shares: 'fairshare',
  maxjobs: 'max_jobs',
  maxsubmitjobs: 'max_submit_jobs',
  maxsubmit: 'max_submit_jobs',
  grpcpus: 'grp_cpus',
  maxwall: 'max_wall',
  maxwalldurationperjob: 'max_wall',
  grptres: 'tres',
  grptresmins: 'tresmins',
  grpcpumins: 'grp_cpu_mins',
};

/** A count, or null for -1 (Slurm's "clear it"). */
function limitValue(key: string, value: string): number | null {
  if (value === '-1') return null;
  if (!/^\d+$/.test(value)) throw new SlurmError(`${key}=${value}: a whole number, or -1 for no limit`);
  return Number(value);
}

/** The API body of the limit specs among `specs`; the others are returned for the caller. */
function limitBody(specs: Spec[]): { body: Record<string, unknown>; rest: Spec[] } {
  const body: Record<string, unknown> = {};
  const rest: Spec[] = [];
  for (const s of specs) {
    const field = LIMIT_KEYS[s.key];
    if (!field) {
      rest.push(s);
    } else if (field === 'max_wall') {
      body.max_wall = s.value === '-1' ? null : /^\d+$/.test(s.value) ? Number(s.value) : s.value;
    } else if (field === 'tres' || field === 'tresmins') {
      for (const item of s.value.split(',')) {
        const [name = '', value = ''] = item.split('=');
        const tres = name.toLowerCase();
        const target =
          field === 'tresmins'
            ? tres === 'cpu'
              ? 'grp_cpu_mins'
              : undefined
            : tres === 'cpu'
              ? 'grp_cpus'
              : tres === 'gres/gpu' || tres === 'gpu'
                ? 'grp_gpus'
                : undefined;
        if (!target) {
          throw new SlurmError(
            `${s.key === 'grptres' ? 'GrpTRES' : 'GrpTRESMins'}: ${name} is not tracked here (cpu${field === 'tres' ? ', gres/gpu' : ''})`,
          );
        }
        body[target] = limitValue(name, value);
      }
    } else {
      body[field] = limitValue(s.key, s.value);
      if (field === 'fairshare' && body.fairshare === null)
        throw new SlurmError('Fairshare is a whole number');
    }
  }
  return { body, rest };
}

const take = (specs: Spec[], ...keys: string[]) => specs.find((s) => keys.includes(s.key))?.value;

/** Splits `modify`'s words at `set`: the selection (after an optional `where`) and the changes. */
function whereSet(args: string[]): { where: Spec[]; set: Spec[] } {
  const at = args.findIndex((a) => a.toLowerCase() === 'set');
  if (at < 0) throw new SlurmError('modify needs "set" and what to change');
  const where = args.slice(0, at).filter((a) => a.toLowerCase() !== 'where');
  return { where: words(where), set: words(args.slice(at + 1)) };
}

const unknown = (rest: Spec[]) => {
  if (rest.length > 0)
    throw new SlurmError(
      `Unknown option: ${rest.map((s) => (s.key ? `${s.key}=${s.value}` : s.value)).join(' ')}`,
    );
};

const names = (value: string | undefined, what: string): string[] => {
  const list = (value ?? '').split(',').filter((n) => n !== '');
  if (list.length === 0) throw new SlurmError(`No ${what} name given`);
  return list;
};

const enc = encodeURIComponent;

/** A column of `show`: header, width and value. */
interface Column {
  header: string;
  width: number;
  value: (row: Row) => string;
}
interface Row {
  account: Account;
  user?: AccountUser;
}

const limit = (v: number | null) => (v === null ? '' : String(v));
const wall = (minutes: number | null) => {
  if (minutes === null) return '';
  const s = Math.round(minutes * 60);
  const d = Math.floor(s / 86_400);
  const hms = [Math.floor((s % 86_400) / 3600), Math.floor((s % 3600) / 60), s % 60]
    .map((n) => String(n).padStart(2, '0'))
    .join(':');
  return d > 0 ? `${d}-${hms}` : hms;
};
const limitsOf = (r: Row): Limits => r.user ?? r.account;
const tres = (l: Limits) =>
  [l.grp_cpus === null ? '' : `cpu=${l.grp_cpus}`, l.grp_gpus === null ? '' : `gres/gpu=${l.grp_gpus}`]
    .filter(Boolean)
    .join(',');

const COLUMNS: Record<string, Column> = {
  cluster: { header: 'Cluster', width: 10, value: () => 'conductor' },
  account: { header: 'Account', width: 10, value: (r) => r.account.name },
  user: { header: 'User', width: 10, value: (r) => r.user?.user ?? '' },
  partition: { header: 'Partition', width: 10, value: () => '' },
  parentname: { header: 'Par Name', width: 10, value: (r) => (r.user ? '' : (r.account.parent ?? '')) },
  descr: { header: 'Descr', width: 20, value: (r) => r.account.description },
  share: { header: 'Share', width: 9, value: (r) => String(limitsOf(r).fairshare) },
  fairshare: { header: 'Share', width: 9, value: (r) => String(limitsOf(r).fairshare) },
  grptres: { header: 'GrpTRES', width: 13, value: (r) => tres(limitsOf(r)) },
  grptresmins: {
    header: 'GrpTRESMins',
    width: 13,
    value: (r) => (limitsOf(r).grp_cpu_mins === null ? '' : `cpu=${limitsOf(r).grp_cpu_mins}`),
  },
  maxjobs: { header: 'MaxJobs', width: 7, value: (r) => limit(limitsOf(r).max_jobs) },
  maxsubmit: { header: 'MaxSubmit', width: 9, value: (r) => limit(limitsOf(r).max_submit_jobs) },
  maxsubmitjobs: { header: 'MaxSubmit', width: 9, value: (r) => limit(limitsOf(r).max_submit_jobs) },
  maxwall: { header: 'MaxWall', width: 11, value: (r) => wall(limitsOf(r).max_wall) },
  defaultaccount: {
    header: 'Def Acct',
    width: 10,
    value: (r) => (r.user?.default ? r.account.name : ''),
  },
};

const DEFAULT_FORMATS: Record<string, string[]> = {
  account: ['account', 'descr', 'parentname'],
  user: ['user', 'defaultaccount', 'account'],
  assoc: [
    'cluster',
    'account',
    'user',
    'partition',
    'share',
    'grptres',
    'grptresmins',
    'maxjobs',
    'maxsubmit',
    'maxwall',
  ],
};

function table(rows: Row[], columns: Column[], flags: { header: boolean; parsable: '' | 'p' | 'P' }): string {
  const lines: string[] = [];
  if (flags.parsable) {
    const end = flags.parsable === 'p' ? '|' : '';
    if (flags.header) lines.push(columns.map((c) => c.header).join('|') + end);
    for (const r of rows) lines.push(columns.map((c) => c.value(r)).join('|') + end);
  } else {
    const cell = (text: string, width: number) =>
      text.length > width ? `${text.slice(0, width - 1)}+` : text.padStart(width);
    if (flags.header) {
      lines.push(columns.map((c) => cell(c.header, c.width)).join(' '));
      lines.push(columns.map((c) => '-'.repeat(c.width)).join(' '));
    }
    for (const r of rows) lines.push(columns.map((c) => cell(c.value(r), c.width)).join(' '));
  }
  return lines.length > 0 ? `${lines.join('\n')}\n` : '';
}

const ENTITIES: Record<string, 'account' | 'user' | 'assoc'> = {
  account: 'account',
  accounts: 'account',
  user: 'user',
  users: 'user',
  assoc: 'assoc',
  association: 'assoc',
  associations: 'assoc',
};
/** The commands, for docs/slurm/sacctmgr.md. */
export const SACCTMGR_COMMANDS = `
## Commands

| command | what it does |
| --- | --- |
| \`add account <name>[,...] [Parent=] [Description=] [Fairshare=] [limits]\` | POST /api/v1/accounts/{name} |
| \`add user <name> Account=<a>[,...] [DefaultAccount=] [Fairshare=] [limits]\` | POST /api/v1/accounts/{a}/users/{name} |
| \`modify account [where] Name=<name> set <specs>\` | changes what is given; -1 clears a limit |
| \`modify user [where] Name=<name> [Account=] set <specs>\` | the user's associations (all, or those of Account=); DefaultAccount= moves the default |
| \`delete account <name>[,...]\`, \`delete user <name> [Account=]\` | refused while accounts are under it or jobs are charged to it |
| \`show account|user|assoc [Name=] [Account=] [User=] [format=...]\` | columns: Cluster, Account, User, Partition, ParentName, Descr, Share, GrpTRES, GrpTRESMins, MaxJobs, MaxSubmit, MaxWall, DefaultAccount |

Limits: \`MaxJobs=\`, \`MaxSubmitJobs=\` (\`MaxSubmit=\`), \`MaxWall=\` (minutes or a Slurm time), \`GrpTRES=cpu=N,gres/gpu=N\`
(\`GrpCPUs=\`), \`GrpTRESMins=cpu=N\` (\`GrpCPUMins=\`), \`Fairshare=\`. Conductor has one cluster and no QOS or
partition associations: \`Cluster=\` is accepted and ignored, the other entities (qos, cluster, event...) are not
there.
`;

const VERBS_READING = new Set(['show', 'list']);
const VERBS: Record<string, 'add' | 'modify' | 'delete' | 'show'> = {
  add: 'add',
  create: 'add',
  modify: 'modify',
  update: 'modify',
  delete: 'delete',
  remove: 'delete',
  show: 'show',
  list: 'show',
};

export async function runSacctmgr(argv: string[], io: Io, env: NodeJS.ProcessEnv): Promise<number> {
  let args = argv;
  return guarded('sacctmgr', io, async () => {
    const parsed = parseOptions('sacctmgr', args, SACCTMGR_OPTIONS, io);
    if (has(parsed, 'help')) {
      io.out(USAGE);
      return 0;
    }
    if (has(parsed, 'version')) {
      io.out(`slurm ${SLURM_VERSION}\n`);
      return 0;
    }
    const flags = {
      header: !has(parsed, 'noheader'),
      parsable: (has(parsed, 'parsable2') ? 'P' : has(parsed, 'parsable') ? 'p' : '') as '' | 'p' | 'P',
    };
    if (has(parsed, 'readonly') && !VERBS_READING.has((parsed.positionals[0] ?? '').toLowerCase()))
      throw new SlurmError('--readonly: only show and list are allowed');
    args = parsed.positionals;
    const i = 0;
    const say = (text: string) => {
      if (!has(parsed, 'quiet')) io.out(text);
    };
    const verb = VERBS[(args[i] ?? '').toLowerCase()];
    const entity = ENTITIES[(args[i + 1] ?? '').toLowerCase()];
    if (!verb || !entity) throw new SlurmError(`Unknown command or entity\n${USAGE.trimEnd()}`);
    const rest = args.slice(i + 2);
    const api = apiClient(env);

    if (verb === 'show') {
      const specs = words(rest);
      const format = take(specs, 'format', 'format');
      const name = take(specs, 'name', 'names', '');
      const account = take(specs, 'account', 'accounts') ?? (entity === 'account' ? name : undefined);
      const user = take(specs, 'user', 'users') ?? (entity === 'user' ? name : undefined);
      const { accounts } = await api.request<{ accounts: Account[] }>('GET', '/api/v1/accounts');
      const rows: Row[] = [];
      for (const a of accounts) {
        if (account && !account.split(',').includes(a.name)) continue;
        if (entity !== 'user' && !user) rows.push({ account: a });
        if (entity === 'account') continue;
        for (const u of a.users)
          if (!user || user.split(',').includes(u.user)) rows.push({ account: a, user: u });
      }
      const wanted = format ? format.toLowerCase().split(',') : (DEFAULT_FORMATS[entity] as string[]);
      const columns = wanted.map((f) => {
        const column = COLUMNS[f.split('%')[0] as string];
        if (!column) throw new SlurmError(`Unknown field '${f}'`);
        return column;
      });
      io.out(table(rows, columns, flags));
      return 0;
    }

    if (entity === 'assoc') throw new SlurmError('associations are added and changed as accounts and users');

    if (verb === 'add' && entity === 'account') {
      const specs = words(rest);
      const { body, rest: other } = limitBody(specs);
      const list = names(take(other, '', 'name', 'names'), 'account');
      const parent = take(other, 'parent');
      const description = take(other, 'description');
      unknown(
        other.filter((s) => !['', 'name', 'names', 'parent', 'description', 'cluster'].includes(s.key)),
      );
      for (const name of list) {
        await api.request('POST', `/api/v1/accounts/${enc(name)}`, {
          ...body,
          ...(parent === undefined ? {} : { parent }),
          ...(description === undefined ? {} : { description }),
        });
      }
      say(` Adding Account(s)\n${list.map((n) => `  ${n}\n`).join('')}`);
      return 0;
    }
    if (verb === 'add' && entity === 'user') {
      const { body, rest: other } = limitBody(words(rest));
      const list = names(take(other, '', 'name', 'names'), 'user');
      const dflt = take(other, 'defaultaccount');
      const accounts = (take(other, 'account', 'accounts') ?? dflt ?? '').split(',').filter(Boolean);
      if (accounts.length === 0)
        throw new SlurmError('Need a default account or an Account= for these users');
      unknown(
        other.filter(
          (s) => !['', 'name', 'names', 'account', 'accounts', 'defaultaccount', 'cluster'].includes(s.key),
        ),
      );
      for (const user of list) {
        for (const account of accounts) {
          await api.request('POST', `/api/v1/accounts/${enc(account)}/users/${enc(user)}`, {
            ...body,
            ...(dflt === account ? { default: true } : {}),
          });
        }
      }
      say(
        ` Adding User(s)\n${list.map((n) => `  ${n}\n`).join('')} Associations =\n${list
          .flatMap((u) => accounts.map((a) => `  U = ${u.padEnd(9)} A = ${a.padEnd(10)} C = conductor\n`))
          .join('')}`,
      );
      return 0;
    }
    if (verb === 'modify') {
      const { where, set } = whereSet(rest);
      const { body, rest: other } = limitBody(set);
      const name = names(take(where, 'name', 'names', ''), entity);
      if (entity === 'account') {
        const parent = take(other, 'parent');
        const description = take(other, 'description');
        unknown(other.filter((s) => !['parent', 'description'].includes(s.key)));
        const change = {
          ...body,
          ...(parent === undefined ? {} : { parent }),
          ...(description === undefined ? {} : { description }),
        };
        if (Object.keys(change).length === 0) throw new SlurmError('Nothing to change');
        for (const n of name) {
          await api.request('GET', `/api/v1/accounts/${enc(n)}`);
          await api.request('POST', `/api/v1/accounts/${enc(n)}`, change);
        }
        say(` Modified account...\n${name.map((n) => `  ${n}\n`).join('')}`);
        return 0;
      }
      const dflt = take(other, 'defaultaccount');
      unknown(other.filter((s) => s.key !== 'defaultaccount'));
      const { accounts } = await api.request<{ accounts: Account[] }>('GET', '/api/v1/accounts');
      const only = take(where, 'account', 'accounts')?.split(',');
      const targets = accounts.flatMap((a) =>
        a.users
          .filter((u) => name.includes(u.user) && (!only || only.includes(a.name)))
          .map((u) => ({ account: a.name, user: u.user })),
      );
      if (targets.length === 0 && !dflt) throw new SlurmError('Nothing modified: no such association');
      if (Object.keys(body).length > 0) {
        for (const t of targets) {
          await api.request('POST', `/api/v1/accounts/${enc(t.account)}/users/${enc(t.user)}`, body);
        }
      }
      if (dflt) {
        for (const user of name) {
          await api.request('POST', `/api/v1/accounts/${enc(dflt)}/users/${enc(user)}`, { default: true });
        }
      }
      say(
        ` Modified user associations...\n${targets.map((t) => `  C = conductor    A = ${t.account.padEnd(10)} U = ${t.user}\n`).join('')}`,
      );
      return 0;
    }
    // delete
    const specs = words(rest);
    const list = names(take(specs, '', 'name', 'names'), entity);
    if (entity === 'account') {
      for (const n of list) await api.request('DELETE', `/api/v1/accounts/${enc(n)}`);
      say(` Deleting accounts...\n${list.map((n) => `  ${n}\n`).join('')}`);
      return 0;
    }
    const only = take(specs, 'account', 'accounts')?.split(',');
    const { accounts } = await api.request<{ accounts: Account[] }>('GET', '/api/v1/accounts');
    const targets = accounts.flatMap((a) =>
      a.users
        .filter((u) => list.includes(u.user) && (!only || only.includes(a.name)))
        .map((u) => ({ account: a.name, user: u.user })),
    );
    if (targets.length === 0) throw new SlurmError('Nothing deleted: no such association');
    for (const t of targets)
      await api.request('DELETE', `/api/v1/accounts/${enc(t.account)}/users/${enc(t.user)}`);
    say(
      ` Deleting user associations...\n${targets.map((t) => `  C = conductor    A = ${t.account.padEnd(10)} U = ${t.user}\n`).join('')}`,
    );
    return 0;
  });
}
