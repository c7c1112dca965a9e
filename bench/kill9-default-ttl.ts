/**
 * How long a node killed with kill -9 keeps its jobs RUNNING with the DEFAULT timings (TTL 60 s, heartbeats
 * every 30 s, reaping every 5 s): the real server process, a private redis-server, one real agent, one job.
 * The agent is killed right after a heartbeat, the worst case: a full TTL must pass before anyone may call it
 * lost. Takes a bit over a minute, so it is not part of the test suite.
 *
 *   npx tsx bench/kill9-default-ttl.ts     (needs the local Postgres and redis-server)
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { RedisServer, signalGroup } from '../test/faults/processes.ts';
import { AgentProcess, eventually } from '../test/support/agent-process.ts';
import { freePort, ServerProcess } from '../test/support/server-process.ts';
import { PG_ADMIN_URL } from '../test/support/services.ts';

const dbName = `conductor_bench_kill9_${process.pid}`;
const dbUrl = new URL(PG_ADMIN_URL);
dbUrl.pathname = `/${dbName}`;

async function admin(statement: string): Promise<void> {
  const client = new pg.Client({ connectionString: PG_ADMIN_URL });
  await client.connect();
  try {
    await client.query(statement);
  } finally {
    await client.end();
  }
}

async function dbQuery<T>(statement: string, params: unknown[] = []): Promise<T[]> {
  const client = new pg.Client({ connectionString: dbUrl.toString() });
  await client.connect();
  try {
    return (await client.query(statement, params)).rows as T[];
  } finally {
    await client.end();
  }
}

const redis = await RedisServer.start();
const server = new ServerProcess(await freePort(), {
  DATABASE_URL: dbUrl.toString(), // created and migrated by the server at start
  REDIS_URL: redis.url,
  CONDUCTOR_EMBEDDED_AGENT: '0',
});
let agent: AgentProcess | undefined;
let pgid: number | undefined;
try {
  await server.ready();
  agent = new AgentProcess('bench-kill9', server.url, { cpus: 2 });
  await agent.registered();
  const submitted = await fetch(`${server.url}/api/v1/jobs/submit`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ script: 'sleep 600', cpus: 1 }),
  });
  const job = (await submitted.json()) as { id: number };
  const pidFile = join(agent.stateDir, 'jobs', `${job.id}.1`, 'pid');
  pgid = await eventually(() => JSON.parse(readFileSync(pidFile, 'utf8')).pid as number, {
    what: 'the job to start',
  });

  // Kill right after a heartbeat (they come every 30 s): the worst case.
  const beats = agent.lines.filter((l) => l.includes('Heartbeat sent')).length;
  console.log('waiting for a heartbeat (every 30 s)...');
  await eventually(() => agent!.lines.filter((l) => l.includes('Heartbeat sent')).length > beats, {
    timeoutMs: 40_000,
    intervalMs: 20,
    what: 'a heartbeat',
  });
  const killedAt = Date.now();
  await agent.kill9();
  console.log(`kill -9 at ${new Date(killedAt).toISOString()}; waiting for NODE_FAIL...`);

  let keyGoneAt: number | undefined;
  const failed = await eventually(
    async () => {
      if (keyGoneAt === undefined && redis.cli('TTL', 'worker:bench-kill9') === '-2') keyGoneAt = Date.now();
      const res = await fetch(`${server.url}/api/v1/jobs/${job.id}`);
      const body = (await res.json()) as { state: string; end_time: string | null };
      return body.state === 'NODE_FAIL' ? body : undefined;
    },
    { timeoutMs: 120_000, intervalMs: 100, what: 'NODE_FAIL' },
  );
  const [worker] = await dbQuery<{ last_heartbeat: Date; down_reason: string }>(
    'SELECT last_heartbeat, down_reason FROM workers WHERE id = $1',
    ['bench-kill9'],
  );
  const failedAt = Date.parse(failed.end_time!);
  const s = (ms: number) => (ms / 1000).toFixed(1);
  console.log(
    [
      `RESULT kill -9 → NODE_FAIL with the default TTL (60 s), heartbeat 30 s, reaping every 5 s:`,
      `  ${s(failedAt - killedAt)} s after the kill (NODE_FAIL end_time)`,
      `  ${s(failedAt - new Date(worker!.last_heartbeat).getTime())} s after the agent's last heartbeat`,
      `  worker:bench-kill9 key gone (TTL -2) ${keyGoneAt ? s(keyGoneAt - killedAt) : '?'} s after the kill`,
      `  down_reason: ${worker!.down_reason}`,
    ].join('\n'),
  );
} finally {
  if (pgid) signalGroup(pgid, 'SIGKILL'); // the orphaned job of the killed agent
  if (agent && agent.child.exitCode === null) await agent.kill9();
  await server.stop();
  await redis.close();
  await admin(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`).catch(() => {});
}
