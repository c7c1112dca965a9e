import { type SQL, sql } from 'drizzle-orm';
import type {
  ClaimResponse,
  FinishRequest,
  HeartbeatResponse,
  JobRef,
  JobSignal,
  OutputRequest,
  RegisterRequest,
  RegisterResponse,
  StartedRequest,
} from '../../agent/src/protocol.ts';
import type { WorkerStatus } from '../../db/schema.ts';
import {
  type EndedJob,
  endJobsAndRelease,
  inReleasingTransaction,
  loseJobs,
  retryBeginTime,
  retryPolicy,
} from './allocation.ts';
import { ASSIGNMENT_COLUMNS, type AssignmentRow, assignmentView } from './assignments.ts';
import { recordAudit } from './audit.ts';
import { ANONYMOUS, type Principal } from './auth.ts';
import { createBatcher } from './batcher.ts';
import type { Context } from './context.ts';
import { type ConductorError, conflict, forbidden, notFound } from './errors.ts';
import { OUTPUT_KEEP_CHARS } from './jobs.ts';
import { liveInPostgres, warnRegistryDown } from './liveness.ts';
import { indexesMask } from './placement.ts';
import type { WorkerEntry } from './ports.ts';
import { jsonColumn, pgArray, query, queryOne, withRetry } from './sql.ts';

/** `2025-11-11T10:00:00`: the registry's timestamp form (UTC). */
export function registryTime(value: Date | string): string {
  return new Date(value).toISOString().slice(0, 19);
}

const staleAssignment = (jobId: number, attempt: number) =>
  conflict(
    'stale_assignment',
    `Job ${jobId} attempt ${attempt} is no longer assigned to this worker; stop it and drop the report`,
  );

/**
 * A worker's identity is bound to the token that registered it (null on the open loopback cluster): only
 * that token may heartbeat, claim, report and unregister as it, until the token is revoked.
 */
export const boundTo = (caller: Principal) => sql`token_id IS NOT DISTINCT FROM ${caller.tokenId}::bigint`;

const workerNotYours = (workerId: string) =>
  forbidden(
    'worker_not_yours',
    `Worker ${workerId} was registered with another agent token: only that token may act as it (revoke that token to hand the name over)`,
  );

/** 403 when `workerId` exists and is bound to another token than the caller's. */
async function assertWorkerIsCallers(ctx: Context, workerId: string, caller: Principal): Promise<void> {
  const row = await queryOne<{ mine: boolean }>(
    ctx.db,
    sql`SELECT ${boundTo(caller)} AS mine FROM workers WHERE id = ${workerId}`,
  );
  if (row && !row.mine) throw workerNotYours(workerId);
}

function refsSql(refs: readonly JobRef[]) {
  return sql`(id, attempt) IN (SELECT * FROM unnest(${pgArray(refs.map((r) => r.job_id))}::bigint[], ${pgArray(refs.map((r) => r.attempt))}::int[]))`;
}

/**
 * Registers (or re-registers) a worker. Claimed assignments of this worker that the agent does not list in
 * `running` have lost their process: they end as NODE_FAIL (or go back to the queue with `requeue`), and
 * those it never started go back to the queue.
 */
export async function registerWorker(
  ctx: Context,
  input: RegisterRequest,
  caller: Principal = ANONYMOUS,
): Promise<RegisterResponse> {
  const { config } = ctx;
  const id = input.worker_id;
  const session = crypto.randomUUID();

  // The name is free, or bound to the caller's token, or to a token that was revoked (handed over).
  const takeable = sql`(workers.token_id IS NULL OR workers.token_id = ${caller.tokenId}::bigint
    OR NOT EXISTS (SELECT 1 FROM api_tokens t WHERE t.id = workers.token_id AND t.revoked_at IS NULL))`;
  const running = input.running ?? [];
  const gpus = input.gpus ?? [];
  const keep = running.length > 0 ? refsSql(running) : sql`false`;

  // One transaction that locks the worker's row first, as the reaper does: a registration comes wholly
  // before or after a reap of this worker, never between its steps.
  const { row, stale } = await inReleasingTransaction(ctx, async (tx, endJobs) => {
    const holder = await queryOne<{ session: string; live: boolean; takeable: boolean }>(
      tx,
      sql`SELECT session, ${liveInPostgres(config.workerTtlSeconds)} AS live,
                 ${takeable} AS takeable
          FROM workers WHERE id = ${id} FOR UPDATE`,
    );
    if (holder && !holder.takeable) throw workerNotYours(id);
    if (holder?.live && holder.session !== input.previous_session) {
      throw conflict(
        'worker_name_in_use',
        `Another agent is registered as ${id} and heartbeating; give this node a unique NODE_NAME, or stop the other agent and retry after ${config.workerTtlSeconds} s`,
      );
    }

    // Claimed but never started, and not running on the agent: it never ran, so it goes back to the queue
    // (as on unregister). Claimed, started and not listed: its process is lost.
    await endJobs(
      sql`UPDATE jobs SET state = 'PENDING', node = NULL, claimed_session = NULL, claimed_at = NULL,
            requeued_from = 'REQUEUED', reason = 'requeued: its agent restarted before starting it'
          WHERE node = ${id} AND state = 'RUNNING' AND claimed_session IS NOT NULL AND start_time IS NULL
            AND NOT cancel_requested AND NOT ${keep}
          RETURNING id, state, node, attempt, exit_code`,
    );
    await endJobs(
      loseJobs(
        sql`node = ${id} AND claimed_session IS NOT NULL AND NOT ${keep}`,
        'agent restarted: process lost',
        config,
      ),
    );
    let stale: JobRef[] = [];
    if (running.length > 0) {
      const kept = await query<{ id: string | number; attempt: number }>(
        tx,
        sql`UPDATE jobs SET claimed_session = ${session}
            WHERE node = ${id} AND state = 'RUNNING' AND ${keep}
            RETURNING id, attempt`,
      );
      const current = new Set(kept.map((k) => `${Number(k.id)}:${Number(k.attempt)}`));
      stale = running.filter((r) => !current.has(`${r.job_id}:${r.attempt}`));
    }

    // An operator's drain outlasts restarts and reaps; the agent's own (it was stopping) only a re-registration.
    const row = await queryOne<{
      status: WorkerStatus;
      registered_at: Date | string;
      last_heartbeat: Date | string;
    }>(
      tx,
      sql`INSERT INTO workers (id, hostname, cpus, status, session, labels, agent_version, token_id, memory_mb, gpus,
                           gpu_mask, features, partitions, memory_enforcement)
          VALUES (${id}, ${input.hostname}, ${input.cpus}, 'ready', ${session}, ${JSON.stringify(input.labels ?? {})}::jsonb,
                  ${input.agent_version ?? null}, ${caller.tokenId}::bigint, ${input.memory_mb ?? 0},
                  ${JSON.stringify(gpus)}::jsonb, ${indexesMask(gpus.map((g) => g.index))}::bigint,
                  ${pgArray(input.features ?? [])}::text[], ${pgArray(input.partitions ?? [])}::text[],
                  ${input.memory_enforcement ?? null})
          ON CONFLICT (id) DO UPDATE SET
            hostname = excluded.hostname, cpus = excluded.cpus, session = excluded.session,
            status = CASE WHEN workers.drained OR workers.status = 'draining' THEN 'draining' ELSE 'ready' END,
            registered_at = now(), last_heartbeat = now(), down_at = NULL, down_reason = NULL, channel = false,
            labels = excluded.labels, agent_version = excluded.agent_version, token_id = excluded.token_id,
            memory_mb = excluded.memory_mb, gpus = excluded.gpus, gpu_mask = excluded.gpu_mask,
            features = excluded.features, partitions = excluded.partitions,
            memory_enforcement = excluded.memory_enforcement
          WHERE workers.allocated_cpus <= excluded.cpus AND workers.allocated_memory_mb <= excluded.memory_mb
            AND workers.gpus_used & ~excluded.gpu_mask = 0 AND ${takeable}
          RETURNING status, registered_at, last_heartbeat`,
    );
    if (!row) {
      const bound = await queryOne<{ mine: boolean }>(
        tx,
        sql`SELECT ${boundTo(caller)} AS mine FROM workers WHERE id = ${id}`,
      );
      if (bound && !bound.mine) throw workerNotYours(id);
      throw conflict(
        'cpus_below_allocation',
        `Worker ${id} has more CPUs, memory or GPUs allocated to running jobs than it now offers (${input.cpus} CPUs, ${input.memory_mb ?? 0} MB, GPUs ${gpus.map((g) => g.index).join(',') || 'none'}); let them finish first`,
      );
    }
    const gres = Object.entries(input.gres ?? {});
    const short = await queryOne<{ name: string; allocated: number }>(
      tx,
      sql`SELECT g.name, g.allocated FROM worker_gres g
          LEFT JOIN unnest(${pgArray(gres.map(([n]) => n))}::text[], ${pgArray(gres.map(([, c]) => c))}::int[]) AS x(name, total)
            ON x.name = g.name
          WHERE g.worker_id = ${id} AND g.allocated > coalesce(x.total, 0) LIMIT 1`,
    );
    if (short) {
      throw conflict(
        'cpus_below_allocation',
        `Worker ${id} has ${short.allocated} ${short.name} allocated to running jobs, more than it now offers; let them finish first`,
      );
    }
    await query(
      tx,
      sql`WITH x AS (SELECT * FROM unnest(${pgArray(gres.map(([n]) => n))}::text[], ${pgArray(gres.map(([, c]) => c))}::int[]) AS x(name, total)),
          gone AS (DELETE FROM worker_gres g WHERE g.worker_id = ${id} AND g.name NOT IN (SELECT name FROM x)),
          declared AS (
            INSERT INTO partitions (name, created_by)
            SELECT unnest(${pgArray(input.partitions ?? [])}::text[]), 'agent' ON CONFLICT (name) DO NOTHING
          )
          INSERT INTO worker_gres (worker_id, name, total) SELECT ${id}, name, total FROM x
          ON CONFLICT (worker_id, name) DO UPDATE SET total = excluded.total`,
    );
    return { row, stale };
  });

  const entry: WorkerEntry = {
    worker_id: id,
    cpus: input.cpus,
    status: row.status,
    hostname: input.hostname,
    registered_at: registryTime(row.registered_at),
    last_heartbeat: registryTime(row.last_heartbeat),
    memory_mb: input.memory_mb ?? 0,
    gpus: [...gpus]
      .sort((a, b) => a.index - b.index)
      .map((g) => `${g.model}:${g.index}`)
      .join(','),
    gres: Object.entries(input.gres ?? {})
      .map(([name, count]) => `${name}:${count}`)
      .join(','),
    features: (input.features ?? []).join(','),
    partitions: (input.partitions ?? []).join(','),
  };
  try {
    await ctx.registry.putWorker(entry, config.workerTtlSeconds);
  } catch (error) {
    warnRegistryDown(ctx, error);
  }
  ctx.logger.info(`✓ Worker registered: ${id} (${input.cpus} CPUs)`);
  ctx.defer(ctx.requestSchedule());
  return {
    worker_id: id,
    session,
    heartbeat_interval_s: config.heartbeatIntervalSeconds,
    worker_ttl_s: config.workerTtlSeconds,
    claim_wait_s: config.claimWaitSeconds,
    cancel: stale,
  };
}

interface SessionCheck {
  worker_id: string;
  session: string;
}

/** Why a worker's session is not current: another token's worker, unknown (never registered, or down) or superseded. */
export async function sessionError(
  ctx: Context,
  input: SessionCheck,
  caller: Principal,
): Promise<ConductorError> {
  const row = await queryOne<{ session: string; status: string; mine: boolean }>(
    ctx.db,
    sql`SELECT session, status, ${boundTo(caller)} AS mine FROM workers WHERE id = ${input.worker_id}`,
  );
  if (row && !row.mine) return workerNotYours(input.worker_id);
  if (row && row.status !== 'down' && row.session !== input.session) {
    return conflict(
      'session_superseded',
      `Worker ${input.worker_id} registered again elsewhere; register anew`,
    );
  }
  return notFound('unknown_worker', `Worker ${input.worker_id} is not registered; register again`);
}

/**
 * Jobs the worker must kill: cancelled while running, ended by the server past their time limit, or taken off
 * it by a requeue (the attempt it ran, whatever became of the job since) within `fencedFor`. A claim answers at
 * once when there is any, so it looks back a minute only (the requeue wakes it); heartbeats an hour.
 */
function cancelsSql(workerId: string, fencedFor: SQL = sql`interval '1 hour'`) {
  return sql`(SELECT coalesce(json_agg(json_build_object('job_id', k.id, 'attempt', k.attempt)), '[]'::json)
              FROM (SELECT id, attempt FROM jobs WHERE node = ${workerId} AND cancel_requested
                      AND (state = 'RUNNING' OR (state = 'TIMEOUT' AND end_time > now() - interval '1 hour'))
                    UNION ALL
                    SELECT id, fenced_attempt FROM jobs
                    WHERE fenced_node = ${workerId} AND fenced_at > now() - ${fencedFor}) k)`;
}

/**
 * Hands out the signals asked for jobs this worker runs (started ones), clearing them in the same statement:
 * each is delivered once. `when`: the statement's check that the caller is the worker's current session.
 */
function signalsSql(workerId: string, when: SQL) {
  return sql`UPDATE jobs SET signal_pending = NULL
             FROM (SELECT id, signal_pending FROM jobs
                   WHERE node = ${workerId} AND state = 'RUNNING' AND start_time IS NOT NULL
                     AND signal_pending IS NOT NULL AND ${when}
                   FOR UPDATE) asked
             WHERE jobs.id = asked.id
             RETURNING jobs.id, jobs.attempt, asked.signal_pending AS signals`;
}

/** The signals `signalsSql` handed out (its CTE `sig`), as one JSON array of JobSignal. */
const SIGNALS_JSON = sql`(SELECT coalesce(json_agg(json_build_object('job_id', sig.id, 'attempt', sig.attempt,
                            'signal', e.value ->> 'signal', 'batch_only', (e.value ->> 'batch_only')::boolean)), '[]'::json)
                          FROM sig, jsonb_array_elements(sig.signals) e)`;

export async function heartbeatWorker(
  ctx: Context,
  input: SessionCheck & { status?: 'ready' | 'draining' | undefined },
  caller: Principal = ANONYMOUS,
): Promise<HeartbeatResponse> {
  // An agent may start draining itself; only an operator undrains (POST /api/v1/workers/:id/undrain).
  const draining = input.status === 'draining';
  // One row, yet it can be the victim of another pair's deadlock: the first in line for a row holds its
  // tuple lock while it waits, and the next waiter waits on it.
  const row = await withRetry(() =>
    queryOne<{
      last_heartbeat: Date | string;
      status: WorkerStatus;
      cancel: JobRef[] | string;
      signal: JobSignal[] | string;
    }>(
      ctx.db,
      sql`WITH w AS (
            UPDATE workers SET last_heartbeat = now(),
              status = CASE WHEN ${draining}::boolean THEN 'draining' ELSE status END
            WHERE id = ${input.worker_id} AND session = ${input.session} AND status <> 'down' AND ${boundTo(caller)}
            RETURNING last_heartbeat, status
          ),
          sig AS (${signalsSql(input.worker_id, sql`EXISTS (SELECT 1 FROM w)`)})
          SELECT last_heartbeat, status, ${cancelsSql(input.worker_id)} AS cancel, ${SIGNALS_JSON} AS signal FROM w`,
    ),
  );
  if (!row) throw await sessionError(ctx, input, caller);
  ctx.metrics.heartbeats++;
  let known = true;
  try {
    known = await ctx.registry.touchWorker(
      input.worker_id,
      registryTime(row.last_heartbeat),
      ctx.config.workerTtlSeconds,
      row.status,
    );
  } catch (error) {
    warnRegistryDown(ctx, error); // Postgres has the heartbeat; liveness falls back to it
  }
  if (!known) {
    throw notFound('unknown_worker', `Worker ${input.worker_id} expired from the registry; register again`);
  }
  return {
    heartbeat_interval_s: ctx.config.heartbeatIntervalSeconds,
    status: row.status === 'draining' ? 'draining' : 'ready',
    cancel: jsonColumn(row.cancel),
    signal: jsonColumn(row.signal),
  };
}

/**
 * Drains a worker (it takes no new jobs and finishes the ones it runs) or puts it back in service. The
 * status shows in Postgres, in the `worker:<id>` hash and in the API; drained capacity is not available.
 * The drain lasts until undrained, also across the agent's restarts and reaps (`drained`).
 */
export async function setWorkerDraining(
  ctx: Context,
  workerId: string,
  draining: boolean,
  caller: Principal = ANONYMOUS,
) {
  const status: WorkerStatus = draining ? 'draining' : 'ready';
  const row = await queryOne<{ id: string }>(
    ctx.db,
    sql`UPDATE workers SET status = ${status}, drained = ${draining}
        WHERE id = ${workerId} AND status <> 'down' RETURNING id`,
  );
  if (!row) {
    const known = await queryOne<{ status: string }>(
      ctx.db,
      sql`SELECT status FROM workers WHERE id = ${workerId}`,
    );
    if (known) throw conflict('worker_down', `Worker ${workerId} is down; there is nothing to drain`);
    throw notFound('worker_not_found', `Worker ${workerId} does not exist`);
  }
  try {
    await ctx.registry.setWorkerStatus(workerId, status);
  } catch (error) {
    warnRegistryDown(ctx, error);
  }
  ctx.logger.info(`Worker ${draining ? 'draining' : 'back in service'}: ${workerId}`);
  ctx.notifier.notify(workerId); // a channel agent learns its status from the claim the wake makes
  await recordAudit(ctx.db, caller, draining ? 'worker.drain' : 'worker.undrain', `worker:${workerId}`);
  if (!draining) ctx.defer(ctx.requestSchedule());
  return { worker_id: workerId, status };
}

async function claimOnce(ctx: Context, input: SessionCheck, caller: Principal) {
  const redelivery = ctx.config.claimRedeliverySeconds;
  return queryOne<{
    known: boolean;
    status: WorkerStatus | null;
    jobs: AssignmentRow[] | string;
    cancel: JobRef[] | string;
    signal: JobSignal[] | string;
    redeliver_in_s: number | string | null;
  }>(
    ctx.db,
    sql`WITH me AS (
          SELECT status FROM workers WHERE id = ${input.worker_id} AND session = ${input.session} AND status <> 'down'
            AND ${boundTo(caller)}
        ),
        claimed AS (
          UPDATE jobs SET claimed_session = ${input.session}, claimed_at = now()
          WHERE node = ${input.worker_id} AND state = 'RUNNING' AND start_time IS NULL AND NOT cancel_requested
            AND (claimed_session IS NULL
                 OR (claimed_session = ${input.session}
                     AND claimed_at <= now() - make_interval(secs => ${redelivery})))
            AND EXISTS (SELECT 1 FROM me)
          RETURNING ${ASSIGNMENT_COLUMNS}
        ),
        sig AS (${signalsSql(input.worker_id, sql`EXISTS (SELECT 1 FROM me)`)})
        SELECT EXISTS (SELECT 1 FROM me) AS known, (SELECT status FROM me) AS status, ${SIGNALS_JSON} AS signal,
               (SELECT coalesce(json_agg(claimed ORDER BY id), '[]'::json) FROM claimed) AS jobs,
               ${cancelsSql(input.worker_id, sql`interval '1 minute'`)} AS cancel,
               (SELECT extract(epoch FROM min(claimed_at) + make_interval(secs => ${redelivery}) - now())
                  FROM jobs
                  WHERE node = ${input.worker_id} AND state = 'RUNNING' AND start_time IS NULL
                    AND NOT cancel_requested AND claimed_session = ${input.session}
                    AND claimed_at > now() - make_interval(secs => ${redelivery})) AS redeliver_in_s`,
  );
}

/**
 * Hands a worker its new assignments and cancellations; waits (long-poll) up to `waitSeconds` for some.
 * An assignment handed out is not handed to the same session again for `claimRedeliverySeconds` (its
 * `started` report is on the way: answering with it again would only make the agent poll in vain), then it
 * is, until the agent reports it started, so a lost answer loses nothing.
 */
export async function claimAssignments(
  ctx: Context,
  input: SessionCheck & { wait_s?: number | undefined },
  signal?: AbortSignal,
  caller: Principal = ANONYMOUS,
): Promise<ClaimResponse> {
  const waitMs = Math.min(input.wait_s ?? 0, ctx.config.claimWaitSeconds) * 1000;
  const deadline = Date.now() + waitMs;
  for (;;) {
    const row = await claimOnce(ctx, input, caller);
    if (!row?.known) throw await sessionError(ctx, input, caller);
    const jobs = jsonColumn(row.jobs);
    const cancel = jsonColumn(row.cancel);
    // Handed out signals are cleared: they must go back in this answer.
    const signals = jsonColumn(row.signal);
    const left = deadline - Date.now();
    if (jobs.length > 0 || cancel.length > 0 || signals.length > 0 || left <= 0 || signal?.aborted) {
      return {
        jobs: jobs.map((row) => assignmentView(row, ctx.config.clusterName)),
        cancel,
        signal: signals,
        status: row.status === 'draining' ? 'draining' : 'ready',
      };
    }
    // Wake for new work, or when an unstarted assignment becomes due again.
    const redeliverMs =
      row.redeliver_in_s === null ? left : Math.max(10, Math.ceil(Number(row.redeliver_in_s) * 1000) + 5);
    await ctx.notifier.wait(input.worker_id, Math.min(left, redeliverMs), signal);
  }
}

/**
 * Fails unless the job is this worker's at this attempt (finished or not): 403 when the worker is another
 * token's, or when this attempt of the job is assigned to another token's worker (it never was this
 * worker's); 409 stale_assignment when the attempt is no longer current (a late report: drop it).
 */
async function assertAssignment(
  ctx: Context,
  jobId: number,
  workerId: string,
  attempt: number,
  caller: Principal,
) {
  await assertWorkerIsCallers(ctx, workerId, caller);
  const row = await queryOne<{
    node: string | null;
    attempt: number;
    state: string;
    exit_code: string | null;
    unclaimed: boolean;
    node_mine: boolean | null;
  }>(
    ctx.db,
    sql`SELECT node, attempt, state, exit_code, claimed_session IS NULL AS unclaimed,
               (SELECT ${boundTo(caller)} FROM workers w WHERE w.id = jobs.node) AS node_mine
        FROM jobs WHERE id = ${jobId}`,
  );
  if (!row) throw notFound('job_not_found', `Job ${jobId} does not exist`);
  if (
    row.node !== null &&
    row.node !== workerId &&
    Number(row.attempt) === attempt &&
    row.node_mine === false
  ) {
    throw forbidden(
      'assignment_not_yours',
      `Job ${jobId} attempt ${attempt} is assigned to a worker of another agent token; this token cannot report on it`,
    );
  }
  if (row.node !== workerId || Number(row.attempt) !== attempt) throw staleAssignment(jobId, attempt);
  return row;
}

/** The report's worker is the caller's: folded into the reports' write statements. */
const reporterIsCaller = (workerId: string, caller: Principal) =>
  sql`EXISTS (SELECT 1 FROM workers w WHERE w.id = ${workerId} AND w.token_id IS NOT DISTINCT FROM ${caller.tokenId}::bigint)`;

/**
 * An assignment's process started. For one pushed on the channel and not claimed, the report is its claim
 * (claimed_session, claimed_at), from the worker's current session only: another session's gets 409
 * session_superseded (or 404 unknown_worker), so the agent registers again, keeping the job, and reports again.
 */
export async function reportStarted(
  ctx: Context,
  jobId: number,
  input: StartedRequest,
  caller: Principal = ANONYMOUS,
) {
  const state = await batched(ctx, 'started', startReportedJobs)({ jobId, input, caller });
  if (state) return { state };
  const job = await assertAssignment(ctx, jobId, input.worker_id, input.attempt, caller);
  if (job.state === 'CANCELLED') return { state: job.state };
  if (job.state === 'RUNNING' && job.unclaimed) {
    throw await sessionError(ctx, { worker_id: input.worker_id, session: input.session ?? '' }, caller);
  }
  throw staleAssignment(jobId, input.attempt);
}

/** The job's state for each report that matched its running attempt. */
async function startReportedJobs(
  ctx: Context,
  reports: Report<StartedRequest>[],
): Promise<Map<number, string>> {
  const column = <T extends string | number>(pick: (r: (typeof reports)[number]) => T) =>
    pgArray(reports.map(pick));
  const rows = await query<{ id: string | number; state: string }>(
    ctx.db,
    sql`UPDATE jobs SET start_time = coalesce(start_time, now()),
          claimed_session = coalesce(jobs.claimed_session, r.session),
          claimed_at = CASE WHEN jobs.claimed_session IS NULL THEN now() ELSE jobs.claimed_at END
        FROM unnest(${column((r) => r.jobId)}::bigint[], ${column((r) => r.input.worker_id)}::text[],
                    ${column((r) => r.input.attempt)}::int[], ${column(callerTokenColumn)}::text[],
                    ${column((r) => r.input.session ?? '')}::text[])
             AS r(id, worker_id, attempt, token_id, session)
        WHERE jobs.id = r.id AND jobs.node = r.worker_id AND jobs.attempt = r.attempt AND jobs.state = 'RUNNING'
          AND ${reporterMatches}
          AND (jobs.claimed_session IS NOT NULL OR EXISTS (
                SELECT 1 FROM workers s WHERE s.id = r.worker_id AND s.session = r.session AND s.status <> 'down'))
        RETURNING jobs.id, jobs.state`,
  );
  return new Map(rows.map((row) => [Number(row.id), row.state]));
}

interface Report<I> {
  jobId: number;
  input: I;
  caller: Principal;
}

const callerTokenColumn = (r: Report<unknown>) => (r.caller.tokenId === null ? '' : String(r.caller.tokenId));
/** For batched reports (`r`: one row per report): the report's worker is its caller's. */
const reporterMatches = sql`EXISTS (SELECT 1 FROM workers w WHERE w.id = r.worker_id
  AND w.token_id IS NOT DISTINCT FROM nullif(r.token_id, '')::bigint)`;

/**
 * Agent reports arriving together are written together, one statement for a batch: a burst of job starts
 * or ends then costs one commit instead of one each (and job ends would otherwise queue one by one on their
 * worker's row and the cluster_state row). `write` answers for the reports that matched, by job id; a job
 * reported twice in one batch (a retry racing its original) goes in a statement of its own.
 */
const batchers = new WeakMap<Context, Map<string, (report: Report<never>) => Promise<unknown>>>();

function batched<I, O>(
  ctx: Context,
  kind: string,
  write: (ctx: Context, reports: Report<I>[]) => Promise<Map<number, O>>,
): (report: Report<I>) => Promise<O | undefined> {
  let perKind = batchers.get(ctx);
  const cached = perKind?.get(kind) as ((report: Report<I>) => Promise<O | undefined>) | undefined;
  if (cached) return cached;
  const run = async (reports: Report<I>[]): Promise<(O | undefined)[]> => {
    const seen = new Set<number>();
    const first: Report<I>[] = [];
    const later: Report<I>[] = [];
    for (const r of reports) {
      (seen.has(r.jobId) ? later : first).push(r);
      seen.add(r.jobId);
    }
    const done = await write(ctx, first);
    const laterResults = later.length > 0 ? await run(later) : [];
    return reports.map((r) => {
      const i = later.indexOf(r);
      return i >= 0 ? laterResults[i] : done.get(r.jobId);
    });
  };
  const batcher =
    ctx.config.reportBatchMax <= 1
      ? async (report: Report<I>) => (await run([report]))[0]
      : createBatcher(run, ctx.config.reportBatchMax);
  if (!perKind) {
    perKind = new Map();
    batchers.set(ctx, perKind);
  }
  perKind.set(kind, batcher as (report: Report<never>) => Promise<unknown>);
  return batcher;
}

/**
 * Ends an assignment as its agent reports it, releasing its CPUs. Repeating the same report is harmless.
 * `failed_to_start` ends it FAILED with the agent's reason, `out_of_memory` OUT_OF_MEMORY. `lost` (the agent stopped a `requeue` job after
 * losing contact for a TTL) ends it as a lost node's job: back to the queue, or NODE_FAIL.
 */
export async function finishAssignment(
  ctx: Context,
  jobId: number,
  input: FinishRequest,
  caller: Principal = ANONYMOUS,
) {
  const job =
    input.outcome === 'lost'
      ? await endLostReport(ctx, jobId, input, caller)
      : await batched(ctx, 'finish', endReportedJobs)({ jobId, input, caller });
  if (job) return { state: job.state };
  // The same report again for an attempt that retry_on_failure put back in the queue: harmless too.
  await assertWorkerIsCallers(ctx, input.worker_id, caller);
  const retried = await queryOne<{ state: string }>(
    ctx.db,
    sql`SELECT j.state FROM job_attempts a JOIN jobs j ON j.id = a.job_id
        WHERE a.job_id = ${jobId} AND a.attempt = ${input.attempt} AND a.node = ${input.worker_id}
          AND a.requeued AND a.state = 'FAILED' AND a.exit_code = ${input.exit_code}`,
  );
  if (retried) return { state: retried.state };
  const current = await assertAssignment(ctx, jobId, input.worker_id, input.attempt, caller);
  // The same report again (a retry whose first answer was lost): harmless. Any other report about an
  // attempt that ended otherwise (reaped as NODE_FAIL, timed out by the server) is stale.
  const repeated = current.state !== 'NODE_FAIL' && current.exit_code === input.exit_code;
  if (current.state !== 'RUNNING' && current.state !== 'PENDING' && repeated) return { state: current.state };
  throw staleAssignment(jobId, input.attempt);
}

/** Rare (a partition that outlasted the TTL): its own statement, the same one a lost node's jobs get. */
async function endLostReport(
  ctx: Context,
  jobId: number,
  input: FinishRequest,
  caller: Principal,
): Promise<EndedJob | undefined> {
  const reason = `node lost: its agent stopped the job${input.message ? `: ${input.message}` : ''}`;
  const [ended] = await endJobsAndRelease(ctx, {
    update: loseJobs(
      sql`id = ${jobId} AND node = ${input.worker_id} AND attempt = ${input.attempt}
          AND ${reporterIsCaller(input.worker_id, caller)}`,
      reason,
      ctx.config,
    ),
    workers: sql`SELECT ${input.worker_id}::text`,
  });
  if (ended) ctx.logger.warn(`Job ${jobId} ended by its agent as lost: ${reason}`, { state: ended.state });
  return ended;
}

async function endReportedJobs(
  ctx: Context,
  reports: Report<FinishRequest>[],
): Promise<Map<number, EndedJob>> {
  const column = <T extends string | number>(pick: (r: Report<FinishRequest>) => T) =>
    pgArray(reports.map(pick));
  // retry_on_failure: a non-zero exit puts the job back in the queue (after its back-off) while it has
  // requeues left; the attempt is recorded FAILED (requeued_from) and the job keeps the attempt's exit code.
  const failed = sql`(r.outcome = 'exited' AND r.exit_code <> '0:0')`;
  const retry = sql`(${failed} AND pol.pol_on_failure AND NOT jobs.cancel_requested
    AND jobs.requeues < pol.pol_max_requeues)`;
  const ended = await endJobsAndRelease(ctx, {
    workers: sql`SELECT unnest(${column((r) => r.input.worker_id)}::text[])`,
    update: sql`UPDATE jobs SET
          state = CASE
            WHEN r.outcome = 'cancelled' THEN 'CANCELLED'
            WHEN r.outcome = 'timeout' THEN 'TIMEOUT'
            WHEN r.outcome = 'out_of_memory' THEN 'OUT_OF_MEMORY'
            WHEN r.outcome = 'exited' AND r.exit_code = '0:0' THEN 'COMPLETED'
            WHEN ${retry} THEN 'PENDING'
            ELSE 'FAILED' END,
          exit_code = r.exit_code, end_time = CASE WHEN ${retry} THEN NULL ELSE now() END,
          start_time = coalesce(jobs.start_time, now()),
          node = CASE WHEN ${retry} THEN NULL ELSE jobs.node END,
          requeues = jobs.requeues + CASE WHEN ${retry} THEN 1 ELSE 0 END,
          requeued_from = CASE WHEN ${retry} THEN 'FAILED' END,
          begin_time = ${retryBeginTime(retry)},
          claimed_session = CASE WHEN ${retry} THEN NULL ELSE jobs.claimed_session END,
          claimed_at = CASE WHEN ${retry} THEN NULL ELSE jobs.claimed_at END,
          reason = CASE WHEN ${retry} THEN 'NonZeroExitCode' ELSE coalesce(nullif(r.message, ''), jobs.reason) END,
          reason_detail = CASE
            WHEN ${retry} THEN 'exited ' || r.exit_code || ': requeued (retry ' || (jobs.requeues + 1) || ' of '
              || pol.pol_max_requeues || ')'
            WHEN ${failed} AND pol.pol_on_failure AND NOT jobs.cancel_requested
              THEN 'not requeued: it was requeued ' || jobs.requeues || ' times already (max requeues '
                || pol.pol_max_requeues || ')'
            ELSE jobs.reason_detail END,
          max_rss_kb = coalesce(nullif(r.max_rss_kb, -1), jobs.max_rss_kb)
        FROM ${retryPolicy(ctx.config)}, unnest(${column((r) => r.jobId)}::bigint[], ${column((r) => r.input.worker_id)}::text[],
                    ${column((r) => r.input.attempt)}::int[], ${column((r) => r.input.outcome)}::text[],
                    ${column((r) => r.input.exit_code)}::text[], ${column((r) => r.input.message ?? '')}::text[],
                    ${column(callerTokenColumn)}::text[], ${column((r) => r.input.max_rss_kb ?? -1)}::bigint[])
             AS r(id, worker_id, attempt, outcome, exit_code, message, token_id, max_rss_kb)
        WHERE jobs.id = r.id AND pol.pol_id = jobs.id AND jobs.node = r.worker_id AND jobs.attempt = r.attempt
          AND jobs.state = 'RUNNING' AND ${reporterMatches}
        RETURNING jobs.id, jobs.state, jobs.node, jobs.attempt, jobs.exit_code`,
  });
  return new Map(ended.map((e) => [e.id, e]));
}

/**
 * An upload joins the stream's newest chunk when both together stay this small (rewriting at most this much),
 * so that a job printing a line a second does not leave a row per line.
 */
const SMALL_CHUNK_BYTES = 8192;

const gapMarker = (skipped: SQL) => sql`'\n[... ' || (${skipped})::text || ' bytes of output skipped ...]\n'`;

/**
 * Appends a chunk of a running job's output (a new job_output_chunks row, or the newest one when both are
 * small: only the new text, or at most SMALL_CHUNK_BYTES, is written), and
 * deletes the stream's chunks that no longer hold any of its last 1 MiB, or belong to an earlier attempt.
 * Idempotent by byte offset: an upload behind the stream's byte count changes nothing.
 */
export async function appendOutput(
  ctx: Context,
  jobId: number,
  input: OutputRequest,
  caller: Principal = ANONYMOUS,
) {
  const stream = sql`${jobId}::bigint, ${input.stream}::text, ${input.attempt}::int`;
  const offset = sql`${input.offset}::bigint`;
  // The stored text's skip marker comes from the byte count before this upload (the statement's snapshot: an
  // agent sends one upload per stream at a time, and a re-sent one is refused by head's condition).
  const row = await queryOne<{ bytes: string | number }>(
    ctx.db,
    sql`WITH j AS (
          SELECT 1 FROM jobs WHERE id = ${jobId} AND node = ${input.worker_id} AND attempt = ${input.attempt}
            AND state = 'RUNNING' AND ${reporterIsCaller(input.worker_id, caller)}
        ),
        before AS (
          SELECT attempt, bytes FROM job_output WHERE job_id = ${jobId} AND stream = ${input.stream}
        ),
        head AS (
          INSERT INTO job_output AS o (job_id, stream, attempt, bytes)
          SELECT ${stream}, ${input.offset + input.bytes}::bigint FROM j
          ON CONFLICT (job_id, stream) DO UPDATE SET bytes = excluded.bytes, attempt = excluded.attempt
          WHERE o.attempt <> excluded.attempt OR ${offset} >= o.bytes
          RETURNING bytes
        ),
        piece AS (
          SELECT CASE WHEN b.attempt IS DISTINCT FROM ${input.attempt}::int
                        THEN CASE WHEN ${offset} > 0 THEN ${gapMarker(offset)} ELSE '' END
                      WHEN ${offset} > b.bytes THEN ${gapMarker(sql`${offset} - b.bytes`)}
                      ELSE '' END || ${input.data}::text AS data
          FROM head LEFT JOIN before b ON true
        ),
        sized AS (SELECT data, char_length(data) AS chars, octet_length(data) AS size FROM piece),
        newer AS (
          SELECT seq, sum(chars) OVER (ORDER BY seq DESC ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS chars
          FROM job_output_chunks
          WHERE job_id = ${jobId} AND stream = ${input.stream} AND attempt = ${input.attempt}
        ),
        outdated AS (
          DELETE FROM job_output_chunks c USING sized, newer n
          WHERE c.job_id = ${jobId} AND c.stream = ${input.stream} AND c.attempt = ${input.attempt}
            AND c.seq = n.seq AND coalesce(n.chars, 0) + sized.chars >= ${OUTPUT_KEEP_CHARS}
        ),
        earlier_attempts AS (
          DELETE FROM job_output_chunks c USING head
          WHERE c.job_id = ${jobId} AND c.stream = ${input.stream} AND c.attempt <> ${input.attempt}
        ),
        last AS (
          SELECT seq FROM job_output_chunks c, sized
          WHERE c.job_id = ${jobId} AND c.stream = ${input.stream} AND c.attempt = ${input.attempt}
            AND c.seq = (SELECT max(seq) FROM newer) AND c.size + sized.size <= ${SMALL_CHUNK_BYTES}
        ),
        merged AS (
          UPDATE job_output_chunks c
          SET data = c.data || sized.data, chars = c.chars + sized.chars, size = c.size + sized.size
          FROM sized, last
          WHERE c.job_id = ${jobId} AND c.stream = ${input.stream} AND c.attempt = ${input.attempt}
            AND c.seq = last.seq AND sized.size > 0
        ),
        added AS (
          INSERT INTO job_output_chunks (job_id, stream, attempt, chars, size, data)
          SELECT ${stream}, chars, size, data FROM sized WHERE size > 0 AND NOT EXISTS (SELECT 1 FROM last)
        )
        SELECT bytes FROM head`,
  );
  if (row) return { bytes: Number(row.bytes) };
  const job = await assertAssignment(ctx, jobId, input.worker_id, input.attempt, caller);
  if (job.state !== 'RUNNING') throw staleAssignment(jobId, input.attempt);
  const stored = await queryOne<{ bytes: string | number }>(
    ctx.db,
    sql`SELECT bytes FROM job_output WHERE job_id = ${jobId} AND stream = ${input.stream}`,
  );
  throw conflict(
    'output_offset_mismatch',
    `Output of job ${jobId} ${input.stream} continues at another offset`,
    {
      expected: Number(stored?.bytes ?? 0),
    },
  );
}

/**
 * A stopping agent leaves: assignments it never started go back to the queue, any it left running are
 * lost (NODE_FAIL or requeued), and it drops out of the registry at once.
 */
export async function unregisterWorker(
  ctx: Context,
  input: SessionCheck,
  caller: Principal = ANONYMOUS,
): Promise<void> {
  const id = input.worker_id;
  // One transaction: down first (the passes that the requeue asks for must not place the jobs here again),
  // then the jobs, committed together.
  const left = await inReleasingTransaction(ctx, async (tx, endJobs) => {
    const row = await queryOne<{ registered_at: Date | string }>(
      tx,
      sql`UPDATE workers SET status = 'down', down_at = now(), down_reason = 'unregistered'
          WHERE id = ${id} AND session = ${input.session} AND status <> 'down' AND ${boundTo(caller)}
          RETURNING registered_at`,
    );
    if (!row) return null;
    await endJobs(
      sql`UPDATE jobs SET state = 'PENDING', node = NULL, claimed_session = NULL, claimed_at = NULL,
            requeued_from = 'REQUEUED', reason = 'requeued: its worker left before starting it'
          WHERE node = ${id} AND state = 'RUNNING' AND start_time IS NULL AND NOT cancel_requested
          RETURNING id, state, node, attempt, exit_code`,
    );
    await endJobs(loseJobs(sql`node = ${id}`, 'worker unregistered while the job ran', ctx.config));
    return row;
  });
  if (!left) throw await sessionError(ctx, input, caller);
  try {
    await ctx.registry.removeWorker(id, registryTime(left.registered_at));
  } catch (error) {
    warnRegistryDown(ctx, error);
  }
  ctx.logger.info(`Worker unregistered: ${id}`);
}
