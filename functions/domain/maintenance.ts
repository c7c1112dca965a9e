import type { Context } from './context.ts';
import { reapLostWorkers } from './reaper.ts';

/**
 * The periodic backstop (a timer on Node, the minute cron on Workers): reap lost workers, then schedule.
 * Scheduling also runs on every submit and every release; this catches whatever those missed.
 */
export async function runBackstop(ctx: Context): Promise<void> {
  await reapLostWorkers(ctx);
  await ctx.requestSchedule();
}
