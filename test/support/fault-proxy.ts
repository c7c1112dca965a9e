/**
 * A fault injector between agents and a real control plane (in the spirit of toxiproxy, at the HTTP level):
 * every request is forwarded unchanged to the real server and the real answer goes back. It can reset
 * connections (`cut()`, `drop()`, `loseAnswers()`), delay requests (`hold()`), answer a few requests with an
 * error status itself, as a load balancer without a healthy backend does (`refuse()`), and record what went
 * through, as a packet capture would, so that tests can check what an agent sent. With `upgrades` it passes
 * WebSocket upgrades (the agents' push channel) through as byte streams, which it can mute (what the server
 * sends is lost on the way) or drop; without, an upgrade reaches the server as a plain request, as through a
 * proxy that strips it.
 */
import {
  createServer,
  type IncomingHttpHeaders,
  type IncomingMessage,
  request,
  type Server,
  type ServerResponse,
} from 'node:http';
import { type AddressInfo, connect, type Socket } from 'node:net';

export interface ProxiedRequest {
  method: string;
  path: string;
  headers: IncomingHttpHeaders;
  /** The request body, parsed when it is JSON. */
  body: unknown;
  /** When the request arrived. */
  at: number;
  /** The real server's answer; undefined while in flight, or when no answer came. */
  status?: number;
  response?: unknown;
  answeredAt?: number;
  /**
   * Why no answer reached the client: reset by `cut()` or `drop()`, the server's answer lost on purpose
   * (`loseAnswers()`: status and response then hold what the server said), or the server unreachable.
   */
  fault?: 'cut' | 'dropped' | 'answer_lost' | 'upstream_unreachable' | 'client_gone' | 'refused';
}

type Pattern = RegExp | string;
const matches = (pattern: Pattern, path: string) =>
  typeof pattern === 'string' ? path.includes(pattern) : pattern.test(path);

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'content-length', 'upgrade']);

export class FaultProxy {
  readonly requests: ProxiedRequest[] = [];
  url = '';
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  private isCut = false;
  private readonly drops: Pattern[] = [];
  private readonly losses: Pattern[] = [];
  /** Requests forwarded and not answered yet, with the socket they came on. */
  private readonly inFlight = new Map<ProxiedRequest, Socket>();
  private readonly holds: { pattern: Pattern; waiters: (() => void)[] }[] = [];
  private readonly refusals: { pattern: Pattern; status: number; left: number }[] = [];
  /** Upgraded connections passed through; `muted`: the server's bytes are swallowed. */
  private readonly tunnels = new Set<{ client: Socket; upstream: Socket; muted: boolean }>();

  /** `target` is the real server's base URL, e.g. `http://127.0.0.1:41234`. */
  constructor(private readonly target: string) {}

  static async start(target: string, options: { upgrades?: boolean } = {}): Promise<FaultProxy> {
    const proxy = new FaultProxy(target);
    await proxy.listen(options.upgrades === true);
    return proxy;
  }

  private async listen(upgrades: boolean): Promise<void> {
    const server = createServer((req, res) => {
      // A request cut off mid-body (cut(), or the client gave up) just ends its connection.
      this.handle(req, res).catch(() => req.socket.destroy());
    });
    if (upgrades) server.on('upgrade', (req, socket, head) => this.tunnel(req, socket as Socket, head));
    server.on('connection', (socket) => {
      if (this.isCut) {
        socket.destroy();
        return;
      }
      this.sockets.add(socket);
      socket.once('close', () => this.sockets.delete(socket));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    this.server = server;
    this.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  }

  /** A network partition: resets every open connection, and every new one until `restore()`. */
  cut(): void {
    this.isCut = true;
    for (const socket of this.sockets) socket.destroy();
    this.sockets.clear();
  }

  restore(): void {
    this.isCut = false;
  }

  /** Resets the connection of every request whose path matches, in flight or to come, until `undrop()`. */
  drop(pattern: Pattern): void {
    this.drops.push(pattern);
    for (const [record, socket] of this.inFlight) {
      if (!matches(pattern, record.path)) continue;
      record.fault = 'dropped';
      socket.destroy();
    }
  }

  /**
   * Lets requests whose path matches reach the server, then resets the connection instead of passing the
   * answer on (a response lost on the way back), until `undrop()`.
   */
  loseAnswers(pattern: Pattern): void {
    this.losses.push(pattern);
  }

  /** Ends `drop()`, `loseAnswers()` and `refuse()`. */
  undrop(): void {
    this.drops.length = 0;
    this.losses.length = 0;
    this.refusals.length = 0;
  }

  /**
   * Answers the next `times` requests whose path matches with `status` and an empty body, without
   * forwarding them (the server never sees them).
   */
  refuse(pattern: Pattern, times = 1, status = 503): void {
    this.refusals.push({ pattern, status, left: times });
  }

  /** Holds requests whose path matches (they reach the server only after `release()`). */
  hold(pattern: Pattern): void {
    this.holds.push({ pattern, waiters: [] });
  }

  release(): void {
    for (const h of this.holds.splice(0)) for (const wake of h.waiters) wake();
  }

  /** From now on, what the server sends on the upgraded connections open now is lost on the way. */
  muteChannels(): void {
    for (const tunnel of this.tunnels) tunnel.muted = true;
  }

  /** Resets every upgraded connection, both sides (a network path that died). */
  dropChannels(): void {
    for (const { client, upstream } of this.tunnels) {
      client.destroy();
      upstream.destroy();
    }
    this.tunnels.clear();
  }

  /** Requests whose path matches, in arrival order. */
  calls(pattern: Pattern): ProxiedRequest[] {
    return this.requests.filter((r) => matches(pattern, r.path));
  }

  async close(): Promise<void> {
    this.release();
    this.cut();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }

  /** An upgrade: recorded, its request head written to the server as it came, then bytes both ways. */
  private tunnel(req: IncomingMessage, client: Socket, head: Buffer): void {
    const record: ProxiedRequest = {
      method: req.method ?? 'GET',
      path: req.url ?? '/',
      headers: req.headers,
      body: undefined,
      at: Date.now(),
    };
    this.requests.push(record);
    if (this.isCut) {
      record.fault = 'cut';
      client.destroy();
      return;
    }
    const target = new URL(this.target);
    const upstream = connect(Number(target.port), target.hostname);
    const tunnel = { client, upstream, muted: false };
    this.tunnels.add(tunnel);
    const end = () => {
      this.tunnels.delete(tunnel);
      client.destroy();
      upstream.destroy();
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
    upstream.once('connect', () => {
      const lines = [`${record.method} ${record.path} HTTP/1.1`];
      for (let i = 0; i < req.rawHeaders.length; i += 2) {
        const name = req.rawHeaders[i]!;
        lines.push(`${name}: ${name.toLowerCase() === 'host' ? target.host : req.rawHeaders[i + 1]}`);
      }
      upstream.write(`${lines.join('\r\n')}\r\n\r\n`);
      if (head.length > 0) upstream.write(head);
      client.on('data', (chunk) => upstream.write(chunk));
      upstream.on('data', (chunk) => {
        if (!tunnel.muted) client.write(chunk);
      });
    });
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const raw = Buffer.concat(chunks);
    const path = req.url ?? '/';
    const record: ProxiedRequest = {
      method: req.method ?? 'GET',
      path,
      headers: req.headers,
      body: parseJson(raw),
      at: Date.now(),
    };
    this.requests.push(record);
    const reset = (fault: NonNullable<ProxiedRequest['fault']>) => {
      record.fault = fault;
      req.socket.destroy();
    };

    const hold = this.holds.find((h) => matches(h.pattern, path));
    if (hold) await new Promise<void>((resolve) => hold.waiters.push(resolve));
    if (this.isCut) return reset('cut');
    if (this.drops.some((p) => matches(p, path))) return reset('dropped');
    const refusal = this.refusals.find((r) => r.left > 0 && matches(r.pattern, path));
    if (refusal) {
      refusal.left--;
      record.fault = 'refused';
      record.status = refusal.status;
      record.answeredAt = Date.now();
      res.writeHead(refusal.status, { 'content-length': '0' });
      res.end();
      return;
    }
    if (req.socket.destroyed) {
      record.fault = 'client_gone';
      return;
    }

    const target = new URL(path, this.target);
    const headers = { ...req.headers, host: target.host, 'content-length': String(raw.length) };
    delete headers.connection;
    const upstream = request(target, { method: req.method, headers, agent: false });
    this.inFlight.set(record, req.socket);
    // A client that gives up (an aborted long poll) aborts the forwarded request too.
    res.once('close', () => {
      this.inFlight.delete(record);
      if (!res.writableFinished) upstream.destroy();
    });
    upstream.once('error', () => {
      this.inFlight.delete(record);
      if (record.fault || record.status !== undefined) return;
      if (req.socket.destroyed) record.fault = 'client_gone';
      else reset('upstream_unreachable');
    });
    upstream.once('response', async (answer) => {
      const body: Buffer[] = [];
      try {
        for await (const chunk of answer) body.push(chunk as Buffer);
      } catch {
        body.length = 0;
      }
      this.inFlight.delete(record);
      if (record.fault) return;
      if (this.isCut) return reset('cut');
      if (req.socket.destroyed) {
        record.fault = 'client_gone';
        return;
      }
      if (!answer.complete) return reset('upstream_unreachable');
      const payload = Buffer.concat(body);
      record.status = answer.statusCode ?? 502;
      record.response = parseJson(payload);
      record.answeredAt = Date.now();
      if (this.losses.some((p) => matches(p, path))) return reset('answer_lost');
      const out: Record<string, string | string[]> = {};
      for (const [name, value] of Object.entries(answer.headers)) {
        if (value !== undefined && !HOP_BY_HOP.has(name)) out[name] = value;
      }
      out['content-length'] = String(payload.length);
      res.writeHead(record.status, out);
      res.end(payload);
    });
    upstream.end(raw);
  }
}

function parseJson(raw: Buffer): unknown {
  const text = raw.toString('utf8');
  if (text === '') return undefined;
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}
