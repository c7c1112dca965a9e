import { type SQL, sql } from 'drizzle-orm';
import { applyAllocationDelta } from './cache.ts';
import type { Context } from './context.ts';
import type { ConductorConfig, Database } from './ports.ts';
import { query, withRetry } from './sql.ts';

export interface EndedJob {
  id: number;
  state: string;
  node: string | null;
  attempt: number;
  exit_code: string | null;
}

/**
 * Runs `jobUpdate` (an UPDATE of jobs ... RETURNING id, state, node, attempt, exit_code that moves jobs
 * out of RUNNING) and releases those jobs' allocations, all in ONE statement: the jobs' new state, the
 * released allocation rows, the workers' allocated counts and the cluster allocation version commit
 * together or not at all. Then tells the cache (after the commit) and asks for a scheduling pass.
 */
export async function endJobsAndRelease(
  ctx: Context,
  jobUpdate: SQL,
  options: { racesPlacement?: boolean } = {},
): Promise<EndedJob[]> {
  // A statement that may end a PENDING job can wait on a scheduling pass that holds the job's row, then
  // (READ COMMITTED) re-check the row it waited for, now RUNNING, while its other parts still read the
  // snapshot from before the pass: the allocation the pass inserted would not be released. In REPEATABLE
  // READ the wait ends in a serialization failure instead, and the retry sees the pass's allocation.
  if (options.racesPlacement) {
    return inReleasingTransaction(ctx, (_tx, endJobs) => endJobs(jobUpdate), 'repeatable read');
  }
  const rows = await withRetry(() => runEndJobs(ctx.db, jobUpdate));
  await reportReleases(ctx, [rows]);
  return rows.map(endedJob);
}

/** Ends jobs inside a transaction (`endJobsAndRelease`'s statement on the transaction). */
export type EndJobs = (jobUpdate: SQL) => Promise<EndedJob[]>;

/**
 * Runs `work` in one transaction, retried as a whole on conflicts; `work` ends jobs with `endJobs`, so that
 * its other writes (a worker's row, say) commit together with the jobs' ends and releases. The cache hears
 * of the releases after the commit.
 */
export async function inReleasingTransaction<T>(
  ctx: Context,
  work: (tx: Database, endJobs: EndJobs) => Promise<T>,
  isolationLevel?: 'repeatable read',
): Promise<T> {
  let released: EndRow[][] = [];
  const result = await withRetry(() => {
    released = [];
    return ctx.db.transaction(
      (tx) =>
        work(tx, async (jobUpdate) => {
          const rows = await runEndJobs(tx, jobUpdate);
          released.push(rows);
          return rows.map(endedJob);
        }),
      isolationLevel ? { isolationLevel } : undefined,
    );
  });
  await reportReleases(ctx, released);
  return result;
}

/** After the commit: each statement that released CPUs is one allocation version, told to the cache. */
async function reportReleases(ctx: Context, statements: EndRow[][]): Promise<void> {
  let any = false;
  for (const rows of statements) {
    const first = rows[0];
    if (first && first.version !== null) {
      await applyAllocationDelta(ctx, -Number(first.released_cpus), Number(first.version));
      any = true;
    }
  }
  if (any) ctx.defer(ctx.requestSchedule());
}

function endedJob(r: EndRow): EndedJob {
  return {
    id: Number(r.id),
    state: r.state,
    node: r.node,
    attempt: Number(r.attempt),
    exit_code: r.exit_code,
  };
}

interface EndRow {
  id: string | number;
  state: string;
  node: string | null;
  attempt: number;
  exit_code: string | null;
  version: string | number | null;
  released_cpus: string | number;
}

function runEndJobs(db: Database, jobUpdate: SQL): Promise<EndRow[]> {
  return query<EndRow>(
    db,
    sql`WITH ended AS (${jobUpdate}),
        r AS (
          UPDATE resource_allocations SET released = true, released_time = now()
          WHERE job_id IN (SELECT id FROM ended) AND released = false
          RETURNING node_name, allocated_cpus
        ),
        per_worker AS (SELECT node_name, sum(allocated_cpus)::int AS n FROM r GROUP BY node_name),
        w AS (
          UPDATE workers SET allocated_cpus = workers.allocated_cpus - per_worker.n
          FROM per_worker WHERE workers.id = per_worker.node_name
          RETURNING 1
        ),
        c AS (
          -- Referencing w makes the workers' rows lock before this row: the lock order of every write path
          -- is jobs, resource_allocations, workers, cluster_state (a scheduling pass takes workers first and
          -- cluster_state last, so the two never wait on each other in a cycle).
          UPDATE cluster_state
          SET allocated_cpus = allocated_cpus - (SELECT coalesce(sum(n), 0) FROM per_worker),
              allocation_version = allocation_version + 1
          WHERE id = 1 AND EXISTS (SELECT 1 FROM r) AND (SELECT count(*) FROM w) >= 0
          RETURNING allocation_version
        )
        SELECT ended.id, ended.state, ended.node, ended.attempt, ended.exit_code,
               (SELECT allocation_version FROM c) AS version,
               (SELECT coalesce(sum(n), 0) FROM per_worker) AS released_cpus
        FROM ended`,
  );
}

/**
 * The job update for jobs whose worker is gone: NODE_FAIL, or back to PENDING for jobs submitted with
 * `requeue` (they run again elsewhere, with the next attempt number) until they were requeued
 * `maxRequeues` times: a job that takes its node down each time it runs must not go round the cluster forever.
 */
export function loseJobs(where: SQL, reason: string, limits: Pick<ConductorConfig, 'maxRequeues'>): SQL {
  // A job someone cancelled is not run again: it ends CANCELLED. (SET expressions see the row as it was.)
  const again = sql`(requeue AND NOT cancel_requested AND requeues < ${limits.maxRequeues}::int)`;
  const capped = `; not requeued: it was requeued ${limits.maxRequeues} times already (max requeues)`;
  return sql`UPDATE jobs SET
      state = CASE WHEN cancel_requested THEN 'CANCELLED' WHEN ${again} THEN 'PENDING' ELSE 'NODE_FAIL' END,
      end_time = CASE WHEN ${again} THEN NULL ELSE now() END,
      exit_code = CASE WHEN ${again} THEN NULL ELSE '0:0' END,
      node = CASE WHEN ${again} THEN NULL ELSE node END,
      requeues = requeues + CASE WHEN ${again} THEN 1 ELSE 0 END,
      claimed_session = NULL, claimed_at = NULL,
      reason = ${reason}::text || CASE WHEN requeue AND NOT cancel_requested AND NOT ${again} THEN ${capped}::text ELSE '' END
    WHERE state = 'RUNNING' AND ${where}
    RETURNING id, state, node, attempt, exit_code`;
}
