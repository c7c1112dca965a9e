/**
 * `npm run dev:edge`: the Worker in `wrangler dev` (workerd) against this machine's Postgres and Redis, through
 * the same local bridges the tests use: a WebSocket proxy for the Neon driver and an Upstash-style REST
 * bridge for @upstash/redis. Point agents at http://127.0.0.1:8787; fire the crons with
 * `curl "http://127.0.0.1:8787/__scheduled?cron=*+*+*+*+*"` (the 5-minute sync: cron=%2A%2F5+*+*+*+*).
 */
import { spawn } from 'node:child_process';
import { ensureDatabase, migrateNodePg } from '../db/node-postgres.ts';
import { startNeonProxy } from '../test/support/neon-proxy.ts';
import { startUpstashBridge } from '../test/support/upstash-bridge.ts';
import { WRANGLER_ENV } from '../test/support/worker-bundle.ts';

const databaseUrl = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/conductor';
const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const port = process.env.PORT ?? '8787';

await ensureDatabase(databaseUrl).catch(() => {});
await migrateNodePg(databaseUrl);
const proxy = await startNeonProxy();
const bridge = await startUpstashBridge({ redisUrl });
console.log(`Neon WebSocket proxy on 127.0.0.1:${proxy.port}, Upstash REST bridge at ${bridge.url}`);

const vars: Record<string, string> = {
  DATABASE_URL: databaseUrl,
  UPSTASH_REDIS_REST_URL: bridge.url,
  UPSTASH_REDIS_REST_TOKEN: bridge.token,
  NEON_WS_PROXY: proxy.url,
};
const wrangler = spawn(
  process.execPath,
  [
    'node_modules/wrangler/bin/wrangler.js',
    'dev',
    '--test-scheduled',
    '--ip',
    '127.0.0.1',
    '--port',
    port,
    ...Object.entries(vars).flatMap(([name, value]) => ['--var', `${name}:${value}`]),
  ],
  { stdio: 'inherit', env: { ...process.env, ...WRANGLER_ENV }, detached: true },
);

const stop = async () => {
  if (wrangler.pid) {
    try {
      process.kill(-wrangler.pid, 'SIGTERM'); // wrangler dev runs workerd and esbuild: stop the whole group
    } catch {}
  }
  await Promise.allSettled([proxy.close(), bridge.close()]);
  process.exit(0);
};
process.on('SIGINT', () => void stop());
process.on('SIGTERM', () => void stop());
wrangler.on('exit', (code) => {
  void Promise.allSettled([proxy.close(), bridge.close()]).then(() => process.exit(code ?? 0));
});
