/**
 * Event notifications end to end: the real server process (functions/node.ts) on the shared Postgres and a
 * private Redis, a real agent running real scripts, webhook receivers that are real HTTP servers verifying
 * every delivery with the `standardwebhooks` package (an implementation independent of ours), and a real SMTP
 * server process (the `smtp-server` package) for job mail. The control plane is killed with SIGKILL and
 * started again, and a receiver is down for a whole minute: every event still arrives, once per webhook-id.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { SMTPServer } from 'smtp-server';
import { Webhook } from 'standardwebhooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPostgresDatabase, type TestDatabase } from '../support/databases.ts';
import { freePort, ServerProcess } from '../support/server-process.ts';
import {
  type AgentProcess,
  Api,
  eventually,
  FAULT_SERVER_ENV,
  faultServicesAvailable,
  type JobView,
  RedisServer,
  sleep,
  startAgent,
  stopAgents,
} from './harness.ts';

const available = await faultServicesAvailable();

interface Delivery {
  id: string;
  type: string;
  data: Record<string, unknown>;
  at: number;
}

/** A webhook receiver: a real HTTP server that verifies each delivery with standardwebhooks and keeps it. */
class Receiver {
  readonly deliveries: Delivery[] = [];
  readonly rejected: string[] = [];
  /** Answers 503 while true (a receiver that is up but failing). */
  failing = false;
  private server: http.Server | undefined;
  port = 0;
  secret = '';

  async start(port = 0): Promise<void> {
    const server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const body = Buffer.concat(chunks).toString('utf8');
        if (this.failing) {
          res.writeHead(503).end();
          return;
        }
        try {
          const payload = new Webhook(this.secret).verify(body, req.headers as Record<string, string>) as {
            type: string;
            data: Record<string, unknown>;
          };
          this.deliveries.push({
            id: String(req.headers['webhook-id']),
            type: payload.type,
            data: payload.data,
            at: Date.now(),
          });
          res.writeHead(204).end();
        } catch (error) {
          this.rejected.push(`${(error as Error).message}: ${body}`);
          res.writeHead(400).end();
        }
      });
    });
    await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
    this.port = (server.address() as AddressInfo).port;
    this.server = server;
  }

  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (!server) return;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}/hook`;
  }

  /** The event types delivered for one job, in the order received. */
  ofJob(jobId: number): string[] {
    return this.deliveries.filter((d) => d.data.job_id === jobId).map((d) => d.type);
  }

  ofWorker(workerId: string): string[] {
    return this.deliveries.filter((d) => d.data.worker_id === workerId).map((d) => d.type);
  }

  /** webhook-ids delivered more than once. */
  duplicates(): string[] {
    const seen = new Set<string>();
    const twice = new Set<string>();
    for (const d of this.deliveries) (seen.has(d.id) ? twice : seen).add(d.id);
    return [...twice];
  }
}

async function kill9(server: ServerProcess): Promise<void> {
  if (server.child.exitCode !== null || server.child.signalCode !== null) return;
  const exited = new Promise((resolve) => server.child.once('exit', resolve));
  server.child.kill('SIGKILL');
  await exited;
}

describe.runIf(available)('event notifications (real server process, agent, receivers, SMTP)', () => {
  let db: TestDatabase;
  let redis: RedisServer;
  let port: number;
  let env: Record<string, string>;
  let server: ServerProcess;
  let api: Api;
  let agent: AgentProcess;
  let smtp: SMTPServer;
  const mails: { to: string[]; text: string }[] = [];
  const servers: ServerProcess[] = [];
  const extraAgents: AgentProcess[] = [];

  const startServer = async () => {
    const started = new ServerProcess(port, env);
    servers.push(started);
    await started.ready(120_000);
    return started;
  };
  const subscribe = async (receiver: Receiver, events: string[], extra: Record<string, unknown> = {}) => {
    const res = await api.post<{ id: number; secret: string }>('/api/v1/subscriptions', {
      url: receiver.url,
      events,
      ...extra,
    });
    expect(res.status, res.text).toBe(201);
    receiver.secret = res.body.secret;
    return res.body;
  };
  const deliveriesOf = async (id: number) => {
    const res = await api.get<{
      deliveries: {
        webhook_id: string;
        state: string;
        attempts: number;
        type: string;
        job_id: number | null;
      }[];
    }>(`/api/v1/subscriptions/${id}/deliveries?limit=1000`);
    expect(res.status, res.text).toBe(200);
    return res.body.deliveries;
  };

  beforeAll(async () => {
    smtp = new SMTPServer({
      authOptional: true,
      disabledCommands: ['STARTTLS'],
      logger: false,
      onData(stream, session, callback) {
        const chunks: Buffer[] = [];
        stream.on('data', (c: Buffer) => chunks.push(c));
        stream.on('end', () => {
          mails.push({
            to: session.envelope.rcptTo.map((r) => r.address),
            text: Buffer.concat(chunks).toString('utf8'),
          });
          callback();
        });
      },
    });
    const smtpPort = await freePort();
    await new Promise<void>((resolve) => smtp.listen(smtpPort, '127.0.0.1', resolve));
    [db, redis, port] = await Promise.all([createPostgresDatabase(), RedisServer.start(), freePort()]);
    env = {
      ...FAULT_SERVER_ENV,
      DATABASE_URL: db.url!,
      REDIS_URL: redis.url,
      CONDUCTOR_NOTIFY_RETRY_BASE: '0.5',
      CONDUCTOR_NOTIFY_RETRY_MAX: '3',
      CONDUCTOR_NOTIFY_INTERVAL: '0.2',
      CONDUCTOR_NOTIFY_TIMEOUT: '3',
      CONDUCTOR_NOTIFY_MAX_ATTEMPTS: '100',
      CONDUCTOR_SMTP_URL: `smtp://127.0.0.1:${smtpPort}`,
      CONDUCTOR_MAIL_FROM: 'conductor@example.com',
    };
    server = await startServer();
    api = new Api(server.url);
    agent = startAgent('notify-a', server.url, { cpus: 4 });
    await agent.registered();
  }, 240_000);
  afterAll(async () => {
    await stopAgents([...(agent ? [agent] : []), ...extraAgents]);
    await Promise.all(servers.map((s) => kill9(s)));
    await redis?.close();
    await db?.close();
    await new Promise<void>((resolve) => (smtp ? smtp.close(() => resolve()) : resolve()));
  });

  it.concurrent("a job's whole life arrives as documented, every delivery verified by standardwebhooks; worker events too; mail through SMTP", async () => {
    const receiver = new Receiver();
    await receiver.start();
    const subscription = await subscribe(receiver, [
      'ALL',
      'TIME_LIMIT',
      'WORKER_REGISTERED',
      'WORKER_DRAINED',
      'WORKER_LOST',
    ]);
    expect(subscription.secret).toMatch(/^whsec_/);

    const ok = await api.submit({
      script: 'echo ok',
      cpus: 1,
      mail_type: 'BEGIN,END',
      mail_user: 'alice@example.com',
    });
    const failing = await api.submit({ script: 'exit 3', cpus: 1 });
    // 10 s limit, never ends by itself: 50 %, 80 %, 90 %, then TIMEOUT (a FAIL).
    const slow = await api.submit({ script: 'sleep 60', cpus: 1, time_limit: '0:10' });
    const requeued = await api.submit({ script: 'sleep 3', cpus: 1 });
    const cancelled = await api.submit({ script: 'true', cpus: 1, hold: true });

    await api.waitJob(requeued.id, (j) => j.start_time !== null, 20_000, 'requeued job start');
    expect((await api.post(`/api/v1/jobs/${requeued.id}/requeue`)).status).toBe(200);
    expect((await api.post(`/api/v1/jobs/${cancelled.id}/cancel`)).status).toBe(200);
    for (const job of [ok, failing, requeued, cancelled]) await api.waitJob(job.id, undefined, 30_000);
    await api.waitJob(slow.id, undefined, 40_000);

    const expected: [number, string[]][] = [
      [ok.id, ['job.begin', 'job.end']],
      [failing.id, ['job.begin', 'job.fail']],
      [slow.id, ['job.begin', 'job.time_limit_50', 'job.time_limit_80', 'job.time_limit_90', 'job.fail']],
      [requeued.id, ['job.begin', 'job.requeue', 'job.begin', 'job.end']],
      [cancelled.id, ['job.end']],
    ];
    await eventually(() => expected.every(([id, types]) => receiver.ofJob(id).length >= types.length), {
      timeoutMs: 20_000,
      what: 'every job event delivered',
    });
    await sleep(1_500); // nothing more comes
    for (const [id, types] of expected) expect(receiver.ofJob(id), `job ${id}`).toEqual(types);
    const last = (id: number) => receiver.deliveries.filter((d) => d.data.job_id === id).at(-1)!.data;
    expect(last(ok.id)).toMatchObject({ event: 'END', state: 'COMPLETED', exit_code: '0:0', name: 'job' });
    expect(last(failing.id)).toMatchObject({ event: 'FAIL', state: 'FAILED', exit_code: '3:0' });
    expect(last(slow.id)).toMatchObject({ event: 'FAIL', state: 'TIMEOUT' });
    expect(last(requeued.id)).toMatchObject({ event: 'END', state: 'COMPLETED', attempt: 2 });
    expect(last(cancelled.id)).toMatchObject({ event: 'END', state: 'CANCELLED' });
    expect(receiver.rejected).toEqual([]);
    expect(receiver.duplicates()).toEqual([]);

    // Mail: BEGIN and END of the job that asked, through the SMTP server, to its mail_user.
    await eventually(() => mails.filter((m) => m.text.includes(`job ${ok.id} `)).length >= 2, {
      timeoutMs: 10_000,
      what: 'two mails',
    });
    const mine = mails.filter((m) => m.text.includes(`job ${ok.id} `));
    expect(mine.map((m) => m.to)).toEqual([['alice@example.com'], ['alice@example.com']]);
    expect(mine[0]!.text).toMatch(new RegExp(`Subject: Conductor job ${ok.id} \\(job\\) began`));
    expect(mine[1]!.text).toMatch(
      new RegExp(`Subject: Conductor job ${ok.id} \\(job\\) ended: state COMPLETED`),
    );
    expect(mails.filter((m) => m.text.includes(`job ${failing.id} `))).toEqual([]);

    // Worker events: a new agent registers, is drained, then killed (lost after its TTL).
    const other = startAgent('notify-w', server.url, { cpus: 1 });
    extraAgents.push(other);
    await other.registered();
    expect((await api.post('/api/v1/workers/notify-w/drain')).status).toBe(200);
    other.kill9();
    await eventually(() => receiver.ofWorker('notify-w').length >= 3, {
      timeoutMs: 30_000,
      what: 'worker events',
    });
    expect(receiver.ofWorker('notify-w')).toEqual(['worker.registered', 'worker.drained', 'worker.lost']);

    // The delivery log: every delivery delivered, in one attempt.
    const log = await deliveriesOf(subscription.id);
    expect(log.every((d) => d.state === 'delivered')).toBe(true);
    expect(new Set(log.map((d) => d.webhook_id))).toEqual(new Set(receiver.deliveries.map((d) => d.id)));
    await receiver.stop();
  }, 180_000);

  it.concurrent('a receiver down for a minute gets every event after it is back, once each by webhook-id', async () => {
    const receiver = new Receiver();
    await receiver.start();
    const receiverPort = receiver.port;
    const subscription = await subscribe(receiver, ['BEGIN', 'END', 'FAIL']);
    await receiver.stop();
    const downAt = Date.now();
    const jobs: JobView[] = [];
    for (const script of ['echo a', 'exit 2', 'sleep 2']) jobs.push(await api.submit({ script, cpus: 1 }));
    for (const job of jobs) await api.waitJob(job.id, undefined, 40_000);
    // Cluster-wide (the open local cluster's caller): the other test's jobs are delivered here too.
    const ids = jobs.map((j) => j.id);
    const mine = async () => (await deliveriesOf(subscription.id)).filter((d) => ids.includes(d.job_id ?? 0));
    const received = () => receiver.deliveries.filter((d) => ids.includes(d.data.job_id as number));
    // Retries while it is down: the deliveries are pending with failed attempts behind them.
    await eventually(
      async () => {
        const log = await mine();
        return log.length === 6 && log.every((d) => d.state === 'pending' && d.attempts >= 2);
      },
      { timeoutMs: 30_000, what: 'failed attempts recorded' },
    );
    await sleep(60_000 - (Date.now() - downAt));
    expect(receiver.deliveries).toEqual([]);
    await receiver.start(receiverPort);
    const upAt = Date.now();
    await eventually(() => received().length >= 6, { timeoutMs: 15_000, what: 'the backlog' });
    console.log(`[measure] receiver back: backlog delivered in ${(Date.now() - upAt) / 1000} s`);
    await sleep(2_000);
    expect(receiver.duplicates()).toEqual([]);
    expect(received()).toHaveLength(6);
    // After retries the order is not kept (each delivery has its own back-off): compare as sets.
    expect(receiver.ofJob(jobs[0]!.id).sort()).toEqual(['job.begin', 'job.end']);
    expect(receiver.ofJob(jobs[1]!.id).sort()).toEqual(['job.begin', 'job.fail']);
    expect(receiver.ofJob(jobs[2]!.id).sort()).toEqual(['job.begin', 'job.end']);
    const log = await mine();
    expect(log).toHaveLength(6);
    expect(log.every((d) => d.state === 'delivered')).toBe(true);
    expect(Math.min(...log.map((d) => d.attempts))).toBeGreaterThan(2);
    expect(receiver.rejected).toEqual([]);
    await receiver.stop();
  }, 180_000);

  it('control plane killed (SIGKILL) with deliveries owed and jobs running: after the restart every event arrives', async () => {
    const receiver = new Receiver();
    await receiver.start();
    const subscription = await subscribe(receiver, ['BEGIN', 'END', 'FAIL', 'REQUEUE']);
    receiver.failing = true; // up, but answering 503: the outbox holds everything
    const jobs: JobView[] = [];
    for (const s of [1, 3, 5]) jobs.push(await api.submit({ script: `sleep ${s}`, cpus: 1 }));
    for (const job of jobs) await api.waitJob(job.id, (j) => j.start_time !== null, 20_000, 'start');
    await api.waitJob(jobs[0]!.id, undefined, 20_000);
    await kill9(server);
    // While it is down the other jobs end; their results wait in the agent.
    await sleep(5_000);
    receiver.failing = false;
    server = await startServer();
    api.base = server.url;
    for (const job of jobs) await api.waitJob(job.id, undefined, 40_000);
    await eventually(() => jobs.every((j) => receiver.ofJob(j.id).length >= 2), {
      timeoutMs: 40_000,
      what: 'every event after the restart',
    });
    await sleep(1_500);
    for (const job of jobs)
      expect(receiver.ofJob(job.id).sort(), `job ${job.id}`).toEqual(['job.begin', 'job.end']);
    expect(receiver.duplicates()).toEqual([]);
    expect(receiver.rejected).toEqual([]);
    const log = (await deliveriesOf(subscription.id)).filter((d) => jobs.some((j) => j.id === d.job_id));
    expect(log).toHaveLength(6);
    expect(log.every((d) => d.state === 'delivered')).toBe(true);
    await receiver.stop();
  }, 240_000);
});
