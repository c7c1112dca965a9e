/**
 * Slurm's associations (sacctmgr): accounts in a tree (organisation -> group -> project), users (token owners)
 * in accounts with a default account, and their limits. Submit limits (MaxSubmitJobs, MaxWall) are checked when
 * a job is submitted; running limits (MaxJobs, GrpTRES=cpu, GrpTRES=gres/gpu, GrpTRESMins=cpu) by the
 * scheduling pass, and again inside its placing statement under the association rows' locks, so that
 * concurrent passes cannot go over them. An account's limits cover the jobs of every account under it.
 */

import { type SQL, sql } from 'drizzle-orm';
import { z } from 'zod';
import { recordAudit } from './audit.ts';
import { label, type Principal } from './auth.ts';
import type { Context } from './context.ts';
import { conflict, invalid, notFound } from './errors.ts';
import type { Planner, Wait } from './placement.ts';
import type { ConductorConfig, Database, UsageResetPeriod } from './ports.ts';
import { pgArray, query, queryOne } from './sql.ts';
import { parseTimeLimit } from './time-limit.ts';

type Tx = Parameters<typeof query>[0];

/** Deepest account tree walked (a guard: the API refuses cycles). */
const MAX_DEPTH = 64;

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;
const accountName = z
  .string()
  .min(1)
  .max(100, 'account names are at most 100 characters')
  .regex(NAME, 'account names are letters, digits, ".", "_" and "-"');
export const accountNameParam = z.strictObject({ name: accountName });
export const accountUserParams = z.strictObject({ name: accountName, user: label('user') });

const count = (field: string) =>
  z
    .number({ error: `${field} is a whole number from 0, or null for no limit` })
    .int(`${field} must be a whole number`)
    .min(0, `${field} is at least 0 (null: no limit)`)
    .max(2_147_483_647, `${field} is at most 2147483647`)
    .nullable()
    .optional();
const wall = z
  .union([z.number().positive(), z.string().max(32)], {
    error: 'max_wall is minutes, or a Slurm time such as "30", "1:30:00" or "1-00:00:00"; null: no limit',
  })
  .nullable()
  .optional();

const limitFields = {
  fairshare: z
    .number({ error: 'fairshare is a whole number of shares from 0 to 1000000' })
    .int('fairshare must be a whole number')
    .min(0, 'fairshare is at least 0')
    .max(1_000_000, 'fairshare is at most 1000000')
    .optional(),
  max_jobs: count('max_jobs'),
  max_submit_jobs: count('max_submit_jobs'),
  grp_cpus: count('grp_cpus'),
  grp_gpus: count('grp_gpus'),
  max_wall: wall,
  grp_cpu_mins: z
    .number({ error: 'grp_cpu_mins is a whole number of CPU-minutes, or null for no limit' })
    .int('grp_cpu_mins must be a whole number')
    .min(0, 'grp_cpu_mins is at least 0 (null: no limit)')
    .max(Number.MAX_SAFE_INTEGER)
    .nullable()
    .optional(),
};

export const accountInput = z.strictObject({
  parent: accountName.nullable().optional(),
  description: z.string().max(1000, 'description is at most 1000 characters').optional(),
  ...limitFields,
});
export type AccountInput = z.infer<typeof accountInput>;

export const accountUserInput = z.strictObject({
  /** The user's default account: the one their jobs are charged to when they name none. */
  default: z.boolean({ error: 'default is true or false' }).optional(),
  ...limitFields,
});
export type AccountUserInput = z.infer<typeof accountUserInput>;

const LIMIT_COLUMNS = [
  'max_jobs',
  'max_submit_jobs',
  'grp_cpus',
  'grp_gpus',
  'max_wall_s',
  'grp_cpu_mins',
] as const;

interface LimitRow {
  fairshare: number;
  max_jobs: number | null;
  max_submit_jobs: number | null;
  grp_cpus: number | null;
  grp_gpus: number | null;
  max_wall_s: number | null;
  grp_cpu_mins: number | string | null;
}
interface AccountRow extends LimitRow {
  name: string;
  parent: string | null;
  description: string;
}
interface UserRow extends LimitRow {
  account: string;
  user_name: string;
  is_default: boolean;
}

const num = (v: number | string | null) => (v === null ? null : Number(v));
const limitsView = (row: LimitRow) => ({
  fairshare: Number(row.fairshare),
  max_jobs: num(row.max_jobs),
  max_submit_jobs: num(row.max_submit_jobs),
  grp_cpus: num(row.grp_cpus),
  grp_gpus: num(row.grp_gpus),
  /** Minutes. */
  max_wall: row.max_wall_s === null ? null : Number(row.max_wall_s) / 60,
  grp_cpu_mins: num(row.grp_cpu_mins),
});
const userView = (row: UserRow) => ({ user: row.user_name, default: row.is_default, ...limitsView(row) });
export type AccountUserView = ReturnType<typeof userView>;
const accountView = (row: AccountRow, users: UserRow[]) => ({
  name: row.name,
  parent: row.parent,
  description: row.description,
  ...limitsView(row),
  users: users.map(userView),
});
export type AccountView = ReturnType<typeof accountView>;

const ACCOUNT_COLUMNS = sql`name, parent, description, fairshare, ${sql.raw(LIMIT_COLUMNS.join(', '))}`;
const USER_COLUMNS = sql`account, user_name, is_default, fairshare, ${sql.raw(LIMIT_COLUMNS.join(', '))}`;

/** Every account, parents before their children (then by name), each with its users. */
export async function listAccounts(ctx: Context): Promise<AccountView[]> {
  const rows = await query<AccountRow & { path: string }>(
    ctx.db,
    sql`WITH RECURSIVE tree AS (
          SELECT name, name::text AS path, 1 AS depth FROM accounts WHERE parent IS NULL
          UNION ALL
          SELECT a.name, t.path || '/' || a.name, t.depth + 1 FROM tree t JOIN accounts a ON a.parent = t.name
          WHERE t.depth < ${MAX_DEPTH}
        )
        SELECT ${ACCOUNT_COLUMNS}, t.path FROM accounts JOIN tree t USING (name) ORDER BY t.path`,
  );
  const users = await query<UserRow>(
    ctx.db,
    sql`SELECT ${USER_COLUMNS} FROM account_users ORDER BY account, user_name`,
  );
  return rows.map((r) =>
    accountView(
      r,
      users.filter((u) => u.account === r.name),
    ),
  );
}

export async function getAccount(ctx: Context, name: string): Promise<AccountView> {
  const row = await queryOne<AccountRow>(
    ctx.db,
    sql`SELECT ${ACCOUNT_COLUMNS} FROM accounts WHERE name = ${name}`,
  );
  if (!row) throw notFound('account_not_found', `No account ${name}`);
  const users = await query<UserRow>(
    ctx.db,
    sql`SELECT ${USER_COLUMNS} FROM account_users WHERE account = ${name} ORDER BY user_name`,
  );
  return accountView(row, users);
}

/** The columns a create-or-change writes: those given. */
function limitSet(input: AccountUserInput | AccountInput): Record<string, unknown> {
  const set: Record<string, unknown> = {};
  for (const field of [
    'fairshare',
    'max_jobs',
    'max_submit_jobs',
    'grp_cpus',
    'grp_gpus',
    'grp_cpu_mins',
  ] as const) {
    if (input[field] !== undefined) set[field] = input[field];
  }
  if (input.max_wall !== undefined) {
    const s = input.max_wall === null ? null : parseTimeLimit(input.max_wall);
    if (input.max_wall !== null && (s === null || s < 1))
      throw invalid('invalid_request', 'max_wall is minutes, or a Slurm time such as "1:30:00"');
    set.max_wall_s = s;
  }
  return set;
}

/** INSERT ... ON CONFLICT DO UPDATE of the columns given (`set`) into `table` keyed by `key`. */
function upsert(table: string, key: Record<string, unknown>, set: Record<string, unknown>): SQL {
  const columns = [...Object.keys(key), ...Object.keys(set)];
  const values = [...Object.values(key), ...Object.values(set)];
  const assignments = Object.keys(set).map((c) => sql`${sql.identifier(c)} = excluded.${sql.identifier(c)}`);
  return sql`INSERT INTO ${sql.identifier(table)} (${sql.join(
    columns.map((c) => sql.identifier(c)),
    sql`, `,
  )}) VALUES (${sql.join(
    values.map((v) => sql`${v}`),
    sql`, `,
  )})
    ON CONFLICT (${sql.join(
      Object.keys(key).map((c) => sql.identifier(c)),
      sql`, `,
    )}) ${assignments.length > 0 ? sql`DO UPDATE SET ${sql.join(assignments, sql`, `)}` : sql`DO NOTHING`}`;
}

/**
 * Creates an account or changes the fields given (sacctmgr add/modify account). A parent must exist and may
 * not be the account itself or one under it (400 invalid_parent).
 */
export async function putAccount(
  ctx: Context,
  name: string,
  input: AccountInput,
  caller: Principal,
): Promise<AccountView> {
  const set = limitSet(input);
  if (input.description !== undefined) set.description = input.description;
  if (input.parent !== undefined) set.parent = input.parent;
  await ctx.db.transaction(async (tx) => {
    if (input.parent) {
      // The parent's chain, locked: a concurrent move cannot close a cycle behind this check.
      const chain = await query<{ name: string }>(
        tx,
        sql`WITH RECURSIVE up AS (
              SELECT name, parent, 1 AS depth FROM accounts WHERE name = ${input.parent}
              UNION ALL
              SELECT a.name, a.parent, up.depth + 1 FROM up JOIN accounts a ON a.name = up.parent
              WHERE up.depth < ${MAX_DEPTH}
            )
            SELECT a.name FROM accounts a WHERE a.name IN (SELECT name FROM up) ORDER BY a.name FOR NO KEY UPDATE`,
      );
      if (chain.length === 0) throw invalid('invalid_parent', `parent: no account ${input.parent}`);
      if (chain.some((a) => a.name === name))
        throw invalid('invalid_parent', `parent: ${input.parent} is ${name} or an account under it`);
    }
    await query(tx, upsert('accounts', { name }, set));
  });
  await recordAudit(ctx.db, caller, 'account.put', `account:${name}`, { ...input });
  ctx.defer(ctx.requestSchedule());
  return getAccount(ctx, name);
}

/** Deletes an account with no account under it and no job pending or running on it; its users go with it. */
export async function deleteAccount(ctx: Context, name: string, caller: Principal): Promise<AccountView> {
  const before = await getAccount(ctx, name);
  const row = await queryOne<{ deleted: boolean; children: number | string; jobs: number | string }>(
    ctx.db,
    sql`WITH children AS (SELECT count(*) AS n FROM accounts WHERE parent = ${name}),
        busy AS (SELECT count(*) AS n FROM jobs WHERE state IN ('PENDING', 'RUNNING') AND account = ${name}),
        gone AS (
          DELETE FROM accounts WHERE name = ${name} AND (SELECT n FROM children) = 0 AND (SELECT n FROM busy) = 0
          RETURNING 1
        )
        SELECT EXISTS (SELECT 1 FROM gone) AS deleted, (SELECT n FROM children) AS children,
               (SELECT n FROM busy) AS jobs`,
  );
  if (!row?.deleted) {
    if (Number(row?.children) > 0)
      throw conflict('account_has_children', `accounts are under ${name}: delete or move them first`);
    throw conflict(
      'account_in_use',
      `${Number(row?.jobs ?? 0)} waiting or running jobs are charged to ${name}`,
    );
  }
  await recordAudit(ctx.db, caller, 'account.delete', `account:${name}`, {});
  return before;
}

/**
 * Adds a user to an account or changes their association (sacctmgr add/modify user). `default: true` makes
 * it their default account (the one before stops being it); a user's first account is their default.
 */
export async function putAccountUser(
  ctx: Context,
  account: string,
  user: string,
  input: AccountUserInput,
  caller: Principal,
): Promise<AccountUserView> {
  const set = limitSet(input);
  await ctx.db.transaction(async (tx) => {
    const exists = await queryOne(tx, sql`SELECT 1 FROM accounts WHERE name = ${account} FOR KEY SHARE`);
    if (!exists) throw notFound('account_not_found', `No account ${account}`);
    const others = await query<{ account: string }>(
      tx,
      sql`SELECT account FROM account_users WHERE user_name = ${user} AND account <> ${account} ORDER BY account FOR UPDATE`,
    );
    const makeDefault = input.default ?? (others.length === 0 ? true : undefined);
    if (makeDefault)
      await query(
        tx,
        sql`UPDATE account_users SET is_default = false WHERE user_name = ${user} AND is_default`,
      );
    if (makeDefault !== undefined) set.is_default = makeDefault;
    await query(tx, upsert('account_users', { account, user_name: user }, set));
  });
  await recordAudit(ctx.db, caller, 'account.user.put', `account:${account}`, { user, ...input });
  ctx.defer(ctx.requestSchedule());
  const row = await queryOne<UserRow>(
    ctx.db,
    sql`SELECT ${USER_COLUMNS} FROM account_users WHERE account = ${account} AND user_name = ${user}`,
  );
  return userView(row as UserRow);
}

/** Removes a user from an account (sacctmgr delete user ... account=). */
export async function deleteAccountUser(
  ctx: Context,
  account: string,
  user: string,
  caller: Principal,
): Promise<AccountUserView> {
  const row = await queryOne<UserRow>(
    ctx.db,
    sql`DELETE FROM account_users WHERE account = ${account} AND user_name = ${user} RETURNING ${USER_COLUMNS}`,
  );
  if (!row) throw notFound('account_user_not_found', `User ${user} is not in account ${account}`);
  await recordAudit(ctx.db, caller, 'account.user.delete', `account:${account}`, { user });
  return userView(row);
}

/**
 * Each account's shares and parent, for fair-share (an account without a row has none: callers treat every
 * account seen alike when the map is empty).
 */
export async function accountShares(tx: Tx): Promise<Map<string, { shares: number; parent: string | null }>> {
  const rows = await query<{ name: string; fairshare: number; parent: string | null }>(
    tx,
    sql`SELECT name, fairshare, parent FROM accounts`,
  );
  return new Map(rows.map((r) => [r.name, { shares: Number(r.fairshare), parent: r.parent }]));
}

// --- Submission ---

/** sbatch's words for an account its owner may not use. */
export const INVALID_ACCOUNT = 'Invalid account or account/partition combination specified';
/** sbatch's words for a job over a submit limit. */
const POLICY_VIOLATION =
  "Job violates accounting/QOS policy (job submit limit, user's size and/or time limits)";

/** What a submission is charged to, as submitJob needs it. */
export interface Charge {
  /** The account (given, else the owner's default; null: none). */
  account: string | null;
  /** The smallest MaxWall over the account's chain and the user's association (seconds; null: none). */
  maxWallS: number | null;
  /** Some association of the chain limits submitted jobs: the insert must run under lockSubmitLimits. */
  submitLimited: boolean;
}

/**
 * The account each job of a submission is charged to, and the submit limits that apply: the account given,
 * else the owner's default account. With enforcement on (AccountingStorageEnforce=associations) the owner must
 * belong to it: 400 invalid_account otherwise, naming the field. One read, none when nothing is to look up.
 */
export async function chargeAccounts(
  db: Database,
  config: Pick<ConductorConfig, 'enforceAssociations'>,
  owner: string | null,
  given: readonly (string | undefined)[],
  field: (index: number) => string,
): Promise<Charge[]> {
  const named = [...new Set(given.filter((a): a is string => a !== undefined))];
  const rows = await query<{
    default_account: string | null;
    memberships: string[] | string | null;
    limits: { account: string; max_wall_s: number | null; submit_limited: boolean }[] | string | null;
  }>(
    db,
    sql`WITH RECURSIVE dflt AS (
          SELECT account FROM account_users WHERE user_name = ${owner ?? ''} AND is_default
        ),
        wanted AS (
          SELECT unnest(${pgArray(named)}::text[]) AS account UNION SELECT account FROM dflt
        ),
        chain AS (
          SELECT w.account AS leaf, a.name, a.parent, 1 AS depth FROM wanted w JOIN accounts a ON a.name = w.account
          UNION ALL
          SELECT c.leaf, a.name, a.parent, c.depth + 1 FROM chain c JOIN accounts a ON a.name = c.parent
          WHERE c.depth < ${MAX_DEPTH}
        ),
        limits AS (
          SELECT c.leaf AS account, min(a.max_wall_s) AS max_wall_s, bool_or(a.max_submit_jobs IS NOT NULL) AS submit_limited
          FROM chain c JOIN accounts a ON a.name = c.name GROUP BY c.leaf
          UNION ALL
          SELECT u.account, u.max_wall_s, u.max_submit_jobs IS NOT NULL FROM account_users u
          WHERE u.user_name = ${owner ?? ''} AND u.account IN (SELECT account FROM wanted)
        )
        SELECT (SELECT account FROM dflt) AS default_account,
               (SELECT array_agg(account) FROM account_users
                WHERE user_name = ${owner ?? ''} AND account IN (SELECT account FROM wanted)) AS memberships,
               (SELECT json_agg(l) FROM limits l WHERE l.max_wall_s IS NOT NULL OR l.submit_limited) AS limits`,
  );
  const row = rows[0];
  const members = new Set(
    typeof row?.memberships === 'string'
      ? row.memberships
          .replace(/^\{|\}$/g, '')
          .split(',')
          .filter((m) => m !== '')
      : (row?.memberships ?? []),
  );
  const limits = typeof row?.limits === 'string' ? JSON.parse(row.limits) : (row?.limits ?? []);
  return given.map((g, k) => {
    const account = g ?? row?.default_account ?? null;
    if (config.enforceAssociations && (account === null || !members.has(account))) {
      throw invalid(
        'invalid_account',
        `${field(k)}: ${INVALID_ACCOUNT} (${
          account === null
            ? `${owner ?? 'this caller'} has no default account: name one`
            : `${owner ?? 'this caller'} is not a user of account ${account}`
        })`,
      );
    }
    const mine = (limits as { account: string; max_wall_s: number | null; submit_limited: boolean }[]).filter(
      (l) => l.account === account,
    );
    const walls = mine.map((l) => l.max_wall_s).filter((w): w is number => w !== null);
    return {
      account,
      maxWallS: walls.length > 0 ? Math.min(...walls.map(Number)) : null,
      submitLimited: mine.some((l) => l.submit_limited),
    };
  });
}

/**
 * MaxWall: a job without a time limit gets the association's; one over it is refused (400, Slurm's reason
 * AssocMaxWallDurationPerJobLimit). Returns the time limit to store.
 */
export function wallLimit(charge: Charge, timeLimitS: number | null, field: string): number | null {
  if (charge.maxWallS === null) return timeLimitS;
  if (timeLimitS === null) return charge.maxWallS;
  if (timeLimitS > charge.maxWallS) {
    throw invalid(
      'job_over_limit',
      `${field}: ${POLICY_VIOLATION}: time limit ${timeLimitS / 60} min is over account ${charge.account}'s MaxWall of ${charge.maxWallS / 60} min (AssocMaxWallDurationPerJobLimit)`,
      { reason: 'AssocMaxWallDurationPerJobLimit' },
    );
  }
  return timeLimitS;
}

/**
 * MaxSubmitJobs, in the submitting transaction, before its insert: locks the limited association rows of the
 * accounts charged (in name order), then counts their pending and running jobs (a statement of its own, so
 * that it sees every submission committed before the lock was granted) and refuses (400 job_over_limit,
 * Slurm's AssocMaxSubmitJobLimit) when `jobs[k]` more would go over.
 */
export async function lockSubmitLimits(
  tx: Tx,
  owner: string | null,
  charges: readonly { account: string; jobs: number }[],
): Promise<void> {
  const accounts = [...new Set(charges.map((c) => c.account))];
  const pairs = sql`pairs AS (SELECT DISTINCT unnest(${pgArray(accounts)}::text[]) AS account, ${owner ?? ''}::text AS owner)`;
  const limited = await query<{ key: string }>(
    tx,
    sql`WITH RECURSIVE ${pairs}, ${associationCtes('max_submit_jobs')}
        SELECT DISTINCT key FROM assoc ORDER BY key`,
  );
  if (limited.length === 0) return;
  await lockAssociations(
    tx,
    limited.map((l) => l.key),
  );
  const over = await query<{ account: string; key: string; limit: number; used: number | string }>(
    tx,
    sql`WITH RECURSIVE ${pairs}, ${associationCtes('max_submit_jobs')},
        wanted AS (SELECT * FROM unnest(${pgArray(charges.map((c) => c.account))}::text[], ${pgArray(charges.map((c) => c.jobs))}::int[]) AS w(account, n)),
        used AS (
          SELECT u.key, count(*) AS n FROM under u
          JOIN jobs j ON j.account = u.name AND j.state IN ('PENDING', 'RUNNING')
            AND (u.user_name IS NULL OR j.owner = u.user_name)
          GROUP BY u.key
        )
        SELECT a.account, a.key, a.max_submit_jobs AS limit, coalesce(used.n, 0) AS used
        FROM assoc a LEFT JOIN used ON used.key = a.key
        WHERE coalesce(used.n, 0) + (SELECT sum(w.n) FROM wanted w WHERE w.account IN (
          SELECT p.account FROM assoc p WHERE p.key = a.key)) > a.max_submit_jobs
        LIMIT 1`,
  );
  const first = over[0];
  if (first) {
    throw invalid(
      'job_over_limit',
      `${POLICY_VIOLATION}: ${describeKey(first.key)} allows ${first.limit} jobs pending or running at once and has ${Number(first.used)} (AssocMaxSubmitJobLimit)`,
      { reason: 'AssocMaxSubmitJobLimit', limit: Number(first.limit) },
    );
  }
}

// --- Scheduling ---

/** An association's key: `a:<account>` or `u:<account>:<user>`. */
const describeKey = (key: string) => {
  if (key.startsWith('a:')) return `account ${key.slice(2)}`;
  const [account, ...user] = key.slice(2).split(':');
  return `user ${user.join(':')} in account ${account}`;
};

/**
 * CTEs (of a WITH RECURSIVE) over `pairs(account, owner)`: `assoc(account, owner, key, root, user_name, depth,
 * <limits>)`, every association limiting the pair's jobs with a limit among `columns` set: the owner's user
 * association (depth 0), then the accounts of its chain from the job's own up (as Slurm checks them); and `under(key, name, user_name)`: the accounts whose jobs count against each
 * (an account and every one under it; a user association: its account, that user's jobs only).
 */
function associationCtes(...columns: string[]): SQL {
  const any = (t: string) => sql.raw(columns.map((c) => `${t}.${c} IS NOT NULL`).join(' OR '));
  const cols = (t: string) => sql.raw(columns.map((c) => `${t}.${c}`).join(', '));
  return sql`chain AS (
      SELECT p.account AS leaf, a.name, a.parent, 1 AS depth
      FROM (SELECT DISTINCT account FROM pairs) p JOIN accounts a ON a.name = p.account
      UNION ALL
      SELECT c.leaf, a.name, a.parent, c.depth + 1 FROM chain c JOIN accounts a ON a.name = c.parent
      WHERE c.depth < ${MAX_DEPTH}
    ),
    assoc AS (
      SELECT p.account, p.owner, 'a:' || a.name AS key, a.name AS root, NULL::text AS user_name, c.depth, ${cols('a')}
      FROM pairs p JOIN chain c ON c.leaf = p.account JOIN accounts a ON a.name = c.name
      WHERE ${any('a')}
      UNION ALL
      SELECT p.account, p.owner, 'u:' || u.account || ':' || u.user_name, u.account, u.user_name, 0, ${cols('u')}
      FROM pairs p JOIN account_users u ON u.account = p.account AND u.user_name = p.owner
      WHERE ${any('u')}
    ),
    under AS (
      SELECT DISTINCT key, root AS name, user_name, 1 AS depth FROM assoc
      UNION ALL
      SELECT u.key, a.name, u.user_name, u.depth + 1 FROM under u JOIN accounts a ON a.parent = u.name
      WHERE u.user_name IS NULL AND u.depth < ${MAX_DEPTH}
    )`;
}

/** Where the CPU-minutes counted against grp_cpu_mins start (PriorityUsageResetPeriod). */
const periodStart = (period: UsageResetPeriod): SQL => {
  if (period === 'none') return sql`'-infinity'::timestamptz`;
  const unit = { daily: 'day', weekly: 'week', monthly: 'month', quarterly: 'quarter', yearly: 'year' }[
    period
  ];
  return sql`(date_trunc(${unit}, now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')`;
};

const RUNNING_LIMITS = ['max_jobs', 'grp_cpus', 'grp_gpus', 'grp_cpu_mins'];

/**
 * CTEs after associationCtes(RUNNING_LIMITS): `used(key, jobs, cpus, gpus, mins)`, what runs against each
 * association now: its running jobs, their allocated CPUs and GPUs, and the CPU-minutes charged since the
 * period start: ended attempts' (CPUs x run time, from the daily usage roll-ups: every period starts at a UTC
 * midnight), and each running job's CPUs x its time limit (or its run time so far, when longer or when it has
 * none): a job may use all of its time limit.
 */
function usedCtes(period: UsageResetPeriod): SQL {
  return sql`running AS (
      SELECT u.key, count(*) AS jobs, sum(coalesce(r.allocated_cpus, j.cpus)) AS cpus,
             sum(bit_count(coalesce(r.gpu_mask, 0)::bit(64))) AS gpus,
             sum(coalesce(r.allocated_cpus, j.cpus) * greatest(coalesce(j.time_limit_s, 0),
                 extract(epoch FROM now() - coalesce(j.start_time, now())))) / 60 AS mins
      FROM under u JOIN jobs j ON j.account = u.name AND j.state = 'RUNNING'
        AND (u.user_name IS NULL OR j.owner = u.user_name)
      LEFT JOIN resource_allocations r ON r.job_id = j.id AND NOT r.released
      GROUP BY u.key
    ),
    spent AS (
      SELECT u.key, sum(d.cpu_seconds) / 60 AS mins
      FROM under u JOIN (SELECT DISTINCT key FROM assoc WHERE grp_cpu_mins IS NOT NULL) k ON k.key = u.key
      JOIN usage_daily d ON d.account = u.name AND (u.user_name IS NULL OR d.owner = u.user_name)
        AND d.bucket >= ${periodStart(period)}
      GROUP BY u.key
    ),
    used AS (
      SELECT k.key, coalesce(r.jobs, 0) AS jobs, coalesce(r.cpus, 0) AS cpus, coalesce(r.gpus, 0) AS gpus,
             coalesce(r.mins, 0) + coalesce(s.mins, 0) AS mins
      FROM (SELECT DISTINCT key FROM assoc) k LEFT JOIN running r ON r.key = k.key LEFT JOIN spent s ON s.key = k.key
    )`;
}

/**
 * Locks association rows by key (`a:<account>`, `u:<account>:<user>`), accounts then users, each in name
 * order: run after the workers (and arrays) are locked, as every pass does, so that passes queue.
 */
export async function lockAssociations(tx: Tx, keys: readonly string[]): Promise<void> {
  const accounts = keys.filter((k) => k.startsWith('a:')).map((k) => k.slice(2));
  const users = keys
    .filter((k) => k.startsWith('u:'))
    .map((k) => {
      const [account = '', ...user] = k.slice(2).split(':');
      return [account, user.join(':')] as const;
    });
  if (accounts.length > 0) {
    await query(
      tx,
      sql`SELECT name FROM accounts WHERE name = ANY(${pgArray(accounts)}::text[]) ORDER BY name FOR NO KEY UPDATE`,
    );
  }
  if (users.length > 0) {
    await query(
      tx,
      sql`SELECT account FROM account_users
          WHERE (account, user_name) IN (SELECT * FROM unnest(${pgArray(users.map((u) => u[0]))}::text[], ${pgArray(users.map((u) => u[1]))}::text[]))
          ORDER BY account, user_name FOR NO KEY UPDATE`,
    );
  }
}

interface Association {
  key: string;
  maxJobs: number | null;
  grpCpus: number | null;
  grpGpus: number | null;
  grpCpuMins: number | null;
  used: { jobs: number; cpus: number; gpus: number; mins: number };
}

/** A job as the limits see it. */
export interface ChargedJob {
  id: number;
  account: string | null;
  owner: string | null;
  cpus: number;
  gpus: number;
  timeLimitS: number | null;
}

function charge(a: Association, job: ChargedJob): void {
  a.used.jobs++;
  a.used.cpus += job.cpus;
  a.used.gpus += job.gpus;
  a.used.mins += (job.cpus * (job.timeLimitS ?? 0)) / 60;
}

const pairKey = (account: string, owner: string | null) => `${account}\u0000${owner ?? ''}`;

/** The first limit of `a` that `job` would go over, as a wait; null: none. */
function overLimit(a: Association, job: ChargedJob): Wait | null {
  const who = describeKey(a.key);
  const mins = (job.cpus * (job.timeLimitS ?? 0)) / 60;
  if (a.maxJobs !== null && a.used.jobs + 1 > a.maxJobs)
    return {
      reason: 'AssocMaxJobsLimit',
      detail: `${who} runs at most ${a.maxJobs} jobs at once (MaxJobs) and has ${a.used.jobs} running`,
    };
  if (a.grpCpus !== null && a.used.cpus + job.cpus > a.grpCpus)
    return {
      reason: 'AssocGrpCpuLimit',
      detail: `${who} uses at most ${a.grpCpus} CPUs at once (GrpTRES=cpu) and has ${a.used.cpus} in use; this job needs ${job.cpus}`,
    };
  if (a.grpGpus !== null && job.gpus > 0 && a.used.gpus + job.gpus > a.grpGpus)
    return {
      reason: 'AssocGrpGRES',
      detail: `${who} uses at most ${a.grpGpus} GPUs at once (GrpTRES=gres/gpu) and has ${a.used.gpus} in use; this job needs ${job.gpus}`,
    };
  if (a.grpCpuMins !== null && (a.used.mins >= a.grpCpuMins || a.used.mins + mins > a.grpCpuMins))
    return {
      reason: 'AssocGrpCPUMinutesLimit',
      detail: `${who} may use ${a.grpCpuMins} CPU-minutes (GrpTRESMins=cpu) and has ${Math.ceil(a.used.mins)} charged; this job may use ${Math.ceil(mins)}`,
    };
  return null;
}

/**
 * A pass's view of the running limits of the associations whose jobs it reads (like arrayCaps for `%N`): a
 * job whose association is at a limit waits with Slurm's reason and reserves nothing. The planner's view only:
 * the placing statement counts again under the association rows' locks (lockFor, placingCheck).
 */
export function associationLimits(tx: Tx, config: Pick<ConductorConfig, 'usageResetPeriod'>) {
  const byPair = new Map<string, string[]>();
  const associations = new Map<string, Association>();
  let base = new Map<string, Association['used']>();
  const limited = new Map<number, Wait>();

  return {
    /** Reads the limits and usage of the pairs among `jobs` not read yet (one statement; none when none). */
    async load(jobs: Iterable<{ account: string | null; owner: string | null }>): Promise<void> {
      const fresh = new Map<string, [string, string]>();
      for (const j of jobs) {
        if (j.account === null) continue;
        const k = pairKey(j.account, j.owner);
        if (!byPair.has(k)) fresh.set(k, [j.account, j.owner ?? '']);
      }
      if (fresh.size === 0) return;
      for (const k of fresh.keys()) byPair.set(k, []);
      const pairs = [...fresh.values()];
      const rows = await query<{
        account: string;
        owner: string;
        key: string;
        max_jobs: number | null;
        grp_cpus: number | null;
        grp_gpus: number | null;
        grp_cpu_mins: number | string | null;
        jobs: number | string;
        cpus: number | string;
        gpus: number | string;
        mins: number | string;
      }>(
        tx,
        sql`WITH RECURSIVE pairs AS (
              SELECT * FROM unnest(${pgArray(pairs.map((p) => p[0]))}::text[], ${pgArray(pairs.map((p) => p[1]))}::text[])
                AS p(account, owner)
            ),
            ${associationCtes(...RUNNING_LIMITS)}, ${usedCtes(config.usageResetPeriod)}
            SELECT a.account, a.owner, a.key, a.max_jobs, a.grp_cpus, a.grp_gpus, a.grp_cpu_mins,
                   u.jobs, u.cpus, u.gpus, u.mins
            FROM assoc a JOIN used u ON u.key = a.key
            ORDER BY a.account, a.owner, a.depth`,
      );
      for (const r of rows) {
        byPair.get(pairKey(r.account, r.owner || null))?.push(r.key);
        if (associations.has(r.key)) continue;
        const used = {
          jobs: Number(r.jobs),
          cpus: Number(r.cpus),
          gpus: Number(r.gpus),
          mins: Number(r.mins),
        };
        associations.set(r.key, {
          key: r.key,
          maxJobs: num(r.max_jobs),
          grpCpus: num(r.grp_cpus),
          grpGpus: num(r.grp_gpus),
          grpCpuMins: num(r.grp_cpu_mins),
          used: { ...used },
        });
        base.set(r.key, used);
      }
    },
    /**
     * Considers `job` with `planner` (through `consider`) unless one of its associations is at a limit: then
     * it waits with the limit's reason. Returns false when it was held back.
     */
    consider(planner: Planner, job: ChargedJob, consider: () => boolean): boolean {
      const keys = job.account === null ? [] : (byPair.get(pairKey(job.account, job.owner)) ?? []);
      const mine = keys.map((k) => associations.get(k)).filter((a): a is Association => a !== undefined);
      for (const a of mine) {
        const wait = overLimit(a, job);
        if (wait) {
          limited.set(job.id, wait);
          return false;
        }
      }
      const before = planner.placed;
      const considered = consider();
      if (planner.placed > before) for (const a of mine) charge(a, job);
      return considered;
    },
    /**
     * A job holding a reservation, which the planner places first: false (it waits with the limit's reason and
     * gives its reservation up) when one of its associations is at a limit; else charged as if placed.
     */
    hold(job: ChargedJob): boolean {
      const keys = job.account === null ? [] : (byPair.get(pairKey(job.account, job.owner)) ?? []);
      const mine = keys.map((k) => associations.get(k)).filter((a): a is Association => a !== undefined);
      for (const a of mine) {
        const wait = overLimit(a, job);
        if (wait) {
          limited.set(job.id, wait);
          return false;
        }
      }
      for (const a of mine) charge(a, job);
      return true;
    },
    /** Starts over for a new plan of the same rows (the usage from the database, none placed). */
    reset(): void {
      for (const [key, a] of associations) a.used = { ...(base.get(key) ?? a.used) };
      limited.clear();
    },
    /** The jobs held back by a limit, with why. */
    get limited(): ReadonlyMap<number, Wait> {
      return limited;
    },
    /** The keys of the limited associations of `jobs` (the rows the placing transaction locks). */
    keysOf(jobs: Iterable<{ account: string | null; owner: string | null }>): string[] {
      const keys = new Set<string>();
      for (const j of jobs) {
        if (j.account === null) continue;
        for (const k of byPair.get(pairKey(j.account, j.owner)) ?? []) keys.add(k);
      }
      return [...keys].sort();
    },
    clear(): void {
      byPair.clear();
      associations.clear();
      base = new Map();
      limited.clear();
    },
  };
}

/**
 * CTEs for the placing statement (functions/domain/scheduler.ts commitPlacements), over its placements `p`
 * (job_id, cpus, gpu_mask, acct, own, tl, ord): `over(job_id)`, the placements that would take an association
 * over a running limit, counted from the database under the rows' locks (`locked`: the keys locked) plus the
 * placements before them in plan order; and any placement of an association that is limited but was not
 * locked (its limit was set, or its account moved, after the pass read them). With no limited association,
 * an empty `over`.
 */
export function placingCheck(period: UsageResetPeriod, locked: readonly string[]): SQL {
  if (locked.length === 0) return sql`over AS (SELECT NULL::bigint AS job_id WHERE false)`;
  return sql`pairs AS (SELECT DISTINCT acct AS account, own AS owner FROM p WHERE acct <> ''),
    ${associationCtes(...RUNNING_LIMITS)}, ${usedCtes(period)},
    charged AS (
      SELECT p.job_id, a.key, a.max_jobs, a.grp_cpus, a.grp_gpus, a.grp_cpu_mins,
             bit_count(p.gpu_mask::bit(64)) AS own_g, count(*) OVER w AS n, sum(p.cpus) OVER w AS c, sum(bit_count(p.gpu_mask::bit(64))) OVER w AS g,
             sum(p.cpus::numeric * p.tl) OVER w / 60 AS m
      FROM p JOIN assoc a ON a.account = p.acct AND a.owner = p.own
      WINDOW w AS (PARTITION BY a.key ORDER BY p.ord)
    ),
    over AS (
      SELECT c.job_id FROM charged c JOIN used u ON u.key = c.key
      WHERE NOT (c.key = ANY(${pgArray(locked)}::text[]))
         OR u.jobs + c.n > c.max_jobs OR u.cpus + c.c > c.grp_cpus
         OR (c.own_g > 0 AND u.gpus + c.g > c.grp_gpus)
         OR u.mins >= c.grp_cpu_mins OR u.mins + c.m > c.grp_cpu_mins
    )`;
}
