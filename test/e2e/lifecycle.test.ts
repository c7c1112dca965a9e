import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningServer } from '../../functions/node/server.ts';
import { AgentProcess, eventually } from '../support/agent-process.ts';
import {
  availableBackends,
  type Backend,
  type RecordingLogger,
  startTestServer,
  testConfig,
} from '../support/cluster.ts';
import { checkInvariants } from '../support/invariants.ts';

const backends = await availableBackends();

interface Job {
  id: number;
  state: string;
  exit_code: string | null;
  node: string | null;
  start_time: string | null;
  end_time: string | null;
}

describe.each(backends)('job lifecycle with a real agent on $name', (factory) => {
  let backend: Backend;
  let server: RunningServer & { logger: RecordingLogger };
  let agent: AgentProcess;
  const workDir = mkdtempSync(join(tmpdir(), 'conductor-work-'));

  beforeAll(async () => {
    backend = await factory.create();
    server = await startTestServer(backend, testConfig({ heartbeatIntervalSeconds: 1, workerTtlSeconds: 5 }));
    agent = new AgentProcess(`life-${factory.name.replace('+', '-')}`, server.url, {
      cpus: 4,
      env: { CONDUCTOR_TOKEN: 'agent-secret-token-must-not-leak' },
    });
    await agent.registered();
  });
  afterAll(async () => {
    await agent?.stop().catch(() => agent.kill9());
    await server?.close();
    await backend?.close();
  });

  const submit = async (body: Record<string, unknown>): Promise<Job> => {
    const res = await fetch(`${server.url}/api/v1/jobs/submit`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    expect(res.status).toBe(201);
    return (await res.json()) as Job;
  };
  const get = async (id: number): Promise<Job> =>
    (await (await fetch(`${server.url}/api/v1/jobs/${id}`)).json()) as Job;
  const finished = (id: number) =>
    eventually(
      async () => {
        const job = await get(id);
        return ['COMPLETED', 'FAILED', 'CANCELLED', 'TIMEOUT', 'NODE_FAIL'].includes(job.state)
          ? job
          : undefined;
      },
      { what: `job ${id} to end` },
    );
  const logs = async (id: number) =>
    (await (await fetch(`${server.url}/api/v1/jobs/${id}/logs`)).json()) as {
      stdout: { content: string };
      stderr: { content: string };
    };

  it('runs a script to COMPLETED with exit 0:0 and its output readable', async () => {
    const job = await submit({ script: 'echo "hello from $CONDUCTOR_JOB_ID"; echo oops >&2', cpus: 1 });
    const done = await finished(job.id);
    expect(done).toMatchObject({ state: 'COMPLETED', exit_code: '0:0', node: agent.nodeName });
    expect(done.start_time).not.toBeNull();
    expect(done.end_time).not.toBeNull();
    const output = await logs(job.id);
    expect(output.stdout.content).toBe(`hello from ${job.id}\n`);
    expect(output.stderr.content).toBe('oops\n');
  });

  it('reports exit 3 as FAILED 3:0 and a SIGKILLed script as FAILED 0:9', async () => {
    const three = await submit({ script: 'exit 3', cpus: 1 });
    const killed = await submit({ script: 'kill -9 $$', cpus: 1 });
    expect(await finished(three.id)).toMatchObject({ state: 'FAILED', exit_code: '3:0' });
    expect(await finished(killed.id)).toMatchObject({ state: 'FAILED', exit_code: '0:9' });
  });

  it('gives the job its variables, its CPU count and its work_dir, never the agent token', async () => {
    const job = await submit({
      script: 'echo "$CONDUCTOR_JOB_ID $CONDUCTOR_CPUS $GREETING $(pwd)"; echo "token=$CONDUCTOR_TOKEN"',
      cpus: 2,
      work_dir: workDir,
      environment: { GREETING: 'hi' },
    });
    expect(await finished(job.id)).toMatchObject({ state: 'COMPLETED' });
    expect((await logs(job.id)).stdout.content).toBe(`${job.id} 2 hi ${workDir}\ntoken=\n`);
  });

  it('cancels a running job: the whole process group dies, the output is kept', async () => {
    const pids = join(workDir, 'children.pids');
    const job = await submit({
      script: `echo started; sleep 300 & echo $! > ${pids}; sleep 300 & echo $! >> ${pids}; wait`,
      cpus: 1,
    });
    await eventually(async () => (await get(job.id)).start_time !== null && existsSync(pids), {
      what: 'job start',
    });
    await eventually(async () => (await logs(job.id)).stdout.content.includes('started'), {
      what: 'streamed output',
    });
    const res = await fetch(`${server.url}/api/v1/jobs/${job.id}/cancel`, { method: 'POST' });
    expect(res.status).toBe(200);
    const done = await finished(job.id);
    expect(done.state).toBe('CANCELLED');
    const children = readFileSync(pids, 'utf8').trim().split('\n').map(Number);
    expect(children).toHaveLength(2);
    await eventually(
      () =>
        children.every((pid) => {
          try {
            process.kill(pid, 0);
            return false;
          } catch {
            return true;
          }
        }),
      { timeoutMs: 3000, what: 'children to die' },
    );
    expect((await logs(job.id)).stdout.content).toContain('started');
  });

  it('leaves Postgres and the cache consistent', async () => {
    await eventually(async () => {
      const dash = (await (await fetch(`${server.url}/api/v1/dashboard`)).json()) as {
        resources: { allocated_cpus: number };
      };
      return dash.resources.allocated_cpus === 0;
    });
    await checkInvariants(backend.db.db, backend.registry);
  });
});
