/**
 * The Agent (in process, as the CLI runs it) against the real control plane (the Node server from
 * functions/ over PGlite and the in-process registry): what the agent itself does with jobs, reports and
 * faults. Jobs are submitted through the HTTP API; outcomes are read from the API and Postgres; network
 * faults and server restarts are real (a FaultProxy in front of the server, the server stopped and started
 * again on its port).
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { ClaimResponse } from '../../agent/src/protocol.ts';
import { eventually } from '../support/agent-process.ts';
import { startTestServer } from '../support/cluster.ts';
import { freePort } from '../support/server-process.ts';
import { agentBackends, type ControlPlane, makeGate, sentBy, useControlPlane } from './control-plane.ts';

const { pglite } = await agentBackends();
const root = mkdtempSync(join(tmpdir(), 'conductor-agent-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const registrations = (cp: ControlPlane, workerId: string) => sentBy(cp, '/agents/register', workerId);

describe('Agent against the real control plane on pglite+memory: what the agent does', () => {
  const { control, makeAgent, unique } = useControlPlane(pglite, root);

  it('registers, runs a job, streams its output, reports it and unregisters', async () => {
    const cp = control();
    const { agent, logger, stateDir } = makeAgent({ token: 'tok-123' });
    await agent.start();
    expect(logger.lines).toContain(`info ✓ Worker registered: ${agent.workerId} (4 CPUs)`);
    expect(cp.server!.logger.has(`✓ Worker registered: ${agent.workerId} (4 CPUs)`)).toBe(true);
    const reg = registrations(cp, agent.workerId)[0]!;
    expect(reg.body).toMatchObject({ worker_id: agent.workerId, cpus: 4, running: [] });
    expect(reg.headers.authorization).toBe('Bearer tok-123');

    const job = await cp.submit({ script: 'echo hello; echo oops >&2; exit 3', cpus: 1 });
    expect(await cp.finished(job.id)).toMatchObject({
      state: 'FAILED',
      exit_code: '3:0',
      node: agent.workerId,
      attempt: 1,
    });
    // All output arrived before the finish report: the server takes no output for an ended job.
    const logs = await cp.logs(job.id);
    expect(logs.stdout.content).toBe('hello\n');
    expect(logs.stderr.content).toBe('oops\n');
    await eventually(() => !existsSync(join(stateDir, 'jobs', `${job.id}.1`)), { what: 'folder removal' });

    await agent.stop();
    await agent.closed;
    expect(logger.lines).toContain(`info Worker unregistered: ${agent.workerId}`);
    expect(await cp.worker(agent.workerId)).toMatchObject({ status: 'down', down_reason: 'unregistered' });
    expect(await cp.backend.registry.liveWorkerIds()).not.toContain(agent.workerId);
  });

  it('runs an assignment delivered several times only once', async () => {
    const cp = control();
    const { agent, logger } = makeAgent();
    await agent.start();
    cp.proxy.hold('/started'); // the started report is slow: until it lands, claims hand the job out again
    const mark = join(root, unique('mark'));
    const job = await cp.submit({ script: 'echo run >> "$MARK"', cpus: 1, environment: { MARK: mark } });
    const deliveries = () =>
      sentBy(cp, '/agents/claim', agent.workerId).filter((c) =>
        (c.response as ClaimResponse | undefined)?.jobs?.some((j) => j.job_id === job.id),
      );
    await eventually(() => deliveries().length >= 2, { what: 'a second delivery' });
    const firstAt = deliveries()[0]!.at;
    cp.proxy.release();
    expect(await cp.finished(job.id)).toMatchObject({ state: 'COMPLETED', exit_code: '0:0' });
    expect(readFileSync(mark, 'utf8')).toBe('run\n');
    expect(
      logger.lines.filter((l) => l === `debug Job ${job.id}.1: assignment delivered again, ignored`).length,
    ).toBeGreaterThanOrEqual(1);
    // Re-deliveries do not make the claim loop spin.
    expect(sentBy(cp, '/agents/claim', agent.workerId).filter((c) => c.at >= firstAt).length).toBeLessThan(
      10,
    );
  });

  it('runs a job whose claim answer was lost: the server hands it out again', async () => {
    const cp = control();
    const { agent } = makeAgent();
    await agent.start();
    cp.proxy.loseAnswers('/agents/claim'); // the server assigns the job; the answer never reaches the agent
    const mark = join(root, unique('mark'));
    const job = await cp.submit({ script: 'echo run >> "$MARK"', cpus: 1, environment: { MARK: mark } });
    await eventually(
      () =>
        sentBy(cp, '/agents/claim', agent.workerId).some(
          (c) =>
            c.fault === 'answer_lost' &&
            (c.response as ClaimResponse | undefined)?.jobs?.some((j) => j.job_id === job.id),
        ),
      { what: 'a lost assignment' },
    );
    expect(agent.activeJobs()).toEqual([]);
    cp.proxy.undrop();
    expect(await cp.finished(job.id)).toMatchObject({ state: 'COMPLETED', exit_code: '0:0', attempt: 1 });
    expect(readFileSync(mark, 'utf8')).toBe('run\n');
  });

  it('keeps running jobs when heartbeats fail', async () => {
    const cp = control();
    const { agent, logger } = makeAgent({ heartbeatIntervalS: 0.2 });
    await agent.start();
    cp.proxy.drop('/heartbeat');
    const job = await cp.submit({ script: 'sleep 1; echo still here', cpus: 1 });
    expect(await cp.finished(job.id)).toMatchObject({ state: 'COMPLETED', exit_code: '0:0' });
    expect((await cp.logs(job.id)).stdout.content).toBe('still here\n');
    expect(logger.lines.filter((l) => l.startsWith('warn Heartbeat failed:')).length).toBeGreaterThanOrEqual(
      3,
    );
    cp.proxy.undrop();
    const mark = logger.lines.length;
    await eventually(() => logger.lines.slice(mark).includes(`info Heartbeat sent: ${agent.workerId}`), {
      what: 'heartbeats to resume',
    });
    expect(registrations(cp, agent.workerId)).toHaveLength(1); // failed heartbeats are no reason to register again
  });

  it('on stop cancels running jobs (agent stopped) and reports them before unregistering', async () => {
    const cp = control();
    const { agent } = makeAgent();
    await agent.start();
    const job = await cp.submit({ script: 'sleep 30', cpus: 1 });
    await cp.started(job.id);
    await agent.stop();
    // Had the unregistration come first, the server would have ended the job as NODE_FAIL.
    expect(await cp.job(job.id)).toMatchObject({
      state: 'CANCELLED',
      exit_code: '0:15',
      reason: 'agent stopped',
    });
    expect(await cp.worker(agent.workerId)).toMatchObject({ status: 'down', down_reason: 'unregistered' });
  });

  it('with drain, lets running jobs finish before unregistering', async () => {
    const cp = control();
    const { agent } = makeAgent({ drain: true });
    await agent.start();
    const job = await cp.submit({ script: 'sleep 1; echo drained', cpus: 1 });
    await cp.started(job.id);
    await agent.stop();
    expect(await cp.job(job.id)).toMatchObject({ state: 'COMPLETED', exit_code: '0:0' });
    expect((await cp.logs(job.id)).stdout.content).toBe('drained\n');
    expect(await cp.worker(agent.workerId)).toMatchObject({ status: 'down', down_reason: 'unregistered' });
  });

  it('keeps result.json while the control plane is down and delivers it when it is back', async () => {
    const cp = control();
    const { agent, logger, stateDir } = makeAgent();
    await agent.start();
    const gate = makeGate();
    const job = await cp.submit({ script: gate.wait, cpus: 1, environment: gate.env });
    await cp.started(job.id);

    await cp.stopServer();
    gate.open();
    const dir = join(stateDir, 'jobs', `${job.id}.1`);
    await eventually(() => cp.proxy.calls(`/jobs/${job.id}/finish`).length >= 2, { what: 'finish retries' });
    expect(cp.proxy.calls(`/jobs/${job.id}/finish`).every((c) => c.status === undefined)).toBe(true);
    expect(logger.lines.some((l) => l.startsWith(`warn Job ${job.id}.1 finish report failed`))).toBe(true);
    expect(JSON.parse(readFileSync(join(dir, 'result.json'), 'utf8'))).toMatchObject({
      job_id: job.id,
      attempt: 1,
      exit_code: '0:0',
      outcome: 'exited',
    });

    await cp.startServer(); // same port, same database
    expect(await cp.finished(job.id)).toMatchObject({ state: 'COMPLETED', exit_code: '0:0' });
    await eventually(() => !existsSync(dir), { what: 'folder removal' });
  });

  // PGlite only for now: on Postgres a cancel that races the placement's commit can leave the job's
  // allocation unreleased (see the report that came with this suite).
  it('a job cancelled as it is placed ends CANCELLED and leaves nothing running', async () => {
    const cp = control();
    const { agent } = makeAgent();
    await agent.start();
    const job = await cp.submit({ script: 'sleep 30', cpus: 1 });
    expect(await cp.cancel(job.id)).toBe(200);
    expect((await cp.finished(job.id)).state).toBe('CANCELLED');
    await eventually(() => agent.activeJobs().length === 0, { what: 'the agent to be idle' });
  });

  it("runs a job whose work_dir is missing in /tmp, with slurmstepd's message on its stderr", async () => {
    const cp = control();
    const { agent } = makeAgent();
    await agent.start();
    const job = await cp.submit({ script: 'pwd', cpus: 1, work_dir: '/nonexistent/conductor-dir' });
    const done = await cp.finished(job.id);
    expect(done).toMatchObject({ state: 'COMPLETED', exit_code: '0:0' });
    const logs = await cp.logs(job.id);
    expect(logs.stdout.content).toBe('/tmp\n');
    expect(logs.stderr.content).toBe(
      "slurmstepd: error: couldn't chdir to `/nonexistent/conductor-dir': No such file or directory: going to /tmp instead\n",
    );
  });

  it('retries registration until the control plane is up, then registers', async () => {
    const cp = control();
    const port = await freePort();
    const { agent, logger } = makeAgent({ url: `http://127.0.0.1:${port}` });
    const started = agent.start();
    const failures = () => logger.lines.filter((l) => l.startsWith('error ✗ Worker registration failed:'));
    await eventually(() => failures().length >= 2, { what: 'failed registrations' });
    const late = await startTestServer(cp.backend, cp.config, { port });
    try {
      await started;
      expect(agent.state).toBe('running');
      expect(await cp.worker(agent.workerId)).toMatchObject({ status: 'ready', session: agent.session });
      await agent.stop();
    } finally {
      await late.close();
    }
  });

  it('refuses a state dir another agent uses', async () => {
    const cp = control();
    const { agent, stateDir } = makeAgent();
    await agent.start();
    const second = makeAgent({ stateDir });
    await expect(second.agent.start()).rejects.toThrow(/another conductor-agent/);
    expect(registrations(cp, second.agent.workerId)).toHaveLength(0);
  });

  it('can stop while registration is still being retried', async () => {
    const cp = control();
    cp.proxy.cut();
    const { agent, logger } = makeAgent();
    const started = agent.start();
    await eventually(
      () => logger.lines.filter((l) => l.startsWith('error ✗ Worker registration failed:')).length >= 2,
      { what: 'failed registrations' },
    );
    await agent.stop();
    await started;
    expect(agent.state).toBe('stopped');
    cp.proxy.restore();
    expect(await cp.worker(agent.workerId)).toBeUndefined();
    expect(sentBy(cp, '/agents/unregister', agent.workerId)).toHaveLength(0);
  });
});
