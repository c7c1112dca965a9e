/**
 * End to end through the processes users run, not inside the bench: the server as `npm start` starts it
 * (`node dist/server.mjs`, logging on, default configuration) over the local Postgres (its own database
 * `conductor_bench_e2e`, dropped at the end) and Redis (database 13, flushed), and one packaged agent
 * (`node agent/dist/cli.js`, TOTAL_CPUS=96). 1,000 `true` jobs are submitted by `POST /api/v1/jobs/submit`,
 * 16 in flight; the time is from the first submission to the last COMPLETED (counted in Postgres every 20 ms,
 * as bench/run.ts does). Each run also prints the CPU seconds each process used meanwhile (/proc): the server,
 * the agent, the jobs' processes (the agent's reaped children), every Postgres process, and the bench itself
 * (the submitting client): on a machine of few cores their sum bounds the run from below.
 *
 *   npx tsx bench/e2e-processes.ts              # 2 runs; E2E_RUNS=3, E2E_JOBS=1000
 *   E2E_SUBMIT_RATE=0 npx tsx bench/e2e-processes.ts        # the server's CONDUCTOR_SUBMIT_RATE (0: no limit)
 *   E2E_PROFILE=/tmp/prof npx tsx bench/e2e-processes.ts   # --cpu-prof of the server and the agent there
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { AgentProcess } from '../test/support/agent-process.ts';
import { descendantsOf, freePort, ServerProcess } from '../test/support/server-process.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const PG_URL = process.env.E2E_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/conductor_bench_e2e';
const REDIS_URL = process.env.E2E_REDIS_URL ?? 'redis://127.0.0.1:6379/13';
const RUNS = Number(process.env.E2E_RUNS ?? 2);
const JOBS = Number(process.env.E2E_JOBS ?? 1000);
const PROFILE = process.env.E2E_PROFILE;
const BUILT_AGENT = [fileURLToPath(new URL('../agent/dist/cli.js', import.meta.url))];

const admin = new pg.Client({ connectionString: PG_URL.replace(/\/[^/]+$/, '/postgres') });
await admin.connect();
const dbName = new URL(PG_URL).pathname.slice(1);
execFileSync('npm', ['run', '--silent', 'build:agent'], { cwd: ROOT, stdio: 'inherit' });
execFileSync('node', ['scripts/build.mjs', '--if-stale'], { cwd: ROOT, stdio: 'inherit' });
if (PROFILE) mkdirSync(PROFILE, { recursive: true });
/** One folder per process: npm and the build step under `npm start` write profiles there too. */
const profile = (name: string) => (PROFILE ? ['--cpu-prof', `--cpu-prof-dir=${PROFILE}/${name}`] : []);

const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;

/** CPU seconds of `pid`: its own (user + system), and its waited-for children's (a job's processes: the agent's). */
function cpuOf(pid: number): { own: number; children: number } {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat
      .slice(stat.lastIndexOf(')') + 2)
      .split(' ')
      .map(Number);
    return { own: (f[11]! + f[12]!) / CLK_TCK, children: (f[13]! + f[14]!) / CLK_TCK };
  } catch {
    return { own: 0, children: 0 };
  }
}

/** CPU seconds of every Postgres process (other databases' work on this server included). */
function postgresCpu(): number {
  let sum = 0;
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      if (!stat.includes('(postgres)')) continue;
      const f = stat
        .slice(stat.lastIndexOf(')') + 2)
        .split(' ')
        .map(Number);
      sum += (f[11]! + f[12]!) / CLK_TCK;
    } catch {
      // gone meanwhile
    }
  }
  return sum;
}

/** Where the CPU went during one run, by process. */
function cpuSnapshot(serverPid: number, agentPid: number) {
  const agent = cpuOf(agentPid);
  return {
    server: cpuOf(serverPid).own,
    agent: agent.own,
    jobs: agent.children,
    postgres: postgresCpu(),
    bench: cpuOf(process.pid).own,
  };
}

let limited = 0;
/** As a client would: a 429 (the submission rate limit) is retried after its Retry-After. */
async function submit(url: string, body: unknown): Promise<number> {
  for (;;) {
    const res = await fetch(`${url}/api/v1/jobs/submit`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    if (res.status === 201) return ((await res.json()) as { id: number }).id;
    if (res.status !== 429) throw new Error(`submit: ${res.status} ${await res.text()}`);
    limited++;
    await res.arrayBuffer();
    await new Promise((resolve) => setTimeout(resolve, Number(res.headers.get('retry-after') ?? 1) * 1000));
  }
}

/** The server's configuration: the default (submission rate limit on: 50/s, bursts of 500), or E2E_SUBMIT_RATE. */
const RATE = process.env.E2E_SUBMIT_RATE;
const seconds: number[] = [];
for (let run = 0; run < RUNS; run++) {
  limited = 0;
  await admin.query(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`);
  execFileSync('redis-cli', ['-n', new URL(REDIS_URL).pathname.slice(1), 'FLUSHDB'], { stdio: 'ignore' });
  const port = await freePort();
  const server = new ServerProcess(
    port,
    {
      DATABASE_URL: PG_URL,
      REDIS_URL,
      CONDUCTOR_EMBEDDED_AGENT: '0',
      ...(RATE !== undefined ? { CONDUCTOR_SUBMIT_RATE: RATE } : {}),
    },
    // Node refuses --cpu-prof in NODE_OPTIONS: profiled, the server runs as `npm start` execs it.
    PROFILE ? { nodeArgs: [...profile(`server-${run}`), 'dist/server.mjs'] } : { npmStart: true },
  );
  await server.ready(180_000);
  const agent = new AgentProcess(`e2e-agent-${run}`, server.url, {
    cpus: 96,
    entry: [...profile(`agent-${run}`), ...BUILT_AGENT],
  });
  await agent.registered();
  const db = new pg.Client({ connectionString: PG_URL });
  await db.connect();
  const serverPid =
    descendantsOf(server.child.pid!).find((p) => p.command.includes('dist/server.mjs'))?.pid ??
    server.child.pid!;
  const cpuBefore = cpuSnapshot(serverPid, agent.child.pid!);
  const t0 = performance.now();
  let next = 0;
  await Promise.all(
    Array.from({ length: 16 }, async () => {
      while (next < JOBS) {
        next++;
        await submit(server.url, { script: 'true', cpus: 1 });
      }
    }),
  );
  const submitted = (performance.now() - t0) / 1000;
  for (;;) {
    const { rows } = await db.query(`SELECT count(*)::int AS n FROM jobs WHERE state = 'COMPLETED'`);
    if (rows[0].n >= JOBS) break;
    if (performance.now() - t0 > 300_000) throw new Error(`only ${rows[0].n} of ${JOBS} completed in 300 s`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  const total = (performance.now() - t0) / 1000;
  seconds.push(total);
  const cpuAfter = cpuSnapshot(serverPid, agent.child.pid!);
  const cpu = Object.fromEntries(
    Object.entries(cpuAfter).map(([k, v]) => [
      k,
      Number((v - cpuBefore[k as keyof typeof cpuBefore]).toFixed(2)),
    ]),
  );
  console.log(
    `run ${run + 1}: ${JOBS} jobs submitted in ${submitted.toFixed(2)} s (${limited} answers 429), all COMPLETED in ${total.toFixed(2)} s (load average ${loadavg()
      .map((x) => x.toFixed(2))
      .join(' ')}); CPU seconds: ${JSON.stringify(cpu)}`,
  );
  await db.end();
  await agent.stop();
  await server.stop();
}
await admin.query(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`);
await admin.end();
const sorted = [...seconds].sort((a, b) => a - b);
console.log(
  JSON.stringify({
    jobs: JOBS,
    runs: seconds.map((s) => Number(s.toFixed(2))),
    median: sorted[Math.floor((sorted.length - 1) / 2)],
  }),
);
