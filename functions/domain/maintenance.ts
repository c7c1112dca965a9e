import type { Context } from './context.ts';
import { recordUtilizationSample } from './dashboard.ts';
import { endOverdueJobs, reapLostWorkers } from './reaper.ts';

/**
 * The periodic backstop (a timer on Node, the minute cron on Workers): reap lost workers, end jobs far past
 * their time limit, then schedule, then record the dashboard's utilization sample (at most one a minute).
 * Scheduling also runs on every submit and every release; this catches whatever those missed.
 */
export async function runBackstop(ctx: Context): Promise<void> {
  await reapLostWorkers(ctx);
  await endOverdueJobs(ctx);
  await ctx.requestSchedule();
  try {
    await recordUtilizationSample(ctx);
  } catch (error) {
    // The chart is a nicety: a missing sample (say, a database without migration 0002) never stops the backstop.
    ctx.logger.warn('Utilization sample failed', {
      error: error instanceof Error ? error.message : String(error),
    });
  }
}
