/**
 * What PGlite's shared_buffers costs and buys the local cluster (db/pglite.ts, PGLITE_SHARED_BUFFERS): for
 * each value, in a process of its own, a copy of the build's data directory (dist/pglite-pgdata: run
 * `npm run build` first) is opened, then
 *   - 2,000 submissions one at a time (as over HTTP; each asks for a scheduling pass, as in the server),
 *     then passes until nothing more is placed (50 workers of 32 CPUs: 1,600 jobs placed in all);
 *   - 100,000 more jobs in bulk, then what reads a table larger than the buffers: 3 full scans (jobs per
 *     state) and 20 first pages of the job list of one state.
 * Prints open time, each step's time and the process's RSS at the end, per value and round.
 *
 *   npx tsx bench/pglite-buffers.ts              # BUFFERS=8MB,16MB,32MB,128MB ROUNDS=3
 */
import { execFileSync } from 'node:child_process';
import { cpSync, mkdtempSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PGlite } from '@electric-sql/pglite';
import { sql } from 'drizzle-orm';
import { drizzle } from 'drizzle-orm/pglite';
import { BUILT_PGDATA_TEMPLATE } from '../db/pglite.ts';
import * as schema from '../db/schema.ts';
import { createContext } from '../functions/domain/context.ts';
import { listJobs, listJobsInput, submitJob } from '../functions/domain/jobs.ts';
import { createLocalNotifier } from '../functions/domain/notifier.ts';
import { type Database, DEFAULT_CONFIG } from '../functions/domain/ports.ts';
import { runSchedulingPass } from '../functions/domain/scheduler.ts';
import { query } from '../functions/domain/sql.ts';
import { registerWorker } from '../functions/domain/workers.ts';
import { MemoryRegistryStore } from '../functions/registry/memory-store.ts';

const SELF = fileURLToPath(import.meta.url);

async function one(buffers: string) {
  const dir = mkdtempSync(join(tmpdir(), 'pglite-buffers-'));
  try {
    cpSync(BUILT_PGDATA_TEMPLATE, join(dir, 'pgdata'), { recursive: true });
    const result: Record<string, number | string> = { shared_buffers: buffers };
    let t = performance.now();
    const lap = (name: string) => {
      result[name] = Math.round(performance.now() - t);
      t = performance.now();
    };
    const client = await PGlite.create({
      dataDir: join(dir, 'pgdata'),
      startParams: [...PGlite.defaultStartParams, '-c', `shared_buffers=${buffers}`],
    });
    lap('open_ms');
    const db = drizzle(client, { schema }) as unknown as Database;
    const background: Promise<unknown>[] = [];
    const ctx = createContext({
      db,
      registry: new MemoryRegistryStore(),
      notifier: createLocalNotifier(),
      logger: { info() {}, warn() {}, error() {} },
      config: { ...DEFAULT_CONFIG, submitRatePerSecond: 0 },
      defer: (work) => void background.push(work.catch(() => {})),
    });
    for (let i = 0; i < 50; i++)
      await registerWorker(ctx, { worker_id: `w${i}`, hostname: `w${i}`, cpus: 32 });
    await Promise.all(background);
    t = performance.now();
    for (let i = 0; i < 2000; i++) await submitJob(ctx, { script: 'true', cpus: 1, name: `j${i}` });
    lap('submit_2000_ms');
    await Promise.all(background);
    t = performance.now();
    let placed = 0;
    for (let r = await runSchedulingPass(ctx); r.placed > 0; r = await runSchedulingPass(ctx))
      placed += r.placed;
    lap('schedule_ms');
    const [assigned] = await query<{ n: number }>(
      db,
      sql`SELECT count(*)::int AS n FROM jobs WHERE state <> 'PENDING'`,
    );
    result.placed = Number(assigned?.n); // by the passes the submissions asked for, and by the loop above
    result.placed_by_loop = placed;
    await db.execute(sql`INSERT INTO jobs (name, script, cpus, state)
      SELECT 'b', 'true', 1, (ARRAY['COMPLETED', 'FAILED', 'CANCELLED', 'PENDING'])[1 + g % 4]
      FROM generate_series(1, 100000) g`);
    lap('insert_100k_ms');
    const [size] = await query<{ mb: number }>(
      db,
      sql`SELECT (pg_total_relation_size('jobs') / 1048576)::int AS mb`,
    );
    result.jobs_table_mb = Number(size?.mb);
    t = performance.now();
    for (let i = 0; i < 3; i++) await db.execute(sql`SELECT state, count(*) FROM jobs GROUP BY state`);
    lap('scan_3x_ms');
    for (let i = 0; i < 20; i++) await listJobs(db, listJobsInput.parse({ state: 'FAILED', limit: 100 }));
    lap('list_20x_ms');
    result.rss_mb = Math.round(process.memoryUsage().rss / 1048576);
    await client.close();
    return result;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.env.PGLITE_BUFFERS_ONE) {
  console.log(JSON.stringify(await one(process.env.PGLITE_BUFFERS_ONE)));
} else {
  const values = (process.env.BUFFERS ?? '8MB,16MB,32MB,128MB').split(',');
  for (let round = 1; round <= Number(process.env.ROUNDS ?? 3); round++) {
    for (const value of values) {
      const out = execFileSync(process.execPath, ['--import', 'tsx', SELF], {
        env: { ...process.env, PGLITE_BUFFERS_ONE: value },
        encoding: 'utf8',
      });
      console.log(
        `round ${round} ${out.trim()} (load average ${loadavg()
          .map((x) => x.toFixed(2))
          .join(' ')})`,
      );
    }
  }
}
