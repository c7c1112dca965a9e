/**
 * Retries with real agents (issue 16 item 4): agent processes killed with SIGKILL until the job has used its
 * requeues, a script that fails until it is restarted, and the crash limit; against a real control plane (in
 * this process, timers on) over Postgres and a private redis-server. TTL 4 s, heartbeats 1 s, reaping every 1 s.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  type AgentProcess,
  eventually,
  type FaultCluster,
  faultServicesAvailable,
  type JobView,
  signalGroup,
  startAgent,
  startFaultCluster,
  stopAgents,
  tempDir,
  waitPgid,
} from './harness.ts';

const available = await faultServicesAvailable();

interface Attempt {
  attempt: number;
  node: string | null;
  start_time: string | null;
  end_time: string | null;
  state: string;
  exit_code: string | null;
  reason: string | null;
  requeued: boolean;
}
type Job = JobView & { requeues: number; crashes: number; reason_detail: string | null; attempts: Attempt[] };

describe.runIf(available)('retries with real agents (kill -9, failing scripts)', () => {
  let cluster: FaultCluster;
  const agents: AgentProcess[] = [];
  const groups: number[] = [];
  const dir = tempDir('conductor-retries-');
  const track = (agent: AgentProcess) => {
    agents.push(agent);
    return agent;
  };
  const job = async (id: number) => (await cluster.api.job(id)) as Job;
  const read = (file: string) => {
    try {
      return readFileSync(file, 'utf8');
    } catch {
      return '';
    }
  };

  beforeAll(async () => {
    cluster = await startFaultCluster();
  });
  afterEach(async () => {
    await stopAgents(agents.splice(0));
    cluster.api.expectNo5xx();
    expect(cluster.server.logger.lines.filter((l) => l.includes('Unhandled error'))).toEqual([]);
  });
  afterAll(async () => {
    await stopAgents(agents);
    for (const pgid of groups) signalGroup(pgid, 'SIGKILL');
    await cluster?.close();
  });

  /**
   * Starts an agent named `name` (the only live one), waits until the job runs there (its agent reported it
   * started), checks what the script printed, and kills the agent with SIGKILL. Resolves once the control
   * plane declared the node lost (the job left RUNNING).
   */
  async function runAndKill(id: number, name: string, attempt: number, expectedOutput: string) {
    const { api } = cluster;
    const agent = track(startAgent(name, cluster.server.url, { cpus: 2 }));
    await agent.registered();
    const running = (await api.waitJob(
      id,
      (j) => j.state === 'RUNNING' && j.node === name && j.start_time !== null,
      20_000,
      `job ${id} to start on ${name}`,
    )) as Job;
    expect(running.attempt).toBe(attempt);
    groups.push(await waitPgid(agent, id, attempt));
    await eventually(async () => (await api.logs(id)).stdout === expectedOutput || undefined, {
      timeoutMs: 10_000,
      what: `job ${id} attempt ${attempt} to print ${JSON.stringify(expectedOutput)}`,
    });
    const killedAt = Date.now();
    await agent.kill9();
    const after = await api.waitJob(
      id,
      (j) => j.state !== 'RUNNING',
      20_000,
      `node ${name} to be declared lost`,
    );
    return { job: after as Job, killedAt };
  }

  it('a job killed with its node is requeued exactly its retry count and then ends NODE_FAIL with every attempt recorded', async () => {
    const { api } = cluster;
    const submitted = await api.submit({
      name: 'node-killer',
      cpus: 1,
      requeue: true,
      max_requeues: 2,
      crash_limit: 0,
      script: `echo "restart=\${SLURM_RESTART_COUNT:-unset}"; sleep 300`,
    });
    const killed: number[] = [];
    const outputs = ['restart=unset\n', 'restart=1\n', 'restart=2\n'];
    for (let round = 0; round < 3; round++) {
      const { job: after, killedAt } = await runAndKill(
        submitted.id,
        `retry-node-${round + 1}`,
        round + 1,
        outputs[round]!,
      );
      killed.push(killedAt);
      if (round < 2) {
        expect(after).toMatchObject({ state: 'PENDING', requeues: round + 1, node: null });
        expect(after.attempts.at(-1)).toMatchObject({
          attempt: round + 1,
          state: 'NODE_FAIL',
          requeued: true,
        });
      }
    }
    const final = await job(submitted.id);
    expect(final).toMatchObject({
      state: 'NODE_FAIL',
      requeues: 2,
      crashes: 3,
      node: 'retry-node-3',
      exit_code: '0:0',
    });
    expect(final.reason).toMatch(
      /^node lost: its heartbeat lapsed; not requeued: it was requeued 2 times already/,
    );
    expect(final.attempts.map((a) => [a.attempt, a.node, a.state, a.requeued])).toEqual([
      [1, 'retry-node-1', 'NODE_FAIL', true],
      [2, 'retry-node-2', 'NODE_FAIL', true],
      [3, 'retry-node-3', 'NODE_FAIL', false],
    ]);
    final.attempts.forEach((a, k) => {
      const start = Date.parse(a.start_time!);
      const end = Date.parse(a.end_time!);
      // It ran before its node was killed, and ended when the node was declared lost: at least a TTL later.
      expect(start, `attempt ${a.attempt} start`).toBeLessThan(killed[k]!);
      expect(end - killed[k]!, `attempt ${a.attempt} end after the kill`).toBeGreaterThanOrEqual(
        cluster.config.workerTtlSeconds * 1000 - 1_500,
      );
      if (k > 0) expect(start).toBeGreaterThan(Date.parse(final.attempts[k - 1]!.end_time!));
    });
    expect(final.end_time).toBe(final.attempts[2]!.end_time);
    await cluster.invariants();
  }, 120_000);

  it('retry_on_failure: a failing script is requeued after its back-off and sees SLURM_RESTART_COUNT', async () => {
    const { api } = cluster;
    const marks = join(dir, 'failing.marks');
    const agent = track(startAgent('retry-fail', cluster.server.url, { cpus: 2 }));
    await agent.registered();
    const submitted = await api.submit({
      name: 'flaky',
      cpus: 1,
      retry_on_failure: true,
      max_requeues: 3,
      retry_backoff_s: 3,
      // Fails on its first run, succeeds once it was restarted.
      script: [
        `echo "restart=\${SLURM_RESTART_COUNT:-unset}" >> ${marks}`,
        `[ "\${SLURM_RESTART_COUNT:-0}" -ge 1 ] || exit 3`,
      ].join('\n'),
    });
    const waiting = await api.waitJob(
      submitted.id,
      (j) => (j as Job).requeues === 1,
      20_000,
      'the first failure',
    );
    expect(waiting.state).toBe('PENDING');
    const done = (await api.waitJob(submitted.id, undefined, 30_000)) as Job;
    expect(done).toMatchObject({
      state: 'COMPLETED',
      exit_code: '0:0',
      requeues: 1,
      node: 'retry-fail',
      attempt: 2,
    });
    expect(read(marks)).toBe('restart=unset\nrestart=1\n');
    expect(done.attempts.map((a) => [a.attempt, a.node, a.state, a.exit_code, a.requeued])).toEqual([
      [1, 'retry-fail', 'FAILED', '3:0', true],
      [2, 'retry-fail', 'COMPLETED', '0:0', false],
    ]);
    // Not started again before its back-off of 3 s (both times are Postgres's).
    const [first, second] = done.attempts as [Attempt, Attempt];
    expect(Date.parse(second.start_time!) - Date.parse(first.end_time!)).toBeGreaterThanOrEqual(3_000);
    await cluster.invariants();
  }, 60_000);

  it('the crash limit stops requeues: the second loss of its node while it runs ends it NODE_FAIL, requeues left', async () => {
    const { api } = cluster;
    const submitted = await api.submit({
      name: 'crasher',
      cpus: 1,
      requeue: true,
      max_requeues: 10,
      crash_limit: 2,
      script: `echo "restart=\${SLURM_RESTART_COUNT:-unset}"; sleep 300`,
    });
    const first = await runAndKill(submitted.id, 'crash-node-1', 1, 'restart=unset\n');
    expect(first.job).toMatchObject({ state: 'PENDING', requeues: 1, crashes: 1 });
    const second = await runAndKill(submitted.id, 'crash-node-2', 2, 'restart=1\n');
    expect(second.job).toMatchObject({ state: 'NODE_FAIL', requeues: 1, crashes: 2 });
    expect(second.job.reason).toMatch(
      /not requeued: its node was lost while it ran 2 times \(crash limit 2\)/,
    );
    expect(second.job.attempts.map((a) => [a.node, a.state, a.requeued])).toEqual([
      ['crash-node-1', 'NODE_FAIL', true],
      ['crash-node-2', 'NODE_FAIL', false],
    ]);
    // Nothing runs it again: a live node gets nothing of it.
    const spare = track(startAgent('crash-spare', cluster.server.url, { cpus: 2 }));
    await spare.registered();
    await new Promise((resolve) => setTimeout(resolve, 2_500));
    expect(await job(submitted.id)).toMatchObject({ state: 'NODE_FAIL', attempt: 2 });
    await cluster.invariants();
  }, 90_000);
});
