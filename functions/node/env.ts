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
} from '../config-vars.ts';
import { type ConductorConfig, DEFAULT_CONFIG } from '../domain/ports.ts';

const seconds = (fallback: number) => z.coerce.number().positive().default(fallback);
const flag = (fallback: boolean) =>
  z
    .enum(['0', '1', 'true', 'false', 'yes', 'no'])
    .default(fallback ? '1' : '0')
    .transform((v) => v === '1' || v === 'true' || v === 'yes');

/** Every environment variable the Node server reads, validated in one place. */
export const nodeEnvSchema = z.object({
  PORT: z.coerce.number().int().min(0).max(65_535).default(8000),
  HOST: z.string().min(1).default('127.0.0.1'),
  DATABASE_URL: z.url().optional(),
  REDIS_URL: z.url().optional(),
  UPSTASH_REDIS_REST_URL: z.url().optional(),
  UPSTASH_REDIS_REST_TOKEN: z.string().min(1).optional(),
  CONDUCTOR_DATA_DIR: z.string().min(1).default('.conductor'),
  CONDUCTOR_EMBEDDED_AGENT: flag(true),
  CONDUCTOR_WORKER_TTL: z.coerce
    .number()
    .int('CONDUCTOR_WORKER_TTL is whole seconds')
    .positive()
    .default(DEFAULT_CONFIG.workerTtlSeconds),
  CONDUCTOR_HEARTBEAT_INTERVAL: seconds(DEFAULT_CONFIG.heartbeatIntervalSeconds),
  CONDUCTOR_SCHEDULE_INTERVAL: seconds(DEFAULT_CONFIG.scheduleIntervalSeconds),
  CONDUCTOR_CACHE_SYNC_INTERVAL: seconds(DEFAULT_CONFIG.cacheSyncIntervalSeconds),
  CONDUCTOR_STATS_INTERVAL: seconds(DEFAULT_CONFIG.statsIntervalSeconds),
  CONDUCTOR_CLAIM_WAIT: seconds(DEFAULT_CONFIG.claimWaitSeconds),
  CONDUCTOR_START_DEADLINE: seconds(DEFAULT_CONFIG.startDeadlineSeconds),
  LOG_FORMAT: z.enum(['text', 'json']).default('text'),
  /** Submissions per second per token (0: no limit), and the burst allowed at once. */
  CONDUCTOR_SUBMIT_RATE: z.coerce.number().min(0).default(DEFAULT_CONFIG.submitRatePerSecond),
  CONDUCTOR_SUBMIT_BURST: z.coerce.number().int().min(1).default(DEFAULT_CONFIG.submitBurst),
  /** Days a finished job's output is kept (0: forever). */
  CONDUCTOR_LOG_RETENTION_DAYS: logRetentionDays,
  /** The URL(s), comma-separated, browsers use for this server when it is not one of its addresses or localhost. */
  CONDUCTOR_PUBLIC_URL: z
    .string()
    .transform((v) =>
      v
        .split(',')
        .map((u) => u.trim())
        .filter(Boolean),
    )
    .pipe(
      z.array(
        z.url({ protocol: /^https?$/, error: 'CONDUCTOR_PUBLIC_URL is http(s) URLs, comma-separated' }),
      ),
    )
    .default([]),
  /** Times a `requeue` job is requeued after losing its node before it ends NODE_FAIL. */
  CONDUCTOR_MAX_REQUEUES: maxRequeues,
  /** Slurm's DependencyParameters=kill_invalid_depend. */
  CONDUCTOR_KILL_INVALID_DEPEND: killInvalidDepend,
  /** The n-th loss of a job's node while it runs ends it NODE_FAIL (0: no crash limit). */
  CONDUCTOR_CRASH_LIMIT: crashLimit,
  /** Seconds before an automatically requeued job may start again (doubled per earlier requeue). */
  CONDUCTOR_RETRY_BACKOFF: retryBackoff,
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
  /** Live-log followers (SSE) at once per job and per token, in this process (0: no limit). */
  CONDUCTOR_LOG_FOLLOWERS_PER_JOB: followers(DEFAULT_CONFIG.logFollowersPerJob),
  CONDUCTOR_LOG_FOLLOWERS_PER_TOKEN: followers(DEFAULT_CONFIG.logFollowersPerToken),
  ...notifyVars,
  ...priorityVars,
  CONDUCTOR_NOTIFY_INTERVAL: seconds(DEFAULT_CONFIG.notifyIntervalSeconds),
  /** The SMTP server job mail goes through; none: mail is accepted with a warning, not sent. */
  CONDUCTOR_SMTP_URL: z
    .url({ protocol: /^smtp$/, error: 'CONDUCTOR_SMTP_URL is smtp://[user:password@]host[:port]' })
    .optional(),
  CONDUCTOR_MAIL_FROM: z.email({ error: 'CONDUCTOR_MAIL_FROM is an email address' }).optional(),
});
export type NodeEnv = z.infer<typeof nodeEnvSchema>;

export function parseNodeEnv(env: Record<string, string | undefined>): NodeEnv {
  const cleaned = Object.fromEntries(Object.entries(env).filter(([, v]) => v !== undefined && v !== ''));
  const result = nodeEnvSchema.safeParse(cleaned);
  if (!result.success) {
    const problems = result.error.issues.map((i) => `  ${i.path.join('.')}: ${i.message}`).join('\n');
    throw new Error(`Invalid configuration:\n${problems}`);
  }
  if (Boolean(result.data.UPSTASH_REDIS_REST_URL) !== Boolean(result.data.UPSTASH_REDIS_REST_TOKEN)) {
    throw new Error(
      'Invalid configuration: set both UPSTASH_REDIS_REST_URL and UPSTASH_REDIS_REST_TOKEN, or neither',
    );
  }
  return result.data;
}

/** 127.0.0.0/8, ::1 and localhost: only this machine can connect. */
export function isLoopback(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  return h === 'localhost' || h === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}

export function configFromEnv(env: NodeEnv): ConductorConfig {
  return {
    ...DEFAULT_CONFIG,
    // Beyond loopback every request needs a token; on loopback, once one exists.
    auth: isLoopback(env.HOST) ? 'auto' : 'required',
    submitRatePerSecond: env.CONDUCTOR_SUBMIT_RATE,
    submitBurst: env.CONDUCTOR_SUBMIT_BURST,
    logRetentionDays: env.CONDUCTOR_LOG_RETENTION_DAYS,
    maxRequeues: env.CONDUCTOR_MAX_REQUEUES,
    killInvalidDepend: env.CONDUCTOR_KILL_INVALID_DEPEND,
    crashLimit: env.CONDUCTOR_CRASH_LIMIT,
    retryBackoffSeconds: env.CONDUCTOR_RETRY_BACKOFF,
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
    scheduleIntervalSeconds: env.CONDUCTOR_SCHEDULE_INTERVAL,
    cacheSyncIntervalSeconds: env.CONDUCTOR_CACHE_SYNC_INTERVAL,
    statsIntervalSeconds: env.CONDUCTOR_STATS_INTERVAL,
    claimWaitSeconds: env.CONDUCTOR_CLAIM_WAIT,
    publicOrigins: [
      ...env.CONDUCTOR_PUBLIC_URL.map((u) => new URL(u).origin),
      // HOST given as a name (not an address): that name is the server's own.
      ...(/^[a-z0-9.-]*[a-z-][a-z0-9.-]*$/i.test(env.HOST) && !isLoopback(env.HOST)
        ? [`http://${env.HOST}:${env.PORT}`]
        : []),
    ],
    startDeadlineSeconds: env.CONDUCTOR_START_DEADLINE,
    ...notifyConfig(env),
    priority: priorityConfig(env),
    notifyIntervalSeconds: env.CONDUCTOR_NOTIFY_INTERVAL,
  };
}
