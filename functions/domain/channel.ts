import { sql } from 'drizzle-orm';
import type { Assignment, ChannelMessage } from '../../agent/src/protocol.ts';
import { ANONYMOUS, type Principal } from './auth.ts';
import type { Context } from './context.ts';
import { warnRegistryDown } from './liveness.ts';
import type { Ports } from './ports.ts';
import { pgArray, query, queryOne } from './sql.ts';
import { boundTo, registryTime, sessionError } from './workers.ts';

/**
 * The push channel (docs/agents.md, "The push channel"): an agent holds one WebSocket to the control plane,
 * which pushes `{"type":"wake"}` when it has work, a cancel, a signal or a drain for it (with the assignments
 * themselves when a scheduling pass placed them: wakeFrame), and answers the agent's `ping` text frames with
 * `pong`. A connected agent's heartbeat is its pings: its hub (the Node
 * server process, or the Durable Object on Workers) refreshes the registry keys of all its connected workers
 * in one command per heartbeat interval, and Postgres is written only when something changes.
 */

/** The wake that only says "claim". */
export const BARE_WAKE = JSON.stringify({ type: 'wake' } satisfies ChannelMessage);

/**
 * Most bytes of JSON a wake carries assignments in: a larger one goes bare and the agent claims them (a
 * frame stays well inside what hubs and proxies pass, and one huge script does not hold up the others).
 */
export const WAKE_JOBS_MAX_BYTES = 64 * 1024;

/** The wake frame for a worker: its just-placed assignments when there are some and they fit, else bare. */
export function wakeFrame(jobs?: readonly Assignment[]): string {
  if (!jobs || jobs.length === 0) return BARE_WAKE;
  const frame = JSON.stringify({ type: 'wake', jobs: [...jobs] } satisfies ChannelMessage);
  // Three UTF-8 bytes at most per UTF-16 unit: only a frame that may be too large is measured.
  if (frame.length * 3 <= WAKE_JOBS_MAX_BYTES) return frame;
  return new TextEncoder().encode(frame).length <= WAKE_JOBS_MAX_BYTES ? frame : BARE_WAKE;
}

export interface ChannelWorker {
  worker_id: string;
  session: string;
}

/**
 * How often a hub refreshes its connected workers' keys: every heartbeat interval, and at least twice a TTL
 * (a control plane whose TTL is shorter than two heartbeat intervals relied on agents heartbeating faster
 * than it announced; the hub's round must not let the keys lapse between rounds).
 */
export function channelRoundMs(heartbeatIntervalSeconds: number, workerTtlSeconds: number): number {
  return Math.max(250, Math.min(heartbeatIntervalSeconds, workerTtlSeconds / 2) * 1000);
}

/**
 * The session's channel opens, if `session` is the worker's current one and the worker is the caller's (else
 * 404/409/403, as /heartbeat answers): from now on its pings are its heartbeats and the registry judges its
 * liveness (workers.channel, until the socket closes or it registers again). Opening it is contact, as a
 * heartbeat is (the agent may come back after its key expired: a restarted control plane). Returns this
 * opening's generation, which its close names.
 */
export async function openChannelSession(
  ctx: Context,
  input: ChannelWorker,
  caller: Principal = ANONYMOUS,
): Promise<number> {
  const row = await queryOne<{ generation: number }>(
    ctx.db,
    sql`UPDATE workers SET channel = true, channel_generation = channel_generation + 1, last_heartbeat = now()
        WHERE id = ${input.worker_id} AND session = ${input.session} AND status <> 'down' AND ${boundTo(caller)}
        RETURNING channel_generation AS generation`,
  );
  if (!row) throw await sessionError(ctx, input, caller);
  return Number(row.generation);
}

/**
 * A session's socket closed (the agent went back to HTTP, or died): unless a newer socket of it opened since
 * (`generation`), its liveness is Postgres's again, from its key's last refresh (`silentMs` ago on the hub's
 * clock, applied to Postgres's): a dead agent then leaves the live counts when its key expires, and the
 * reaper judges it as it judges an agent that stopped heartbeating.
 */
export async function channelClosed(
  ports: Pick<Ports, 'db'>,
  worker: ChannelWorker & { generation: number },
  silentMs: number,
): Promise<void> {
  await query(
    ports.db,
    sql`UPDATE workers SET channel = false,
          last_heartbeat = greatest(last_heartbeat, now() - make_interval(secs => ${Math.max(0, silentMs) / 1000}))
        WHERE id = ${worker.worker_id} AND session = ${worker.session} AND channel
          AND channel_generation = ${worker.generation}`,
  );
}

/**
 * One heartbeat round for every worker connected to a hub: one registry command, whatever their number.
 * When the registry cannot answer, the heartbeats go to Postgres instead (one statement), as an HTTP
 * heartbeat's would: liveness is then judged from there. Returns the workers that must register again
 * (their key is gone: expired, or a flushed Redis; or, on the Postgres path, their session is no longer current).
 */
export async function channelHeartbeat(
  ports: Pick<Ports, 'db' | 'registry' | 'logger' | 'config' | 'metrics'>,
  workers: readonly ChannelWorker[],
): Promise<{ reregister: string[] }> {
  if (workers.length === 0) return { reregister: [] };
  const now = registryTime(new Date());
  try {
    const gone = await ports.registry.touchWorkers(
      workers.map((w) => ({ id: w.worker_id, lastHeartbeat: now })),
      ports.config.workerTtlSeconds,
    );
    if (ports.metrics) ports.metrics.heartbeats += workers.length - gone.length;
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
  if (ports.metrics) ports.metrics.heartbeats += kept.size;
  return { reregister: workers.map((w) => w.worker_id).filter((id) => !kept.has(id)) };
}
