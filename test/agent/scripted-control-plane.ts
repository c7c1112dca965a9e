/**
 * A control plane that hands out the assignments a test writes (with memory_mb, GPU indexes, gres, which
 * the real server's scheduler places only once it knows them) and records every request an agent makes:
 * the agent protocol as agent/src/protocol.ts has it, nothing more. Use the real control plane
 * (control-plane.ts) for anything else.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type {
  Assignment,
  FinishRequest,
  JobSignal,
  OutputRequest,
  RegisterRequest,
} from '../../agent/src/protocol.ts';
import { eventually } from '../support/agent-process.ts';

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

  static async start(): Promise<ScriptedControlPlane> {
    const cp = new ScriptedControlPlane();
    const server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const body: unknown = chunks.length > 0 ? JSON.parse(Buffer.concat(chunks).toString()) : undefined;
        const path = (req.url ?? '/').replace(/^\/api\/v1\/agents/, '');
        cp.requests.push({ path, body, at: Date.now() });
        void cp.answer(path, body).then((answer) => {
          res.writeHead(200, { 'content-type': 'application/json' });
          res.end(JSON.stringify(answer));
        });
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    cp.server = server;
    cp.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    return cp;
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
    this.server?.closeAllConnections();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }

  private async answer(path: string, body: unknown): Promise<unknown> {
    if (path === '/register') {
      const { worker_id } = body as RegisterRequest;
      return {
        worker_id,
        session: 'scripted',
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
      return { jobs: this.queue.splice(0), cancel: [], signal: this.signals.splice(0) };
    }
    if (/^\/jobs\/\d+\/started$/.test(path)) return { state: 'RUNNING' };
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
