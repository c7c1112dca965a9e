import { sql } from 'drizzle-orm';
import type { Context } from './context.ts';
import { recordUtilizationSample } from './dashboard.ts';
import { compactJobCountsIfDue } from './job-counts.ts';
import { pruneJobOutput } from './job-logs.ts';
import { warnRegistryDown } from './liveness.ts';
import { emitTimeLimitEvents, pruneNotificationEvents } from './notifications.ts';
import type { Ports, QuietState } from './ports.ts';
import { recalculatePrioritiesIfDue } from './priority.ts';
import { endOverdueJobs, endUnstartedJobs, reapLostWorkers } from './reaper.ts';
import { query, queryOne } from './sql.ts';

/**
 * The periodic backstop (a timer on Node, the minute cron on Workers): reap lost workers, end jobs far past
 * their time limit and assignments never started, then recompute pending jobs' priorities (at most every
 * PriorityCalcPeriod), then schedule, then record the dashboard's utilization sample (at most one a minute),
 * then expire old job output (see pruneExpiredOutput), then compact the jobs-per-state deltas (job-counts.ts), then notifications (TIME_LIMIT_* and due deliveries).
 * Scheduling also runs on every submit and every release; this catches whatever those missed.
 */
export async function runBackstop(ctx: Context): Promise<void> {
  const epoch = await ctx.registry.activityEpoch().catch((error: unknown) => {
    warnRegistryDown(ctx, error);
    return null;
  });
  await reapLostWorkers(ctx);
  await endOverdueJobs(ctx);
  await endUnstartedJobs(ctx);
  await recalculatePrioritiesIfDue(ctx);
  await ctx.backstopSchedule();
  try {
    await recordUtilizationSample(ctx);
  } catch (error) {
    // The chart is a nicety: a missing sample (say, a database without migration 0002) never stops the backstop.
    ctx.logger.warn('Utilization sample failed', {
      error: error instanceof Error ? error.message : String(error),
    });
  }
  await pruneExpiredOutput(ctx);
  await compactJobCountsIfDue(ctx);
  await runNotifications(ctx);
  await wakeUndelivered(ctx);
  if (epoch !== null) await markQuietIfIdle(ctx, epoch);
}

/**
 * How long a quiet marker stands: an idle cluster's crons then look at Postgres at most this often (a Neon
 * compute wakes for 5 minutes each time). It bounds what a lost `noteActivity` can cost: the backstop late by
 * this much at worst, while the requests themselves (submit, reports) still schedule and write as always.
 */
export const QUIET_MARKER_TTL_SECONDS = 6 * 3600;

/**
 * Ends the quiet marker: called whenever something may give the backstop work (every scheduling request:
 * submissions, releases, registrations, job ends). Retried briefly in the background: a lost one leaves the
 * crons skipping Postgres for up to QUIET_MARKER_TTL_SECONDS.
 */
export function noteActivity(ports: Ports): void {
  ports.defer(
    (async () => {
      for (let attempt = 0; ; attempt++) {
        try {
          return await ports.registry.noteActivity();
        } catch (error) {
          if (attempt >= 2) return warnRegistryDown(ports, error);
          await new Promise((resolve) => setTimeout(resolve, 200 * 4 ** attempt));
        }
      }
    })(),
  );
}

/**
 * Sets the quiet marker when the backstop found nothing that could need it again: no job pending or running
 * and no notification delivery waiting. Only if no activity came since the pass began (`epoch`), so that a
 * submission racing the pass is never hidden.
 */
async function markQuietIfIdle(ctx: Context, epoch: number): Promise<void> {
  const row = await queryOne<{ idle: boolean }>(
    ctx.db,
    sql`SELECT NOT EXISTS (SELECT 1 FROM jobs WHERE state IN ('PENDING', 'RUNNING'))
           AND NOT EXISTS (SELECT 1 FROM notification_deliveries WHERE state = 'pending') AS idle`,
  );
  if (!row?.idle) return;
  try {
    await ctx.registry.markQuiet(epoch, QUIET_MARKER_TTL_SECONDS);
  } catch (error) {
    warnRegistryDown(ctx, error);
  }
}

/**
 * The minute cron's (and the Node backstop timer's) first step: one registry command, and Postgres only when
 * something may be due: no quiet marker (activity since the last pass that found nothing to do), a worker key
 * expired (the reaper's work), or a registry that cannot answer. Returns whether the backstop ran.
 */
export async function runBackstopUnlessQuiet(
  ctx: Context,
): Promise<{ ran: boolean; state: QuietState | null }> {
  const state = await ctx.registry.quietState().catch((error: unknown) => {
    warnRegistryDown(ctx, error);
    return null;
  });
  if (state?.quiet && !state.expiredWorkers) return { ran: false, state };
  await runBackstop(ctx);
  return { ran: true, state };
}

/**
 * Whether the periodic cache sync may skip Postgres: the cluster is quiet (nothing pending or running, so
 * nothing is allocated) and the cache says 0 CPUs allocated. Drift stays bounded: a quiet cluster holds no
 * allocation to drift from, the first activity ends the marker, and the marker lapses after
 * QUIET_MARKER_TTL_SECONDS.
 */
export async function cacheSyncSkippable(ports: Ports): Promise<boolean> {
  const state = await ports.registry.quietState().catch(() => null);
  return state?.quiet === true && state.allocationEmpty;
}

/**
 * Lost-push recovery: wakes the workers that have an assignment not claimed (or not started within the claim
 * redelivery time), a cancel or a signal waiting. A channel agent claims only when woken, so a wake lost on
 * the way (a hub restarting, a dropped socket) is made good here, within a backstop interval.
 */
async function wakeUndelivered(ctx: Context): Promise<void> {
  const redelivery = ctx.config.claimRedeliverySeconds;
  const rows = await query<{ node: string }>(
    ctx.db,
    sql`SELECT DISTINCT node FROM jobs
        WHERE state = 'RUNNING' AND node IS NOT NULL
          AND ((start_time IS NULL AND (claimed_at IS NULL OR claimed_at < now() - make_interval(secs => ${redelivery})))
               OR cancel_requested OR signal_pending IS NOT NULL)`,
  );
  for (const row of rows) ctx.notifier.notify(row.node);
}

/**
 * TIME_LIMIT_* events, and the expiry of settled events older than the log retention. The deliveries are sent
 * by one sender per process, so that one subscription's deliveries go out one after another: ctx.kickNotifications
 * (after requests, and the Node server's timer), the Workers cron (sendDueNotifications). A failure never stops
 * the backstop.
 */
export async function runNotifications(ctx: Context): Promise<void> {
  try {
    await emitTimeLimitEvents(ctx);
    await pruneNotificationEvents(ctx);
  } catch (error) {
    ctx.logger.warn('Notifications failed', {
      error: error instanceof Error ? error.message : String(error),
    });
  }
}

/** How long the retention sweep rests after it reached the end of job_output. */
export const OUTPUT_PRUNE_INTERVAL_MS = 10 * 60_000;

/**
 * Where each configuration's retention sweep is (one configuration per Node server, one per Workers isolate):
 * when it may next run, and the job id it goes on after. Per process on purpose: passes are bounded and
 * idempotent, so several processes sweeping costs little, and nothing needs a new table.
 */
const sweeps = new WeakMap<object, { nextAt: number; after: number }>();

/**
 * Deletes the stored output of jobs that ended more than `logRetentionDays` ago (0: never), one bounded pass
 * per backstop tick (pruneJobOutput: at most OUTPUT_PRUNE_SCAN rows looked at, OUTPUT_PRUNE_BATCH deleted).
 * While a sweep is under way the next tick goes on where it stopped; a sweep that reached the end rests
 * OUTPUT_PRUNE_INTERVAL_MS. A failure never stops the backstop.
 */
export async function pruneExpiredOutput(ctx: Context): Promise<number> {
  const days = ctx.config.logRetentionDays;
  if (!(days > 0)) return 0;
  const sweep = sweeps.get(ctx.config) ?? { nextAt: 0, after: 0 };
  sweeps.set(ctx.config, sweep);
  const now = Date.now();
  if (now < sweep.nextAt) return 0;
  // Claimed before the query, so that an overlapping tick of this process does not run a second pass.
  sweep.nextAt = now + OUTPUT_PRUNE_INTERVAL_MS;
  try {
    const { deleted, next } = await pruneJobOutput(ctx.db, days, { after: sweep.after });
    sweep.after = next ?? 0;
    if (next !== null) sweep.nextAt = 0;
    if (deleted > 0) {
      ctx.logger.info(
        `Job output expired: ${deleted} streams of jobs that ended over ${days} days ago deleted`,
      );
    }
    return deleted;
  } catch (error) {
    ctx.logger.warn('Job output expiry failed', {
      error: error instanceof Error ? error.message : String(error),
    });
    return 0;
  }
}
