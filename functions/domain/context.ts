import type { Ports, RateLimiter } from './ports.ts';
import { ProcessMetrics } from './process-metrics.ts';
import { MemoryRateLimiter } from './rate-limit.ts';
import { createScheduler, type PassResult } from './scheduler.ts';

/** What every domain verb receives: the ports, plus the scheduler of this app instance. */
export interface Context extends Ports {
  rateLimiter: RateLimiter;
  metrics: ProcessMetrics;
  /** Asks for a scheduling pass (coalesced: see createScheduler). */
  requestSchedule(): Promise<PassResult>;
}

export function createContext(ports: Ports): Context {
  const metrics = ports.metrics ?? new ProcessMetrics();
  const scheduler = createScheduler({ ...ports, metrics });
  return {
    ...ports,
    metrics,
    rateLimiter: ports.rateLimiter ?? new MemoryRateLimiter(),
    requestSchedule: () => scheduler.request(),
  };
}
