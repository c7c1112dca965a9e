import { sql } from 'drizzle-orm';
import { JOB_STATES, type JobState, type WorkerStatus } from '../../db/schema.ts';
import { readAllocatedCpus } from './cache.ts';
import type { Context } from './context.ts';
import { liveWorkerIds } from './liveness.ts';
import { pgArray, query, queryOne } from './sql.ts';

interface LiveWorkerRow {
  id: string;
  hostname: string;
  cpus: number;
  allocated_cpus: number;
  status: WorkerStatus;
  last_heartbeat: Date | string;
  registered_at: Date | string;
  running_jobs: number | string;
}

/** Live workers: the registry's index says who is alive, Postgres what they have. */
export async function listLiveWorkers(ctx: Context) {
  const live = await liveWorkerIds(ctx);
  if (live && live.length === 0) return [];
  const filter = live
    ? sql`w.id = ANY(${pgArray(live)}::text[])`
    : sql`w.status <> 'down' AND w.last_heartbeat > now() - make_interval(secs => ${ctx.config.workerTtlSeconds})`;
  const rows = await query<LiveWorkerRow>(
    ctx.db,
    sql`SELECT w.id, w.hostname, w.cpus, w.allocated_cpus, w.status, w.last_heartbeat, w.registered_at,
               (SELECT count(*) FROM jobs j WHERE j.node = w.id AND j.state = 'RUNNING') AS running_jobs
        FROM workers w WHERE ${filter} ORDER BY w.id`,
  );
  return rows.map((w) => ({
    worker_id: w.id,
    hostname: w.hostname,
    cpus: Number(w.cpus),
    allocated_cpus: Number(w.allocated_cpus),
    available_cpus: Math.max(0, Number(w.cpus) - Number(w.allocated_cpus)),
    status: w.status,
    running_jobs: Number(w.running_jobs),
    registered_at: new Date(w.registered_at).toISOString(),
    last_heartbeat: new Date(w.last_heartbeat).toISOString(),
  }));
}

/** Every worker ever seen, live or down (with when and why it went down). */
export async function listWorkers(ctx: Context) {
  const live = new Set((await listLiveWorkers(ctx)).map((w) => w.worker_id));
  const rows = await query<{
    id: string;
    hostname: string;
    cpus: number;
    allocated_cpus: number;
    status: WorkerStatus;
    last_heartbeat: Date | string;
    registered_at: Date | string;
    down_at: Date | string | null;
    down_reason: string | null;
  }>(
    ctx.db,
    sql`SELECT id, hostname, cpus, allocated_cpus, status, last_heartbeat, registered_at, down_at, down_reason
        FROM workers ORDER BY id LIMIT 10000`,
  );
  return rows.map((w) => ({
    worker_id: w.id,
    hostname: w.hostname,
    cpus: Number(w.cpus),
    allocated_cpus: Number(w.allocated_cpus),
    status: w.status,
    live: live.has(w.id),
    registered_at: new Date(w.registered_at).toISOString(),
    last_heartbeat: new Date(w.last_heartbeat).toISOString(),
    down_at: w.down_at === null ? null : new Date(w.down_at).toISOString(),
    down_reason: w.down_reason,
  }));
}

export async function getDashboard(ctx: Context) {
  const [workers, allocation, counts] = await Promise.all([
    listLiveWorkers(ctx),
    readAllocatedCpus(ctx),
    query<{ state: JobState; n: string | number }>(
      ctx.db,
      sql`SELECT state, count(*) AS n FROM jobs GROUP BY state`,
    ),
  ]);
  const total = workers.reduce((sum, w) => sum + w.cpus, 0);
  // A draining worker's free CPUs are not available to new jobs.
  const drained = workers.filter((w) => w.status !== 'ready').reduce((sum, w) => sum + w.available_cpus, 0);
  const jobs = Object.fromEntries(JOB_STATES.map((s) => [s, 0])) as Record<JobState, number>;
  for (const row of counts) jobs[row.state] = Number(row.n);
  return {
    resources: {
      total_cpus: total,
      allocated_cpus: allocation.allocated,
      available_cpus: Math.max(0, total - allocation.allocated - drained),
      utilization: total === 0 ? 0 : Math.round((allocation.allocated / total) * 1000) / 10,
    },
    workers,
    jobs,
  };
}

/** The contract's statistics line: `Active workers: 2, Total CPUs: 192`. */
export async function logClusterStats(ctx: Context): Promise<void> {
  const workers = await listLiveWorkers(ctx);
  const total = workers.reduce((sum, w) => sum + w.cpus, 0);
  ctx.logger.info(`Active workers: ${workers.length}, Total CPUs: ${total}`);
}

export async function getHealth(ctx: Context) {
  const timed = async (work: () => Promise<unknown>) => {
    const started = performance.now();
    try {
      await work();
      return { status: 'ok' as const, latency_ms: Math.round((performance.now() - started) * 10) / 10 };
    } catch (error) {
      return { status: 'down' as const, error: error instanceof Error ? error.message : String(error) };
    }
  };
  const [database, cache] = await Promise.all([
    timed(() => ctx.db.execute(sql`SELECT 1`)),
    timed(() => ctx.registry.ping()),
  ]);
  const status = database.status === 'down' ? 'down' : cache.status === 'down' ? 'degraded' : 'ok';
  const sync =
    database.status === 'ok'
      ? await queryOne<{ cache_synced_at: Date | string | null; cache_drift: string | number | null }>(
          ctx.db,
          sql`SELECT cache_synced_at, cache_drift FROM maintenance_state WHERE id = 1`,
        ).catch(() => undefined)
      : undefined;
  const lastSync = sync?.cache_synced_at
    ? {
        at: new Date(sync.cache_synced_at).toISOString(),
        drift: sync.cache_drift === null ? null : Number(sync.cache_drift),
      }
    : null;
  return { status, database, cache: { ...cache, kind: ctx.registry.kind, last_sync: lastSync } };
}
