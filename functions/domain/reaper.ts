import { sql } from 'drizzle-orm';
import { endJobsAndRelease, inReleasingTransaction, loseJobs } from './allocation.ts';
import type { Context } from './context.ts';
import { warnRegistryDown } from './liveness.ts';
import { pgArray, query, queryOne } from './sql.ts';
import { registryTime } from './workers.ts';

export interface ReapResult {
  lostWorkers: string[];
  lostJobs: number;
  /** True while the control plane gives workers a TTL of grace after it was itself away. */
  inGrace: boolean;
}

/**
 * Declares workers silent for longer than the TTL lost, and deals with their jobs (NODE_FAIL, or back to
 * PENDING with `requeue`). Death is judged by Postgres's durable last_heartbeat, and for workers on the push
 * channel by their registry key as well; a missing key alone is not death (a flushed or restarted Redis is
 * not a dead node). When reaping itself stopped (the control
 * plane or Postgres was down), every worker first gets one TTL of grace to heartbeat.
 *
 * "Stopped" means: no pass for longer than TTL minus the heartbeat interval (at least two passes). A worker's
 * last heartbeat may be one interval older than the start of an outage, so an outage longer than that makes
 * a healthy worker look silent for a TTL; with a longer threshold (it was TTL + two passes) an outage just
 * shorter than it ended with healthy workers reaped and their finished jobs turned into NODE_FAIL.
 */
export async function reapLostWorkers(ctx: Context): Promise<ReapResult> {
  const ttl = ctx.config.workerTtlSeconds;
  const gap = Math.max(ttl - ctx.config.heartbeatIntervalSeconds, 2 * ctx.config.scheduleIntervalSeconds);
  const clock = await queryOne<{ in_grace: boolean }>(
    ctx.db,
    sql`UPDATE maintenance_state SET
          reaper_resumed_at = CASE WHEN reaper_seen_at IS NULL OR reaper_seen_at < now() - make_interval(secs => ${gap})
                                   THEN now() ELSE reaper_resumed_at END,
          reaper_seen_at = now()
        WHERE id = 1
        RETURNING reaper_resumed_at > now() - make_interval(secs => ${ttl}) AS in_grace`,
  );
  // A worker heartbeating over HTTP writes Postgres each time: its last_heartbeat judges it, as it always did.
  // One on the push channel (workers.channel) heartbeats by pings that refresh only its registry key, so the
  // registry judges it: lost when its key expired too. A registry younger than a TTL (flushed, restarted
  // empty) cannot tell dead from not yet refreshed, so channel workers wait; a registry that cannot answer
  // leaves Postgres to judge alone (the hubs then write their workers' heartbeats there).
  let view: { live: string[]; memoryAgeMs: number } | null = null;
  try {
    view = await ctx.registry.reapView();
  } catch (error) {
    warnRegistryDown(ctx, error);
  }
  if (clock?.in_grace) return { lostWorkers: [], lostJobs: 0, inGrace: true };
  const channelSilent =
    view === null
      ? sql`true`
      : view.memoryAgeMs < ttl * 1000
        ? sql`false`
        : sql`NOT (id = ANY(${pgArray(view.live)}::text[]))`;
  const silent = sql`status <> 'down' AND last_heartbeat < now() - make_interval(secs => ${ttl})
    AND (NOT channel OR ${channelSilent})`;

  // One transaction: the workers go down and their jobs are lost together, the workers' rows locked from
  // the first statement to the commit. A registration locks its worker's row first too, so it either comes
  // before (the worker is then fresh and not reaped) or after (it finds the jobs lost and tells its agent to
  // kill them): never between, where it would be told to keep a job that the reaper then ends.
  const { lost, jobs } = await inReleasingTransaction(ctx, async (tx, endJobs) => {
    const lost = await query<{ id: string; registered_at: Date | string }>(
      tx,
      sql`UPDATE workers SET status = 'down', down_at = now(),
            down_reason = 'heartbeat lapsed: silent for ' || floor(extract(epoch FROM now() - last_heartbeat)) || ' s'
          WHERE id IN (SELECT id FROM workers WHERE ${silent} ORDER BY id FOR UPDATE) AND ${silent}
          RETURNING id, registered_at`,
    );
    if (lost.length === 0) return { lost, jobs: [] };
    const ids = pgArray(lost.map((w) => w.id));
    const jobs = await endJobs(
      loseJobs(sql`node = ANY(${ids}::text[])`, 'node lost: its heartbeat lapsed', ctx.config),
    );
    return { lost, jobs };
  });
  if (lost.length === 0) return { lostWorkers: [], lostJobs: 0, inGrace: false };
  const ids = lost.map((w) => w.id);
  for (const worker of lost) {
    const id = worker.id;
    ctx.logger.warn(`Worker lost: ${id} (no heartbeat for ${ttl} s)`, {
      jobs: jobs.filter((j) => j.node === id).map((j) => j.id),
    });
    try {
      // Only the lost registration's key: an agent that registered again since keeps its new one.
      await ctx.registry.removeWorker(id, registryTime(worker.registered_at));
    } catch (error) {
      warnRegistryDown(ctx, error);
    }
  }
  return { lostWorkers: ids, lostJobs: jobs.length, inGrace: false };
}

/**
 * The agent enforces time limits (SIGTERM, then SIGKILL). If a job is still RUNNING well past its limit
 * (by two TTLs, at least a minute) its agent failed to: the server ends it as TIMEOUT, releases its CPUs,
 * and asks the agent to kill it should it still be there.
 */
export async function endOverdueJobs(ctx: Context): Promise<number> {
  const grace = Math.max(60, 2 * ctx.config.workerTtlSeconds);
  const overdue = sql`state = 'RUNNING' AND time_limit_s IS NOT NULL AND start_time IS NOT NULL
    AND start_time < now() - make_interval(secs => time_limit_s + ${grace})`;
  const ended = await endJobsAndRelease(ctx, {
    update: sql`UPDATE jobs SET state = 'TIMEOUT', end_time = now(), exit_code = '0:0', cancel_requested = true,
          reason = 'time limit exceeded and its agent did not end the job'
        WHERE ${overdue}
        RETURNING id, state, node, attempt, exit_code`,
    workers: sql`SELECT node FROM jobs WHERE ${overdue}`,
  });
  for (const job of ended) {
    ctx.logger.warn(
      `Job ${job.id} ended as TIMEOUT by the server: its agent (${job.node}) did not report it`,
    );
    if (job.node) ctx.notifier.notify(job.node);
  }
  return ended.length;
}

/**
 * Assignments still RUNNING without a start `startDeadlineSeconds` after their placement: their agent never
 * reported them started (one that cannot start a job reports `failed_to_start`; this catches agents that do
 * not). They end FAILED (CANCELLED if a cancel was asked) and free their CPUs; a late `started` report is
 * then refused as stale, which makes an agent that did start one kill it. Placements made before reaping
 * last resumed (the control plane or its database was away, and a `started` report with it) wait for the
 * deadline counted from then.
 */
export async function endUnstartedJobs(ctx: Context): Promise<number> {
  const deadline = ctx.config.startDeadlineSeconds;
  const unstarted = sql`state = 'RUNNING' AND start_time IS NULL
    AND EXISTS (SELECT 1 FROM resource_allocations a WHERE a.job_id = jobs.id AND NOT a.released
                  AND a.allocation_time < now() - make_interval(secs => ${deadline}))
    AND EXISTS (SELECT 1 FROM maintenance_state m WHERE m.id = 1
                  AND m.reaper_resumed_at < now() - make_interval(secs => ${deadline}))`;
  const ended = await endJobsAndRelease(ctx, {
    update: sql`UPDATE jobs SET state = CASE WHEN cancel_requested THEN 'CANCELLED' ELSE 'FAILED' END,
          end_time = now(), exit_code = '0:0',
          reason = 'never started: its agent did not report it started within ' || ${deadline}::text || ' s of its placement'
        WHERE ${unstarted}
        RETURNING id, state, node, attempt, exit_code`,
    workers: sql`SELECT node FROM jobs WHERE ${unstarted}`,
  });
  for (const job of ended) {
    ctx.logger.warn(
      `Job ${job.id} ended as ${job.state} by the server: its agent (${job.node}) never started it`,
    );
  }
  return ended.length;
}
