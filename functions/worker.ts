/**
 * The Cloudflare Workers entry: `export default { fetch, scheduled }` serving the same app as the Node server.
 * Configuration comes from the Worker's bindings (functions/worker-env.ts). Each invocation (request or
 * cron) gets its own Neon pool, ended after the response and the invocation's deferred work (waitUntil):
 * a Neon WebSocket cannot outlive its invocation. The Upstash client is plain fetch, shared per isolate.
 */
import { configureNeonForLocal, connectNeonPool } from '../db/neon.ts';
import { createApp } from './app.ts';
import { tokenHash } from './domain/auth.ts';
import { syncAllocationCache } from './domain/cache.ts';
import { type Context, createContext } from './domain/context.ts';
import { logClusterStats } from './domain/dashboard.ts';
import { pruneSubmissionKeys } from './domain/jobs.ts';
import { cacheSyncSkippable, runBackstopUnlessQuiet } from './domain/maintenance.ts';
import { sendDueNotifications } from './domain/notifications.ts';
import { createPollingNotifier } from './domain/notifier.ts';
import type { ConductorConfig, RateLimiter, RegistryStore, WorkNotifier } from './domain/ports.ts';
import { workerSwaggerUiAssets } from './http/api-docs-worker.ts';
import { createConsoleLogger } from './logger.ts';
import { RedisRateLimiter } from './registry/rate-limiter.ts';
import { RedisRegistryStore } from './registry/redis-store.ts';
import { createUpstashScripts } from './registry/upstash.ts';
import {
  CRON_CACHE_SYNC,
  configFromWorkerEnv,
  parseWorkerEnv,
  WorkerConfigError,
  type WorkerEnv,
} from './worker-env.ts';

/** The Workers runtime types this entry uses (kept local: the Node types own the globals). */
type ExecutionContext = NonNullable<Parameters<ReturnType<typeof createApp>['fetch']>[2]>;
interface ScheduledController {
  readonly cron: string;
  readonly scheduledTime: number;
}

interface Isolate {
  env: WorkerEnv;
  config: ConductorConfig;
  registry: RegistryStore;
  rateLimiter: RateLimiter;
  notifier: WorkNotifier;
}

let isolate: Isolate | undefined;
const logger = createConsoleLogger('json');

async function boot(bindings: Record<string, unknown>): Promise<Isolate> {
  if (isolate) return isolate;
  const env = parseWorkerEnv(bindings);
  if (env.NEON_WS_PROXY || env.NEON_FETCH_ENDPOINT) {
    configureNeonForLocal({ wsProxy: env.NEON_WS_PROXY, fetchEndpoint: env.NEON_FETCH_ENDPOINT });
  }
  const upstash = createUpstashScripts({
    url: env.UPSTASH_REDIS_REST_URL,
    token: env.UPSTASH_REDIS_REST_TOKEN,
  });
  const bootstrap = env.ADMIN_TOKEN ? await tokenHash(env.ADMIN_TOKEN) : undefined;
  isolate = {
    env,
    config: configFromWorkerEnv(env, bootstrap),
    registry: new RedisRegistryStore(upstash),
    rateLimiter: new RedisRateLimiter(upstash),
    notifier: createPollingNotifier(env.CONDUCTOR_CLAIM_POLL_MS),
  };
  return isolate;
}

interface Invocation {
  ctx: Context;
  /** Waits for the deferred work (which may defer more), then ends the pool. */
  finish(): Promise<void>;
}

async function openInvocation(bindings: Record<string, unknown>): Promise<Invocation> {
  const { env, config, registry, rateLimiter, notifier } = await boot(bindings);
  const { db, close } = connectNeonPool(env.DATABASE_URL);
  const pending = new Set<Promise<unknown>>();
  const ctx = createContext({
    db,
    registry,
    rateLimiter,
    notifier,
    logger,
    config,
    defer(work) {
      const tracked: Promise<unknown> = work
        .catch((error: unknown) =>
          logger.error('Background work failed', {
            error: error instanceof Error ? error.message : String(error),
          }),
        )
        .finally(() => pending.delete(tracked));
      pending.add(tracked);
    },
  });
  return {
    ctx,
    async finish() {
      while (pending.size > 0) await Promise.allSettled([...pending]);
      await close();
    },
  };
}

function misconfigured(error: WorkerConfigError): Response {
  logger.error(error.message);
  return Response.json({ error: { code: 'misconfigured', message: error.message } }, { status: 500 });
}

export default {
  async fetch(
    request: Request,
    bindings: Record<string, unknown>,
    execution: ExecutionContext,
  ): Promise<Response> {
    let invocation: Invocation;
    try {
      invocation = await openInvocation(bindings);
    } catch (error) {
      if (error instanceof WorkerConfigError) return misconfigured(error);
      throw error;
    }
    try {
      return await createApp(invocation.ctx, { swaggerUi: workerSwaggerUiAssets }).fetch(
        request,
        bindings,
        execution,
      );
    } finally {
      execution.waitUntil(invocation.finish());
    }
  },

  async scheduled(
    controller: ScheduledController,
    bindings: Record<string, unknown>,
    execution: ExecutionContext,
  ) {
    const invocation = await openInvocation(bindings);
    try {
      // An idle cluster's crons read one registry key set and leave Postgres (Neon) asleep: see maintenance.ts.
      if (controller.cron === CRON_CACHE_SYNC) {
        if (await cacheSyncSkippable(invocation.ctx)) return;
        await syncAllocationCache(invocation.ctx);
        await pruneSubmissionKeys(invocation.ctx.db);
      } else {
        const { ran, state } = await runBackstopUnlessQuiet(invocation.ctx);
        if (!ran && state) {
          logger.info(`Active workers: ${state.liveWorkers}, Total CPUs: ${state.liveCpus}`);
          return;
        }
        await logClusterStats(invocation.ctx);
        // The outbox: what is due now goes out from this cron; what fails stays due for the next one.
        await sendDueNotifications(invocation.ctx);
      }
    } finally {
      execution.waitUntil(invocation.finish());
    }
  },
};
