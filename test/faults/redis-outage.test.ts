/**
 * Redis is only a cache: a private redis-server is killed mid-run and restarted empty, then flushed while
 * jobs run. The control plane (in this process, timers on) and real agents must carry on from Postgres, with
 * no 5xx, no job lost or killed, and the registry and cache refilled once Redis is back.
 */
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createPostgresDatabase } from '../support/databases.ts';
import { freePort, ServerProcess } from '../support/server-process.ts';
import {
  type AgentProcess,
  Api,
  agent5xxLines,
  allocationSum,
  eventually,
  type FaultCluster,
  faultServicesAvailable,
  type JobView,
  seconds,
  sleep,
  startAgent,
  startFaultCluster,
  stopAgents,
  tempDir,
} from './harness.ts';

const available = await faultServicesAvailable();

interface Dashboard {
  resources: { total_cpus: number; allocated_cpus: number; available_cpus: number };
  workers: { worker_id: string; status: string }[];
  jobs: Record<string, number>;
}
interface Health {
  status: string;
  database: { status: string };
  cache: { status: string; kind: string };
}

describe.runIf(available)('Redis outage (a private redis-server killed, restarted, flushed)', () => {
  let cluster: FaultCluster;
  let agents: AgentProcess[] = [];
  const registrations = (agent: AgentProcess) =>
    agent.lines.filter((l) => l.includes(`✓ Worker registered: ${agent.nodeName}`)).length;
  const workerKeys = () => cluster.redis.cli('KEYS', 'worker:*').split('\n').filter(Boolean).sort();

  beforeAll(async () => {
    cluster = await startFaultCluster({ cacheSyncIntervalSeconds: 2 });
    agents = [startAgent('cache-a', cluster.server.url), startAgent('cache-b', cluster.server.url)];
    await Promise.all(agents.map((a) => a.registered()));
  });
  afterEach(async () => {
    cluster.api.expectNo5xx();
    for (const agent of agents) expect(agent5xxLines(agent), agent.nodeName).toEqual([]);
    expect(cluster.server.logger.lines.filter((l) => l.includes('Unhandled error'))).toEqual([]);
  });
  afterAll(async () => {
    await stopAgents(agents);
    await cluster?.close();
  });

  it('Redis down: jobs are accepted, run and finish, the dashboard comes from Postgres, health says degraded; back up: agents re-register, keys and cache return', async () => {
    const { api, redis } = cluster;
    expect(workerKeys()).toEqual(['worker:cache-a', 'worker:cache-b']);
    const long = await api.submit({ name: 'long', script: 'echo long started; sleep 30', cpus: 1 });
    await api.waitJob(long.id, (j) => j.start_time !== null, 15_000, 'the long job to start');

    await redis.kill('SIGKILL');
    const downAt = Date.now();

    const during = [];
    for (let i = 0; i < 3; i++) {
      during.push(
        await api.submit({
          name: `during-${i}`,
          script: 'echo "during $CONDUCTOR_JOB_ID"; sleep 1',
          cpus: 1,
        }),
      );
    }
    const ended = await Promise.all(during.map((j) => api.waitJob(j.id)));
    expect(ended.map((j) => j.state)).toEqual(['COMPLETED', 'COMPLETED', 'COMPLETED']);
    for (const job of during) expect((await api.logs(job.id)).stdout).toBe(`during ${job.id}\n`);

    const dashboard = await api.get<Dashboard>('/api/v1/dashboard');
    expect(dashboard.status).toBe(200);
    expect(dashboard.body.resources).toMatchObject({ total_cpus: 4, allocated_cpus: 1, available_cpus: 3 });
    expect(dashboard.body.workers.map((w) => w.worker_id)).toEqual(['cache-a', 'cache-b']);
    expect(dashboard.body.jobs).toMatchObject({ RUNNING: 1, COMPLETED: 3 });
    const health = await api.get<Health>('/api/v1/health');
    expect(health.status).toBe(200);
    expect(health.body).toMatchObject({
      status: 'degraded',
      database: { status: 'ok' },
      cache: { status: 'down', kind: 'redis' },
    });
    expect((await api.get('/api/v1/workers')).status).toBe(200);
    expect((await api.get('/api/v1/jobs?state=RUNNING')).status).toBe(200);
    expect(cluster.server.logger.has('Registry unavailable, falling back to Postgres')).toBe(true);

    // Stay down past the TTL: heartbeats still reach Postgres, so nobody is declared lost.
    await sleep(Math.max(0, downAt + (cluster.config.workerTtlSeconds + 1) * 1000 - Date.now()));
    expect(await api.job(long.id)).toMatchObject({ state: 'RUNNING', attempt: 1 });
    expect(cluster.server.logger.has('Worker lost')).toBe(false);

    // Redis comes back empty: the next heartbeat of each agent finds its key gone and registers again.
    const before = agents.map(registrations);
    const syncsBefore = cluster.server.logger.lines.length;
    await redis.start();
    const upAt = Date.now();
    await eventually(() => agents.every((a, i) => registrations(a) === before[i]! + 1), {
      timeoutMs: 15_000,
      what: 'both agents to register again',
    });
    console.log(
      `[measure] Redis down ${seconds(upAt - downAt)} s; agents registered again ${seconds(Date.now() - upAt)} s after it came back`,
    );
    await eventually(() => workerKeys().length === 2, { timeoutMs: 5_000, what: 'the worker keys' });
    expect(workerKeys()).toEqual(['worker:cache-a', 'worker:cache-b']);
    expect(redis.hash('worker:cache-a')).toMatchObject({ worker_id: 'cache-a', cpus: '2', status: 'ready' });

    // After a cache sync, resource:allocated_cpus is the Postgres SUM (the long job's CPU).
    await eventually(
      () => cluster.server.logger.lines.slice(syncsBefore).some((l) => l.includes('Resource cache synced')),
      { timeoutMs: 10_000, what: 'a cache sync' },
    );
    expect(await allocationSum(cluster.db)).toBe(1);
    expect(redis.cli('GET', 'resource:allocated_cpus')).toBe('1');
    expect((await api.get<Health>('/api/v1/health')).body).toMatchObject({
      status: 'ok',
      cache: { status: 'ok' },
    });

    expect((await api.post<JobView>(`/api/v1/jobs/${long.id}/cancel`)).status).toBe(200);
    expect(await api.waitJob(long.id)).toMatchObject({ state: 'CANCELLED', attempt: 1 });
    expect((await api.logs(long.id)).stdout).toBe('long started\n');
    await cluster.invariants();
  }, 60_000);

  it('FLUSHALL while jobs run: no job is killed, the agents register again, the cache refills', async () => {
    const { api, redis } = cluster;
    const jobs = [
      await api.submit({
        script: 'echo "a $CONDUCTOR_JOB_ID"; sleep 4; echo "b $CONDUCTOR_JOB_ID"',
        cpus: 1,
      }),
      await api.submit({
        script: 'echo "a $CONDUCTOR_JOB_ID"; sleep 4; echo "b $CONDUCTOR_JOB_ID"',
        cpus: 2,
      }),
    ];
    for (const job of jobs) await api.waitJob(job.id, (j) => j.start_time !== null, 15_000, 'job start');
    const before = agents.map(registrations);
    const linesBefore = cluster.server.logger.lines.length;

    expect(redis.cli('FLUSHALL')).toBe('OK');
    expect(workerKeys()).toEqual([]);

    await eventually(() => agents.every((a, i) => registrations(a) === before[i]! + 1), {
      timeoutMs: 10_000,
      what: 'both agents to register again',
    });
    await eventually(() => workerKeys().length === 2, { timeoutMs: 5_000, what: 'the worker keys' });
    // The jobs still run (3 CPUs): a read refills the missing cache key from Postgres.
    const running = await Promise.all(jobs.map((j) => api.job(j.id)));
    expect(running.map((j) => j.state)).toEqual(['RUNNING', 'RUNNING']);
    const dashboard = await api.get<Dashboard>('/api/v1/dashboard');
    expect(dashboard.body.resources).toMatchObject({ total_cpus: 4, allocated_cpus: 3 });
    // Refilled by that read ("Cache miss, querying database") or by the 2 s sync, whichever came first.
    const refills = cluster.server.logger.lines
      .slice(linesBefore)
      .filter((l) => /Cache miss, querying database|Resource cache synced/.test(l));
    expect(refills.length).toBeGreaterThan(0);
    expect(redis.cli('GET', 'resource:allocated_cpus')).toBe('3');

    const ended = await Promise.all(jobs.map((j) => api.waitJob(j.id)));
    for (const job of ended) {
      expect(job).toMatchObject({ state: 'COMPLETED', exit_code: '0:0', attempt: 1 });
      expect((await api.logs(job.id)).stdout).toBe(`a ${job.id}\nb ${job.id}\n`);
    }
    expect(cluster.server.logger.has('Worker lost')).toBe(false);
    await cluster.invariants();
    expect(redis.cli('GET', 'resource:allocated_cpus')).toBe('0');
  }, 60_000);
});

describe.runIf(available)('the server process started while Redis is down', () => {
  it('serves, runs a job on its embedded agent, and stops on SIGTERM with exit code 0', async () => {
    const [db, port, deadRedisPort] = await Promise.all([createPostgresDatabase(), freePort(), freePort()]);
    const server = new ServerProcess(port, {
      DATABASE_URL: db.url!,
      REDIS_URL: `redis://127.0.0.1:${deadRedisPort}`,
      CONDUCTOR_DATA_DIR: join(tempDir('redis-down-start-'), 'data'),
      CONDUCTOR_HEARTBEAT_INTERVAL: '2',
      CONDUCTOR_WORKER_TTL: '6',
      CONDUCTOR_SCHEDULE_INTERVAL: '1',
    });
    try {
      await server.ready(60_000);
      // Before, the start waited on the wake bus's subscription: the port answered, but the start went no
      // further (no timers, no embedded agent, no signal handling) until Redis came.
      await eventually(() => server.has('Conductor control plane listening on'), {
        timeoutMs: 15_000,
        what: 'the start to finish',
      });
      const api = new Api(server.url);
      const job = await api.submit({ script: 'echo ran without Redis', cpus: 1 });
      expect(await api.waitJob(job.id, undefined, 45_000)).toMatchObject({ state: 'COMPLETED' });
      expect((await api.logs(job.id)).stdout).toBe('ran without Redis\n');
      api.expectNo5xx();
    } finally {
      const exitCode = await server.stop();
      await db.close();
      expect(exitCode).toBe(0);
    }
  }, 120_000);
});
