/**
 * Time limits and graceful drains, with real agent processes: a job over its limit is killed (its whole
 * process group) and ends TIMEOUT with its output kept; a drained worker (by the API, or an agent stopped
 * with --drain) takes no new job and lets its running ones finish.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  type AgentProcess,
  agent5xxLines,
  eventually,
  type FaultCluster,
  faultServicesAvailable,
  groupAlive,
  type JobView,
  seconds,
  sleep,
  startAgent,
  startFaultCluster,
  stopAgents,
  tempDir,
  workerRow,
} from './harness.ts';

const available = await faultServicesAvailable();

interface LiveWorker {
  worker_id: string;
  status: string;
  cpus: number;
  allocated_cpus: number;
}
interface Dashboard {
  resources: { total_cpus: number; allocated_cpus: number; available_cpus: number };
  workers: LiveWorker[];
}

describe.runIf(available)('time limits and drains', () => {
  let cluster: FaultCluster;
  const agents: AgentProcess[] = [];
  const dir = tempDir('conductor-drain-');
  const track = (agent: AgentProcess) => {
    agents.push(agent);
    return agent;
  };
  const dashboard = async () => (await cluster.api.get<Dashboard>('/api/v1/dashboard')).body;
  const liveWorkers = async () =>
    (await cluster.api.get<{ workers: LiveWorker[] }>('/api/v1/workers')).body.workers;

  beforeAll(async () => {
    cluster = await startFaultCluster();
  });
  afterEach(() => {
    cluster.api.expectNo5xx();
    for (const agent of agents) expect(agent5xxLines(agent), agent.nodeName).toEqual([]);
  });
  afterAll(async () => {
    await stopAgents(agents);
    await cluster?.close();
  });

  it('time_limit "0:02" on sleep 60: TIMEOUT after 2 s, the output kept, the process group gone', async () => {
    const { api } = cluster;
    const agent = track(startAgent('limit-a', cluster.server.url));
    await agent.registered();
    const pidFile = join(dir, 'limit.pid');
    const job = await api.submit({
      script: `echo $$ > ${pidFile}; echo "before the limit"; sleep 60; echo "after the limit"`,
      cpus: 1,
      time_limit: '0:02',
    });
    const done = await api.waitJob(job.id, undefined, 20_000);
    const ran = Date.parse(done.end_time!) - Date.parse(done.start_time!);
    console.log(`[measure] time_limit 0:02: ended TIMEOUT after ${seconds(ran)} s`);
    expect(done).toMatchObject({ state: 'TIMEOUT', exit_code: '0:15', node: 'limit-a' });
    expect(done.reason).toMatch(/time limit of 2 s exceeded/);
    expect(ran).toBeGreaterThanOrEqual(1_800);
    expect(ran).toBeLessThan(10_000); // not the 60 s of the script (the reports may lag on a loaded machine)
    expect((await api.logs(job.id)).stdout).toBe('before the limit\n');
    const pgid = Number(readFileSync(pidFile, 'utf8').trim());
    expect(pgid).toBeGreaterThan(1);
    expect(groupAlive(pgid)).toBe(false); // bash and its sleep 60
    await cluster.invariants();
    expect(await agent.stop()).toBe(0);
  }, 45_000);

  it('POST /drain: no new job goes there, the running one finishes, "draining" in Redis, the API and the dashboard; /undrain restores it', async () => {
    const { api, redis } = cluster;
    const a = track(startAgent('drain-a', cluster.server.url, { cpus: 2 }));
    const b = track(startAgent('drain-b', cluster.server.url, { cpus: 4 }));
    await Promise.all([a.registered(), b.registered()]);
    // Best fit puts it on drain-a (1 CPU left there, 3 on drain-b).
    const running = await api.submit({ script: 'echo running; sleep 3; echo finished', cpus: 1 });
    await api.waitJob(running.id, (j) => j.start_time !== null, 15_000, 'job start');
    expect((await api.job(running.id)).node).toBe('drain-a');

    const drain = await api.post<{ worker_id: string; status: string }>('/api/v1/workers/drain-a/drain');
    expect(drain.status).toBe(200);
    expect(drain.body).toEqual({ worker_id: 'drain-a', status: 'draining' });
    expect(redis.cli('HGET', 'worker:drain-a', 'status')).toBe('draining');
    expect((await liveWorkers()).find((w) => w.worker_id === 'drain-a')?.status).toBe('draining');
    const drained = await dashboard();
    expect(drained.workers.find((w) => w.worker_id === 'drain-a')?.status).toBe('draining');
    // 6 CPUs, 1 allocated, and drain-a's free CPU is not available.
    expect(drained.resources).toEqual(
      expect.objectContaining({ total_cpus: 6, allocated_cpus: 1, available_cpus: 4 }),
    );
    await a.waitForLine(/Worker status: draining/, 5_000); // its next heartbeat hears it
    // Heartbeats keep the status (the agent's own "ready" does not undo an operator's drain).
    await sleep(1_500);
    expect(redis.cli('HGET', 'worker:drain-a', 'status')).toBe('draining');

    // Without the drain the first of these would go to drain-a (best fit): all go to drain-b.
    const more: JobView[] = [];
    for (let i = 0; i < 3; i++) more.push(await api.submit({ script: `echo more ${i}`, cpus: 1 }));
    for (const job of more) {
      expect(await api.waitJob(job.id)).toMatchObject({ state: 'COMPLETED', node: 'drain-b' });
    }
    expect(await api.waitJob(running.id)).toMatchObject({ state: 'COMPLETED', node: 'drain-a' });
    expect((await api.logs(running.id)).stdout).toBe('running\nfinished\n');

    const undrain = await api.post<{ worker_id: string; status: string }>('/api/v1/workers/drain-a/undrain');
    expect(undrain.body).toEqual({ worker_id: 'drain-a', status: 'ready' });
    expect(redis.cli('HGET', 'worker:drain-a', 'status')).toBe('ready');
    expect((await liveWorkers()).find((w) => w.worker_id === 'drain-a')?.status).toBe('ready');
    const restored = await dashboard();
    expect(restored.workers.find((w) => w.worker_id === 'drain-a')?.status).toBe('ready');
    expect(restored.resources).toEqual(
      expect.objectContaining({ total_cpus: 6, allocated_cpus: 0, available_cpus: 6 }),
    );
    const back = await api.submit({ script: 'echo back', cpus: 1 });
    expect(await api.waitJob(back.id)).toMatchObject({ state: 'COMPLETED', node: 'drain-a' });

    await cluster.invariants();
    expect(await Promise.all([a.stop(), b.stop()])).toEqual([0, 0]);
  }, 60_000);

  it('agent --drain, SIGTERM while a job runs: heartbeats "draining" at once, gets no new job, lets the job complete, unregisters, exits 0', async () => {
    const { api, redis } = cluster;
    const agent = track(startAgent('drain-c', cluster.server.url, { cpus: 4, args: ['--drain'] }));
    await agent.registered();
    const job = await api.submit({ script: 'echo start; sleep 8; echo end', cpus: 1 });
    await api.waitJob(job.id, (j) => j.start_time !== null, 15_000, 'job start');

    const exit = agent.waitForExit();
    const termAt = Date.now();
    agent.child.kill('SIGTERM');
    await eventually(() => redis.cli('HGET', 'worker:drain-c', 'status') === 'draining', {
      timeoutMs: 8_000,
      intervalMs: 20,
      what: 'the draining heartbeat',
    });
    const drainingAfter = Date.now() - termAt;
    console.log(`[measure] agent --drain: SIGTERM → "draining" in Redis after ${drainingAfter} ms`);
    // At once, not at the next heartbeat: while the job still runs (no timing bound on a loaded machine).
    expect((await api.job(job.id)).state).toBe('RUNNING');
    expect(await agent.waitForLine(/Draining: waiting for 1 running job/)).toBeTruthy();
    expect((await liveWorkers()).find((w) => w.worker_id === 'drain-c')?.status).toBe('draining');

    // drain-c is the only worker: a job submitted now stays in the queue.
    const probe = await api.submit({ script: 'echo must not run here', cpus: 1 });
    expect(await api.waitJob(job.id, undefined, 20_000)).toMatchObject({
      state: 'COMPLETED',
      exit_code: '0:0',
    });
    expect((await api.logs(job.id)).stdout).toBe('start\nend\n');
    expect(await exit).toBe(0);
    await agent.waitForLine(/Worker unregistered: drain-c/);
    expect(await api.job(probe.id)).toMatchObject({ state: 'PENDING', node: null, attempt: 0 });
    expect(agent.lines.some((l) => l.includes(`Job ${probe.id}.`))).toBe(false);
    expect(await workerRow(cluster.db, 'drain-c')).toMatchObject({
      status: 'down',
      down_reason: 'unregistered',
    });
    expect(redis.cli('EXISTS', 'worker:drain-c')).toBe('0');

    expect((await api.post(`/api/v1/jobs/${probe.id}/cancel`)).status).toBe(200);
    await cluster.invariants();
  }, 45_000);
});
