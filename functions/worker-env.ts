import { z } from 'zod';
import {
  accountingEnforce,
  clusterName,
  crashLimit,
  followers,
  killInvalidDepend,
  logRetentionDays,
  maxArraySize,
  maxRequeues,
  notifyConfig,
  notifyVars,
  priorityCeiling,
  priorityConfig,
  priorityVars,
  retryBackoff,
  schedulerType,
  usageResetPeriod,
} from './config-vars.ts';
import { type ConductorConfig, DEFAULT_CONFIG } from './domain/ports.ts';

/**
 * The crons in wrangler.toml: every minute the backstop (reap + schedule, and the statistics line), every
 * 5 minutes the cache sync. (Kept out of the entry module: a Worker module may export only handlers.)
 */
export const CRON_BACKSTOP = '* * * * *';
export const CRON_CACHE_SYNC = '*/5 * * * *';

/**
 * The Worker's bindings (wrangler.toml vars and `wrangler secret put` secrets), validated once per isolate
 * at first use. A missing or malformed binding fails every request with a message naming it.
 */
const secondsVar = (fallback: number) => z.coerce.number().int().positive().default(fallback);

export const workerEnvSchema = z.object({
  DATABASE_URL: z.url({
    error: 'DATABASE_URL must be the Neon connection string (wrangler secret put DATABASE_URL)',
  }),
  UPSTASH_REDIS_REST_URL: z.url({
    error: 'UPSTASH_REDIS_REST_URL must be the Upstash REST URL (wrangler secret put UPSTASH_REDIS_REST_URL)',
  }),
  UPSTASH_REDIS_REST_TOKEN: z
    .string({ error: 'UPSTASH_REDIS_REST_TOKEN is missing (wrangler secret put UPSTASH_REDIS_REST_TOKEN)' })
    .min(1, 'UPSTASH_REDIS_REST_TOKEN is empty'),
  CONDUCTOR_WORKER_TTL: secondsVar(DEFAULT_CONFIG.workerTtlSeconds),
  CONDUCTOR_HEARTBEAT_INTERVAL: secondsVar(DEFAULT_CONFIG.heartbeatIntervalSeconds),
  CONDUCTOR_CLAIM_WAIT: secondsVar(30),
  CONDUCTOR_START_DEADLINE: secondsVar(DEFAULT_CONFIG.startDeadlineSeconds),
  /** How often a waiting claim looks for work again (ms): isolates cannot wake each other. */
  CONDUCTOR_CLAIM_POLL_MS: z.coerce.number().int().min(50).default(1000),
  /** Durable Objects holding the agents' channel sockets (a worker's is `fnv1a(id) % shards`). */
  CONDUCTOR_CHANNEL_SHARDS: z.coerce
    .number({ error: 'CONDUCTOR_CHANNEL_SHARDS is a whole number from 1 to 1024' })
    .int('CONDUCTOR_CHANNEL_SHARDS is a whole number from 1 to 1024')
    .min(1, 'CONDUCTOR_CHANNEL_SHARDS is at least 1')
    .max(1024, 'CONDUCTOR_CHANNEL_SHARDS is at most 1024')
    .default(1),
  /**
   * Bootstraps the first admin: this token (at least 32 characters; `wrangler secret put ADMIN_TOKEN`) is
   * stored hashed as an admin token the first time it is used. Revoking it through the API sticks.
   */
  ADMIN_TOKEN: z
    .string()
    .min(32, 'ADMIN_TOKEN must be at least 32 characters (e.g. `openssl rand -base64 32`)')
    .optional(),
  CONDUCTOR_SUBMIT_RATE: z.coerce.number().min(0).default(DEFAULT_CONFIG.submitRatePerSecond),
  CONDUCTOR_SUBMIT_BURST: z.coerce.number().int().min(1).default(DEFAULT_CONFIG.submitBurst),
  /** Days a finished job's output is kept (0: forever); the minute cron deletes what is older. */
  CONDUCTOR_LOG_RETENTION_DAYS: logRetentionDays,
  /** Times a `requeue` job is requeued after losing its node before it ends NODE_FAIL. */
  CONDUCTOR_MAX_REQUEUES: maxRequeues,
  /** Slurm's DependencyParameters=kill_invalid_depend. */
  CONDUCTOR_KILL_INVALID_DEPEND: killInvalidDepend,
  /** The n-th loss of a job's node while it runs ends it NODE_FAIL (0: no crash limit). */
  CONDUCTOR_CRASH_LIMIT: crashLimit,
  /** Seconds before an automatically requeued job may start again (doubled per earlier requeue). */
  CONDUCTOR_RETRY_BACKOFF: retryBackoff,
  ...notifyVars,
  ...priorityVars,
  CONDUCTOR_MAX_ARRAY_SIZE: maxArraySize,
  /** The highest priority a token without the admin scope may set (default 0: only admins raise). */
  CONDUCTOR_PRIORITY_CEILING: priorityCeiling,
  /** Slurm's AccountingStorageEnforce (associations) and PriorityUsageResetPeriod. */
  CONDUCTOR_ACCOUNTING_ENFORCE: accountingEnforce,
  CONDUCTOR_USAGE_RESET_PERIOD: usageResetPeriod,
  /** Slurm's SchedulerType: sched/backfill or sched/builtin (FIFO). */
  CONDUCTOR_SCHEDULER_TYPE: schedulerType,
  /** The cluster's name, which jobs see as SLURM_CLUSTER_NAME. */
  CONDUCTOR_CLUSTER_NAME: clusterName,
  /** Live-log followers (SSE) at once per job and per token, in one isolate (0: no limit). */
  CONDUCTOR_LOG_FOLLOWERS_PER_JOB: followers(DEFAULT_CONFIG.logFollowersPerJob),
  CONDUCTOR_LOG_FOLLOWERS_PER_TOKEN: followers(DEFAULT_CONFIG.logFollowersPerToken),
  /** Local development only: route the Neon driver to the local proxy and SQL bridge. */
  NEON_WS_PROXY: z.string().optional(),
  NEON_FETCH_ENDPOINT: z.url().optional(),
});
export type WorkerEnv = z.infer<typeof workerEnvSchema>;

export class WorkerConfigError extends Error {
  override readonly name = 'WorkerConfigError';
}

export function parseWorkerEnv(bindings: Record<string, unknown>): WorkerEnv {
  const result = workerEnvSchema.safeParse(bindings);
  if (result.success) return result.data;
  const problems = result.error.issues.map((i) =>
    i.message.includes(String(i.path[0])) ? i.message : `${i.path.join('.')}: ${i.message}`,
  );
  throw new WorkerConfigError(`Worker misconfigured: ${problems.join('; ')}`);
}

export function configFromWorkerEnv(env: WorkerEnv, bootstrapAdminTokenHash?: string): ConductorConfig {
  return {
    ...DEFAULT_CONFIG,
    // A Worker is public by nature: tokens are always required.
    auth: 'required',
    ...(bootstrapAdminTokenHash ? { bootstrapAdminTokenHash } : {}),
    submitRatePerSecond: env.CONDUCTOR_SUBMIT_RATE,
    submitBurst: env.CONDUCTOR_SUBMIT_BURST,
    logRetentionDays: env.CONDUCTOR_LOG_RETENTION_DAYS,
    maxRequeues: env.CONDUCTOR_MAX_REQUEUES,
    killInvalidDepend: env.CONDUCTOR_KILL_INVALID_DEPEND,
    crashLimit: env.CONDUCTOR_CRASH_LIMIT,
    retryBackoffSeconds: env.CONDUCTOR_RETRY_BACKOFF,
    ...notifyConfig(env),
    priority: priorityConfig(env),
    maxArraySize: env.CONDUCTOR_MAX_ARRAY_SIZE,
    clusterName: env.CONDUCTOR_CLUSTER_NAME,
    priorityCeiling: env.CONDUCTOR_PRIORITY_CEILING,
    enforceAssociations: env.CONDUCTOR_ACCOUNTING_ENFORCE,
    usageResetPeriod: env.CONDUCTOR_USAGE_RESET_PERIOD,
    schedulerType: env.CONDUCTOR_SCHEDULER_TYPE,
    logFollowersPerJob: env.CONDUCTOR_LOG_FOLLOWERS_PER_JOB,
    logFollowersPerToken: env.CONDUCTOR_LOG_FOLLOWERS_PER_TOKEN,
    workerTtlSeconds: env.CONDUCTOR_WORKER_TTL,
    heartbeatIntervalSeconds: env.CONDUCTOR_HEARTBEAT_INTERVAL,
    claimWaitSeconds: env.CONDUCTOR_CLAIM_WAIT,
    startDeadlineSeconds: env.CONDUCTOR_START_DEADLINE,
    // The backstop is the minute cron: the reaper's notion of "reaping stopped" must allow for it.
    scheduleIntervalSeconds: 60,
    cacheSyncIntervalSeconds: 300,
    statsIntervalSeconds: 60,
  };
}
