import { type SQL, sql } from 'drizzle-orm';
import { z } from 'zod';
import { type GpuDevice, JOB_STATES, type PartitionState, type WorkerStatus } from '../../db/schema.ts';
import { arraysByIds } from './array-ops.ts';
import { type Principal, seesAllJobs } from './auth.ts';
import { readAllocatedCpus } from './cache.ts';
import type { Context } from './context.ts';
import { notFound } from './errors.ts';
import { expandHostlist } from './hostlist.ts';
import { readJobCounts } from './job-counts.ts';
import { JOB_COLUMNS, type JobRow, jobView } from './jobs.ts';
import { liveInPostgres, liveWorkerIds } from './liveness.ts';
import { QUIET_MARKER_TTL_SECONDS } from './maintenance.ts';
import { maskIndexes } from './placement.ts';
import { PARTITION_COLUMNS, type PartitionRow, partitionsOf } from './scheduler.ts';
import { jsonColumn, pgArray, query, queryOne } from './sql.ts';

interface LiveWorkerRow {
  id: string;
  hostname: string;
  cpus: number;
  allocated_cpus: number;
  status: WorkerStatus;
  last_heartbeat: Date | string;
  registered_at: Date | string;
  running_jobs: number | string;
  recent?: boolean | string;
}

/** What a worker has of every resource, as GET /api/v1/workers shows it. */
interface WorkerResourcesRow {
  memory_mb: number;
  allocated_memory_mb: number;
  gpus: GpuDevice[] | string;
  gpus_used: string;
  gres: Record<string, [number, number]> | string | null;
  features: string[];
  partitions: string[];
  memory_enforcement: string | null;
}

const WORKER_RESOURCES = sql`w.memory_mb, w.allocated_memory_mb, w.gpus, w.gpus_used::text AS gpus_used,
  (SELECT json_object_agg(g.name, json_build_array(g.total, g.allocated)) FROM worker_gres g WHERE g.worker_id = w.id) AS gres,
  w.features, w.partitions, w.memory_enforcement`;

function workerResources(w: WorkerResourcesRow) {
  const used = maskIndexes(w.gpus_used);
  return {
    memory_mb: Number(w.memory_mb),
    allocated_memory_mb: Number(w.allocated_memory_mb),
    gpu_devices: jsonColumn(w.gpus).map((g) => ({ index: g.index, model: g.model, used: used.has(g.index) })),
    gres: Object.fromEntries(
      Object.entries(jsonColumn(w.gres ?? {}) ?? {}).map(([name, [total, allocated]]) => [
        name,
        { total: Number(total), allocated: Number(allocated) },
      ]),
    ),
    features: w.features,
    /** Declared by its agent (none: the default partition, unless a partition's node list names it). */
    declared_partitions: w.partitions,
    memory_enforcement: w.memory_enforcement,
  };
}

/**
 * A worker row `w` whose heartbeat is live: not down, and heartbeating within the TTL. Every heartbeat
 * refreshes this row and the registry key with the same TTL, so both say the same.
 */
const heartbeatLive = (ttlSeconds: number) => liveInPostgres(ttlSeconds, 'w');

/**
 * The live workers' rows with their running jobs, counted in one grouped pass over the partial index
 * `jobs_node_active_idx` (RUNNING jobs only, never the history), not one correlated count per worker.
 */
const liveWorkersSql = (filter: SQL, ttlSeconds: number) =>
  sql`SELECT w.id, w.hostname, w.cpus, w.allocated_cpus, w.status, w.last_heartbeat, w.registered_at,
             coalesce(r.n, 0) AS running_jobs,
             ${heartbeatLive(ttlSeconds)} AS recent, ${WORKER_RESOURCES}
      FROM workers w
      LEFT JOIN (SELECT node, count(*) AS n FROM jobs WHERE state = 'RUNNING' GROUP BY node) r ON r.node = w.id
      WHERE ${filter} ORDER BY w.id`;

/**
 * Live workers: the registry's index says who is alive, Postgres what they have. Both are asked at once: the
 * rows of every worker not marked down come back while the registry answers, and are kept when live (or, with
 * the registry down, when their durable heartbeat is recent). A live id without such a row (rare: a worker
 * marked down whose key is back) costs a second query by id.
 */
export async function listLiveWorkers(ctx: Context) {
  const ttl = ctx.config.workerTtlSeconds;
  const [live, candidates] = await Promise.all([
    liveWorkerIds(ctx),
    query<LiveWorkerRow & WorkerResourcesRow>(ctx.db, liveWorkersSql(sql`w.status <> 'down'`, ttl)),
  ]);
  let rows: (LiveWorkerRow & WorkerResourcesRow)[];
  if (live === null) {
    rows = candidates.filter((w) => w.recent === true || w.recent === 't');
  } else if (live.length === 0) {
    return [];
  } else {
    const ids = new Set(live);
    rows = candidates.filter((w) => ids.has(w.id));
    if (rows.length < ids.size) {
      rows = await query<LiveWorkerRow & WorkerResourcesRow>(
        ctx.db,
        liveWorkersSql(sql`w.id = ANY(${pgArray(live)}::text[])`, ttl),
      );
    }
  }
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
    ...workerResources(w),
  }));
}

/** Every worker ever seen, live or down (with when and why it went down). */
export async function listWorkers(ctx: Context) {
  // Live as listLiveWorkers judges it: the registry's index, or (registry down) a recent durable heartbeat.
  const ids = await liveWorkerIds(ctx);
  const live = ids ? new Set(ids) : null;
  const rows = await query<
    {
      id: string;
      hostname: string;
      cpus: number;
      allocated_cpus: number;
      status: WorkerStatus;
      last_heartbeat: Date | string;
      registered_at: Date | string;
      down_at: Date | string | null;
      down_reason: string | null;
      recent: boolean;
    } & WorkerResourcesRow
  >(
    ctx.db,
    sql`SELECT id, hostname, cpus, allocated_cpus, status, last_heartbeat, registered_at, down_at, down_reason,
               ${heartbeatLive(ctx.config.workerTtlSeconds)} AS recent, ${WORKER_RESOURCES}
        FROM workers w ORDER BY id LIMIT 10000`,
  );
  return rows.map((w) => ({
    worker_id: w.id,
    hostname: w.hostname,
    cpus: Number(w.cpus),
    allocated_cpus: Number(w.allocated_cpus),
    status: w.status,
    live: live ? live.has(w.id) : w.recent,
    registered_at: new Date(w.registered_at).toISOString(),
    last_heartbeat: new Date(w.last_heartbeat).toISOString(),
    down_at: w.down_at === null ? null : new Date(w.down_at).toISOString(),
    down_reason: w.down_reason,
    ...workerResources(w),
  }));
}

/** How many live workers `GET /api/v1/dashboard` lists (by id); the rest: `/api/v1/ui/workers?after=`. */
export const DASHBOARD_WORKERS_LIMIT = 50;

/**
 * Which workers the dashboard counts live, as SQL over `workers w`: `heartbeatLive`. Reading the registry's
 * ids instead cost the dashboard a Redis script over every live key and a 1,000-id array sent to
 * Postgres on each refresh (p99 11.5 ms against 7.4 ms at 1,000 workers), and counted no worker at all after
 * a Redis flush. The scheduler still asks the registry (liveness.ts).
 */
function liveFilter(ctx: Context): SQL {
  return heartbeatLive(ctx.config.workerTtlSeconds);
}

/** A JSON column as the driver hands it (jsonColumn), `empty` when null. */
const parsed = <T>(value: T | string | null | undefined, empty: T): T => jsonColumn(value ?? empty);

/**
 * The live workers' capacity in every resource, summed by Postgres in one statement: CPUs, memory and GPUs
 * (with what draining workers have free, which new jobs cannot use), the GPUs by model (a GPU is used when
 * its index's bit is set in `gpus_used`) and the generic resources. No row per worker leaves the database.
 * `extra`: more columns of the same statement.
 */
async function liveCapacity(ctx: Context, live: SQL, extra: SQL = sql``) {
  const row = await queryOne<Record<string, unknown>>(
    ctx.db,
    sql`SELECT count(*) AS workers, count(*) FILTER (WHERE w.status = 'ready') AS ready,
               count(*) FILTER (WHERE w.status = 'draining') AS draining, coalesce(sum(w.cpus), 0) AS total,
               coalesce(sum(greatest(0, w.cpus - w.allocated_cpus)) FILTER (WHERE w.status <> 'ready'), 0) AS drained,
               coalesce(sum(w.memory_mb), 0) AS memory_total, coalesce(sum(w.allocated_memory_mb), 0) AS memory_allocated,
               coalesce(sum(greatest(0, w.memory_mb - w.allocated_memory_mb)) FILTER (WHERE w.status <> 'ready'), 0) AS memory_drained,
               coalesce(sum(jsonb_array_length(w.gpus)), 0) AS gpus_total, coalesce(sum(w.allocated_gpus), 0) AS gpus_allocated,
               coalesce(sum(greatest(0, jsonb_array_length(w.gpus) - w.allocated_gpus)) FILTER (WHERE w.status <> 'ready'), 0) AS gpus_drained,
               (SELECT json_object_agg(m.model, json_build_array(m.total, m.allocated) ORDER BY m.model)
                FROM (SELECT coalesce(g->>'model', '') AS model, count(*) AS total,
                             count(*) FILTER (WHERE (w.gpus_used >> (g->>'index')::int) & 1 = 1) AS allocated
                      FROM workers w CROSS JOIN LATERAL jsonb_array_elements(w.gpus) g
                      WHERE ${live} GROUP BY 1) m) AS gpu_models,
               (SELECT json_object_agg(r.name, json_build_array(r.total, r.allocated) ORDER BY r.name)
                FROM (SELECT g.name, sum(g.total) AS total, sum(g.allocated) AS allocated
                      FROM worker_gres g JOIN workers w ON w.id = g.worker_id
                      WHERE ${live} GROUP BY g.name) r) AS gres
               ${extra}
        FROM workers w WHERE ${live}`,
  );
  return capacityOf(row);
}

function capacityOf(row: Record<string, unknown> | undefined) {
  const n = (key: string) => Number(row?.[key] ?? 0);
  const pairs = (key: string) =>
    Object.entries(parsed<Record<string, [number, number]>>(row?.[key] as string | null, {})).map(
      ([name, [total, allocated]]) => [name, { total: Number(total), allocated: Number(allocated) }] as const,
    );
  return {
    workers: n('workers'),
    ready: n('ready'),
    draining: n('draining'),
    total_cpus: n('total'),
    // A draining worker's free CPUs (memory, GPUs) are not available to new jobs.
    drained_free_cpus: n('drained'),
    memory: { total: n('memory_total'), allocated: n('memory_allocated'), drained_free: n('memory_drained') },
    gpus: {
      total: n('gpus_total'),
      allocated: n('gpus_allocated'),
      drained_free: n('gpus_drained'),
      by_model: Object.fromEntries(pairs('gpu_models')),
    },
    gres: Object.fromEntries(pairs('gres')),
    row,
  };
}
type Capacity = ReturnType<typeof capacityOf>;

function resourcesOf(capacity: Capacity, allocated: number) {
  const total = capacity.total_cpus;
  return {
    total_cpus: total,
    allocated_cpus: allocated,
    available_cpus: Math.max(0, total - allocated - capacity.drained_free_cpus),
    utilization: total === 0 ? 0 : Math.round((allocated / total) * 1000) / 10,
  };
}

/** Memory, GPUs and generic resources of the live workers, beside `resources` (the CPUs). */
function otherResourcesOf(capacity: Capacity) {
  const { memory, gpus } = capacity;
  return {
    memory: {
      total_mb: memory.total,
      allocated_mb: memory.allocated,
      available_mb: Math.max(0, memory.total - memory.allocated - memory.drained_free),
    },
    gpus: {
      total: gpus.total,
      allocated: gpus.allocated,
      available: Math.max(0, gpus.total - gpus.allocated - gpus.drained_free),
      by_model: gpus.by_model,
    },
    gres: capacity.gres,
  };
}

/** The partitions, default first, as the scheduler reads them (membership: `partitionsOf`). */
async function readPartitions(ctx: Context) {
  const rows = await query<PartitionRow>(
    ctx.db,
    sql`SELECT ${PARTITION_COLUMNS} FROM partitions ORDER BY is_default DESC, name`,
  );
  return { rows, resolved: partitionsOf(rows) };
}
type Partitions = Awaited<ReturnType<typeof readPartitions>>;

/** Beyond this many pending jobs, the dashboard does not count them per partition (the total is in `jobs`). */
export const PARTITION_PENDING_COUNT_LIMIT = 5000;

/** A partition's node list, expanded once per distinct list (an admin's lists change rarely). */
const expandedLists = new Map<string, string[]>();
function expandedList(nodes: string): string[] {
  let names = expandedLists.get(nodes);
  if (!names) {
    try {
      names = expandHostlist(nodes);
    } catch {
      names = []; // refused when set; a list that no longer parses names no node, as for the scheduler
    }
    if (expandedLists.size >= 100) expandedLists.clear();
    expandedLists.set(nodes, names);
  }
  return names;
}

interface PartitionGroup {
  declared: string[];
  listed: string[];
  nodes: number;
  cpus: number;
  allocated_cpus: number;
  gpus: number;
  allocated_gpus: number;
  running: number;
}

/**
 * Each partition's live nodes and what they hold, and its jobs, in one statement. Postgres groups the live
 * workers by the partitions they declare and the node lists that name them (a handful of groups, whatever
 * the cluster's size), so no row per worker leaves it; the groups are then given to their partitions by the
 * scheduler's rule (`partitionsOf`: declared, named by a node list, else the default). Running jobs are those
 * on the partition's live nodes, counted per node over the partial index `jobs_node_active_idx`. Pending jobs
 * are counted in each partition they name (none: the default) while the queue holds at most
 * PARTITION_PENDING_COUNT_LIMIT of them; beyond, `pending_jobs` is null.
 */
async function partitionUsage(ctx: Context, live: SQL, partitions: Partitions) {
  const lists = partitions.rows
    .filter((p) => p.nodes)
    .map((p) => ({ name: p.name, names: expandedList(p.nodes ?? '') }));
  const listed =
    lists.length === 0
      ? sql`'{}'::text[]`
      : sql`array_remove(ARRAY[${sql.join(
          lists.map((l) => sql`CASE WHEN w.id = ANY(${pgArray(l.names)}::text[]) THEN ${l.name}::text END`),
          sql`, `,
        )}]::text[], NULL)`;
  const row = await queryOne<{
    groups: PartitionGroup[] | string | null;
    pending: [string | null, number][] | string | null;
  }>(
    ctx.db,
    sql`WITH running AS (SELECT node, count(*) AS n FROM jobs WHERE state = 'RUNNING' GROUP BY node),
             groups AS (
               SELECT w.partitions AS declared, ${listed} AS listed, count(*) AS nodes, sum(w.cpus) AS cpus,
                      sum(w.allocated_cpus) AS allocated_cpus, sum(jsonb_array_length(w.gpus)) AS gpus,
                      sum(w.allocated_gpus) AS allocated_gpus, coalesce(sum(r.n), 0) AS running
               FROM workers w LEFT JOIN running r ON r.node = w.id
               WHERE ${live} GROUP BY 1, 2)
        SELECT (SELECT json_agg(groups) FROM groups) AS groups,
               (SELECT json_agg(json_build_array(q.partition, q.n))
                FROM (SELECT partition, count(*) AS n
                      FROM (SELECT partition FROM jobs WHERE state = 'PENDING' LIMIT ${PARTITION_PENDING_COUNT_LIMIT + 1}) p
                      GROUP BY partition) q) AS pending`,
  );
  const { rules, defaultName, jobPartitions } = partitions.resolved;
  const usage = new Map(
    partitions.rows.map((p) => [
      p.name,
      { nodes: 0, cpus: 0, allocated_cpus: 0, gpus: 0, allocated_gpus: 0, running: 0, pending: 0 },
    ]),
  );
  for (const g of parsed<PartitionGroup[]>(row?.groups, [])) {
    // partitionsOf's workerPartitions, with the node lists already matched in Postgres.
    const names = new Set([...g.declared.filter((d) => rules.has(d)), ...g.listed]);
    if (names.size === 0 && g.declared.length === 0 && defaultName !== null) names.add(defaultName);
    for (const name of names) {
      const u = usage.get(name);
      if (!u) continue;
      u.nodes += Number(g.nodes);
      u.cpus += Number(g.cpus);
      u.allocated_cpus += Number(g.allocated_cpus);
      u.gpus += Number(g.gpus);
      u.allocated_gpus += Number(g.allocated_gpus);
      u.running += Number(g.running);
    }
  }
  const pending = parsed<[string | null, number][]>(row?.pending, []);
  const counted = pending.reduce((sum, [, n]) => sum + Number(n), 0) <= PARTITION_PENDING_COUNT_LIMIT;
  for (const [partition, n] of pending) {
    for (const name of new Set(jobPartitions(partition))) {
      const u = usage.get(name);
      if (u) u.pending += Number(n);
    }
  }
  return partitions.rows.map((p) => {
    const u = usage.get(p.name) as NonNullable<ReturnType<typeof usage.get>>;
    return {
      name: p.name,
      state: p.state as PartitionState,
      default: p.is_default,
      live_nodes: u.nodes,
      total_cpus: u.cpus,
      allocated_cpus: u.allocated_cpus,
      total_gpus: u.gpus,
      allocated_gpus: u.allocated_gpus,
      pending_jobs: counted ? u.pending : null,
      running_jobs: u.running,
    };
  });
}
export type PartitionSummary = Awaited<ReturnType<typeof partitionUsage>>[number];

/** The columns of a worker the dashboard shows, beyond LiveWorkerRow's (`w`: the worker's row). */
const UI_WORKER_COLUMNS = sql`w.id, w.hostname, w.cpus, w.allocated_cpus, w.status, w.last_heartbeat, w.registered_at,
  w.memory_mb, w.allocated_memory_mb, w.gpus AS gpu_devices, w.gpus_used::text AS gpus_used, w.allocated_gpus,
  w.features, w.partitions AS declared_partitions,
  (SELECT json_object_agg(g.name, json_build_object('total', g.total, 'allocated', g.allocated) ORDER BY g.name)
   FROM worker_gres g WHERE g.worker_id = w.id) AS gres,
  (SELECT count(*) FROM jobs j WHERE j.node = w.id AND j.state = 'RUNNING') AS running_jobs`;

interface UiWorkerRow extends LiveWorkerRow {
  live: boolean | string;
  memory_mb: number;
  allocated_memory_mb: number;
  gpu_devices: GpuDevice[] | string;
  gpus_used: string;
  allocated_gpus: number;
  features: string[];
  declared_partitions: string[];
  gres: Record<string, { total: number; allocated: number }> | string | null;
}

/**
 * Workers as the dashboard lists them: `live` says whether `status` comes from a live agent; `partitions`
 * are the ones the worker serves (the scheduler's rule, `partitionsOf`).
 */
function uiWorkerView(w: UiWorkerRow, partitions: Partitions) {
  const live = w.live === true || w.live === 't';
  const gpus = parsed<GpuDevice[]>(w.gpu_devices, []);
  return {
    worker_id: w.id,
    hostname: w.hostname,
    cpus: Number(w.cpus),
    allocated_cpus: Number(w.allocated_cpus),
    available_cpus: live ? Math.max(0, Number(w.cpus) - Number(w.allocated_cpus)) : 0,
    status: live ? w.status : ('down' as WorkerStatus),
    running_jobs: Number(w.running_jobs),
    registered_at: new Date(w.registered_at).toISOString(),
    last_heartbeat: new Date(w.last_heartbeat).toISOString(),
    memory_mb: Number(w.memory_mb),
    allocated_memory_mb: Number(w.allocated_memory_mb),
    gpus: gpus.length,
    allocated_gpus: Number(w.allocated_gpus),
    gres: Object.fromEntries(
      Object.entries(parsed<Record<string, { total: number; allocated: number }>>(w.gres, {})).map(
        ([name, g]) => [name, { total: Number(g.total), allocated: Number(g.allocated) }],
      ),
    ),
    features: w.features ?? [],
    partitions: [...partitions.resolved.workerPartitions(w.id, w.declared_partitions ?? [])].sort(),
  };
}
export type UiWorker = ReturnType<typeof uiWorkerView>;

/**
 * One page of workers in id order after `after`: the live ones, and with `recent` also those down (or
 * silent) within the last hour, reported `down`. Keyset-paged over the primary key; running jobs are counted
 * per listed worker on the partial index `jobs_node_active_idx`.
 */
async function workersPage(
  ctx: Context,
  isLive: SQL,
  partitions: Promise<Partitions>,
  options: { after?: string; limit: number; recent: boolean },
) {
  const filters = [
    options.recent
      ? sql`(${isLive} OR w.down_at > now() - interval '1 hour' OR w.last_heartbeat > now() - interval '1 hour')`
      : isLive,
  ];
  if (options.after !== undefined) filters.push(sql`w.id > ${options.after}`);
  const [rows, resolved] = await Promise.all([
    query<UiWorkerRow>(
      ctx.db,
      sql`SELECT ${UI_WORKER_COLUMNS}, ${options.recent ? sql`coalesce(${isLive}, false)` : sql`true`} AS live
          FROM workers w WHERE ${sql.join(filters, sql` AND `)} ORDER BY w.id LIMIT ${options.limit + 1}`,
    ),
    partitions,
  ]);
  const page = rows.slice(0, options.limit).map((w) => uiWorkerView(w, resolved));
  return { workers: page, next_after: rows.length > options.limit ? (page.at(-1)?.worker_id ?? null) : null };
}

/**
 * `GET /api/v1/dashboard`: the live capacity in every resource (summed in Postgres), the partitions, the job
 * counts, and the first DASHBOARD_WORKERS_LIMIT live workers by id; `workers_page.next` is where the rest are.
 */
export async function getDashboard(ctx: Context) {
  const live = liveFilter(ctx);
  const partitions = readPartitions(ctx);
  const [capacity, page, usage, allocation, jobs] = await Promise.all([
    liveCapacity(ctx, live),
    workersPage(ctx, live, partitions, { limit: DASHBOARD_WORKERS_LIMIT, recent: false }),
    partitions.then((p) => partitionUsage(ctx, live, p)),
    readAllocatedCpus(ctx),
    readJobCounts(ctx),
  ]);
  return {
    resources: resourcesOf(capacity, allocation.allocated),
    ...otherResourcesOf(capacity),
    partitions: usage,
    workers: page.workers,
    workers_page: {
      live_workers: capacity.workers,
      limit: DASHBOARD_WORKERS_LIMIT,
      next:
        page.next_after === null
          ? null
          : `/api/v1/ui/workers?after=${encodeURIComponent(page.next_after)}&live=true`,
    },
    jobs,
  };
}

/** The contract's statistics line: `Active workers: 2, Total CPUs: 192`. */
export async function logClusterStats(ctx: Context): Promise<void> {
  const capacity = await liveCapacity(ctx, liveFilter(ctx));
  ctx.logger.info(`Active workers: ${capacity.workers}, Total CPUs: ${capacity.total_cpus}`);
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

/**
 * Records one utilization sample (at most one a minute: `at` is the minute, a second call in the same minute
 * does nothing) and drops samples older than 7 days, in ONE statement. Called by the scheduling backstop.
 */
export async function recordUtilizationSample(ctx: Context): Promise<void> {
  // Backstop ticks come every few seconds on Node: go to the database once a minute per process.
  const minute = Math.floor(Date.now() / 60_000);
  if (sampledMinute.get(ctx) === minute) return;
  const gap = `${QUIET_MARKER_TTL_SECONDS + 600} seconds`;
  const members = await partitionMembers(ctx);
  // capacity_hourly (sreport's Reported) gets the CPUs of the previous sample for the time since it: a quiet
  // cluster takes no samples, but its capacity cannot change unnoticed (a registration ends the quiet, an
  // expired worker runs the backstop). A gap longer than the quiet marker lasts is a control plane that was
  // down: not counted.
  await ctx.db.execute(
    sql`WITH prev AS (
          SELECT at, total_cpus, partition_cpus FROM utilization_samples
          WHERE at < date_trunc('minute', now()) AND at >= date_trunc('minute', now()) - ${gap}::interval
          ORDER BY at DESC LIMIT 1),
        sample AS (
          INSERT INTO utilization_samples (at, total_cpus, allocated_cpus, live_workers, partition_cpus)
          SELECT date_trunc('minute', now()), coalesce(sum(cpus), 0), coalesce(sum(allocated_cpus), 0), count(*),
                 (SELECT coalesce(jsonb_object_agg(part, n), '{}'::jsonb) FROM (
                    SELECT m.part, sum(CASE WHEN m.cap > 0 THEN least(pw.cpus, m.cap) ELSE pw.cpus END) AS n
                    FROM unnest(${pgArray(members.ids)}::text[], ${pgArray(members.parts)}::text[],
                                ${pgArray(members.caps)}::int[]) AS m(id, part, cap)
                    JOIN workers pw ON pw.id = m.id
                    WHERE ${liveInPostgres(ctx.config.workerTtlSeconds, 'pw')}
                    GROUP BY m.part) per_partition)
          FROM workers w
          WHERE ${heartbeatLive(ctx.config.workerTtlSeconds)}
          ON CONFLICT (at) DO NOTHING
          RETURNING at),
        capacity AS (
          INSERT INTO capacity_hourly AS c (bucket, cpu_seconds, samples)
          SELECT h, sum(prev.total_cpus * extract(epoch FROM least(s.at, h + interval '1 hour') - greatest(prev.at, h))), 1
          FROM sample s, prev,
               generate_series(date_trunc('hour', prev.at, 'UTC'), date_trunc('hour', s.at - interval '1 second', 'UTC'),
                               interval '1 hour') h
          GROUP BY h ORDER BY h
          ON CONFLICT (bucket) DO UPDATE SET cpu_seconds = c.cpu_seconds + excluded.cpu_seconds, samples = c.samples + 1
          RETURNING 1),
        partition_capacity AS (
          INSERT INTO capacity_partition_hourly AS c (bucket, partition, cpu_seconds, samples)
          SELECT h, pc.key, sum(pc.value::numeric * extract(epoch FROM least(s.at, h + interval '1 hour') - greatest(prev.at, h))), 1
          FROM sample s, prev, jsonb_each_text(prev.partition_cpus) pc,
               generate_series(date_trunc('hour', prev.at, 'UTC'), date_trunc('hour', s.at - interval '1 second', 'UTC'),
                               interval '1 hour') h
          GROUP BY h, pc.key ORDER BY h, pc.key
          ON CONFLICT (bucket, partition) DO UPDATE SET cpu_seconds = c.cpu_seconds + excluded.cpu_seconds,
            samples = c.samples + 1
          RETURNING 1)
        DELETE FROM utilization_samples
        WHERE at < now() - interval '7 days' AND EXISTS (SELECT 1 FROM sample)
          AND (SELECT count(*) FROM capacity) + (SELECT count(*) FROM partition_capacity) >= 0`,
  );
  sampledMinute.set(ctx, minute);
}

/**
 * Which partitions each worker not down is in (the scheduler's rule: declared, named by a node list, else the
 * default), as (worker, partition, max_cpus_per_node or 0) columns: the sample sums the live ones' CPUs per
 * partition in its own statement, so they agree with its total.
 */
async function partitionMembers(ctx: Context) {
  const [rows, workers] = await Promise.all([
    query<PartitionRow>(ctx.db, sql`SELECT ${PARTITION_COLUMNS} FROM partitions`),
    query<{ id: string; partitions: string[] }>(
      ctx.db,
      sql`SELECT id, partitions FROM workers WHERE status <> 'down'`,
    ),
  ]);
  const partitions = partitionsOf(rows);
  const members = { ids: [] as string[], parts: [] as string[], caps: [] as number[] };
  for (const w of workers) {
    for (const name of partitions.workerPartitions(w.id, w.partitions)) {
      members.ids.push(w.id);
      members.parts.push(name);
      members.caps.push(partitions.rules.get(name)?.maxCpusPerNode ?? 0);
    }
  }
  return members;
}

const sampledMinute = new WeakMap<Context, number>();

export const utilizationInput = z.strictObject({
  window: z.enum(['1h', '24h'], { error: 'window is 1h or 24h' }).default('1h'),
});

/** Samples of the last hour or day, oldest first (24 h: averaged over 10-minute buckets, at most 144 points). */
export async function utilizationSeries(ctx: Context, input: z.infer<typeof utilizationInput>) {
  const rows = await query<{
    at: Date | string;
    total: number | string;
    allocated: number | string;
    workers: number | string;
  }>(
    ctx.db,
    input.window === '1h'
      ? sql`SELECT at, total_cpus AS total, allocated_cpus AS allocated, live_workers AS workers
            FROM utilization_samples WHERE at > now() - interval '1 hour' ORDER BY at`
      : sql`SELECT to_timestamp(floor(extract(epoch FROM at) / 600) * 600) AS at,
                   round(avg(total_cpus)) AS total, round(avg(allocated_cpus)) AS allocated,
                   round(avg(live_workers)) AS workers
            FROM utilization_samples WHERE at > now() - interval '24 hours'
            GROUP BY 1 ORDER BY 1`,
  );
  return {
    window: input.window,
    samples: rows.map((r) => ({
      at: new Date(r.at).toISOString(),
      total_cpus: Number(r.total),
      allocated_cpus: Number(r.allocated),
      live_workers: Number(r.workers),
    })),
  };
}

export const uiJobsInput = z.strictObject({
  state: z
    .string()
    .transform((s) =>
      s
        .split(',')
        .map((x) => x.trim().toUpperCase())
        .filter((x) => x !== ''),
    )
    .pipe(z.array(z.enum(JOB_STATES, { error: `state is one of ${JOB_STATES.join(', ')}` })))
    .optional(),
  /** A case-insensitive substring of the job's name or account. */
  q: z.string().max(255, 'q is at most 255 characters').optional(),
  limit: z.coerce.number().int().min(1).max(500).default(50),
  before: z.coerce.number().int().positive().max(Number.MAX_SAFE_INTEGER).optional(),
  /** The tasks of this array, one row each; absent: each array is one row (its first task's) with its progress. */
  array: z.coerce.number().int().positive().max(Number.MAX_SAFE_INTEGER).optional(),
});

/**
 * The dashboard's job list: GET /api/v1/jobs's, plus `q` (name or account search). Read-only. An array is one
 * row (in its first task's place) with its progress (`array`); `array=<id>` lists its tasks.
 */
export async function listUiJobs(ctx: Context, input: z.infer<typeof uiJobsInput>, viewer: Principal) {
  const filters = [sql`true`];
  if (input.state && input.state.length > 0) filters.push(sql`state = ANY(${pgArray(input.state)}::text[])`);
  if (input.before) filters.push(sql`id < ${input.before}`);
  const q = input.q?.trim();
  if (q) {
    const pattern = `%${q.replaceAll('\\', '\\\\').replaceAll('%', '\\%').replaceAll('_', '\\_')}%`;
    filters.push(sql`(name ILIKE ${pattern} OR coalesce(account, '') ILIKE ${pattern})`);
  }
  if (!seesAllJobs(viewer)) filters.push(sql`owner = ${viewer.owner ?? ''}`);
  if (input.array !== undefined) filters.push(sql`array_job_id = ${input.array}`);
  else filters.push(sql`(array_job_id IS NULL OR id = array_job_id)`);
  const rows = await query<JobRow>(
    ctx.db,
    sql`SELECT ${JOB_COLUMNS} FROM jobs WHERE ${sql.join(filters, sql` AND `)}
        ORDER BY id DESC LIMIT ${input.limit + 1}`,
  );
  const views = rows.slice(0, input.limit).map((r) => jobView(r));
  const arrays =
    input.array === undefined
      ? await arraysByIds(
          ctx.db,
          views.filter((j) => j.array_job_id === j.id).map((j) => j.id),
        )
      : new Map();
  const page = views.map((j) => {
    const array = arrays.get(j.id);
    return array ? { ...j, array } : j;
  });
  const more = rows.length > input.limit;
  return { jobs: page, next_before: more ? (page.at(-1)?.id ?? null) : null };
}

export const uiWorkersInput = z.strictObject({
  /** Keyset: the workers whose id sorts after this one. */
  after: z
    .string()
    .max(255, 'after is a worker id (at most 255 characters)')
    .regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, 'after is a worker id: letters, digits, ".", "_" and "-"')
    .optional(),
  limit: z.coerce.number().int().min(1).max(500).default(50),
  /** true: live workers only; false (default): also those down within the last hour. */
  live: z.enum(['true', 'false'], { error: 'live is true or false' }).default('false'),
});

/** The dashboard's workers, a page at a time in id order (see workersPage). */
export async function listUiWorkers(ctx: Context, input: z.infer<typeof uiWorkersInput>) {
  return workersPage(ctx, liveFilter(ctx), readPartitions(ctx), {
    after: input.after,
    limit: input.limit,
    recent: input.live === 'false',
  });
}

/**
 * The overview: capacity in every resource, how many workers are in each state, the partitions, the job
 * counts. Summed inside Postgres (no row per worker or job leaves it).
 */
export async function getOverview(ctx: Context) {
  const live = liveFilter(ctx);
  const [capacity, usage, allocation, jobs] = await Promise.all([
    liveCapacity(
      ctx,
      live,
      sql`, (SELECT count(*) FROM workers w WHERE NOT coalesce(${live}, false)
               AND (w.down_at > now() - interval '1 hour' OR w.last_heartbeat > now() - interval '1 hour')) AS down_last_hour`,
    ),
    readPartitions(ctx).then((p) => partitionUsage(ctx, live, p)),
    readAllocatedCpus(ctx),
    readJobCounts(ctx),
  ]);
  return {
    resources: resourcesOf(capacity, allocation.allocated),
    ...otherResourcesOf(capacity),
    partitions: usage,
    workers: {
      live: capacity.workers,
      ready: capacity.ready,
      draining: capacity.draining,
      down_last_hour: Number(capacity.row?.down_last_hour ?? 0),
    },
    jobs,
  };
}
export type Overview = Awaited<ReturnType<typeof getOverview>>;

/** How far back a node page looks for the node's finished jobs (no index has jobs by node and time). */
export const NODE_HISTORY_SCAN = 10_000;

/**
 * One node: its row, whether it is live, its running jobs (partial index `jobs_node_active_idx`) and its
 * last 20 jobs among the cluster's NODE_HISTORY_SCAN latest ids (a bounded range of the primary key).
 */
export async function getUiWorker(ctx: Context, id: string, viewer: Principal) {
  const live = liveFilter(ctx);
  const mine = seesAllJobs(viewer) ? sql`true` : sql`owner = ${viewer.owner ?? ''}`;
  const [worker, running, recent, partitions] = await Promise.all([
    queryOne<
      UiWorkerRow & {
        down_at: Date | string | null;
        down_reason: string | null;
        agent_version: string | null;
        labels: Record<string, string>;
      }
    >(
      ctx.db,
      sql`SELECT ${UI_WORKER_COLUMNS}, w.down_at, w.down_reason, w.agent_version, w.labels,
                 coalesce(${live}, false) AS live
          FROM workers w WHERE w.id = ${id}`,
    ),
    query<JobRow>(
      ctx.db,
      sql`SELECT ${JOB_COLUMNS} FROM jobs WHERE node = ${id} AND state = 'RUNNING' AND ${mine}
          ORDER BY id DESC LIMIT 100`,
    ),
    query<JobRow>(
      ctx.db,
      sql`SELECT ${JOB_COLUMNS} FROM jobs
          WHERE id > (SELECT coalesce(max(id), 0) - ${NODE_HISTORY_SCAN} FROM jobs)
            AND node = ${id} AND state <> 'RUNNING' AND ${mine} ORDER BY id DESC LIMIT 20`,
    ),
    readPartitions(ctx),
  ]);
  if (!worker) throw notFound('worker_not_found', `Worker ${id} does not exist`);
  const used = maskIndexes(worker.gpus_used);
  return {
    worker: {
      ...uiWorkerView(worker, partitions),
      down_at: worker.down_at === null ? null : new Date(worker.down_at).toISOString(),
      down_reason: worker.down_reason,
      agent_version: worker.agent_version,
      labels: worker.labels ?? {},
      /** Its GPUs by index, and whether a running job holds each. */
      gpu_devices: parsed<GpuDevice[]>(worker.gpu_devices, [])
        .map((g) => ({ index: Number(g.index), model: g.model, used: used.has(Number(g.index)) }))
        .sort((a, b) => a.index - b.index),
    },
    running: running.map((r) => jobView(r)),
    recent: recent.map((r) => jobView(r)),
  };
}
export type UiWorkerDetail = Awaited<ReturnType<typeof getUiWorker>>;
