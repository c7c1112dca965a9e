import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import { Redis } from 'ioredis';
import { Miniflare } from 'miniflare';
import { Webhook } from 'standardwebhooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readAllocationSnapshot } from '../../functions/domain/cache.ts';
import { createIoredisScripts } from '../../functions/node/ioredis.ts';
import { RedisRegistryStore } from '../../functions/registry/redis-store.ts';
import { AgentProcess, eventually } from '../support/agent-process.ts';
import { createPostgresDatabase, type TestDatabase } from '../support/databases.ts';
import { checkInvariants } from '../support/invariants.ts';
import { startNeonProxy } from '../support/neon-proxy.ts';
import { serviceAvailable } from '../support/services.ts';
import { startUpstashBridge, type UpstashBridge } from '../support/upstash-bridge.ts';
import { bundleWorker, workerModules } from '../support/worker-bundle.ts';

/**
 * The control plane in the real Workers runtime (workerd, through Miniflare), bundled by wrangler, against
 * the local Postgres through the Neon driver (WebSocket proxy) and the local Redis through @upstash/redis
 * (REST bridge). Redis database 10 is this file's own, so the production key names are checked as they are.
 */
const available = (await serviceAvailable('postgres')) && (await serviceAvailable('redis'));
const REDIS_DB_URL = 'redis://127.0.0.1:6379/10';
/** The ADMIN_TOKEN binding: the Worker stores it (hashed) as an admin token the first time it is used. */
const ADMIN_TOKEN = 'workers-admin-token-0123456789abcdefghij';

/** Runs the Worker's scheduled handler as a cron trigger would. */
async function fireCron(mf: Miniflare, cron: string): Promise<void> {
  const worker = (await mf.getWorker()) as unknown as {
    scheduled(options: { cron: string }): Promise<unknown>;
  };
  await worker.scheduled({ cron });
}

describe.runIf(available)('Cloudflare Worker in workerd', () => {
  let database: TestDatabase;
  let bridge: UpstashBridge;
  let proxy: Awaited<ReturnType<typeof startNeonProxy>>;
  let redis: Redis;
  const isolates: Miniflare[] = [];
  const urls: string[] = [];
  const agents: AgentProcess[] = [];
  let bundleSize = 0;

  async function startIsolate(): Promise<Miniflare> {
    const mf = new Miniflare({
      ...workerModules(bundle),
      host: '127.0.0.1',
      port: 0,
      bindings: {
        DATABASE_URL: database.url!,
        UPSTASH_REDIS_REST_URL: bridge.url,
        UPSTASH_REDIS_REST_TOKEN: bridge.token,
        NEON_WS_PROXY: proxy.url,
        CONDUCTOR_WORKER_TTL: '5',
        CONDUCTOR_HEARTBEAT_INTERVAL: '1',
        CONDUCTOR_CLAIM_WAIT: '2',
        CONDUCTOR_CLAIM_POLL_MS: '200',
        CONDUCTOR_NOTIFY_RETRY_BASE: '0.2',
        ADMIN_TOKEN,
      },
    });
    const url = await mf.ready;
    isolates.push(mf);
    urls.push(url.toString().replace(/\/$/, ''));
    return mf;
  }
  let bundle: ReturnType<typeof bundleWorker>;

  beforeAll(async () => {
    bundle = bundleWorker();
    bundleSize = readFileSync(bundle.script).length;
    database = await createPostgresDatabase();
    redis = new Redis(REDIS_DB_URL);
    await redis.flushdb();
    bridge = await startUpstashBridge({ redisUrl: REDIS_DB_URL });
    proxy = await startNeonProxy();
    await startIsolate();
    await startIsolate();
  }, 120_000);

  afterAll(async () => {
    await Promise.all(agents.map((a) => a.stop().catch(() => a.kill9())));
    await Promise.all(isolates.map((mf) => mf.dispose()));
    await proxy?.close();
    await bridge?.close();
    await redis?.flushdb();
    await redis?.quit();
    await database?.close();
  });

  const api = async <T>(
    path: string,
    init?: RequestInit,
    url = urls[0]!,
  ): Promise<{ status: number; body: T }> => {
    const res = await fetch(`${url}${path}`, {
      ...init,
      headers: {
        'content-type': 'application/json',
        authorization: `Bearer ${ADMIN_TOKEN}`,
        ...(init?.headers ?? {}),
      },
    });
    return { status: res.status, body: (await res.json()) as T };
  };
  const submit = (body: Record<string, unknown>, url?: string) =>
    api<{ id: number }>('/api/v1/jobs/submit', { method: 'POST', body: JSON.stringify(body) }, url);

  it('bundles with wrangler without Node-only modules', () => {
    const source = readFileSync(bundle.script, 'utf8');
    expect(source).not.toMatch(/from\s+["']node:/);
    expect(source).not.toMatch(/require\(["'](ioredis|pg|@electric-sql\/pglite)["']\)/);
    expect(bundleSize).toBeGreaterThan(0);
  });

  it('answers a missing binding with a clear error naming it', async () => {
    const bare = new Miniflare(workerModules(bundle));
    try {
      const res = await bare.dispatchFetch('http://localhost/api/v1/health');
      expect(res.status).toBe(500);
      const { error } = (await res.json()) as { error: { code: string; message: string } };
      expect(error.code).toBe('misconfigured');
      expect(error.message).toContain('DATABASE_URL');
      expect(error.message).toContain('UPSTASH_REDIS_REST_URL');
    } finally {
      await bare.dispose();
    }
  });

  let agentToken: string;
  const agentEnv = () => ({ CONDUCTOR_TOKEN: agentToken });

  it('is public by nature: every route but health needs a token, even before any exists', async () => {
    const bare = await fetch(`${urls[0]}/api/v1/dashboard`);
    expect(bare.status).toBe(401);
    expect(((await bare.json()) as { error: { code: string } }).error.code).toBe('missing_token');
    expect((await fetch(`${urls[1]}/api/v1/health`)).status).toBe(200);
    const submit = await fetch(`${urls[1]}/api/v1/jobs/submit`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ script: 'true', cpus: 1 }),
    });
    expect(submit.status).toBe(401);
    // The ADMIN_TOKEN binding works in every isolate, and is stored once, hashed.
    const created = await api<{ token: string }>(
      '/api/v1/tokens',
      { method: 'POST', body: JSON.stringify({ name: 'edge-agents', scopes: ['agent'] }) },
      urls[1],
    );
    expect(created.status).toBe(201);
    agentToken = created.body.token;
    const tokens = await api<{ tokens: { name: string }[] }>('/api/v1/tokens');
    expect(tokens.body.tokens.map((t) => t.name).sort()).toEqual(['bootstrap-admin', 'edge-agents']);
    // An agent token cannot submit.
    const byAgent = await api('/api/v1/jobs/submit', {
      method: 'POST',
      body: JSON.stringify({ script: 'true', cpus: 1 }),
      headers: { authorization: `Bearer ${agentToken}` },
    });
    expect(byAgent.status).toBe(403);
  });

  it('runs the whole lifecycle with a real agent pointed at the Worker', async () => {
    expect((await api<{ status: string }>('/api/v1/health')).body.status).toBe('ok');
    const agent = new AgentProcess('edge-node-1', urls[0]!, { cpus: 4, env: agentEnv() });
    agents.push(agent);
    await agent.registered();
    await agent.waitForLine(/Heartbeat sent: edge-node-1/);
    expect(await redis.exists('worker:edge-node-1')).toBe(1);
    const { status, body } = await submit({ script: 'echo "from the edge"; exit 3', cpus: 2 });
    expect(status).toBe(201);
    const job = await eventually(
      async () => {
        const { body: j } = await api<{ state: string; exit_code: string }>(`/api/v1/jobs/${body.id}`);
        return j.state === 'FAILED' ? j : undefined;
      },
      { what: 'the job to end' },
    );
    expect(job.exit_code).toBe('3:0');
    const logs = await api<{ stdout: { content: string } }>(`/api/v1/jobs/${body.id}/logs`);
    expect(logs.body.stdout.content).toBe('from the edge\n');
  });

  it('schedules from the minute cron when the submit-time pass found no worker', async () => {
    const [agent] = agents;
    await agent!.stop();
    expect(await redis.exists('worker:edge-node-1')).toBe(0);
    const { body } = await submit({ script: 'true', cpus: 1 });
    // Nothing is live: the job waits. A worker appears; the cron's backstop pass places the job even if
    // no request-time pass ran after the registration.
    const next = new AgentProcess('edge-node-2', urls[1]!, { cpus: 2, env: agentEnv() });
    agents.push(next);
    await next.registered();
    await fireCron(isolates[0]!, '* * * * *');
    await eventually(
      async () => (await api<{ state: string }>(`/api/v1/jobs/${body.id}`)).body.state === 'COMPLETED',
      {
        what: 'the job to complete',
      },
    );
  });

  it('sends event webhooks right after the request that caused them, retries from the minute cron of another isolate (verified by standardwebhooks)', async () => {
    const received: { headers: Record<string, string>; body: string; status: number }[] = [];
    let status = 503;
    const receiver = http.createServer((req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => {
        body += c.toString();
      });
      req.on('end', () => {
        received.push({ headers: req.headers as Record<string, string>, body, status });
        res.writeHead(status).end();
      });
    });
    await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
    try {
      const { port } = receiver.address() as { port: number };
      const sub = await api<{ id: number; secret: string; scope: string }>('/api/v1/subscriptions', {
        method: 'POST',
        body: JSON.stringify({ url: `http://127.0.0.1:${port}/hook`, events: ['END'] }),
      });
      expect(sub.status).toBe(201);
      expect(sub.body.scope).toBe('cluster');
      // Held, then cancelled: an END, sent by isolate 0 within the cancel's invocation (waitUntil).
      const { body: job } = await submit({ script: 'true', cpus: 1, hold: true }, urls[0]);
      expect((await api(`/api/v1/jobs/${job.id}/cancel`, { method: 'POST' }, urls[0])).status).toBe(200);
      await eventually(() => received.length >= 1, { what: 'the first attempt' });
      expect(received.map((r) => r.status)).toEqual([503]);
      // The receiver is back; no timer runs between requests on Workers: the retry goes from a cron.
      status = 204;
      await new Promise((resolve) => setTimeout(resolve, 1_000));
      expect(received).toHaveLength(1);
      await fireCron(isolates[1]!, '* * * * *');
      await eventually(() => received.length >= 2, { what: 'the retry' });
      const payload = new Webhook(sub.body.secret).verify(received[1]!.body, received[1]!.headers) as {
        type: string;
        data: { job_id: number; state: string };
      };
      expect(payload).toMatchObject({ type: 'job.end', data: { job_id: job.id, state: 'CANCELLED' } });
      expect(received[1]!.headers['webhook-id']).toBe(received[0]!.headers['webhook-id']);
      // Delivered once: the next cron sends nothing again.
      await fireCron(isolates[0]!, '* * * * *');
      expect(received).toHaveLength(2);
      expect((await api(`/api/v1/subscriptions/${sub.body.id}`, { method: 'DELETE' })).status).toBe(200);
    } finally {
      receiver.close();
    }
  });

  it('the 5-minute cron repairs a cache that was set wrong', async () => {
    await redis.set('resource:allocated_cpus', '777');
    await fireCron(isolates[1]!, '*/5 * * * *');
    const snapshot = await readAllocationSnapshot(database.db);
    expect(await redis.get('resource:allocated_cpus')).toBe(String(snapshot.allocated));
  });

  it('stays consistent under concurrent requests and crons across two isolates', async () => {
    // Three more live workers (registered through both isolates), then a burst: submissions, cancels and
    // finishes through both isolates while both fire crons.
    const more = ['edge-a', 'edge-b', 'edge-c'].map(
      (id, i) => new AgentProcess(id, urls[i % 2]!, { cpus: 3, env: agentEnv() }),
    );
    agents.push(...more);
    await Promise.all(more.map((a) => a.registered()));
    const ids: number[] = [];
    const burst = Array.from({ length: 40 }, async (_, i) => {
      const { body } = await submit(
        { script: i % 5 === 0 ? 'sleep 30' : 'true', cpus: (i % 3) + 1 },
        urls[i % 2],
      );
      ids.push(body.id);
      if (i % 7 === 0) await api(`/api/v1/jobs/${body.id}/cancel`, { method: 'POST' }, urls[(i + 1) % 2]);
    });
    const crons = isolates.flatMap((mf) => [fireCron(mf, '* * * * *'), fireCron(mf, '*/5 * * * *')]);
    await Promise.all([...burst, ...crons]);
    // Cancel the long sleepers so that everything settles.
    await eventually(
      async () => {
        const { body } = await api<{ jobs: { id: number; state: string }[] }>(
          '/api/v1/jobs?state=PENDING,RUNNING&limit=100',
        );
        for (const job of body.jobs) {
          if (job.state === 'RUNNING')
            await api(`/api/v1/jobs/${job.id}/cancel`, { method: 'POST' }, urls[1]);
        }
        return body.jobs.length === 0;
      },
      { timeoutMs: 60_000, intervalMs: 500, what: 'all jobs to end' },
    );
    await fireCron(isolates[0]!, '*/5 * * * *');
    const production = createIoredisScripts(REDIS_DB_URL, { onError: () => {} });
    await checkInvariants(database.db, new RedisRegistryStore(production.scripts));
    await production.close();
    const snapshot = await readAllocationSnapshot(database.db);
    expect(Number(await redis.get('resource:allocated_cpus'))).toBe(snapshot.allocated);
    expect(snapshot.allocated).toBe(0);
    expect(ids.length).toBe(40);
    const keys = execFileSync('redis-cli', ['-n', '10', 'KEYS', 'worker:*'], { encoding: 'utf8' })
      .trim()
      .split('\n');
    expect(keys.sort()).toEqual(['worker:edge-a', 'worker:edge-b', 'worker:edge-c', 'worker:edge-node-2']);
  }, 120_000);
});
