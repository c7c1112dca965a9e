import { sql } from 'drizzle-orm';
import { ANONYMOUS, type Principal } from './auth.ts';
import type { Context } from './context.ts';
import { warnRegistryDown } from './liveness.ts';
import type { Ports } from './ports.ts';
import { pgArray, query, queryOne } from './sql.ts';
import { boundTo, registryTime, sessionError } from './workers.ts';

/**
 * The push channel (docs/agents.md, "The push channel"): an agent holds one WebSocket to the control plane,
 * which pushes `{"type":"wake"}` when it has work, a cancel, a signal or a drain for it, and answers the
 * agent's `ping` text frames with `pong`. A connected agent's heartbeat is its pings: its hub (the Node
 * server process, or the Durable Object on Workers) refreshes the registry keys of all its connected workers
 * in one command per heartbeat interval, and Postgres is written only when something changes.
 */

export interface ChannelWorker {
  worker_id: string;
  session: string;
}

/**
 * 404/409/403 unless `session` is the worker's current one and the worker is the caller's (as /heartbeat).
 * Marks the session as on the channel (workers.channel): from now on the registry judges its liveness.
 */
export async function assertChannelSession(
  ctx: Context,
  input: ChannelWorker,
  caller: Principal = ANONYMOUS,
): Promise<void> {
  const row = await queryOne<{ ok: boolean }>(
    ctx.db,
    sql`UPDATE workers SET channel = true
        WHERE id = ${input.worker_id} AND session = ${input.session} AND status <> 'down' AND ${boundTo(caller)}
        RETURNING true AS ok`,
  );
  if (!row) throw await sessionError(ctx, input, caller);
}

/**
 * One heartbeat round for every worker connected to a hub: one registry command, whatever their number.
 * When the registry cannot answer, the heartbeats go to Postgres instead (one statement), as an HTTP
 * heartbeat's would: liveness is then judged from there. Returns the workers that must register again
 * (their key is gone: expired, or a flushed Redis; or, on the Postgres path, their session is no longer current).
 */
export async function channelHeartbeat(
  ports: Pick<Ports, 'db' | 'registry' | 'logger' | 'config'>,
  workers: readonly ChannelWorker[],
): Promise<{ reregister: string[] }> {
  if (workers.length === 0) return { reregister: [] };
  const now = registryTime(new Date());
  try {
    const gone = await ports.registry.touchWorkers(
      workers.map((w) => ({ id: w.worker_id, lastHeartbeat: now })),
      ports.config.workerTtlSeconds,
    );
    return { reregister: gone };
  } catch (error) {
    warnRegistryDown(ports, error);
  }
  const fresh = await query<{ id: string }>(
    ports.db,
    sql`UPDATE workers SET last_heartbeat = now()
        FROM unnest(${pgArray(workers.map((w) => w.worker_id))}::text[], ${pgArray(workers.map((w) => w.session))}::text[])
          AS c(id, session)
        WHERE workers.id = c.id AND workers.session = c.session AND workers.status <> 'down'
        RETURNING workers.id`,
  );
  const kept = new Set(fresh.map((r) => r.id));
  return { reregister: workers.map((w) => w.worker_id).filter((id) => !kept.has(id)) };
}
