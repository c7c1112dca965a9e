/**
 * The ports the domain runs over. Implementations are injected by each runtime's entry file
 * (functions/node.ts, later the Workers entry) and by tests; the domain itself imports no driver.
 */
import type { PgDatabase, PgQueryResultHKT } from 'drizzle-orm/pg-core';
import type { Assignment } from '../../agent/src/protocol.ts';
import type * as schema from '../../db/schema.ts';
import type { WorkerStatus } from '../../db/schema.ts';
import type { Mailer } from './notifications.ts';
import type { ProcessMetrics } from './process-metrics.ts';

/** Any drizzle Postgres database or transaction over our schema (node-postgres, PGlite, Neon). */
export type Database = PgDatabase<PgQueryResultHKT, typeof schema>;

/**
 * What the registry keeps about a live worker: exactly the fields of the `worker:<id>` hash. The first six are
 * the contract's; the optional ones describe the node's other resources, as text an operator reads in
 * `redis-cli HGETALL` (lists comma-separated, empty when the node has none).
 */
export interface WorkerEntry {
  worker_id: string;
  cpus: number;
  status: WorkerStatus;
  hostname: string;
  /** UTC, `2025-11-11T10:00:00`. */
  registered_at: string;
  /** UTC, `2025-11-11T10:05:30`. */
  last_heartbeat: string;
  /** MB jobs may use. */
  memory_mb?: number;
  /** The GPUs as `<model>:<index>`: `a100:0,a100:1` (the count is the number of items). */
  gpus?: string;
  /** Generic resources as `<name>:<count>`: `nvme:1,fpga:2`. */
  gres?: string;
  /** `avx512,ssd`. */
  features?: string;
  /** The partitions the agent declared: `gpu,debug`. */
  partitions?: string;
}

/** The optional `worker:<id>` fields, in the order the hash is written. */
export const WORKER_RESOURCE_FIELDS = ['memory_mb', 'gpus', 'gres', 'features', 'partitions'] as const;

/**
 * Resources allocated across the cluster: the live total, or the change one Postgres commit made. GPUs are
 * counted (devices held), generic resources per name.
 */
export interface AllocationVector {
  cpus: number;
  memoryMb: number;
  gpus: number;
  /** Generic resource name -> count; a name with a zero count may be left out. */
  gres: Record<string, number>;
}

/**
 * The cache's keys as read, null where a key is missing: `resource:allocated_cpus`,
 * `resource:allocated_memory_mb`, `resource:allocated_gpus`, `resource:allocated_gres`. Redis keeps no empty
 * hash, so a missing gres hash means nothing allocated while `resource:allocated_cpus` exists, and missing
 * (null) only when that key is missing too.
 */
export interface CachedAllocation {
  cpus: number | null;
  memoryMb: number | null;
  gpus: number | null;
  gres: Record<string, number> | null;
}

/**
 * The live worker registry and the allocation cache (CPUs, memory, GPUs, generic resources): Redis in
 * production (TCP or Upstash REST), an in-process map in the zero-setup local cluster. Every method is one
 * round trip (and one Redis command). It is only ever a cache of liveness and of sums that Postgres holds:
 * callers must survive it throwing.
 */
export interface RegistryStore {
  readonly kind: 'redis' | 'memory';
  /** Writes the `worker:<id>` hash with a TTL (whole seconds) and adds the worker to the liveness index. */
  putWorker(entry: WorkerEntry, ttlSeconds: number): Promise<void>;
  /**
   * Refreshes a live worker: sets last_heartbeat (and status if given), renews the TTL and the index.
   * Returns false, writing nothing, when the key is gone (expired or flushed): the worker must register again.
   */
  touchWorker(id: string, lastHeartbeat: string, ttlSeconds: number, status?: WorkerStatus): Promise<boolean>;
  /**
   * Refreshes many live workers at once (a push channel's heartbeat round: one command whatever their number):
   * as touchWorker for each. Returns the ids whose key was gone (nothing written for them: they must register
   * again).
   */
  touchWorkers(
    entries: readonly { id: string; lastHeartbeat: string }[],
    ttlSeconds: number,
  ): Promise<string[]>;
  /** Sets the status field of a live worker; false when the key is gone. */
  setWorkerStatus(id: string, status: WorkerStatus): Promise<boolean>;
  /**
   * Deletes the key and the index entry. With `registeredAt`, only if the key is that registration's (or
   * gone): a newer registration's key stays. Returns whether it removed them.
   */
  removeWorker(id: string, registeredAt?: string): Promise<boolean>;
  /** Ids of workers whose key has not expired, from the index (never KEYS/SCAN). */
  liveWorkerIds(): Promise<string[]>;
  /**
   * Ids whose TTL ran out, removing them from the index: each expiry is handed out once. A flushed Redis
   * loses its index too, so this is housekeeping: Postgres's last_heartbeat is what judges a worker lost.
   */
  takeExpiredWorkerIds(): Promise<string[]>;
  /**
   * What the reaper needs in one command: the live ids (as liveWorkerIds), and how long the registry has
   * remembered workers (`registry:since`, set by the first registration and by this call when missing): a
   * registry younger than a TTL (flushed, restarted empty) cannot tell a dead worker from one not yet seen
   * again. Also drops expired members from the index, as takeExpiredWorkerIds does.
   */
  reapView(): Promise<{ live: string[]; memoryAgeMs: number }>;
  /** Something may have work for the backstop: bumps `maintenance:epoch`, which ends any quiet marker. */
  noteActivity(): Promise<void>;
  /** `maintenance:epoch` now (0 before any activity): read before a backstop looks for work. */
  activityEpoch(): Promise<number>;
  /**
   * Sets `maintenance:quiet` (for `ttlSeconds`) to `epoch` if the epoch did not move since it was read: the
   * backstop found nothing to do, and no activity came since it looked. Returns whether it was set.
   */
  markQuiet(epoch: number, ttlSeconds: number): Promise<boolean>;
  /** The one command the crons run first (see QuietState). */
  quietState(): Promise<QuietState>;
  /** `resource:allocated_cpus`, or null when the key is missing. */
  getAllocatedCpus(): Promise<number | null>;
  /** Every allocation key at once (one command, so the figures are of one moment). */
  getAllocation(): Promise<CachedAllocation>;
  /**
   * Adds `delta`, the net change of the one Postgres commit numbered `version` (cluster_state.allocation_version
   * after it), to every allocation key (INCRBY/DECRBY, HINCRBY per gres name) in one command: one call per
   * version; a repeated version is ignored. Skipped when a snapshot at `version` or later already counts it.
   * The delta is recorded whole; a key that is missing is not written (the next read refills it from a
   * snapshot, which adds the newer deltas). A number is a change of CPUs alone.
   */
  applyAllocationDelta(delta: number | Partial<AllocationVector>, version: number): Promise<void>;
  /**
   * Sets every allocation key from a Postgres snapshot taken at `version`, keeping the deltas newer than
   * `version` that were applied meanwhile. Ignored (applied=false) when a newer snapshot is already in,
   * unless `replacing` names that newer snapshot's version (Postgres went back: restore, failover). A
   * snapshot of another `epoch` (another database's history) replaces whatever is there. Either reset drops
   * the recorded deltas. Returns what the cache held before, for drift reports, and what it holds now (the
   * snapshot's own figures where the snapshot was stale and a key is missing). A number is a snapshot of CPUs
   * alone: the other resources are taken as none allocated.
   */
  setAllocationSnapshot(
    allocated: number | AllocationVector,
    version: number,
    options?: SnapshotOptions,
  ): Promise<SnapshotResult>;
  ping(): Promise<void>;
}

/** What the crons read first, to leave Postgres alone while the cluster is idle. */
export interface QuietState {
  /** The quiet marker matches the activity epoch: no activity since a backstop found nothing to do. */
  quiet: boolean;
  /** A worker key expired: the reaper has work. */
  expiredWorkers: boolean;
  /** The cached allocated CPUs are 0. */
  allocationEmpty: boolean;
  /** Live worker keys, and the CPUs they declare (the statistics line, without Postgres). */
  liveWorkers: number;
  liveCpus: number;
}

export interface SnapshotOptions {
  /** The Postgres history the snapshot belongs to (cluster_state.allocation_epoch). */
  epoch?: string;
  /** Replace the cache's snapshot at this (newer) version: Postgres's history went back. */
  replacing?: number;
}

export interface SnapshotResult {
  applied: boolean;
  /** `resource:allocated_cpus` before, null when it was missing. */
  previous: number | null;
  /** `resource:allocated_cpus` now. */
  value: number;
  /** Every allocation key before. */
  previousAllocation: CachedAllocation;
  /** Every allocation key now. */
  allocation: AllocationVector;
  /** The version of the snapshot the cache holds now (a newer one than given when this one was stale). */
  version: number;
  /** Why the cache started over: another epoch, or a replaced newer version; null when it did not. */
  reset: 'epoch' | 'version' | null;
}

/**
 * A runtime's push channel to agents (a WebSocket per agent): Workers hands the upgrade to a Durable Object,
 * Node to its own hub. The route checks the session before calling it.
 */
export interface ChannelPort {
  /** Accepts a validated channel upgrade: Workers answers the Durable Object's 101, Node a marker its upgrade handler acts on. */
  accept(
    request: Request,
    worker: { workerId: string; session: string; generation: number },
  ): Promise<Response>;
}

/** Wakes long-polling claims when a worker gets work or a cancel. Per process; claims also re-check on a timer. */
export interface WorkNotifier {
  /**
   * `jobs`: the assignments a scheduling pass just placed on the worker, which a push channel carries in its
   * wake (docs/agents.md, "The push channel"); without them the wake only says "claim".
   */
  notify(workerId: string, jobs?: readonly Assignment[]): void;
  /** Resolves on notify(workerId), after `ms`, or when `signal` aborts. */
  wait(workerId: string, ms: number, signal?: AbortSignal): Promise<void>;
}

export interface Logger {
  info(message: string, fields?: Record<string, unknown>): void;
  warn(message: string, fields?: Record<string, unknown>): void;
  error(message: string, fields?: Record<string, unknown>): void;
}

/** Slurm's SchedulerType values: FIFO with backfill by time limits, or strict FIFO (nothing on a held node). */
export const SCHEDULER_TYPES = ['sched/backfill', 'sched/builtin'] as const;
export type SchedulerType = (typeof SCHEDULER_TYPES)[number];

/** Slurm's PriorityUsageResetPeriod values (lowercase). */
export const USAGE_RESET_PERIODS = ['none', 'daily', 'weekly', 'monthly', 'quarterly', 'yearly'] as const;
export type UsageResetPeriod = (typeof USAGE_RESET_PERIODS)[number];

export interface ConductorConfig {
  /** TTL of `worker:<id>` keys, and how long a silent worker is given before it is declared down. */
  workerTtlSeconds: number;
  heartbeatIntervalSeconds: number;
  /** The scheduling (and reaping) backstop timer on Node. */
  scheduleIntervalSeconds: number;
  cacheSyncIntervalSeconds: number;
  statsIntervalSeconds: number;
  /** Longest a claim long-poll waits before answering empty. */
  claimWaitSeconds: number;
  /**
   * How long an assignment handed to a session stays out of that session's claims while its `started`
   * report is on the way. Later claims hand it out again, so a lost claim answer costs this long, no more.
   */
  claimRedeliverySeconds: number;
  /**
   * An assignment still not started this long after its placement (its agent never reported it started:
   * an agent that cannot start it and does not say so) ends FAILED and frees its CPUs. The backstop checks;
   * the clock starts again when reaping resumes after the control plane was away.
   */
  startDeadlineSeconds: number;
  /** Most agent reports (started, finish) written in one statement when they arrive together; 1: no batching. */
  reportBatchMax: number;
  /**
   * Most jobs one scheduling pass places, and the page in which it reads the pending queue: it reads on past
   * jobs that can neither start nor reserve a worker, up to 10 pages.
   */
  scheduleBatchSize: number;
  /**
   * The highest job priority a caller without the admin scope may set (lowering is always allowed): raising
   * a job ahead of others' is an operator's right, as in Slurm.
   */
  priorityCeiling: number;
  /** Slurm's priority/multifactor settings (functions/domain/priority.ts). */
  priority: PriorityConfig;
  /**
   * Slurm's AccountingStorageEnforce=associations: a job's account must be one its owner belongs to (else a
   * 400 invalid_account). Off (Slurm's default): any account name is accepted and recorded.
   */
  enforceAssociations: boolean;
  /**
   * Slurm's PriorityUsageResetPeriod: where the CPU-minutes counted against GrpTRESMins (grp_cpu_mins) start
   * (`none`: all recorded usage).
   */
  usageResetPeriod: UsageResetPeriod;
  /**
   * Slurm's SchedulerType: `sched/backfill` lets a later job start on a node held for a waiting one when its
   * time limit ends it by the holder's planned start; `sched/builtin` never does (FIFO).
   */
  schedulerType: SchedulerType;
  /**
   * `auto`: every route but health needs a token once a (non-internal) token exists, and none is needed
   * before (the Node server on loopback). `required`: always (Workers, and Node beyond loopback).
   */
  auth: 'auto' | 'required';
  /**
   * The URLs browsers use to reach this server besides its addresses and localhost (CONDUCTOR_PUBLIC_URL):
   * their names are accepted as Host on loopback, and their origins may write (functions/http/same-origin.ts).
   */
  publicOrigins?: readonly string[];
  /** SHA-256 (hex) of the Workers `ADMIN_TOKEN` binding: stored as an admin token the first time it is used. */
  bootstrapAdminTokenHash?: string;
  /** Submissions per second per token (webhook, or the anonymous caller); 0 turns the limit off. */
  submitRatePerSecond: number;
  /** How many submissions a token may make at once before the rate applies. */
  submitBurst: number;
  /**
   * Days a finished job's stored output (job_output) is kept after its end_time; 0 keeps it forever. The
   * backstop deletes what is older, and the logs route then answers 410 `logs_expired`.
   */
  logRetentionDays: number;
  /** A followed log stream (SSE) sends a `: keep-alive` comment after this long without any other line. */
  logKeepAliveMs: number;
  /**
   * How many times a `requeue` job goes back to the queue because its node was lost; the next loss ends it
   * NODE_FAIL (a job that takes its node down must not go round the cluster forever). 0: never requeued.
   */
  maxRequeues: number;
  /**
   * A job's crash limit when neither it nor its partition sets one: the n-th time its node is lost while it
   * runs (started) ends it NODE_FAIL whatever requeues it has left (HyperQueue's crash limit). 0: none.
   */
  crashLimit: number;
  /**
   * Seconds a job requeued automatically (lost node, or non-zero exit with retry_on_failure) waits before it
   * may start again, when neither it nor its partition sets a back-off; doubled with each requeue it had
   * before, at most MAX_RETRY_BACKOFF_S. 0: at once.
   */
  retryBackoffSeconds: number;
  /**
   * Slurm's MaxArraySize: array task indexes are below it, and so is an array's task count (sbatch `--array`
   * beyond it is refused with 400 invalid_array). CONDUCTOR_MAX_ARRAY_SIZE; default 100001 (Slurm's is 1001).
   */
  maxArraySize: number;
  /** Most live-log followers (SSE streams) of one job at once, per process (isolate); 0: no limit. */
  logFollowersPerJob: number;
  /** The cluster's name, which jobs see as SLURM_CLUSTER_NAME. */
  clusterName: string;
  /** Most live-log followers of one token (or of all anonymous callers) at once, per process; 0: no limit. */
  logFollowersPerToken: number;
  /**
   * Slurm's DependencyParameters=kill_invalid_depend: a job whose dependency can never be met is cancelled,
   * unless it was submitted with kill_on_invalid_dep false (sbatch --kill-on-invalid-dep=no).
   */
  killInvalidDepend: boolean;
  /** Event notifications: the first retry waits this long, each next one twice as long, up to the max. */
  notifyRetryBaseSeconds: number;
  notifyRetryMaxSeconds: number;
  /** Attempts before a delivery is given up (state failed; a replay sends it again). */
  notifyMaxAttempts: number;
  /** How long a receiver may take to answer. */
  notifyTimeoutSeconds: number;
  /** How often the Node server looks for due deliveries (Workers: the minute cron). */
  notifyIntervalSeconds: number;
}

/**
 * Slurm's PriorityWeight* (each factor is in [0, 1], so a weight is the most that factor adds),
 * PriorityDecayHalfLife, PriorityMaxAge and PriorityCalcPeriod, in seconds, and the QOS priorities (Slurm's
 * `sacctmgr modify qos ... set priority=`; a QOS not named has 0).
 */
export interface PriorityConfig {
  weightAge: number;
  weightFairshare: number;
  weightJobSize: number;
  weightPartition: number;
  weightQos: number;
  decayHalfLifeS: number;
  maxAgeS: number;
  calcPeriodS: number;
  qos: Readonly<Record<string, number>>;
}

export const DEFAULT_CONFIG: ConductorConfig = {
  workerTtlSeconds: 60,
  heartbeatIntervalSeconds: 30,
  scheduleIntervalSeconds: 5,
  cacheSyncIntervalSeconds: 300,
  statsIntervalSeconds: 60,
  claimWaitSeconds: 30,
  claimRedeliverySeconds: 5,
  startDeadlineSeconds: 120,
  reportBatchMax: 500,
  scheduleBatchSize: 1000,
  priorityCeiling: 0,
  enforceAssociations: false,
  usageResetPeriod: 'none',
  schedulerType: 'sched/backfill',
  priority: {
    weightAge: 1000,
    weightFairshare: 10_000,
    weightJobSize: 0,
    weightPartition: 1000,
    weightQos: 0,
    decayHalfLifeS: 7 * 86_400,
    maxAgeS: 7 * 86_400,
    calcPeriodS: 300,
    qos: {},
  },
  auth: 'auto',
  submitRatePerSecond: 50,
  submitBurst: 500,
  logRetentionDays: 30,
  logKeepAliveMs: 15_000,
  maxRequeues: 3,
  crashLimit: 5,
  retryBackoffSeconds: 0,
  maxArraySize: 100_001,
  logFollowersPerJob: 10,
  logFollowersPerToken: 20,
  clusterName: 'conductor',
  killInvalidDepend: false,
  notifyRetryBaseSeconds: 5,
  notifyRetryMaxSeconds: 3600,
  notifyMaxAttempts: 18,
  notifyTimeoutSeconds: 10,
  notifyIntervalSeconds: 1,
};

/** A rate for a key: `perSecond` on average, `burst` at once. */
export interface RateRule {
  perSecond: number;
  burst: number;
}

/**
 * Per-key rate limits (GCRA, a token bucket without a refill timer). Redis when there is one, so that the
 * limit holds across isolates and servers (one Lua script, one command per call); in-process otherwise.
 */
export interface RateLimiter {
  readonly kind: 'redis' | 'memory';
  /**
   * Takes `cost` units (default 1) from `key`, all or none: allowed, or not and how many seconds until it
   * would be. A cost above the rule's burst is never allowed.
   */
  take(key: string, rule: RateRule, cost?: number): Promise<{ allowed: boolean; retryAfterSeconds: number }>;
}

/** Everything the domain needs; one per app instance. */
export interface Ports {
  db: Database;
  registry: RegistryStore;
  notifier: WorkNotifier;
  logger: Logger;
  config: ConductorConfig;
  /** This process's counters for GET /metrics (createContext makes them). */
  metrics?: ProcessMetrics;
  /** Submission rate limits; an in-process limiter when none is given. */
  rateLimiter?: RateLimiter;
  /** Sends job mail (`mail_type`); none: mail is accepted and not sent (the deliveries are marked skipped). */
  mailer?: Mailer;
  /** The push channel to agents; none: the channel route answers 404 and agents stay on HTTP long-polls. */
  channel?: ChannelPort;
  /** Runs work after the response on runtimes that need to be told (Workers' waitUntil); Node just lets it run. */
  defer(work: Promise<unknown>): void;
}
