import { sql } from 'drizzle-orm';
import { warnRegistryDown } from './liveness.ts';
import type { AllocationVector, Database, Ports, SnapshotResult } from './ports.ts';
import { queryOne } from './sql.ts';

export interface AllocationSnapshot {
  /** Allocated CPUs: the contract's SUM. */
  allocated: number;
  /** Every resource allocated (`allocation.cpus` is `allocated`). */
  allocation: AllocationVector;
  version: number;
  /** This database's allocation history (versions of two epochs do not compare). */
  epoch: string;
}

/**
 * The live allocation as Postgres has it, every resource, and the allocation version it corresponds to, read
 * in one statement (one snapshot): the sums are over the unreleased rows (the contract's query for CPUs),
 * served by a partial index on them. GPUs are counted as the bits of the allocations' masks.
 */
export async function readAllocationSnapshot(db: Database): Promise<AllocationSnapshot> {
  const row = await queryOne<{
    allocated: string | number;
    memory_mb: string | number;
    gpus: string | number;
    gres: Record<string, number | string> | string | null;
    version: string | number;
    epoch: string;
  }>(
    db,
    sql`WITH live AS (SELECT allocated_cpus, memory_mb, gpu_mask, gres FROM resource_allocations WHERE released = false)
        SELECT coalesce((SELECT sum(allocated_cpus) FROM live), 0) AS allocated,
               coalesce((SELECT sum(memory_mb) FROM live), 0) AS memory_mb,
               coalesce((SELECT sum(bit_count(gpu_mask::bit(64))) FROM live), 0) AS gpus,
               (SELECT jsonb_object_agg(name, n) FROM (
                  SELECT e.key AS name, sum(e.value::bigint) AS n FROM live, jsonb_each_text(live.gres) e GROUP BY e.key
                ) named WHERE n <> 0) AS gres,
               allocation_version AS version, allocation_epoch AS epoch
        FROM cluster_state WHERE id = 1`,
  );
  const gres = typeof row?.gres === 'string' ? JSON.parse(row.gres) : (row?.gres ?? {});
  const allocation: AllocationVector = {
    cpus: Number(row?.allocated ?? 0),
    memoryMb: Number(row?.memory_mb ?? 0),
    gpus: Number(row?.gpus ?? 0),
    gres: Object.fromEntries(Object.entries<number | string>(gres).map(([name, n]) => [name, Number(n)])),
  };
  return {
    allocated: allocation.cpus,
    allocation,
    version: Number(row?.version ?? 0),
    epoch: row?.epoch ?? '',
  };
}

/** The change of one commit, negated (a release of what `vector` allocated). */
export function negated(vector: AllocationVector): AllocationVector {
  return {
    cpus: -vector.cpus,
    memoryMb: -vector.memoryMb,
    gpus: -vector.gpus,
    gres: Object.fromEntries(Object.entries(vector.gres).map(([name, n]) => [name, -n])),
  };
}

/**
 * Tells the cache about a committed allocation change, every resource in one call (one Redis command). A
 * failure is drift that the next sync repairs.
 */
export async function applyAllocationDelta(
  ports: Ports,
  delta: AllocationVector,
  version: number,
): Promise<void> {
  const unchanged =
    delta.cpus === 0 &&
    delta.memoryMb === 0 &&
    delta.gpus === 0 &&
    Object.values(delta.gres).every((n) => n === 0);
  if (unchanged) return;
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

export interface AllocatedResources {
  allocation: AllocationVector;
  source: 'cache' | 'database';
}

/**
 * Every resource allocated, from the cache; when any of its keys is missing, from Postgres (refilling them
 * all); on a cache error, from Postgres.
 */
export async function readAllocatedResources(ports: Ports): Promise<AllocatedResources> {
  let cached: Awaited<ReturnType<Ports['registry']['getAllocation']>>;
  try {
    cached = await ports.registry.getAllocation();
  } catch (error) {
    warnRegistryDown(ports, error);
    if (ports.metrics) ports.metrics.cacheErrors++;
    return { allocation: (await readAllocationSnapshot(ports.db)).allocation, source: 'database' };
  }
  const { cpus, memoryMb, gpus, gres } = cached;
  const hit = cpus !== null && memoryMb !== null && gpus !== null && gres !== null;
  if (ports.metrics) ports.metrics[hit ? 'cacheHits' : 'cacheMisses']++;
  if (hit) return { allocation: { cpus, memoryMb, gpus, gres }, source: 'cache' };
  ports.logger.info('Cache miss, querying database');
  let snapshot: AllocationSnapshot | undefined;
  try {
    const put = await putSnapshot(ports, (read) => {
      snapshot = read;
    });
    return { allocation: put.allocation, source: 'database' };
  } catch (error) {
    if (snapshot === undefined) throw error;
    warnRegistryDown(ports, error);
    return { allocation: snapshot.allocation, source: 'database' };
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
  const first = await ports.registry.setAllocationSnapshot(snapshot.allocation, snapshot.version, {
    epoch: snapshot.epoch,
  });
  if (first.applied) return report(ports, { ...first, snapshot });
  snapshot = await readAllocationSnapshot(ports.db);
  onRead(snapshot);
  const wentBack = snapshot.version < first.version;
  const second = await ports.registry.setAllocationSnapshot(snapshot.allocation, snapshot.version, {
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
  /** Allocated CPUs. */
  allocated: number;
  /** How far the CPU figure was off (cache minus Postgres), or null when it held nothing. */
  drift: number | null;
  /** Every resource allocated, as the cache holds it now. */
  allocation: AllocationVector;
  /** How far memory (MB) and GPUs were off, each null when its key held nothing. */
  resourceDrift: { memoryMb: number | null; gpus: number | null };
  /**
   * Set when the sync overwrote a cache that belonged to another history: `epoch`, another database;
   * `version`, Postgres's allocation version went back (restore, failover). Null otherwise.
   */
  reset: 'epoch' | 'version' | null;
}

/**
 * Overwrites the cache from Postgres, every resource. Safe against allocations that commit meanwhile: the
 * snapshot carries its allocation version, and the store keeps the deltas newer than it (see RegistryStore).
 */
export async function syncAllocationCache(ports: Ports): Promise<CacheSyncResult> {
  const { previous, value, previousAllocation, allocation, applied, reset } = await putSnapshot(ports);
  const driftOf = (before: number | null, now: number) => (before === null || !applied ? null : before - now);
  const drift = driftOf(previous, value);
  const resourceDrift = {
    memoryMb: driftOf(previousAllocation.memoryMb, allocation.memoryMb),
    gpus: driftOf(previousAllocation.gpus, allocation.gpus),
  };
  await ports.db.execute(
    sql`UPDATE maintenance_state SET cache_synced_at = now(), cache_drift = ${drift} WHERE id = 1`,
  );
  ports.logger.info(
    `Resource cache synced: ${value} CPUs allocated, ${allocation.memoryMb} MB memory, ${allocation.gpus} GPUs`,
    {
      drift,
      memory_drift: resourceDrift.memoryMb,
      gpu_drift: resourceDrift.gpus,
      gres: allocation.gres,
      ...(reset ? { reset } : {}),
    },
  );
  if (drift !== null && Math.abs(drift) > Math.max(1, value) * 0.1) {
    ports.logger.warn(`Resource cache drifted by ${drift} CPUs (more than 10%) before the sync`, { drift });
  }
  const { memoryMb, gpus } = resourceDrift;
  if (memoryMb !== null && Math.abs(memoryMb) > Math.max(1, allocation.memoryMb) * 0.1) {
    ports.logger.warn(`Resource cache drifted by ${memoryMb} MB of memory (more than 10%) before the sync`, {
      memory_drift: memoryMb,
    });
  }
  if (gpus !== null && Math.abs(gpus) > Math.max(1, allocation.gpus) * 0.1) {
    ports.logger.warn(`Resource cache drifted by ${gpus} GPUs (more than 10%) before the sync`, {
      gpu_drift: gpus,
    });
  }
  return { allocated: value, drift, allocation, resourceDrift, reset };
}
