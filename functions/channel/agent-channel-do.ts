/**
 * The Durable Object that holds agents' push-channel WebSockets on Workers (one object per shard of worker
 * ids: functions/channel/workers-channel.ts), with the WebSocket Hibernation API, so an idle cluster's
 * object sleeps while its sockets stay open:
 *
 * - The agent's `ping` is answered `pong` by the runtime (setWebSocketAutoResponse) without waking the
 *   object; the time of the last one (getWebSocketAutoResponseTimestamp) says the agent is alive.
 * - While any socket is open an alarm runs every heartbeat interval: the sockets that pinged lately have
 *   their `worker:<id>` keys refreshed in ONE registry call (channelHeartbeat: Postgres only when the
 *   registry fails); the agents whose key was gone are told `{"type":"register"}`; a socket silent for
 *   longer than the TTL is closed (4408), so its key expires and the reaper acts within TTL + one reap.
 *   With no socket left the alarm is not set again.
 * - POST /notify `{"workers": [...], "jobs": {id: [...]}}` (from the Worker's notifier) sends those agents
 *   `{"type":"wake"}`, with the assignments `jobs` has for them (wakeFrame).
 * - /accept (from the Worker, the upgrade already validated by the route) accepts the socket; a second
 *   socket of the same worker closes the older one (4409 superseded).
 *
 * With the binding CONDUCTOR_COUNT_EVENTS = "1" it counts its billable events (see ChannelStats), kept in
 * its storage so that they survive hibernation; GET /stats returns them.
 */

import type { Assignment } from '../../agent/src/protocol.ts';
import { configureNeonForLocal, connectNeonPool } from '../../db/neon.ts';
import { BARE_WAKE, channelClosed, channelHeartbeat, channelRoundMs, wakeFrame } from '../domain/channel.ts';
import type { RegistryStore } from '../domain/ports.ts';
import { createConsoleLogger } from '../logger.ts';
import { RedisRegistryStore } from '../registry/redis-store.ts';
import { createUpstashScripts } from '../registry/upstash.ts';
import { configFromWorkerEnv, parseWorkerEnv, type WorkerEnv } from '../worker-env.ts';
import { type DurableObjectState, upgradeResponse, type WorkerdWebSocket, workerd } from './workerd-types.ts';
import { type ChannelStats, EMPTY_CHANNEL_STATS } from './workers-channel.ts';

/** What each socket carries through hibernation. */
interface Attachment {
  workerId: string;
  session: string;
  /** ms since the epoch: counts as the first ping. */
  acceptedAt: number;
  /** The opening's generation (openChannelSession): its close ends this opening only. */
  generation: number;
  /** When its key was last refreshed (ms; absent: at the accept): its liveness goes back to Postgres from there. */
  refreshedAt?: number;
}

const REGISTER = JSON.stringify({ type: 'register' });
const OPEN = 1;
const logger = createConsoleLogger('json');

function attachmentOf(ws: WorkerdWebSocket): Attachment | undefined {
  const value = ws.deserializeAttachment() as Partial<Attachment> | null;
  return value?.workerId && value.session ? (value as Attachment) : undefined;
}

/** send/close on a socket that may be closing already: nothing to do about a failure. */
function trySend(ws: WorkerdWebSocket, message: string): void {
  try {
    ws.send(message);
  } catch {}
}
function tryClose(ws: WorkerdWebSocket, code: number, reason: string): void {
  try {
    ws.close(code, reason);
  } catch {}
}

export class AgentChannel {
  private readonly state: DurableObjectState;
  private readonly bindings: Record<string, unknown>;
  private readonly counting: boolean;
  private env?: WorkerEnv;
  private registry?: RegistryStore;
  private stats?: Promise<ChannelStats>;
  /** This instance was constructed (a wake-up) and no counted event has claimed it yet. */
  private fresh = true;

  constructor(state: DurableObjectState, bindings: Record<string, unknown>) {
    this.state = state;
    this.bindings = bindings;
    this.counting = bindings.CONDUCTOR_COUNT_EVENTS === '1';
    state.setWebSocketAutoResponse(new workerd.WebSocketRequestResponsePair('ping', 'pong'));
  }

  async fetch(request: Request): Promise<Response> {
    const url = new URL(request.url);
    if (url.pathname === '/stats') return Response.json(await this.readStats());
    return this.counted('requests', async () => {
      if (url.pathname === '/notify' && request.method === 'POST') {
        const { workers, jobs } = (await request.json()) as { workers?: unknown; jobs?: unknown };
        if (!Array.isArray(workers)) return new Response('workers: a list of ids', { status: 400 });
        const carried = (jobs && typeof jobs === 'object' ? jobs : {}) as Record<string, unknown>;
        for (const id of workers) {
          if (typeof id !== 'string') continue;
          const assignments = Object.hasOwn(carried, id) ? carried[id] : undefined;
          const frame = Array.isArray(assignments) ? wakeFrame(assignments as Assignment[]) : BARE_WAKE;
          for (const ws of this.state.getWebSockets(id)) trySend(ws, frame);
        }
        return new Response(null, { status: 204 });
      }
      if (url.pathname === '/accept') return this.accept(request, url);
      return new Response('not found', { status: 404 });
    });
  }

  async webSocketMessage(ws: WorkerdWebSocket, message: string | ArrayBuffer): Promise<void> {
    await this.counted('messages', async () => {
      // Pings are answered by the runtime; one arriving here (e.g. as a binary frame) is answered in kind.
      if (message === 'ping') trySend(ws, 'pong');
    });
  }

  async webSocketClose(ws: WorkerdWebSocket): Promise<void> {
    // The runtime answers the close (compatibility date >= 2026-04-07: web_socket_auto_reply_to_close).
    await this.counted('closes', () => this.closed([ws]));
  }

  async webSocketError(ws: WorkerdWebSocket): Promise<void> {
    await this.counted('closes', () => this.closed([ws]));
  }

  /**
   * Sockets that closed (the agent went back to HTTP, died, or was closed for silence): their sessions'
   * liveness goes back to Postgres from their last ping (channelClosed), one statement each; a newer socket of
   * the same session (a reconnect) is left alone by its generation. A change, so Postgres is worth waking.
   */
  private async closed(sockets: WorkerdWebSocket[]): Promise<void> {
    const now = Date.now();
    const ended = sockets.flatMap((ws) => {
      const attachment = attachmentOf(ws);
      if (!attachment) return [];
      return [{ attachment, silentMs: now - (attachment.refreshedAt ?? attachment.acceptedAt) }];
    });
    if (ended.length === 0) return;
    const neon = connectNeonPool(this.config().DATABASE_URL, { max: 1 });
    try {
      for (const { attachment, silentMs } of ended) {
        await channelClosed(
          neon,
          {
            worker_id: attachment.workerId,
            session: attachment.session,
            generation: attachment.generation ?? 0,
          },
          silentMs,
        );
      }
    } catch (error) {
      logger.error('Channel close not recorded', {
        error: error instanceof Error ? error.message : String(error),
      });
    } finally {
      await neon.close();
    }
  }

  async alarm(): Promise<void> {
    await this.counted('alarms', () => this.heartbeatRound());
  }

  private config(): WorkerEnv {
    if (!this.env) {
      this.env = parseWorkerEnv(this.bindings);
      // The object may run in another isolate than the Worker that called it: point Neon here too.
      if (this.env.NEON_WS_PROXY || this.env.NEON_FETCH_ENDPOINT) {
        configureNeonForLocal({
          wsProxy: this.env.NEON_WS_PROXY,
          fetchEndpoint: this.env.NEON_FETCH_ENDPOINT,
        });
      }
    }
    return this.env;
  }

  private async accept(request: Request, url: URL): Promise<Response> {
    if (request.headers.get('upgrade')?.toLowerCase() !== 'websocket') {
      return new Response('expected Upgrade: websocket', { status: 426 });
    }
    const workerId = url.searchParams.get('worker_id');
    const session = url.searchParams.get('session');
    if (!workerId || !session) return new Response('worker_id and session', { status: 400 });
    for (const older of this.state.getWebSockets(workerId))
      tryClose(older, 4409, 'superseded by a newer connection');
    const pair = new workerd.WebSocketPair();
    const [client, server] = [pair[0], pair[1]];
    this.state.acceptWebSocket(server, [workerId]);
    const generation = Number(url.searchParams.get('generation') ?? 0);
    server.serializeAttachment({
      workerId,
      session,
      acceptedAt: Date.now(),
      generation,
    } satisfies Attachment);
    if ((await this.state.storage.getAlarm()) === null) {
      const env = this.config();
      await this.state.storage.setAlarm(
        Date.now() + channelRoundMs(env.CONDUCTOR_HEARTBEAT_INTERVAL, env.CONDUCTOR_WORKER_TTL),
      );
    }
    return upgradeResponse(client);
  }

  /**
   * One heartbeat interval: close the silent sockets, refresh the live ones' keys in one call, ask the
   * agents whose key was gone to register again, and set the next alarm while any socket is open.
   */
  private async heartbeatRound(): Promise<void> {
    const env = this.config();
    const now = Date.now();
    const ttlMs = env.CONDUCTOR_WORKER_TTL * 1000;
    const intervalMs = env.CONDUCTOR_HEARTBEAT_INTERVAL * 1000;
    // A key is refreshed on behalf of a recent ping (as an HTTP heartbeat would be): an agent pings every
    // interval, so one missed ping is tolerated; a socket silent longer keeps its key only until it expires.
    const recentMs = Math.min(ttlMs, 2 * intervalMs);
    const live: { worker_id: string; session: string }[] = [];
    const liveSockets: { ws: WorkerdWebSocket; attachment: Attachment }[] = [];
    const silent: WorkerdWebSocket[] = [];
    let open = 0;
    for (const ws of this.state.getWebSockets()) {
      if (ws.readyState !== OPEN) continue;
      const attachment = attachmentOf(ws);
      if (!attachment) {
        tryClose(ws, 1011, 'no attachment');
        continue;
      }
      const pinged = this.state.getWebSocketAutoResponseTimestamp(ws)?.getTime() ?? 0;
      const silentMs = now - Math.max(attachment.acceptedAt, pinged);
      if (silentMs > ttlMs) {
        tryClose(ws, 4408, 'no ping within the worker TTL');
        silent.push(ws);
        continue;
      }
      open++;
      if (silentMs <= recentMs) {
        live.push({ worker_id: attachment.workerId, session: attachment.session });
        liveSockets.push({ ws, attachment });
      }
    }
    // The next round first: a failure below must not stop the heartbeats.
    if (open > 0) {
      await this.state.storage.setAlarm(
        now + channelRoundMs(env.CONDUCTOR_HEARTBEAT_INTERVAL, env.CONDUCTOR_WORKER_TTL),
      );
    }
    if (silent.length > 0) await this.closed(silent);
    if (live.length === 0) return;
    // A Pool opens no connection until its first query: Postgres is reached only by the fallback.
    const neon = connectNeonPool(env.DATABASE_URL, { max: 1 });
    try {
      this.registry ??= new RedisRegistryStore(
        createUpstashScripts({ url: env.UPSTASH_REDIS_REST_URL, token: env.UPSTASH_REDIS_REST_TOKEN }),
      );
      const { reregister } = await channelHeartbeat(
        { db: neon.db, registry: this.registry, logger, config: configFromWorkerEnv(env) },
        live,
      );
      const gone = new Set(reregister);
      for (const { ws, attachment } of liveSockets) {
        if (!gone.has(attachment.workerId)) ws.serializeAttachment({ ...attachment, refreshedAt: now });
      }
      for (const id of reregister) for (const ws of this.state.getWebSockets(id)) trySend(ws, REGISTER);
    } catch (error) {
      logger.error('Channel heartbeat failed', {
        workers: live.length,
        error: error instanceof Error ? error.message : String(error),
      });
    } finally {
      await neon.close();
    }
  }

  private readStats(): Promise<ChannelStats> {
    this.stats ??= this.state.storage
      .get<ChannelStats>('stats')
      .then((stored) => ({ ...EMPTY_CHANNEL_STATS, ...stored }));
    return this.stats;
  }

  private async counted<T>(kind: keyof ChannelStats, run: () => Promise<T>): Promise<T> {
    if (!this.counting) return run();
    const started = Date.now();
    try {
      return await run();
    } finally {
      const stats = await this.readStats();
      stats[kind]++;
      stats.activeMs += Date.now() - started;
      if (this.fresh) {
        this.fresh = false;
        stats.wakeups++;
      }
      await this.state.storage.put('stats', stats);
    }
  }
}
