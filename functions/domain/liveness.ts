import type { Ports } from './ports.ts';

/**
 * Ids of live workers from the registry, or null when the registry cannot answer: callers then judge
 * liveness from Postgres's durable last_heartbeat instead.
 */
export async function liveWorkerIds(ports: Ports): Promise<string[] | null> {
  try {
    return await ports.registry.liveWorkerIds();
  } catch (error) {
    warnRegistryDown(ports, error);
    return null;
  }
}

let lastWarning = 0;

/** Logs a registry failure at most every 10 s: a Redis outage must not flood the log. */
export function warnRegistryDown(ports: Ports, error: unknown): void {
  const now = Date.now();
  if (now - lastWarning < 10_000) return;
  lastWarning = now;
  ports.logger.warn('Registry unavailable, falling back to Postgres', {
    error: error instanceof Error ? error.message : String(error),
  });
}
