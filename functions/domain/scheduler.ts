import { sql } from 'drizzle-orm';
import { applyAllocationDelta } from './cache.ts';
import { liveWorkerIds } from './liveness.ts';
import {
  createPlanner,
  type FreeWorker,
  type PendingJob,
  type Placement,
  type RunningJob,
} from './placement.ts';
import type { Ports } from './ports.ts';
import { pgArray, query, queryOne, withRetry } from './sql.ts';

export interface PassResult {
  placed: number;
  /** Live workers the pass considered (ready ones). */
  workers: number;
  skipped?: 'no_workers';
}

/** Pages of `scheduleBatchSize` pending jobs one pass reads at most. */
const MAX_PAGES = 10;

/** The reason a job waits for a bigger node; the scheduler keeps it current. */
export const WAITING_FOR_NODE = 'waiting for a node with at least ';
/** The reason of a job that fits a live node but waits for its CPUs (Slurm's Resources or Priority). */
export const WAITING_FOR_CPUS = 'waiting for free CPUs';
/** The reason of a job that holds a worker until its CPUs free up. */
export const reservedReason = (workerId: string) => `waiting for CPUs on ${workerId}, reserved for this job`;

interface QueueRow {
  id: number | string;
  cpus: number;
  reason: string | null;
  reserved_worker: string | null;
  priority: number;
  /** submit_time as Postgres text: the keyset cursor hands it back unchanged (no driver's Date rounding). */
  submitted: string;
}

const QUEUE_COLUMNS = sql`id, cpus, reason, reserved_worker, priority, submit_time::text AS submitted`;
const QUEUE_ORDER = sql`priority DESC, submit_time, id`;

/** The workers a pass may place on: ready and live (`live`: the registry's ids, or Postgres's heartbeats). */
const placeableWorkers = (live: ReturnType<typeof sql>) => sql`status = 'ready' AND NOT drained AND ${live}`;

const toJob = (row: QueueRow): PendingJob => ({
  id: Number(row.id),
  cpus: Number(row.cpus),
  reservedWorker: row.reserved_worker,
});

/**
 * One scheduling pass: places pending jobs on live workers, all of it committed at once.
 *
 * Concurrency: the pass locks the candidate worker rows (in id order, so passes queue behind each other
 * instead of deadlocking), then reads the queue WITHOUT locking it: a stuck queue costs no row locks (no WAL).
 * The placement is decided on the locked workers' exact numbers and written in one statement that moves the
 * jobs still PENDING to RUNNING and derives everything else from the rows it actually moved: the workers'
 * allocated CPUs, the allocations and the cluster allocation version. A job cancelled or placed by another
 * pass meanwhile is simply left out (placing fewer jobs than planned never over-allocates a locked worker).
 * The Redis cache is told after the commit, never before.
 *
 * The queue is read in pages of `scheduleBatchSize`, in queue order, skipping jobs larger than every live
 * worker (they wait for a bigger node, their reason says so) and, from the second page on, jobs larger than
 * every worker still free of a reservation. It reads on until every worker is reserved, the end of the queue,
 * `scheduleBatchSize` placements, or MAX_PAGES pages.
 */
export async function runSchedulingPass(ports: Ports): Promise<PassResult> {
  const { db, config } = ports;
  const live = await liveWorkerIds(ports);

  const outcome = await withRetry(() =>
    db.transaction(async (tx) => {
      // An empty registry is not an empty cluster (a flushed or restarted Redis): Postgres's heartbeats decide.
      const liveFilter =
        live && live.length > 0
          ? sql`id = ANY(${pgArray(live)}::text[])`
          : sql`last_heartbeat > now() - make_interval(secs => ${config.workerTtlSeconds})`;
      const workers = await query<{ id: string; cpus: number; allocated_cpus: number }>(
        tx,
        sql`SELECT id, cpus, allocated_cpus FROM workers WHERE ${placeableWorkers(liveFilter)}
            ORDER BY id FOR UPDATE`,
      );
      const nothing = {
        placed: 0,
        workers: workers.length,
        version: null,
        total: 0,
        touched: [] as string[],
      };
      if (workers.length === 0) return nothing;
      const candidates: FreeWorker[] = workers.map((w) => ({
        id: w.id,
        cpus: Number(w.cpus),
        allocatedCpus: Number(w.allocated_cpus),
      }));
      const largest = Math.max(...candidates.map((w) => w.cpus));
      if (candidates.every((w) => w.allocatedCpus >= w.cpus)) {
        await explainQueue(tx, { largest, explained: [], seen: [] });
        return nothing;
      }

      const holders = await query<QueueRow>(
        tx,
        sql`SELECT ${QUEUE_COLUMNS} FROM jobs WHERE state = 'PENDING' AND reserved_worker IS NOT NULL
            ORDER BY ${QUEUE_ORDER}`,
      );
      const batch = config.scheduleBatchSize;
      const considered: QueueRow[] = [];
      let planner = createPlanner(candidates, holders.map(toJob));
      let cursor: QueueRow | undefined;
      for (let page = 0; page < MAX_PAGES && !planner.exhausted && planner.placed < batch; page++) {
        const after = cursor
          ? sql`AND priority <= ${cursor.priority} AND (priority < ${cursor.priority}
                OR (submit_time, id) > (${cursor.submitted}::timestamptz, ${cursor.id}::bigint))`
          : sql``;
        const rows = await query<QueueRow>(
          tx,
          sql`SELECT ${QUEUE_COLUMNS} FROM jobs
              WHERE state = 'PENDING' AND cpus <= ${planner.largestUseful} ${after}
              ORDER BY ${QUEUE_ORDER} LIMIT ${batch}`,
        );
        for (const row of rows) {
          if (planner.exhausted || planner.placed >= batch) break;
          planner.consider(toJob(row));
          considered.push(row);
        }
        if (rows.length < batch) break;
        cursor = rows.at(-1);
      }

      if (planner.result().newReservations.size > 0) {
        // Choosing a new reservation well needs the time limits of the jobs running there: plan again with them.
        const running = await runningJobs(
          tx,
          candidates.filter((w) => w.allocatedCpus > 0).map((w) => w.id),
        );
        planner = createPlanner(
          candidates.map((w) => ({ ...w, running: running.get(w.id) ?? [] })),
          holders.map(toJob),
        );
        for (const row of considered) {
          if (planner.exhausted || planner.placed >= batch) break;
          planner.consider(toJob(row));
        }
      }

      const { placements, reservations } = planner.result();
      const committed = placements.length > 0 ? await commitPlacements(tx, placements) : null;
      const placed = new Set(placements.map((p) => p.jobId));
      const holding = new Map([...reservations].map(([workerId, jobId]) => [jobId, workerId]));
      const explained: Explanation[] = [];
      const seen = new Map<number, QueueRow>();
      for (const row of [...holders, ...considered]) seen.set(Number(row.id), row);
      for (const [id, row] of seen) {
        if (placed.has(id)) continue;
        const worker = holding.get(id) ?? null;
        const cpus = Number(row.cpus);
        const reason =
          worker !== null
            ? reservedReason(worker)
            : cpus > largest
              ? tooLargeReason(cpus, largest)
              : WAITING_FOR_CPUS;
        if (reason !== row.reason || worker !== row.reserved_worker) explained.push({ id, reason, worker });
      }
      // With a full batch placed the queue is not settled: the next pass reads on, so leave the rest to it.
      if (placements.length < batch || explained.length > 0) {
        await explainQueue(tx, {
          largest,
          explained,
          seen: placements.length < batch ? [...seen.keys()] : null,
        });
      }
      return {
        placed: committed?.placed ?? 0,
        workers: workers.length,
        version: committed?.version ?? null,
        total: committed?.total ?? 0,
        touched: [...new Set(placements.map((p) => p.workerId))],
      };
    }),
  );

  if (outcome.version !== null) {
    await applyAllocationDelta(ports, outcome.total, outcome.version);
    for (const workerId of outcome.touched) ports.notifier.notify(workerId);
  }
  if (outcome.workers === 0) return { placed: 0, workers: 0, skipped: 'no_workers' };
  return { placed: outcome.placed, workers: outcome.workers };
}

type Tx = Parameters<typeof query>[0];

/** The jobs running on `workerIds`, with the seconds their time limits leave them (null: no limit). */
async function runningJobs(tx: Tx, workerIds: string[]): Promise<Map<string, RunningJob[]>> {
  const byWorker = new Map<string, RunningJob[]>();
  if (workerIds.length === 0) return byWorker;
  const rows = await query<{ node: string; cpus: number; ends_in: number | string | null }>(
    tx,
    sql`SELECT node, cpus,
               extract(epoch FROM coalesce(start_time, now()) + make_interval(secs => time_limit_s) - now()) AS ends_in
        FROM jobs WHERE state = 'RUNNING' AND node = ANY(${pgArray(workerIds)}::text[])`,
  );
  for (const row of rows) {
    const list = byWorker.get(row.node) ?? [];
    list.push({ cpus: Number(row.cpus), endsInSeconds: row.ends_in === null ? null : Number(row.ends_in) });
    byWorker.set(row.node, list);
  }
  return byWorker;
}

/**
 * Moves the planned jobs that are still PENDING to RUNNING, and from exactly those rows adds the workers'
 * allocated CPUs, inserts the allocations and bumps the cluster counter: one statement.
 */
async function commitPlacements(
  tx: Tx,
  placements: readonly Placement[],
): Promise<{ placed: number; version: number | null; total: number }> {
  const jobIds = pgArray(placements.map((p) => p.jobId));
  const nodes = pgArray(placements.map((p) => p.workerId));
  const cpus = pgArray(placements.map((p) => p.cpus));
  const row = await queryOne<{
    version: string | number | null;
    jobs: string | number;
    total: string | number;
  }>(
    tx,
    sql`WITH p AS (
          SELECT * FROM unnest(${jobIds}::bigint[], ${nodes}::text[], ${cpus}::int[]) AS p(job_id, node, cpus)
        ),
        j AS (
          UPDATE jobs SET state = 'RUNNING', node = p.node, attempt = jobs.attempt + 1, reason = NULL,
            reserved_worker = NULL, claimed_session = NULL, claimed_at = NULL, start_time = NULL, end_time = NULL,
            exit_code = NULL, cancel_requested = false
          FROM p WHERE jobs.id = p.job_id AND jobs.state = 'PENDING'
          RETURNING jobs.id AS job_id, p.node, p.cpus
        ),
        per_worker AS (SELECT node, sum(cpus)::int AS n FROM j GROUP BY node),
        w AS (
          UPDATE workers SET allocated_cpus = workers.allocated_cpus + per_worker.n
          FROM per_worker WHERE workers.id = per_worker.node
          RETURNING workers.id
        ),
        a AS (
          INSERT INTO resource_allocations (job_id, allocated_cpus, node_name)
          SELECT job_id, cpus, node FROM j
          ON CONFLICT (job_id) DO UPDATE SET allocated_cpus = excluded.allocated_cpus,
            node_name = excluded.node_name, released = false, allocation_time = now(), released_time = NULL
          RETURNING 1
        ),
        c AS (
          UPDATE cluster_state SET allocated_cpus = allocated_cpus + (SELECT sum(cpus) FROM j),
            allocation_version = allocation_version + 1
          WHERE id = 1 AND EXISTS (SELECT 1 FROM j)
          RETURNING allocation_version
        )
        SELECT (SELECT allocation_version FROM c) AS version, (SELECT count(*) FROM j) AS jobs,
               (SELECT coalesce(sum(cpus), 0) FROM j) AS total`,
  );
  const placed = Number(row?.jobs ?? 0);
  return { placed, version: placed > 0 ? Number(row?.version) : null, total: Number(row?.total ?? 0) };
}

const tooLargeReason = (cpus: number, largest: number) =>
  `${WAITING_FOR_NODE}${cpus} CPUs: the largest live node has ${largest}`;

interface Explanation {
  id: number;
  reason: string;
  /** The worker it holds, or null. */
  worker: string | null;
}

/**
 * Writes why jobs wait, only where it changed (no write, no WAL, when nothing did): the jobs the pass read
 * (`explained`, with their reservations), and, when the queue is settled (`seen` is the list of jobs the pass
 * read), every other pending job: too large for every live node, or waiting for CPUs behind the jobs read.
 */
async function explainQueue(
  tx: Tx,
  { largest, explained, seen }: { largest: number; explained: Explanation[]; seen: number[] | null },
): Promise<void> {
  const ids = pgArray(explained.map((e) => e.id));
  const reasons = pgArray(explained.map((e) => e.reason));
  const workers = pgArray(explained.map((e) => e.worker ?? ''));
  const explain = sql`UPDATE jobs SET reason = r.reason, reserved_worker = nullif(r.worker, '')
      FROM unnest(${ids}::bigint[], ${reasons}::text[], ${workers}::text[]) AS r(id, reason, worker)
      WHERE jobs.id = r.id AND jobs.state = 'PENDING'`;
  if (seen === null) {
    if (explained.length > 0) await query(tx, explain);
    return;
  }
  const tooLarge = sql`${WAITING_FOR_NODE}::text || cpus || ' CPUs: the largest live node has ' || ${largest}::int`;
  await query(
    tx,
    sql`WITH explained AS (${explain} RETURNING 1)
        UPDATE jobs SET reason = CASE WHEN cpus > ${largest}::int THEN ${tooLarge} ELSE ${WAITING_FOR_CPUS} END
        WHERE state = 'PENDING' AND reserved_worker IS NULL AND NOT (id = ANY(${pgArray(seen)}::bigint[]))
          AND CASE WHEN cpus > ${largest}::int THEN reason IS DISTINCT FROM ${tooLarge}
                   ELSE reason IS NULL OR starts_with(reason, ${WAITING_FOR_NODE}) END`,
  );
}

export interface Scheduler {
  /**
   * Asks for a pass. Requests that arrive while one runs are folded into one more pass after it, so a burst
   * of submissions costs two passes, not one each, and none is missed.
   */
  request(): Promise<PassResult>;
}

export function createScheduler(ports: Ports): Scheduler {
  let running: Promise<PassResult> | null = null;
  let again: Promise<PassResult> | null = null;
  let lastNoWorkersLog = 0;

  const pass = async (): Promise<PassResult> => {
    let total = 0;
    for (;;) {
      const started = performance.now();
      const result = await runSchedulingPass(ports);
      ports.metrics?.observePass((performance.now() - started) / 1000);
      total += result.placed;
      if (result.skipped === 'no_workers') {
        const now = Date.now();
        if (now - lastNoWorkersLog >= 60_000) {
          ports.logger.info('No active workers, skipping schedule');
          lastNoWorkersLog = now;
        }
        return { ...result, placed: total };
      }
      // A full batch may mean more jobs are waiting behind it.
      if (result.placed < ports.config.scheduleBatchSize) return { ...result, placed: total };
    }
  };

  const request = (): Promise<PassResult> => {
    if (!running) {
      running = pass().finally(() => {
        running = null;
      });
      return running;
    }
    if (!again) {
      again = running
        .catch(() => undefined)
        .then(() => {
          again = null;
          return request();
        });
    }
    return again;
  };

  return { request };
}
