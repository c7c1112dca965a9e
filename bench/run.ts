/**
 * `npm run bench`: the performance scenarios of issue 7 against the local Postgres (127.0.0.1:5432, its own
 * database `conductor_bench`, dropped at the end) and Redis (database 12, flushed). Prints a table and writes
 * bench/results.json. Sizes: BENCH_SCALE=small for a quick smoke run.
 */
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { loadavg, cpus as osCpus } from 'node:os';
import { sql } from 'drizzle-orm';
import { drizzle } from 'drizzle-orm/node-postgres';
import { Redis } from 'ioredis';
import pg from 'pg';
import { connectNodePg, ensureDatabase, migrateNodePg } from '../db/node-postgres.ts';
import { readAllocatedCpus, readAllocationSnapshot } from '../functions/domain/cache.ts';
import { createContext } from '../functions/domain/context.ts';
import { listLiveWorkers } from '../functions/domain/dashboard.ts';
import { createLocalNotifier } from '../functions/domain/notifier.ts';
import { DEFAULT_CONFIG, type RegistryStore } from '../functions/domain/ports.ts';
import { runSchedulingPass } from '../functions/domain/scheduler.ts';
import { pgArray, query } from '../functions/domain/sql.ts';
import { heartbeatWorker } from '../functions/domain/workers.ts';
import { createIoredisScripts } from '../functions/node/ioredis.ts';
import { startServer } from '../functions/node/server.ts';
import { RedisRegistryStore } from '../functions/registry/redis-store.ts';
import { createUpstashScripts } from '../functions/registry/upstash.ts';
import { AgentProcess } from '../test/support/agent-process.ts';
import { startUpstashBridge } from '../test/support/upstash-bridge.ts';
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

const SMALL = process.env.BENCH_SCALE === 'small';
const PG_URL = process.env.BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/conductor_bench';
const REDIS_URL = process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379/12';
const only = process.env.BENCH_ONLY?.split(',');
const runs = (s: string) => !only || only.includes(s);
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
async function scenarioResources() {
  log('1. resource query and dashboard');
  await resetCluster();
  const server = await startServer(
    { db, registry, notifier: createLocalNotifier(), logger: silent, config },
    { port: 0, host: '127.0.0.1', timers: false },
  );
  const out: Record<string, unknown>[] = [];
  const historySizes = SMALL ? [1000, 20_000] : [1000, 100_000, 1_000_000];
  const workerCounts = SMALL ? [10, 1000] : [10, 1000, 10_000];
  let have = 0;
  for (const size of historySizes) {
    // History: finished jobs with released allocations; 1 in 100 RUNNING with a live allocation.
    await exec(sql`INSERT INTO jobs (name, script, cpus, state, node, exit_code, end_time)
      SELECT 'h', 'true', 1 + g % 8, CASE WHEN g % 100 = 0 THEN 'RUNNING' WHEN g % 10 = 1 THEN 'FAILED' ELSE 'COMPLETED' END,
             'node-' || lpad((1 + g % 10)::text, 5, '0'), '0:0', now()
      FROM generate_series(${have + 1}::int, ${size}::int) g`);
    await exec(sql`INSERT INTO resource_allocations (job_id, allocated_cpus, node_name, released)
      SELECT id, cpus, node, state <> 'RUNNING' FROM jobs WHERE id > ${have}`);
    await exec(sql`VACUUM ANALYZE jobs`);
    await exec(sql`VACUUM ANALYZE resource_allocations`);
    have = size;
    const snap = await readAllocationSnapshot(db);
    await registry.setAllocationSnapshot(snap.allocated, snap.version);
    const cacheGet = await timeMany(500, () => registry.getAllocatedCpus());
    const sumSql = await timeMany(200, () =>
      db.execute(sql`SELECT SUM(allocated_cpus) FROM resource_allocations WHERE released = false`),
    );
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
    out.push({
      rows: size,
      cache_get_ms: cacheGet,
      sql_sum_ms: sumSql,
      jobs_group_by_ms: groupBy,
      live_states_count_ms: liveStates,
    });
    row(
      '1 resources',
      `allocated CPUs: cache GET, ${size.toLocaleString('en')} allocation rows`,
      cacheGet,
      'ms',
    );
    row(
      '1 resources',
      `allocated CPUs: SQL SUM, ${size.toLocaleString('en')} rows (1% unreleased)`,
      sumSql,
      'ms',
    );
    row('1 resources', `jobs GROUP BY state over ${size.toLocaleString('en')} jobs`, groupBy, 'ms');
    row(
      '1 resources',
      `proposed: PENDING/RUNNING counts only (index), ${size.toLocaleString('en')} jobs`,
      liveStates,
      'ms',
    );
    for (const w of workerCounts) {
      if (size !== historySizes[historySizes.length - 1] && w === 10_000) continue; // 10k workers: largest history only
      await removeWorkers();
      await addWorkers(w);
      await exec(
        sql`UPDATE jobs SET node = 'node-' || lpad((1 + id % ${w})::text, 5, '0') WHERE state = 'RUNNING'`,
      );
      const n = w >= 10_000 ? 50 : 200;
      const dash = await timeMany(n, async () => {
        const res = await fetch(`${server.url}/api/v1/dashboard`);
        await res.arrayBuffer();
        if (!res.ok) throw new Error(`dashboard ${res.status}`);
      });
      const workersPart = await timeMany(Math.min(n, 50), () => listLiveWorkers(ctx));
      const allocPart = await timeMany(Math.min(n, 50), () => readAllocatedCpus(ctx));
      // Proposed: the running-job counts in one grouped pass over the partial index, not one subquery per worker.
      const proposedWorkers = await timeMany(Math.min(n, 50), async () => {
        const live = await registry.liveWorkerIds();
        await db.execute(sql`SELECT w.id, w.hostname, w.cpus, w.allocated_cpus, w.status, w.last_heartbeat, w.registered_at,
                 coalesce(r.n, 0) AS running_jobs
          FROM workers w
          LEFT JOIN (SELECT node, count(*) AS n FROM jobs WHERE state = 'RUNNING' GROUP BY node) r ON r.node = w.id
          WHERE w.id = ANY(${pgArray(live)}::text[]) ORDER BY w.id`);
      });
      out.push({
        rows: size,
        workers: w,
        dashboard_ms: dashboard(dash),
        list_live_workers_ms: workersPart,
        proposed_live_workers_ms: proposedWorkers,
        allocated_ms: allocPart,
      });
      const goal = w === 1000 ? 'p99 < 10 ms' : '';
      row(
        '1 dashboard',
        `GET /api/v1/dashboard, ${w.toLocaleString('en')} workers, ${size.toLocaleString('en')} jobs`,
        dash,
        'ms',
        goal,
        goal ? (dash.p99 < 10 ? 'met' : 'not met') : '',
      );
      row(
        '1 dashboard',
        `  of which live workers query (${w.toLocaleString('en')} workers)`,
        workersPart,
        'ms',
      );
      row('1 dashboard', '  proposed live workers query (one grouped join)', proposedWorkers, 'ms');
    }
  }
  await server.close();
  await removeWorkers();
  results.resources = out;
}
const dashboard = (s: Stats) => s;

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
  await removeWorkers();
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
async function submit(url: string, body: unknown): Promise<{ id: number; at: number }> {
  const res = await fetch(`${url}/api/v1/jobs/submit`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  const at = performance.timeOrigin + performance.now();
  if (res.status !== 201) throw new Error(`submit ${res.status}: ${await res.text()}`);
  return { id: ((await res.json()) as { id: number }).id, at };
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

async function startLatency(url: string, n: number, spacingMs = 25): Promise<number[]> {
  const submitted: { id: number; at: number }[] = [];
  for (let i = 0; i < n; i++) {
    submitted.push(await submit(url, { script: 'date +%s.%N', cpus: 1, name: 'latency' }));
    await sleep(spacingMs);
  }
  await waitFinished(submitted.map((s) => s.id));
  const latencies: number[] = [];
  for (const s of submitted) {
    const res = await fetch(`${url}/api/v1/jobs/${s.id}/logs`);
    const body = (await res.json()) as { stdout: { content: string } };
    const started = Number(body.stdout.content.split('\n')[0]) * 1000;
    latencies.push(started - s.at);
  }
  return latencies;
}

async function withServer<T>(reg: RegistryStore, work: (url: string) => Promise<T>): Promise<T> {
  const server = await startServer(
    { db, registry: reg, notifier: createLocalNotifier(), logger: silent, config },
    { port: 0, host: '127.0.0.1' },
  );
  try {
    return await work(server.url);
  } finally {
    await server.close();
  }
}

async function withAgent<T>(
  name: string,
  url: string,
  work: (agent: AgentProcess) => Promise<T>,
): Promise<T> {
  const agent = new AgentProcess(name, url, { cpus: 96 });
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
  await withServer(registry, (url) =>
    withAgent('bench-agent-tcp', url, async () => {
      const lat = stats(await startLatency(url, N));
      results.submit_to_start_tcp_ms = lat;
      row(
        '3 submit→start',
        `Node server + TCP Redis, ${N} jobs 25 ms apart, 1 agent`,
        lat,
        'ms',
        'p50 < 100 ms, p99 < 1 s',
        lat.median < 100 && lat.p99 < 1000 ? 'met' : 'not met',
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

  // 5. end to end on one agent with 96 CPUs
  await resetCluster();
  const e2e: { all: number; ones: number }[] = [];
  for (let r = 0; r < (SMALL ? 1 : 2); r++) {
    await withServer(registry, (url) =>
      withAgent(`bench-agent-e2e-${r}`, url, async () => {
        const t0 = performance.now();
        const ones: number[] = [];
        const fours: number[] = [];
        const bodies = [
          ...Array.from({ length: SMALL ? 200 : 1000 }, () => ({ script: 'true', cpus: 1 })),
          ...Array.from({ length: SMALL ? 40 : 200 }, () => ({ script: 'sleep 0.1', cpus: 4 })),
        ];
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
        const submitSeconds = (performance.now() - t0) / 1000;
        const onesDone = waitFinished(ones, 180_000).then(() => (performance.now() - t0) / 1000);
        await waitFinished([...ones, ...fours], 180_000);
        const all = (performance.now() - t0) / 1000;
        const [bad] = await query<{ n: string }>(
          db,
          sql`SELECT count(*) AS n FROM jobs WHERE state <> 'COMPLETED' AND name = 'job'`,
        );
        e2e.push({ all, ones: await onesDone });
        log(
          `  e2e run ${r}: submitted in ${round(submitSeconds)} s, 1-CPU jobs done ${round(await onesDone)} s, all ${round(all)} s, not completed: ${bad?.n}`,
        );
      }),
    );
    await exec(sql`DELETE FROM jobs`);
  }
  const onesS = stats(e2e.map((e) => e.ones));
  const allS = stats(e2e.map((e) => e.all));
  results.end_to_end_s = {
    runs: e2e,
    ones: onesS,
    all: allS,
    submit_concurrency: 16,
    submit_rate_limit: 'off',
  };
  row(
    '5 end to end',
    `${SMALL ? 200 : 1000} × 1-CPU true (first submit → last COMPLETED), 1 agent 96 CPUs`,
    onesS,
    's',
    '< 10 s',
    onesS.p99 < 10 ? 'met' : 'not met',
  );
  row('5 end to end', `  + ${SMALL ? 40 : 200} × 4-CPU sleep 0.1: all ${SMALL ? 240 : 1200} jobs`, allS, 's');

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
  row('3 submit→start', 'Worker in workerd (Miniflare)', null, '', '', 'not measured', 'not measured (time)');
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
          `idle agent over ${IDLE_S} s: RSS (tsx loader included)`,
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
        results.streaming_agent = {
          seconds: wall,
          bytes_reported: outRow?.bytes,
          agent_cpu_percent: stats(cpuS),
          agent_rss_mib: stats(rssS),
          http_requests: Object.fromEntries(proxy.counts),
        };
        row('7 footprint', `agent while one job streams ~10 MB/s for ${seconds} s: CPU %`, stats(cpuS), '%');
        row('7 footprint', '  RSS', stats(rssS), 'MiB');
      });
    } finally {
      await proxy.close();
    }
  });
}

// ---------------------------------------------------------------- run
const scenarios: [string, () => Promise<void>][] = [
  ['1', scenarioResources],
  ['2', scenarioScheduling],
  ['4', scenarioHeartbeats],
  ['3', scenarioLatencyAndE2E],
  ['6', scenarioIdleAndFootprint],
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
writeFileSync(new URL('./results.json', import.meta.url), `${JSON.stringify(results, null, 2)}\n`);
log(`done: bench/results.json (${results.total_seconds} s)`);

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
void execFileSync;
process.exit(Object.keys(failures).length > 0 ? 1 : 0);
