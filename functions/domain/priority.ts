import { type SQL, sql } from 'drizzle-orm';
import type { PriorityFactorsColumn } from '../../db/schema.ts';
import { accountShares } from './accounts.ts';
import { type Principal, seesAllJobs } from './auth.ts';
import { fairShareFactors, userFairShares } from './fairshare.ts';
import type { Ports, PriorityConfig } from './ports.ts';
import { pgArray, query } from './sql.ts';
import { decayedUsage, decayedUsageByOwner } from './usage.ts';

/**
 * Slurm's priority/multifactor: a pending job's priority is the sum of its factors (each in [0, 1]) times
 * their weights (CONDUCTOR_PRIORITY_WEIGHT_*), plus the submitter's `priority` (requested_priority, the
 * adjustment: up to CONDUCTOR_PRIORITY_CEILING without the admin scope). It is computed in SQL, from the same
 * expressions at submit (age 0, the account's last fair-share factor) and by the periodic recalculation
 * (PriorityCalcPeriod), which writes only the rows whose priority or factors moved. jobs.priority is what the
 * queue is served by (jobs_pending_queue_idx); the factors are kept beside it for sprio.
 */

/** Factors are kept to 3 decimals: a recalculation rewrites a job only when one moved by as much. */
const DECIMALS = 3;

/** The columns of a job (or of a row about to be inserted) the factors are computed from. */
export interface PriorityInputs {
  requested: SQL;
  account: SQL;
  cpus: SQL;
  partition: SQL;
  qos: SQL;
  /** When it became eligible (its age counts from then). */
  eligible: SQL;
}

const rounded = (expr: SQL) => sql`round((${expr})::numeric, ${DECIMALS})::float8`;

/**
 * The factors of a job as SQL expressions. `fairshare`: a relation of (account, factor); an account missing
 * from it has used nothing (1).
 */
function factorExpressions(config: PriorityConfig, job: PriorityInputs, fairshare: SQL) {
  const qosEntries = Object.entries(config.qos);
  const qosMax = Math.max(0, ...qosEntries.map(([, v]) => v));
  const qos =
    qosMax === 0
      ? sql`0::float8`
      : sql`coalesce((SELECT q.p FROM unnest(${pgArray(qosEntries.map(([n]) => n))}::text[],
                                             ${pgArray(qosEntries.map(([, v]) => v))}::float8[]) AS q(name, p)
                      WHERE q.name = ${job.qos}), 0) / ${qosMax}::float8`;
  return {
    age: rounded(
      sql`least(1, greatest(0, extract(epoch FROM now() - ${job.eligible}) / ${config.maxAgeS}::float8))`,
    ),
    fairshare: rounded(
      sql`coalesce((SELECT fs.factor FROM ${fairshare} fs WHERE fs.account = coalesce(${job.account}, '')), 1)`,
    ),
    jobsize: rounded(
      // least() skips NULLs: the quotient is made 0 (no CPUs in the cluster) before it is capped.
      sql`least(1, coalesce(${job.cpus}::float8 / nullif((SELECT sum(w.cpus) FROM workers w WHERE w.status <> 'down'), 0), 0))`,
    ),
    partition: rounded(
      sql`coalesce((SELECT max(p.priority_tier) FROM partitions p
                    WHERE p.name = ANY(regexp_split_to_array(${job.partition}, '\\s*,\\s*'))),
                   (SELECT p.priority_tier FROM partitions p WHERE p.is_default), 1)::float8
          / greatest(1, (SELECT max(p.priority_tier) FROM partitions p))`,
    ),
    qos: rounded(qos),
  };
}

/** The job's priority and factors (jsonb) as SQL expressions, from `fairshare` (see factorExpressions). */
export function priorityExpressions(
  config: PriorityConfig,
  job: PriorityInputs,
  fairshare: SQL = sql`fairshare`,
): { priority: SQL; factors: SQL } {
  const f = factorExpressions(config, job, fairshare);
  const weighted = sql`${config.weightAge}::float8 * ${f.age} + ${config.weightFairshare}::float8 * ${f.fairshare}
    + ${config.weightJobSize}::float8 * ${f.jobsize} + ${config.weightPartition}::float8 * ${f.partition}
    + ${config.weightQos}::float8 * ${f.qos}`;
  return {
    // Clamped to the column's range: weights and adjustment are each at most 1,000,000.
    priority: sql`least(2147483647, greatest(-2147483648, (${job.requested})::bigint + round(${weighted})::bigint))::int`,
    factors: sql`jsonb_build_object('age', ${f.age}, 'fairshare', ${f.fairshare}, 'jobsize', ${f.jobsize},
      'partition', ${f.partition}, 'qos', ${f.qos})`,
  };
}

/** A pending job's columns for priorityExpressions. */
const JOB_INPUTS: PriorityInputs = {
  requested: sql`j.requested_priority`,
  account: sql`j.account`,
  cpus: sql`j.cpus`,
  partition: sql`j.partition`,
  qos: sql`j.qos`,
  eligible: sql`j.eligible_time`,
};

type Tx = Parameters<typeof query>[0];

export interface Recalculation {
  /** Pending jobs whose priority or factors changed. */
  updated: number;
  /** The accounts whose fair-share was computed. */
  accounts: number;
}

/**
 * Slurm's PriorityCalcPeriod work: the fair-share of every account seen (decayed usage, shares), saved in
 * `fairshare`, and every pending job's priority from it, in one statement that writes only what moved (and
 * lets the reserved nodes go when a priority moved).
 * Nothing pending: one read, nothing else.
 */
export async function recalculatePriorities(ports: Pick<Ports, 'db' | 'config'>): Promise<Recalculation> {
  const { config } = ports;
  return ports.db.transaction(async (tx: Tx) => {
    const pending = await query<{ account: string }>(
      tx,
      sql`SELECT DISTINCT coalesce(account, '') AS account FROM jobs WHERE state = 'PENDING'`,
    );
    if (pending.length === 0) return { updated: 0, accounts: 0 };
    // A scheduling pass locks its workers (in id order) before it reads the queue and keeps a node for the
    // job on top: taking the same locks first, a pass that read the old priorities has committed before the
    // reservations are let go below, and the next one reads the new priorities.
    await query(tx, sql`SELECT id FROM workers ORDER BY id FOR UPDATE`);
    const usage = await decayedUsage(tx, config.priority.decayHalfLifeS);
    const shares = await accountShares(tx);
    const fair = [
      ...fairShareFactors(
        usage,
        shares,
        pending.map((p) => p.account),
      ),
    ];
    const accounts = pgArray(fair.map(([a]) => a));
    const e = priorityExpressions(config.priority, JOB_INPUTS, sql`fs`);
    const [row] = await query<{ updated: number | string }>(
      tx,
      sql`WITH fs AS MATERIALIZED (
            SELECT * FROM unnest(${accounts}::text[], ${pgArray(fair.map(([, f]) => f.sharesNorm))}::float8[],
                                 ${pgArray(fair.map(([, f]) => f.usageRaw))}::float8[],
                                 ${pgArray(fair.map(([, f]) => f.usageNorm))}::float8[],
                                 ${pgArray(fair.map(([, f]) => f.factor))}::float8[])
              AS f(account, shares_norm, usage_raw, usage_norm, factor)
          ),
          saved AS (
            INSERT INTO fairshare (account, shares_norm, usage_raw, usage_norm, factor, computed_at)
            SELECT account, shares_norm, usage_raw, usage_norm, factor, now() FROM fs
            ON CONFLICT (account) DO UPDATE SET shares_norm = excluded.shares_norm, usage_raw = excluded.usage_raw,
              usage_norm = excluded.usage_norm, factor = excluded.factor, computed_at = excluded.computed_at
            RETURNING 1
          ),
          gone AS (DELETE FROM fairshare WHERE NOT (account = ANY(${accounts}::text[])) RETURNING 1),
          calc AS MATERIALIZED (
            SELECT j.id, j.priority AS old, j.priority_factors AS old_factors, j.reserved_worker,
                   ${e.priority} AS priority, ${e.factors} AS factors
            FROM jobs j WHERE j.state = 'PENDING'
          ),
          -- A node kept for the job that was on top may now be another's: with any priority moved, every
          -- reservation is let go, and the next pass gives it to the job now on top.
          moved AS (SELECT EXISTS (SELECT 1 FROM calc WHERE calc.priority <> calc.old) AS priority_moved),
          up AS (
            UPDATE jobs SET priority = calc.priority, priority_factors = calc.factors,
              reserved_worker = CASE WHEN (SELECT priority_moved FROM moved) THEN NULL ELSE jobs.reserved_worker END
            FROM calc
            WHERE jobs.id = calc.id AND jobs.state = 'PENDING'
              AND (calc.priority <> calc.old OR calc.factors IS DISTINCT FROM calc.old_factors
                   OR (calc.reserved_worker IS NOT NULL AND (SELECT priority_moved FROM moved)))
            RETURNING 1
          )
          SELECT (SELECT count(*) FROM up) AS updated, (SELECT count(*) FROM saved) + (SELECT count(*) FROM gone) AS touched`,
    );
    return { updated: Number(row?.updated ?? 0), accounts: fair.length };
  });
}

/** When each configuration's next recalculation is due (per process, as the other backstop chores). */
const due = new WeakMap<object, number>();

/**
 * The backstop's call: a recalculation at most every PriorityCalcPeriod per process. The backstop does not run
 * on a quiet cluster (nothing pending or running), so an idle one costs nothing. A failure is logged, never
 * stops the backstop.
 */
export async function recalculatePrioritiesIfDue(ports: Ports): Promise<void> {
  const now = Date.now();
  if (now < (due.get(ports.config) ?? 0)) return;
  due.set(ports.config, now + ports.config.priority.calcPeriodS * 1000);
  try {
    await recalculatePriorities(ports);
  } catch (error) {
    ports.logger.warn('Priority recalculation failed', {
      error: error instanceof Error ? error.message : String(error),
    });
  }
}

export interface JobPriority {
  job_id: number;
  partition: string | null;
  user: string | null;
  account: string | null;
  priority: number;
  /** Slurm's NICE: minus the submitter's adjustment (a positive nice lowers the priority). */
  nice: number;
  /** Each factor in [0, 1] and times its weight. */
  factors: PriorityFactorsColumn;
  weighted: PriorityFactorsColumn;
}

const EMPTY_FACTORS: PriorityFactorsColumn = { age: 0, fairshare: 0, jobsize: 0, partition: 0, qos: 0 };

export const weightsOf = (config: PriorityConfig): PriorityFactorsColumn => ({
  age: config.weightAge,
  fairshare: config.weightFairshare,
  jobsize: config.weightJobSize,
  partition: config.weightPartition,
  qos: config.weightQos,
});

export interface PriorityListInput {
  ids?: number[] | undefined;
  owner?: string[] | undefined;
  partition?: string[] | undefined;
}

/**
 * sprio: the pending jobs (the viewer's own, unless it sees all jobs), highest priority first, with the
 * factors their priority was last computed from and the weights.
 */
export async function listJobPriorities(
  ports: Pick<Ports, 'db' | 'config'>,
  input: PriorityListInput,
  viewer: Principal,
): Promise<{ weights: PriorityFactorsColumn; jobs: JobPriority[] }> {
  const filters = [sql`state = 'PENDING'`];
  if (input.ids) filters.push(sql`id = ANY(${pgArray(input.ids)}::bigint[])`);
  if (input.owner) filters.push(sql`owner = ANY(${pgArray(input.owner)}::text[])`);
  if (input.partition) {
    filters.push(sql`string_to_array(partition, ',') && ${pgArray(input.partition)}::text[]`);
  }
  if (!seesAllJobs(viewer)) filters.push(sql`owner = ${viewer.owner ?? ''}`);
  const rows = await query<{
    id: number | string;
    partition: string | null;
    owner: string | null;
    account: string | null;
    priority: number;
    requested_priority: number;
    priority_factors: PriorityFactorsColumn | string | null;
  }>(
    ports.db,
    sql`SELECT id, partition, owner, account, priority, requested_priority, priority_factors FROM jobs
        WHERE ${sql.join(filters, sql` AND `)}
        ORDER BY priority DESC NULLS LAST, submit_time, id`,
  );
  const weights = weightsOf(ports.config.priority);
  const times = (f: PriorityFactorsColumn): PriorityFactorsColumn => ({
    age: f.age * weights.age,
    fairshare: f.fairshare * weights.fairshare,
    jobsize: f.jobsize * weights.jobsize,
    partition: f.partition * weights.partition,
    qos: f.qos * weights.qos,
  });
  return {
    weights,
    jobs: rows.map((r) => {
      const stored =
        typeof r.priority_factors === 'string'
          ? (JSON.parse(r.priority_factors) as PriorityFactorsColumn)
          : r.priority_factors;
      const factors = { ...EMPTY_FACTORS, ...stored };
      return {
        job_id: Number(r.id),
        partition: r.partition,
        user: r.owner,
        account: r.account,
        priority: Number(r.priority),
        nice: -Number(r.requested_priority),
        factors,
        weighted: times(factors),
      };
    }),
  };
}

/** sshare: every account's fair-share as the last recalculation left it. */
export async function listFairShare(ports: Pick<Ports, 'db'>) {
  const rows = await query<{
    account: string;
    shares_norm: number;
    usage_raw: number;
    usage_norm: number;
    factor: number;
    computed_at: Date | string;
  }>(
    ports.db,
    sql`SELECT account, shares_norm, usage_raw, usage_norm, factor, computed_at FROM fairshare ORDER BY account`,
  );
  return rows.map((r) => ({
    account: r.account,
    norm_shares: Number(r.shares_norm),
    raw_usage: Number(r.usage_raw),
    norm_usage: Number(r.usage_norm),
    fairshare: Number(r.factor),
    computed_at: new Date(r.computed_at).toISOString(),
  }));
}

/**
 * sshare computed now, for every account of the tree and every account with usage (the saved figures cover
 * only the accounts with pending jobs): each account's parent and shares beside its figures, and its users'
 * rows (userFairShares).
 */
export async function liveFairShare(ports: Pick<Ports, 'db' | 'config'>) {
  const rows = await decayedUsageByOwner(ports.db, ports.config.priority.decayHalfLifeS);
  const usage = new Map<string, number>();
  const byUser = new Map<string, number>();
  for (const r of rows) {
    usage.set(r.account, (usage.get(r.account) ?? 0) + r.usage);
    byUser.set(`${r.account}\n${r.owner}`, r.usage);
  }
  const shares = await accountShares(ports.db);
  const fair = fairShareFactors(usage, shares, []);
  const associations = await query<{ account: string; user_name: string; fairshare: number }>(
    ports.db,
    sql`SELECT account, user_name, fairshare FROM account_users ORDER BY account, user_name`,
  );
  const total = [...usage.values()].reduce((a, b) => a + b, 0);
  const users = userFairShares(
    fair,
    associations.map((a) => ({
      account: a.account,
      user: a.user_name,
      shares: Number(a.fairshare),
      usageRaw: byUser.get(`${a.account}\n${a.user_name}`) ?? 0,
    })),
    total,
  );
  const usersOf = new Map<string, typeof users>();
  for (const u of users) {
    const list = usersOf.get(u.account);
    if (list) list.push(u);
    else usersOf.set(u.account, [u]);
  }
  const computedAt = new Date().toISOString();
  const figures = (f: { sharesNorm: number; usageRaw: number; usageNorm: number; factor: number }) => ({
    norm_shares: f.sharesNorm,
    raw_usage: f.usageRaw,
    norm_usage: f.usageNorm,
    fairshare: f.factor,
  });
  return [...fair]
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([account, f]) => ({
      account,
      parent: shares.get(account)?.parent ?? null,
      raw_shares: shares.get(account)?.shares ?? null,
      ...figures(f),
      computed_at: computedAt,
      users: (usersOf.get(account) ?? []).map((u) => ({ user: u.user, raw_shares: u.shares, ...figures(u) })),
    }));
}
