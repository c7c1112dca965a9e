import type { Context } from './context.ts';
import { endOverdueJobs, reapLostWorkers } from './reaper.ts';

/**
 * The periodic backstop (a timer on Node, the minute cron on Workers): reap lost workers, end jobs far past
 * their time limit, then schedule.
 * Scheduling also runs on every submit and every release; this catches whatever those missed.
 */
export async function runBackstop(ctx: Context): Promise<void> {
  await reapLostWorkers(ctx);
  await endOverdueJobs(ctx);
  await ctx.requestSchedule();
}
