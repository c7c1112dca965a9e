import { sql } from 'drizzle-orm';
import { applyAllocationDelta } from './cache.ts';
import { liveWorkerIds } from './liveness.ts';
import { type FreeWorker, type PendingJob, placeJobs } from './placement.ts';
import type { Ports } from './ports.ts';
import { pgArray, query, queryOne, withRetry } from './sql.ts';

export interface PassResult {
  placed: number;
  /** Live workers the pass considered (ready ones). */
  workers: number;
  skipped?: 'no_workers';
}

/**
 * One scheduling pass: places pending jobs on live workers, all of it committed at once.
 *
 * Concurrency: the pass locks the candidate worker rows (in id order, so passes queue behind each other
 * instead of deadlocking) and the pending jobs it looks at (SKIP LOCKED: a job being cancelled is left
 * alone). With those rows held, the placement is decided on exact numbers and written in one statement
 * that moves the jobs to RUNNING, adds to the workers' allocated CPUs, records the allocations and bumps
 * the cluster allocation version. The Redis cache is told after the commit, never before.
 */
export async function runSchedulingPass(ports: Ports): Promise<PassResult> {
  const { db, config } = ports;
  const live = await liveWorkerIds(ports);
  if (live && live.length === 0) return { placed: 0, workers: 0, skipped: 'no_workers' };

  const outcome = await withRetry(() =>
    db.transaction(async (tx) => {
      const liveFilter = live
        ? sql`id = ANY(${pgArray(live)}::text[])`
        : sql`last_heartbeat > now() - make_interval(secs => ${config.workerTtlSeconds})`;
      const workers = await query<{ id: string; cpus: number; allocated_cpus: number }>(
        tx,
        sql`SELECT id, cpus, allocated_cpus FROM workers
            WHERE status = 'ready' AND NOT drained AND ${liveFilter}
            ORDER BY id FOR UPDATE`,
      );
      if (workers.length === 0) return { placed: 0, workers: 0, version: null, total: 0, touched: [] };
      const candidates: FreeWorker[] = workers.map((w) => ({
        id: w.id,
        cpus: Number(w.cpus),
        allocatedCpus: Number(w.allocated_cpus),
      }));
      if (candidates.every((w) => w.allocatedCpus >= w.cpus)) {
        return { placed: 0, workers: workers.length, version: null, total: 0, touched: [] };
      }
      const pending = await query<{ id: number | string; cpus: number; reason: string | null }>(
        tx,
        sql`SELECT id, cpus, reason FROM jobs WHERE state = 'PENDING'
            ORDER BY priority DESC, submit_time, id
            LIMIT ${config.scheduleBatchSize} FOR UPDATE SKIP LOCKED`,
      );
      const queue: PendingJob[] = pending.map((j) => ({ id: Number(j.id), cpus: Number(j.cpus) }));
      const { placements, tooLarge } = placeJobs(queue, candidates);
      await explainWaits(tx, pending, tooLarge, placements, Math.max(...candidates.map((w) => w.cpus)));
      if (placements.length === 0)
        return { placed: 0, workers: workers.length, version: null, total: 0, touched: [] };

      const jobIds = pgArray(placements.map((p) => p.jobId));
      const nodes = pgArray(placements.map((p) => p.workerId));
      const cpus = pgArray(placements.map((p) => p.cpus));
      const committed = await queryOne<{ version: string | number; jobs: string | number }>(
        tx,
        sql`WITH p AS (
              SELECT * FROM unnest(${jobIds}::bigint[], ${nodes}::text[], ${cpus}::int[]) AS p(job_id, node, cpus)
            ),
            per_worker AS (SELECT node, sum(cpus)::int AS n FROM p GROUP BY node),
            w AS (
              UPDATE workers SET allocated_cpus = workers.allocated_cpus + per_worker.n
              FROM per_worker WHERE workers.id = per_worker.node
              RETURNING workers.id
            ),
            j AS (
              UPDATE jobs SET state = 'RUNNING', node = p.node, attempt = jobs.attempt + 1, reason = NULL,
                claimed_session = NULL, claimed_at = NULL, start_time = NULL, end_time = NULL,
                exit_code = NULL, cancel_requested = false
              FROM p WHERE jobs.id = p.job_id AND jobs.state = 'PENDING'
              RETURNING jobs.id
            ),
            a AS (
              INSERT INTO resource_allocations (job_id, allocated_cpus, node_name)
              SELECT job_id, cpus, node FROM p
              ON CONFLICT (job_id) DO UPDATE SET allocated_cpus = excluded.allocated_cpus,
                node_name = excluded.node_name, released = false, allocation_time = now(), released_time = NULL
              RETURNING 1
            )
            UPDATE cluster_state SET allocated_cpus = allocated_cpus + (SELECT sum(cpus) FROM p),
              allocation_version = allocation_version + 1
            WHERE id = 1
            RETURNING allocation_version AS version, (SELECT count(*) FROM j) AS jobs`,
      );
      if (!committed || Number(committed.jobs) !== placements.length) {
        // Cannot happen while the rows are locked; if it ever does, roll back rather than miscount.
        throw new Error(`placement wrote ${committed?.jobs} jobs, expected ${placements.length}`);
      }
      return {
        placed: placements.length,
        workers: workers.length,
        version: Number(committed.version),
        total: placements.reduce((sum, p) => sum + p.cpus, 0),
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

/** The reason a job waits for a bigger node; the scheduler keeps it current. */
export const WAITING_FOR_NODE = 'waiting for a node with at least ';

/**
 * Jobs larger than every live node are held, not refused: their reason says so. Jobs that fit again lose
 * that reason. Only changed reasons are written (one statement, and none when nothing changed).
 */
async function explainWaits(
  tx: Parameters<typeof query>[0],
  pending: { id: number | string; cpus: number; reason: string | null }[],
  tooLarge: number[],
  placements: { jobId: number }[],
  largest: number,
): Promise<void> {
  const large = new Set(tooLarge);
  const placed = new Set(placements.map((p) => p.jobId));
  const ids: number[] = [];
  const reasons: string[] = [];
  for (const job of pending) {
    const id = Number(job.id);
    if (placed.has(id)) continue;
    if (large.has(id)) {
      const why = `${WAITING_FOR_NODE}${Number(job.cpus)} CPUs: the largest live node has ${largest}`;
      if (job.reason !== why) {
        ids.push(id);
        reasons.push(why);
      }
    } else if (job.reason?.startsWith(WAITING_FOR_NODE)) {
      ids.push(id);
      reasons.push('');
    }
  }
  if (ids.length === 0) return;
  await query(
    tx,
    sql`UPDATE jobs SET reason = nullif(r.reason, '')
        FROM unnest(${pgArray(ids)}::bigint[], ${pgArray(reasons)}::text[]) AS r(id, reason)
        WHERE jobs.id = r.id AND jobs.state = 'PENDING'`,
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
