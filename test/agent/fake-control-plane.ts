/**
 * A small in-process stand-in for the control plane's agent API (node:http), for the agent's own tests.
 * It records every request and lets a test queue assignments and cancels and script failures.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Assignment, JobRef } from '../../agent/src/protocol.ts';

export interface RecordedRequest {
  path: string;
  body: Record<string, unknown>;
  auth: string | undefined;
  at: number;
}

type Override = { status: number; body: unknown } | 'hang';

export class FakeControlPlane {
  readonly requests: RecordedRequest[] = [];
  /** Assignments handed out on every claim until their `started` report arrives. */
  readonly pending = new Map<string, Assignment>();
  /** Cancels returned by the next claim and heartbeat answers until the job's finish arrives. */
  readonly cancels = new Map<string, JobRef>();
  /** Per path prefix, answers to give instead of the normal one (consumed in order). */
  readonly overrides = new Map<string, Override[]>();
  /** State the started report answers with, per attempt (RUNNING when not set). */
  readonly startedState = new Map<string, string>();
  /** Attempts whose reports get 409 stale_assignment. */
  readonly stale = new Set<string>();
  readonly output = new Map<string, { bytes: number; text: string }>();
  /** Which answers carry the cancels. */
  cancelVia: 'both' | 'heartbeat' | 'claim' = 'both';
  session = '';
  sessionCount = 0;
  heartbeatIntervalS = 30;
  claimWaitS = 1;
  url = '';
  private server: Server | undefined;
  private wakeClaims: (() => void)[] = [];

  async listen(): Promise<void> {
    this.server = createServer((req, res) => void this.handle(req, res));
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  async close(): Promise<void> {
    this.wake();
    this.server?.closeAllConnections();
    await new Promise<void>((resolve) => this.server?.close(() => resolve()) ?? resolve());
  }

  assign(a: Partial<Assignment> & { job_id: number; script: string }): Assignment {
    const full: Assignment = {
      attempt: 1,
      name: `job-${a.job_id}`,
      cpus: 1,
      work_dir: null,
      environment: {},
      time_limit_s: null,
      ...a,
    };
    this.pending.set(key(full), full);
    this.wake();
    return full;
  }

  cancel(ref: JobRef): void {
    this.cancels.set(key(ref), ref);
    this.wake();
  }

  override(pathPrefix: string, ...answers: Override[]): void {
    this.overrides.set(pathPrefix, [...(this.overrides.get(pathPrefix) ?? []), ...answers]);
  }

  calls(pathSuffix: string): RecordedRequest[] {
    return this.requests.filter((r) => r.path.endsWith(pathSuffix));
  }

  /** Waits until `predicate` holds, polling. */
  async until(predicate: () => boolean, ms = 10_000, what = 'condition'): Promise<void> {
    const end = Date.now() + ms;
    while (!predicate()) {
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  private wake(): void {
    const waiters = this.wakeClaims;
    this.wakeClaims = [];
    for (const w of waiters) w();
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}') as Record<string, unknown>;
    const path = req.url ?? '';
    this.requests.push({ path, body, auth: req.headers.authorization, at: Date.now() });
    const send = (status: number, payload: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(payload));
    };
    const error = (status: number, code: string, details?: unknown) =>
      send(status, { error: { code, message: code.replace(/_/g, ' '), ...(details ? { details } : {}) } });

    for (const [prefix, answers] of this.overrides) {
      if (path.includes(prefix) && answers.length > 0) {
        const answer = answers.shift()!;
        if (answer === 'hang') return; // never answers; the client times out
        return send(answer.status, answer.body);
      }
    }

    const p = path.replace('/api/v1/agents', '');
    if (p === '/register') {
      this.sessionCount++;
      this.session = `s${this.sessionCount}`;
      return send(200, {
        worker_id: body.worker_id,
        session: this.session,
        heartbeat_interval_s: this.heartbeatIntervalS,
        worker_ttl_s: 60,
        claim_wait_s: this.claimWaitS,
      });
    }
    if (p === '/heartbeat' || p === '/claim' || p === '/unregister') {
      if (body.session !== this.session) return error(409, 'session_superseded');
    }
    if (p === '/heartbeat') {
      const cancel = this.cancelVia === 'claim' ? [] : [...this.cancels.values()];
      return send(200, { heartbeat_interval_s: this.heartbeatIntervalS, cancel });
    }
    if (p === '/claim') {
      const waitMs = Number(body.wait_s ?? 0) * 1000;
      const cancels = () => (this.cancelVia === 'heartbeat' ? [] : [...this.cancels.values()]);
      if (this.pending.size === 0 && cancels().length === 0 && waitMs > 0) {
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, waitMs);
          this.wakeClaims.push(() => {
            clearTimeout(timer);
            resolve();
          });
        });
      }
      if (res.destroyed) return;
      return send(200, { jobs: [...this.pending.values()], cancel: cancels() });
    }
    if (p === '/unregister') return send(200, {});
    const m = /^\/jobs\/(\d+)\/(started|output|finish)$/.exec(p);
    if (m) {
      const k = `${m[1]}:${body.attempt}`;
      if (this.stale.has(k)) return error(409, 'stale_assignment');
      if (m[2] === 'started') {
        this.pending.delete(k);
        return send(200, { state: this.startedState.get(k) ?? 'RUNNING' });
      }
      if (m[2] === 'output') {
        const streamKey = `${k}:${body.stream}`;
        const s = this.output.get(streamKey) ?? { bytes: 0, text: '' };
        const offset = Number(body.offset);
        if (offset < s.bytes) return error(409, 'output_offset_mismatch', { expected: s.bytes });
        if (offset > s.bytes) s.text += `[...${offset - s.bytes} bytes skipped...]`;
        s.text += String(body.data);
        s.bytes = offset + Number(body.bytes);
        this.output.set(streamKey, s);
        return send(200, { bytes: s.bytes });
      }
      this.pending.delete(k);
      this.cancels.delete(k);
      const state =
        body.outcome === 'exited'
          ? body.exit_code === '0:0'
            ? 'COMPLETED'
            : 'FAILED'
          : String(body.outcome).toUpperCase();
      return send(200, { state });
    }
    return error(404, 'not_found');
  }
}

export function key(ref: JobRef): string {
  return `${ref.job_id}:${ref.attempt}`;
}
