/**
 * The Node entry: `npm start`. Reads the environment, connects the database and the registry, and serves
 * the app. With no DATABASE_URL and no Redis it is the zero-setup local cluster: embedded Postgres (PGlite)
 * under CONDUCTOR_DATA_DIR, an in-process registry, and one local agent.
 *
 * The Postgres, Redis and Upstash clients are imported only when configured (dynamic imports: the build
 * splits them out of dist/server.mjs), so the zero-setup start does not load them.
 */
import { rmSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join, resolve } from 'node:path';
import { findLauncher, watchLauncher } from '../agent/src/launcher.ts';
import { connectPglite, migratePglite } from '../db/pglite.ts';
import { apiTokensExist } from './domain/auth.ts';
import { createLocalNotifier } from './domain/notifier.ts';
import type { Database, RateLimiter, RegistryStore } from './domain/ports.ts';
import { createConsoleLogger } from './logger.ts';
import type { WakeBus } from './node/channel-hub.ts';
import {
  embeddedAgentRunsJobsAsRoot,
  mintEmbeddedAgentToken,
  startEmbeddedAgent,
} from './node/embedded-agent.ts';
import { configFromEnv, isLoopback, parseNodeEnv } from './node/env.ts';
import { startServer } from './node/server.ts';
import { createSmtpMailer } from './node/smtp.ts';
import { MemoryRegistryStore } from './registry/memory-store.ts';

async function main() {
  const env = parseNodeEnv(process.env);
  const logger = createConsoleLogger(env.LOG_FORMAT);
  const config = configFromEnv(env);
  const dataDir = resolve(env.CONDUCTOR_DATA_DIR);
  const closers: (() => Promise<void>)[] = [];

  let db: Database;
  if (env.DATABASE_URL) {
    const { connectNodePg, ensureDatabase, migrateNodePg } = await import('../db/node-postgres.ts');
    await ensureDatabase(env.DATABASE_URL).catch(() => {});
    await migrateNodePg(env.DATABASE_URL);
    const pg = connectNodePg(env.DATABASE_URL);
    db = pg.db;
    closers.push(pg.close);
    logger.info(
      `Database: Postgres at ${new URL(env.DATABASE_URL).host}${new URL(env.DATABASE_URL).pathname}`,
    );
  } else {
    const lite = await connectPglite({ dataDir: join(dataDir, 'pgdata') });
    await migratePglite(lite);
    db = lite.db;
    closers.push(lite.close);
    // Tells `conductor token ...` (which opens the same PGlite directly) that this server holds it.
    const pidFile = join(dataDir, 'server.pid');
    writeFileSync(pidFile, `${process.pid}\n`);
    closers.push(async () => rmSync(pidFile, { force: true }));
    logger.info(`Database: embedded PGlite in ${join(dataDir, 'pgdata')} (set DATABASE_URL for Postgres)`);
  }

  // Beyond loopback, with no token at all, anyone who reaches the port could run code on every node.
  const loopback = isLoopback(env.HOST);
  const tokens = await apiTokensExist(db);
  if (!loopback && !tokens) {
    for (const close of closers.reverse()) await close().catch(() => {});
    throw new Error(
      `Refusing to listen on HOST=${env.HOST} with no API token: anyone who can reach it could run code on your nodes.\n` +
        'Create an admin token first (it talks to the same database: set DATABASE_URL, or CONDUCTOR_DATA_DIR for the local one):\n' +
        '  npx conductor token create --scope admin --name admin\n' +
        'and an agent token for each node (CONDUCTOR_TOKEN):\n' +
        '  npx conductor token create --scope agent --name worker-node-01\n' +
        'then start again. Or keep HOST=127.0.0.1 for a local cluster.',
    );
  }

  let registry: RegistryStore;
  let rateLimiter: RateLimiter | undefined;
  let bus: WakeBus | undefined;
  if (env.REDIS_URL) {
    const [{ createIoredisScripts }, { RedisRegistryStore }, { RedisRateLimiter }] = await Promise.all([
      import('./node/ioredis.ts'),
      import('./registry/redis-store.ts'),
      import('./registry/rate-limiter.ts'),
    ]);
    const redis = createIoredisScripts(env.REDIS_URL, {
      onError: (error) => logger.warn('Redis unavailable; serving from Postgres', { error: error.message }),
    });
    registry = new RedisRegistryStore(redis.scripts);
    rateLimiter = new RedisRateLimiter(redis.scripts);
    closers.push(redis.close);
    const { createRedisWakeBus } = await import('./node/redis-wake-bus.ts');
    const wakeBus = createRedisWakeBus(env.REDIS_URL);
    bus = wakeBus;
    closers.push(wakeBus.close);
    logger.info(`Registry: Redis at ${new URL(env.REDIS_URL).host}`);
  } else if (env.UPSTASH_REDIS_REST_URL && env.UPSTASH_REDIS_REST_TOKEN) {
    const [{ createUpstashScripts }, { RedisRegistryStore }, { RedisRateLimiter }] = await Promise.all([
      import('./registry/upstash.ts'),
      import('./registry/redis-store.ts'),
      import('./registry/rate-limiter.ts'),
    ]);
    const upstash = createUpstashScripts({
      url: env.UPSTASH_REDIS_REST_URL,
      token: env.UPSTASH_REDIS_REST_TOKEN,
    });
    registry = new RedisRegistryStore(upstash);
    rateLimiter = new RedisRateLimiter(upstash);
    logger.info(`Registry: Upstash at ${new URL(env.UPSTASH_REDIS_REST_URL).host}`);
  } else {
    registry = new MemoryRegistryStore();
    logger.info('Registry: in-process (set REDIS_URL for Redis)');
  }

  const server = await startServer(
    {
      db,
      registry,
      notifier: createLocalNotifier(),
      logger,
      config,
      ...(rateLimiter ? { rateLimiter } : {}),
      ...(env.CONDUCTOR_SMTP_URL
        ? { mailer: createSmtpMailer(env.CONDUCTOR_SMTP_URL, env.CONDUCTOR_MAIL_FROM) }
        : {}),
    },
    { port: env.PORT, host: env.HOST, channel: bus ? { bus } : {} },
  );
  if (env.CONDUCTOR_SMTP_URL) logger.info(`Mail: SMTP at ${new URL(env.CONDUCTOR_SMTP_URL).host}`);
  logger.info(`Conductor control plane listening on http://${env.HOST}:${server.port}`);
  if (!loopback) {
    logger.info('Listening beyond loopback: every request but GET /api/v1/health needs an API token');
  } else if (tokens) {
    logger.info('API tokens exist: every request but GET /api/v1/health needs one (loopback only)');
  } else {
    logger.info(
      'Open on loopback only: no API token exists, so the API is open to this machine and closed to others ' +
        '(create one with `npx conductor token create` to require tokens; set HOST to serve agents elsewhere)',
    );
    logger.warn(
      'Every user of this machine can use it too, and run jobs as you: on a shared host, create a token ' +
        '(npx conductor token create --scope admin --name <you>) to close it to them',
    );
  }

  let agent: ReturnType<typeof startEmbeddedAgent> | null = null;
  let stopRequestedAt = 0;
  const stop = async (why: string) => {
    stopRequestedAt = Date.now();
    logger.info(`${why}, shutting down`);
    const running = agent;
    if (running && running.exitCode === null && running.signalCode === null) {
      const exited = new Promise((done) => running.once('exit', done));
      running.kill('SIGTERM');
      await Promise.race([exited, new Promise((done) => setTimeout(done, 10_000))]);
    }
    await server.close();
    for (const close of closers.reverse()) await close().catch(() => {});
    process.exit(0);
  };
  const onSignal = (signal: NodeJS.Signals) => {
    if (!stopRequestedAt) return void stop(`${signal} received`);
    // Ctrl-C under npm arrives twice: from the terminal and forwarded by npm.
    if (signal === 'SIGINT' && Date.now() - stopRequestedAt < SAME_CTRL_C_MS) return;
    process.exit(130);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  process.on('SIGHUP', onSignal);
  if (env.CONDUCTOR_EMBEDDED_AGENT) {
    const token = await mintEmbeddedAgentToken(db, process.env.NODE_NAME || hostname());
    if (stopRequestedAt) return;
    if (embeddedAgentRunsJobsAsRoot(process.env)) {
      logger.warn(
        'Running as root: the local agent runs jobs as root. Set CONDUCTOR_RUN_AS=<user> to run them as an unprivileged user',
      );
    }
    agent = startEmbeddedAgent(server.url, process.env, join(dataDir, 'agent'), token);
  }

  // Started by npm (`npm start`) and npm is gone (SIGKILLed): nobody is left to stop us.
  const launcher = findLauncher(process.env);
  if (launcher) {
    watchLauncher(launcher.pid, () => {
      if (!stopRequestedAt) void stop(`${launcher.what} (pid ${launcher.pid}) is gone`);
    });
  }
}

const SAME_CTRL_C_MS = 1000;

main().catch((error: unknown) => {
  console.error(error instanceof Error ? error.message : String(error));
  process.exit(1);
});
