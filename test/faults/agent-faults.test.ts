/**
 * Nothing lost when an agent dies, freezes or is started twice: real agent processes killed with SIGKILL,
 * frozen with SIGSTOP/SIGCONT, against a real control plane (in this process, timers on) over Postgres and a
 * private redis-server. TTL 4 s, heartbeats 1 s, reaping every 1 s.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createToken } from '../../functions/domain/auth.ts';
import {
  type AgentProcess,
  allocationSum,
  eventually,
  FAULT_TIMING,
  type FaultCluster,
  faultServicesAvailable,
  groupAlive,
  jobFolders,
  seconds,
  signalGroup,
  startAgent,
  startFaultCluster,
  stopAgents,
  tempDir,
  waitPgid,
  workerRow,
} from './harness.ts';

const available = await faultServicesAvailable();

interface WorkerRecord {
  worker_id: string;
  cpus: number;
  status: string;
  live: boolean;
  down_at: string | null;
  down_reason: string | null;
}

describe.runIf(available)('agent faults (kill -9, SIGSTOP, one name twice)', () => {
  let cluster: FaultCluster;
  const agents: AgentProcess[] = [];
  const groups: number[] = [];
  const dir = tempDir('conductor-agent-faults-');
  const track = (agent: AgentProcess) => {
    agents.push(agent);
    return agent;
  };
  const url = () => cluster.server.url;
  const read = (file: string) => {
    try {
      return readFileSync(file, 'utf8');
    } catch {
      return '';
    }
  };
  const allWorkers = async () =>
    (await cluster.api.get<{ workers: WorkerRecord[] }>('/api/v1/workers?all=1')).body.workers;

  beforeAll(async () => {
    cluster = await startFaultCluster();
  });
  afterEach(() => {
    cluster.api.expectNo5xx();
    expect(cluster.server.logger.lines.filter((l) => l.includes('Unhandled error'))).toEqual([]);
  });
  afterAll(async () => {
    await stopAgents(agents);
    for (const pgid of groups) signalGroup(pgid, 'SIGKILL');
    await cluster?.close();
  });

  it('kill -9: its jobs end NODE_FAIL one reap after the TTL; the requeue job runs once on another node', async () => {
    const { api } = cluster;
    const marks = join(dir, 'kill9.marks');
    const a = track(startAgent('kill9-a', url(), { cpus: 2 }));
    await a.registered();
    const plain = await api.submit({ name: 'plain', script: 'echo plain started; sleep 300', cpus: 1 });
    const requeued = await api.submit({
      name: 'requeued',
      requeue: true,
      cpus: 1,
      // The first attempt would run for minutes: it is the one the kill interrupts.
      script: [
        `echo "start $CONDUCTOR_ATTEMPT" >> ${marks}`,
        'echo "attempt $CONDUCTOR_ATTEMPT running"',
        'if [ "$CONDUCTOR_ATTEMPT" = 1 ]; then sleep 300; else sleep 1; fi',
        `echo "done $CONDUCTOR_ATTEMPT" >> ${marks}`,
        'echo "attempt $CONDUCTOR_ATTEMPT finished"',
      ].join('\n'),
    });
    // Both went to kill9-a, the only worker; the survivor joins once they run.
    const [plainPgid, requeuedPgid] = await Promise.all([
      waitPgid(a, plain.id, 1),
      waitPgid(a, requeued.id, 1),
    ]);
    groups.push(plainPgid, requeuedPgid);
    const b = track(startAgent('kill9-b', url(), { cpus: 2 }));
    for (const id of [plain.id, requeued.id]) {
      const job = await api.waitJob(id, (j) => j.start_time !== null, 15_000, `job ${id} to start`);
      expect(job).toMatchObject({ state: 'RUNNING', node: 'kill9-a', attempt: 1 });
    }
    await b.registered();

    const killedAt = Date.now();
    await a.kill9();
    // The agent is gone, and its jobs' processes with it (their supervisors kill them): a job never outlives
    // its agent, so nothing of attempt 1 runs on while the requeued attempt 2 starts elsewhere.
    await eventually(() => !groupAlive(plainPgid) && !groupAlive(requeuedPgid), {
      timeoutMs: 15_000,
      what: 'the jobs to die with their agent',
    });

    const failed = await api.waitJob(plain.id, (j) => j.state === 'NODE_FAIL', 20_000, 'NODE_FAIL');
    const failedAt = Date.parse(failed.end_time!);
    const lastHeartbeat = new Date((await workerRow(cluster.db, 'kill9-a'))!.last_heartbeat).getTime();
    const ttl = FAULT_TIMING.workerTtlSeconds * 1000;
    const reapInterval = FAULT_TIMING.scheduleIntervalSeconds * 1000;
    console.log(
      `[measure] kill -9 → NODE_FAIL: ${seconds(failedAt - killedAt)} s after the kill, ` +
        `${seconds(failedAt - lastHeartbeat)} s after the last heartbeat (TTL ${ttl / 1000} s, reap every ${reapInterval / 1000} s)`,
    );
    // Never before the TTL ran out since the last heartbeat (both times are Postgres's now()); at most one
    // reap interval after it, plus 1 s of slack for a loaded machine (timer lag, the pass itself).
    expect(failedAt - lastHeartbeat).toBeGreaterThanOrEqual(ttl);
    expect(failedAt - lastHeartbeat).toBeLessThanOrEqual(ttl + reapInterval + 1_000);
    expect(failed).toMatchObject({ exit_code: '0:0', node: 'kill9-a' });
    expect(failed.reason).toMatch(/node lost/);

    // The durable record says when and why the worker went down.
    const record = (await allWorkers()).find((w) => w.worker_id === 'kill9-a');
    expect(record).toMatchObject({ status: 'down', live: false });
    expect(record?.down_at).not.toBeNull();
    expect(Date.parse(record!.down_at!)).toBeGreaterThanOrEqual(killedAt);
    expect(record?.down_reason).toMatch(/heartbeat lapsed: silent for \d+ s/);
    expect(cluster.redis.cli('EXISTS', 'worker:kill9-a')).toBe('0');

    // The requeue job went back to the queue and runs again, on the live node, as attempt 2.
    await api.waitJob(
      requeued.id,
      (j) => j.state === 'RUNNING' && j.node === 'kill9-b' && j.attempt === 2,
      10_000,
      'the requeued job to run on kill9-b',
    );

    // The killed agent comes back on the same node and registers again; nothing of its jobs is left.
    const again = track(startAgent('kill9-a', url(), { cpus: 2, stateDir: a.stateDir }));
    await again.registered();
    expect(groupAlive(plainPgid) || groupAlive(requeuedPgid)).toBe(false);

    const done = await api.waitJob(requeued.id, (j) => j.state === 'COMPLETED', 15_000);
    expect(done).toMatchObject({ node: 'kill9-b', attempt: 2, exit_code: '0:0' });
    expect((await api.logs(requeued.id)).stdout).toBe('attempt 2 running\nattempt 2 finished\n');
    expect(read(marks)).toBe('start 1\nstart 2\ndone 2\n'); // the first attempt never finished
    expect((await api.job(plain.id)).state).toBe('NODE_FAIL');

    // Nothing left allocated; the cache says what Postgres says.
    expect(await allocationSum(cluster.db)).toBe(0);
    await cluster.invariants();
    expect(cluster.redis.cli('GET', 'resource:allocated_cpus')).toBe('0');
    await stopAgents([again, b]);
  }, 60_000);

  it('SIGSTOP past the TTL: the frozen node is refused (stale), kills its orphan, registers again, starts clean', async () => {
    const { api } = cluster;
    const marks = join(dir, 'frozen.marks');
    // Its own agent token (internal, like the local cluster's agent's: the cluster stays open), so that the
    // test can speak as the frozen agent below.
    const token = (
      await createToken(
        cluster.db.db,
        { name: 'agent:frozen-a', scopes: ['agent'], owner: 'system' },
        { kind: 'system', tokenId: null, name: 'test', owner: null, scopes: [] },
        { internal: true },
      )
    ).token;
    const asFrozenAgent = async (path: string, body: unknown) => {
      const res = await fetch(`${url()}${path}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
        body: JSON.stringify(body),
      });
      return { status: res.status, body: (await res.json()) as { error: { code: string } } };
    };
    const a = track(startAgent('frozen-a', url(), { cpus: 2, env: { CONDUCTOR_TOKEN: token } }));
    await a.registered();
    const job = await api.submit({
      name: 'ticker',
      requeue: true,
      cpus: 2,
      script: [
        `echo "start $CONDUCTOR_ATTEMPT" >> ${marks}`,
        'for i in 1 2 3 4 5 6 7 8; do echo "tick $CONDUCTOR_ATTEMPT.$i"; sleep 0.5; done',
        `echo "done $CONDUCTOR_ATTEMPT" >> ${marks}`,
        'echo "finished attempt $CONDUCTOR_ATTEMPT"',
      ].join('\n'),
    });
    const pgid = await waitPgid(a, job.id, 1);
    groups.push(pgid);
    const b = track(startAgent('frozen-b', url(), { cpus: 2 }));
    await eventually(async () => (await api.logs(job.id)).stdout.includes('tick 1.1'), {
      timeoutMs: 15_000,
      what: 'the first attempt to stream output',
    });
    await b.registered();
    const session = read(join(a.stateDir, 'session')).trim();
    expect(session).not.toBe('');

    // The whole node freezes: the agent and the job it runs.
    a.child.kill('SIGSTOP');
    signalGroup(pgid, 'SIGSTOP');
    const frozenAt = Date.now();

    const moved = await api.waitJob(
      job.id,
      (j) => j.state === 'RUNNING' && j.node === 'frozen-b' && j.attempt === 2,
      15_000,
      'the job to be requeued onto frozen-b',
    );
    console.log(`[measure] SIGSTOP → requeued on another node: ${seconds(Date.now() - frozenAt)} s`);
    expect(moved.attempt).toBe(2);

    // What the frozen agent will say when it wakes up is refused: its session is gone, its attempt is stale.
    const heartbeat = await asFrozenAgent('/api/v1/agents/heartbeat', {
      worker_id: 'frozen-a',
      session,
    });
    expect(heartbeat.status).toBe(404);
    expect(heartbeat.body.error.code).toBe('unknown_worker');
    const finish = await asFrozenAgent(`/api/v1/agents/jobs/${job.id}/finish`, {
      worker_id: 'frozen-a',
      attempt: 1,
      exit_code: '0:0',
      outcome: 'exited',
    });
    expect(finish.status).toBe(409);
    expect(finish.body.error.code).toBe('stale_assignment');

    const done = await api.waitJob(job.id, (j) => j.state === 'COMPLETED', 20_000);
    expect(done).toMatchObject({ node: 'frozen-b', attempt: 2, exit_code: '0:0' });

    // The node wakes up.
    signalGroup(pgid, 'SIGCONT');
    a.child.kill('SIGCONT');
    await a.waitForLine(
      new RegExp(`Job ${job.id}\\.1 is no longer assigned to this node \\(stale_assignment\\): killing it`),
      15_000,
    );
    await eventually(() => !groupAlive(pgid), { timeoutMs: 10_000, what: 'the orphaned attempt to die' });
    await a.waitForLine(/Registering again: .*unknown_worker/, 15_000);
    await eventually(() => a.lines.filter((l) => l.includes('✓ Worker registered: frozen-a')).length === 2, {
      timeoutMs: 15_000,
      what: 'frozen-a to register again',
    });
    await eventually(() => jobFolders(a).length === 0, {
      timeoutMs: 10_000,
      what: 'frozen-a to drop the job',
    });
    expect(a.child.exitCode).toBeNull();

    // Exactly once, on frozen-b: its output, its attempt, the marks the script left.
    expect((await api.logs(job.id)).stdout).toBe(
      `${[1, 2, 3, 4, 5, 6, 7, 8].map((i) => `tick 2.${i}\n`).join('')}finished attempt 2\n`,
    );
    expect(read(marks)).toBe('start 1\nstart 2\ndone 2\n');
    expect(await api.job(job.id)).toMatchObject({ state: 'COMPLETED', node: 'frozen-b', attempt: 2 });

    // Clean start: frozen-a is live and ready, and runs work again (one 2-CPU job per node).
    const live = await cluster.api.get<{ workers: { worker_id: string; status: string }[] }>(
      '/api/v1/workers',
    );
    expect(live.body.workers.find((w) => w.worker_id === 'frozen-a')?.status).toBe('ready');
    const next = [
      await api.submit({ script: 'echo clean; sleep 1', cpus: 2 }),
      await api.submit({ script: 'echo clean; sleep 1', cpus: 2 }),
    ];
    const ended = await Promise.all(next.map((j) => api.waitJob(j.id)));
    expect(ended.map((j) => j.state)).toEqual(['COMPLETED', 'COMPLETED']);
    expect(ended.map((j) => j.node).sort()).toEqual(['frozen-a', 'frozen-b']);

    await cluster.invariants();
    expect(await Promise.all([a.stop(), b.stop()])).toEqual([0, 0]);
  }, 75_000);

  it('one NODE_NAME twice: the second agent gets worker_name_in_use while the first lives, then registers', async () => {
    const { api } = cluster;
    const first = track(startAgent('twin', url(), { cpus: 2 }));
    await first.registered();
    const second = track(startAgent('twin', url(), { cpus: 3 }));

    const refused = await second.waitForLine(/Worker registration failed/, 15_000);
    expect(refused).toMatch(
      /✗ Worker registration failed: 409 worker_name_in_use: Another agent is registered as twin/,
    );
    // It keeps retrying with the same clear message, and the first agent is left alone.
    await eventually(() => second.lines.filter((l) => l.includes('409 worker_name_in_use')).length >= 2, {
      timeoutMs: 10_000,
      what: 'a second refusal',
    });
    expect(second.child.exitCode).toBeNull();
    const direct = await api.post<{ error: { code: string; message: string } }>('/api/v1/agents/register', {
      worker_id: 'twin',
      hostname: 'elsewhere',
      cpus: 8,
    });
    expect(direct.status).toBe(409);
    expect(direct.body.error.code).toBe('worker_name_in_use');
    const workers = async () =>
      (await api.get<{ workers: { worker_id: string; cpus: number }[] }>('/api/v1/workers')).body.workers;
    expect((await workers()).filter((w) => w.worker_id === 'twin')).toEqual([
      expect.objectContaining({ cpus: 2 }),
    ]);
    expect(first.lines.filter((l) => l.includes('✓ Worker registered'))).toHaveLength(1);
    expect(first.lines.filter((l) => /Heartbeat failed|Registering again/.test(l))).toEqual([]);

    expect(await first.stop()).toBe(0);
    const stoppedAt = Date.now();
    expect(await second.waitForLine(/✓ Worker registered: twin \(3 CPUs\)/, 30_000)).toBeTruthy();
    console.log(
      `[measure] duplicate name: the second agent registered ${seconds(Date.now() - stoppedAt)} s after the first stopped`,
    );
    expect((await workers()).filter((w) => w.worker_id === 'twin')).toEqual([
      expect.objectContaining({ cpus: 3 }),
    ]);
    await cluster.invariants();
    expect(await second.stop()).toBe(0);
  }, 60_000);
});
