/**
 * Issue 17, a pushed assignment's path without the claim round trip: the Agent (in process) on the push
 * channel of the real Node server (its in-process hub; the zero-setup cluster's PGlite and in-process
 * registry, and Postgres + Redis), through a FaultProxy that passes the channel and counts every request.
 * The wake carries the job and the agent starts it with no claim; a job cancelled between its push and its
 * start is stopped by the started report's answer; a push lost on the way is recovered by the claim the
 * agent makes when its channel comes back, and the job runs once.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sql } from 'drizzle-orm';
import { afterAll, describe, expect, it } from 'vitest';
import { eventually } from '../support/agent-process.ts';
import { agentBackends, sentBy, useControlPlane } from './control-plane.ts';

const { all } = await agentBackends();
const root = mkdtempSync(join(tmpdir(), 'conductor-channel-push-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const OPEN_LINE = 'info Channel open: pushed assignments, heartbeats as pings';
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe.each(all)('pushed assignments, a real agent on the real control plane on $name', (factory) => {
  const { control, makeAgent } = useControlPlane(factory, root, undefined, { upgrades: true });

  /** An agent on the channel, once the claim it makes when the channel opens was answered. */
  async function onChannel(input: Parameters<typeof makeAgent>[0] = {}) {
    const cp = control();
    const made = makeAgent({ channelReconnectWindowS: 1, ...input });
    await made.agent.start();
    await eventually(() => made.logger.lines.includes(OPEN_LINE), { what: 'the channel to open' });
    await eventually(() => sentBy(cp, '/agents/claim', made.agent.workerId).some((r) => r.status === 200), {
      what: 'the catch-up claim',
    });
    return made;
  }

  const startedReports = (jobId: number) => control().proxy.calls(`/agents/jobs/${jobId}/started`);

  it('starts a pushed job without a claim request; its started report, with the session, is its claim', async () => {
    const cp = control();
    const { agent } = await onChannel();
    const claims = sentBy(cp, '/agents/claim', agent.workerId).length;
    const job = await cp.submit({ script: 'echo pushed', cpus: 1 });
    expect(await cp.finished(job.id)).toMatchObject({ state: 'COMPLETED', node: agent.workerId });
    expect((await cp.logs(job.id)).stdout.content).toBe('pushed\n');
    expect(sentBy(cp, '/agents/claim', agent.workerId)).toHaveLength(claims);
    expect(startedReports(job.id).map((r) => [r.body, r.status])).toEqual([
      [{ worker_id: agent.workerId, attempt: 1, session: agent.session }, 200],
    ]);
    expect(await cp.claimedSession(job.id)).toBe(agent.session);
  });

  it('stops a job cancelled between its push and its start: the started report is answered CANCELLED', async () => {
    const cp = control();
    const { agent, logger } = await onChannel();
    cp.proxy.hold('/started');
    const job = await cp.submit({ script: 'sleep 30', cpus: 1 });
    await eventually(() => startedReports(job.id).length === 1, { what: 'the started report (held)' });
    expect(await cp.cancel(job.id)).toBe(200);
    expect(await cp.job(job.id)).toMatchObject({ state: 'CANCELLED', start_time: null });
    cp.proxy.release();
    await eventually(() => startedReports(job.id)[0]?.status === 200, { what: 'the started answer' });
    expect(startedReports(job.id)[0]!.response).toEqual({ state: 'CANCELLED' });
    await eventually(() => agent.runningJobs().length === 0, { what: 'the job process stopped' });
    expect(logger.lines).toContain(`info Cancelling job ${job.id}.1: job is CANCELLED on the control plane`);
    expect(await cp.job(job.id)).toMatchObject({ state: 'CANCELLED', start_time: null });
  });

  it('recovers a push lost on the way: the agent claims it when its channel comes back, and runs it once', async () => {
    const cp = control();
    const { agent, logger } = await onChannel();
    cp.proxy.muteChannels(); // what the server sends from now on (the wake with the job) is lost
    const job = await cp.submit({ script: 'echo once', cpus: 1 });
    await eventually(async () => (await cp.job(job.id)).node === agent.workerId, { what: 'the placement' });
    await sleep(500);
    expect(startedReports(job.id)).toEqual([]);
    const claims = sentBy(cp, '/agents/claim', agent.workerId).length;
    cp.proxy.dropChannels();
    expect(await cp.finished(job.id)).toMatchObject({ state: 'COMPLETED', attempt: 1 });
    expect((await cp.logs(job.id)).stdout.content).toBe('once\n');
    expect(logger.lines.some((l) => l.startsWith('warn Channel dropped'))).toBe(true);
    const recovery = sentBy(cp, '/agents/claim', agent.workerId).slice(claims);
    expect(
      recovery.some((r) =>
        (r.response as { jobs?: { job_id: number }[] })?.jobs?.some((j) => j.job_id === job.id),
      ),
    ).toBe(true);
    expect(startedReports(job.id)).toHaveLength(1);
    const [row] = await cp.rows<{ attempts: string }>(
      sql`SELECT count(*) AS attempts FROM job_attempts WHERE job_id = ${job.id}`,
    );
    expect(Number(row!.attempts)).toBe(1);
  });
});
