/**
 * Issue 18's fair-share "done when", end to end: the Node server on real Postgres and Redis, a real agent with
 * one CPU. Two accounts with equal (unconfigured) shares; one ran 10 CPU-hours an hour ago (a finished
 * attempt with real timestamps). Their jobs are submitted at once: the other account's go first, by the
 * documented factors (docs/priority.md), and sprio (the API and the drop-in command) shows those factors.
 */
import { execFile, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { delimiter, join } from 'node:path';
import { promisify } from 'node:util';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { recalculatePriorities } from '../../functions/domain/priority.ts';
import type { RunningServer } from '../../functions/node/server.ts';
import { AgentProcess, eventually } from '../support/agent-process.ts';
import { availableBackends, type Backend, startTestServer, testConfig } from '../support/cluster.ts';

const ROOT = join(import.meta.dirname, '..', '..');
const [factory] = await availableBackends();

interface Job {
  id: number;
  account: string | null;
  state: string;
  start_time: string | null;
  computed_priority: number;
}

interface Priorities {
  weights: Record<string, number>;
  jobs: {
    job_id: number;
    account: string;
    priority: number;
    nice: number;
    factors: Record<string, number>;
    weighted: Record<string, number>;
  }[];
}

describe.runIf(factory)('fair-share with a real agent', () => {
  let backend: Backend;
  let server: RunningServer;
  let agent: AgentProcess;
  const config = testConfig({ heartbeatIntervalSeconds: 1, workerTtlSeconds: 3 });
  const root = mkdtempSync(join(tmpdir(), 'conductor-e2e-fairshare-'));
  const bin = join(root, 'bin');

  beforeAll(async () => {
    backend = await (factory as NonNullable<typeof factory>).create();
    server = await startTestServer(backend, config);
    agent = new AgentProcess(`fair01-${process.pid}`, server.url, { cpus: 1 });
    await agent.registered();
    execFileSync('npm', ['run', '--silent', 'conductor', '--', 'slurm-commands', bin], {
      cwd: ROOT,
      env: { ...process.env, CONDUCTOR_URL: server.url },
      stdio: 'pipe',
    });
  }, 120_000);

  afterAll(async () => {
    await agent?.stop().catch(() => agent.kill9());
    await server?.close();
    await backend?.close();
    rmSync(root, { recursive: true, force: true });
  });

  const api = async <T>(path: string, init?: RequestInit) => {
    const res = await fetch(`${server.url}${path}`, {
      ...init,
      headers: { 'content-type': 'application/json' },
    });
    expect(res.ok, `${path}: ${res.status}`).toBe(true);
    return (await res.json()) as T;
  };

  it('serves the account that used less first, by the documented factors, and sprio shows them', {
    timeout: 90_000,
  }, async () => {
    // Account heavy ran 10 CPUs for an hour, ending an hour ago: 36,000 CPU-seconds × 2^(-1 h / 7 days).
    await backend.db.db.execute(sql`WITH h AS (
        INSERT INTO jobs (name, script, cpus, account, state, exit_code, node, submit_time, start_time, end_time, attempt)
        VALUES ('history', 'true', 10, 'heavy', 'COMPLETED', '0:0', 'old-node', now() - interval '2 hours',
                now() - interval '2 hours', now() - interval '1 hour', 1)
        RETURNING id
      )
      INSERT INTO job_attempts (job_id, attempt, node, start_time, end_time, state, exit_code, requeued, cpus)
      SELECT id, 1, 'old-node', now() - interval '2 hours', now() - interval '1 hour', 'COMPLETED', '0:0', false, 10
      FROM h`);
    // The agent's one CPU is busy until the test says so: the jobs below wait together.
    const gate = join(root, 'go');
    const blocker = await api<Job>('/api/v1/jobs/submit', {
      method: 'POST',
      body: JSON.stringify({ script: `while [ ! -f ${gate} ]; do sleep 0.05; done`, cpus: 1, name: 'gate' }),
    });
    await eventually(
      async () => ((await api<Job>(`/api/v1/jobs/${blocker.id}`)).state === 'RUNNING' ? true : undefined),
      {
        timeoutMs: 20_000,
        what: 'the gate job running',
      },
    );

    // As on a cluster that has not recalculated since heavy's usage: both accounts start with a factor of 1,
    // heavy's first job is on top and the next pass keeps the agent's node for it. The recalculation below
    // must hand that node to light's.
    await backend.db.db.execute(sql`DELETE FROM fairshare`);
    // At once, in one request, heavy's first.
    const { jobs } = await api<{ jobs: Job[] }>('/api/v1/jobs/batch', {
      method: 'POST',
      body: JSON.stringify({
        jobs: ['heavy', 'light', 'heavy', 'light', 'heavy', 'light'].map((account, i) => ({
          script: 'sleep 0.1',
          cpus: 1,
          account,
          name: `${account}-${i}`,
        })),
      }),
    });
    // The PriorityCalcPeriod's recalculation (the backstop's), now rather than in 5 minutes.
    const recalculated = await recalculatePriorities({ db: backend.db.db, config });
    expect(recalculated.accounts).toBe(2);

    const view = await api<Priorities>('/api/v1/jobs/priority');
    expect(view.weights).toEqual({ age: 1000, fairshare: 10_000, jobsize: 0, partition: 1000, qos: 0 });
    const heavy = view.jobs.filter((j) => j.account === 'heavy');
    const light = view.jobs.filter((j) => j.account === 'light');
    expect(heavy).toHaveLength(3);
    expect(light).toHaveLength(3);
    // Equal shares S = 1/2 each; heavy has all the usage (U = 1): F = 2^(-1/0.5) = 0.25, light's 2^0 = 1.
    for (const j of heavy) {
      expect(j.factors.fairshare).toBe(0.25);
      expect(j.weighted.fairshare).toBe(2500);
      expect(j.factors.partition).toBe(1);
      // age: seconds over PriorityMaxAge (7 days), to 3 decimals: 0.
      expect(j.factors.age).toBe(0);
      expect(j.priority).toBe(2500 + 1000);
      expect(j.nice).toBe(0);
    }
    for (const j of light) {
      expect(j.factors.fairshare).toBe(1);
      expect(j.priority).toBe(10_000 + 1000);
    }
    // Highest first: light's three, then heavy's.
    expect(view.jobs.map((j) => j.account)).toEqual(['light', 'light', 'light', 'heavy', 'heavy', 'heavy']);

    // sshare's numbers, as the recalculation left them.
    const { accounts } = await api<{ accounts: Record<string, unknown>[] }>('/api/v1/fairshare');
    expect(accounts).toMatchObject([
      { account: 'heavy', norm_shares: 0.5, norm_usage: 1, fairshare: 0.25 },
      { account: 'light', norm_shares: 0.5, norm_usage: 0, raw_usage: 0, fairshare: 1 },
    ]);
    // Usage is decayed per hourly roll-up bucket, at its middle: within an hour's decay (0.4 %) of the end's.
    const raw = Number(accounts[0]?.raw_usage);
    expect(raw).toBeLessThanOrEqual(36_000 * 2 ** (-1 / 168) + 1);
    expect(raw).toBeGreaterThan(36_000 * 2 ** (-2 / 168));
    // A bad filter is a 400 that names it.
    const bad = await fetch(`${server.url}/api/v1/jobs/priority?ids=abc`);
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { error: { message: string } }).error.message).toContain('ids');

    // The drop-in sprio prints the same, weighted, in Slurm's columns.
    const sprio = await promisify(execFile)('sprio', ['-l'], {
      cwd: root,
      env: {
        PATH: `${bin}${delimiter}${process.env.PATH}`,
        HOME: process.env.HOME,
        USER: userInfo().username,
        CONDUCTOR_URL: server.url,
      },
    });
    const lines = sprio.stdout.trimEnd().split('\n');
    expect(lines[0]?.split(/\s+/).filter(Boolean)).toEqual([
      'JOBID',
      'PARTITION',
      'USER',
      'PRIORITY',
      'SITE',
      'AGE',
      'FAIRSHARE',
      'JOBSIZE',
      'PARTITION',
      'QOS',
      'NICE',
    ]);
    const row = (id: number) =>
      lines
        .find((l) => l.trim().startsWith(`${id} `))
        ?.trim()
        .split(/\s+/);
    const heavyId = jobs[0]?.id as number;
    const lightId = jobs[1]?.id as number;
    // JOBID PARTITION (USER: none on the open cluster, so the column is blank) PRIORITY SITE AGE FAIRSHARE ...
    expect(row(heavyId)?.slice(-8)).toEqual(['3500', '0', '0', '2500', '0', '1000', '0', '0']);
    expect(row(lightId)?.slice(-8)).toEqual(['11000', '0', '0', '10000', '0', '1000', '0', '0']);

    // Open the gate: the one CPU runs them one at a time, in priority order.
    writeFileSync(gate, '');
    const ended = await eventually(
      async () => {
        const all = await Promise.all(jobs.map((j) => api<Job>(`/api/v1/jobs/${j.id}`)));
        return all.every((j) => j.state === 'COMPLETED') ? all : undefined;
      },
      { timeoutMs: 60_000, what: 'all six jobs completed' },
    );
    const order = [...ended].sort((a, b) => Date.parse(a.start_time ?? '') - Date.parse(b.start_time ?? ''));
    expect(order.map((j) => j.account)).toEqual(['light', 'light', 'light', 'heavy', 'heavy', 'heavy']);
    // Within an account, submit order.
    expect(order.map((j) => j.id)).toEqual(
      [jobs[1], jobs[3], jobs[5], jobs[0], jobs[2], jobs[4]].map((j) => j?.id),
    );
  });
});
