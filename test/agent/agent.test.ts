import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Agent, FatalAgentError } from '../../agent/src/agent.ts';
import { type AgentConfigInput, agentConfig } from '../../agent/src/config.ts';
import { memoryLogger } from '../../agent/src/log.ts';
import { FakeControlPlane } from './fake-control-plane.ts';

const root = mkdtempSync(join(tmpdir(), 'conductor-agent-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

let server: FakeControlPlane;
let agents: Agent[] = [];
let n = 0;

beforeEach(async () => {
  server = new FakeControlPlane();
  await server.listen();
});

afterEach(async () => {
  for (const a of agents) {
    a.killAllNow();
    await a.stop();
  }
  agents = [];
  await server.close();
});

function makeAgent(input: AgentConfigInput = {}) {
  const logger = memoryLogger();
  const stateDir = input.stateDir ?? join(root, `state-${++n}`);
  const config = agentConfig({
    url: server.url,
    nodeName: `node-${n}`,
    cpus: 4,
    stateDir,
    claimWaitS: 1,
    ...input,
    timing: {
      registerBackoff: { initialMs: 50, maxMs: 200 },
      claimBackoff: { initialMs: 50, maxMs: 200 },
      reportBackoff: { initialMs: 50, maxMs: 200 },
      outputIntervalMs: 100,
      outputPollMs: 20,
      shutdownReportTimeoutMs: 2000,
      ...input.timing,
    },
  });
  const agent = new Agent(config, { logger });
  agents.push(agent);
  return { agent, logger, stateDir, config };
}

const finishes = () => server.calls('/finish').map((r) => r.body);

describe('Agent against a fake control plane', () => {
  it('registers, runs a job, streams its output, reports it and unregisters', async () => {
    const { agent, logger, stateDir } = makeAgent({ token: 'tok-123' });
    await agent.start();
    expect(logger.lines).toContain(`info ✓ Worker registered: ${agent.workerId} (4 CPUs)`);
    const reg = server.calls('/register')[0]!;
    expect(reg.body).toMatchObject({ worker_id: agent.workerId, cpus: 4, running: [] });
    expect(reg.auth).toBe('Bearer tok-123');

    server.assign({ job_id: 7, script: 'echo hello; echo oops >&2; exit 3' });
    await server.until(() => finishes().length === 1, 10_000, 'finish');
    expect(finishes()[0]).toMatchObject({
      worker_id: agent.workerId,
      attempt: 1,
      exit_code: '3:0',
      outcome: 'exited',
    });
    expect(server.calls('/jobs/7/started')).toHaveLength(1);
    expect(server.output.get('7:1:stdout')?.text).toBe('hello\n');
    expect(server.output.get('7:1:stderr')?.text).toBe('oops\n');
    // output is flushed before finish
    const lastOutput = Math.max(...server.calls('/jobs/7/output').map((r) => r.at));
    expect(lastOutput).toBeLessThanOrEqual(server.calls('/jobs/7/finish')[0]!.at);
    await server.until(() => !existsSync(join(stateDir, 'jobs', '7.1')), 2000, 'job folder removal');

    await agent.stop();
    expect(server.calls('/unregister')).toHaveLength(1);
    expect(logger.lines).toContain(`info Worker unregistered: ${agent.workerId}`);
    await agent.closed;
  });

  it('runs an assignment delivered several times only once', async () => {
    const { agent } = makeAgent();
    server.override('/started', { status: 503, body: { error: { code: 'unavailable', message: 'busy' } } });
    await agent.start();
    server.assign({
      job_id: 8,
      script: 'echo run >> "$HOME_MARK"; sleep 0.5',
      environment: { HOME_MARK: join(root, 'mark-8') },
    });
    await server.until(() => finishes().length === 1, 10_000, 'finish');
    expect(
      server.calls('/claim').filter((c) => c.at < server.calls('/finish')[0]!.at).length,
    ).toBeGreaterThan(1);
    expect(readFileSync(join(root, 'mark-8'), 'utf8')).toBe('run\n');
    expect(server.calls('/jobs/8/started').length).toBe(2); // retried after the 503
    // Re-deliveries do not make the claim loop spin.
    expect(server.calls('/claim').length).toBeLessThan(10);
  });

  it('cancels a job named in a heartbeat answer and reports it cancelled', async () => {
    const { agent } = makeAgent({ heartbeatIntervalS: 0.2 });
    await agent.start();
    server.assign({ job_id: 9, script: 'sleep 300 & sleep 300; wait' });
    await server.until(() => server.calls('/jobs/9/started').length === 1, 5000, 'started');
    server.cancelVia = 'heartbeat'; // claim answers carry no cancels
    server.cancel({ job_id: 9, attempt: 1 });
    await server.until(() => finishes().length === 1, 5000, 'finish');
    expect(finishes()[0]).toMatchObject({ outcome: 'cancelled', exit_code: '0:15' });
  });

  it('cancels a job named in a claim answer', async () => {
    const { agent } = makeAgent();
    await agent.start();
    server.assign({ job_id: 19, script: 'sleep 300' });
    await server.until(() => server.calls('/jobs/19/started').length === 1, 5000, 'started');
    server.cancelVia = 'claim';
    server.cancel({ job_id: 19, attempt: 1 });
    await server.until(() => finishes().length === 1, 5000, 'finish');
    expect(finishes()[0]).toMatchObject({ outcome: 'cancelled', exit_code: '0:15' });
  });

  it('registers again on session_superseded, keeping its running job', async () => {
    const { agent, logger } = makeAgent({ heartbeatIntervalS: 0.2 });
    await agent.start();
    server.assign({ job_id: 10, script: 'sleep 1.5; echo done' });
    await server.until(() => server.calls('/jobs/10/started').length === 1, 5000, 'started');
    server.session = 'someone-else'; // the server forgot us
    await server.until(() => server.calls('/register').length === 2, 5000, 're-registration');
    expect(server.calls('/register')[1]!.body.running).toEqual([{ job_id: 10, attempt: 1 }]);
    expect(
      logger.lines.some(
        (l) => l.startsWith('warn Heartbeat failed:') || l.startsWith('warn Registering again'),
      ),
    ).toBe(true);
    await server.until(() => finishes().length === 1, 5000, 'finish');
    expect(finishes()[0]).toMatchObject({ outcome: 'exited', exit_code: '0:0' });
    expect(server.output.get('10:1:stdout')?.text).toBe('done\n');
    await server.until(
      () => server.calls('/heartbeat').some((h) => h.body.session === 's2'),
      5000,
      'heartbeat',
    );
  });

  it('keeps running jobs when heartbeats fail', async () => {
    const { agent, logger } = makeAgent({ heartbeatIntervalS: 0.1 });
    const boom = { status: 500, body: { error: { code: 'internal', message: 'redis down' } } };
    server.override('/heartbeat', boom, boom, boom, boom, boom);
    await agent.start();
    server.assign({ job_id: 11, script: 'sleep 1' });
    await server.until(() => finishes().length === 1, 5000, 'finish');
    expect(finishes()[0]).toMatchObject({ outcome: 'exited', exit_code: '0:0' });
    expect(logger.lines.filter((l) => l.startsWith('warn Heartbeat failed:')).length).toBeGreaterThanOrEqual(
      3,
    );
  });

  it('on stop cancels running jobs (agent stopped) and reports them before unregistering', async () => {
    const { agent } = makeAgent();
    await agent.start();
    server.assign({ job_id: 12, script: 'sleep 300' });
    await server.until(() => server.calls('/jobs/12/started').length === 1, 5000, 'started');
    await agent.stop();
    expect(finishes()[0]).toMatchObject({ outcome: 'cancelled', message: 'agent stopped' });
    const unregisterAt = server.calls('/unregister')[0]!.at;
    expect(unregisterAt).toBeGreaterThanOrEqual(server.calls('/jobs/12/finish')[0]!.at);
  });

  it('with drain, lets running jobs finish before unregistering', async () => {
    const { agent } = makeAgent({ drain: true });
    await agent.start();
    server.assign({ job_id: 13, script: 'sleep 1; echo drained' });
    await server.until(() => server.calls('/jobs/13/started').length === 1, 5000, 'started');
    await agent.stop();
    expect(finishes()[0]).toMatchObject({ outcome: 'exited', exit_code: '0:0' });
    expect(server.output.get('13:1:stdout')?.text).toBe('drained\n');
    expect(server.calls('/unregister')).toHaveLength(1);
  });

  it('retries finish on 503 and keeps result.json until acknowledged', async () => {
    const { agent, stateDir } = makeAgent();
    const unavailable = { status: 503, body: { error: { code: 'unavailable', message: 'try later' } } };
    server.override('/finish', unavailable, unavailable, unavailable);
    await agent.start();
    server.assign({ job_id: 14, script: 'exit 0' });
    await server.until(() => server.calls('/jobs/14/finish').length === 1, 5000, 'first finish');
    const result = JSON.parse(readFileSync(join(stateDir, 'jobs', '14.1', 'result.json'), 'utf8'));
    expect(result).toMatchObject({ job_id: 14, attempt: 1, exit_code: '0:0', outcome: 'exited' });
    await server.until(() => server.calls('/jobs/14/finish').length === 4, 5000, 'retried finish');
    await server.until(() => !existsSync(join(stateDir, 'jobs', '14.1')), 2000, 'folder removal');
  });

  it('delivers results left on disk by a previous run, naming them at registration', async () => {
    const stateDir = join(root, 'recovered');
    const dir = join(stateDir, 'jobs', '5.2');
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'stdout'), 'old output\n');
    writeFileSync(join(dir, 'stderr'), '');
    writeFileSync(
      join(dir, 'result.json'),
      JSON.stringify({
        job_id: 5,
        attempt: 2,
        exit_code: '0:0',
        outcome: 'exited',
        ended_at: new Date().toISOString(),
      }),
    );
    const orphan = join(stateDir, 'jobs', '6.1'); // was running when the agent died: no result
    mkdirSync(orphan, { recursive: true });
    const { agent, logger } = makeAgent({ stateDir });
    await agent.start();
    expect(server.calls('/register')[0]!.body.running).toEqual([{ job_id: 5, attempt: 2 }]);
    await server.until(() => finishes().length === 1, 5000, 'finish');
    expect(finishes()[0]).toMatchObject({ attempt: 2, exit_code: '0:0', outcome: 'exited' });
    expect(server.output.get('5:2:stdout')?.text).toBe('old output\n');
    expect(server.calls('/jobs/5/output')[0]!.at).toBeGreaterThanOrEqual(server.calls('/register')[0]!.at);
    await server.until(() => !existsSync(dir), 2000, 'folder removal');
    expect(existsSync(orphan)).toBe(false);
    expect(logger.lines.some((l) => l.includes('Job 6.1 was running when the previous agent stopped'))).toBe(
      true,
    );
  });

  it('kills a job whose assignment went stale and drops its reports', async () => {
    const { agent, stateDir } = makeAgent();
    await agent.start();
    server.stale.add('15:1');
    server.assign({ job_id: 15, script: 'sleep 300' });
    await server.until(() => server.calls('/jobs/15/started').length === 1, 5000, 'started');
    server.pending.clear();
    await server.until(() => !existsSync(join(stateDir, 'jobs', '15.1')), 5000, 'folder removal');
    expect(agent.runningJobs()).toEqual([]);
    expect(server.calls('/jobs/15/finish')).toHaveLength(0);
  });

  it('stops a job the server already cancelled when it reports started', async () => {
    const { agent } = makeAgent();
    await agent.start();
    server.startedState.set('17:1', 'CANCELLED');
    server.assign({ job_id: 17, script: 'sleep 300' });
    await server.until(() => finishes().length === 1, 5000, 'finish');
    expect(finishes()[0]).toMatchObject({ outcome: 'cancelled' });
  });

  it('presents its previous session when it registers again after a restart', async () => {
    const first = makeAgent();
    await first.agent.start();
    const session = first.agent.session;
    await first.agent.stop();
    const second = makeAgent({ stateDir: first.stateDir, nodeName: first.config.nodeName });
    await second.agent.start();
    expect(server.calls('/register')[0]!.body.previous_session).toBeUndefined();
    expect(server.calls('/register')[1]!.body.previous_session).toBe(session);
  });

  it('reports a missing work_dir as failed_to_start', async () => {
    const { agent } = makeAgent();
    await agent.start();
    server.assign({ job_id: 16, script: 'true', work_dir: '/nonexistent/conductor-dir' });
    await server.until(() => finishes().length === 1, 5000, 'finish');
    expect(finishes()[0]).toMatchObject({ outcome: 'failed_to_start', exit_code: '1:0' });
    expect(String(finishes()[0]!.message)).toContain('/nonexistent/conductor-dir');
    expect(server.calls('/jobs/16/started')).toHaveLength(0);
  });

  it('retries registration, then registers', async () => {
    const down = { status: 503, body: { error: { code: 'unavailable', message: 'starting up' } } };
    server.override('/register', down, down);
    const { agent, logger } = makeAgent();
    await agent.start();
    expect(logger.lines.filter((l) => l.startsWith('error ✗ Worker registration failed:'))).toHaveLength(2);
    expect(agent.session).toBe('s1');
  });

  it('treats a registration refused with a validation error as fatal', async () => {
    server.override('/register', {
      status: 400,
      body: { error: { code: 'validation_error', message: 'cpus: too big' } },
    });
    const { agent } = makeAgent();
    await expect(agent.start()).rejects.toBeInstanceOf(FatalAgentError);
    await expect(agent.closed).rejects.toBeInstanceOf(FatalAgentError);
  });

  it('refuses a state dir another agent uses', async () => {
    const { agent, stateDir } = makeAgent();
    await agent.start();
    const second = makeAgent({ stateDir });
    await expect(second.agent.start()).rejects.toThrow(/another conductor-agent/);
  });

  it('can stop while registration is still being retried', async () => {
    const down = { status: 503, body: { error: { code: 'unavailable', message: 'down' } } };
    server.override('/register', ...Array.from({ length: 100 }, () => down));
    const { agent } = makeAgent();
    const started = agent.start();
    await server.until(() => server.calls('/register').length >= 2, 5000, 'attempts');
    await agent.stop();
    await started;
    expect(agent.state).toBe('stopped');
    expect(server.calls('/unregister')).toHaveLength(0);
  });
});
