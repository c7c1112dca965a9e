import { sql } from 'drizzle-orm';
import { warnRegistryDown } from './liveness.ts';
import type { Database, Ports, SnapshotResult } from './ports.ts';
import { queryOne } from './sql.ts';

export interface AllocationSnapshot {
  allocated: number;
  version: number;
  /** This database's allocation history (versions of two epochs do not compare). */
  epoch: string;
}

/**
 * The live allocation as Postgres has it, and the allocation version it corresponds to, read in one
 * statement (one snapshot): the SUM is the contract's query, served by a partial index on unreleased rows.
 */
export async function readAllocationSnapshot(db: Database): Promise<AllocationSnapshot> {
  const row = await queryOne<{ allocated: string | number; version: string | number; epoch: string }>(
    db,
    sql`SELECT coalesce((SELECT sum(allocated_cpus) FROM resource_allocations WHERE released = false), 0) AS allocated,
               allocation_version AS version, allocation_epoch AS epoch
        FROM cluster_state WHERE id = 1`,
  );
  return {
    allocated: Number(row?.allocated ?? 0),
    version: Number(row?.version ?? 0),
    epoch: row?.epoch ?? '',
  };
}

/** Tells the cache about a committed allocation change. A failure is drift that the next sync repairs. */
export async function applyAllocationDelta(ports: Ports, delta: number, version: number): Promise<void> {
  if (delta === 0) return;
  try {
    await ports.registry.applyAllocationDelta(delta, version);
  } catch (error) {
    warnRegistryDown(ports, error);
  }
}

export interface AllocatedCpus {
  allocated: number;
  source: 'cache' | 'database';
}

/** Allocated CPUs from the cache; on a miss, from Postgres (refilling the cache); on a cache error, from Postgres. */
export async function readAllocatedCpus(ports: Ports): Promise<AllocatedCpus> {
  let cached: number | null;
  try {
    cached = await ports.registry.getAllocatedCpus();
  } catch (error) {
    warnRegistryDown(ports, error);
    if (ports.metrics) ports.metrics.cacheErrors++;
    return { allocated: (await readAllocationSnapshot(ports.db)).allocated, source: 'database' };
  }
  if (ports.metrics) ports.metrics[cached === null ? 'cacheMisses' : 'cacheHits']++;
  if (cached !== null) return { allocated: cached, source: 'cache' };
  ports.logger.info('Cache miss, querying database');
  let snapshot: AllocationSnapshot | undefined;
  try {
    const put = await putSnapshot(ports, (read) => {
      snapshot = read;
    });
    return { allocated: put.value, source: 'database' };
  } catch (error) {
    if (snapshot === undefined) throw error;
    warnRegistryDown(ports, error);
    return { allocated: snapshot.allocated, source: 'database' };
  }
}

/**
 * Puts a Postgres snapshot into the cache. When the cache holds a newer version, that is normally another
 * sync's snapshot taken after ours: Postgres is read again. If Postgres is still behind the cache's
 * version, its history went back (restored from a backup, failed over to a replica that lagged) and the
 * snapshot replaces the cache's, instead of the cache staying frozen until Postgres's counter catches up.
 */
async function putSnapshot(
  ports: Ports,
  onRead: (snapshot: AllocationSnapshot) => void = () => {},
): Promise<SnapshotResult & { snapshot: AllocationSnapshot; from?: number }> {
  let snapshot = await readAllocationSnapshot(ports.db);
  onRead(snapshot);
  const first = await ports.registry.setAllocationSnapshot(snapshot.allocated, snapshot.version, {
    epoch: snapshot.epoch,
  });
  if (first.applied) return report(ports, { ...first, snapshot });
  snapshot = await readAllocationSnapshot(ports.db);
  onRead(snapshot);
  const wentBack = snapshot.version < first.version;
  const second = await ports.registry.setAllocationSnapshot(snapshot.allocated, snapshot.version, {
    epoch: snapshot.epoch,
    ...(wentBack ? { replacing: first.version } : {}),
  });
  return report(ports, { ...second, snapshot, from: first.version });
}

function report<T extends SnapshotResult & { snapshot: AllocationSnapshot; from?: number }>(
  ports: Ports,
  put: T,
): T {
  if (put.reset === 'epoch') {
    ports.logger.warn(
      'Resource cache reset: its snapshot came from another database (allocation epoch changed)',
      { epoch: put.snapshot.epoch, version: put.snapshot.version },
    );
  } else if (put.reset === 'version') {
    ports.logger.warn(
      `Resource cache reset: Postgres's allocation version went back from ${put.from} to ${put.snapshot.version} (restore or failover)`,
      { epoch: put.snapshot.epoch },
    );
  }
  return put;
}

export interface CacheSyncResult {
  allocated: number;
  /** How far the cache was off (cache minus Postgres), or null when it held nothing. */
  drift: number | null;
  /**
   * Set when the sync overwrote a cache that belonged to another history: `epoch`, another database;
   * `version`, Postgres's allocation version went back (restore, failover). Null otherwise.
   */
  reset: 'epoch' | 'version' | null;
}

/**
 * Overwrites the cache from Postgres. Safe against allocations that commit meanwhile: the snapshot carries
 * its allocation version, and the store keeps the deltas newer than it (see RegistryStore).
 */
export async function syncAllocationCache(ports: Ports): Promise<CacheSyncResult> {
  const { previous, value, applied, reset } = await putSnapshot(ports);
  const drift = previous === null || !applied ? null : previous - value;
  await ports.db.execute(
    sql`UPDATE maintenance_state SET cache_synced_at = now(), cache_drift = ${drift} WHERE id = 1`,
  );
  ports.logger.info(`Resource cache synced: ${value} CPUs allocated`, { drift, ...(reset ? { reset } : {}) });
  if (drift !== null && Math.abs(drift) > Math.max(1, value) * 0.1) {
    ports.logger.warn(`Resource cache drifted by ${drift} CPUs (more than 10%) before the sync`, { drift });
  }
  return { allocated: value, drift, reset };
}
