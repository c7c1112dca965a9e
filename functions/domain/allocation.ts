import { SQL, sql } from 'drizzle-orm';
import { applyAllocationDelta, negated } from './cache.ts';
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
 * Jobs to end: `update` is an UPDATE of jobs ... RETURNING id, state, node, attempt, exit_code that moves
 * jobs out of RUNNING; `workers` a query of the ids of the workers whose jobs it may end.
 *
 * Every write path locks rows in one order: workers (by id), jobs, resource_allocations, cluster_state. A
 * scheduling pass, the reaper and a registration take their workers' rows first by nature; a statement that
 * ends jobs takes the `workers` rows before it touches a job. Locking the jobs first (and their workers
 * when releasing) waited in a cycle with those paths, a deadlock Postgres breaks only after a second.
 */
export interface JobEnd {
  update: SQL;
  workers: SQL;
}

/**
 * Runs `end.update` and releases those jobs' allocations, all in ONE statement: the jobs' new state, the
 * released allocation rows, the workers' allocated counts and the cluster allocation version commit
 * together or not at all. Then tells the cache (after the commit) and asks for a scheduling pass.
 */
export async function endJobsAndRelease(
  ctx: Context,
  end: JobEnd,
  options: { racesPlacement?: boolean } = {},
): Promise<EndedJob[]> {
  // A statement that may end a PENDING job can wait on a scheduling pass that holds the job's row, then
  // (READ COMMITTED) re-check the row it waited for, now RUNNING, while its other parts still read the
  // snapshot from before the pass: the allocation the pass inserted would not be released. In REPEATABLE
  // READ the wait ends in a serialization failure instead, and the retry sees the pass's allocation.
  if (options.racesPlacement) {
    return inReleasingTransaction(ctx, (_tx, endJobs) => endJobs(end), 'repeatable read');
  }
  const rows = await withRetry(() => runEndJobs(ctx.db, end));
  await reportReleases(ctx, [rows]);
  return rows.map(endedJob);
}

/**
 * Ends jobs inside a transaction (`endJobsAndRelease`'s statement on the transaction). A bare UPDATE is for
 * a transaction that locked the rows of the workers concerned already.
 */
export type EndJobs = (end: JobEnd | SQL) => Promise<EndedJob[]>;

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
        work(tx, async (end) => {
          const rows = await runEndJobs(tx, end);
          released.push(rows);
          return rows.map(endedJob);
        }),
      isolationLevel ? { isolationLevel } : undefined,
    );
  });
  await reportReleases(ctx, released);
  return result;
}

/** After the commit: each statement that released resources is one allocation version, told to the cache. */
async function reportReleases(ctx: Context, statements: EndRow[][]): Promise<void> {
  let any = false;
  for (const rows of statements) {
    const first = rows[0];
    if (first && first.version !== null) {
      const released = {
        cpus: Number(first.released_cpus),
        memoryMb: Number(first.released_memory_mb),
        gpus: Number(first.released_gpus),
        gres:
          typeof first.released_gres === 'string'
            ? JSON.parse(first.released_gres)
            : (first.released_gres ?? {}),
      };
      await applyAllocationDelta(ctx, negated(released), Number(first.version));
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
  released_memory_mb: string | number;
  released_gpus: string | number;
  released_gres: Record<string, number> | string | null;
}

function runEndJobs(db: Database, end: JobEnd | SQL): Promise<EndRow[]> {
  const { update, workers } = end instanceof SQL ? { update: end, workers: undefined } : end;
  // The main query's one-time filter reads `locked` before it reads the first ended job: the workers' rows
  // are locked (in id order) before the jobs update locks any job.
  const lockWorkersFirst = workers
    ? sql`locked AS (SELECT id FROM workers WHERE id IN (${workers}) ORDER BY id FOR NO KEY UPDATE),`
    : sql``;
  const afterLocking = workers ? sql`WHERE (SELECT count(*) FROM locked) >= 0` : sql``;
  return query<EndRow>(
    db,
    sql`WITH ${lockWorkersFirst} ended AS (${update}),
        r AS (
          UPDATE resource_allocations SET released = true, released_time = now()
          WHERE job_id IN (SELECT id FROM ended) AND released = false
          RETURNING node_name, allocated_cpus, memory_mb, gpu_mask, gres
        ),
        per_worker AS (
          SELECT node_name, sum(allocated_cpus)::int AS n, sum(memory_mb)::int AS mem, bit_or(gpu_mask) AS mask,
                 sum(bit_count(gpu_mask::bit(64)))::int AS gpus
          FROM r GROUP BY node_name
        ),
        w AS (
          UPDATE workers SET allocated_cpus = workers.allocated_cpus - per_worker.n,
            allocated_memory_mb = workers.allocated_memory_mb - per_worker.mem,
            gpus_used = workers.gpus_used & ~per_worker.mask,
            allocated_gpus = workers.allocated_gpus - per_worker.gpus
          FROM per_worker WHERE workers.id = per_worker.node_name
          RETURNING 1
        ),
        g AS (
          UPDATE worker_gres SET allocated = worker_gres.allocated - x.n
          FROM (SELECT r.node_name, e.key AS name, sum(e.value::int)::int AS n
                FROM r, jsonb_each_text(r.gres) e GROUP BY 1, 2) x
          WHERE worker_gres.worker_id = x.node_name AND worker_gres.name = x.name AND (SELECT count(*) FROM w) >= 0
          RETURNING 1
        ),
        c AS (
          -- Referencing w makes the workers' rows lock before this row (see JobEnd for the lock order).
          UPDATE cluster_state
          SET allocated_cpus = allocated_cpus - (SELECT coalesce(sum(n), 0) FROM per_worker),
              allocated_memory_mb = allocated_memory_mb - (SELECT coalesce(sum(mem), 0) FROM per_worker),
              allocated_gpus = allocated_gpus - (SELECT coalesce(sum(gpus), 0) FROM per_worker),
              allocation_version = allocation_version + 1
          WHERE id = 1 AND EXISTS (SELECT 1 FROM r) AND (SELECT count(*) FROM w) >= 0
            AND (SELECT count(*) FROM g) >= 0
          RETURNING allocation_version
        )
        SELECT ended.id, ended.state, ended.node, ended.attempt, ended.exit_code,
               (SELECT allocation_version FROM c) AS version,
               (SELECT coalesce(sum(n), 0) FROM per_worker) AS released_cpus,
               (SELECT coalesce(sum(mem), 0) FROM per_worker) AS released_memory_mb,
               (SELECT coalesce(sum(gpus), 0) FROM per_worker) AS released_gpus,
               (SELECT jsonb_object_agg(name, n) FROM (
                  SELECT e.key AS name, sum(e.value::int) AS n FROM r, jsonb_each_text(r.gres) e GROUP BY e.key
                ) named WHERE n <> 0) AS released_gres
        FROM ended ${afterLocking}`,
  );
}

/** The most a retry back-off grows to by doubling (a back-off set longer than this stays as set). */
export const MAX_RETRY_BACKOFF_S = 3600;

type RetryConfig = Pick<ConductorConfig, 'maxRequeues' | 'crashLimit' | 'retryBackoffSeconds'>;

/**
 * The retry policy in force for each job, as a FROM item `pol` to join on `pol.pol_id = jobs.id`: the job's
 * own setting, else its partition's (the one it was placed in; none: the default partition), else the
 * cluster's. Read by the statements that end attempts, never by the scheduling pass.
 */
export function retryPolicy(config: RetryConfig): SQL {
  return sql`(SELECT j.id AS pol_id,
        coalesce(j.max_requeues, p.max_requeues, ${config.maxRequeues}::int) AS pol_max_requeues,
        coalesce(j.crash_limit, p.crash_limit, ${config.crashLimit}::int) AS pol_crash_limit,
        coalesce(j.retry_backoff_s, p.retry_backoff_s, ${config.retryBackoffSeconds}::int) AS pol_backoff_s,
        coalesce(j.retry_on_failure, p.retry_on_failure, false) AS pol_on_failure
      FROM jobs j LEFT JOIN partitions p ON p.name = coalesce(nullif(split_part(j.partition, ',', 1), ''),
        (SELECT d.name FROM partitions d WHERE d.is_default))) pol`;
}

/**
 * The begin time of a job requeued automatically (`again`): now plus its back-off, doubled for each requeue
 * it had before (up to MAX_RETRY_BACKOFF_S, or the back-off itself if longer); no back-off: unchanged.
 */
export const retryBeginTime = (again: SQL) =>
  sql`CASE WHEN ${again} AND pol.pol_backoff_s > 0
        THEN now() + make_interval(secs => least(pol.pol_backoff_s::float8 * power(2, least(jobs.requeues, 20)),
                                                 greatest(pol.pol_backoff_s, ${MAX_RETRY_BACKOFF_S}::int)))
        ELSE jobs.begin_time END`;

/**
 * The job update for jobs whose worker is gone: NODE_FAIL, or back to PENDING for jobs submitted with
 * `requeue` (they run again elsewhere, with the next attempt number, after their back-off) until they were
 * requeued `max_requeues` times, or until their node was lost while they ran `crash_limit` times (a job that
 * takes its node down each time it runs must not go round the cluster forever). The policy is the job's,
 * else its partition's, else the cluster's (retryPolicy). Every column is qualified: `where` may use the
 * job's own (unqualified) columns.
 */
export function loseJobs(where: SQL, reason: string, config: RetryConfig): SQL {
  // A job that had started was running when its node went: a crash, which the crash limit counts.
  const crashed = sql`(jobs.start_time IS NOT NULL)`;
  const overMax = sql`(jobs.requeues >= pol.pol_max_requeues)`;
  const overCrashes = sql`(${crashed} AND pol.pol_crash_limit > 0 AND jobs.crashes + 1 >= pol.pol_crash_limit)`;
  // A job someone cancelled is not run again: it ends CANCELLED. (SET expressions see the row as it was.)
  const again = sql`(jobs.requeue AND NOT jobs.cancel_requested AND NOT ${overMax} AND NOT ${overCrashes})`;
  const why = sql`CASE WHEN NOT jobs.requeue OR jobs.cancel_requested OR ${again} THEN ''
      WHEN ${overMax} THEN '; not requeued: it was requeued ' || jobs.requeues || ' times already (max requeues '
        || pol.pol_max_requeues || ')'
      ELSE '; not requeued: its node was lost while it ran ' || (jobs.crashes + 1) || ' times (crash limit '
        || pol.pol_crash_limit || ')' END`;
  return sql`UPDATE jobs SET
      state = CASE WHEN jobs.cancel_requested THEN 'CANCELLED' WHEN ${again} THEN 'PENDING' ELSE 'NODE_FAIL' END,
      end_time = CASE WHEN ${again} THEN NULL ELSE now() END,
      exit_code = CASE WHEN ${again} THEN NULL ELSE '0:0' END,
      node = CASE WHEN ${again} THEN NULL ELSE jobs.node END,
      requeues = jobs.requeues + CASE WHEN ${again} THEN 1 ELSE 0 END,
      crashes = jobs.crashes + CASE WHEN ${crashed} THEN 1 ELSE 0 END,
      requeued_from = CASE WHEN ${again} THEN 'NODE_FAIL' END,
      begin_time = ${retryBeginTime(again)},
      claimed_session = NULL, claimed_at = NULL,
      reason = ${reason}::text || ${why}
    FROM ${retryPolicy(config)}
    WHERE pol.pol_id = jobs.id AND jobs.state = 'RUNNING' AND ${where}
    RETURNING jobs.id, jobs.state, jobs.node, jobs.attempt, jobs.exit_code`;
}
