/**
 * A control plane that hands out the assignments a test writes (with memory_mb, GPU indexes, gres, which
 * the real server's scheduler places only once it knows them) and records every request an agent makes:
 * the agent protocol as agent/src/protocol.ts has it, nothing more. Use the real control plane
 * (control-plane.ts) for anything else.
 *
 * The push channel (`GET /channel`): by default refused with 404 `not_found`, as a server without it answers.
 * With `start({ channel: true })` it is served with the `ws` package (answering `ping` with `pong`); the
 * test pushes `wake` and `register`, drops sockets, stops answering pings, or refuses upgrades.
 */
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { type WebSocket as ServerSocket, WebSocketServer } from 'ws';
import type {
  Assignment,
  FinishRequest,
  JobSignal,
  OutputRequest,
  RegisterRequest,
} from '../../agent/src/protocol.ts';
import { eventually } from '../support/agent-process.ts';

/** A channel connection the scripted control plane accepted. */
export interface ScriptedChannel {
  ws: ServerSocket;
  workerId: string;
  session: string;
  authorization: string | undefined;
  openedAt: number;
  /** `ping` frames received. */
  pings: number;
  closed?: { code: number; reason: string; at: number };
}

export interface ScriptedOptions {
  /** Serve the push channel (else every upgrade is answered 404 `not_found`). */
  channel?: boolean;
}

export interface RecordedRequest {
  path: string;
  body: unknown;
  at: number;
}

export class ScriptedControlPlane {
  readonly requests: RecordedRequest[] = [];
  url = '';
  private readonly queue: Assignment[] = [];
  private readonly signals: JobSignal[] = [];
  private wakeClaims: (() => void)[] = [];
  private server: Server | undefined;
  private wss: WebSocketServer | undefined;
  /** Channel connections, in the order they were accepted. */
  readonly channels: ScriptedChannel[] = [];
  /** Answer `ping` with `pong` (false: a server that went silent). */
  answerPings = true;
  /** When set, an upgrade it answers (status and JSON body) is refused so. */
  refuseChannel:
    | ((channel: { workerId: string; session: string }) => { status: number; body: unknown } | undefined)
    | undefined;
  /** The worker status claim answers carry (absent: none, as older servers). */
  claimStatus: 'ready' | 'draining' | undefined;
  /** The job state started reports are answered with (anything but RUNNING: a cancel that won the race). */
  startedState = 'RUNNING';
  private registrationCount = 0;
  private claimGate: Promise<void> | undefined;

  static async start(options: ScriptedOptions = {}): Promise<ScriptedControlPlane> {
    const cp = new ScriptedControlPlane();
    const server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const body: unknown = chunks.length > 0 ? JSON.parse(Buffer.concat(chunks).toString()) : undefined;
        const path = (req.url ?? '/').replace(/^\/api\/v1\/agents/, '');
        cp.requests.push({ path, body, at: Date.now() });
        if (path.startsWith('/channel')) {
          // A server without the channel: no such route.
          res.writeHead(404, { 'content-type': 'application/json' });
          res.end(JSON.stringify({ error: { code: 'not_found', message: `No route for GET ${req.url}` } }));
          return;
        }
        void cp.answer(path, body).then((answer) => {
          res.writeHead(200, { 'content-type': 'application/json' });
          res.end(JSON.stringify(answer));
        });
      });
    });
    if (options.channel) {
      const wss = new WebSocketServer({ noServer: true });
      cp.wss = wss;
      server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) =>
        cp.upgrade(req, socket, head),
      );
    }
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    cp.server = server;
    cp.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    return cp;
  }

  private upgrade(req: IncomingMessage, socket: Socket, head: Buffer): void {
    const url = new URL(req.url ?? '/', 'http://x');
    const path = url.pathname.replace(/^\/api\/v1\/agents/, '');
    this.requests.push({ path: `${path}${url.search}`, body: undefined, at: Date.now() });
    const workerId = url.searchParams.get('worker_id') ?? '';
    const session = url.searchParams.get('session') ?? '';
    const refusal =
      path === '/channel'
        ? this.refuseChannel?.({ workerId, session })
        : {
            status: 404,
            body: { error: { code: 'not_found', message: `No route for GET ${req.url}` } },
          };
    if (refusal) {
      const text = JSON.stringify(refusal.body);
      socket.end(
        `HTTP/1.1 ${refusal.status} Refused\r\ncontent-type: application/json\r\n` +
          `content-length: ${Buffer.byteLength(text)}\r\nconnection: close\r\n\r\n${text}`,
      );
      return;
    }
    this.wss!.handleUpgrade(req, socket, head, (ws) => {
      const channel: ScriptedChannel = {
        ws,
        workerId,
        session,
        authorization: req.headers.authorization,
        openedAt: Date.now(),
        pings: 0,
      };
      this.channels.push(channel);
      ws.on('message', (data, isBinary) => {
        if (!isBinary && data.toString() === 'ping') {
          channel.pings++;
          if (this.answerPings) ws.send('pong');
        }
      });
      ws.on('close', (code, reason) => {
        channel.closed = { code, reason: reason.toString(), at: Date.now() };
      });
    });
  }

  /** The channels still open. */
  openChannels(): ScriptedChannel[] {
    return this.channels.filter((c) => !c.closed && c.ws.readyState === c.ws.OPEN);
  }

  /** Sends `message` (JSON) on every open channel. */
  push(message: unknown): void {
    for (const c of this.openChannels()) c.ws.send(JSON.stringify(message));
  }

  /** Closes every open channel from the server's side (1012: service restart). */
  dropChannels(code = 1012, reason = 'restarting'): void {
    for (const c of this.openChannels()) c.ws.close(code, reason);
  }

  /** Claims wait (after being recorded) until the returned function is called. */
  holdClaims(): () => void {
    let release!: () => void;
    this.claimGate = new Promise<void>((resolve) => {
      release = resolve;
    });
    return () => {
      this.claimGate = undefined;
      release();
    };
  }

  /** The claims agents made, in order. */
  claims(): { wait_s?: number; at: number }[] {
    return this.requests
      .filter((r) => r.path === '/claim')
      .map((r) => ({ ...(r.body as { wait_s?: number }), at: r.at }));
  }

  /** Requests to `path` since `at` (ms). */
  since(path: string, at: number): RecordedRequest[] {
    return this.requests.filter((r) => r.path === path && r.at >= at);
  }

  /** Hands `assignment` to the next claim. */
  assign(assignment: Assignment): void {
    this.queue.push(assignment);
    for (const wake of this.wakeClaims.splice(0)) wake();
  }

  /** Hands `signal` to the next heartbeat or claim answer (whichever comes first), once. */
  signal(signal: JobSignal): void {
    this.signals.push(signal);
    for (const wake of this.wakeClaims.splice(0)) wake();
  }

  registrations(): RegisterRequest[] {
    return this.requests.filter((r) => r.path === '/register').map((r) => r.body as RegisterRequest);
  }

  /** The finish report of job `jobId`, once it came. */
  finish(jobId: number, timeoutMs = 20_000): Promise<FinishRequest> {
    return eventually(
      () => this.requests.find((r) => r.path === `/jobs/${jobId}/finish`)?.body as FinishRequest | undefined,
      { timeoutMs, what: `the finish report of job ${jobId}` },
    );
  }

  /** The output of job `jobId` the agent sent on `stream`, in offset order. */
  output(jobId: number, stream: 'stdout' | 'stderr'): string {
    return this.requests
      .filter((r) => r.path === `/jobs/${jobId}/output`)
      .map((r) => r.body as OutputRequest)
      .filter((o) => o.stream === stream)
      .sort((a, b) => a.offset - b.offset)
      .map((o) => o.data)
      .join('');
  }

  async close(): Promise<void> {
    for (const wake of this.wakeClaims.splice(0)) wake();
    for (const c of this.channels) c.ws.terminate();
    this.wss?.close();
    this.server?.closeAllConnections();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }

  private async answer(path: string, body: unknown): Promise<unknown> {
    if (path === '/register') {
      const { worker_id } = body as RegisterRequest;
      this.registrationCount++;
      return {
        worker_id,
        session: this.registrationCount === 1 ? 'scripted' : `scripted-${this.registrationCount}`,
        heartbeat_interval_s: 1,
        worker_ttl_s: 60,
        claim_wait_s: 2,
        cancel: [],
      };
    }
    if (path === '/heartbeat') {
      return { heartbeat_interval_s: 1, status: 'ready', cancel: [], signal: this.signals.splice(0) };
    }
    if (path === '/claim') {
      if (this.claimGate) await this.claimGate;
      if (this.queue.length === 0 && this.signals.length === 0) {
        const wait = Math.min((body as { wait_s?: number }).wait_s ?? 0, 2) * 1000;
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, wait);
          this.wakeClaims.push(() => {
            clearTimeout(timer);
            resolve();
          });
        });
      }
      return {
        jobs: this.queue.splice(0),
        cancel: [],
        signal: this.signals.splice(0),
        ...(this.claimStatus ? { status: this.claimStatus } : {}),
      };
    }
    if (/^\/jobs\/\d+\/started$/.test(path)) return { state: this.startedState };
    if (/^\/jobs\/\d+\/output$/.test(path)) {
      const o = body as OutputRequest;
      return { bytes: o.offset + o.bytes };
    }
    if (/^\/jobs\/\d+\/finish$/.test(path)) {
      const outcome = (body as FinishRequest).outcome;
      return { state: outcome === 'out_of_memory' ? 'OUT_OF_MEMORY' : outcome.toUpperCase() };
    }
    return {};
  }
}
