/**
 * The agent's life with the control plane when things go wrong between them (review 2026-12-06: M2, M3, M11,
 * L3): a heartbeat answered 503, a job folder that cannot be made, a partition that outlasts the TTL, a stop
 * whose results cannot be delivered. In-process agents (as the CLI runs them) run real jobs against the real
 * server, through a FaultProxy.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sql } from 'drizzle-orm';
import { afterAll, describe, expect, it } from 'vitest';
import { parseAgentArgs } from '../../agent/src/config.ts';
import { main } from '../../cli/main.ts';
import { eventually } from '../support/agent-process.ts';
import {
  agentBackends,
  agentTestConfig,
  type ControlPlane,
  makeGate,
  processGone,
  sentBy,
  useControlPlane,
} from './control-plane.ts';

const { all, pglite } = await agentBackends();
const postgres = all.find((b) => b.name === 'postgres+redis');
const root = mkdtempSync(join(tmpdir(), 'conductor-agent-life-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

async function allocatedCpus(cp: ControlPlane, workerId: string): Promise<{ worker: number; live: number }> {
  const [row] = await cp.rows<{ worker: number; live: string | number | null }>(
    sql`SELECT (SELECT allocated_cpus FROM workers WHERE id = ${workerId}) AS worker,
               (SELECT SUM(allocated_cpus) FROM resource_allocations WHERE released = false) AS live`,
  );
  return { worker: Number(row?.worker), live: Number(row?.live ?? 0) };
}

describe('CONDUCTOR_STOP_AFTER_DISCONNECT', () => {
  it("is the server's TTL unless set; 0 never stops; anything but seconds is refused", () => {
    const stop = (value?: string, argv: string[] = []) => {
      const parsed = parseAgentArgs(
        argv,
        value === undefined ? {} : { CONDUCTOR_STOP_AFTER_DISCONNECT: value },
      );
      return parsed.kind === 'run' ? parsed.config.stopAfterDisconnectS : parsed;
    };
    expect(stop()).toBeUndefined();
    expect(stop('0')).toBe(0);
    expect(stop('90')).toBe(90);
    expect(stop('90', ['--stop-after-disconnect', '5'])).toBe(5);
    expect(stop('soon')).toMatchObject({
      kind: 'error',
      message: expect.stringContaining('CONDUCTOR_STOP_AFTER_DISCONNECT must be a number of seconds'),
    });
  });
});

// The review's hbproxy experiment: heartbeats every 2 s, a TTL of 2 × that (the contract's ratio), and a
// reaper pass every 50 ms so that any moment the worker looks silent for a TTL is caught.
describe.runIf(postgres)('heartbeats on postgres+redis, the reaper running every 50 ms', () => {
  const interval = 2;
  const { control, makeAgent } = useControlPlane(
    postgres!,
    root,
    agentTestConfig({
      heartbeatIntervalSeconds: interval,
      workerTtlSeconds: 2 * interval,
      scheduleIntervalSeconds: 0.05,
    }),
  );

  it('a heartbeat answered 503 is retried at once, well inside the TTL: the worker is never reaped and its job runs on', async () => {
    const cp = control();
    const { agent } = makeAgent({ heartbeatIntervalS: undefined }); // the server's 2 s
    await agent.start();
    const gate = makeGate();
    const job = await cp.submit({ script: `${gate.wait}; echo survived`, cpus: 1, environment: gate.env });
    await cp.started(job.id);

    const beats = () => sentBy(cp, '/agents/heartbeat', agent.workerId);
    const gaps: number[] = [];
    for (let round = 0; round < 3; round++) {
      const from = beats().length;
      cp.proxy.refuse('/agents/heartbeat');
      const [refused, next] = await eventually(
        () => {
          const since = beats().slice(from);
          const i = since.findIndex((b) => b.fault === 'refused');
          const after = since.slice(i + 1).find((b) => b.status !== undefined);
          return i >= 0 && after ? ([since[i]!, after] as const) : undefined;
        },
        { timeoutMs: 20_000, what: `round ${round}: a refused heartbeat and the one after it` },
      );
      expect(next.status, JSON.stringify(next.response)).toBe(200);
      gaps.push(next.at - refused.at);
    }
    // Retried well before the regular interval (the original agent waited a whole interval: the next
    // heartbeat then came a TTL after the last good one, and the reaper could declare the node lost).
    for (const gap of gaps)
      expect(gap, `retry gaps ${gaps.join(', ')} ms`).toBeLessThan(0.75 * interval * 1000);

    expect(cp.server!.logger.has('Worker lost')).toBe(false);
    expect(await cp.worker(agent.workerId)).toMatchObject({ status: 'ready' });
    expect(sentBy(cp, '/agents/register', agent.workerId)).toHaveLength(1);
    expect(await cp.job(job.id)).toMatchObject({ state: 'RUNNING', attempt: 1, node: agent.workerId });
    gate.open();
    expect(await cp.finished(job.id)).toMatchObject({ state: 'COMPLETED', exit_code: '0:0', attempt: 1 });
    expect((await cp.logs(job.id)).stdout.content).toBe('survived\n');
  }, 60_000);
});

describe('the agent and its jobs on pglite+memory', () => {
  const { control, makeAgent } = useControlPlane(pglite, root);

  it('an assignment whose job folder cannot be made ends FAILED with the reason (conductor show prints it), and its CPUs are released', async () => {
    const cp = control();
    const { agent, stateDir } = makeAgent();
    await agent.start();
    // The review's stand-in for a full disk: <state>/jobs is a file, so no job folder can be made.
    const jobs = join(stateDir, 'jobs');
    rmSync(jobs, { recursive: true, force: true });
    writeFileSync(jobs, 'not a folder');

    const job = await cp.submit({ script: 'echo never', cpus: 3 });
    const done = await cp.finished(job.id, 20_000);
    expect(done).toMatchObject({ state: 'FAILED', exit_code: '1:0', node: agent.workerId, attempt: 1 });
    expect(done.reason).toMatch(/cannot prepare its folder: .*ENOTDIR/);
    expect(cp.proxy.calls(`/jobs/${job.id}/started`)).toHaveLength(0);
    expect(await allocatedCpus(cp, agent.workerId)).toEqual({ worker: 0, live: 0 });

    const shown: string[] = [];
    const code = await main(
      ['show', String(job.id)],
      { CONDUCTOR_URL: cp.directUrl, NO_COLOR: '1' },
      { out: (t) => shown.push(t), err: (t) => shown.push(t) },
    );
    expect(code).toBe(0);
    expect(shown.join('')).toMatch(/reason\s+cannot prepare its folder: .*ENOTDIR/);

    // The disk is fine again: the node runs jobs.
    rmSync(jobs);
    mkdirSync(jobs, { mode: 0o700 });
    const next = await cp.submit({ script: 'echo fine', cpus: 3 });
    expect(await cp.finished(next.id)).toMatchObject({ state: 'COMPLETED', node: agent.workerId });
  }, 60_000);

  it('stops without unregistering while a result is undelivered; the next start delivers it', async () => {
    const cp = control();
    const { agent, stateDir, logger } = makeAgent({ timing: { shutdownReportTimeoutMs: 1000 } });
    await agent.start();
    const gate = makeGate();
    const job = await cp.submit({ script: `${gate.wait}; echo finished`, cpus: 1, environment: gate.env });
    await cp.started(job.id);

    cp.proxy.drop(`/jobs/${job.id}/finish`);
    gate.open();
    await eventually(() => cp.proxy.calls(`/jobs/${job.id}/finish`).length > 0, { what: 'a finish report' });
    await agent.stop();
    expect(logger.lines.some((l) => l.includes('1 job result(s) not delivered yet'))).toBe(true);
    // Unregistering would have ended the job NODE_FAIL (the server does not know it finished).
    expect(await cp.job(job.id)).toMatchObject({ state: 'RUNNING', attempt: 1 });
    expect(await cp.worker(agent.workerId)).toMatchObject({ status: 'ready' });
    expect(
      JSON.parse(readFileSync(join(stateDir, 'jobs', `${job.id}.1`, 'result.json'), 'utf8')),
    ).toMatchObject({
      outcome: 'exited',
      exit_code: '0:0',
    });

    cp.proxy.undrop();
    const again = makeAgent({ stateDir, nodeName: agent.workerId });
    await again.agent.start();
    expect(await cp.finished(job.id)).toMatchObject({ state: 'COMPLETED', exit_code: '0:0', attempt: 1 });
    expect((await cp.logs(job.id)).stdout.content).toBe('finished\n');
    await again.agent.stop();
    expect(await cp.worker(agent.workerId)).toMatchObject({ status: 'down', down_reason: 'unregistered' });
  }, 60_000);

  it('cut off from the control plane for a TTL, the agent stops its requeue jobs; the server decides the rest when it is back', async () => {
    const cp = control();
    const { agent, logger } = makeAgent();
    await agent.start();
    const gate = makeGate();
    const pids = mkdtempSync(join(root, 'pids-'));
    const job = await cp.submit({
      script: `echo $$ > "$PIDS/$CONDUCTOR_ATTEMPT"; ${gate.wait}; echo "attempt $CONDUCTOR_ATTEMPT done"`,
      cpus: 1,
      requeue: true,
      environment: { ...gate.env, PIDS: pids },
    });
    await cp.started(job.id);
    // Reported started once spawned: the script may not have written its pid yet on a busy machine.
    const pid = await eventually(() => Number(readFileSync(join(pids, '1'), 'utf8')), {
      what: 'the job to write its pid',
    });

    expect(logger.lines.filter((l) => l.includes('Stopping job'))).toEqual([]);
    cp.proxy.cut();
    // No contact for the TTL the server announced (10 s): the job is stopped, though nobody told the agent.
    await eventually(() => processGone(pid), { timeoutMs: 30_000, what: `job ${job.id}.1 to be stopped` });
    expect(logger.lines.some((l) => /no contact with the control plane/.test(l))).toBe(true);
    // Meanwhile the server declared the node lost and put the job back in the queue.
    await cp.reapLostWorkersNow([agent.workerId]);
    expect(await cp.job(job.id)).toMatchObject({ state: 'PENDING' });

    cp.proxy.restore();
    // The agent registers again; its stopped attempt is stale (dropped) and the job runs again.
    await eventually(async () => (await cp.job(job.id)).attempt === 2 && (await cp.job(job.id)).start_time, {
      timeoutMs: 20_000,
      what: 'attempt 2 to start',
    });
    gate.open();
    expect(await cp.finished(job.id)).toMatchObject({ state: 'COMPLETED', attempt: 2, node: agent.workerId });
    expect((await cp.logs(job.id)).stdout.content).toBe('attempt 2 done\n');
  }, 60_000);

  it('when the server did not declare the node lost (it reaped nothing), the lost report puts the requeue job back in the queue; other jobs run on', async () => {
    const cp = control();
    const { agent, logger } = makeAgent();
    await agent.start();
    const gate = makeGate();
    const pids = mkdtempSync(join(root, 'pids-'));
    const requeued = await cp.submit({
      script: `echo $$ > "$PIDS/$CONDUCTOR_ATTEMPT"; ${gate.wait}; echo "attempt $CONDUCTOR_ATTEMPT done"`,
      cpus: 1,
      requeue: true,
      environment: { ...gate.env, PIDS: pids },
    });
    const plain = await cp.submit({
      script: `${gate.wait}; echo plain done`,
      cpus: 1,
      environment: gate.env,
    });
    await cp.started(requeued.id);
    await cp.started(plain.id);
    // Reported started once spawned: the script may not have written its pid yet on a busy machine.
    const pid = await eventually(() => Number(readFileSync(join(pids, '1'), 'utf8')), {
      what: 'the job to write its pid',
    });

    expect(logger.lines.filter((l) => l.includes('Stopping job'))).toEqual([]);
    cp.proxy.cut();
    await eventually(() => processGone(pid), {
      timeoutMs: 30_000,
      what: `job ${requeued.id}.1 to be stopped`,
    });
    await eventually(() => agent.runningJobs().length === 1, { what: 'the stopped job to settle' });
    expect(agent.runningJobs()).toEqual([{ job_id: plain.id, attempt: 1 }]);
    cp.proxy.restore();

    // The server kept both jobs (no reaper ran): it takes the report and requeues the stopped one.
    await eventually(async () => (await cp.job(requeued.id)).attempt === 2, {
      timeoutMs: 20_000,
      what: 'attempt 2 to be placed',
    });
    expect(
      sentBy(cp, `/jobs/${requeued.id}/finish`, agent.workerId).map((r) => [
        (r.body as { outcome: string }).outcome,
        r.status,
      ]),
    ).toContainEqual(['lost', 200]);
    // The proxy records the answer before the agent has read it and logged what it said.
    await eventually(() => logger.lines.some((l) => l.includes(`Job ${requeued.id}.1 reported: PENDING`)), {
      what: 'the agent to log the report',
    });
    gate.open();
    // Attempt 2, or 3 when its claim answer crossed the agent's registration (review L2: that registration
    // takes the claimed, unstarted attempt for lost).
    const done = await cp.finished(requeued.id);
    expect(done).toMatchObject({ state: 'COMPLETED' });
    expect(done.attempt).toBeGreaterThanOrEqual(2);
    expect((await cp.logs(requeued.id)).stdout.content).toBe(`attempt ${done.attempt} done\n`);
    expect(await cp.finished(plain.id)).toMatchObject({ state: 'COMPLETED', attempt: 1 });
    expect((await cp.logs(plain.id)).stdout.content).toBe('plain done\n');
  }, 60_000);
});
