import { execFileSync } from 'node:child_process';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AgentProcess, eventually } from '../support/agent-process.ts';
import { createPostgresDatabase, type TestDatabase } from '../support/databases.ts';
import { freePort, ServerProcess } from '../support/server-process.ts';
import { serviceAvailable } from '../support/services.ts';

/**
 * Real agents on the push channel of real Node server processes: every job starts exactly once and every
 * result arrives while every socket drops (the server restarted mid-assignment, as a deploy does), and an
 * agent whose socket goes silent (SIGSTOP: the TCP connection stays open, nothing is sent) is declared lost
 * within TTL + one reap, its requeue job run again elsewhere.
 */
const available = (await serviceAvailable('postgres')) && (await serviceAvailable('redis'));
const REDIS_DB = '13';

interface Job {
  id: number;
  state: string;
  node: string | null;
  attempt: number;
}

describe.runIf(available)('real agents on the push channel (Node server processes)', () => {
  let database: TestDatabase;
  let server: ServerProcess;
  let port: number;
  const agents: AgentProcess[] = [];
  let redis: Redis;
  const psql = (statement: string) =>
    execFileSync('psql', [database.url!, '-Atc', statement], { encoding: 'utf8' }).trim();
  const env = () => ({
    DATABASE_URL: database.url!,
    REDIS_URL: `redis://127.0.0.1:6379/${REDIS_DB}`,
    CONDUCTOR_EMBEDDED_AGENT: '0',
    CONDUCTOR_WORKER_TTL: '4',
    CONDUCTOR_HEARTBEAT_INTERVAL: '1',
    CONDUCTOR_SCHEDULE_INTERVAL: '1',
  });
  const startAgent = async (name: string, cpus = 4) => {
    const agent = new AgentProcess(name, server.url, {
      cpus,
      env: { CONDUCTOR_CHANNEL_RECONNECT_WINDOW: '2' },
    });
    agents.push(agent);
    await agent.waitForLine(/Channel open/);
    return agent;
  };
  const submit = async (body: Record<string, unknown>): Promise<Job> => {
    const response = await fetch(`${server.url}/api/v1/jobs/submit`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    expect(response.status).toBe(201);
    return (await response.json()) as Job;
  };
  const job = async (id: number): Promise<Job> =>
    (await (await fetch(`${server.url}/api/v1/jobs/${id}`)).json()) as Job;

  beforeAll(async () => {
    database = await createPostgresDatabase();
    redis = new Redis(`redis://127.0.0.1:6379/${REDIS_DB}`);
    await redis.flushdb();
    port = await freePort();
    server = new ServerProcess(port, env());
    await server.ready();
  });
  afterAll(async () => {
    for (const agent of agents) agent.child.kill('SIGCONT');
    await Promise.all(agents.map((a) => a.stop().catch(() => a.kill9())));
    await server?.stop();
    await redis?.flushdb();
    redis?.disconnect();
    await database?.close();
  });

  it('every job starts exactly once and every result arrives while the server restarts mid-assignment (every socket drops)', async () => {
    await startAgent('chan-a', 4);
    await startAgent('chan-b', 4);
    const jobs: Job[] = [];
    for (let i = 0; i < 12; i++) {
      jobs.push(await submit({ script: `#!/bin/sh\necho job-${i}\nsleep 1\n`, cpus: 2 }));
    }
    // Mid-assignment: some running, most still pending. The server goes away (its sockets with it) and comes back.
    await eventually(async () => (await job(jobs[0]!.id)).state !== 'PENDING');
    expect(await server.stop()).toBe(0);
    server = new ServerProcess(port, env());
    await server.ready();
    for (const agent of agents) await agent.waitForLine(/Channel dropped/);
    await eventually(
      async () => {
        const states = await Promise.all(jobs.map((j) => job(j.id)));
        return states.every((s) => s.state === 'COMPLETED');
      },
      { timeoutMs: 60_000, what: 'every job COMPLETED' },
    );
    // Exactly once: one attempt each, and each ran once (its output has its line once).
    expect(
      psql(`SELECT count(*) FROM job_attempts WHERE job_id IN (${jobs.map((j) => j.id).join(',')})`),
    ).toBe(String(jobs.length));
    for (const j of jobs) {
      const log = (await (await fetch(`${server.url}/api/v1/jobs/${j.id}/logs`)).json()) as {
        stdout: { content: string };
      };
      expect(log.stdout.content.match(/job-\d+/g)).toHaveLength(1);
    }
    // Each agent is back on the channel (after the spread delay, and back-off while the server was away).
    await eventually(
      () => agents.every((a) => a.lines.filter((l) => l.includes('Channel open')).length >= 2),
      { timeoutMs: 30_000, what: 'every agent back on the channel' },
    );
  });

  it('an agent whose socket goes silent (SIGSTOP) is declared lost within TTL + one reap; its requeue job runs elsewhere', async () => {
    const victim = await startAgent('chan-stopped', 8);
    const long = await submit({ script: '#!/bin/sh\nsleep 300\n', cpus: 8, requeue: true });
    await eventually(async () => (await job(long.id)).node === 'chan-stopped', { timeoutMs: 20_000 });
    await eventually(
      async () => psql(`SELECT start_time IS NOT NULL FROM jobs WHERE id = ${long.id}`) === 't',
    );
    const stoppedAt = Date.now();
    victim.child.kill('SIGSTOP');
    await eventually(() => psql(`SELECT status FROM workers WHERE id = 'chan-stopped'`) === 'down', {
      timeoutMs: 20_000,
      what: 'the silent worker reaped',
    });
    // TTL 4 s after its last refresh (at most 1 s before the stop), one reap (1 s), and slack for a busy machine.
    expect(Date.now() - stoppedAt).toBeLessThan(4_000 + 1_000 + 1_000 + 4_000);
    // Requeued, it starts again on a node that can hold it.
    await startAgent('chan-spare', 8);
    await eventually(
      async () => {
        const now = await job(long.id);
        return now.node === 'chan-spare' && now.attempt === 2;
      },
      { timeoutMs: 20_000, what: 'the requeued job on the spare node' },
    );
    victim.child.kill('SIGCONT');
  });
});
