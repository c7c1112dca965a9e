/**
 * Regressions for races found while moving the agent tests onto the real control plane: each reproduced a
 * lost cancel, a leaked allocation or a job left running where it no longer belonged.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sql } from 'drizzle-orm';
import { describe, expect, it } from 'vitest';
import { eventually } from '../support/agent-process.ts';
import { agentBackends, makeGate, useControlPlane } from './control-plane.ts';

const { all } = await agentBackends();
const root = mkdtempSync(join(tmpdir(), 'regressions-'));

describe.each(all)('races on $name', (factory) => {
  const { control, makeAgent } = useControlPlane(factory, root);

  it('a job placed on an agent that leaves before claiming it is requeued, not placed there again', async () => {
    const cp = control();
    const { agent } = makeAgent();
    await agent.start();
    cp.proxy.drop('/agents/claim');
    const job = await cp.submit({ script: 'echo ran', cpus: 1 });
    await eventually(async () => (await cp.job(job.id)).node === agent.workerId);
    await agent.stop();
    const after = await cp.job(job.id);
    expect(after).toMatchObject({ state: 'PENDING', node: null });
    cp.proxy.undrop();
  });

  it('a cancel whose job was handed out in a lost claim answer ends it at once; it never runs', async () => {
    const cp = control();
    const { agent } = makeAgent();
    await agent.start();
    cp.proxy.loseAnswers('/agents/claim');
    const job = await cp.submit({ script: 'echo ran', cpus: 1 });
    await eventually(() =>
      cp.proxy
        .calls('/agents/claim')
        .some(
          (c) => c.fault === 'answer_lost' && ((c.response as { jobs?: unknown[] })?.jobs?.length ?? 0) > 0,
        ),
    );
    expect(await cp.cancel(job.id)).toBe(200);
    expect(await cp.job(job.id)).toMatchObject({ state: 'CANCELLED' });
    cp.proxy.undrop();
    await new Promise((resolve) => setTimeout(resolve, 1500));
    expect((await cp.logs(job.id)).stdout.content).toBe('');
    expect(await cp.job(job.id)).toMatchObject({ state: 'CANCELLED' });
    await agent.stop();
  });

  it('a silent job on a node declared lost is stopped when the agent registers again', async () => {
    const cp = control();
    const { agent } = makeAgent({ heartbeatIntervalS: 0.3 });
    await agent.start();
    const gate = makeGate();
    const job = await cp.submit({ script: gate.wait, cpus: 1, environment: gate.env });
    await cp.started(job.id);
    const first = agent.session;
    // A heartbeat landing between the test's aging of the worker and the reap would keep it alive. The agent
    // sends them one at a time: once one is held at the proxy, none is in flight.
    const heldFrom = Date.now();
    cp.proxy.hold('/agents/heartbeat');
    await eventually(() =>
      cp.proxy.calls('/agents/heartbeat').some((c) => c.at >= heldFrom && c.status === undefined),
    );
    await cp.reapLostWorkersNow([agent.workerId]);
    cp.proxy.release();
    expect((await cp.job(job.id)).state).toBe('NODE_FAIL');
    await eventually(() => agent.session !== first, { what: 're-registration' });
    await eventually(() => agent.runningJobs().length === 0, { timeoutMs: 5000, what: 'the orphan to stop' });
    gate.open();
    expect((await cp.job(job.id)).state).toBe('NODE_FAIL');
    await agent.stop();
  });

  it('cancels racing placements release every allocation', async () => {
    const cp = control();
    const { agent } = makeAgent({ heartbeatIntervalS: 60 });
    await agent.start();
    for (let i = 0; i < 40; i++) {
      const job = await cp.submit({ script: 'sleep 30', cpus: 1 });
      await cp.cancel(job.id);
      await cp.finished(job.id);
    }
    const leaked = await cp.rows<{ id: string }>(
      sql`SELECT j.id FROM jobs j JOIN resource_allocations a ON a.job_id = j.id AND NOT a.released
          WHERE j.state <> 'RUNNING'`,
    );
    expect(leaked).toEqual([]);
    await agent.stop();
  });
});
