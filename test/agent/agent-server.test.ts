/**
 * The Agent (in process, as the CLI runs it) against the real control plane, in the scenarios where the
 * server decides: cancels, a server that forgot the worker or gave its name to another session, a node
 * declared lost, a restart after a crash, a refused registration. On PGlite + in-process registry and on
 * Postgres + Redis. Jobs are submitted and cancelled through the HTTP API; outcomes are read from the API,
 * Postgres and the registry; network faults come from a FaultProxy in front of the server.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sql } from 'drizzle-orm';
import { afterAll, describe, expect, it } from 'vitest';
import { FatalAgentError } from '../../agent/src/agent.ts';
import type { RegisterResponse } from '../../agent/src/protocol.ts';
import type { Principal } from '../../functions/domain/auth.ts';
import { registerWorker } from '../../functions/domain/workers.ts';
import { AgentProcess, eventually } from '../support/agent-process.ts';
import { agentBackends, makeGate, processGone, sentBy, useControlPlane } from './control-plane.ts';

const { all } = await agentBackends();
const root = mkdtempSync(join(tmpdir(), 'conductor-agent-server-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe.each(all)('Agent against the real control plane on $name: what the server decides', (factory) => {
  const { control, makeAgent, track, unique } = useControlPlane(factory, root);

  it('cancels a running job named in a heartbeat answer and reports it cancelled', async () => {
    const cp = control();
    const { agent, logger } = makeAgent({ heartbeatIntervalS: 0.3 });
    await agent.start();
    const job = await cp.submit({ script: 'sleep 30 & sleep 30; wait', cpus: 1 });
    await cp.started(job.id);
    cp.proxy.drop('/agents/claim'); // claims no longer get through: only a heartbeat answer can bring the cancel
    expect(await cp.cancel(job.id)).toBe(200);
    expect(await cp.finished(job.id)).toMatchObject({
      state: 'CANCELLED',
      exit_code: '0:15',
      reason: 'cancelled by user',
    });
    expect(logger.lines).toContain(`info Cancelling job ${job.id}.1: cancelled by user (via heartbeat)`);
    expect(agent.runningJobs()).toEqual([]);
  });

  it('cancels a running job named in a claim answer', async () => {
    const cp = control();
    const { agent, logger } = makeAgent({ heartbeatIntervalS: 60 }); // no heartbeat during the test
    await agent.start();
    const job = await cp.submit({ script: 'sleep 30', cpus: 1 });
    await cp.started(job.id);
    expect(await cp.cancel(job.id)).toBe(200); // wakes the agent's long-polling claim
    expect(await cp.finished(job.id)).toMatchObject({ state: 'CANCELLED', exit_code: '0:15' });
    expect(logger.lines).toContain(`info Cancelling job ${job.id}.1: cancelled by user (via claim)`);
    expect(sentBy(cp, '/agents/heartbeat', agent.workerId)).toHaveLength(0);
  });

  it('registers again when the server forgot it (unknown_worker), keeping its running job', async () => {
    const cp = control();
    const { agent, logger } = makeAgent({ heartbeatIntervalS: 0.3 });
    await agent.start();
    const first = agent.session!;
    const gate = makeGate();
    const job = await cp.submit({ script: `${gate.wait}; echo done`, cpus: 1, environment: gate.env });
    await cp.started(job.id);

    await cp.backend.registry.removeWorker(agent.workerId); // its key expired, or Redis was flushed
    await eventually(() => agent.session !== first && agent.state === 'running', { what: 're-registration' });
    expect(
      logger.lines.some((l) => l.startsWith('warn Registering again: heartbeat answered 404 unknown_worker')),
    ).toBe(true);
    const again = sentBy(cp, '/agents/register', agent.workerId).at(-1)!;
    expect(again.body).toMatchObject({ previous_session: first, running: [{ job_id: job.id, attempt: 1 }] });
    // The server kept the job for the new session, and lists the worker as live again.
    expect(await cp.worker(agent.workerId)).toMatchObject({ status: 'ready', session: agent.session });
    expect(await cp.claimedSession(job.id)).toBe(agent.session);
    expect(await cp.backend.registry.liveWorkerIds()).toContain(agent.workerId);

    gate.open();
    expect(await cp.finished(job.id)).toMatchObject({ state: 'COMPLETED', exit_code: '0:0' });
    expect((await cp.logs(job.id)).stdout.content).toBe('done\n');
    const mark = logger.lines.length;
    await eventually(() => logger.lines.slice(mark).includes(`info Heartbeat sent: ${agent.workerId}`), {
      what: 'a heartbeat with the new session',
    });
  });

  it('registers again on session_superseded once the name is free, keeping its running job', async () => {
    const cp = control();
    const { agent, logger } = makeAgent({ heartbeatIntervalS: 0.5 });
    await agent.start();
    const first = agent.session!;
    const gate = makeGate();
    const job = await cp.submit({ script: `${gate.wait}; echo done`, cpus: 1, environment: gate.env });
    await cp.started(job.id);

    // Another registration takes the name over (presenting the session and the agent token the open cluster
    // gave this agent, as only a restart of this agent could) and claims the job as its own.
    const [bound] = await cp.rows<{ token_id: string }>(
      sql`SELECT token_id FROM workers WHERE id = ${agent.workerId}`,
    );
    const sameToken: Principal = {
      kind: 'system',
      tokenId: Number(bound!.token_id),
      name: `agent:${agent.workerId}`,
      owner: 'system',
      scopes: ['agent'],
    };
    const other: RegisterResponse = await registerWorker(
      cp.otherReplica(),
      {
        worker_id: agent.workerId,
        hostname: 'elsewhere',
        cpus: 4,
        running: [{ job_id: job.id, attempt: 1 }],
        previous_session: first,
      },
      sameToken,
    );
    await eventually(
      () => logger.lines.some((l) => /^warn Registering again: \w+ answered 409 session_superseded/.test(l)),
      { what: 'session_superseded' },
    );
    // The name belongs to a live session now: refused until that one has been silent for a TTL...
    await eventually(() => logger.lines.some((l) => l.includes('409 worker_name_in_use')), {
      what: 'worker_name_in_use',
    });
    expect(agent.session).toBe(first);
    // ... which it now has been (nothing heartbeats for it: its last heartbeat is made a TTL old).
    await cp.rows(
      sql`UPDATE workers SET last_heartbeat = now() - make_interval(secs => ${cp.config.workerTtlSeconds + 1})
          WHERE id = ${agent.workerId} AND session = ${other.session}`,
    );
    await eventually(() => agent.session !== first && agent.session !== other.session, {
      what: 're-registration',
    });
    expect(await cp.worker(agent.workerId)).toMatchObject({ status: 'ready', session: agent.session });
    expect(await cp.claimedSession(job.id)).toBe(agent.session);

    gate.open();
    expect(await cp.finished(job.id)).toMatchObject({ state: 'COMPLETED', exit_code: '0:0' });
    expect((await cp.logs(job.id)).stdout.content).toBe('done\n');
  });

  it('kills a job whose assignment went stale and drops its reports', async () => {
    const cp = control();
    const { agent, logger, stateDir } = makeAgent({ heartbeatIntervalS: 60 });
    await agent.start();
    const pidFile = join(root, unique('pid'));
    const job = await cp.submit({
      script: 'echo $$ > "$PIDFILE"; while true; do echo tick; sleep 0.2; done',
      cpus: 1,
      environment: { PIDFILE: pidFile },
    });
    await eventually(async () => (await cp.logs(job.id)).stdout.content.includes('tick'), {
      what: 'streamed output',
    });
    const pid = Number(readFileSync(pidFile, 'utf8'));

    // The control plane declares the node lost: the job ends as NODE_FAIL and its CPUs are released.
    expect((await cp.reapLostWorkersNow([agent.workerId])).lostWorkers).toEqual([agent.workerId]);
    expect(await cp.job(job.id)).toMatchObject({
      state: 'NODE_FAIL',
      reason: 'node lost: its heartbeat lapsed',
    });

    // Its next output report is refused with 409 stale_assignment: the agent kills the job, sends nothing more.
    await eventually(
      () => agent.runningJobs().length === 0 && !existsSync(join(stateDir, 'jobs', `${job.id}.1`)),
      { what: 'the job to be dropped' },
    );
    await eventually(() => processGone(pid), { timeoutMs: 3000, what: 'the job process to die' });
    expect(
      cp.proxy
        .calls(`/jobs/${job.id}/output`)
        .some(
          (c) =>
            c.status === 409 && (c.response as { error: { code: string } }).error.code === 'stale_assignment',
        ),
    ).toBe(true);
    expect(
      logger.lines.some((l) =>
        l.includes(`Job ${job.id}.1 is no longer assigned to this node (stale_assignment): killing it`),
      ),
    ).toBe(true);
    expect(cp.proxy.calls(`/jobs/${job.id}/finish`)).toHaveLength(0);
    expect(await cp.job(job.id)).toMatchObject({
      state: 'NODE_FAIL',
      reason: 'node lost: its heartbeat lapsed',
    });
  });

  it('after a crash, takes its name over with its saved session and delivers the result left on disk', async () => {
    const cp = control();
    const name = unique('crash');
    const stateDir = mkdtempSync(join(root, 'crash-'));
    const crashed = track(
      new AgentProcess(name, cp.url, { stateDir, env: { CONDUCTOR_HEARTBEAT_INTERVAL: '1' } }),
    );
    await crashed.registered();
    const firstSession = (sentBy(cp, '/agents/register', name)[0]!.response as RegisterResponse).session;

    const gate = makeGate();
    const kept = await cp.submit({ script: `echo old output; ${gate.wait}`, cpus: 1, environment: gate.env });
    const pidFile = join(root, unique('pid'));
    const lost = await cp.submit({
      script: 'echo $$ > "$PIDFILE"; sleep 30',
      cpus: 1,
      environment: { PIDFILE: pidFile },
    });
    await cp.started(kept.id);
    await cp.started(lost.id);
    await eventually(() => existsSync(pidFile) && readFileSync(pidFile, 'utf8').trim() !== '');
    const lostPid = Number(readFileSync(pidFile, 'utf8'));

    cp.proxy.cut(); // the node loses the network,
    gate.open(); // one job ends meanwhile: its result waits on disk,
    const resultFile = join(stateDir, 'jobs', `${kept.id}.1`, 'result.json');
    await eventually(() => existsSync(resultFile), { what: 'result.json' });
    await crashed.kill9(); // and the agent dies.
    cp.proxy.restore();

    // The name is still held by the dead agent's session (it heartbeated less than a TTL ago): another
    // agent without that session is refused...
    const impostor = makeAgent({ nodeName: name });
    const impostorStart = impostor.agent.start();
    await eventually(() => impostor.logger.lines.some((l) => l.includes('409 worker_name_in_use')), {
      what: 'worker_name_in_use',
    });
    await impostor.agent.stop();
    await impostorStart;

    // ... while the restarted agent presents the saved session and gets it at once.
    const { agent, logger } = makeAgent({ stateDir, nodeName: name });
    await agent.start();
    expect(logger.lines.filter((l) => l.includes('registration failed'))).toEqual([]);
    expect(sentBy(cp, '/agents/register', name).at(-1)!.body).toMatchObject({
      previous_session: firstSession,
      running: [{ job_id: kept.id, attempt: 1 }],
    });
    expect(await cp.worker(name)).toMatchObject({ status: 'ready', session: agent.session });

    // The undelivered result goes out; the job that was running when the agent died is lost.
    expect(await cp.finished(kept.id)).toMatchObject({ state: 'COMPLETED', exit_code: '0:0' });
    expect((await cp.logs(kept.id)).stdout.content).toBe('old output\n');
    expect(await cp.job(lost.id)).toMatchObject({
      state: 'NODE_FAIL',
      reason: 'agent restarted: process lost',
    });
    expect(logger.lines).toContain(
      `warn Job ${lost.id}.1 was running when the previous agent stopped; its result is lost (its leftover processes were killed)`,
    );
    await eventually(() => processGone(lostPid), { timeoutMs: 3000, what: 'the orphan to die' });
    await eventually(() => !existsSync(join(stateDir, 'jobs', `${kept.id}.1`)), { what: 'folder removal' });
    expect(existsSync(join(stateDir, 'jobs', `${lost.id}.1`))).toBe(false);
  });

  it('treats a registration refused with a validation error as fatal', async () => {
    const cp = control();
    const { agent, logger } = makeAgent({ nodeName: 'node with spaces' });
    await expect(agent.start()).rejects.toBeInstanceOf(FatalAgentError);
    await expect(agent.closed).rejects.toBeInstanceOf(FatalAgentError);
    expect(
      logger.lines.some((l) => l.startsWith('error ✗ Worker registration failed: 400 invalid_request:')),
    ).toBe(true);
    expect(sentBy(cp, '/agents/register', 'node with spaces')).toHaveLength(1); // not retried
    expect(await cp.worker('node with spaces')).toBeUndefined();
  });
});
