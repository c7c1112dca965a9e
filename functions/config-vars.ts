import { z } from 'zod';
import { DEFAULT_CONFIG, SCHEDULER_TYPES, USAGE_RESET_PERIODS } from './domain/ports.ts';

/**
 * The settings the Node server and the Worker read alike, validated by one schema each, so a variable is
 * written once (functions/node/env.ts and functions/worker-env.ts both use these).
 */

/** Days of job output to keep: a whole number, 0 (keep forever) to 100 years. */
export const logRetentionDays = z.coerce
  .number({ error: 'CONDUCTOR_LOG_RETENTION_DAYS is a number of days (0: keep forever)' })
  .int('CONDUCTOR_LOG_RETENTION_DAYS is whole days (0: keep forever)')
  .min(0, 'CONDUCTOR_LOG_RETENTION_DAYS is at least 0 (0: keep forever)')
  .max(36_500, 'CONDUCTOR_LOG_RETENTION_DAYS is at most 36500')
  .default(DEFAULT_CONFIG.logRetentionDays);

/** Times a `requeue` job is requeued after losing its node before it ends NODE_FAIL. */
export const maxRequeues = z.coerce
  .number({ error: 'CONDUCTOR_MAX_REQUEUES is a whole number (0: never requeue)' })
  .int('CONDUCTOR_MAX_REQUEUES is a whole number (0: never requeue)')
  .min(0, 'CONDUCTOR_MAX_REQUEUES is at least 0 (0: never requeue)')
  .max(1_000, 'CONDUCTOR_MAX_REQUEUES is at most 1000')
  .default(DEFAULT_CONFIG.maxRequeues);

/** The n-th loss of a job's node while it runs ends it NODE_FAIL (jobs and partitions may set their own). */
export const crashLimit = z.coerce
  .number({ error: 'CONDUCTOR_CRASH_LIMIT is a whole number (0: no crash limit)' })
  .int('CONDUCTOR_CRASH_LIMIT is a whole number (0: no crash limit)')
  .min(0, 'CONDUCTOR_CRASH_LIMIT is at least 0 (0: no crash limit)')
  .max(1_000, 'CONDUCTOR_CRASH_LIMIT is at most 1000')
  .default(DEFAULT_CONFIG.crashLimit);

/** Seconds before an automatically requeued job may start again, doubled with each earlier requeue. */
export const retryBackoff = z.coerce
  .number({ error: 'CONDUCTOR_RETRY_BACKOFF is whole seconds from 0 to 86400' })
  .int('CONDUCTOR_RETRY_BACKOFF is whole seconds from 0 to 86400')
  .min(0, 'CONDUCTOR_RETRY_BACKOFF is at least 0 (0: at once)')
  .max(86_400, 'CONDUCTOR_RETRY_BACKOFF is at most 86400 (a day)')
  .default(DEFAULT_CONFIG.retryBackoffSeconds);
/** Slurm's MaxArraySize: the largest array task index is one less; also the most tasks in one array. */
export const maxArraySize = z.coerce
  .number({ error: 'CONDUCTOR_MAX_ARRAY_SIZE is a whole number from 1 to 4000001' })
  .int('CONDUCTOR_MAX_ARRAY_SIZE is a whole number from 1 to 4000001')
  .min(1, 'CONDUCTOR_MAX_ARRAY_SIZE is at least 1')
  .max(4_000_001, "CONDUCTOR_MAX_ARRAY_SIZE is at most 4000001 (Slurm's own limit)")
  .default(DEFAULT_CONFIG.maxArraySize);

/** The highest priority a token without the admin scope may set (default 0: only admins raise). */
export const priorityCeiling = z.coerce
  .number({ error: 'CONDUCTOR_PRIORITY_CEILING is a whole number from 0 to 1000000' })
  .int('CONDUCTOR_PRIORITY_CEILING is a whole number from 0 to 1000000')
  .min(0, 'CONDUCTOR_PRIORITY_CEILING is at least 0')
  .max(1_000_000, 'CONDUCTOR_PRIORITY_CEILING is at most 1000000')
  .default(DEFAULT_CONFIG.priorityCeiling);

/** The cluster's name as jobs see it (SLURM_CLUSTER_NAME): Slurm's ClusterName rules, lowercase. */
export const clusterName = z
  .string()
  .regex(
    /^[a-z0-9][a-z0-9_-]{0,63}$/,
    'CONDUCTOR_CLUSTER_NAME is lowercase letters, digits, - and _ (at most 64, starting with a letter or digit)',
  )
  .default(DEFAULT_CONFIG.clusterName);

/** Slurm's DependencyParameters=kill_invalid_depend, as a yes/no setting. */
export const killInvalidDepend = z
  .enum(['0', '1', 'true', 'false', 'yes', 'no'], {
    error: 'CONDUCTOR_KILL_INVALID_DEPEND is yes or no (also 1/0, true/false)',
  })
  .default(DEFAULT_CONFIG.killInvalidDepend ? 'yes' : 'no')
  .transform((v) => v === '1' || v === 'true' || v === 'yes');

/** Slurm's AccountingStorageEnforce: `associations` (or `limits`, which implies it) turns it on. */
export const accountingEnforce = z
  .string()
  .default(DEFAULT_CONFIG.enforceAssociations ? 'associations' : 'none')
  .transform((v) =>
    v
      .toLowerCase()
      .split(',')
      .map((w) => w.trim())
      .filter((w) => w !== ''),
  )
  .pipe(
    z.array(
      z.enum(['none', 'associations', 'limits'], {
        error: 'CONDUCTOR_ACCOUNTING_ENFORCE is none, associations or limits',
      }),
    ),
  )
  .transform((words) => words.some((w) => w !== 'none'));

/** One of `values`, in any case; anything else is refused naming the variable. */
const oneOf = <const T extends readonly [string, ...string[]]>(
  name: string,
  values: T,
  fallback: T[number],
) =>
  z
    .string()
    .default(fallback)
    .transform((v) => v.toLowerCase())
    .pipe(z.enum(values, { error: `${name} is one of ${values.join(', ')}` }));

/** Slurm's PriorityUsageResetPeriod. */
export const usageResetPeriod = oneOf(
  'CONDUCTOR_USAGE_RESET_PERIOD',
  USAGE_RESET_PERIODS,
  DEFAULT_CONFIG.usageResetPeriod,
);

/** Slurm's SchedulerType: sched/backfill (default) or sched/builtin (FIFO, no backfill). */
export const schedulerType = oneOf('CONDUCTOR_SCHEDULER_TYPE', SCHEDULER_TYPES, DEFAULT_CONFIG.schedulerType);

/** Event notifications' retry timing and limits (seconds, attempts). */
const notifySeconds = (name: string, fallback: number) =>
  z.coerce
    .number({ error: `${name} is a number of seconds` })
    .positive(`${name} is more than 0 seconds`)
    .max(86_400 * 7, `${name} is at most 604800 seconds`)
    .default(fallback);
export const notifyVars = {
  CONDUCTOR_NOTIFY_RETRY_BASE: notifySeconds(
    'CONDUCTOR_NOTIFY_RETRY_BASE',
    DEFAULT_CONFIG.notifyRetryBaseSeconds,
  ),
  CONDUCTOR_NOTIFY_RETRY_MAX: notifySeconds(
    'CONDUCTOR_NOTIFY_RETRY_MAX',
    DEFAULT_CONFIG.notifyRetryMaxSeconds,
  ),
  CONDUCTOR_NOTIFY_TIMEOUT: notifySeconds('CONDUCTOR_NOTIFY_TIMEOUT', DEFAULT_CONFIG.notifyTimeoutSeconds),
  CONDUCTOR_NOTIFY_MAX_ATTEMPTS: z.coerce
    .number({ error: 'CONDUCTOR_NOTIFY_MAX_ATTEMPTS is a whole number' })
    .int('CONDUCTOR_NOTIFY_MAX_ATTEMPTS is a whole number')
    .min(1, 'CONDUCTOR_NOTIFY_MAX_ATTEMPTS is at least 1')
    .max(1000, 'CONDUCTOR_NOTIFY_MAX_ATTEMPTS is at most 1000')
    .default(DEFAULT_CONFIG.notifyMaxAttempts),
};
/** The ConductorConfig fields of notifyVars. */
export const notifyConfig = (env: { [K in keyof typeof notifyVars]: number }) => ({
  notifyRetryBaseSeconds: env.CONDUCTOR_NOTIFY_RETRY_BASE,
  notifyRetryMaxSeconds: env.CONDUCTOR_NOTIFY_RETRY_MAX,
  notifyTimeoutSeconds: env.CONDUCTOR_NOTIFY_TIMEOUT,
  notifyMaxAttempts: env.CONDUCTOR_NOTIFY_MAX_ATTEMPTS,
});

/** Slurm's priority/multifactor settings (functions/domain/priority.ts). */
const weight = (name: string, fallback: number) =>
  z.coerce
    .number({ error: `${name} is a whole number from 0 to 1000000` })
    .int(`${name} is a whole number from 0 to 1000000`)
    .min(0, `${name} is at least 0`)
    .max(1_000_000, `${name} is at most 1000000`)
    .default(fallback);
const prioritySeconds = (name: string, fallback: number) =>
  z.coerce
    .number({ error: `${name} is a number of seconds` })
    .int(`${name} is whole seconds`)
    .min(1, `${name} is at least 1 second`)
    .max(86_400 * 3650, `${name} is at most 315360000 seconds`)
    .default(fallback);
const P = DEFAULT_CONFIG.priority;
export const priorityVars = {
  CONDUCTOR_PRIORITY_WEIGHT_AGE: weight('CONDUCTOR_PRIORITY_WEIGHT_AGE', P.weightAge),
  CONDUCTOR_PRIORITY_WEIGHT_FAIRSHARE: weight('CONDUCTOR_PRIORITY_WEIGHT_FAIRSHARE', P.weightFairshare),
  CONDUCTOR_PRIORITY_WEIGHT_JOB_SIZE: weight('CONDUCTOR_PRIORITY_WEIGHT_JOB_SIZE', P.weightJobSize),
  CONDUCTOR_PRIORITY_WEIGHT_PARTITION: weight('CONDUCTOR_PRIORITY_WEIGHT_PARTITION', P.weightPartition),
  CONDUCTOR_PRIORITY_WEIGHT_QOS: weight('CONDUCTOR_PRIORITY_WEIGHT_QOS', P.weightQos),
  CONDUCTOR_PRIORITY_DECAY_HALF_LIFE: prioritySeconds('CONDUCTOR_PRIORITY_DECAY_HALF_LIFE', P.decayHalfLifeS),
  CONDUCTOR_PRIORITY_MAX_AGE: prioritySeconds('CONDUCTOR_PRIORITY_MAX_AGE', P.maxAgeS),
  CONDUCTOR_PRIORITY_CALC_PERIOD: prioritySeconds('CONDUCTOR_PRIORITY_CALC_PERIOD', P.calcPeriodS),
  CONDUCTOR_PRIORITY_QOS: z
    .string()
    .regex(
      /^\s*([A-Za-z0-9_.-]+=\d{1,7})?(\s*,\s*[A-Za-z0-9_.-]+=\d{1,7})*\s*$/,
      'CONDUCTOR_PRIORITY_QOS is name=priority pairs, comma-separated (high=100,normal=10)',
    )
    .default('')
    .transform((v) =>
      Object.fromEntries(
        v
          .split(',')
          .map((pair) => pair.trim())
          .filter((pair) => pair !== '')
          .map((pair) => {
            const [name, value] = pair.split('=');
            return [name as string, Number(value)];
          }),
      ),
    ),
};
/** The ConductorConfig `priority` of priorityVars. */
export const priorityConfig = (
  env: {
    [K in Exclude<keyof typeof priorityVars, 'CONDUCTOR_PRIORITY_QOS'>]: number;
  } & { CONDUCTOR_PRIORITY_QOS: Record<string, number> },
) => ({
  weightAge: env.CONDUCTOR_PRIORITY_WEIGHT_AGE,
  weightFairshare: env.CONDUCTOR_PRIORITY_WEIGHT_FAIRSHARE,
  weightJobSize: env.CONDUCTOR_PRIORITY_WEIGHT_JOB_SIZE,
  weightPartition: env.CONDUCTOR_PRIORITY_WEIGHT_PARTITION,
  weightQos: env.CONDUCTOR_PRIORITY_WEIGHT_QOS,
  decayHalfLifeS: env.CONDUCTOR_PRIORITY_DECAY_HALF_LIFE,
  maxAgeS: env.CONDUCTOR_PRIORITY_MAX_AGE,
  calcPeriodS: env.CONDUCTOR_PRIORITY_CALC_PERIOD,
  qos: env.CONDUCTOR_PRIORITY_QOS,
});

/** A number of live-log followers: a whole number, 0 (no limit) or more. */
export const followers = (fallback: number) => z.coerce.number().int().min(0).default(fallback);

/**
 * What each variable of nodeEnvSchema (functions/node/env.ts) and workerEnvSchema (functions/worker-env.ts)
 * means, for docs/configuration.md: scripts/docs-config.ts writes the table from these schemas and this map,
 * and test/docs fails when a variable of either schema is missing here. `default` replaces the default the
 * schema gives, where a word says more than the value.
 */
export const CONFIG_VAR_DOCS: Record<string, { description: string; default?: string }> = {
  PORT: { description: 'HTTP port' },
  HOST: {
    description:
      'listen address; beyond loopback (anything but 127.0.0.0/8, `::1`, `localhost`) every route but health needs a token, and the server refuses to start before a token exists',
  },
  DATABASE_URL: {
    description:
      'Postgres, e.g. `postgres://127.0.0.1:5432/conductor` (on Node the database is created if missing and migrations apply at start; on Workers the Neon connection string, a secret)',
    default: 'Node: none, embedded PGlite; Workers: required',
  },
  REDIS_URL: {
    description:
      'TCP Redis for the registry and cache (with neither it nor Upstash: an in-process registry, one server only)',
  },
  UPSTASH_REDIS_REST_URL: {
    description:
      'Upstash REST Redis instead of `REDIS_URL` (set both Upstash variables or neither; on Workers a required secret)',
  },
  UPSTASH_REDIS_REST_TOKEN: { description: 'the Upstash REST token that goes with `UPSTASH_REDIS_REST_URL`' },
  CONDUCTOR_DATA_DIR: { description: "PGlite data and the embedded agent's state" },
  CONDUCTOR_EMBEDDED_AGENT: { description: '`0` starts the control plane alone, without the local agent' },
  CONDUCTOR_WORKER_TTL: { description: 'seconds: `worker:<id>` TTL, and how long a silent worker lives' },
  CONDUCTOR_HEARTBEAT_INTERVAL: { description: 'seconds, told to agents at registration' },
  CONDUCTOR_SCHEDULE_INTERVAL: {
    description: 'seconds: scheduling and reaping backstop (on Workers the minute cron instead)',
  },
  CONDUCTOR_CACHE_SYNC_INTERVAL: {
    description: 'seconds: cache sync from Postgres (on Workers the 5-minute cron)',
  },
  CONDUCTOR_STATS_INTERVAL: { description: 'seconds: the `Active workers: 2, Total CPUs: 192` log line' },
  CONDUCTOR_CLAIM_WAIT: { description: "seconds an agent's claim long-poll may wait" },
  CONDUCTOR_CLAIM_POLL_MS: {
    description:
      'milliseconds: how often a waiting claim looks in Postgres for work again (isolates cannot wake each other)',
  },
  CONDUCTOR_CHANNEL_SHARDS: {
    description:
      "how many Durable Objects hold the agents' push-channel WebSockets (a worker's is chosen by a hash of its id); Cloudflare documents 32,768 WebSockets per object. A change is a deploy, which drops every socket: agents reconnect, to their new object",
  },
  CONDUCTOR_START_DEADLINE: {
    description:
      'seconds: a placed job its agent never reports started ends FAILED (counted from its placement, and from when reaping resumed after an outage)',
  },
  LOG_FORMAT: { description: "`json` for one JSON object per line (the embedded agent's lines included)" },
  CONDUCTOR_SUBMIT_RATE: {
    description:
      'submissions per second per token (per webhook; `0`: no limit); in Redis when there is one, else per process',
  },
  CONDUCTOR_SUBMIT_BURST: {
    description:
      'submissions a token may make at once before the rate applies (a batch of N jobs counts N, so it is also the largest batch)',
  },
  CONDUCTOR_LOG_RETENTION_DAYS: {
    description:
      "days a finished job's stored output is kept after it ended (`0`: forever); then its logs are a 410 `logs_expired`. Also how long settled notification events are kept",
  },
  CONDUCTOR_PUBLIC_URL: {
    description:
      'the URL(s), comma-separated, browsers use for this server when it is not an IP address or `localhost` (a name in `/etc/hosts`, a proxy in front): on loopback their names are accepted as Host, and their origins may write (see [Security](security.md))',
  },
  CONDUCTOR_PRIORITY_WEIGHT_AGE: {
    description:
      "Slurm's `PriorityWeightAge`: the most a job's age (time eligible, up to `CONDUCTOR_PRIORITY_MAX_AGE`) adds to its priority ([Priority and fair-share](priority.md))",
  },
  CONDUCTOR_PRIORITY_WEIGHT_FAIRSHARE: {
    description:
      "Slurm's `PriorityWeightFairshare`: the most its account's fair-share factor (2^(-usage/shares)) adds",
  },
  CONDUCTOR_PRIORITY_WEIGHT_JOB_SIZE: {
    description: "Slurm's `PriorityWeightJobSize`: the most its size (CPUs over the cluster's) adds",
  },
  CONDUCTOR_PRIORITY_WEIGHT_PARTITION: {
    description:
      "Slurm's `PriorityWeightPartition`: the most its partition's `priority_tier` (over the highest tier) adds",
  },
  CONDUCTOR_PRIORITY_WEIGHT_QOS: {
    description: "Slurm's `PriorityWeightQOS`: the most its QOS's priority (over the highest) adds",
  },
  CONDUCTOR_PRIORITY_DECAY_HALF_LIFE: {
    description:
      "seconds: Slurm's `PriorityDecayHalfLife`, how fast past usage stops counting against an account",
    default: '604800 (7 days)',
  },
  CONDUCTOR_PRIORITY_MAX_AGE: {
    description: "seconds: Slurm's `PriorityMaxAge`, the age at which the age factor reaches 1",
    default: '604800 (7 days)',
  },
  CONDUCTOR_PRIORITY_CALC_PERIOD: {
    description:
      "seconds: Slurm's `PriorityCalcPeriod`, how often pending jobs' priorities and the fair-share factors are recomputed (by the backstop, which does not run while nothing is pending or running)",
  },
  CONDUCTOR_PRIORITY_QOS: {
    description:
      'QOS priorities, `name=priority` pairs comma-separated (`high=100,normal=10`): a job asking a QOS (sbatch `--qos`) gets its priority over the highest as its QOS factor; a QOS not named has 0',
    default: 'none',
  },
  CONDUCTOR_KILL_INVALID_DEPEND: {
    description:
      "Slurm's `DependencyParameters=kill_invalid_depend`: cancel a job whose dependency can never be met instead of leaving it PENDING with reason DependencyNeverSatisfied; a job submitted with `kill_on_invalid_dep` (sbatch `--kill-on-invalid-dep=yes|no`) decides for itself",
    default: 'no',
  },
  CONDUCTOR_MAX_REQUEUES: {
    description:
      'times a job is requeued automatically (its node lost with `requeue`, or a non-zero exit with `retry_on_failure`) when neither it nor its partition sets `max_requeues`; then it ends NODE_FAIL or FAILED (`0`: never requeued; Slurm: MaxBatchRequeue)',
  },
  CONDUCTOR_CRASH_LIMIT: {
    description:
      "the n-th time a job's node is lost while the job runs ends it NODE_FAIL, requeues left or not, when neither it nor its partition sets `crash_limit` (HyperQueue's crash limit; `0`: none)",
  },
  CONDUCTOR_RETRY_BACKOFF: {
    description:
      'seconds an automatically requeued job waits (reason BeginTime) before it may start again, doubled with each earlier requeue up to an hour, when neither it nor its partition sets `retry_backoff_s` (`0`: at once)',
  },
  CONDUCTOR_MAX_ARRAY_SIZE: {
    description:
      "Slurm's MaxArraySize: job array indexes (`--array`) are below it and an array has at most this many tasks; beyond it a submission is a 400 `invalid_array` (Slurm's own default is 1001)",
  },
  CONDUCTOR_ACCOUNTING_ENFORCE: {
    description:
      "Slurm's `AccountingStorageEnforce`: `associations` (or `limits`, which implies it) refuses a job whose account its owner does not belong to (400 `invalid_account`); `none` accepts and records any account name. Account and user limits apply either way (see [Accounts and limits](accounts.md))",
    default: 'none',
  },
  CONDUCTOR_USAGE_RESET_PERIOD: {
    description:
      "Slurm's `PriorityUsageResetPeriod`: where the CPU-minutes an account's `grp_cpu_mins` (GrpTRESMins=cpu) counts start: `none` (all recorded usage), `daily`, `weekly`, `monthly`, `quarterly` or `yearly` (calendar periods, UTC)",
    default: 'none',
  },
  CONDUCTOR_SCHEDULER_TYPE: {
    description:
      "Slurm's `SchedulerType`: `sched/backfill` lets a lower job start on a node held for a waiting one when its time limit ends it by that job's planned start; `sched/builtin` is strict FIFO, nothing starts on a held node (see [Reservations and backfill](reservations.md))",
  },
  CONDUCTOR_PRIORITY_CEILING: {
    description: 'the highest `priority` a token without the admin scope may set (0 to 1,000,000)',
  },
  CONDUCTOR_LOG_FOLLOWERS_PER_JOB: {
    description:
      'live-log followers (`follow=1`) at once per job, per process (per isolate on Workers); `0`: no limit',
  },
  CONDUCTOR_LOG_FOLLOWERS_PER_TOKEN: {
    description: 'live-log followers at once per token, per process (per isolate on Workers); `0`: no limit',
  },
  CONDUCTOR_CLUSTER_NAME: {
    description: "the cluster's name, which every job sees as `SLURM_CLUSTER_NAME`",
  },
  CONDUCTOR_NOTIFY_RETRY_BASE: {
    description:
      'seconds before the first retry of a failed notification delivery; each next retry waits twice as long',
  },
  CONDUCTOR_NOTIFY_RETRY_MAX: { description: 'seconds: the longest wait between two delivery attempts' },
  CONDUCTOR_NOTIFY_MAX_ATTEMPTS: {
    description: 'attempts before a delivery is given up (`failed`; a replay sends it again)',
  },
  CONDUCTOR_NOTIFY_TIMEOUT: { description: 'seconds a webhook receiver may take to answer' },
  CONDUCTOR_NOTIFY_INTERVAL: {
    description: 'seconds: how often due notification deliveries are sent (on Workers the minute cron)',
  },
  CONDUCTOR_SMTP_URL: {
    description:
      '`smtp://[user:password@]host[:port]`: the SMTP server job mail (`mail_type`) goes through; without it mail is accepted with a warning and not sent (Node only)',
  },
  CONDUCTOR_MAIL_FROM: { description: 'the From address of job mail', default: '`conductor@<hostname>`' },
  ADMIN_TOKEN: {
    description:
      'a secret (at least 32 characters) stored (hashed) as an admin token on first use; revoking it through the API sticks',
  },
  NEON_WS_PROXY: {
    description:
      'local development only (`npm run dev:edge`): the WebSocket proxy the Neon driver goes through',
  },
  NEON_FETCH_ENDPOINT: {
    description: 'local development only: the SQL-over-HTTP endpoint of the Neon driver',
  },
};
