/**
 * Usage reports against a long history: `BENCH_USAGE_JOBS=1000000 npx tsx bench/usage-report.ts` (the issue's
 * figure; default 50,000). In a database of its own (conductor_bench_usage, dropped at the start and the end),
 * finished jobs are written through the real path, the job_attempts trigger rolling them up: history
 * grows oldest first at the same density (BENCH_USAGE_JOBS_PER_DAY, 2,740: a million in a year), 100 users in
 * 20 accounts, 4 partitions, 200 nodes, attempts of 1 minute to 6 hours, one in ten requeued once. After the
 * first tenth and after the whole history, each sreport report (cluster utilization, user and account top
 * usage, trends) over the last day, week and 30 days of the history is timed (GET's work: usageReport on
 * Postgres). Flat means the second figures equal the first: a report reads its period's rows, not the history.
 * BENCH_USAGE_NO_ROLLUP=1 disables the roll-up trigger: the write rate without it, for the trigger's cost.
 * BENCH_USAGE_KEEP=1 keeps the database at the end, to look at the reports' plans.
 */
import { loadavg } from 'node:os';
import { sql } from 'drizzle-orm';
import pg from 'pg';
import { connectNodePg, ensureDatabase, migrateNodePg } from '../db/node-postgres.ts';
import { queryOne } from '../functions/domain/sql.ts';
import { type UsageReport, usageReport, usageReportInput } from '../functions/domain/usage.ts';
import { round, stats, timeMany } from './lib.ts';

const JOBS = Number(process.env.BENCH_USAGE_JOBS ?? 50_000);
const PER_DAY = Number(process.env.BENCH_USAGE_JOBS_PER_DAY ?? 2740);
const RUNS = Number(process.env.BENCH_USAGE_RUNS ?? 50);
const URL_ =
  process.env.BENCH_USAGE_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/conductor_bench_usage';
const CHUNK = 2_000;
const DAY = 86_400_000;

async function dropDatabase() {
  const admin = new URL(URL_);
  const name = admin.pathname.slice(1);
  admin.pathname = '/postgres';
  const client = new pg.Client({ connectionString: admin.toString() });
  await client.connect();
  await client.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  await client.end();
}

await dropDatabase();
await ensureDatabase(URL_);
await migrateNodePg(URL_);
// Writing 2,000 jobs through the triggers can outlast the pool's 5 s query timeout on a busy machine.
const { db, close } = connectNodePg(URL_, { max: 4, queryTimeoutMs: 300_000 });
const NO_ROLLUP = process.env.BENCH_USAGE_NO_ROLLUP === '1';
if (NO_ROLLUP) await db.execute(sql`ALTER TABLE job_attempts DISABLE TRIGGER job_attempts_usage`);

// The history ends at the last whole UTC day; it starts as far back as its size needs.
const days = Math.ceil(JOBS / PER_DAY);
const historyEnd = Math.floor(Date.now() / DAY) * DAY;
const historyStart = historyEnd - days * DAY;

/** Jobs [from, to) of the history (job i starts at its place in time), RUNNING, then ended in one statement. */
async function write(from: number, to: number) {
  const span = (historyEnd - historyStart) / JOBS;
  await db.execute(sql`
    INSERT INTO jobs (name, script, cpus, gpus, memory_mb, account, owner, partition, node, state, attempt,
                      submit_time, eligible_time, start_time)
    SELECT 'bench', 'true', 1 + (i * 7) % 16, (i % 10 = 0)::int * 2, 1024 * (1 + i % 4),
           'acct' || (i % 100) / 5, 'user' || i % 100, 'part' || i % 4, 'node' || (i * 13) % 200, 'RUNNING', 1,
           t - interval '10 minutes', t - interval '10 minutes', t
    FROM (SELECT i, to_timestamp((${historyStart} + i * ${span}::float8) / 1000) AS t
          FROM generate_series(${from}::bigint, ${to - 1}::bigint) i) g`);
  // One in ten goes back to the queue (a lost node) and runs again; the rest end once.
  await db.execute(sql`
    UPDATE jobs SET state = 'PENDING', requeued_from = 'NODE_FAIL', node = NULL,
      end_time = start_time + interval '20 minutes'
    WHERE state = 'RUNNING' AND id % 10 = 0`);
  await db.execute(sql`
    UPDATE jobs SET state = 'RUNNING', attempt = 2, node = 'node' || (id * 17) % 200,
      start_time = end_time + interval '5 minutes', end_time = NULL
    WHERE state = 'PENDING'`);
  await db.execute(sql`
    UPDATE jobs SET state = (ARRAY['COMPLETED', 'COMPLETED', 'COMPLETED', 'FAILED', 'CANCELLED', 'TIMEOUT'])[1 + id % 6],
      end_time = start_time + make_interval(secs => 60 + (id * 7919) % 21540), max_rss_kb = 1000 + id % 50000
    WHERE state = 'RUNNING'`);
}

const REPORTS: UsageReport[] = ['cluster-utilization', 'user-topusage', 'account-topusage', 'trends'];
const PERIODS: [string, number][] = [
  ['1 day', 1],
  ['7 days', 7],
  ['30 days', 30],
];

async function measure(label: string, end: number) {
  const rows: Record<string, string | number>[] = [];
  for (const [period, n] of PERIODS) {
    for (const report of REPORTS) {
      const input = usageReportInput.parse({
        report,
        start: new Date(end - n * DAY).toISOString(),
        end: new Date(end).toISOString(),
      });
      const s = await timeMany(RUNS, () => usageReport(db, input));
      rows.push({ history: label, period, report, p50_ms: round(s.median), p99_ms: round(s.p99) });
    }
  }
  console.table(rows);
  return rows;
}

const size = async () =>
  queryOne<{ attempts: string; hourly: string; daily: string; hot_updates: string }>(
    db,
    sql`SELECT (SELECT count(*) FROM job_attempts) AS attempts, (SELECT count(*) FROM usage_hourly) AS hourly,
               (SELECT count(*) FROM usage_daily) AS daily,
               (SELECT round(sum(n_tup_hot_upd) * 100.0 / nullif(sum(n_tup_upd), 0), 1) || ' %'
                FROM pg_stat_user_tables WHERE relname IN ('usage_hourly', 'usage_daily')) AS hot_updates`,
  );

try {
  console.log(`${JOBS} finished jobs over ${days} days (load ${loadavg()[0]?.toFixed(2)})`);
  const tenth = Math.max(CHUNK, Math.floor(JOBS / 10 / CHUNK) * CHUNK);
  const writes: number[] = [];
  let results: Record<string, string | number>[] = [];
  for (let from = 0; from < JOBS; from += CHUNK) {
    const to = Math.min(JOBS, from + CHUNK);
    const t = performance.now();
    await write(from, to);
    writes.push(((to - from) * 1.1 * 1000) / (performance.now() - t));
    if (to === tenth && to < JOBS && !NO_ROLLUP) {
      await db.execute(sql`VACUUM ANALYZE usage_hourly, usage_daily, capacity_hourly`);
      console.log('after the first tenth:', await size());
      results = results.concat(
        await measure(`${to} jobs`, historyStart + (to / JOBS) * (historyEnd - historyStart)),
      );
    }
  }
  // The writes above put a year into minutes; over a real year autovacuum (on by default, and on Neon) keeps
  // up with them. Vacuum as it would have, so the reports read what they would read then.
  await db.execute(sql`VACUUM ANALYZE usage_hourly, usage_daily, capacity_hourly`);
  console.log('whole history:', await size());
  const ends = stats(writes);
  console.log(
    `attempt ends${NO_ROLLUP ? ' (no roll-up)' : ' rolled up'}: ${round(ends.median, 0)}/s (median of ${ends.n} statements of ${CHUNK} jobs)`,
  );
  if (!NO_ROLLUP) {
    results = results.concat(await measure(`${JOBS} jobs`, historyEnd));
    const worst = Math.max(...results.map((r) => Number(r.p99_ms)));
    console.log(`worst p99: ${worst} ms (load ${loadavg()[0]?.toFixed(2)})`);
  }
} finally {
  await close();
  if (process.env.BENCH_USAGE_KEEP !== '1') await dropDatabase();
}
