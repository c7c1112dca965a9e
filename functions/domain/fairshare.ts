/** An account's configured shares (Slurm's Fairshare= of an association) and its parent in the tree. */
export interface AccountShares {
  shares: number;
  parent: string | null;
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

/** A user's association in an account, with its configured shares and its decayed usage there. */
export interface UserUsage {
  account: string;
  user: string;
  shares: number;
  usageRaw: number;
}

/**
 * sshare's user rows: a user's S is its account's S split among the account's users by their shares (the
 * account's factor is what the scheduler uses; this only shows how each user draws on it), U its own usage
 * over the whole cluster's, and F = 2^(-U/S) as for accounts.
 */
export function userFairShares(
  accounts: ReadonlyMap<string, FairShare>,
  users: readonly UserUsage[],
  totalUsage: number,
): (UserUsage & FairShare)[] {
  const sharesIn = new Map<string, number>();
  for (const u of users) sharesIn.set(u.account, (sharesIn.get(u.account) ?? 0) + Math.max(0, u.shares));
  return users.map((u) => {
    const total = sharesIn.get(u.account) ?? 0;
    const s = total > 0 ? ((accounts.get(u.account)?.sharesNorm ?? 0) * Math.max(0, u.shares)) / total : 0;
    const usageNorm = totalUsage > 0 ? u.usageRaw / totalUsage : 0;
    return { ...u, sharesNorm: s, usageNorm, factor: s > 0 ? 2 ** (-usageNorm / s) : 0 };
  });
}
