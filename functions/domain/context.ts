import { noteActivity } from './maintenance.ts';
import { sendDueNotifications } from './notifications.ts';
import type { Ports, RateLimiter } from './ports.ts';
import { ProcessMetrics } from './process-metrics.ts';
import { MemoryRateLimiter } from './rate-limit.ts';
import { createScheduler, type PassResult } from './scheduler.ts';

/** What every domain verb receives: the ports, plus the scheduler of this app instance. */
export interface Context extends Ports {
  rateLimiter: RateLimiter;
  metrics: ProcessMetrics;
  /**
   * Asks for a scheduling pass (coalesced: see createScheduler), after a change that may have given it work:
   * it also ends the idle marker (maintenance.ts noteActivity).
   */
  requestSchedule(): Promise<PassResult>;
  /** A scheduling pass the backstop asks for itself: no activity to note. */
  backstopSchedule(): Promise<PassResult>;
  /**
   * Sends the due notification deliveries in the background (ports.defer), right after a change committed.
   * One sender at a time per context: a kick while one runs makes it look once more when it is done.
   */
  kickNotifications(): void;
}

export function createContext(ports: Ports): Context {
  const metrics = ports.metrics ?? new ProcessMetrics();
  const scheduler = createScheduler({ ...ports, metrics });
  let sending = false;
  let again = false;
  const ctx: Context = {
    ...ports,
    metrics,
    rateLimiter: ports.rateLimiter ?? new MemoryRateLimiter(),
    requestSchedule: () => {
      noteActivity(ports);
      return scheduler.request();
    },
    backstopSchedule: () => scheduler.request(),
    kickNotifications() {
      if (sending) {
        again = true;
        return;
      }
      sending = true;
      ports.defer(
        (async () => {
          try {
            do {
              again = false;
              await sendDueNotifications(ctx);
            } while (again);
          } finally {
            sending = false;
          }
        })(),
      );
    },
  };
  return ctx;
}
