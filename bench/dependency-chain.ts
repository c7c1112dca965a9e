/**
 * A dependency chain through the processes users run: the server as `npm start` starts it (its own database,
 * Redis database 14) and one packaged agent. `depth` jobs of `true`, each `afterok` on the one before, are
 * submitted behind a held first job; releasing it starts the chain. The measure is from the first job's start
 * to the last one's end (Postgres's start_time and end_time), and per link: the time between a job's end and
 * its dependant's start.
 *
 *   npx tsx bench/dependency-chain.ts          # CHAIN_DEPTH=1000
 */
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { AgentProcess } from '../test/support/agent-process.ts';
import { freePort, ServerProcess } from '../test/support/server-process.ts';

const BUILT_AGENT = [fileURLToPath(new URL('../agent/dist/cli.js', import.meta.url))];
const ROOT = fileURLToPath(new URL('..', import.meta.url));

export interface ChainResult {
  depth: number;
  submit_seconds: number;
  /** First start to last end. */
  seconds: number;
  /** A job's end to its dependant's start, per link (ms). */
  link_ms: number[];
  /** Medians: a job's end to its dependant's claim by the agent; a job's start to its end. */
  claim_after_end_ms: number | undefined;
  run_ms: number | undefined;
  states: Record<string, number>;
}

async function post(url: string, path: string, body: unknown): Promise<{ id: number }> {
  const res = await fetch(`${url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  if (!res.ok) throw new Error(`${path}: ${res.status} ${await res.text()}`);
  return (await res.json()) as { id: number };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

export async function runDependencyChain(options: {
  depth: number;
  databaseUrl: string;
  redisUrl: string;
}): Promise<ChainResult> {
  const { depth, databaseUrl, redisUrl } = options;
  const admin = new pg.Client({ connectionString: databaseUrl.replace(/\/[^/]+$/, '/postgres') });
  await admin.connect();
  const dbName = new URL(databaseUrl).pathname.slice(1);
  await admin.query(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`);
  execFileSync('redis-cli', ['-n', new URL(redisUrl).pathname.slice(1), 'FLUSHDB'], { stdio: 'ignore' });
  execFileSync('npm', ['run', '--silent', 'build:agent'], { cwd: ROOT, stdio: 'inherit' });
  const server = new ServerProcess(
    await freePort(),
    {
      DATABASE_URL: databaseUrl,
      REDIS_URL: redisUrl,
      CONDUCTOR_EMBEDDED_AGENT: '0',
      CONDUCTOR_SUBMIT_RATE: '0',
    },
    { npmStart: true },
  );
  const db = new pg.Client({ connectionString: databaseUrl });
  try {
    await server.ready(180_000);
    const agent = new AgentProcess('chain-agent', server.url, { cpus: 96, entry: BUILT_AGENT });
    try {
      await agent.registered();
      await db.connect();
      const t0 = performance.now();
      const first = await post(server.url, '/api/v1/jobs/submit', { script: 'true', cpus: 1, hold: true });
      let previous = first.id;
      for (let i = 1; i < depth; i++) {
        const job = await post(server.url, '/api/v1/jobs/submit', {
          script: 'true',
          cpus: 1,
          dependency: `afterok:${previous}`,
        });
        previous = job.id;
      }
      const submitSeconds = (performance.now() - t0) / 1000;
      await post(server.url, `/api/v1/jobs/${first.id}/release`, {});
      const deadline = Date.now() + 600_000;
      for (;;) {
        const { rows } = await db.query<{ n: string }>(
          `SELECT count(*) AS n FROM jobs WHERE state IN ('PENDING', 'RUNNING')`,
        );
        if (Number(rows[0]?.n) === 0) break;
        if (Date.now() > deadline) throw new Error(`the chain did not end in 10 minutes: ${rows[0]?.n} left`);
        await new Promise((r) => setTimeout(r, 100));
      }
      const { rows } = await db.query<{
        state: string;
        start: number | null;
        end: number | null;
        claimed: number | null;
      }>(
        `SELECT state, extract(epoch FROM start_time)::float8 AS start, extract(epoch FROM end_time)::float8 AS end,
                extract(epoch FROM claimed_at)::float8 AS claimed
         FROM jobs WHERE id >= $1 ORDER BY id`,
        [first.id],
      );
      const states: Record<string, number> = {};
      for (const r of rows) states[r.state] = (states[r.state] ?? 0) + 1;
      const links: number[] = [];
      const toClaim: number[] = [];
      for (let i = 1; i < rows.length; i++) {
        const before = rows[i - 1]?.end;
        const after = rows[i]?.start;
        const claimed = rows[i]?.claimed;
        if (before != null && after != null) links.push((after - before) * 1000);
        if (before != null && claimed != null) toClaim.push((claimed - before) * 1000);
      }
      const run = rows.flatMap((r) => (r.start != null && r.end != null ? [(r.end - r.start) * 1000] : []));
      const firstStart = rows[0]?.start ?? 0;
      const lastEnd = rows.at(-1)?.end ?? 0;
      return {
        depth,
        submit_seconds: submitSeconds,
        seconds: lastEnd - firstStart,
        link_ms: links,
        claim_after_end_ms: median(toClaim),
        run_ms: median(run),
        states,
      };
    } finally {
      await agent.stop().catch(() => agent.kill9());
    }
  } finally {
    await db.end().catch(() => undefined);
    await server.stop();
    await admin.query(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`);
    await admin.end();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const result = await runDependencyChain({
    depth: Number(process.env.CHAIN_DEPTH ?? 1000),
    databaseUrl: process.env.CHAIN_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/conductor_bench_chain',
    redisUrl: process.env.CHAIN_REDIS_URL ?? 'redis://127.0.0.1:6379/14',
  });
  const sorted = [...result.link_ms].sort((a, b) => a - b);
  console.log({
    depth: result.depth,
    submit_seconds: result.submit_seconds,
    seconds: result.seconds,
    states: result.states,
    claim_after_end_ms: result.claim_after_end_ms,
    run_ms: result.run_ms,
    link_ms_median: sorted[Math.floor(sorted.length / 2)],
    link_ms_p99: sorted[Math.floor(sorted.length * 0.99)],
  });
}
