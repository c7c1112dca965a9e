/**
 * Usage accounting end to end: the Node server (real Postgres and Redis) and a real agent run jobs; as each
 * ends, its attempt is rolled up, and GET /api/v1/usage/report and `sreport` show the CPU time it held.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runSreport } from '../../cli/slurm/sreport.ts';
import type { RunningServer } from '../../functions/node/server.ts';
import { captureIo } from '../cli/slurm-stub.ts';
import { AgentProcess, eventually } from '../support/agent-process.ts';
import { availableBackends, type Backend, startTestServer, testConfig } from '../support/cluster.ts';

const [factory] = await availableBackends();
const HOUR = 3_600_000;

interface Job {
  id: number;
  state: string;
  attempts: { cpus: number; cpu_seconds: number | null; start_time: string; end_time: string }[];
}

describe.runIf(factory)('usage of jobs run by a real agent', () => {
  let backend: Backend;
  let server: RunningServer;
  let agent: AgentProcess;

  beforeAll(async () => {
    backend = await (factory as NonNullable<typeof factory>).create();
    server = await startTestServer(backend, testConfig({ heartbeatIntervalSeconds: 1, workerTtlSeconds: 3 }));
    agent = new AgentProcess(`usage01-${process.pid}`, server.url, { cpus: 4 });
    await agent.registered();
  }, 120_000);

  afterAll(async () => {
    await agent?.stop().catch(() => agent.kill9());
    await server?.close();
    await backend?.close();
  });

  const api = async <T>(path: string, body?: unknown): Promise<T> => {
    const res = await fetch(`${server.url}${path}`, {
      method: body === undefined ? 'GET' : 'POST',
      headers: { 'Content-Type': 'application/json' },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    expect(res.status, await res.clone().text()).toBeLessThan(300);
    return (await res.json()) as T;
  };

  it('rolls up each ended attempt: the report and sreport show the CPU-seconds the attempts held', async () => {
    const a = await api<{ id: number }>('/api/v1/jobs/submit', {
      script: 'sleep 1',
      cpus: 2,
      account: 'e2e-phys',
    });
    const b = await api<{ id: number }>('/api/v1/jobs/submit', {
      script: 'exit 3',
      cpus: 1,
      account: 'e2e-chem',
    });
    const ended = await Promise.all(
      [a.id, b.id].map((id) =>
        eventually(
          async () => {
            const job = await api<Job>(`/api/v1/jobs/${id}`);
            return job.state !== 'PENDING' && job.state !== 'RUNNING' ? job : undefined;
          },
          { what: `job ${id} ended` },
        ),
      ),
    );
    expect(ended.map((j) => j.state)).toEqual(['COMPLETED', 'FAILED']);
    // The report rounds to the millisecond.
    const held = ended.map((j) => Math.round((j.attempts[0]?.cpu_seconds ?? 0) * 1000) / 1000);
    expect(ended[0]?.attempts[0]?.cpus).toBe(2);
    // An attempt's start is dated when the agent's started report arrives, its end when the finish report
    // does: a job that runs before its report gets there (a warm start does) is counted that much short.
    expect(held[0]).toBeGreaterThan(1.8);
    const hour = Math.floor(Date.now() / HOUR) * HOUR;
    const period = `start=${new Date(hour - HOUR).toISOString()}&end=${new Date(hour + 2 * HOUR).toISOString()}`;
    const report = await api<{ rows: { account: string; cpu_seconds: number; jobs: number }[] }>(
      `/api/v1/usage/report?report=account-topusage&accounts=e2e-phys,e2e-chem&${period}`,
    );
    expect(report.rows.map((r) => [r.account, r.cpu_seconds, r.jobs])).toEqual([
      ['e2e-phys', held[0], 1],
      ['e2e-chem', held[1], 1],
    ]);
    const io = captureIo();
    const code = await runSreport(
      [
        '-P',
        '-n',
        '-t',
        'seconds',
        'account',
        'topusage',
        'accounts=e2e-phys',
        'start=now-1hours',
        'end=now+1hours',
      ],
      io,
      { CONDUCTOR_URL: server.url, HOME: '/nonexistent' },
    );
    expect(io.stderr).toBe('');
    expect(code).toBe(0);
    expect(io.stdout).toBe(`conductor|e2e-phys|${Math.floor(held[0] ?? 0)}|0\n`);
  });
});
