/**
 * A two-minute control-plane outage with work in flight, default timings (TTL 60 s, heartbeats 30 s): the real
 * server process over Postgres and a private redis-server, one real agent with 12 CPUs and 14 jobs of 5 s to
 * 170 s (two wait in the queue). 10 s after the submissions the server is killed (SIGKILL) and stays down
 * for 120 s; most jobs end meanwhile and their results wait on the agent. Then the server starts again on the
 * same port. Counts the results delivered (expected: all 14 COMPLETED, with their whole output, each run
 * exactly once).
 *
 *   npx tsx bench/outage-2min.ts     (about 4 minutes; needs the local Postgres and redis-server)
 */
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { RedisServer } from '../test/faults/processes.ts';
import { AgentProcess, eventually } from '../test/support/agent-process.ts';
import { freePort, ServerProcess } from '../test/support/server-process.ts';
import { PG_ADMIN_URL } from '../test/support/services.ts';

const DOWN_MS = Number(process.env.OUTAGE_SECONDS ?? 120) * 1000;
const DURATIONS = [5, 15, 30, 45, 60, 75, 90, 105, 120, 135, 150, 170, 20, 40]; // the last two queue
const dbName = `conductor_bench_outage_${process.pid}`;
const dbUrl = new URL(PG_ADMIN_URL);
dbUrl.pathname = `/${dbName}`;
const marks = join(mkdtempSync(join(tmpdir(), 'bench-outage-')), 'runs');
const s = (ms: number) => (ms / 1000).toFixed(1);
const t0 = Date.now();
const log = (message: string) => console.log(`[${s(Date.now() - t0).padStart(6)} s] ${message}`);

interface Job {
  id: number;
  state: string;
  attempt: number;
  exit_code: string | null;
  reason: string | null;
}

const redis = await RedisServer.start();
const port = await freePort();
const env = { DATABASE_URL: dbUrl.toString(), REDIS_URL: redis.url, CONDUCTOR_EMBEDDED_AGENT: '0' };
let server = new ServerProcess(port, env);
const base = server.url;
const servers = [server];
let agent: AgentProcess | undefined;

async function api<T>(method: string, path: string, body?: unknown): Promise<T> {
  const res = await fetch(`${base}${path}`, {
    method,
    headers: body ? { 'content-type': 'application/json' } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  if (res.status >= 500) throw new Error(`${method} ${path}: ${res.status} ${await res.text()}`);
  return (await res.json()) as T;
}

try {
  await server.ready();
  agent = new AgentProcess('bench-outage', base, { cpus: 12 });
  await agent.registered();
  const jobs: Job[] = [];
  for (const seconds of DURATIONS) {
    jobs.push(
      await api<Job>('POST', '/api/v1/jobs/submit', {
        name: `sleep-${seconds}`,
        cpus: 1,
        script: `echo "$CONDUCTOR_JOB_ID.$CONDUCTOR_ATTEMPT" >> ${marks}; echo "start $CONDUCTOR_JOB_ID"; sleep ${seconds}; echo "end $CONDUCTOR_JOB_ID"`,
      }),
    );
  }
  log(`submitted ${jobs.length} jobs (12 run at once on 12 CPUs, 2 queued)`);
  await new Promise((resolve) => setTimeout(resolve, 10_000));
  const before = await Promise.all(jobs.map((j) => api<Job>('GET', `/api/v1/jobs/${j.id}`)));
  log(`before the outage: ${summary(before)}`);

  const exited = new Promise((resolve) => server.child.once('exit', resolve));
  server.child.kill('SIGKILL');
  await exited;
  const downAt = Date.now();
  log(`control plane killed (SIGKILL); down for ${s(DOWN_MS)} s`);
  await new Promise((resolve) => setTimeout(resolve, DOWN_MS));
  const heldIds = agent.lines
    .filter((l) => / ended: /.test(l) && Date.parse(l.slice(0, 24)) >= downAt)
    .map((l) => Number(/Job (\d+)\./.exec(l)?.[1]));
  const endedMeanwhile = heldIds.length;
  log(`${endedMeanwhile} jobs ended on the agent while the control plane was down`);

  server = new ServerProcess(port, env);
  servers.push(server);
  await server.ready();
  const upAt = Date.now();
  log(`control plane back (started in ${s(upAt - downAt - DOWN_MS)} s)`);

  const endedAt = new Map<number, number>();
  const final = await eventually(
    async () => {
      const now = await Promise.all(jobs.map((j) => api<Job>('GET', `/api/v1/jobs/${j.id}`)));
      for (const j of now)
        if (!['PENDING', 'RUNNING'].includes(j.state) && !endedAt.has(j.id)) endedAt.set(j.id, Date.now());
      return now.every((j) => !['PENDING', 'RUNNING'].includes(j.state)) ? now : undefined;
    },
    { timeoutMs: 300_000, intervalMs: 250, what: 'every job to end' },
  );
  const heldDelivered = Math.max(...heldIds.map((id) => endedAt.get(id) ?? Number.NaN));
  const lastAt = Date.now();
  let complete = 0;
  for (const job of final) {
    const logs = await api<{ stdout: { content: string } }>('GET', `/api/v1/jobs/${job.id}/logs`);
    const whole = logs.stdout.content === `start ${job.id}\nend ${job.id}\n`;
    if (job.state === 'COMPLETED' && job.exit_code === '0:0' && job.attempt === 1 && whole) complete++;
    else
      log(
        `job ${job.id}: ${job.state} attempt ${job.attempt} ${job.reason ?? ''} output ${JSON.stringify(logs.stdout.content)}`,
      );
  }
  const runs = readFileSync(marks, 'utf8').trim().split('\n');
  const once = new Set(runs).size === runs.length && runs.length === jobs.length;
  const lost = servers.some((x) => x.has('Worker lost'));
  log(`after the restart: ${summary(final)}`);
  console.log(
    [
      `RESULT control plane down ${s(DOWN_MS)} s (SIGKILL, restart on the same port), default timings:`,
      `  ${complete}/${jobs.length} jobs COMPLETED with their whole output and attempt 1 (expected: all)`,
      `  ${endedMeanwhile} of them ended while the control plane was down; their results waited on the agent`,
      `  and were all delivered ${s(heldDelivered - upAt)} s after the restart (agent report backoff: at most 30 s)`,
      `  every job ran exactly once: ${once} (${runs.length} runs recorded)`,
      `  a worker declared lost: ${lost}`,
      `  last result in ${s(lastAt - upAt)} s after the restart`,
    ].join('\n'),
  );
} finally {
  if (agent && agent.child.exitCode === null) await agent.stop().catch(() => agent?.kill9());
  for (const x of servers) await x.stop().catch(() => {});
  await redis.close();
  const client = new pg.Client({ connectionString: PG_ADMIN_URL });
  await client.connect();
  await client.query(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`).catch(() => {});
  await client.end();
}

function summary(jobs: Job[]): string {
  const counts = new Map<string, number>();
  for (const j of jobs) counts.set(j.state, (counts.get(j.state) ?? 0) + 1);
  return [...counts].map(([state, n]) => `${n} ${state}`).join(', ');
}
