/**
 * What one scheduling pass costs on the production drivers: Postgres round trips through the Neon driver
 * (counted by the local WebSocket proxy) and Redis commands through @upstash/redis (counted by the REST
 * bridge), with 100 live workers of 96 CPUs and 1,000 pending jobs of 1-8 CPUs.
 *
 *   npx tsx bench/scheduling-pass-cost.ts     (needs the local Postgres and Redis)
 */
import { sql } from 'drizzle-orm';
import pg from 'pg';
import { WebSocket } from 'ws';
import { configureNeonForLocal, connectNeonPool } from '../db/neon.ts';
import { ensureDatabase, migrateNodePg } from '../db/node-postgres.ts';
import { createContext } from '../functions/domain/context.ts';
import { createLocalNotifier } from '../functions/domain/notifier.ts';
import { DEFAULT_CONFIG } from '../functions/domain/ports.ts';
import { runSchedulingPass } from '../functions/domain/scheduler.ts';
import { registerWorker } from '../functions/domain/workers.ts';
import { RedisRegistryStore } from '../functions/registry/redis-store.ts';
import { createUpstashScripts } from '../functions/registry/upstash.ts';
import { startNeonProxy } from '../test/support/neon-proxy.ts';
import { startUpstashBridge } from '../test/support/upstash-bridge.ts';

const WORKERS = 100;
const JOBS = 1000;
const url = process.env.BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/conductor_bench_pass';
const redisUrl = process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379/11';

const admin = new pg.Client({ connectionString: url.replace(/\/[^/]+$/, '/postgres') });
await admin.connect();
await admin.query(`DROP DATABASE IF EXISTS ${new URL(url).pathname.slice(1)} WITH (FORCE)`);
await admin.end();
await ensureDatabase(url);
await migrateNodePg(url);

const proxy = await startNeonProxy();
configureNeonForLocal({ wsProxy: proxy.url, webSocketConstructor: WebSocket });
const neon = connectNeonPool(url);
const bridge = await startUpstashBridge({ redisUrl });
const registry = new RedisRegistryStore(createUpstashScripts({ url: bridge.url, token: bridge.token }));
const silent = { info() {}, warn() {}, error() {} };
const ctx = createContext({
  db: neon.db,
  registry,
  notifier: createLocalNotifier(),
  logger: silent,
  config: { ...DEFAULT_CONFIG, scheduleBatchSize: 1000 },
  defer(work) {
    background.push(work); // registrations ask for passes: let them finish before measuring
  },
});
const background: Promise<unknown>[] = [];

for (let i = 0; i < WORKERS; i++) {
  await registerWorker(ctx, {
    worker_id: `node-${String(i).padStart(3, '0')}`,
    hostname: `node-${i}`,
    cpus: 96,
  });
}
await Promise.allSettled(background);
await neon.db.execute(
  sql`INSERT INTO jobs (name, script, cpus) SELECT 'bench', 'true', 1 + (g % 8) FROM generate_series(1, ${JOBS}) g`,
);

proxy.resetStats();
bridge.commands.length = 0;
bridge.requests = 0;
const started = performance.now();
const result = await runSchedulingPass(ctx);
const ms = performance.now() - started;

const figures = {
  workers: WORKERS,
  pending_jobs: JOBS,
  placed: result.placed,
  postgres_round_trips: proxy.stats.roundTrips,
  postgres_connections_opened: proxy.stats.connections,
  redis_commands: bridge.commands.length,
  redis_http_requests: bridge.requests,
  redis_command_names: bridge.commands.map((c) => c[0]),
  pass_ms: Math.round(ms),
};
console.log(JSON.stringify(figures, null, 2));

await neon.close();
await proxy.close();
await bridge.close();
process.exit(0);
