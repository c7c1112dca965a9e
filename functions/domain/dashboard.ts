import { type SQL, sql } from 'drizzle-orm';
import { z } from 'zod';
import { JOB_STATES, type WorkerStatus } from '../../db/schema.ts';
import { type Principal, seesAllJobs } from './auth.ts';
import { readAllocatedCpus } from './cache.ts';
import type { Context } from './context.ts';
import { notFound } from './errors.ts';
import { readJobCounts } from './job-counts.ts';
import { type JobRow, jobView } from './jobs.ts';
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
  recent?: boolean | string;
}

/**
 * A worker row `w` whose heartbeat is live: not down, and heartbeating within the TTL. Every heartbeat
 * refreshes this row and the registry key with the same TTL, so both say the same.
 */
const heartbeatLive = (ttlSeconds: number) =>
  sql`(w.status <> 'down' AND w.last_heartbeat > now() - make_interval(secs => ${ttlSeconds}))`;

/**
 * The live workers' rows with their running jobs, counted in one grouped pass over the partial index
 * `jobs_node_active_idx` (RUNNING jobs only, never the history), not one correlated count per worker.
 */
const liveWorkersSql = (filter: SQL, ttlSeconds: number) =>
  sql`SELECT w.id, w.hostname, w.cpus, w.allocated_cpus, w.status, w.last_heartbeat, w.registered_at,
             coalesce(r.n, 0) AS running_jobs,
             ${heartbeatLive(ttlSeconds)} AS recent
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
    query<LiveWorkerRow>(ctx.db, liveWorkersSql(sql`w.status <> 'down'`, ttl)),
  ]);
  let rows: LiveWorkerRow[];
  if (live === null) {
    rows = candidates.filter((w) => w.recent === true || w.recent === 't');
  } else if (live.length === 0) {
    return [];
  } else {
    const ids = new Set(live);
    rows = candidates.filter((w) => ids.has(w.id));
    if (rows.length < ids.size) {
      rows = await query<LiveWorkerRow>(
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
  }));
}

/** Every worker ever seen, live or down (with when and why it went down). */
export async function listWorkers(ctx: Context) {
  // Live as listLiveWorkers judges it: the registry's index, or (registry down) a recent durable heartbeat.
  const ids = await liveWorkerIds(ctx);
  const live = ids ? new Set(ids) : null;
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
    recent: boolean;
  }>(
    ctx.db,
    sql`SELECT id, hostname, cpus, allocated_cpus, status, last_heartbeat, registered_at, down_at, down_reason,
               ${heartbeatLive(ctx.config.workerTtlSeconds)} AS recent
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

/**
 * The live workers' capacity, summed by Postgres in one aggregate: what the overview needs, whatever the
 * cluster's size (no row per worker leaves the database).
 */
async function liveCapacity(ctx: Context, live: SQL) {
  const row = await queryOne<Record<string, string | number | null>>(
    ctx.db,
    sql`SELECT count(*) AS workers, count(*) FILTER (WHERE w.status = 'ready') AS ready,
               count(*) FILTER (WHERE w.status = 'draining') AS draining, coalesce(sum(w.cpus), 0) AS total,
               coalesce(sum(greatest(0, w.cpus - w.allocated_cpus)) FILTER (WHERE w.status <> 'ready'), 0) AS drained
        FROM workers w WHERE ${live}`,
  );
  return capacityOf(row);
}

function capacityOf(row: Record<string, string | number | null> | undefined) {
  return {
    workers: Number(row?.workers ?? 0),
    ready: Number(row?.ready ?? 0),
    draining: Number(row?.draining ?? 0),
    total_cpus: Number(row?.total ?? 0),
    // A draining worker's free CPUs are not available to new jobs.
    drained_free_cpus: Number(row?.drained ?? 0),
  };
}

function resourcesOf(capacity: Awaited<ReturnType<typeof liveCapacity>>, allocated: number) {
  const total = capacity.total_cpus;
  return {
    total_cpus: total,
    allocated_cpus: allocated,
    available_cpus: Math.max(0, total - allocated - capacity.drained_free_cpus),
    utilization: total === 0 ? 0 : Math.round((allocated / total) * 1000) / 10,
  };
}

/** Workers as the dashboard lists them: `live` says whether `status` comes from a live agent. */
function uiWorkerView(w: LiveWorkerRow & { live: boolean | string }) {
  const live = w.live === true || w.live === 't';
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
  options: { after?: string; limit: number; recent: boolean },
) {
  const filters = [
    options.recent
      ? sql`(${isLive} OR w.down_at > now() - interval '1 hour' OR w.last_heartbeat > now() - interval '1 hour')`
      : isLive,
  ];
  if (options.after !== undefined) filters.push(sql`w.id > ${options.after}`);
  const rows = await query<LiveWorkerRow & { live: boolean | string }>(
    ctx.db,
    sql`SELECT w.id, w.hostname, w.cpus, w.allocated_cpus, w.status, w.last_heartbeat, w.registered_at,
               (SELECT count(*) FROM jobs j WHERE j.node = w.id AND j.state = 'RUNNING') AS running_jobs,
               ${options.recent ? sql`coalesce(${isLive}, false)` : sql`true`} AS live
        FROM workers w WHERE ${sql.join(filters, sql` AND `)} ORDER BY w.id LIMIT ${options.limit + 1}`,
  );
  const page = rows.slice(0, options.limit).map(uiWorkerView);
  return { workers: page, next_after: rows.length > options.limit ? (page.at(-1)?.worker_id ?? null) : null };
}

/**
 * `GET /api/v1/dashboard`: the live capacity (summed in Postgres), the job counts, and the first
 * DASHBOARD_WORKERS_LIMIT live workers by id; `workers_page.next` is where the rest are.
 */
export async function getDashboard(ctx: Context) {
  const live = liveFilter(ctx);
  const [capacity, page, allocation, jobs] = await Promise.all([
    liveCapacity(ctx, live),
    workersPage(ctx, live, { limit: DASHBOARD_WORKERS_LIMIT, recent: false }),
    readAllocatedCpus(ctx),
    readJobCounts(ctx),
  ]);
  return {
    resources: resourcesOf(capacity, allocation.allocated),
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
  await ctx.db.execute(
    sql`WITH sample AS (
          INSERT INTO utilization_samples (at, total_cpus, allocated_cpus, live_workers)
          SELECT date_trunc('minute', now()), coalesce(sum(cpus), 0), coalesce(sum(allocated_cpus), 0), count(*)
          FROM workers w
          WHERE ${heartbeatLive(ctx.config.workerTtlSeconds)}
          ON CONFLICT (at) DO NOTHING
          RETURNING at)
        DELETE FROM utilization_samples
        WHERE at < now() - interval '7 days' AND EXISTS (SELECT 1 FROM sample)`,
  );
  sampledMinute.set(ctx, minute);
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
});

const UI_JOB_COLUMNS = sql`id, name, state, cpus, exit_code, node, account, partition, time_limit_s, work_dir,
  environment, priority, requeue, attempt, reason, cancel_requested, owner, submit_time, start_time, end_time`;

/** The dashboard's job list: GET /api/v1/jobs's, plus `q` (name or account search). Read-only. */
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
  const rows = await query<JobRow>(
    ctx.db,
    sql`SELECT ${UI_JOB_COLUMNS} FROM jobs WHERE ${sql.join(filters, sql` AND `)}
        ORDER BY id DESC LIMIT ${input.limit + 1}`,
  );
  const page = rows.slice(0, input.limit).map((r) => jobView(r));
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
  return workersPage(ctx, liveFilter(ctx), {
    after: input.after,
    limit: input.limit,
    recent: input.live === 'false',
  });
}

/**
 * The overview: capacity, how many workers are in each state, the job counts. One pass over the workers'
 * rows inside Postgres (no row per worker or job leaves it).
 */
export async function getOverview(ctx: Context) {
  const live = liveFilter(ctx);
  const [row, allocation, jobs] = await Promise.all([
    queryOne<Record<string, string | number | null>>(
      ctx.db,
      sql`SELECT count(*) FILTER (WHERE live) AS workers, count(*) FILTER (WHERE live AND status = 'ready') AS ready,
                 count(*) FILTER (WHERE live AND status = 'draining') AS draining,
                 coalesce(sum(cpus) FILTER (WHERE live), 0) AS total,
                 coalesce(sum(greatest(0, cpus - allocated_cpus)) FILTER (WHERE live AND status <> 'ready'), 0) AS drained,
                 count(*) FILTER (WHERE NOT live AND (down_at > now() - interval '1 hour'
                                                      OR last_heartbeat > now() - interval '1 hour')) AS down_last_hour
          FROM (SELECT w.*, coalesce(${live}, false) AS live FROM workers w) w`,
    ),
    readAllocatedCpus(ctx),
    readJobCounts(ctx),
  ]);
  const capacity = capacityOf(row);
  return {
    resources: resourcesOf(capacity, allocation.allocated),
    workers: {
      live: capacity.workers,
      ready: capacity.ready,
      draining: capacity.draining,
      down_last_hour: Number(row?.down_last_hour ?? 0),
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
  const [worker, running, recent] = await Promise.all([
    queryOne<
      LiveWorkerRow & {
        live: boolean | string;
        down_at: Date | string | null;
        down_reason: string | null;
        agent_version: string | null;
        labels: Record<string, string>;
      }
    >(
      ctx.db,
      sql`SELECT w.id, w.hostname, w.cpus, w.allocated_cpus, w.status, w.last_heartbeat, w.registered_at,
                 w.down_at, w.down_reason, w.agent_version, w.labels,
                 (SELECT count(*) FROM jobs j WHERE j.node = w.id AND j.state = 'RUNNING') AS running_jobs,
                 coalesce(${live}, false) AS live
          FROM workers w WHERE w.id = ${id}`,
    ),
    query<JobRow>(
      ctx.db,
      sql`SELECT ${UI_JOB_COLUMNS} FROM jobs WHERE node = ${id} AND state = 'RUNNING' AND ${mine}
          ORDER BY id DESC LIMIT 100`,
    ),
    query<JobRow>(
      ctx.db,
      sql`SELECT ${UI_JOB_COLUMNS} FROM jobs
          WHERE id > (SELECT coalesce(max(id), 0) - ${NODE_HISTORY_SCAN} FROM jobs)
            AND node = ${id} AND state <> 'RUNNING' AND ${mine} ORDER BY id DESC LIMIT 20`,
    ),
  ]);
  if (!worker) throw notFound('worker_not_found', `Worker ${id} does not exist`);
  return {
    worker: {
      ...uiWorkerView(worker),
      down_at: worker.down_at === null ? null : new Date(worker.down_at).toISOString(),
      down_reason: worker.down_reason,
      agent_version: worker.agent_version,
      labels: worker.labels ?? {},
    },
    running: running.map((r) => jobView(r)),
    recent: recent.map((r) => jobView(r)),
  };
}
export type UiWorkerDetail = Awaited<ReturnType<typeof getUiWorker>>;
