/**
 * `npm run bench`: the performance scenarios of issue 7 against the local Postgres (127.0.0.1:5432, its own
 * database `conductor_bench`, dropped at the end) and Redis (database 12, flushed). Prints a table and writes
 * bench/results.json. Sizes: BENCH_SCALE=small for a quick smoke run. The dashboard alone (about a minute):
 * BENCH_ONLY=1 BENCH_DASHBOARD_ONLY=1. BENCH_ONLY=2 runs the scheduling scenarios (2: CPU-only; 2m: mixed
 * resources, 1,000 nodes and 100,000 jobs; 2f: fragmentation, pack vs spread; 2a: a 10,000-task job array
 * against 10,000 single jobs); BENCH_ONLY=2m,2f picks among them.
 * A run with BENCH_ONLY writes bench/results-only-<scenarios>.json instead of results.json.
 */
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { loadavg, cpus as osCpus } from 'node:os';
import { fileURLToPath } from 'node:url';
import { sql } from 'drizzle-orm';
import { drizzle } from 'drizzle-orm/node-postgres';
import { Redis } from 'ioredis';
import { Miniflare } from 'miniflare';
import pg from 'pg';
import { connectNodePg, ensureDatabase, migrateNodePg } from '../db/node-postgres.ts';
import { JOB_STATES } from '../db/schema.ts';
import { ANONYMOUS, apiTokensExist } from '../functions/domain/auth.ts';
import { readAllocatedCpus, readAllocationSnapshot } from '../functions/domain/cache.ts';
import { createContext } from '../functions/domain/context.ts';
import { getDashboard, listLiveWorkers } from '../functions/domain/dashboard.ts';
import { COMPACT_AT, compactJobCounts, readJobCounts } from '../functions/domain/job-counts.ts';
import { MAX_BATCH_JOBS, type SubmitJobInput, submitJob, submitJobsBatch } from '../functions/domain/jobs.ts';
import { createLocalNotifier } from '../functions/domain/notifier.ts';
import { putPartition } from '../functions/domain/partitions.ts';
import {
  createPlanner,
  maskIndexes,
  type PendingJob,
  type RunningJob,
} from '../functions/domain/placement.ts';
import { DEFAULT_CONFIG, type RegistryStore } from '../functions/domain/ports.ts';
import {
  jobReader,
  PARTITION_COLUMNS,
  type PartitionRow,
  partitionsOf,
  QUEUE_COLUMNS,
  type QueueRow,
  runSchedulingPass,
  toWorker,
  WORKER_COLUMNS,
  type WorkerRow,
} from '../functions/domain/scheduler.ts';
import { pgArray, query } from '../functions/domain/sql.ts';
import { heartbeatWorker, registerWorker } from '../functions/domain/workers.ts';
import { createIoredisScripts } from '../functions/node/ioredis.ts';
import { startServer } from '../functions/node/server.ts';
import { RedisRegistryStore } from '../functions/registry/redis-store.ts';
import { createUpstashScripts } from '../functions/registry/upstash.ts';
import { AgentProcess } from '../test/support/agent-process.ts';
import { startNeonProxy } from '../test/support/neon-proxy.ts';
import { startUpstashBridge } from '../test/support/upstash-bridge.ts';
import { bundleWorker, workerModules } from '../test/support/worker-bundle.ts';
import { runDependencyChain } from './dependency-chain.ts';
import {
  countingProxy,
  countingScripts,
  pgCounter,
  procSample,
  round,
  type Stats,
  sleep,
  stats,
  timeMany,
} from './lib.ts';
import { mixedJobs, mixedWorkers, seeded, smallJob } from './mixed.ts';
import { runServerlessCost } from './serverless-cost.ts';
import { measureStartup } from './startup.ts';

const SMALL = process.env.BENCH_SCALE === 'small';
const PG_URL = process.env.BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/conductor_bench';
const REDIS_URL = process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379/12';
const only = process.env.BENCH_ONLY?.split(',');
/** BENCH_ONLY=2 runs 2, 2m and 2f; BENCH_ONLY=2m only the mixed-resource rows. */
const runs = (s: string) => !only || only.includes(s) || only.includes(s.replace(/[a-z]+$/, ''));
/** BENCH_DASHBOARD_ONLY=1 (with BENCH_ONLY=1): only the dashboard rows, at 10 and 1,000 workers, 1M jobs. */
const DASHBOARD_ONLY = process.env.BENCH_DASHBOARD_ONLY === '1';
const startedAt = Date.now();
const loads: Record<string, number[]> = {};
const log = (m: string) => {
  loads[m] = loadavg().map((x) => Math.round(x * 100) / 100);
  console.log(
    `[bench +${Math.round((Date.now() - startedAt) / 1000)}s] ${m} (load average ${loads[m]?.join(' ')})`,
  );
};

// ---------------------------------------------------------------- setup
const adminUrl = PG_URL.replace(/\/[^/]+$/, '/postgres');
const dbName = new URL(PG_URL).pathname.slice(1);
{
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  await admin.query(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`);
  await admin.end();
}
await ensureDatabase(PG_URL);
await migrateNodePg(PG_URL);
const conn = connectNodePg(PG_URL, { max: 20 });
const db = conn.db;
const raw = new Redis(REDIS_URL);
await raw.flushdb();
const tcp = createIoredisScripts(REDIS_URL, { onError: () => {} });
const tcpCounted = countingScripts(tcp.scripts);
const registry: RegistryStore = new RedisRegistryStore(tcpCounted);
const silent = { info() {}, warn() {}, error() {} };
const config = { ...DEFAULT_CONFIG, submitRatePerSecond: 0, scheduleBatchSize: 1000 };
const background = new Set<Promise<unknown>>();
const ctx = createContext({
  db,
  registry,
  notifier: createLocalNotifier(),
  logger: silent,
  config,
  defer(work) {
    const p = work.catch(() => {}).finally(() => background.delete(p));
    background.add(p);
  },
});
const settle = async () => {
  while (background.size > 0) await Promise.all([...background]);
};

// Bulk setup (millions of rows) through a pool without the production 5 s query timeout.
const bulkPool = new pg.Pool({ connectionString: PG_URL, max: 2 });
const bulkDb = drizzle(bulkPool);
const exec = (q: ReturnType<typeof sql>) => bulkDb.execute(q);
const versions = {
  node: process.version,
  postgres: String(
    (await query<{ server_version: string }>(db, sql`SHOW server_version`))[0]?.server_version ?? '',
  ),
  redis: /redis_version:(\S+)/.exec(await raw.info('server'))?.[1] ?? '?',
};
const results: Record<string, unknown> = {
  date: new Date().toISOString(),
  cores: osCpus().length,
  cpu_model: osCpus()[0]?.model,
  versions,
  scale: SMALL ? 'small' : 'full',
};
if (runs('3') || runs('6') || runs('10')) {
  log('building the agent package (npm run build:agent): agents run from agent/dist as installed');
  execFileSync('npm', ['run', '--silent', 'build:agent'], { stdio: 'inherit' });
}
const table: { scenario: string; measure: string; median: string; p99: string; goal: string; met: string }[] =
  [];
const row = (
  scenario: string,
  measure: string,
  s: Stats | null,
  unit: string,
  goal = '',
  met = '',
  value?: string,
) =>
  table.push({
    scenario,
    measure,
    median: value ?? (s ? `${round(s.median)} ${unit}` : ''),
    p99: s && value === undefined ? `${round(s.p99)} ${unit}` : '',
    goal,
    met,
  });

async function resetCluster() {
  await exec(sql`TRUNCATE jobs, resource_allocations, workers, job_output RESTART IDENTITY CASCADE`);
  await exec(sql`UPDATE cluster_state SET allocated_cpus = 0 WHERE id = 1`);
  await raw.flushdb();
  const snap = await readAllocationSnapshot(db);
  await registry.setAllocationSnapshot(snap.allocated, snap.version);
}

/** Workers straight into Postgres and the registry (no HTTP): `ready` ones first, then `draining` ones. */
async function addWorkers(n: number, options: { cpus?: number; ready?: number; prefix?: string } = {}) {
  const prefix = options.prefix ?? 'node-';
  const ready = options.ready ?? n;
  await exec(sql`INSERT INTO workers (id, hostname, cpus, status, session)
    SELECT ${prefix} || lpad(g::text, 5, '0'), 'h' || g, ${options.cpus ?? 96},
           CASE WHEN g <= ${ready} THEN 'ready' ELSE 'draining' END, 's' || g
    FROM generate_series(1, ${n}::int) g`);
  const now = new Date().toISOString();
  for (let i = 1; i <= n; i += 500) {
    const batch: Promise<void>[] = [];
    for (let g = i; g < i + 500 && g <= n; g++) {
      batch.push(
        registry.putWorker(
          {
            worker_id: `${prefix}${String(g).padStart(5, '0')}`,
            cpus: options.cpus ?? 96,
            status: g <= ready ? 'ready' : 'draining',
            hostname: `h${g}`,
            registered_at: now,
            last_heartbeat: now,
          },
          3600,
        ),
      );
    }
    await Promise.all(batch);
  }
}

async function removeWorkers() {
  await exec(sql`UPDATE jobs SET node = NULL WHERE node IS NOT NULL AND state = 'RUNNING'`);
  await exec(sql`DELETE FROM workers`);
  for (const id of await registry.liveWorkerIds()) await registry.removeWorker(id);
}

// ---------------------------------------------------------------- 1. resource query and dashboard
/** The dashboard as it was before migration 0004 (for the side-by-side rows): Redis, then the workers with one
 * correlated count per worker; and a GROUP BY over every job. */
async function oldDashboard() {
  const live = await registry.liveWorkerIds();
  const [workers, allocation, counts] = await Promise.all([
    query<{ id: string; cpus: number; allocated_cpus: number; last_heartbeat: Date; registered_at: Date }>(
      db,
      sql`SELECT w.id, w.hostname, w.cpus, w.allocated_cpus, w.status, w.last_heartbeat, w.registered_at,
                 (SELECT count(*) FROM jobs j WHERE j.node = w.id AND j.state = 'RUNNING') AS running_jobs
          FROM workers w WHERE w.id = ANY(${pgArray(live)}::text[]) ORDER BY w.id`,
    ),
    readAllocatedCpus(ctx),
    query(db, sql`SELECT state, count(*) AS n FROM jobs GROUP BY state`),
  ]);
  return {
    workers: workers.map((w) => ({ ...w, at: new Date(w.registered_at).toISOString() })),
    allocation,
    counts,
  };
}

/** The live-allocation index as each variant: `old` (node_name only, before 0003), `include` (node_name INCLUDE
 * allocated_cpus, the proposal), `new` (node_name, allocated_cpus: migration 0003). */
async function useAllocationIndex(variant: 'old' | 'include' | 'new') {
  await exec(sql`DROP INDEX IF EXISTS resource_allocations_active_idx`);
  await exec(sql`DROP INDEX IF EXISTS resource_allocations_active_include_idx`);
  await exec(sql`DROP INDEX IF EXISTS resource_allocations_active_cpus_idx`);
  if (variant === 'old') {
    await exec(
      sql`CREATE INDEX resource_allocations_active_idx ON resource_allocations (node_name) WHERE released = false`,
    );
  } else if (variant === 'include') {
    await exec(
      sql`CREATE INDEX resource_allocations_active_include_idx ON resource_allocations (node_name) INCLUDE (allocated_cpus) WHERE released = false`,
    );
  } else {
    await exec(
      sql`CREATE INDEX resource_allocations_active_cpus_idx ON resource_allocations (node_name, allocated_cpus) WHERE released = false`,
    );
  }
  await exec(sql`VACUUM ANALYZE resource_allocations`);
}

const ratio = (before: Stats, after: Stats) => ({
  median: round(before.median / after.median, 1),
  p99: round(before.p99 / after.p99, 1),
});
const ratioText = (r: { median: number; p99: number }) => `×${r.median} (p99 ×${r.p99})`;

async function scenarioResources() {
  log('1. resource query and dashboard');
  await resetCluster();
  const server = await startServer(
    { db, registry, notifier: createLocalNotifier(), logger: silent, config },
    { port: 0, host: '127.0.0.1', timers: false },
  );
  const out: Record<string, unknown>[] = [];
  const historySizes = DASHBOARD_ONLY ? [1_000_000] : SMALL ? [1000, 20_000] : [1000, 100_000, 1_000_000];
  const workerCounts = DASHBOARD_ONLY ? [10, 1000] : SMALL ? [10, 1000] : [10, 1000, 10_000];
  const largest = historySizes[historySizes.length - 1] as number;
  let have = 0;
  for (const size of historySizes) {
    log(`1. history of ${size.toLocaleString('en')} jobs`);
    // History: finished jobs with released allocations; 1 in 100 RUNNING with a live allocation. One job a
    // second up to now (the largest history's last hour: 3,600 jobs started within GET /metrics' window).
    await exec(sql`INSERT INTO jobs (name, script, cpus, state, node, exit_code, submit_time, start_time, end_time)
      SELECT 'h', 'true', 1 + g % 8, CASE WHEN g % 100 = 0 THEN 'RUNNING' WHEN g % 10 = 1 THEN 'FAILED' ELSE 'COMPLETED' END,
             'node-' || lpad((1 + g % 10)::text, 5, '0'), '0:0',
             now() - make_interval(secs => ${largest} - g + 2), now() - make_interval(secs => ${largest} - g + 1),
             CASE WHEN g % 100 = 0 THEN NULL ELSE now() - make_interval(secs => ${largest} - g) END
      FROM generate_series(${have + 1}::int, ${size}::int) g`);
    await exec(sql`INSERT INTO resource_allocations (job_id, allocated_cpus, node_name, released)
      SELECT id, cpus, node, state <> 'RUNNING' FROM jobs WHERE id > ${have}`);
    await exec(sql`VACUUM ANALYZE jobs`);
    await exec(sql`VACUUM ANALYZE resource_allocations`);
    have = size;
    const snap = await readAllocationSnapshot(db);
    await registry.setAllocationSnapshot(snap.allocated, snap.version);
    const n = size.toLocaleString('en');
    if (!DASHBOARD_ONLY) {
      const cacheGet = await timeMany(500, () => registry.getAllocatedCpus());
      // The contract's SUM under each index (dropped and created here, in the bench database).
      const sumWith: Record<string, Stats> = {};
      for (const variant of ['old', 'include', 'new'] as const) {
        await useAllocationIndex(variant);
        sumWith[variant] = await timeMany(200, () =>
          db.execute(sql`SELECT SUM(allocated_cpus) FROM resource_allocations WHERE released = false`),
        );
      }
      const sumOld = sumWith.old as Stats;
      const sumNew = sumWith.new as Stats;
      const groupBy = await timeMany(
        SMALL ? 20 : 30,
        () => db.execute(sql`SELECT state, count(*) AS n FROM jobs GROUP BY state`),
        1,
      );
      const liveStates = await timeMany(100, () =>
        db.execute(
          sql`SELECT state, count(*) AS n FROM jobs WHERE state IN ('PENDING', 'RUNNING') GROUP BY state`,
        ),
      );
      // The deltas: compacted (one row per state), and at their worst, COMPACT_AT rows since the last compaction.
      await compactJobCounts(db);
      const deltasCompact = await timeMany(200, () => readJobCounts({ db, defer() {} }));
      await exec(sql`INSERT INTO job_state_deltas (state, n)
        SELECT 'PENDING', CASE WHEN g % 2 = 0 THEN 1 ELSE -1 END FROM generate_series(1, ${COMPACT_AT}::int) g`);
      const deltasFull = await timeMany(200, () => readJobCounts({ db, defer() {} }));
      const compaction = await compactJobCounts(db);
      const truth = Object.fromEntries(JOB_STATES.map((s) => [s, 0])) as Record<string, number>;
      for (const r of await query<{ state: string; n: string }>(
        db,
        sql`SELECT state, count(*) AS n FROM jobs GROUP BY state`,
      )) {
        truth[r.state] = Number(r.n);
      }
      const exact = JSON.stringify(await readJobCounts({ db, defer() {} })) === JSON.stringify(truth);
      if (!exact) throw new Error('job_state_deltas differ from a GROUP BY over jobs');
      // GET /metrics' queue-wait query: the jobs started in the last hour, with and without jobs_start_time_idx.
      const waitSql = sql`SELECT count(*) FILTER (WHERE wait <= 60), count(*), sum(wait) FROM (
        SELECT extract(epoch FROM start_time - submit_time)::float8 AS wait FROM jobs
        WHERE start_time > now() - interval '1 hour') w`;
      const waitIndexed = await timeMany(50, () => db.execute(waitSql));
      await exec(sql`DROP INDEX jobs_start_time_idx`);
      const waitScan = await timeMany(SMALL ? 10 : 20, () => db.execute(waitSql), 1);
      await exec(sql`CREATE INDEX jobs_start_time_idx ON jobs (start_time)`);
      await exec(sql`ANALYZE jobs`);
      out.push({
        rows: size,
        cache_get_ms: cacheGet,
        sql_sum_old_index_ms: sumOld,
        sql_sum_include_index_ms: sumWith.include,
        sql_sum_ms: sumNew,
        sql_sum_ratio: ratio(sumOld, sumNew),
        jobs_group_by_ms: groupBy,
        live_states_count_ms: liveStates,
        job_counts_deltas_compacted_ms: deltasCompact,
        job_counts_deltas_uncompacted_ms: deltasFull,
        job_counts_uncompacted_rows: compaction.before,
        job_counts_ratio: ratio(groupBy, deltasCompact),
        job_counts_ratio_uncompacted: ratio(groupBy, deltasFull),
        metrics_wait_query_indexed_ms: waitIndexed,
        metrics_wait_query_scan_ms: waitScan,
      });
      row('1 resources', `allocated CPUs: cache GET, ${n} allocation rows`, cacheGet, 'ms');
      row(
        '1 resources',
        `allocated CPUs: SQL SUM, ${n} rows (1% unreleased), old index (node_name)`,
        sumOld,
        'ms',
      );
      row('1 resources', '  index (node_name) INCLUDE (allocated_cpus)', sumWith.include as Stats, 'ms');
      row('1 resources', '  new index (node_name, allocated_cpus), migration 0003', sumNew, 'ms');
      row('1 resources', '  old index / new index', null, '', '', '', ratioText(ratio(sumOld, sumNew)));
      row('1 resources', `jobs per state: GROUP BY over ${n} jobs (before)`, groupBy, 'ms');
      row('1 resources', '  PENDING/RUNNING counts only (index)', liveStates, 'ms');
      row('1 resources', '  job_state_deltas sum, compacted (after)', deltasCompact, 'ms');
      row(
        '1 resources',
        `  job_state_deltas sum, ${COMPACT_AT.toLocaleString('en')} rows uncompacted (worst case)`,
        deltasFull,
        'ms',
      );
      row(
        '1 resources',
        '  GROUP BY / deltas (compacted; uncompacted)',
        null,
        '',
        '',
        '',
        `${ratioText(ratio(groupBy, deltasCompact))}; ${ratioText(ratio(groupBy, deltasFull))}`,
      );
      row(
        '1 resources',
        `/metrics queue wait (jobs started in the last hour), ${n} jobs: seq scan (before)`,
        waitScan,
        'ms',
      );
      row('1 resources', '  with jobs_start_time_idx (after)', waitIndexed, 'ms');
    }
    for (const w of workerCounts) {
      if (size !== largest && w === 10_000) continue; // 10k workers: largest history only
      await removeWorkers();
      await addWorkers(w);
      await exec(
        sql`UPDATE jobs SET node = 'node-' || lpad((1 + id % ${w})::text, 5, '0') WHERE state = 'RUNNING'`,
      );
      await exec(sql`VACUUM ANALYZE jobs`);
      await compactJobCounts(db);
      const reps = w >= 10_000 ? 50 : 200;
      const fetchOk = async (path: string) => {
        const res = await fetch(`${server.url}${path}`);
        await res.arrayBuffer();
        if (!res.ok) throw new Error(`${path}: ${res.status}`);
      };
      const dash = await timeMany(reps, () => fetchOk('/api/v1/dashboard'));
      // Round trips of one request (Postgres statements, Redis commands), and its size.
      const pg0 = pgCounter.statements;
      tcpCounted.reset();
      const body = await (await fetch(`${server.url}/api/v1/dashboard`)).text();
      const pgTrips = pgCounter.statements - pg0;
      const redisTrips = Object.fromEntries(tcpCounted.calls);
      const redisTotal = tcpCounted.total();
      const k = Math.min(reps, 50);
      const newInProcess = await timeMany(k, () => getDashboard(ctx));
      const oldInProcess = await timeMany(k, oldDashboard, 1);
      const workersPart = await timeMany(k, () => listLiveWorkers(ctx));
      const allocPart = await timeMany(k, () => readAllocatedCpus(ctx));
      const countsPart = await timeMany(k, () => readJobCounts(ctx));
      const authPart = await timeMany(k, () => apiTokensExist(db));
      const snapshot = await getDashboard(ctx);
      const jsonPart = await timeMany(k, async () => JSON.stringify(snapshot));
      out.push({
        rows: size,
        workers: w,
        dashboard_ms: dash,
        dashboard_bytes: body.length,
        dashboard_pg_statements: pgTrips,
        dashboard_redis_commands: redisTrips,
        get_dashboard_ms: newInProcess,
        old_get_dashboard_ms: oldInProcess,
        get_dashboard_ratio: ratio(oldInProcess, newInProcess),
        list_live_workers_ms: workersPart,
        allocated_ms: allocPart,
        job_counts_ms: countsPart,
        auth_query_ms: authPart,
        json_stringify_ms: jsonPart,
      });
      const goal = w === 1000 ? 'p99 < 10 ms' : '';
      row(
        '1 dashboard',
        `GET /api/v1/dashboard, ${w.toLocaleString('en')} workers, ${n} jobs (${Math.round(body.length / 1024)} KiB; ${pgTrips} Postgres statements, ${redisTotal} Redis commands)`,
        dash,
        'ms',
        goal,
        goal ? (dash.p99 < 10 ? 'met' : 'not met') : '',
      );
      row('1 dashboard', '  in process: before (correlated counts, GROUP BY over jobs)', oldInProcess, 'ms');
      row('1 dashboard', '  in process: after (getDashboard)', newInProcess, 'ms');
      row('1 dashboard', '  before / after', null, '', '', '', ratioText(ratio(oldInProcess, newInProcess)));
      row('1 dashboard', `  of which live workers (Redis ids ∥ workers query)`, workersPart, 'ms');
      row(
        '1 dashboard',
        '  of which job counts (deltas) / allocated CPUs (cache)',
        null,
        '',
        '',
        '',
        `${round(countsPart.median)} / ${round(allocPart.median)} ms (p99 ${round(countsPart.p99)} / ${round(allocPart.p99)})`,
      );
      row(
        '1 dashboard',
        '  auth (token check) / JSON.stringify',
        null,
        '',
        '',
        '',
        `${round(authPart.median)} / ${round(jsonPart.median)} ms (p99 ${round(authPart.p99)} / ${round(jsonPart.p99)})`,
      );
      // The old dashboard's heavy part over HTTP: every live worker, as /api/v1/dashboard sent them before.
      const allWorkers = await timeMany(reps, () => fetchOk('/api/v1/workers'));
      row(
        '1 dashboard',
        `  GET /api/v1/workers: all ${w.toLocaleString('en')} live workers (before)`,
        allWorkers,
        'ms',
      );
      // The page's own requests: its views (HTML fragments) and JSON.
      const [someJob] = await query<{ id: string }>(db, sql`SELECT max(id) AS id FROM jobs`);
      const pageRequests: Record<string, Stats> = {};
      for (const path of [
        '/api/v1/ui/fragments/overview',
        '/api/v1/ui/fragments/jobs',
        '/api/v1/ui/fragments/nodes',
        '/api/v1/ui/fragments/nodes/node-00001',
        `/api/v1/ui/fragments/jobs/${someJob?.id}`,
        '/api/v1/ui/workers',
        '/api/v1/ui/utilization',
        '/api/v1/ui/utilization?window=24h',
      ]) {
        const s = await timeMany(reps, () => fetchOk(path));
        pageRequests[path] = s;
        const goal = w === 1000 ? 'p99 < 10 ms' : '';
        row(
          '1 dashboard',
          `  page: GET ${path}`,
          s,
          'ms',
          goal,
          goal ? (s.p99 < 10 ? 'met' : 'not met') : '',
        );
      }
      out.push({ rows: size, workers: w, all_workers_ms: allWorkers, page_requests_ms: pageRequests });
    }
  }
  if (!DASHBOARD_ONLY) {
    // What the triggers cost a transition, measured inside Postgres (no round trips to blur it): a DO block of
    // 1,000 single-job state changes and one of 20 statements changing 1,000 jobs each, with the triggers
    // enabled and disabled, interleaved 5 times (the largest history).
    const flips = (statements: number, rows: number) =>
      sql.raw(`DO $$ BEGIN FOR i IN 1..${statements} LOOP
        UPDATE jobs SET state = CASE state WHEN 'COMPLETED' THEN 'FAILED' ELSE 'COMPLETED' END
        WHERE id BETWEEN 1 + (i * 7919) % 900000 AND (i * 7919) % 900000 + ${rows} AND state IN ('COMPLETED', 'FAILED');
        END LOOP; END $$`);
    const perStatementMs: Record<'with' | 'without', { one: number[]; batch: number[] }> = {
      with: { one: [], batch: [] },
      without: { one: [], batch: [] },
    };
    for (let k = 0; k < 5; k++) {
      for (const enabled of [true, false]) {
        await exec(sql.raw(`ALTER TABLE jobs ${enabled ? 'ENABLE' : 'DISABLE'} TRIGGER USER`));
        const into = perStatementMs[enabled ? 'with' : 'without'];
        let t = performance.now();
        await exec(flips(1000, 1));
        into.one.push((performance.now() - t) / 1000);
        t = performance.now();
        await exec(flips(20, 1000));
        into.batch.push((performance.now() - t) / 20);
      }
    }
    await exec(sql`ALTER TABLE jobs ENABLE TRIGGER USER`);
    await exec(sql`TRUNCATE job_state_deltas`);
    await exec(sql`INSERT INTO job_state_deltas (state, n) SELECT state, count(*) FROM jobs GROUP BY state`);
    const cost = {
      with_triggers: {
        one_ms: stats(perStatementMs.with.one),
        batch_1000_ms: stats(perStatementMs.with.batch),
      },
      without_triggers: {
        one_ms: stats(perStatementMs.without.one),
        batch_1000_ms: stats(perStatementMs.without.batch),
      },
    };
    out.push({ transition_cost: cost });
    const us = (x: number) => `${Math.round(x * 1000)} µs`;
    row(
      '1 resources',
      "trigger cost, inside Postgres: a statement changing one job's state, with / without the triggers",
      null,
      '',
      '',
      '',
      `${us(cost.with_triggers.one_ms.median)} / ${us(cost.without_triggers.one_ms.median)} (median of 5 × 1,000)`,
    );
    row(
      '1 resources',
      '  a statement changing 1,000 jobs, with / without',
      null,
      '',
      '',
      '',
      `${us(cost.with_triggers.batch_1000_ms.median)} / ${us(cost.without_triggers.batch_1000_ms.median)} (median of 5 × 20)`,
    );
  }
  await server.close();
  await removeWorkers();
  results.resources = out;
}
// ---------------------------------------------------------------- 2. scheduling throughput
const SCHED_WORKERS = 1000;
const SCHED_JOBS = SMALL ? 5000 : 20_000;
const NAIVE_JOBS = SMALL ? 500 : 2000;
const ISOLATED = SMALL ? 5 : 40;

async function pendingJobs(n: number) {
  await exec(sql`INSERT INTO jobs (name, script, cpus)
    SELECT 'b', 'true', (ARRAY[1, 1, 2, 2, 4, 8])[1 + g % 6] FROM generate_series(1, ${n}::int) g`);
  await exec(sql`ANALYZE jobs`);
}

async function resetPlacements() {
  await exec(sql`TRUNCATE resource_allocations`);
  await exec(sql`UPDATE jobs SET state = 'PENDING', node = NULL, attempt = 0 WHERE state <> 'PENDING'`);
  await exec(sql`UPDATE workers SET allocated_cpus = 0`);
  await exec(sql`UPDATE cluster_state SET allocated_cpus = 0 WHERE id = 1`);
  await exec(sql`VACUUM ANALYZE jobs`);
  const snap = await readAllocationSnapshot(db);
  await registry.setAllocationSnapshot(snap.allocated, snap.version);
}

async function batchedScheduling(): Promise<{ placed: number; seconds: number; passMs: number[] }> {
  const passMs: number[] = [];
  let placed = 0;
  const t = performance.now();
  for (;;) {
    const p = performance.now();
    const r = await runSchedulingPass(ctx);
    passMs.push(performance.now() - p);
    placed += r.placed;
    if (r.placed === 0) break;
  }
  return { placed, seconds: (performance.now() - t) / 1000, passMs };
}

/** One job at a time, each in its own transaction with its own allocation statements: what batching replaces. */
async function naiveScheduling(limit: number): Promise<{ placed: number; seconds: number; jobMs: number[] }> {
  const jobMs: number[] = [];
  let placed = 0;
  const t = performance.now();
  while (placed < limit) {
    const p = performance.now();
    const done = await db.transaction(async (tx) => {
      const [job] = await query<{ id: string; cpus: number }>(
        tx,
        sql`SELECT id, cpus FROM jobs WHERE state = 'PENDING' ORDER BY priority DESC, submit_time, id LIMIT 1 FOR UPDATE SKIP LOCKED`,
      );
      if (!job) return null;
      const [worker] = await query<{ id: string }>(
        tx,
        sql`SELECT id FROM workers WHERE status = 'ready' AND cpus - allocated_cpus >= ${job.cpus} ORDER BY id LIMIT 1 FOR UPDATE`,
      );
      if (!worker) return null;
      await tx.execute(
        sql`UPDATE jobs SET state = 'RUNNING', node = ${worker.id}, attempt = attempt + 1 WHERE id = ${job.id}`,
      );
      await tx.execute(
        sql`UPDATE workers SET allocated_cpus = allocated_cpus + ${job.cpus} WHERE id = ${worker.id}`,
      );
      await tx.execute(
        sql`INSERT INTO resource_allocations (job_id, allocated_cpus, node_name) VALUES (${job.id}, ${job.cpus}, ${worker.id})`,
      );
      const [c] = await query<{ v: string }>(
        tx,
        sql`UPDATE cluster_state SET allocated_cpus = allocated_cpus + ${job.cpus}, allocation_version = allocation_version + 1 WHERE id = 1 RETURNING allocation_version AS v`,
      );
      return { cpus: Number(job.cpus), version: Number(c?.v) };
    });
    if (!done) break;
    await registry.applyAllocationDelta(done.cpus, done.version);
    jobMs.push(performance.now() - p);
    placed++;
  }
  return { placed, seconds: (performance.now() - t) / 1000, jobMs };
}

async function scenarioScheduling() {
  log('2. scheduling throughput');
  await resetCluster();
  await addWorkers(SCHED_WORKERS);
  await pendingJobs(SCHED_JOBS);
  const batched: number[] = [];
  const passes: number[] = [];
  let pgPerPass = 0;
  let redisPerPass = 0;
  for (let i = 0; i < (SMALL ? 2 : 3); i++) {
    await resetPlacements();
    const pg0 = pgCounter.statements;
    tcpCounted.reset();
    const r = await batchedScheduling();
    if (r.placed !== SCHED_JOBS) throw new Error(`placed ${r.placed} of ${SCHED_JOBS}`);
    batched.push(r.placed / r.seconds);
    passes.push(...r.passMs);
    pgPerPass = (pgCounter.statements - pg0) / r.passMs.length;
    redisPerPass = tcpCounted.total() / r.passMs.length;
  }
  await resetPlacements();
  const naive = await naiveScheduling(NAIVE_JOBS);
  const b = stats(batched);
  const nRate = naive.placed / naive.seconds;
  results.scheduling = {
    direct_domain_calls: true,
    workers: SCHED_WORKERS,
    worker_cpus: 96,
    pending_jobs: SCHED_JOBS,
    batched_placements_per_s: b,
    batched_pass_ms: stats(passes),
    batched_pg_statements_per_pass: pgPerPass,
    batched_redis_commands_per_pass: redisPerPass,
    naive_jobs: naive.placed,
    naive_placements_per_s: nRate,
    naive_job_ms: stats(naive.jobMs),
  };
  row(
    '2 scheduling',
    `batched passes (1,000 jobs/pass), ${SCHED_JOBS.toLocaleString('en')} jobs on 1,000×96 CPUs: placements/s`,
    b,
    '/s',
    '≥ 1,000/s',
    b.median >= 1000 ? 'met' : 'not met',
  );
  row('2 scheduling', '  one pass of 1,000 placements', stats(passes), 'ms');
  row(
    '2 scheduling',
    `naive loop (1 job per transaction), ${naive.placed.toLocaleString('en')} jobs: placements/s`,
    null,
    '',
    '',
    '',
    `${round(nRate, 0)} /s`,
  );
  row('2 scheduling', '  naive: one placement', stats(naive.jobMs), 'ms');
  row('2 scheduling', 'batching buys', null, '', '', '', `×${round(b.median / nRate, 1)}`);

  // The issue's size: 100,000 pending jobs, more than 1,000 × 96 CPUs hold (3 CPUs a job on average), placed
  // until the cluster is full; the rest stay pending, scanned by every pass.
  const FULL_QUEUE = SMALL ? 20_000 : 100_000;
  await exec(sql`DELETE FROM jobs`);
  await pendingJobs(FULL_QUEUE);
  await resetPlacements();
  const full = await batchedScheduling();
  const [left] = await query<{ n: string }>(db, sql`SELECT count(*) AS n FROM jobs WHERE state = 'PENDING'`);
  const fullRate = full.placed / full.seconds;
  results.scheduling_full_queue = {
    pending_jobs: FULL_QUEUE,
    placed: full.placed,
    still_pending: Number(left?.n),
    seconds: full.seconds,
    placements_per_s: fullRate,
    pass_ms: stats(full.passMs),
  };
  row(
    '2 scheduling',
    `${FULL_QUEUE.toLocaleString('en')} pending jobs, placed until 1,000×96 CPUs are full: placements/s`,
    null,
    '',
    '≥ 1,000/s',
    fullRate >= 1000 ? 'met' : 'not met',
    `${round(fullRate, 0)} /s (${full.placed.toLocaleString('en')} placed in ${round(full.seconds, 1)} s, ${Number(left?.n).toLocaleString('en')} left pending)`,
  );
  await exec(sql`DELETE FROM jobs`);
  await removeWorkers();
}

// ---------------------------------------------------------------- 2a. job arrays
/**
 * A 10,000-task array (sbatch --array=0-9999, 2 CPUs a task) submitted through submitJob (one statement) and
 * scheduled by passes of 1,000 on 1,000×96 CPUs, side by side with 10,000 single jobs of 2 CPUs submitted
 * through submitJobsBatch (10 batches of 1,000) and scheduled the same way. Then the cost of a pass over the
 * array held at a %1000 cap (9,000 tasks read and held back with JobArrayTaskLimit) against a pass over
 * 1,000 running and 9,000 single jobs that cannot start either (a feature no node has).
 */
const ARRAY_TASKS = 10_000;

async function scenarioArrays() {
  log('2a. job arrays');
  await resetCluster();
  await addWorkers(SCHED_WORKERS);
  await exec(sql`TRUNCATE job_arrays`);
  const submitMs: number[] = [];
  const batchMs: number[] = [];
  const arrayRates: number[] = [];
  const singleRates: number[] = [];
  const arrayPasses: number[] = [];
  const singlePasses: number[] = [];
  for (let i = 0; i < (SMALL ? 2 : 3); i++) {
    // The array: one submission.
    await exec(sql`TRUNCATE jobs, resource_allocations, job_arrays CASCADE`);
    await resetPlacements();
    let t = performance.now();
    await submitJob(quiet, { script: 'true', cpus: 2, name: 'array', array: `0-${ARRAY_TASKS - 1}` });
    submitMs.push(performance.now() - t);
    await exec(sql`ANALYZE jobs`);
    let r = await batchedScheduling();
    if (r.placed !== ARRAY_TASKS) throw new Error(`placed ${r.placed} of ${ARRAY_TASKS} tasks`);
    arrayRates.push(r.placed / r.seconds);
    arrayPasses.push(...r.passMs);

    // The same work as single jobs.
    await exec(sql`TRUNCATE jobs, resource_allocations, job_arrays CASCADE`);
    await resetPlacements();
    t = performance.now();
    for (let b = 0; b < ARRAY_TASKS; b += MAX_BATCH_JOBS) {
      await submitJobsBatch(
        quiet,
        Array.from({ length: MAX_BATCH_JOBS }, () => ({ script: 'true', cpus: 2, name: 'single' })),
      );
    }
    batchMs.push(performance.now() - t);
    await exec(sql`ANALYZE jobs`);
    r = await batchedScheduling();
    if (r.placed !== ARRAY_TASKS) throw new Error(`placed ${r.placed} of ${ARRAY_TASKS} single jobs`);
    singleRates.push(r.placed / r.seconds);
    singlePasses.push(...r.passMs);
  }

  // A pass that reads the whole queue and places nothing more: the array at its %1000 cap, against single
  // jobs on a cluster with no room left.
  await exec(sql`TRUNCATE jobs, resource_allocations, job_arrays CASCADE`);
  await resetPlacements();
  await submitJob(quiet, { script: 'true', cpus: 2, name: 'capped', array: `0-${ARRAY_TASKS - 1}%1000` });
  await exec(sql`ANALYZE jobs`);
  const capped = await batchedScheduling();
  if (capped.placed !== 1000) throw new Error(`placed ${capped.placed} tasks under a %1000 cap`);
  const cappedPass = await timeMany(SMALL ? 5 : 10, () => runSchedulingPass(ctx));
  await exec(sql`TRUNCATE jobs, resource_allocations, job_arrays CASCADE`);
  await resetPlacements();
  // The same queue as single jobs: 1,000 running (as the capped tasks are), 9,000 that cannot start though
  // CPUs are free (a feature no node has), read by every pass as the held-back tasks are.
  await exec(
    sql`INSERT INTO jobs (name, script, cpus) SELECT 'run', 'true', 2 FROM generate_series(1, 1000)`,
  );
  await exec(sql`INSERT INTO jobs (name, script, cpus, feature_constraint)
    SELECT 'b', 'true', 2, 'nowhere' FROM generate_series(1, ${ARRAY_TASKS - 1000}::int)`);
  await exec(sql`ANALYZE jobs`);
  await batchedScheduling();
  const fullPass = await timeMany(SMALL ? 5 : 10, () => runSchedulingPass(ctx));

  const sub = stats(submitMs);
  const bat = stats(batchMs);
  const ar = stats(arrayRates);
  const sr = stats(singleRates);
  results.arrays = {
    direct_domain_calls: true,
    tasks: ARRAY_TASKS,
    workers: SCHED_WORKERS,
    submit_ms: sub,
    single_jobs_batched_submit_ms: bat,
    array_placements_per_s: ar,
    single_placements_per_s: sr,
    array_pass_ms: stats(arrayPasses),
    single_pass_ms: stats(singlePasses),
    capped_pass_ms: cappedPass,
    unstartable_single_pass_ms: fullPass,
  };
  row(
    '2a arrays',
    `submit a ${ARRAY_TASKS.toLocaleString('en')}-task array (one statement)`,
    sub,
    'ms',
    '< 1,000 ms',
    sub.median < 1000 ? 'met' : 'not met',
  );
  row(
    '2a arrays',
    `  the same as ${ARRAY_TASKS.toLocaleString('en')} single jobs (10 batches of 1,000)`,
    bat,
    'ms',
  );
  row(
    '2a arrays',
    `schedule the array's ${ARRAY_TASKS.toLocaleString('en')} tasks on 1,000×96 CPUs: placements/s`,
    ar,
    '/s',
    '≈ single jobs',
    ar.median >= 0.8 * sr.median ? 'met' : 'not met',
  );
  row('2a arrays', `  ${ARRAY_TASKS.toLocaleString('en')} single jobs, same CPUs: placements/s`, sr, '/s');
  row('2a arrays', '  one pass of 1,000 task placements', stats(arrayPasses), 'ms');
  row('2a arrays', '  one pass of 1,000 single-job placements', stats(singlePasses), 'ms');
  row(
    '2a arrays',
    `one pass over the array at its %1000 cap (${(ARRAY_TASKS - 1000).toLocaleString('en')} tasks held back)`,
    cappedPass,
    'ms',
  );
  row(
    '2a arrays',
    `  one pass over 1,000 running and ${(ARRAY_TASKS - 1000).toLocaleString('en')} single jobs that cannot start (no node has their feature)`,
    fullPass,
    'ms',
  );
  await exec(sql`DELETE FROM jobs`);
  await removeWorkers();
}

// ---------------------------------------------------------------- 2m. scheduling throughput, mixed resources
/**
 * The issue's size with every resource in play: 1,000 nodes registered through `registerWorker` (800 CPU
 * nodes in `batch` and the default partition with features, 200 GPU nodes in `gpu`; bench/mixed.ts) and
 * 100,000 pending jobs submitted through `submitJobsBatch` (1,000 a batch: admission checks, memory per CPU
 * resolved, partitions and constraints stored as for any client), then passes until one places nothing.
 */
const MIXED_JOBS = SMALL ? 20_000 : 100_000;
const MIXED_RUNS = SMALL ? 1 : 3;
/** Setup through the domain without the scheduler it asks for: the bench runs the passes itself. */
const quiet: typeof ctx = {
  ...ctx,
  requestSchedule: async () => ({ placed: 0, workers: 0 }),
};

async function registerMixedWorkers(workers: ReturnType<typeof mixedWorkers>) {
  for (let i = 0; i < workers.length; i += 20) {
    await Promise.all(workers.slice(i, i + 20).map((w) => registerWorker(quiet, w)));
  }
}

async function submitMixed(jobs: SubmitJobInput[]) {
  for (let i = 0; i < jobs.length; i += MAX_BATCH_JOBS) {
    await submitJobsBatch(quiet, jobs.slice(i, i + MAX_BATCH_JOBS));
  }
  await exec(sql`ANALYZE jobs`);
}

/** Every placement undone: jobs pending again with no reason or reservation, every resource free. */
async function resetMixedPlacements() {
  await exec(sql`TRUNCATE resource_allocations`);
  await exec(sql`UPDATE jobs SET state = 'PENDING', node = NULL, attempt = 0, allocated_gpus = NULL
    WHERE state <> 'PENDING'`);
  await exec(sql`UPDATE jobs SET reason = NULL, reason_detail = NULL, reserved_worker = NULL
    WHERE reason IS NOT NULL OR reserved_worker IS NOT NULL`);
  await exec(
    sql`UPDATE workers SET allocated_cpus = 0, allocated_memory_mb = 0, gpus_used = 0, allocated_gpus = 0`,
  );
  await exec(sql`UPDATE worker_gres SET allocated = 0`);
  await exec(
    sql`UPDATE cluster_state SET allocated_cpus = 0, allocated_memory_mb = 0, allocated_gpus = 0 WHERE id = 1`,
  );
  await exec(sql`VACUUM ANALYZE jobs`);
  await exec(sql`VACUUM ANALYZE workers`);
  const snap = await readAllocationSnapshot(db);
  await registry.setAllocationSnapshot(snap.allocated, snap.version);
}

/**
 * The planner of one pass, timed apart (bench only, nothing written): the same reads as runSchedulingPass
 * (workers, partitions, held reservations, pages of the queue; no locks), then building the planner and
 * `consider` over the page, and the second plan a pass makes when it reserved a worker anew.
 */
async function plannerProbe(): Promise<{
  convertMs: number;
  planMs: number;
  replanMs: number;
  jobs: number;
  placed: number;
  newReservations: number;
}> {
  const live = await registry.liveWorkerIds();
  const workers = await query<WorkerRow>(
    db,
    sql`SELECT ${WORKER_COLUMNS} FROM workers WHERE status = 'ready' AND NOT drained
        AND id = ANY(${pgArray(live)}::text[]) ORDER BY id`,
  );
  const partitionRows = await query<PartitionRow>(db, sql`SELECT ${PARTITION_COLUMNS} FROM partitions`);
  const holders = await query<QueueRow>(
    db,
    sql`SELECT ${QUEUE_COLUMNS} FROM jobs WHERE state = 'PENDING' AND held IS NULL AND reserved_worker IS NOT NULL
        ORDER BY priority DESC, submit_time, id`,
  );
  const batch = config.scheduleBatchSize;
  const pages: QueueRow[][] = [];
  // The pass reads on while it places fewer than a batch; the probe reads the same pages from the same cursor.
  let t = performance.now();
  const partitions = partitionsOf(partitionRows);
  const toJob = jobReader(partitions);
  const candidates = workers.map((w) => toWorker(w, partitions));
  const held = holders.map(toJob);
  let convertMs = performance.now() - t;
  let planMs = 0;
  let planner = createPlanner(candidates, held, partitions.rules);
  const considered: PendingJob[] = [];
  let cursor: QueueRow | undefined;
  for (let page = 0; page < 10 && !planner.exhausted && planner.placed < batch; page++) {
    const after = cursor
      ? sql`AND priority <= ${cursor.priority} AND (priority < ${cursor.priority}
            OR (submit_time, id) > (${cursor.submitted}::timestamptz, ${cursor.id}::bigint))`
      : sql``;
    const rows = await query<QueueRow>(
      db,
      sql`SELECT ${QUEUE_COLUMNS} FROM jobs WHERE state = 'PENDING' AND held IS NULL
          AND cpus <= ${planner.largestUseful} ${after}
          ORDER BY priority DESC, submit_time, id LIMIT ${batch}`,
    );
    pages.push(rows);
    t = performance.now();
    const jobs = rows.map(toJob);
    convertMs += performance.now() - t;
    t = performance.now();
    for (const job of jobs) {
      if (planner.exhausted || planner.placed >= batch) break;
      planner.consider(job);
      considered.push(job);
    }
    planMs += performance.now() - t;
    if (rows.length < batch) break;
    cursor = rows.at(-1);
  }
  const placed = planner.placed;
  const fresh = planner.result().newReservations.size;
  let replanMs = 0;
  if (fresh > 0) {
    // The pass reads the running jobs' time limits here (a statement), then plans again.
    const running = new Map<string, RunningJob[]>();
    const busy = candidates
      .filter((w) => w.allocatedCpus > 0 || (w.gpusUsed?.size ?? 0) > 0)
      .map((w) => w.id);
    const rows = await query<{
      node: string;
      cpus: number;
      memory_mb: number | null;
      gres: Record<string, number> | null;
      gpu_mask: string | null;
      ends_in: number | string | null;
    }>(
      db,
      sql`SELECT j.node, coalesce(a.allocated_cpus, j.cpus) AS cpus, a.memory_mb, a.gres, a.gpu_mask::text AS gpu_mask,
                 extract(epoch FROM coalesce(j.start_time, now()) + make_interval(secs => j.time_limit_s) - now()) AS ends_in
          FROM jobs j LEFT JOIN resource_allocations a ON a.job_id = j.id AND NOT a.released
          WHERE j.state = 'RUNNING' AND j.node = ANY(${pgArray(busy)}::text[])`,
    );
    t = performance.now();
    for (const row of rows) {
      const list = running.get(row.node) ?? [];
      list.push({
        cpus: Number(row.cpus),
        memoryMb: Number(row.memory_mb ?? 0),
        gpus: [...maskIndexes(row.gpu_mask ?? 0)],
        gres: row.gres ?? {},
        endsInSeconds: row.ends_in === null ? null : Number(row.ends_in),
      });
      running.set(row.node, list);
    }
    planner = createPlanner(
      candidates.map((w) => ({ ...w, running: running.get(w.id) ?? [] })),
      held,
      partitions.rules,
    );
    for (const job of considered) {
      if (planner.exhausted || planner.placed >= batch) break;
      planner.consider(job);
    }
    replanMs = performance.now() - t;
  }
  return { convertMs, planMs, replanMs, jobs: considered.length, placed, newReservations: fresh };
}

interface MixedRun {
  placed: number;
  seconds: number;
  passMs: number[];
  sqlMs: number[];
  statements: number[];
  placedPerPass: number[];
  probes: Awaited<ReturnType<typeof plannerProbe>>[];
}

/** Passes until one places nothing (as batchedScheduling), with each pass's time in Postgres. */
async function mixedScheduling(probeEvery = 0): Promise<MixedRun> {
  const run: MixedRun = {
    placed: 0,
    seconds: 0,
    passMs: [],
    sqlMs: [],
    statements: [],
    placedPerPass: [],
    probes: [],
  };
  let seconds = 0;
  for (let i = 0; ; i++) {
    if (probeEvery > 0 && i % probeEvery === 0) {
      const trace = pgCounter.trace;
      pgCounter.trace = null; // the probe's reads are not the pass's
      run.probes.push(await plannerProbe());
      pgCounter.trace = trace;
    }
    const sql0 = pgCounter.ms;
    const st0 = pgCounter.statements;
    const p = performance.now();
    const r = await runSchedulingPass(ctx);
    const ms = performance.now() - p;
    seconds += ms / 1000;
    run.passMs.push(ms);
    run.sqlMs.push(pgCounter.ms - sql0);
    run.statements.push(pgCounter.statements - st0);
    run.placedPerPass.push(r.placed);
    run.placed += r.placed;
    if (r.placed === 0) break;
  }
  run.seconds = seconds;
  return run;
}

async function clusterUse() {
  const [u] = await query<{
    cpus: string;
    cpus_used: string;
    mem: string;
    mem_used: string;
    gpus: string;
    gpus_used: string;
    idle: string;
  }>(
    db,
    sql`SELECT sum(cpus) AS cpus, sum(allocated_cpus) AS cpus_used, sum(memory_mb) AS mem,
               sum(allocated_memory_mb) AS mem_used, sum(jsonb_array_length(gpus)) AS gpus,
               sum(allocated_gpus) AS gpus_used, count(*) FILTER (WHERE allocated_cpus = 0) AS idle
        FROM workers`,
  );
  const pct = (a?: string, b?: string) => round((100 * Number(a)) / Number(b), 1);
  return {
    cpus_pct: pct(u?.cpus_used, u?.cpus),
    memory_pct: pct(u?.mem_used, u?.mem),
    gpus_pct: pct(u?.gpus_used, u?.gpus),
    idle_nodes: Number(u?.idle),
  };
}

async function scenarioMixedScheduling() {
  log('2m. scheduling throughput, mixed resources');
  await resetCluster();
  let t = performance.now();
  await registerMixedWorkers(mixedWorkers());
  const registerS = (performance.now() - t) / 1000;
  t = performance.now();
  await submitMixed(mixedJobs(MIXED_JOBS));
  const submitS = (performance.now() - t) / 1000;
  log(
    `2m: 1,000 workers registered in ${round(registerS, 1)} s, ${MIXED_JOBS} jobs submitted in ${round(submitS, 1)} s`,
  );
  const [mix] = await query<Record<string, string>>(
    db,
    sql`SELECT count(*) AS jobs, count(*) FILTER (WHERE gpus > 0) AS gpu, count(*) FILTER (WHERE gres <> '{}') AS gres,
               count(*) FILTER (WHERE feature_constraint IS NOT NULL) AS constraint,
               count(*) FILTER (WHERE memory_mb IS NOT NULL) AS memory, count(*) FILTER (WHERE exclusive) AS exclusive,
               count(*) FILTER (WHERE partition = 'gpu') AS part_gpu, count(*) FILTER (WHERE partition = 'batch') AS part_batch,
               count(*) FILTER (WHERE partition = 'batch,default') AS part_batch_default,
               count(*) FILTER (WHERE partition = 'default') AS part_default, sum(cpus) AS cpus
        FROM jobs WHERE state = 'PENDING'`,
  );
  const runsOut: MixedRun[] = [];
  const uses: Awaited<ReturnType<typeof clusterUse>>[] = [];
  let stillPending = 0;
  let traced: { statement: string; n: number; ms: number; ms_each: number }[] = [];
  for (let i = 0; i < MIXED_RUNS; i++) {
    await resetMixedPlacements();
    log(`2m: run ${i + 1} of ${MIXED_RUNS}`);
    // The first run with each statement's time (and a planner probe every 5th pass, outside the passes).
    if (i === 0) pgCounter.trace = new Map();
    const r = await mixedScheduling(i === 0 ? 5 : 0);
    if (i === 0) {
      const trace = [...(pgCounter.trace ?? new Map()).entries()].sort((a, b) => b[1].ms - a[1].ms);
      traced = trace.map(([statement, t]) => ({
        statement,
        n: t.n,
        ms: round(t.ms),
        ms_each: round(t.ms / t.n),
      }));
      pgCounter.trace = null;
    }
    runsOut.push(r);
    uses.push(await clusterUse());
    const [left] = await query<{ n: string }>(
      db,
      sql`SELECT count(*) AS n FROM jobs WHERE state = 'PENDING'`,
    );
    stillPending = Number(left?.n);
    log(`2m: run ${i + 1}: ${r.placed} placed in ${round(r.seconds, 2)} s, ${r.passMs.length} passes`);
  }
  const rates = stats(runsOut.map((r) => r.placed / r.seconds));
  const passMs = stats(runsOut.flatMap((r) => r.passMs));
  // Placing passes only (the last of each run places nothing: it reads the queue and writes the reasons).
  const placingMs = stats(runsOut.flatMap((r) => r.passMs.slice(0, -1)));
  const sqlShare = stats(runsOut.flatMap((r) => r.sqlMs.map((s, k) => s / (r.passMs[k] as number))));
  const jsMs = stats(runsOut.flatMap((r) => r.passMs.map((p, k) => p - (r.sqlMs[k] as number))));
  const sqlMs = stats(runsOut.flatMap((r) => r.sqlMs));
  const probes = runsOut[0]?.probes ?? [];
  results.scheduling_mixed = {
    direct_domain_calls: true,
    workers: mixedWorkers().length,
    worker_shapes:
      '800 × (96 CPUs, 384 GB; batch 300, default 500; avx512/ssd/arm64), 200 × (gpu; 64 CPUs, 1 TB, 4×a100 or 8×h100, nvme:1)',
    pending_jobs: MIXED_JOBS,
    mix: Object.fromEntries(Object.entries(mix ?? {}).map(([k, v]) => [k, Number(v)])),
    register_seconds: registerS,
    submit_seconds: submitS,
    runs: runsOut.map((r, k) => ({
      placed: r.placed,
      seconds: r.seconds,
      passes: r.passMs.length,
      placements_per_s: r.placed / r.seconds,
      pass_ms: stats(r.passMs),
      pass_sql_ms: stats(r.sqlMs),
      statements_per_pass: stats(r.statements),
      per_pass: r.passMs.map((ms, k) => ({
        placed: r.placedPerPass[k],
        ms: round(ms),
        sql_ms: round(r.sqlMs[k] as number),
        statements: r.statements[k],
      })),
      cluster_use_after: uses[k],
    })),
    still_pending: stillPending,
    placements_per_s: rates,
    pass_ms: passMs,
    placing_pass_ms: placingMs,
    pass_sql_ms: sqlMs,
    pass_js_ms: jsMs,
    pass_sql_share: sqlShare,
    planner_probes: probes,
    statements_first_run: traced,
  };
  const first = runsOut[0] as MixedRun;
  const use = uses[0];
  row(
    '2 scheduling',
    `mixed resources: ${MIXED_JOBS.toLocaleString('en')} pending jobs (memory, GPUs, gres, constraints, partitions, exclusive) on 1,000 nodes (800 CPU, 200 GPU), placed until full: placements/s`,
    rates,
    '/s',
    '≥ 5,000/s',
    rates.median >= 5000 ? 'met' : 'not met',
  );
  row(
    '2 scheduling',
    `  per run: placed, passes, cluster use after`,
    null,
    '',
    '',
    '',
    `${first.placed.toLocaleString('en')} placed in ${first.passMs.length} passes, ${round(first.seconds, 1)} s; ${stillPending.toLocaleString('en')} left pending; CPUs ${use?.cpus_pct} %, memory ${use?.memory_pct} %, GPUs ${use?.gpus_pct} % allocated`,
  );
  row('2 scheduling', '  one pass (up to 1,000 placements)', placingMs, 'ms');
  row('2 scheduling', '  of which waiting on Postgres (statements sent → answered)', sqlMs, 'ms');
  row('2 scheduling', '  of which JavaScript (pass − Postgres: planner, rows)', jsMs, 'ms');
  const probe = (k: keyof (typeof probes)[0]) => stats(probes.map((p) => Number(p[k])));
  if (probes.length > 0) {
    row(
      '2 scheduling',
      `  planner alone (probe every 5th pass, ${probes.length} probes): consider() over a pass's jobs; rows → planner input; re-plan after a new reservation`,
      null,
      '',
      '',
      '',
      `${round(probe('planMs').median)}; ${round(probe('convertMs').median)}; ${round(probe('replanMs').median)} ms (p99 ${round(probe('planMs').p99)}; ${round(probe('convertMs').p99)}; ${round(probe('replanMs').p99)})`,
    );
  }
  await resetCluster();
  await exec(sql`DELETE FROM partitions WHERE NOT is_default`);
  await exec(sql`UPDATE cluster_state SET allocated_memory_mb = 0, allocated_gpus = 0 WHERE id = 1`);
}

// ---------------------------------------------------------------- 2f. fragmentation: pack vs spread
/**
 * The same random churn of small jobs on 100 nodes (96 CPUs, 384 GB, default partition) once per policy of
 * the default partition: fill to ≈ 70 % of the CPUs, end a random half of the running jobs, fill again, end
 * half, fill again; then count how many large jobs still start right away: 64-CPU jobs (a node holds one), and
 * exclusive jobs (whole idle nodes), each on the same state.
 */
const FRAG_NODES = 100;
async function fragmentationRun(policy: 'pack' | 'spread', large: 'cpus64' | 'exclusive') {
  await resetCluster();
  await exec(sql`UPDATE cluster_state SET allocated_memory_mb = 0, allocated_gpus = 0 WHERE id = 1`);
  await putPartition(quiet, 'default', { policy }, ANONYMOUS);
  await registerMixedWorkers(
    Array.from({ length: FRAG_NODES }, (_, i) => ({
      worker_id: `frag-${String(i + 1).padStart(3, '0')}`,
      hostname: `frag${i + 1}`,
      cpus: 96,
      memory_mb: 384 * 1024,
    })),
  );
  const rng = seeded(8);
  const capacity = FRAG_NODES * 96;
  const ended = seeded(88);
  for (let churn = 0; churn < 3; churn++) {
    // Small jobs up to ≈ 70 % of the CPUs (counting those still running).
    const [used] = await query<{ n: string }>(db, sql`SELECT sum(allocated_cpus) AS n FROM workers`);
    let want = Math.round(capacity * 0.7) - Number(used?.n ?? 0);
    const jobs: SubmitJobInput[] = [];
    while (want > 0) {
      const j = smallJob(rng);
      jobs.push(j);
      want -= j.cpus;
    }
    await submitMixed(jobs);
    await batchedScheduling();
    if (churn === 2) break;
    // A random half of the running jobs end: their resources are released as a finish report releases them.
    const running = await query<{ id: string }>(
      db,
      sql`SELECT id FROM jobs WHERE state = 'RUNNING' ORDER BY id`,
    );
    const done = running.filter(() => ended.next() < 0.5).map((j) => Number(j.id));
    await exec(sql`WITH j AS (
        UPDATE jobs SET state = 'COMPLETED', exit_code = 0, end_time = now()
        WHERE id = ANY(${pgArray(done)}::bigint[]) RETURNING id, node),
      a AS (UPDATE resource_allocations r SET released = true, released_time = now()
            FROM j WHERE r.job_id = j.id RETURNING r.node_name, r.allocated_cpus, r.memory_mb)
      UPDATE workers w SET allocated_cpus = w.allocated_cpus - x.c, allocated_memory_mb = w.allocated_memory_mb - x.m
      FROM (SELECT node_name, sum(allocated_cpus) AS c, sum(memory_mb) AS m FROM a GROUP BY node_name) x
      WHERE w.id = x.node_name`);
  }
  await exec(sql`UPDATE cluster_state SET allocated_cpus = w.c, allocated_memory_mb = w.m,
      allocation_version = allocation_version + 1
    FROM (SELECT sum(allocated_cpus) AS c, sum(allocated_memory_mb) AS m FROM workers) w WHERE id = 1`);
  const snap = await readAllocationSnapshot(db);
  await registry.setAllocationSnapshot(snap.allocated, snap.version);
  const before = await clusterUse();
  const holes = await query<{ free: string }>(db, sql`SELECT cpus - allocated_cpus AS free FROM workers`);
  const freeCpus = holes.map((h) => Number(h.free));
  // 100 large jobs behind the small ones; the passes place what fits now (the others reserve nodes and wait).
  const largeJobs: SubmitJobInput[] = Array.from({ length: FRAG_NODES }, () =>
    large === 'cpus64'
      ? { name: 'large', script: 'true', cpus: 64, memory_per_node: '128G' }
      : { name: 'whole', script: 'true', cpus: 1, exclusive: true },
  );
  await submitMixed(largeJobs);
  const r = await batchedScheduling();
  return {
    policy,
    large,
    small_jobs_running: before,
    nodes_with_64_free: freeCpus.filter((f) => f >= 64).length,
    idle_nodes: before.idle_nodes,
    free_cpus: freeCpus.reduce((a, b) => a + b, 0),
    large_placed: r.placed,
  };
}

async function scenarioFragmentation() {
  log('2f. fragmentation: pack vs spread');
  const out: Awaited<ReturnType<typeof fragmentationRun>>[] = [];
  for (const policy of ['pack', 'spread'] as const) {
    for (const large of ['cpus64', 'exclusive'] as const) out.push(await fragmentationRun(policy, large));
  }
  results.fragmentation = { nodes: FRAG_NODES, node: '96 CPUs, 384 GB', runs: out };
  for (const policy of ['pack', 'spread'] as const) {
    const a = out.find((o) => o.policy === policy && o.large === 'cpus64');
    const b = out.find((o) => o.policy === policy && o.large === 'exclusive');
    row(
      '2 fragmentation',
      `policy ${policy}: small-job churn to ${a?.small_jobs_running.cpus_pct} % of 100×96 CPUs, then 100 large jobs: 64-CPU / exclusive placed at once`,
      null,
      '',
      '',
      '',
      `${a?.large_placed} / ${b?.large_placed} (idle nodes ${a?.idle_nodes}, nodes with ≥ 64 free ${a?.nodes_with_64_free}; ${a?.free_cpus} CPUs free)`,
    );
  }
  await putPartition(quiet, 'default', { policy: 'pack' }, ANONYMOUS);
  await resetCluster();
}

// ---------------------------------------------------------------- 4. heartbeat load
async function heartbeatLoad(
  ids: string[],
  seconds: number,
  options: { concurrency?: number; ratePerSecond?: number } = {},
): Promise<{ count: number; ms: number[]; cpu: number; wall: number }> {
  const until = performance.now() + seconds * 1000;
  const ms: number[] = [];
  let next = 0;
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const one = async () => {
    const i = next++ % ids.length;
    const id = ids[i] as string;
    const t = performance.now();
    await heartbeatWorker(ctx, { worker_id: id, session: `s${Number(id.slice(-5))}` });
    ms.push(performance.now() - t);
  };
  if (options.ratePerSecond) {
    const inflight = new Set<Promise<void>>();
    const interval = 1000 / options.ratePerSecond;
    let due = performance.now();
    while (performance.now() < until) {
      const p = one().finally(() => inflight.delete(p));
      inflight.add(p);
      due += interval;
      const wait = due - performance.now();
      if (wait > 1) await sleep(wait);
    }
    await Promise.all(inflight);
  } else {
    await Promise.all(
      Array.from({ length: options.concurrency ?? 16 }, async () => {
        while (performance.now() < until) await one();
      }),
    );
  }
  const wall = (performance.now() - t0) / 1000;
  const c = process.cpuUsage(cpu0);
  return { count: ms.length, ms, cpu: (c.user + c.system) / 1e6 / wall, wall };
}

async function scenarioHeartbeats() {
  log('4. heartbeat load');
  await resetCluster();
  const N = SMALL ? 2000 : 10_000;
  // 1,000 ready workers take jobs; the others are draining (heartbeating, never placed on).
  await addWorkers(N, { ready: SCHED_WORKERS });
  const ids = (await registry.liveWorkerIds()).sort();
  const seconds = SMALL ? 4 : 10;
  const pg0 = pgCounter.statements;
  tcpCounted.reset();
  const alone = await heartbeatLoad(ids, seconds, { concurrency: 16 });
  const pgPerHb = (pgCounter.statements - pg0) / alone.count;
  const redisPerHb = tcpCounted.total() / alone.count;
  const rate = alone.count / alone.wall;
  await pendingJobs(SCHED_JOBS);
  await resetPlacements();
  const schedAlone = await batchedScheduling();
  await resetPlacements();
  const realRate = N / 30;
  const [schedWithReal, hbReal] = await Promise.all([
    batchedScheduling(),
    heartbeatLoad(ids, Math.max(3, schedAlone.seconds), { ratePerSecond: realRate }),
  ]);
  await resetPlacements();
  let stop = false;
  const hbMax = (async () => {
    const all: number[] = [];
    let count = 0;
    let wall = 0;
    while (!stop) {
      const r = await heartbeatLoad(ids, 1, { concurrency: 16 });
      all.push(...r.ms);
      count += r.count;
      wall += r.wall;
    }
    return { count, ms: all, wall };
  })();
  const schedWithMax = await batchedScheduling();
  stop = true;
  const hbm = await hbMax;
  const place = (r: { placed: number; seconds: number }) => r.placed / r.seconds;
  results.heartbeats = {
    direct_domain_calls: true,
    agents: N,
    heartbeats_per_s_max: rate,
    heartbeat_ms: stats(alone.ms),
    process_cpu_cores_used: alone.cpu,
    pg_statements_per_heartbeat: pgPerHb,
    redis_commands_per_heartbeat: redisPerHb,
    scheduling_alone_per_s: place(schedAlone),
    scheduling_with_real_rate_per_s: place(schedWithReal),
    real_rate_heartbeats_per_s: hbReal.count / hbReal.wall,
    real_rate_heartbeat_ms: stats(hbReal.ms),
    scheduling_with_max_rate_per_s: place(schedWithMax),
    max_rate_heartbeats_per_s_during: hbm.count / hbm.wall,
    max_rate_heartbeat_ms_during: stats(hbm.ms),
  };
  row(
    '4 heartbeats',
    `${N.toLocaleString('en')} agents, heartbeats as fast as 16 in flight: heartbeats/s`,
    null,
    '',
    '',
    '',
    `${round(rate, 0)} /s (Node process ${round(alone.cpu * 100, 0)}% of a core)`,
  );
  row('4 heartbeats', '  one heartbeat', stats(alone.ms), 'ms');
  row(
    '6 cost',
    'Redis commands per heartbeat / Postgres round trips per heartbeat',
    null,
    '',
    '≤ 1 Redis',
    redisPerHb <= 1 ? 'met' : 'not met',
    `${round(redisPerHb, 2)} / ${round(pgPerHb, 2)}`,
  );
  row(
    '4 heartbeats',
    `scheduling ${SCHED_JOBS.toLocaleString('en')} jobs alone`,
    null,
    '',
    '',
    '',
    `${round(place(schedAlone), 0)} placements/s`,
  );
  row(
    '4 heartbeats',
    `  with ${round(realRate, 0)} heartbeats/s (10k agents every 30 s)`,
    stats(hbReal.ms),
    'ms/heartbeat',
    '',
    '',
    `${round(place(schedWithReal), 0)} placements/s; heartbeat ${round(stats(hbReal.ms).median)} / ${round(stats(hbReal.ms).p99)} ms`,
  );
  row(
    '4 heartbeats',
    `  with heartbeats at full speed (${round(hbm.count / hbm.wall, 0)}/s)`,
    null,
    '',
    '',
    '',
    `${round(place(schedWithMax), 0)} placements/s; heartbeat ${round(stats(hbm.ms).median)} / ${round(stats(hbm.ms).p99)} ms`,
  );
  await removeWorkers();
}

// ---------------------------------------------------------------- 3, 5, 6, 7: real server, real agents
async function submit(
  url: string,
  body: unknown,
  headers: Record<string, string> = {},
): Promise<{ id: number; at: number }> {
  const res = await fetch(`${url}/api/v1/jobs/submit`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
  });
  const at = performance.timeOrigin + performance.now();
  if (res.status !== 201) throw new Error(`submit ${res.status}: ${await res.text()}`);
  return { id: ((await res.json()) as { id: number }).id, at };
}

async function submitBatch(url: string, jobs: unknown[]): Promise<number[]> {
  const res = await fetch(`${url}/api/v1/jobs/batch`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ jobs }),
  });
  if (res.status !== 201) throw new Error(`batch ${res.status}: ${await res.text()}`);
  return ((await res.json()) as { jobs: { id: number }[] }).jobs.map((j) => j.id);
}

async function waitFinished(ids: number[], timeoutMs = 120_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const [r] = await query<{ n: string }>(
      db,
      sql`SELECT count(*) AS n FROM jobs WHERE id = ANY(${pgArray(ids)}::bigint[]) AND end_time IS NOT NULL AND state <> 'RUNNING'`,
    );
    if (Number(r?.n) >= ids.length) return;
    if (Date.now() > deadline) throw new Error(`only ${r?.n} of ${ids.length} jobs finished`);
    await sleep(20);
  }
}

async function startLatency(
  url: string,
  n: number,
  spacingMs = 25,
  headers: Record<string, string> = {},
): Promise<number[]> {
  const submitted: { id: number; at: number }[] = [];
  for (let i = 0; i < n; i++) {
    submitted.push(await submit(url, { script: 'date +%s.%N', cpus: 1, name: 'latency' }, headers));
    await sleep(spacingMs);
  }
  await waitFinished(submitted.map((s) => s.id));
  const latencies: number[] = [];
  for (const s of submitted) {
    const res = await fetch(`${url}/api/v1/jobs/${s.id}/logs`, { headers });
    const body = (await res.json()) as { stdout: { content: string } };
    const started = Number(body.stdout.content.split('\n')[0]) * 1000;
    latencies.push(started - s.at);
  }
  return latencies;
}

async function withServer<T>(
  reg: RegistryStore,
  work: (url: string) => Promise<T>,
  overrides: Partial<typeof config> = {},
): Promise<T> {
  const server = await startServer(
    {
      db,
      registry: reg,
      notifier: createLocalNotifier(),
      logger: silent,
      config: { ...config, ...overrides },
    },
    { port: 0, host: '127.0.0.1' },
  );
  try {
    return await work(server.url);
  } finally {
    await server.close();
  }
}

/** The agent as `npx conductor-agent` runs it: the package's built JavaScript (`npm run build:agent`). */
const BUILT_AGENT = [fileURLToPath(new URL('../agent/dist/cli.js', import.meta.url))];

async function withAgent<T>(
  name: string,
  url: string,
  work: (agent: AgentProcess) => Promise<T>,
  entry: string[] = BUILT_AGENT,
): Promise<T> {
  const agent = new AgentProcess(name, url, { cpus: 96, entry });
  await agent.registered();
  try {
    return await work(agent);
  } finally {
    await agent.stop().catch(() => agent.kill9());
  }
}

async function scenarioLatencyAndE2E() {
  log('3. submit-to-start latency (TCP Redis), 5. end to end, 6. lifecycle cost');
  await resetCluster();
  const N = SMALL ? 50 : 200;
  // Before/after in one run: claimRedeliverySeconds 0 is the old claim (an assignment not yet reported
  // started is handed out again at once, so the agent's next claim answers at once with nothing new and the
  // agent paces itself for 1 s); the default keeps it out of that session's claims while `started` is on
  // its way, so the next claim long-polls and wakes on the next placement.
  await withServer(
    registry,
    (url) =>
      withAgent('bench-agent-tcp-before', url, async () => {
        const before = stats(await startLatency(url, N));
        results.submit_to_start_tcp_before_ms = before;
      }),
    { claimRedeliverySeconds: 0 },
  );
  await resetCluster();
  await withServer(registry, (url) =>
    withAgent('bench-agent-tcp', url, async () => {
      const lat = stats(await startLatency(url, N));
      results.submit_to_start_tcp_ms = lat;
      const before = results.submit_to_start_tcp_before_ms as ReturnType<typeof stats>;
      row(
        '3 submit→start',
        `Node server + TCP Redis, ${N} jobs 25 ms apart, 1 agent`,
        lat,
        'ms',
        'p50 < 100 ms, p99 < 1 s',
        lat.median < 100 && lat.p99 < 1000 ? 'met' : 'not met',
      );
      row('3 submit→start', '  before: the claim re-hands unstarted jobs at once (same run)', before, 'ms');
      row(
        '3 submit→start',
        '  before/after (claim redelivery window)',
        null,
        '',
        '',
        '',
        `p50 ×${round(before.median / lat.median, 1)} faster, p99 ×${round(before.p99 / lat.p99, 1)} faster`,
      );
      const isolated = stats(await startLatency(url, ISOLATED, 1200));
      results.submit_to_start_tcp_isolated_ms = isolated;
      row(
        '3 submit→start',
        `  ${ISOLATED} jobs 1.2 s apart (agent waiting in its long poll)`,
        isolated,
        'ms',
      );

      // 6. per job lifecycle: one job at a time, all control-plane work from submit to release counted.
      const perJobRedis: number[] = [];
      const perJobPg: number[] = [];
      const perJobReq: number[] = [];
      const info0 = await commandstats();
      const proxyAgentLess = await countingProxy(url);
      for (let i = 0; i < (SMALL ? 5 : 20); i++) {
        await sleep(200); // let the agent's claim settle into its long poll
        tcpCounted.reset();
        const pg0 = pgCounter.statements;
        const { id } = await submit(proxyAgentLess.url, { script: 'true', cpus: 1 });
        await waitFinished([id]);
        await sleep(100); // the release's deferred pass
        perJobRedis.push(tcpCounted.total());
        perJobPg.push(pgCounter.statements - pg0);
      }
      await proxyAgentLess.close();
      const info1 = await commandstats();
      perJobReq.push(0);
      const redisJob = stats(perJobRedis);
      const cmdDelta = diffStats(info0, info1);
      results.lifecycle = {
        redis_commands_per_job: redisJob,
        redis_script_calls_last_job: Object.fromEntries(tcpCounted.calls),
        pg_round_trips_per_job_incl_bench_polling: stats(perJobPg),
        redis_info_commandstats_delta: cmdDelta,
        note: 'Postgres counts include the bench polling for completion (one SELECT every 20 ms); Redis counts are exact (each registry call is one EVALSHA).',
      };
      row(
        '6 cost',
        'Redis commands per job (submit→schedule→claim→start→finish→release)',
        redisJob,
        'cmd',
        '≤ 12',
        redisJob.p99 <= 12 ? 'met' : 'not met',
      );
      return null;
    }),
  );

  // 5. end to end on one agent with 96 CPUs. Before/after in one run, alternating: "before" is the claim
  // re-handing unstarted jobs at once and one statement per finish report (no batching).
  await resetCluster();
  const variants = [
    { name: 'before', overrides: { claimRedeliverySeconds: 0, reportBatchMax: 1 }, batch: false },
    { name: 'after', overrides: {}, batch: false },
    { name: 'batch', overrides: {}, batch: true },
  ];
  const e2e: { variant: string; all: number; ones: number; submit: number }[] = [];
  for (let r = 0; r < (SMALL ? 1 : 2); r++) {
    for (const variant of variants) {
      await withServer(
        registry,
        (url) =>
          withAgent(`bench-agent-e2e-${variant.name}-${r}`, url, async () => {
            const t0 = performance.now();
            const ones: number[] = [];
            const fours: number[] = [];
            const bodies = [
              ...Array.from({ length: SMALL ? 200 : 1000 }, () => ({ script: 'true', cpus: 1 })),
              ...Array.from({ length: SMALL ? 40 : 200 }, () => ({ script: 'sleep 0.1', cpus: 4 })),
            ];
            if (variant.batch) {
              // As a client with many jobs would: POST /api/v1/jobs/batch, 100 jobs per request, in order.
              for (let i = 0; i < bodies.length; i += 100) {
                const chunk = bodies.slice(i, i + 100);
                const ids = await submitBatch(url, chunk);
                for (const [k, id] of ids.entries()) (chunk[k]?.cpus === 1 ? ones : fours).push(id);
              }
            } else {
              let next = 0;
              await Promise.all(
                Array.from({ length: 16 }, async () => {
                  while (next < bodies.length) {
                    const i = next++;
                    const body = bodies[i] as { script: string; cpus: number };
                    const { id } = await submit(url, body);
                    (body.cpus === 1 ? ones : fours).push(id);
                  }
                }),
              );
            }
            const submitSeconds = (performance.now() - t0) / 1000;
            const onesDone = waitFinished(ones, 180_000).then(() => (performance.now() - t0) / 1000);
            await waitFinished([...ones, ...fours], 180_000);
            const all = (performance.now() - t0) / 1000;
            const [bad] = await query<{ n: string }>(
              db,
              sql`SELECT count(*) AS n FROM jobs WHERE state <> 'COMPLETED' AND name = 'job'`,
            );
            e2e.push({ variant: variant.name, all, ones: await onesDone, submit: submitSeconds });
            log(
              `  e2e ${variant.name} run ${r}: submitted in ${round(submitSeconds)} s, 1-CPU jobs done ${round(await onesDone)} s, all ${round(all)} s, not completed: ${bad?.n}`,
            );
          }),
        variant.overrides,
      );
      await exec(sql`DELETE FROM jobs`);
    }
  }
  const of = (name: string) => e2e.filter((e) => e.variant === name);
  const ones = (name: string) => stats(of(name).map((e) => e.ones));
  const all = (name: string) => stats(of(name).map((e) => e.all));
  const submitting = (name: string) => stats(of(name).map((e) => e.submit));
  results.end_to_end_s = {
    runs: e2e,
    variants: Object.fromEntries(
      variants.map((v) => [
        v.name,
        { ...v, ones: ones(v.name), all: all(v.name), submit: submitting(v.name) },
      ]),
    ),
    submit_concurrency: 16,
    batch_size: 100,
    submit_rate_limit: 'off',
  };
  const n1 = SMALL ? 200 : 1000;
  const n4 = SMALL ? 40 : 200;
  const best = ones('batch');
  row(
    '5 end to end',
    `${n1} × 1-CPU true (first submit → last COMPLETED), 1 agent 96 CPUs, submitted by /jobs/batch (100 per request)`,
    best,
    's',
    '< 10 s',
    best.p99 < 10 ? 'met' : 'not met',
  );
  row('5 end to end', `  + ${n4} × 4-CPU sleep 0.1: all ${n1 + n4} jobs`, all('batch'), 's');
  row('5 end to end', '  of which submitting them all', submitting('batch'), 's');
  row('5 end to end', `  ${n1} × 1-CPU, one /jobs/submit each (16 in flight)`, ones('after'), 's');
  row('5 end to end', '    of which submitting them all', submitting('after'), 's');
  row(
    '5 end to end',
    `  before (claim re-hands at once, one statement per report), one /jobs/submit each`,
    ones('before'),
    's',
  );
  row(
    '5 end to end',
    '  before / after (1-CPU jobs)',
    null,
    '',
    '',
    '',
    `×${round(ones('before').median / ones('after').median, 2)} (server changes), ×${round(ones('before').median / best.median, 2)} (and batch submission)`,
  );

  // 3 again through the Upstash REST bridge
  log('3. submit-to-start latency through the Upstash REST bridge');
  await resetCluster();
  const bridge = await startUpstashBridge({ redisUrl: REDIS_URL });
  const upstash = new RedisRegistryStore(createUpstashScripts({ url: bridge.url, token: bridge.token }));
  await withServer(upstash, (url) =>
    withAgent('bench-agent-upstash', url, async () => {
      const lat = stats(await startLatency(url, N));
      results.submit_to_start_upstash_ms = lat;
      row(
        '3 submit→start',
        `Node server + Upstash REST bridge, ${N} jobs 25 ms apart`,
        lat,
        'ms',
        'p50 < 100 ms, p99 < 1 s',
        lat.median < 100 && lat.p99 < 1000 ? 'met' : 'not met',
      );
      const isolated = stats(await startLatency(url, ISOLATED, 1200));
      results.submit_to_start_upstash_isolated_ms = isolated;
      row(
        '3 submit→start',
        `  ${ISOLATED} jobs 1.2 s apart (agent waiting in its long poll)`,
        isolated,
        'ms',
      );
    }),
  );
  await bridge.close();
  await scenarioWorkerLatency(N);
}

/**
 * Submit→start through the Worker bundled by wrangler, in workerd (Miniflare), with its default claim
 * settings, against the bench Postgres through the Neon driver (WebSocket proxy) and Redis through the
 * Upstash REST bridge. Two isolates: the agent long-polls one; jobs are submitted to the same isolate (its
 * claim is woken at once) and to the other (the claim finds the job on its next poll).
 */
async function scenarioWorkerLatency(n: number) {
  log('3. submit-to-start latency through the Worker in workerd');
  await resetCluster();
  const ADMIN = 'bench-admin-token-0123456789abcdefghijkl';
  const bundle = bundleWorker();
  const bridge = await startUpstashBridge({ redisUrl: REDIS_URL });
  const neonProxy = await startNeonProxy();
  const isolates: Miniflare[] = [];
  const urls: string[] = [];
  try {
    for (let i = 0; i < 2; i++) {
      const mf = new Miniflare({
        // As wrangler runs it: the text modules of the API reference (Swagger UI) and the compatibility date.
        ...workerModules(bundle),
        host: '127.0.0.1',
        port: 0,
        bindings: {
          DATABASE_URL: PG_URL,
          UPSTASH_REDIS_REST_URL: bridge.url,
          UPSTASH_REDIS_REST_TOKEN: bridge.token,
          NEON_WS_PROXY: neonProxy.url,
          ADMIN_TOKEN: ADMIN,
          CONDUCTOR_SUBMIT_RATE: '0',
        },
      });
      isolates.push(mf);
      urls.push((await mf.ready).toString().replace(/\/$/, ''));
    }
    const [here, there] = urls as [string, string];
    const auth = { authorization: `Bearer ${ADMIN}` };
    const created = await fetch(`${here}/api/v1/tokens`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...auth },
      body: JSON.stringify({ name: 'bench-agents', scopes: ['agent'] }),
    });
    if (created.status !== 201) throw new Error(`token ${created.status}: ${await created.text()}`);
    const { token } = (await created.json()) as { token: string };
    const agent = new AgentProcess('bench-agent-workerd', here, {
      cpus: 96,
      entry: BUILT_AGENT,
      env: { CONDUCTOR_TOKEN: token },
    });
    await agent.registered();
    try {
      const m = Math.min(n, SMALL ? 20 : 100);
      const same = stats(await startLatency(here, m, 25, auth));
      results.submit_to_start_workerd_same_isolate_ms = same;
      row(
        '3 submit→start',
        `Worker in workerd (Miniflare), Neon driver + Upstash REST, ${m} jobs 25 ms apart, same isolate`,
        same,
        'ms',
        'p50 < 100 ms, p99 < 1 s',
        same.median < 100 && same.p99 < 1000 ? 'met' : 'not met',
      );
      const other = stats(await startLatency(there, m, 25, auth));
      results.submit_to_start_workerd_other_isolate_ms = other;
      row(
        '3 submit→start',
        '  submitted to another isolate (claim polls every CONDUCTOR_CLAIM_POLL_MS = 1 s)',
        other,
        'ms',
      );
    } finally {
      await agent.stop().catch(() => agent.kill9());
    }
  } finally {
    await Promise.all(isolates.map((mf) => mf.dispose()));
    await neonProxy.close();
    await bridge.close();
    // The Worker always needs tokens; the Node server scenarios after this one run without any.
    await exec(sql`DELETE FROM api_tokens`);
  }
}

async function commandstats(): Promise<Map<string, number>> {
  const text = await raw.info('commandstats');
  const m = new Map<string, number>();
  for (const line of text.split('\n')) {
    const r = /^cmdstat_([^:]+):calls=(\d+)/.exec(line.trim());
    if (r) m.set(r[1] as string, Number(r[2]));
  }
  return m;
}
function diffStats(a: Map<string, number>, b: Map<string, number>) {
  const out: Record<string, number> = {};
  for (const [k, v] of b) {
    const d = v - (a.get(k) ?? 0);
    if (d > 0 && k !== 'info') out[k] = d;
  }
  return out;
}

async function scenarioIdleAndFootprint() {
  log('6./7. idle agent for 60 s, then a job streaming 10 MB/s');
  await resetCluster();
  const IDLE_S = SMALL ? 20 : 60;
  await withServer(registry, async (url) => {
    const proxy = await countingProxy(url);
    try {
      await withAgent('bench-agent-idle', proxy.url, async (agent) => {
        await sleep(2000);
        const pid = agent.child.pid as number;
        proxy.counts.clear();
        tcpCounted.reset();
        const pg0 = pgCounter.statements;
        const info0 = await commandstats();
        const s0 = procSample(pid);
        const rss: number[] = [];
        for (let t = 0; t < IDLE_S; t++) {
          await sleep(1000);
          rss.push(procSample(pid).rssMiB);
        }
        const s1 = procSample(pid);
        const info1 = await commandstats();
        const perMin = 60 / IDLE_S;
        const idle = {
          seconds: IDLE_S,
          http_requests_per_min: proxy.total() * perMin,
          http_requests: Object.fromEntries(proxy.counts),
          redis_commands_per_min: tcpCounted.total() * perMin,
          redis_calls: Object.fromEntries(tcpCounted.calls),
          redis_commandstats_delta_server_wide: diffStats(info0, info1),
          pg_round_trips_per_min: (pgCounter.statements - pg0) * perMin,
          agent_cpu_percent: ((s1.cpuSeconds - s0.cpuSeconds) / IDLE_S) * 100,
          agent_rss_mib: stats(rss),
        };
        results.idle_agent = idle;
        row(
          '6 cost',
          'idle agent: HTTP requests per minute',
          null,
          '',
          '≤ 4',
          idle.http_requests_per_min <= 4 ? 'met' : 'not met',
          `${round(idle.http_requests_per_min, 1)} (${Object.entries(idle.http_requests)
            .map(([k, v]) => `${v}× ${k}`)
            .join(', ')})`,
        );
        const agentRedis =
          ((tcpCounted.calls.get('touchWorker') ?? 0) + (tcpCounted.calls.get('putWorker') ?? 0)) * perMin;
        Object.assign(idle, { redis_commands_per_min_caused_by_the_agent: agentRedis });
        row(
          '6 cost',
          'idle agent: Redis commands per minute caused by the agent (heartbeats)',
          null,
          '',
          '≤ 6',
          agentRedis <= 6 ? 'met' : 'not met',
          `${round(agentRedis, 1)}`,
        );
        row(
          '6 cost',
          '  + control-plane timers (backstop every 5 s), whatever the number of agents',
          null,
          '',
          '',
          '',
          `${round(idle.redis_commands_per_min - agentRedis, 1)} (${Object.entries(idle.redis_calls)
            .filter(([k]) => k !== 'touchWorker' && k !== 'putWorker')
            .map(([k, v]) => `${v}× ${k}`)
            .join(', ')})`,
        );
        row(
          '6 cost',
          'idle agent: Postgres round trips per minute',
          null,
          '',
          '',
          '',
          `${round(idle.pg_round_trips_per_min, 1)}`,
        );
        row(
          '7 footprint',
          `idle agent (built package) over ${IDLE_S} s: RSS`,
          idle.agent_rss_mib,
          'MiB',
          '',
          '',
          `${round(idle.agent_rss_mib.median, 1)} MiB RSS, ${round(idle.agent_cpu_percent, 2)}% CPU`,
        );

        // 7. one job writing ~10 MB/s for ~10 s
        const seconds = SMALL ? 5 : 10;
        const script = `for i in $(seq ${seconds * 10}); do head -c 1048576 /dev/zero | tr '\\0' 'x'; echo; sleep 0.1; done`;
        proxy.counts.clear();
        const walLsn = async () =>
          (await query<{ lsn: string }>(db, sql`SELECT pg_current_wal_lsn()::text AS lsn`))[0]?.lsn;
        const wal0 = await walLsn().catch(() => undefined);
        const a0 = procSample(pid);
        const t0 = performance.now();
        const { id } = await submit(url, { script, cpus: 1, name: 'stream' });
        const rssS: number[] = [];
        const cpuS: number[] = [];
        let prev = a0;
        let prevT = t0;
        for (;;) {
          await sleep(500);
          const s = procSample(pid);
          const now = performance.now();
          cpuS.push(((s.cpuSeconds - prev.cpuSeconds) / ((now - prevT) / 1000)) * 100);
          rssS.push(s.rssMiB);
          prev = s;
          prevT = now;
          const [j] = await query<{ state: string }>(db, sql`SELECT state FROM jobs WHERE id = ${id}`);
          if (j && j.state !== 'RUNNING' && j.state !== 'PENDING') break;
          if (now - t0 > 120_000) throw new Error('streaming job did not end');
        }
        const wall = (performance.now() - t0) / 1000;
        const [outRow] = await query<{ bytes: string }>(
          db,
          sql`SELECT coalesce(sum(bytes), 0) AS bytes FROM job_output WHERE job_id = ${id}`,
        ).catch(() => [{ bytes: '?' }]);
        // Postgres WAL written meanwhile (the whole server's, so also the agent's other reports): the cost of
        // storing output. This output (x's) compresses well; incompressible output costs more per byte.
        const wal1 = await walLsn().catch(() => undefined);
        const [walRow] =
          wal0 && wal1
            ? await query<{ bytes: string }>(
                db,
                sql`SELECT pg_wal_lsn_diff(${wal1}::pg_lsn, ${wal0}::pg_lsn) AS bytes`,
              )
            : [];
        const walBytes = walRow ? Number(walRow.bytes) : null;
        const outputBytes = Number(outRow?.bytes);
        const walPerOutputByte = walBytes !== null && outputBytes > 0 ? walBytes / outputBytes : null;
        results.streaming_agent = {
          seconds: wall,
          bytes_reported: outRow?.bytes,
          wal_bytes: walBytes,
          wal_per_output_byte: walPerOutputByte,
          agent_cpu_percent: stats(cpuS),
          agent_rss_mib: stats(rssS),
          http_requests: Object.fromEntries(proxy.counts),
        };
        row('7 footprint', `agent while one job streams ~10 MB/s for ${seconds} s: CPU %`, stats(cpuS), '%');
        row('7 footprint', '  RSS', stats(rssS), 'MiB');
        if (walPerOutputByte !== null) {
          row(
            '7 footprint',
            '  Postgres WAL per output byte stored',
            null,
            '',
            '',
            '',
            `${round(walPerOutputByte, 3)}`,
          );
        }
      });
    } finally {
      await proxy.close();
    }
  });
}

// ---------------------------------------------------------------- 8. start-up of `npm start`
async function scenarioStartup() {
  log('8. start-up: the real `npm start` (zero-setup), first and second start (bench/startup.ts)');
  const startup = await measureStartup(SMALL ? 1 : 3, (line) => log(`  ${line}`));
  results.startup = startup;
  for (const [name, s] of [
    ['first start (empty data directory)', startup.first_start],
    ['second start (same directory)', startup.second_start],
  ] as const) {
    row(
      '8 start-up',
      `npm start, ${name}: spawn → first 200 on /api/v1/health`,
      null,
      '',
      '< 3 s',
      s.health_ms < 3000 ? 'met' : 'not met',
      `${s.health_ms} ms (${s.cpu_seconds_to_health} CPU-s); agent registered ${s.agent_registered_ms} ms`,
    );
    row(
      '8 start-up',
      `  RSS settled: server / its agent / all npm start runs`,
      null,
      '',
      '',
      '',
      `${s.server_rss_mb} / ${s.agent_rss_mb} / ${s.tree_rss_mb} MB`,
    );
  }
}

// ---------------------------------------------------------------- 9. pipelines
/**
 * A dependency chain through `npm start` and the packaged agent (bench/dependency-chain.ts): 1,000 jobs of
 * `true`, each afterok on the one before; from the first start to the last end, and per link.
 */
async function scenarioPipelines() {
  log('9. pipelines: a dependency chain');
  const depth = SMALL ? 100 : 1000;
  const chain = await runDependencyChain({
    depth,
    databaseUrl: PG_URL.replace(/\/[^/]+$/, '/conductor_bench_chain'),
    redisUrl: 'redis://127.0.0.1:6379/14',
  });
  results.dependency_chain = { ...chain, link_ms: stats(chain.link_ms) };
  const goal = SMALL ? 3 : 30;
  row(
    '9 pipelines',
    `${depth.toLocaleString('en')}-deep afterok chain of \`true\` jobs (npm start + packaged agent): first start to last end`,
    null,
    '',
    `< ${goal} s`,
    chain.seconds < goal ? 'met' : 'not met',
    `${round(chain.seconds, 1)} s (${Object.entries(chain.states)
      .map(([state, n]) => `${n} ${state}`)
      .join(', ')})`,
  );
  row('9 pipelines', "  a job's end to its dependant's start", stats(chain.link_ms), 'ms', '< 30 ms');
}

// ---------------------------------------------------------------- 10. serverless cost
/**
 * The Workers deployment's cost from counted events (bench/serverless-cost.ts): 100 idle agents (small: 20)
 * for 10 minutes (small: 2), 10,000 jobs a day, a burst of 10,000 (small: 1,000), submit→start via another
 * isolate; polling agents and channel agents in the same run. Also writes bench/results-serverless.json.
 */
async function scenarioServerlessCost() {
  results.serverless_cost = await runServerlessCost({
    small: SMALL,
    pgUrl: PG_URL,
    redisUrl: REDIS_URL,
    sql: async (text, params) => (await bulkPool.query(text, params)).rows,
    reset: resetCluster,
    agentEntry: BUILT_AGENT,
    log,
    row: (scenario, measure, goal, met, value) => row(scenario, measure, null, '', goal, met, value),
  });
}

// ---------------------------------------------------------------- run
const scenarios: [string, () => Promise<void>][] = [
  ['1', scenarioResources],
  ['2', scenarioScheduling],
  ['2a', scenarioArrays],
  ['2m', scenarioMixedScheduling],
  ['2f', scenarioFragmentation],
  ['4', scenarioHeartbeats],
  ['3', scenarioLatencyAndE2E],
  ['6', scenarioIdleAndFootprint],
  ['8', scenarioStartup],
  ['9', scenarioPipelines],
  ['10', scenarioServerlessCost],
];
const failures: Record<string, string> = {};
for (const [name, scenario] of scenarios) {
  if (!runs(name)) continue;
  try {
    await scenario();
    await settle();
  } catch (error) {
    failures[name] = error instanceof Error ? (error.stack ?? error.message) : String(error);
    log(`scenario ${name} failed: ${failures[name]}`);
  }
}
results.failures = failures;
results.load_average_at_each_step = loads;
results.table = table;
results.total_seconds = Math.round((Date.now() - startedAt) / 1000);

const widths = ['scenario', 'measure', 'median', 'p99', 'goal', 'met'].map((k) =>
  Math.max(k.length, ...table.map((r) => String(r[k as keyof (typeof table)[0]]).length)),
);
const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i] as number)).join(' | ')} |`;
console.log(
  `\nConductor bench — ${results.date}, ${results.cores} cores (${results.cpu_model}), Node ${versions.node}, Postgres ${versions.postgres}, Redis ${versions.redis}\n`,
);
console.log(line(['scenario', 'measure', 'median', 'p99', 'goal', 'met']));
console.log(line(widths.map((w) => '-'.repeat(w))));
for (const r of table) console.log(line([r.scenario, r.measure, r.median, r.p99, r.goal, r.met]));
// A partial run leaves the full run's results.json as it is: the dashboard alone writes results-dashboard.json,
// any other BENCH_ONLY results-only-<scenarios>.json (BENCH_ONLY=2m: results-only-2m.json).
const resultsFile = DASHBOARD_ONLY
  ? 'results-dashboard.json'
  : only
    ? `results-only-${only.join('-')}.json`
    : 'results.json';
writeFileSync(new URL(`./${resultsFile}`, import.meta.url), `${JSON.stringify(results, null, 2)}\n`);
log(`done: bench/${resultsFile} (${results.total_seconds} s)`);

await tcp.close();
await raw.flushdb();
await raw.quit();
await conn.close();
await bulkPool.end();
{
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  await admin.query(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`);
  await admin.end();
}
process.exit(Object.keys(failures).length > 0 ? 1 : 0);
