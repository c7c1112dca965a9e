/**
 * The push channel on the Node server (docs/agents.md, "The push channel"): each agent's WebSocket lands in
 * this process's hub, which answers `ping` with `pong`, pushes `{"type":"wake"}` when the scheduler (or a
 * cancel, signal or drain) notifies the worker (with the assignments the scheduler placed: wakeFrame), and refreshes the registry keys of every connected worker in
 * one command per heartbeat interval (channelHeartbeat). With several server processes behind a load
 * balancer a wake crosses to the process holding the socket over a `WakeBus` (Redis pub/sub).
 */
import { randomBytes } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { type WebSocket, WebSocketServer } from 'ws';
import {
  BARE_WAKE,
  type ChannelWorker,
  channelClosed,
  channelHeartbeat,
  channelRoundMs,
  wakeFrame,
} from '../domain/channel.ts';
import type { ChannelPort, Ports, WorkNotifier } from '../domain/ports.ts';

/**
 * Wake-ups between server processes: each process publishes the ids it cannot reach, with the wake frame
 * when it carries assignments, and hears the others'.
 */
export interface WakeBus {
  publish(workerId: string, frame?: string): void;
  /** Calls `onWake` for every wake another process published, from when the bus can; returns the unsubscribe. */
  subscribe(onWake: (workerId: string, frame?: string) => void): () => Promise<void>;
}

/** Close codes (RFC 6455 private range 4000-4999). */
export const CLOSE_SUPERSEDED = 4409;
export const CLOSE_SILENT = 4408;
const CLOSE_RESTART = 1012;

interface Connection extends ChannelWorker {
  generation: number;
  socket: WebSocket;
  /** The last ping (or the accept), ms. */
  seenAt: number;
  /** When its key was last refreshed (or the accept), ms: its liveness goes back to Postgres from there. */
  refreshedAt: number;
}

type Hub = Pick<Ports, 'db' | 'registry' | 'logger' | 'config' | 'defer' | 'metrics'>;

export class ChannelHub {
  readonly port: ChannelPort;
  private readonly connections = new Map<string, Connection>();
  private readonly server = new WebSocketServer({ noServer: true, maxPayload: 64 * 1024 });
  /** Marks the route's answer "accepted" for this process's upgrade handler; a client cannot forge it. */
  private readonly acceptMarker = randomBytes(16).toString('hex');
  private timer: NodeJS.Timeout | undefined;
  private beating = false;

  constructor(
    private readonly ports: Hub,
    private readonly bus?: WakeBus,
  ) {
    this.port = {
      accept: async (request, worker) =>
        request.headers.get('x-conductor-upgrade') !== this.acceptMarker
          ? Response.json(
              {
                error: {
                  code: 'upgrade_required',
                  message:
                    'The request reached the server without its WebSocket upgrade (a proxy dropped it?)',
                },
              },
              { status: 426 },
            )
          : new Response(null, {
              status: 200,
              headers: {
                'x-conductor-channel': this.acceptMarker,
                'x-conductor-worker': worker.workerId,
                'x-conductor-session': worker.session,
                'x-conductor-generation': String(worker.generation),
              },
            }),
    };
  }

  /** The notifier the context uses: wakes local long-polls, this hub's socket, and the other processes. */
  wrap(local: WorkNotifier): WorkNotifier {
    return {
      notify: (workerId, jobs) => {
        local.notify(workerId);
        const frame = wakeFrame(jobs);
        if (!this.push(workerId, frame)) this.bus?.publish(workerId, frame === BARE_WAKE ? undefined : frame);
      },
      wait: local.wait,
    };
  }

  /**
   * Starts the heartbeat round and listens on the bus; `local`: the notifier long-polls of this process wait
   * on. The bus subscription is not waited for: with Redis down it comes when Redis does, and the server must
   * serve meanwhile.
   */
  start(local: WorkNotifier): () => Promise<void> {
    const { heartbeatIntervalSeconds, workerTtlSeconds } = this.ports.config;
    const intervalMs = channelRoundMs(heartbeatIntervalSeconds, workerTtlSeconds);
    this.timer = setInterval(() => void this.heartbeatRound(), intervalMs);
    this.timer.unref();
    const unsubscribe = this.bus?.subscribe((workerId, frame) => {
      local.notify(workerId);
      this.push(workerId, frame);
    });
    return async () => {
      clearInterval(this.timer);
      await unsubscribe?.();
      const connections = [...this.connections.values()];
      this.connections.clear(); // a restart is no loss: the agents reconnect, to this server or another
      for (const connection of connections) connection.socket.close(CLOSE_RESTART, 'server restarting');
      this.server.close();
    };
  }

  /** Connected here: the ids (for tests and the stats line). */
  connected(): string[] {
    return [...this.connections.keys()];
  }

  /**
   * The HTTP server's `upgrade` event: the app (its auth and the channel route's session check) decides; an
   * accepted request becomes a socket in the hub, any other answer is written back as the HTTP response.
   */
  async handleUpgrade(
    request: IncomingMessage,
    socket: Duplex,
    head: Buffer,
    fetch: (request: Request) => Response | Promise<Response>,
  ): Promise<void> {
    socket.on('error', () => socket.destroy());
    let answer: Response;
    try {
      const asked = toFetchRequest(request);
      asked.headers.set('x-conductor-upgrade', this.acceptMarker);
      answer = await fetch(asked);
    } catch {
      answer = Response.json(
        { error: { code: 'internal', message: 'The channel could not be opened' } },
        { status: 500 },
      );
    }
    const workerId = answer.headers.get('x-conductor-worker');
    const session = answer.headers.get('x-conductor-session');
    if (answer.headers.get('x-conductor-channel') !== this.acceptMarker || !workerId || !session) {
      await writeHttpAnswer(socket, answer);
      return;
    }
    const generation = Number(answer.headers.get('x-conductor-generation'));
    this.server.handleUpgrade(request, socket, head, (ws) =>
      this.add({ worker_id: workerId, session, generation }, ws),
    );
  }

  private add(worker: ChannelWorker & { generation: number }, socket: WebSocket): void {
    const previous = this.connections.get(worker.worker_id);
    if (previous) previous.socket.close(CLOSE_SUPERSEDED, 'superseded by a newer connection');
    const connection: Connection = { ...worker, socket, seenAt: Date.now(), refreshedAt: Date.now() };
    this.connections.set(worker.worker_id, connection);
    socket.on('message', (data, isBinary) => {
      if (!isBinary && data.toString() === 'ping') {
        connection.seenAt = Date.now();
        socket.send('pong');
        if (this.ports.metrics) this.ports.metrics.heartbeats++;
      }
    });
    const drop = () => {
      if (this.connections.get(worker.worker_id) !== connection) return; // superseded, or the hub stopping
      this.connections.delete(worker.worker_id);
      // Back to HTTP heartbeats (or gone): liveness is Postgres's again, from the last ping.
      this.ports.defer(channelClosed(this.ports, worker, Date.now() - connection.refreshedAt));
    };
    socket.on('close', drop);
    socket.on('error', drop);
  }

  /** Sends a wake to the worker's socket here; false when it is not connected to this process. */
  private push(workerId: string, frame = BARE_WAKE): boolean {
    const connection = this.connections.get(workerId);
    if (!connection || connection.socket.readyState !== connection.socket.OPEN) return false;
    connection.socket.send(frame);
    return true;
  }

  /**
   * Every heartbeat interval: the connected workers that pinged within the TTL get their keys refreshed in one
   * command; the silent ones are closed (their keys then expire and the reaper acts). Skips a round while the
   * last one runs.
   */
  async heartbeatRound(): Promise<void> {
    if (this.beating) return;
    this.beating = true;
    try {
      const ttlMs = this.ports.config.workerTtlSeconds * 1000;
      const now = Date.now();
      const fresh: Connection[] = [];
      for (const connection of this.connections.values()) {
        if (now - connection.seenAt > ttlMs) {
          this.connections.delete(connection.worker_id);
          connection.socket.close(CLOSE_SILENT, 'no ping within the worker TTL');
          this.ports.defer(channelClosed(this.ports, connection, now - connection.refreshedAt));
        } else {
          fresh.push(connection);
        }
      }
      const { db, registry, logger, config } = this.ports;
      const { reregister } = await channelHeartbeat(
        { db, registry, logger, config }, // pings count as heartbeats here, one by one
        fresh.map(({ worker_id, session }) => ({ worker_id, session })),
      );
      const gone = new Set(reregister);
      for (const connection of fresh) if (!gone.has(connection.worker_id)) connection.refreshedAt = now;
      for (const id of reregister) {
        this.connections.get(id)?.socket.send(JSON.stringify({ type: 'register' }));
      }
    } catch (error) {
      this.ports.logger.warn('Channel heartbeat failed', {
        error: error instanceof Error ? error.message : String(error),
      });
    } finally {
      this.beating = false;
    }
  }
}

function toFetchRequest(request: IncomingMessage): Request {
  const headers = new Headers();
  for (const [name, value] of Object.entries(request.headers)) {
    if (value === undefined || name === 'x-conductor-upgrade') continue;
    for (const v of Array.isArray(value) ? value : [value]) headers.append(name, v);
  }
  const host = request.headers.host ?? '127.0.0.1';
  return new Request(`http://${host}${request.url ?? '/'}`, { method: request.method ?? 'GET', headers });
}

async function writeHttpAnswer(socket: Duplex, answer: Response): Promise<void> {
  const body = Buffer.from(await answer.arrayBuffer());
  const lines = [`HTTP/1.1 ${answer.status} ${answer.statusText || 'Refused'}`];
  answer.headers.forEach((value, name) => {
    if (name !== 'content-length' && name !== 'connection') lines.push(`${name}: ${value}`);
  });
  lines.push(`content-length: ${body.length}`, 'connection: close', '', '');
  socket.end(Buffer.concat([Buffer.from(lines.join('\r\n')), body]));
}
