import { sql } from 'drizzle-orm';
import { warnRegistryDown } from './liveness.ts';
import type { Database, Ports } from './ports.ts';
import { queryOne } from './sql.ts';

export interface AllocationSnapshot {
  allocated: number;
  version: number;
}

/**
 * The live allocation as Postgres has it, and the allocation version it corresponds to, read in one
 * statement (one snapshot): the SUM is the contract's query, served by a partial index on unreleased rows.
 */
export async function readAllocationSnapshot(db: Database): Promise<AllocationSnapshot> {
  const row = await queryOne<{ allocated: string | number; version: string | number }>(
    db,
    sql`SELECT coalesce((SELECT sum(allocated_cpus) FROM resource_allocations WHERE released = false), 0) AS allocated,
               allocation_version AS version
        FROM cluster_state WHERE id = 1`,
  );
  return { allocated: Number(row?.allocated ?? 0), version: Number(row?.version ?? 0) };
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
  const snapshot = await readAllocationSnapshot(ports.db);
  try {
    const { value } = await ports.registry.setAllocationSnapshot(snapshot.allocated, snapshot.version);
    return { allocated: value, source: 'database' };
  } catch (error) {
    warnRegistryDown(ports, error);
    return { allocated: snapshot.allocated, source: 'database' };
  }
}

export interface CacheSyncResult {
  allocated: number;
  /** How far the cache was off (cache minus Postgres), or null when it held nothing. */
  drift: number | null;
}

/**
 * Overwrites the cache from Postgres. Safe against allocations that commit meanwhile: the snapshot carries
 * its allocation version, and the store keeps the deltas newer than it (see RegistryStore).
 */
export async function syncAllocationCache(ports: Ports): Promise<CacheSyncResult> {
  const snapshot = await readAllocationSnapshot(ports.db);
  const { previous, value, applied } = await ports.registry.setAllocationSnapshot(
    snapshot.allocated,
    snapshot.version,
  );
  const drift = previous === null || !applied ? null : previous - value;
  await ports.db.execute(
    sql`UPDATE maintenance_state SET cache_synced_at = now(), cache_drift = ${drift} WHERE id = 1`,
  );
  ports.logger.info(`Resource cache synced: ${value} CPUs allocated`, { drift });
  if (drift !== null && Math.abs(drift) > Math.max(1, value) * 0.1) {
    ports.logger.warn(`Resource cache drifted by ${drift} CPUs (more than 10%) before the sync`, { drift });
  }
  return { allocated: value, drift };
}
