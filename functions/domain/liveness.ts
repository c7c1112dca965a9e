import { type SQL, sql } from 'drizzle-orm';
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

/** When each log last got the warning: per logger, so that one app's warning never silences another's. */
const lastWarning = new WeakMap<Ports['logger'], number>();

/** Logs a registry failure at most every 10 s per log: a Redis outage must not flood it. */
export function warnRegistryDown(ports: Pick<Ports, 'logger'>, error: unknown): void {
  const now = Date.now();
  if (now - (lastWarning.get(ports.logger) ?? 0) < 10_000) return;
  lastWarning.set(ports.logger, now);
  ports.logger.warn('Registry unavailable, falling back to Postgres', {
    error: error instanceof Error ? error.message : String(error),
  });
}

/**
 * A worker Postgres counts live, as SQL over the workers table (`alias`: its name in the statement): not down,
 * and heartbeating within the TTL, or on the push channel (its pings refresh the registry only, and the
 * reaper, judging by the registry, marks it down within TTL + one reap of its last ping).
 */
export function liveInPostgres(ttlSeconds: number, alias = 'workers'): SQL {
  const w = sql.raw(alias);
  return sql`(${w}.status <> 'down' AND (${w}.channel OR ${w}.last_heartbeat > now() - make_interval(secs => ${ttlSeconds})))`;
}
