import type { Context } from './context.ts';
import { recordUtilizationSample } from './dashboard.ts';
import { compactJobCountsIfDue } from './job-counts.ts';
import { pruneJobOutput } from './job-logs.ts';
import { emitTimeLimitEvents, pruneNotificationEvents } from './notifications.ts';
import { endOverdueJobs, endUnstartedJobs, reapLostWorkers } from './reaper.ts';

/**
 * The periodic backstop (a timer on Node, the minute cron on Workers): reap lost workers, end jobs far past
 * their time limit and assignments never started, then schedule, then record the dashboard's utilization sample (at most one a minute),
 * then expire old job output (see pruneExpiredOutput), then compact the jobs-per-state deltas (job-counts.ts), then notifications (TIME_LIMIT_* and due deliveries).
 * Scheduling also runs on every submit and every release; this catches whatever those missed.
 */
export async function runBackstop(ctx: Context): Promise<void> {
  await reapLostWorkers(ctx);
  await endOverdueJobs(ctx);
  await endUnstartedJobs(ctx);
  await ctx.requestSchedule();
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
