import { sql } from 'drizzle-orm';
import { query } from './sql.ts';

type Tx = Parameters<typeof query>[0];

/** Past usage older than this many half-lives weighs under 2^-30: left out of the sum. */
const HALF_LIVES_COUNTED = 30;

/**
 * Each account's decayed usage in CPU-seconds, Slurm's PriorityDecayHalfLife: an attempt counts its CPUs ×
 * its run time × 2^(-age/half-life), its age counted from its end. Jobs without an account are account ''.
 */
export async function decayedUsage(tx: Tx, halfLifeS: number): Promise<Map<string, number>> {
  const rows = await query<{ account: string; usage: number | string }>(
    tx,
    sql`SELECT coalesce(j.account, '') AS account,
               sum(j.cpus * extract(epoch FROM a.end_time - a.start_time)
                   * power(2::float8, -extract(epoch FROM now() - a.end_time)::float8 / ${halfLifeS}::float8)) AS usage
        FROM job_attempts a JOIN jobs j ON j.id = a.job_id
        WHERE a.start_time IS NOT NULL AND a.end_time > a.start_time
          AND a.end_time > now() - make_interval(secs => ${halfLifeS * HALF_LIVES_COUNTED}::float8)
        GROUP BY 1`,
  );
  return new Map(rows.map((r) => [r.account, Math.max(0, Number(r.usage))]));
}

export interface AccountShares {
  shares: number;
  parent: string | null;
}

/** The configured shares per account (Slurm's Fairshare= of an association): none yet, every account equal. */
export async function accountShares(_tx: Tx): Promise<Map<string, AccountShares>> {
  return new Map();
}

export interface FairShare {
  /** S: the account's share of the cluster, its shares over its siblings' times its parent's (0..1). */
  sharesNorm: number;
  /** Its decayed usage (CPU-seconds) and U, that over all accounts' (0..1). */
  usageRaw: number;
  usageNorm: number;
  /** Slurm's classic fair-share factor 2^(-U/S). */
  factor: number;
}

/**
 * Classic Slurm fair-share for every account in `shares`, in `usage` or in `seen`: F = 2^(-U/S). An account
 * without configured shares has 1, at the top of the tree, so with nothing configured every account seen has
 * the same share. S is normalized down the tree (an account's shares over the sum of its siblings', times its
 * parent's S); U is the account's own usage over the whole cluster's.
 */
export function fairShareFactors(
  usage: ReadonlyMap<string, number>,
  shares: ReadonlyMap<string, AccountShares>,
  seen: Iterable<string>,
): Map<string, FairShare> {
  const tree = new Map<string, AccountShares>(shares);
  for (const account of [...usage.keys(), ...seen]) {
    if (!tree.has(account)) tree.set(account, { shares: 1, parent: null });
  }
  const siblingsTotal = new Map<string | null, number>();
  for (const node of tree.values()) {
    const parent = node.parent !== null && tree.has(node.parent) ? node.parent : null;
    siblingsTotal.set(parent, (siblingsTotal.get(parent) ?? 0) + Math.max(0, node.shares));
  }
  const norm = new Map<string, number>();
  const sharesNorm = (account: string, depth = 0): number => {
    const known = norm.get(account);
    if (known !== undefined) return known;
    const node = tree.get(account) as AccountShares;
    const parent = node.parent !== null && tree.has(node.parent) && depth < tree.size ? node.parent : null;
    const total = siblingsTotal.get(parent) ?? 0;
    const own = total > 0 ? Math.max(0, node.shares) / total : 0;
    const value = parent === null ? own : own * sharesNorm(parent, depth + 1);
    norm.set(account, value);
    return value;
  };
  const totalUsage = [...usage.values()].reduce((a, b) => a + b, 0);
  const result = new Map<string, FairShare>();
  for (const account of tree.keys()) {
    const s = sharesNorm(account);
    const usageRaw = usage.get(account) ?? 0;
    const u = totalUsage > 0 ? usageRaw / totalUsage : 0;
    // No shares: no claim on the cluster (Slurm gives such an association a factor of 0).
    const factor = s > 0 ? 2 ** (-u / s) : 0;
    result.set(account, { sharesNorm: s, usageRaw, usageNorm: u, factor });
  }
  return result;
}
