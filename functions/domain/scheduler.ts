import { sql } from 'drizzle-orm';
import type { Assignment } from '../../agent/src/protocol.ts';
import type { GpuDevice } from '../../db/schema.ts';
import { associationLimits, type ChargedJob, lockAssociations, placingCheck } from './accounts.ts';
import { arrayCaps, lockArrays } from './array-schedule.ts';
import { type AssignmentRow, assignmentColumns, assignmentsByWorker } from './assignments.ts';
import { applyAllocationDelta } from './cache.ts';
import { evaluateConstraint, parseConstraint } from './constraint.ts';
import { liveInPostgres, liveWorkerIds } from './liveness.ts';
import { partitionMembership } from './partitions.ts';
import {
  type AdminReservation,
  createPlanner,
  type FreeWorker,
  indexesMask,
  maskIndexes,
  type PartitionRules,
  type PendingJob,
  type Placement,
  type Planner,
  type ReasonCode,
  type RunningJob,
  TOO_LARGE_PREFIX,
  type Wait,
} from './placement.ts';
import type { Ports, UsageResetPeriod } from './ports.ts';
import { jsonColumn, pgArray, query, queryOne, withRetry } from './sql.ts';

export interface PassResult {
  placed: number;
  /** Live workers the pass considered (ready ones). */
  workers: number;
  skipped?: 'no_workers';
}

/**
 * Pending jobs behind the ones a pass read whose reason it brings up to date, at most, nearest the head of the
 * queue first: a queue of 85,000 new jobs cost one pass 380 ms to write them all, where the rest get theirs
 * in the next passes.
 */
const MAX_EXPLAINED_BEHIND = 10_000;

/** Pages of `scheduleBatchSize` pending jobs one pass reads at most. */
const MAX_PAGES = 10;

/** Slurm's reason for jobs the pass did not read, behind the ones it did. */
export const BEHIND_QUEUE: Wait = { reason: 'Priority', detail: 'behind jobs ahead of it in the queue' };

export interface QueueRow {
  id: number | string;
  cpus: number;
  reason: string | null;
  reason_detail: string | null;
  reserved_worker: string | null;
  priority: number;
  /** submit_time as Postgres text: the keyset cursor hands it back unchanged (no driver's Date rounding). */
  submitted: string;
  memory_mb: number | null;
  gpus: number;
  gpu_type: string | null;
  gres: Record<string, number> | string;
  feature_constraint: string | null;
  exclusive: boolean;
  nodelist: string[] | null;
  exclude_nodes: string[];
  partition: string | null;
  time_limit_s: number | null;
  /** sbatch `--array`: the task's array (its `%N` cap is read apart, see arrayCaps); null: no array. */
  array_job_id: number | string | null;
  /** What its association limits are looked up by (see associationLimits). */
  account: string | null;
  owner: string | null;
  reservation: string | null;
  /** Seconds from now to its planned start (null: none). */
  planned_in: number | string | null;
}

export const QUEUE_COLUMNS = sql`id, cpus, reason, reason_detail, reserved_worker, priority, submit_time::text AS submitted,
  memory_mb, gpus, gpu_type, gres, feature_constraint, exclusive, nodelist, exclude_nodes, partition, time_limit_s,
  array_job_id, account, owner, reservation, extract(epoch FROM planned_start_time - now()) AS planned_in`;
const arrayOf = (row: QueueRow) => (row.array_job_id === null ? null : Number(row.array_job_id));
const chargedJob = (row: QueueRow): ChargedJob => ({
  id: Number(row.id),
  account: row.account,
  owner: row.owner,
  cpus: Number(row.cpus),
  gpus: Number(row.gpus),
  timeLimitS: row.time_limit_s === null ? null : Number(row.time_limit_s),
});
// NULLS LAST as in jobs_pending_queue_idx (priority is NOT NULL, but the planner matches the index's null
// order only when spelled out): without it every page read sorted the whole queue (43 ms over 100,000 pending
// jobs, against 0.7 ms reading the index in order).
const QUEUE_ORDER = sql`priority DESC NULLS LAST, submit_time, id`;

/** sbatch `--begin`: a job is placed only once its begin time has come (part of every placing statement). */
const BEGUN = sql`(begin_time IS NULL OR begin_time <= now())`;

/**
 * sbatch `--dependency`: a job is placed only once its dependency is met (part of every placing statement,
 * like BEGUN). A plain column, kept by resolveDependencies: a correlated subquery here made the planner's
 * estimate of every queue read cross jit_above_cost, and JIT compiling cost ~600 ms a statement.
 */
export const DEPENDENCY_MET = sql`NOT jobs.dependency_pending`;

/**
 * `time` plus the item's `+minutes` has passed. Without a delay only the target's state counts: `now()` is
 * when the pass's transaction began, which may be before the target's end was written by another one, and a
 * job resolved once is not looked at again until one of its targets moves (or, with a delay, every pass).
 */
const DELAY_PASSED = (time: ReturnType<typeof sql>) =>
  sql`(d.delay_s = 0 OR ${time} + make_interval(secs => d.delay_s) <= now())`;

/** One job_dependencies row `d` of the waiting job `w` is met (`t`: its target; `f`: w's singleton blocker). */
const ITEM_MET = sql`CASE d.kind
    -- The first active job of a name and user is the one that may run; w itself is active.
    WHEN 'singleton' THEN f.first_id IS NULL OR f.first_id >= w.id
    -- A target that is gone (purged) ended long ago, its outcome unknown.
    WHEN 'after' THEN t.id IS NULL
      OR (coalesce(t.start_time, t.end_time) IS NOT NULL AND ${DELAY_PASSED(sql`coalesce(t.start_time, t.end_time)`)})
    WHEN 'afterany' THEN t.id IS NULL
      OR (t.state NOT IN ('PENDING', 'RUNNING') AND ${DELAY_PASSED(sql`t.end_time`)})
    WHEN 'afterok' THEN t.state = 'COMPLETED' AND ${DELAY_PASSED(sql`t.end_time`)}
    -- The task of the same index (tc) COMPLETED; an array without that index has nothing to wait for.
    WHEN 'aftercorr' THEN tc.id IS NULL OR (tc.state = 'COMPLETED' AND ${DELAY_PASSED(sql`tc.end_time`)})
    ELSE t.state NOT IN ('PENDING', 'RUNNING', 'COMPLETED') AND ${DELAY_PASSED(sql`t.end_time`)}
  END`;
/** The item `d` can never be met: its target ended the other way (or is gone, its outcome unknown). */
const ITEM_IMPOSSIBLE = sql`CASE d.kind
    WHEN 'afterok' THEN t.id IS NULL OR t.state NOT IN ('PENDING', 'RUNNING', 'COMPLETED')
    WHEN 'afternotok' THEN t.id IS NULL OR t.state = 'COMPLETED'
    WHEN 'aftercorr' THEN tc.state NOT IN ('PENDING', 'RUNNING', 'COMPLETED')
    ELSE false
  END`;

/**
 * The jobs waiting for their dependency that are due (jobs_dependency_due_idx: new, or woken by the trigger
 * jobs_dependency_wakeup since the last look; singleton and +time ones every pass), evaluated set-wise:
 * met ones lose dependency_pending and may be placed by this very pass; the others say why, Dependency or
 * DependencyNeverSatisfied, and with kill_on_invalid_dep the latter are CANCELLED (they never ran: nothing to
 * release). Held jobs are resolved too but keep their hold's reason. One statement per pass, writing only
 * what changed; joins and GROUP BY, no correlated subquery, so that its cost stays proportional to the jobs
 * waiting, whatever the queue holds. A met dependency stays met: every item's condition, once true, stays true.
 * It runs right after the pass locks its workers, before the queue is read, so that a job whose dependency just
 * ended is placed by this very pass; and only when DEPENDENCIES_DUE says a job is due, since planning it alone
 * costs some 10 ms, a quarter of an idle pass.
 */
const RESOLVE_DEPENDENCIES = sql`WITH w AS MATERIALIZED (
          SELECT id, name, owner, held, dependency, dependency_any, kill_on_invalid_dep, array_task_id,
                 dependency_epoch FROM jobs
          WHERE state = 'PENDING' AND dependency_pending AND dependency_epoch <> dependency_checked
        ),
        -- The targets of the waiting jobs' items: a job, or, when the id is an array's job id, the whole array
        -- as Slurm means it (started when every task started, ended when every task ended, COMPLETED when all
        -- did, else FAILED). aftercorr's targets are tasks, joined below by index.
        named AS (
          SELECT DISTINCT d.target_job_id AS id FROM w JOIN job_dependencies d ON d.job_id = w.id
          WHERE d.kind NOT IN ('singleton', 'aftercorr')
        ),
        targets AS (
          SELECT k.id, k.state, k.start_time, k.end_time
          FROM named n JOIN jobs k ON k.id = n.id LEFT JOIN job_arrays a ON a.array_job_id = n.id
          WHERE a.array_job_id IS NULL
          UNION ALL
          SELECT a.array_job_id,
                 CASE WHEN bool_or(k.state IN ('PENDING', 'RUNNING')) THEN 'RUNNING'
                      WHEN bool_and(k.state = 'COMPLETED') THEN 'COMPLETED' ELSE 'FAILED' END,
                 CASE WHEN bool_and(k.start_time IS NOT NULL OR k.end_time IS NOT NULL)
                      THEN max(coalesce(k.start_time, k.end_time)) END,
                 CASE WHEN bool_or(k.state IN ('PENDING', 'RUNNING')) THEN NULL ELSE max(k.end_time) END
          FROM named n JOIN job_arrays a ON a.array_job_id = n.id JOIN jobs k ON k.array_job_id = a.array_job_id
          GROUP BY a.array_job_id
        ),
        singleton AS (
          SELECT DISTINCT w.name, w.owner FROM w JOIN job_dependencies d ON d.job_id = w.id AND d.kind = 'singleton'
        ),
        blocker AS (
          SELECT o.name, o.owner, min(o.id) AS first_id
          FROM jobs o JOIN singleton s ON o.name = s.name AND o.owner IS NOT DISTINCT FROM s.owner
          WHERE o.state IN ('PENDING', 'RUNNING')
          GROUP BY o.name, o.owner
        ),
        verdict AS (
          SELECT w.id, w.held, w.dependency, w.kill_on_invalid_dep, w.dependency_epoch AS epoch,
                 -- singleton and +time items turn true with no job moving: looked at again by every pass.
                 coalesce(bool_or(d.kind = 'singleton' OR d.delay_s > 0), false) AS timely,
                 CASE WHEN w.dependency_any THEN coalesce(bool_or(coalesce(${ITEM_MET}, false)), true)
                      ELSE coalesce(bool_and(coalesce(${ITEM_MET}, false)), true) END AS met,
                 CASE WHEN w.dependency_any THEN coalesce(bool_and(coalesce(${ITEM_IMPOSSIBLE}, false)), false)
                      ELSE coalesce(bool_or(coalesce(${ITEM_IMPOSSIBLE}, false)), false) END AS never
          FROM w LEFT JOIN job_dependencies d ON d.job_id = w.id
            LEFT JOIN targets t ON d.kind <> 'aftercorr' AND t.id = d.target_job_id
            LEFT JOIN jobs tc ON d.kind = 'aftercorr' AND tc.array_job_id = d.target_job_id
              AND tc.array_task_id = w.array_task_id
            LEFT JOIN blocker f ON d.kind = 'singleton' AND f.name = w.name AND f.owner IS NOT DISTINCT FROM w.owner
          GROUP BY w.id, w.held, w.dependency, w.dependency_any, w.kill_on_invalid_dep, w.dependency_epoch
        ),
        change AS (
          SELECT id, met, epoch, CASE WHEN timely THEN NULL ELSE epoch END AS checked,
                 held IS NULL AND NOT met AND never AND kill_on_invalid_dep AS kill,
                 CASE WHEN met THEN 'None' WHEN never THEN 'DependencyNeverSatisfied' ELSE 'Dependency' END AS reason,
                 CASE WHEN met THEN NULL
                      WHEN never AND kill_on_invalid_dep
                      THEN 'cancelled: dependency ' || dependency || ' can never be satisfied (kill_on_invalid_dep)'
                      WHEN never THEN 'dependency ' || dependency || ' can never be satisfied: cancel it, or change it'
                      ELSE 'waiting for dependency ' || dependency END AS detail
          FROM verdict
        )
        UPDATE jobs SET dependency_pending = NOT c.met,
          state = CASE WHEN c.kill THEN 'CANCELLED' ELSE jobs.state END,
          end_time = CASE WHEN c.kill THEN now() ELSE jobs.end_time END,
          reason = CASE WHEN jobs.held IS NULL THEN c.reason ELSE jobs.reason END,
          reason_detail = CASE WHEN jobs.held IS NULL THEN c.detail ELSE jobs.reason_detail END,
          reserved_worker = CASE WHEN jobs.held IS NULL THEN NULL ELSE jobs.reserved_worker END,
          dependency_checked = coalesce(c.checked, jobs.dependency_checked)
        FROM change c
        -- A wake-up since w was read (the epoch moved) leaves the row as it is, due for the next pass.
        WHERE jobs.id = c.id AND jobs.state = 'PENDING' AND jobs.dependency_pending AND jobs.dependency_epoch = c.epoch
          AND (c.met OR c.kill OR jobs.dependency_checked IS DISTINCT FROM coalesce(c.checked, jobs.dependency_checked)
               OR (jobs.held IS NULL AND (jobs.reason IS DISTINCT FROM c.reason
                   OR jobs.reason_detail IS DISTINCT FROM c.detail OR jobs.reserved_worker IS NOT NULL)))`;

/**
 * Whether RESOLVE_DEPENDENCIES has work: a probe of jobs_dependency_due_idx, read as a column of the statement
 * that locks the workers. Being in that statement matters: it takes the lock on jobs together with the one on
 * workers, as the resolution inside it used to, so the pass never holds workers while waiting for jobs behind
 * a TRUNCATE or an ALTER that holds jobs and waits for workers (a deadlock).
 */
const DEPENDENCIES_DUE = sql`EXISTS (SELECT 1 FROM jobs
  WHERE state = 'PENDING' AND dependency_pending AND dependency_epoch <> dependency_checked)`;

/** A BeginTime job's reason_detail, from its begin time (an SQL expression). */
export const beginTimeDetail = (begin: ReturnType<typeof sql>) =>
  sql`'not eligible before ' || to_char(${begin} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')`;

/** The workers a pass may place on: ready and live (`live`: the registry's ids, or Postgres's heartbeats). */
const placeableWorkers = (live: ReturnType<typeof sql>) => sql`status = 'ready' AND NOT drained AND ${live}`;

/**
 * The pending jobs (held ones too) when the pass locks its workers, if there are at most PENDING_SAMPLE_MAX of
 * them (more: null). When the pass then read every one of them and changed no reason, the queue's explanation
 * has nothing to write (see explainQueue) and is skipped: on an idle cluster, a round trip less before the
 * job's push.
 */
const PENDING_SAMPLE_MAX = 8;
const PENDING_SAMPLE = sql`(SELECT CASE WHEN count(*) <= ${PENDING_SAMPLE_MAX} THEN coalesce(json_agg(id), '[]') END
  FROM (SELECT id FROM jobs WHERE state = 'PENDING' LIMIT ${PENDING_SAMPLE_MAX + 1}) s)`;

export interface WorkerRow {
  id: string;
  cpus: number;
  allocated_cpus: number;
  memory_mb: number;
  allocated_memory_mb: number;
  gpus: GpuDevice[] | string;
  gpus_used: string;
  features: string[];
  partitions: string[];
  gres: Record<string, [number, number]> | string | null;
  has_gres?: boolean;
}

/** A worker's resources as the planner reads them (toWorker). */
export const WORKER_COLUMNS = sql`id, cpus, allocated_cpus, memory_mb, allocated_memory_mb, gpus,
  gpus_used::text AS gpus_used, features, partitions,
  (SELECT json_object_agg(g.name, json_build_array(g.total, g.allocated))
   FROM worker_gres g WHERE g.worker_id = workers.id) AS gres`;
/** The same, without the gres (read apart, see runSchedulingPass), but whether it has any. */
const LOCKED_WORKER_COLUMNS = sql`id, cpus, allocated_cpus, memory_mb, allocated_memory_mb, gpus,
  gpus_used::text AS gpus_used, features, partitions,
  EXISTS (SELECT 1 FROM worker_gres g WHERE g.worker_id = workers.id) AS has_gres`;
export const PARTITION_COLUMNS = sql`name, is_default, state, nodes, max_time_s, max_cpus_per_node, policy`;

export interface PartitionRow {
  name: string;
  is_default: boolean;
  state: PartitionRules['state'];
  nodes: string | null;
  max_time_s: number | null;
  max_cpus_per_node: number | null;
  policy: PartitionRules['policy'];
}

/** The partitions, and each worker's: those it declares and those whose node list names it, else the default. */
export function partitionsOf(rows: readonly PartitionRow[]) {
  const rules = new Map<string, PartitionRules>(
    rows.map((p) => [
      p.name,
      {
        state: p.state,
        policy: p.policy,
        maxTimeS: p.max_time_s === null ? null : Number(p.max_time_s),
        maxCpusPerNode: p.max_cpus_per_node === null ? null : Number(p.max_cpus_per_node),
      },
    ]),
  );
  const defaultName = rows.find((p) => p.is_default)?.name ?? null;
  const workerPartitions = partitionMembership(rows);
  const jobPartitions = (partition: string | null): string[] =>
    partition ? partition.split(',').map((p) => p.trim()) : defaultName === null ? [] : [defaultName];
  return { rules, defaultName, workerPartitions, jobPartitions };
}

export const toWorker = (w: WorkerRow, partitions: ReturnType<typeof partitionsOf>): FreeWorker => ({
  id: w.id,
  cpus: Number(w.cpus),
  allocatedCpus: Number(w.allocated_cpus),
  memoryMb: Number(w.memory_mb),
  allocatedMemoryMb: Number(w.allocated_memory_mb),
  gpus: jsonColumn(w.gpus),
  gpusUsed: maskIndexes(w.gpus_used),
  gres: Object.fromEntries(
    Object.entries(jsonColumn(w.gres ?? {}) ?? {}).map(([name, [total, allocated]]) => [
      name,
      { total: Number(total), allocated: Number(allocated) },
    ]),
  ),
  features: new Set(w.features),
  partitions: partitions.workerPartitions(w.id, w.partitions),
});

/** A queue row as the planner sees it; constraints are compiled once per pass and text. */
export function jobReader(partitions: ReturnType<typeof partitionsOf>) {
  const compiled = new Map<string, ((features: ReadonlySet<string>) => boolean) | null>();
  const matcher = (constraint: string) => {
    if (!compiled.has(constraint)) {
      try {
        const parsed = parseConstraint(constraint);
        compiled.set(constraint, (features) => evaluateConstraint(parsed, features));
      } catch {
        compiled.set(constraint, () => false); // refused at submit; never matches if it slipped through
      }
    }
    return compiled.get(constraint) ?? null;
  };
  return (row: QueueRow): PendingJob => ({
    id: Number(row.id),
    cpus: Number(row.cpus),
    memoryMb: row.memory_mb === null ? 0 : Number(row.memory_mb),
    gpus: Number(row.gpus),
    gpuType: row.gpu_type,
    gres: jsonColumn(row.gres),
    exclusive: row.exclusive,
    partitions: partitions.jobPartitions(row.partition),
    featuresMatch: row.feature_constraint ? matcher(row.feature_constraint) : null,
    constraint: row.feature_constraint,
    nodelist: row.nodelist,
    exclude: row.exclude_nodes,
    timeLimitS: row.time_limit_s === null ? null : Number(row.time_limit_s),
    reservedWorker: row.reserved_worker,
    reservation: row.reservation,
    owner: row.owner,
    account: row.account,
  });
}

interface ReservationRow {
  name: string;
  nodes: string[];
  start_s: number;
  end_s: number;
  period_s: number | null;
  flags: string[];
  users: string[];
  accounts: string[];
}

/**
 * The admin reservations that are not over, in seconds from the transaction's now (the planner's time 0), as
 * one JSON value: read with the partitions, so that a pass costs no round trip more.
 */
const ADMIN_RESERVATIONS = sql`(SELECT json_agg(json_build_object('name', name, 'nodes', nodes,
    'start_s', extract(epoch FROM start_time - now()), 'end_s', extract(epoch FROM end_time - now()),
    'period_s', period_s, 'flags', flags, 'users', users, 'accounts', accounts))
  FROM reservations WHERE period_s IS NOT NULL OR end_time > now())`;

const toAdminReservation = (r: ReservationRow): AdminReservation => ({
  name: r.name,
  nodes: new Set(r.nodes),
  startS: Number(r.start_s),
  endS: Number(r.end_s),
  periodS: r.period_s === null ? null : Number(r.period_s),
  maint: r.flags.includes('MAINT'),
  users: r.users,
  accounts: r.accounts,
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
  // The registry is asked while the transaction begins: the two round trips overlap.
  const asked = liveWorkerIds(ports);
  const backfill = config.schedulerType !== 'sched/builtin';

  const outcome = await withRetry(() =>
    db.transaction(async (tx) => {
      const live = await asked;
      // An empty registry is not an empty cluster (a flushed or restarted Redis): Postgres's heartbeats decide.
      const liveFilter =
        live && live.length > 0
          ? sql`id = ANY(${pgArray(live)}::text[])`
          : liveInPostgres(config.workerTtlSeconds);
      const locked = await query<
        WorkerRow & { dependencies_due: boolean; pending_sample: number[] | string | null }
      >(
        tx,
        sql`SELECT ${LOCKED_WORKER_COLUMNS}, ${DEPENDENCIES_DUE} AS dependencies_due,
              ${PENDING_SAMPLE} AS pending_sample
            FROM workers WHERE ${placeableWorkers(liveFilter)} ORDER BY id FOR UPDATE`,
      );
      // With no worker to say whether any is due, resolve anyway: reasons stay right on an empty cluster.
      if (locked.length === 0 || locked[0]?.dependencies_due) await tx.execute(RESOLVE_DEPENDENCIES);
      const pendingAtLock = jsonColumn(locked[0]?.pending_sample ?? null);
      // The generic resources are read once the rows are locked, by a statement of its own: the locking one
      // re-reads a row it waited for, but a subquery of it would still see the worker_gres of its snapshot,
      // from before the transaction it waited for committed.
      const gres = locked.some((w) => w.has_gres)
        ? await query<{ worker_id: string; name: string; total: number; allocated: number }>(
            tx,
            sql`SELECT worker_id, name, total, allocated FROM worker_gres
                WHERE worker_id = ANY(${pgArray(locked.filter((w) => w.has_gres).map((w) => w.id))}::text[])`,
          )
        : [];
      const workers = locked.map((w) => ({
        ...w,
        gres: Object.fromEntries(
          gres
            .filter((g) => g.worker_id === w.id)
            .map((g) => [g.name, [g.total, g.allocated] as [number, number]]),
        ),
      }));
      const nothing = {
        placed: 0,
        workers: workers.length,
        version: null,
        totals: null,
        touched: [] as string[],
        pushed: new Map<string, Assignment[]>(),
      };
      if (workers.length === 0) return nothing;
      // One round trip for what the plan starts from. The holders are read here, after the lock, not in the
      // locking statement: a pass that committed while this one waited for the lock may have placed them.
      const [start] = await query<{
        partitions: PartitionRow[] | string | null;
        reservations: ReservationRow[] | string | null;
        holders: QueueRow[] | string | null;
      }>(
        tx,
        sql`SELECT (SELECT json_agg(p) FROM (SELECT ${PARTITION_COLUMNS} FROM partitions) p) AS partitions,
              ${ADMIN_RESERVATIONS} AS reservations,
              (SELECT json_agg(h ORDER BY h.queue_rank) FROM (
                SELECT ${QUEUE_COLUMNS}, row_number() OVER (ORDER BY ${QUEUE_ORDER}) AS queue_rank FROM jobs
                WHERE state = 'PENDING' AND held IS NULL AND reserved_worker IS NOT NULL AND ${BEGUN}
                  AND ${DEPENDENCY_MET}) h) AS holders`,
      );
      const admin = (jsonColumn(start?.reservations ?? null) ?? []).map(toAdminReservation);
      const partitions = partitionsOf(jsonColumn(start?.partitions ?? null) ?? []);
      const toJob = jobReader(partitions);
      const candidates = workers.map((w) => toWorker(w, partitions));
      const largest = Math.max(...candidates.map((w) => w.cpus));
      const fullyAllocated = (w: FreeWorker) =>
        w.allocatedCpus >= w.cpus && (w.allocatedMemoryMb ?? 0) >= (w.memoryMb ?? 0);
      if (candidates.every(fullyAllocated)) {
        await explainQueue(tx, { largest, explained: [], seen: [] });
        return nothing;
      }

      const holders = jsonColumn(start?.holders ?? null) ?? [];
      const allocated = candidates
        .filter((w) => w.allocatedCpus > 0 || (w.gpusUsed?.size ?? 0) > 0)
        .map((w) => w.id);
      let running: Map<string, RunningJob[]> | null = null;
      const withRunning = (rows: Map<string, RunningJob[]>) =>
        candidates.map((w) => ({ ...w, running: rows.get(w.id) ?? [] }));
      const batch = config.scheduleBatchSize;
      const considered: QueueRow[] = [];
      // Array tasks held back by their array's `%N` cap, and jobs whose association is at a running limit,
      // are not considered (they reserve nothing).
      const caps = arrayCaps(tx);
      const limits = associationLimits(tx, config);
      const capped: QueueRow[] = [];
      await limits.load(holders);
      const admitHolders = () => holders.filter((row) => limits.hold(chargedJob(row)));
      let kept = admitHolders();
      let planner = createPlanner(candidates, kept.map(toJob), partitions.rules, admin, backfill);
      const consider = (p: Planner, row: QueueRow) =>
        limits.consider(p, chargedJob(row), () =>
          caps.consider(p, Number(row.id), arrayOf(row), () => p.consider(toJob(row))),
        );
      let cursor: QueueRow | undefined;
      for (let page = 0; page < MAX_PAGES && !planner.exhausted && planner.placed < batch; page++) {
        const after = cursor
          ? sql`AND priority <= ${cursor.priority} AND (priority < ${cursor.priority}
                OR (submit_time, id) > (${cursor.submitted}::timestamptz, ${cursor.id}::bigint))`
          : sql``;
        const rows = await query<QueueRow>(
          tx,
          sql`SELECT ${QUEUE_COLUMNS} FROM jobs
              WHERE state = 'PENDING' AND held IS NULL AND ${BEGUN} AND ${DEPENDENCY_MET}
                AND cpus <= ${planner.largestUseful} ${after}
                ${planner.holdsAll ? sql`AND time_limit_s IS NOT NULL` : sql``}
              ORDER BY ${QUEUE_ORDER} LIMIT ${batch}`,
        );
        await caps.load(rows.map(arrayOf).filter((id) => id !== null));
        await limits.load(rows);
        for (const row of rows) {
          if (planner.exhausted || planner.placed >= batch) break;
          if (consider(planner, row)) considered.push(row);
          else capped.push(row);
        }
        if (rows.length < batch) break;
        cursor = rows.at(-1);
      }

      const first = planner.result();
      const started = new Set(first.placements.map((p) => p.jobId));
      const backfillable =
        first.reservations.size > 0 &&
        considered.some((row) => row.time_limit_s !== null && !started.has(Number(row.id)));
      if (first.newReservations.size > 0 || backfillable) {
        // Choosing a new reservation well, and backfilling a held worker (by its holder's planned start),
        // need the time limits of the jobs running there: plan again with them.
        running = await runningJobs(tx, allocated);
        caps.reset();
        limits.reset();
        kept = admitHolders();
        planner = createPlanner(withRunning(running), kept.map(toJob), partitions.rules, admin, backfill);
        for (const row of [...considered, ...capped].sort(queueOrder)) {
          if (planner.exhausted || planner.placed >= batch) break;
          consider(planner, row);
        }
      }

      const { placements, reservations, waits, plannedStarts } = planner.result();
      for (const [id, wait] of caps.capped) waits.set(id, wait);
      for (const [id, wait] of limits.limited) waits.set(id, wait);
      const rowOf = new Map(
        [...considered, ...capped, ...holders].map((row) => [Number(row.id), row] as const),
      );
      const placedRows = placements.map((p) => rowOf.get(p.jobId) as QueueRow);
      const placedArrays = placedRows.map(arrayOf);
      // The capped arrays' rows, then the limited associations', are locked before the placing statement
      // counts what runs against them.
      await lockArrays(tx, caps.cappedAmong(placedArrays.filter((id) => id !== null)));
      const limitedKeys = limits.keysOf(placedRows);
      await lockAssociations(tx, limitedKeys);
      const committed =
        placements.length > 0
          ? await commitPlacements(tx, placements, placedArrays, {
              jobs: placedRows.map(chargedJob),
              locked: limitedKeys,
              period: config.usageResetPeriod,
            })
          : null;
      const pushed = assignmentsByWorker(committed?.pushed ?? [], config.clusterName);
      const placed = new Set(placements.map((p) => p.jobId));
      const holding = new Map([...reservations].map(([workerId, jobId]) => [jobId, workerId]));
      const explained: Explanation[] = [];
      const seen = new Map<number, QueueRow>();
      for (const row of [...holders, ...considered, ...capped]) seen.set(Number(row.id), row);
      for (const [id, row] of seen) {
        if (placed.has(id)) continue;
        const worker = holding.get(id) ?? null;
        const wait = waits.get(id) ?? BEHIND_QUEUE;
        const known = row.planned_in === null ? null : Number(row.planned_in);
        // Without the running jobs read, a holder that kept its worker keeps its plan.
        const kept = running === null && worker !== null && worker === row.reserved_worker ? known : null;
        const plannedIn = plannedStarts.get(id) ?? kept;
        if (
          wait.reason !== row.reason ||
          wait.detail !== row.reason_detail ||
          worker !== row.reserved_worker ||
          (plannedIn === null) !== (known === null) ||
          (plannedIn !== null && known !== null && Math.abs(plannedIn - known) >= 1)
        ) {
          explained.push({ id, reason: wait.reason, detail: wait.detail, worker, plannedIn });
        }
      }
      // With a full batch placed the queue is not settled: the next pass reads on, so leave the rest to it.
      // Every job pending at the lock read here, none with a new reason: nothing for the explanation to write
      // (a job submitted since asked for a pass of its own).
      const settled =
        explained.length === 0 && pendingAtLock !== null && pendingAtLock.every((id) => seen.has(id));
      if (!settled && (placements.length < batch || explained.length > 0)) {
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
        totals: committed,
        touched: [...new Set(placements.map((p) => p.workerId))],
        pushed,
      };
    }),
  );

  if (outcome.version !== null && outcome.totals) {
    const { total, memoryMb, gpus, gres } = outcome.totals;
    // The agents first: the cache is only a cache, and their jobs wait for nothing it says.
    for (const workerId of outcome.touched) ports.notifier.notify(workerId, outcome.pushed.get(workerId));
    await applyAllocationDelta(ports, { cpus: total, memoryMb, gpus, gres }, outcome.version);
  }
  if (outcome.workers === 0) return { placed: 0, workers: 0, skipped: 'no_workers' };
  return { placed: outcome.placed, workers: outcome.workers };
}

type Tx = Parameters<typeof query>[0];

/** Queue order (QUEUE_ORDER) of rows read by a pass. */
function queueOrder(a: QueueRow, b: QueueRow): number {
  if (a.priority !== b.priority) return Number(b.priority) - Number(a.priority);
  if (a.submitted !== b.submitted) return a.submitted < b.submitted ? -1 : 1;
  return Number(a.id) - Number(b.id);
}

/** The jobs running on `workerIds`, with the seconds their time limits leave them (null: no limit). */
async function runningJobs(tx: Tx, workerIds: string[]): Promise<Map<string, RunningJob[]>> {
  const byWorker = new Map<string, RunningJob[]>();
  if (workerIds.length === 0) return byWorker;
  const rows = await query<{
    node: string;
    cpus: number;
    memory_mb: number | null;
    gres: Record<string, number> | string | null;
    gpu_mask: string | null;
    ends_in: number | string | null;
  }>(
    tx,
    sql`SELECT j.node, coalesce(a.allocated_cpus, j.cpus) AS cpus, a.memory_mb, a.gres, a.gpu_mask::text AS gpu_mask,
               extract(epoch FROM coalesce(j.start_time, now()) + make_interval(secs => j.time_limit_s) - now()) AS ends_in
        FROM jobs j LEFT JOIN resource_allocations a ON a.job_id = j.id AND NOT a.released
        WHERE j.state = 'RUNNING' AND j.node = ANY(${pgArray(workerIds)}::text[])`,
  );
  for (const row of rows) {
    const list = byWorker.get(row.node) ?? [];
    list.push({
      cpus: Number(row.cpus),
      memoryMb: Number(row.memory_mb ?? 0),
      gpus: [...maskIndexes(row.gpu_mask ?? 0)],
      gres: jsonColumn(row.gres ?? {}) ?? {},
      endsInSeconds: row.ends_in === null ? null : Number(row.ends_in),
    });
    byWorker.set(row.node, list);
  }
  return byWorker;
}

/** A window of reservation `r` is open now. */
const OPEN_NOW = sql`reservation_overlaps(r.start_time, r.end_time, r.period_s, now(), now() + interval '1 microsecond')`;

/**
 * Admin reservations, checked again by the placing statement (`p`: the placement, `jobs`: its job): no
 * reservation on the node that the job's time limit would run into (its own open one aside), and a job that
 * names a reservation only on that reservation's nodes while it is open. A reservation created, changed or
 * deleted while a pass planned locks the same worker rows, so this also holds when the plan raced with it.
 */
const RESERVATIONS_ALLOW = sql`NOT EXISTS (
    SELECT 1 FROM reservations r
    WHERE p.node = ANY(r.nodes) AND NOT (r.name = jobs.reservation AND ${OPEN_NOW})
      AND reservation_overlaps(r.start_time, r.end_time, r.period_s, now(),
            CASE WHEN jobs.time_limit_s IS NULL THEN 'infinity'::timestamptz
                 ELSE now() + make_interval(secs => jobs.time_limit_s) END))
  AND (jobs.reservation IS NULL OR EXISTS (
    SELECT 1 FROM reservations r WHERE r.name = jobs.reservation AND p.node = ANY(r.nodes) AND ${OPEN_NOW}))`;

interface Committed {
  placed: number;
  version: number | null;
  /** CPUs, MB, GPUs and generic resources the placements allocated. */
  total: number;
  memoryMb: number;
  gpus: number;
  gres: Record<string, number>;
  /** The jobs placed on workers holding a push channel, as their wakes carry them. */
  pushed: AssignmentRow[];
}

/**
 * Moves the planned jobs that are still PENDING to RUNNING, and from exactly those rows adds to the workers'
 * allocated CPUs, memory, GPUs and generic resources, inserts the allocations and bumps the cluster counter:
 * one statement. The workers are locked by the pass; their CHECK constraints refuse any resource going over
 * its capacity or a GPU given twice, which rolls the whole pass back. A placement that would take its array
 * over its `%N` cap, or an association over a running limit (`charges`, placingCheck), counted under those
 * rows' locks, is left out.
 */
async function commitPlacements(
  tx: Tx,
  placements: readonly Placement[],
  arrays: readonly (number | null)[],
  charges: { jobs: readonly ChargedJob[]; locked: readonly string[]; period: UsageResetPeriod },
): Promise<Committed> {
  const row = await queryOne<{
    version: string | number | null;
    jobs: string | number;
    total: string | number;
    memory: string | number;
    gpus: string | number;
    gres: Record<string, number> | string | null;
    pushed: AssignmentRow[] | string | null;
  }>(
    tx,
    sql`WITH RECURSIVE p AS (
          SELECT * FROM unnest(${pgArray(placements.map((p) => p.jobId))}::bigint[],
                               ${pgArray(placements.map((p) => p.workerId))}::text[],
                               ${pgArray(placements.map((p) => p.cpus))}::int[],
                               ${pgArray(placements.map((p) => p.memoryMb))}::int[],
                               ${pgArray(placements.map((p) => indexesMask(p.gpus)))}::bigint[],
                               ${pgArray(placements.map((p) => `{${p.gpus.join(',')}}`))}::text[],
                               ${pgArray(placements.map((p) => JSON.stringify(p.gres)))}::jsonb[],
                               ${pgArray(placements.map((p) => p.partition ?? ''))}::text[],
                               ${pgArray(arrays.map((a) => a ?? 0))}::bigint[],
                               ${pgArray(charges.jobs.map((j) => j.account ?? ''))}::text[],
                               ${pgArray(charges.jobs.map((j) => j.owner ?? ''))}::text[],
                               ${pgArray(charges.jobs.map((j) => j.timeLimitS ?? 0))}::int[])
            WITH ORDINALITY AS p(job_id, node, cpus, memory_mb, gpu_mask, gpu_list, gres, part, arr, acct, own, tl, ord)
        ),
        -- Account and user limits (MaxJobs, GrpTRES, GrpTRESMins): the placements that would go over one,
        -- counted under the association rows' locks (lockAssociations) with the placements before them.
        ${placingCheck(charges.period, charges.locked)},
        -- sbatch --array=...%N: how many more tasks each capped array may run. Its row is locked (lockArrays)
        -- before this statement, so the count includes every placement committed by another pass.
        room AS (
          SELECT a.array_job_id, a.max_running - (
                   SELECT count(*) FROM jobs r WHERE r.array_job_id = a.array_job_id AND r.state = 'RUNNING') AS n
          FROM job_arrays a
          WHERE a.array_job_id IN (SELECT arr FROM p WHERE arr <> 0) AND a.max_running IS NOT NULL
        ),
        ranked AS (SELECT p.*, row_number() OVER (PARTITION BY p.arr ORDER BY p.job_id) AS rank FROM p),
        j AS (
          UPDATE jobs SET state = 'RUNNING', node = p.node, attempt = jobs.attempt + 1, reason = NULL,
            reason_detail = NULL, reserved_worker = NULL, claimed_session = NULL, claimed_at = NULL,
            start_time = NULL, end_time = NULL, exit_code = NULL, cancel_requested = false, max_rss_kb = NULL,
            signal_pending = NULL, planned_start_time = NULL,
            allocated_gpus = CASE WHEN p.gpu_list = '{}' THEN NULL ELSE p.gpu_list::int[] END,
            partition = coalesce(nullif(p.part, ''), jobs.partition)
          FROM ranked p WHERE jobs.id = p.job_id AND jobs.state = 'PENDING' AND jobs.held IS NULL
            AND jobs.array_job_id IS NOT DISTINCT FROM nullif(p.arr, 0)
            AND NOT EXISTS (SELECT 1 FROM room WHERE room.array_job_id = p.arr AND p.rank > room.n)
            AND jobs.account IS NOT DISTINCT FROM nullif(p.acct, '')
            AND NOT EXISTS (SELECT 1 FROM over WHERE over.job_id = p.job_id)
            AND (jobs.begin_time IS NULL OR jobs.begin_time <= now()) AND ${DEPENDENCY_MET}
            AND ${RESERVATIONS_ALLOW}
          RETURNING jobs.id AS job_id, p.node, p.cpus, p.memory_mb, p.gpu_mask, p.gres,
            -- The agent's assignment, from the row as updated (what a claim would answer; the allocation
            -- this statement inserts is not visible to it, hence p.cpus).
            (SELECT to_json(x) FROM (SELECT ${assignmentColumns(sql`p.cpus`)}) x) AS assignment
        ),
        per_worker AS (
          SELECT node, sum(cpus)::int AS n, sum(memory_mb)::int AS mem, bit_or(gpu_mask) AS mask,
                 sum(bit_count(gpu_mask::bit(64)))::int AS gpus
          FROM j GROUP BY node
        ),
        w AS (
          UPDATE workers SET allocated_cpus = workers.allocated_cpus + per_worker.n,
            allocated_memory_mb = workers.allocated_memory_mb + per_worker.mem,
            gpus_used = workers.gpus_used | per_worker.mask,
            allocated_gpus = workers.allocated_gpus + per_worker.gpus
          FROM per_worker WHERE workers.id = per_worker.node
          RETURNING workers.id
        ),
        g AS (
          UPDATE worker_gres SET allocated = worker_gres.allocated + x.n
          FROM (SELECT j.node, e.key AS name, sum(e.value::int)::int AS n
                FROM j, jsonb_each_text(j.gres) e GROUP BY 1, 2) x
          WHERE worker_gres.worker_id = x.node AND worker_gres.name = x.name
          RETURNING 1
        ),
        a AS (
          INSERT INTO resource_allocations (job_id, allocated_cpus, node_name, memory_mb, gpu_mask, gres)
          SELECT job_id, cpus, node, memory_mb, gpu_mask, gres FROM j
          ON CONFLICT (job_id) DO UPDATE SET allocated_cpus = excluded.allocated_cpus,
            node_name = excluded.node_name, released = false, allocation_time = now(), released_time = NULL,
            memory_mb = excluded.memory_mb, gpu_mask = excluded.gpu_mask, gres = excluded.gres
          RETURNING 1
        ),
        c AS (
          UPDATE cluster_state SET allocated_cpus = allocated_cpus + (SELECT sum(cpus) FROM j),
            allocated_memory_mb = allocated_memory_mb + (SELECT sum(memory_mb) FROM j),
            allocated_gpus = allocated_gpus + (SELECT coalesce(sum(gpus), 0) FROM per_worker),
            allocation_version = allocation_version + 1
          WHERE id = 1 AND EXISTS (SELECT 1 FROM j) AND (SELECT count(*) FROM w) >= 0
            AND (SELECT count(*) FROM g) >= 0
          RETURNING allocation_version
        )
        SELECT (SELECT allocation_version FROM c) AS version, (SELECT count(*) FROM j) AS jobs,
               (SELECT coalesce(sum(cpus), 0) FROM j) AS total,
               (SELECT coalesce(sum(memory_mb), 0) FROM j) AS memory,
               (SELECT coalesce(sum(gpus), 0) FROM per_worker) AS gpus,
               (SELECT jsonb_object_agg(name, n) FROM (
                  SELECT e.key AS name, sum(e.value::int) AS n FROM j, jsonb_each_text(j.gres) e GROUP BY e.key
                ) named WHERE n <> 0) AS gres,
               (SELECT json_agg(j.assignment ORDER BY j.job_id)
                FROM j JOIN workers cw ON cw.id = j.node AND cw.channel) AS pushed`,
  );
  const placed = Number(row?.jobs ?? 0);
  return {
    placed,
    version: placed > 0 ? Number(row?.version) : null,
    total: Number(row?.total ?? 0),
    memoryMb: Number(row?.memory ?? 0),
    gpus: Number(row?.gpus ?? 0),
    gres: jsonColumn(row?.gres ?? null) ?? {},
    pushed: jsonColumn(row?.pushed ?? null) ?? [],
  };
}

interface Explanation {
  id: number;
  reason: ReasonCode;
  detail: string;
  /** The worker it holds, or null. */
  worker: string | null;
  /** Seconds from now to its planned start there, or null. */
  plannedIn: number | null;
}

/**
 * Writes why jobs wait, only where it changed (no write, no WAL, when nothing did): the jobs the pass read
 * (`explained`, with their reservations), and, when the queue is settled (`seen` is the list of jobs the pass
 * read), every other pending job that is not held: too large for every live node (Resources), or behind the
 * jobs read (Priority).
 */
async function explainQueue(
  tx: Tx,
  { largest, explained, seen }: { largest: number; explained: Explanation[]; seen: number[] | null },
): Promise<void> {
  const ids = pgArray(explained.map((e) => e.id));
  const reasons = pgArray(explained.map((e) => e.reason));
  const details = pgArray(explained.map((e) => e.detail));
  const workers = pgArray(explained.map((e) => e.worker ?? ''));
  // -1: not planned (unnest takes no nulls through pgArray).
  const planned = pgArray(explained.map((e) => e.plannedIn ?? -1));
  const explain = sql`UPDATE jobs SET reason = r.reason, reason_detail = r.detail, reserved_worker = nullif(r.worker, ''),
        planned_start_time = CASE WHEN r.planned < 0 THEN NULL ELSE now() + make_interval(secs => r.planned) END
      FROM unnest(${ids}::bigint[], ${reasons}::text[], ${details}::text[], ${workers}::text[], ${planned}::float8[])
        AS r(id, reason, detail, worker, planned)
      WHERE jobs.id = r.id AND jobs.state = 'PENDING' AND jobs.held IS NULL`;
  if (seen === null) {
    if (explained.length > 0) await query(tx, explain);
    return;
  }
  const tooLarge = sql`${TOO_LARGE_PREFIX}::text || 'needs ' || cpus || ' CPUs, the largest live node has ' || ${largest}::int`;
  const detail = sql`CASE WHEN cpus > ${largest}::int THEN ${tooLarge} ELSE ${BEHIND_QUEUE.detail}::text END`;
  const reason = sql`CASE WHEN cpus > ${largest}::int THEN 'Resources' ELSE ${BEHIND_QUEUE.reason}::text END`;
  await query(
    tx,
    sql`WITH explained AS (${explain} RETURNING 1),
        waiting AS (
          UPDATE jobs SET reason = 'BeginTime', reason_detail = ${beginTimeDetail(sql`begin_time`)}, reserved_worker = NULL
          WHERE state = 'PENDING' AND held IS NULL AND begin_time > now() AND ${DEPENDENCY_MET}
            AND (reason IS DISTINCT FROM 'BeginTime' OR reserved_worker IS NOT NULL)
          RETURNING 1
        ),
        stale AS (
          SELECT id FROM jobs
          WHERE state = 'PENDING' AND held IS NULL AND reserved_worker IS NULL AND ${BEGUN} AND ${DEPENDENCY_MET}
            AND NOT (id = ANY(${pgArray(seen)}::bigint[]))
            AND CASE WHEN cpus > ${largest}::int
                     THEN reason IS DISTINCT FROM 'Resources' OR reason_detail IS DISTINCT FROM ${tooLarge}
                     ELSE reason IS NULL OR reason IN ('None', 'BeginTime', 'Dependency')
                          OR starts_with(reason_detail, ${TOO_LARGE_PREFIX}) END
          ORDER BY ${QUEUE_ORDER} LIMIT ${MAX_EXPLAINED_BEHIND}
        )
        UPDATE jobs SET reason = ${reason}, reason_detail = ${detail} FROM stale WHERE jobs.id = stale.id`,
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
