import { sql } from 'drizzle-orm';
import {
  bigint,
  bigserial,
  boolean,
  check,
  doublePrecision,
  foreignKey,
  index,
  integer,
  jsonb,
  numeric,
  pgSequence,
  pgTable,
  primaryKey,
  smallint,
  text,
  timestamp,
  uniqueIndex,
} from 'drizzle-orm/pg-core';

export const JOB_STATES = [
  'PENDING',
  'RUNNING',
  'COMPLETED',
  'FAILED',
  'CANCELLED',
  'TIMEOUT',
  'NODE_FAIL',
  'OUT_OF_MEMORY',
] as const;
export type JobState = (typeof JOB_STATES)[number];
export const FINAL_STATES: readonly JobState[] = [
  'COMPLETED',
  'FAILED',
  'CANCELLED',
  'TIMEOUT',
  'NODE_FAIL',
  'OUT_OF_MEMORY',
];

/** Slurm's partition states: UP takes and starts jobs, DRAIN starts queued ones but takes no new ones, DOWN takes
 * jobs but starts none, INACTIVE does neither. */
export const PARTITION_STATES = ['UP', 'DOWN', 'DRAIN', 'INACTIVE'] as const;
export type PartitionState = (typeof PARTITION_STATES)[number];
export const PLACEMENT_POLICIES = ['pack', 'spread'] as const;
export type PlacementPolicy = (typeof PLACEMENT_POLICIES)[number];

/** Who held a pending job (Slurm's JobHeldUser / JobHeldAdmin): only an admin releases an admin's hold. */
export const HOLD_KINDS = ['user', 'admin'] as const;
export type HoldKind = (typeof HOLD_KINDS)[number];
export const OPEN_MODES = ['append', 'truncate'] as const;
export interface TimeLimitSignalColumn {
  signal: string;
  before_s: number;
  batch_only: boolean;
}
/** Slurm's priority factors of a pending job, each in [0, 1] (sprio's columns). */
export interface PriorityFactorsColumn {
  age: number;
  fairshare: number;
  jobsize: number;
  partition: number;
  qos: number;
}
export interface PendingSignalColumn {
  signal: string;
  batch_only: boolean;
}

export interface GpuDevice {
  index: number;
  model: string;
}

export const WORKER_STATUSES = ['ready', 'draining', 'down'] as const;
export type WorkerStatus = (typeof WORKER_STATUSES)[number];

const tstz = (name: string) => timestamp(name, { withTimezone: true, mode: 'date' });

/** Durable record of every node ever seen. Liveness lives in Redis; this row is the source of truth for capacity. */
export const workers = pgTable(
  'workers',
  {
    id: text('id').primaryKey(),
    hostname: text('hostname').notNull(),
    cpus: integer('cpus').notNull(),
    allocatedCpus: integer('allocated_cpus').notNull().default(0),
    status: text('status', { enum: WORKER_STATUSES }).notNull().default('ready'),
    /**
     * An operator's drain (set by drain, cleared only by undrain), kept apart from liveness so that a restart
     * or a reap does not lose it. A drained worker that is up has the status 'draining'.
     */
    drained: boolean('drained').notNull().default(false),
    /** Changes on every registration: identifies one run of one agent. */
    session: text('session').notNull(),
    registeredAt: tstz('registered_at').notNull().defaultNow(),
    lastHeartbeat: tstz('last_heartbeat').notNull().defaultNow(),
    /**
     * This session opened the push channel: its heartbeats are pings that refresh the registry only, so
     * last_heartbeat is its registration's (or a Redis outage's fallback) and it counts live until the reaper,
     * judging by the registry, declares it down. Registration resets it.
     */
    channel: boolean('channel').notNull().default(false),
    /** Counts the channel's openings: a socket's close ends its own opening only, never a newer one. */
    channelGeneration: integer('channel_generation').notNull().default(0),
    downAt: tstz('down_at'),
    downReason: text('down_reason'),
    labels: jsonb('labels').$type<Record<string, string>>().notNull().default({}),
    agentVersion: text('agent_version'),
    /**
     * The token that registered this worker (null: registered on the open local cluster). Only that token
     * may heartbeat, claim and report as this worker, until it is revoked.
     */
    tokenId: bigint('token_id', { mode: 'number' }),
    /** MB jobs may use (0: the agent reports none, and jobs asking for memory do not go there). */
    memoryMb: integer('memory_mb').notNull().default(0),
    allocatedMemoryMb: integer('allocated_memory_mb').notNull().default(0),
    gpus: jsonb('gpus').$type<GpuDevice[]>().notNull().default([]),
    /** One bit per GPU index the node has; `gpus_used` has the bits of the GPUs assigned to running jobs. */
    gpuMask: bigint('gpu_mask', { mode: 'number' }).notNull().default(0),
    gpusUsed: bigint('gpus_used', { mode: 'number' }).notNull().default(0),
    allocatedGpus: integer('allocated_gpus').notNull().default(0),
    features: text('features').array().notNull().default(sql`'{}'::text[]`),
    /** The partitions the agent declared (none: the default partition, unless an admin's node list names it). */
    partitions: text('partitions').array().notNull().default(sql`'{}'::text[]`),
    memoryEnforcement: text('memory_enforcement'),
  },
  (t) => [
    check('workers_allocation_fits', sql`${t.allocatedCpus} >= 0 AND ${t.allocatedCpus} <= ${t.cpus}`),
    check(
      'workers_memory_fits',
      sql`${t.allocatedMemoryMb} >= 0 AND ${t.allocatedMemoryMb} <= ${t.memoryMb}`,
    ),
    // A GPU is used by one job at most: assignments are OR-ed in, so two jobs given the same index would leave
    // fewer bits set than GPUs counted, and no job can hold an index the node does not have.
    check(
      'workers_gpus_fit',
      sql`${t.gpusUsed} & ~${t.gpuMask} = 0 AND ${t.gpusUsed} >= 0 AND ${t.allocatedGpus} = bit_count(${t.gpusUsed}::bit(64))`,
    ),
    check('workers_drained_not_ready', sql`NOT (${t.drained} AND ${t.status} = 'ready')`),
    index('workers_status_heartbeat_idx').on(t.status, t.lastHeartbeat),
  ],
);

/** Generic resources of a node (`GRES=nvme:1,license_matlab:2`), each with what running jobs hold of it. */
export const workerGres = pgTable(
  'worker_gres',
  {
    workerId: text('worker_id')
      .notNull()
      .references(() => workers.id, { onDelete: 'cascade' }),
    name: text('name').notNull(),
    total: integer('total').notNull(),
    allocated: integer('allocated').notNull().default(0),
  },
  (t) => [
    primaryKey({ columns: [t.workerId, t.name] }),
    check('worker_gres_fits', sql`${t.allocated} >= 0 AND ${t.allocated} <= ${t.total}`),
  ],
);

/**
 * Slurm's partitions: a named set of nodes with limits and defaults. Agents create the ones they name
 * (`created_by = 'agent'`); an admin creates and changes them. Exactly one is the default.
 */
export const partitions = pgTable(
  'partitions',
  {
    name: text('name').primaryKey(),
    isDefault: boolean('is_default').notNull().default(false),
    state: text('state', { enum: PARTITION_STATES }).notNull().default('UP'),
    /** A hostlist (`node[01-16],gpu01`) of the nodes in it besides those whose agents declare it. */
    nodes: text('nodes'),
    maxTimeS: integer('max_time_s'),
    defaultTimeS: integer('default_time_s'),
    maxCpusPerNode: integer('max_cpus_per_node'),
    defMemPerCpu: integer('def_mem_per_cpu'),
    maxMemPerCpu: integer('max_mem_per_cpu'),
    allowAccounts: text('allow_accounts').array(),
    priorityTier: integer('priority_tier').notNull().default(1),
    policy: text('policy', { enum: PLACEMENT_POLICIES }).notNull().default('pack'),
    /** The retry policy of its jobs that set none (null: the cluster's setting); see jobs.maxRequeues. */
    maxRequeues: integer('max_requeues'),
    retryOnFailure: boolean('retry_on_failure'),
    retryBackoffS: integer('retry_backoff_s'),
    crashLimit: integer('crash_limit'),
    createdBy: text('created_by', { enum: ['admin', 'agent'] })
      .notNull()
      .default('admin'),
    createdAt: tstz('created_at').notNull().defaultNow(),
  },
  (t) => [
    uniqueIndex('partitions_one_default').on(t.isDefault).where(sql`${t.isDefault}`),
    check(
      'partitions_state_known',
      sql`${t.state} IN ('UP', 'DOWN', 'DRAIN', 'INACTIVE') AND ${t.policy} IN ('pack', 'spread')`,
    ),
  ],
);

export const jobs = pgTable(
  'jobs',
  {
    id: bigserial('id', { mode: 'number' }).primaryKey(),
    name: text('name').notNull(),
    script: text('script').notNull(),
    cpus: integer('cpus').notNull(),
    state: text('state', { enum: JOB_STATES }).notNull().default('PENDING'),
    /** Slurm's `code:signal`, set when the job ends. */
    exitCode: text('exit_code'),
    /** The worker the job runs or ran on. */
    node: text('node'),
    account: text('account'),
    partition: text('partition'),
    /** Seconds (the API speaks Slurm's minutes and time strings); null means no limit. */
    timeLimitSeconds: integer('time_limit_s'),
    workDir: text('work_dir'),
    environment: jsonb('environment').$type<Record<string, string>>().notNull().default({}),
    /**
     * The computed priority the queue is served by (Slurm's priority/multifactor: the weighted factors plus
     * `requested_priority`), written at submit and by the periodic recalculation (functions/domain/priority.ts).
     */
    priority: integer('priority').notNull().default(0),
    /** The submitter's `priority` (up to CONDUCTOR_PRIORITY_CEILING without the admin scope): the adjustment. */
    requestedPriority: integer('requested_priority').notNull().default(0),
    /** The factors (each in [0, 1]) `priority` was last computed from, for sprio; null: not computed. */
    priorityFactors: jsonb('priority_factors').$type<PriorityFactorsColumn>(),
    requeue: boolean('requeue').notNull().default(false),
    /** Incremented on every placement; reports must name the attempt they belong to (fencing). */
    attempt: integer('attempt').notNull().default(0),
    /** Times the job went back to the queue (SLURM_RESTART_COUNT); automatic requeues are capped by `maxRequeues`. */
    requeues: integer('requeues').notNull().default(0),
    /**
     * The retry policy (null: its partition's, else the cluster's): automatic requeues at most (after its node
     * was lost with `requeue`, or after a non-zero exit with `retryOnFailure`), the back-off before a requeued
     * attempt may start (doubling with each requeue), and the crash limit (the n-th loss of its node while it
     * ran ends it NODE_FAIL; 0: none).
     */
    maxRequeues: integer('max_requeues'),
    retryOnFailure: boolean('retry_on_failure'),
    retryBackoffS: integer('retry_backoff_s'),
    crashLimit: integer('crash_limit'),
    /** Times its node was lost while it ran (started): what the crash limit counts. */
    crashes: integer('crashes').notNull().default(0),
    /**
     * Set by the statement that puts a RUNNING job back in the queue: how that attempt ended (NODE_FAIL, FAILED,
     * REQUEUED), which the job_attempts trigger records.
     */
    requeuedFrom: text('requeued_from'),
    /** Set when the assigned agent picked the job up (the session that did). */
    claimedSession: text('claimed_session'),
    claimedAt: tstz('claimed_at'),
    cancelRequested: boolean('cancel_requested').notNull().default(false),
    /** Why the job is pending, or why it ended the way it did. */
    reason: text('reason'),
    submitTime: tstz('submit_time').notNull().defaultNow(),
    startTime: tstz('start_time'),
    endTime: tstz('end_time'),
    /** The account whose job this is (the submitting token's owner); null on the open local cluster. */
    owner: text('owner'),
    /** The token that submitted it (null: anonymous on the open local cluster, or a webhook). */
    submittedBy: bigint('submitted_by', { mode: 'number' }),
    /**
     * PENDING: the worker this blocked job holds until it starts (nothing else is placed there). The scheduler
     * sets and clears it; a worker that is no longer ready and live frees it at the next pass.
     */
    reservedWorker: text('reserved_worker'),
    /** MB on its node (per CPU requests are multiplied out at submit); null: none asked, no limit. */
    memoryMb: integer('memory_mb'),
    /** `--mem-per-cpu` as asked (MB), kept so that the job sees SLURM_MEM_PER_CPU; null: not asked per CPU. */
    memoryPerCpu: integer('memory_per_cpu'),
    /** Where and from which host it was submitted (SLURM_SUBMIT_DIR, SLURM_SUBMIT_HOST); null: not said. */
    submitDir: text('submit_dir'),
    submitHost: text('submit_host'),
    /** `--ntasks` and `--cpus-per-task` as asked (`cpus` is what it holds); null: not asked. */
    ntasks: integer('ntasks'),
    cpusPerTask: integer('cpus_per_task'),
    gpus: integer('gpus').notNull().default(0),
    /** The GPU model asked for (`a100`); null: any. */
    gpuType: text('gpu_type'),
    /** Generic resources other than GPUs: name -> count. */
    gres: jsonb('gres').$type<Record<string, number>>().notNull().default({}),
    featureConstraint: text('feature_constraint'),
    exclusive: boolean('exclusive').notNull().default(false),
    /** `-w`: the node it must run on; `-x`: nodes it must not. */
    nodelist: text('nodelist').array(),
    excludeNodes: text('exclude_nodes').array().notNull().default(sql`'{}'::text[]`),
    /** A user's or an admin's hold: the job stays PENDING and is not placed until released. */
    held: text('held', { enum: HOLD_KINDS }),
    /** A line for people: why the job waits (its `reason` is Slurm's code). */
    reasonDetail: text('reason_detail'),
    /** GPU indexes assigned on `node` (set at placement). */
    allocatedGpus: integer('allocated_gpus').array(),
    /** The quality of service asked for (SLURM_JOB_QOS); null: none. */
    qos: text('qos'),
    /** sbatch `--begin`: the job is not placed before it; null: at once. */
    beginTime: tstz('begin_time'),
    /** When it became eligible: its submit time, or its begin time if later (a hold's release does not move it). */
    eligibleTime: tstz('eligible_time').notNull().defaultNow(),
    /** sbatch `-o`, `-e`, `-i`: file name patterns as given, expanded by the agent; null: Slurm's defaults. */
    stdout: text('stdout'),
    stderr: text('stderr'),
    stdin: text('stdin'),
    openMode: text('open_mode', { enum: OPEN_MODES }),
    /** sbatch `--export` as given (SLURM_EXPORT_ENV); the variables themselves are in `environment`. */
    exportEnv: text('export_env'),
    /** sbatch `--signal`: a signal to send before the time limit. */
    signal: jsonb('signal').$type<TimeLimitSignalColumn>(),
    comment: text('comment'),
    /** Peak resident memory of the job's processes (KiB), as its agent reported it at the end. */
    maxRssKb: bigint('max_rss_kb', { mode: 'number' }),
    /** Who cancelled it: the cancelling token's owner, or `admin`. */
    cancelledBy: text('cancelled_by'),
    /** Signals asked for (scancel --signal) and not yet handed to the agent running the job. */
    signalPending: jsonb('signal_pending').$type<PendingSignalColumn[]>(),
    /**
     * The attempt a requeue (scontrol requeue) took off a running node: that node's agent is told to kill it
     * (in its cancel list) for an hour, whatever happens to the job meanwhile.
     */
    fencedNode: text('fenced_node'),
    fencedAttempt: integer('fenced_attempt'),
    fencedAt: tstz('fenced_at'),
    /** sbatch `--dependency` as given (for display); its items are in job_dependencies. Null: none. */
    dependency: text('dependency'),
    /** `?`: any one item of job_dependencies satisfied is enough; false: all of them must be. */
    dependencyAny: boolean('dependency_any').notNull().default(false),
    /** sbatch `--kill-on-invalid-dep=yes`: a dependency that can never be met cancels the job. */
    killOnInvalidDep: boolean('kill_on_invalid_dep').notNull().default(false),
    /**
     * The dependency is not met yet: set at submission, cleared once by the pass that finds it met (Slurm
     * clears a satisfied dependency too). The scheduling statements test this column, not job_dependencies.
     */
    dependencyPending: boolean('dependency_pending').notNull().default(false),
    /**
     * Resolving a dependency again only when something it waits for moved: the trigger
     * jobs_dependency_wakeup bumps `dependency_epoch` of the dependants of a job that started or ended (or
     * of a task of an array they name); a pass resolves the waiting jobs whose epoch is not the one it last
     * checked, and records the epoch it read (a bump meanwhile leaves the job due again).
     */
    dependencyEpoch: integer('dependency_epoch').notNull().default(0),
    dependencyChecked: integer('dependency_checked').notNull().default(-1),
    /**
     * sbatch `--mail-type`, expanded (ALL -> BEGIN, END, FAIL, REQUEUE; TIME_LIMIT -> the three thresholds):
     * the events mailed to `mail_user` (or the owner). Null: none.
     */
    mailType: text('mail_type').array(),
    /** sbatch `--mail-user`; null: the owner. */
    mailUser: text('mail_user'),
    /** sbatch `--array`: the array this task belongs to (the id of its first task, job_arrays); null: no array. */
    arrayJobId: bigint('array_job_id', { mode: 'number' }),
    /** The task's index in its array (SLURM_ARRAY_TASK_ID); null: no array. */
    arrayTaskId: integer('array_task_id'),
    /** sbatch `--reservation`: the admin reservation it runs in (reservations.name); null: none. */
    reservation: text('reservation'),
    /**
     * PENDING: when the scheduler plans to start it (squeue --start), by the time limits of the jobs running
     * where it holds a worker; null: not planned.
     */
    plannedStartTime: tstz('planned_start_time'),
  },
  (t) => [
    check('jobs_cpus_positive', sql`${t.cpus} > 0`),
    check('jobs_open_mode_known', sql`${t.openMode} IS NULL OR ${t.openMode} IN ('append', 'truncate')`),
    check('jobs_resources_valid', sql`${t.gpus} >= 0 AND (${t.memoryMb} IS NULL OR ${t.memoryMb} >= 0)`),
    // The scheduler's queue: only pending rows, in the order they are served.
    // Jobs waiting for a dependency are not in it: a pass would read past every one of them (a 1,000-deep
    // chain is 999 such rows) on each queue read.
    index('jobs_pending_queue_idx')
      .on(t.priority.desc(), t.submitTime, t.id)
      .where(sql`${t.state} = 'PENDING' AND NOT ${t.dependencyPending}`),
    index('jobs_node_active_idx').on(t.node).where(sql`${t.state} = 'RUNNING'`),
    index('jobs_reserved_worker_idx')
      .on(t.reservedWorker)
      .where(sql`${t.state} = 'PENDING' AND ${t.reservedWorker} IS NOT NULL`),
    index('jobs_state_id_idx').on(t.state, t.id.desc()),
    index('jobs_owner_id_idx').on(t.owner, t.id.desc()),
    // What association limits count: an account's (and its users') jobs pending or running.
    index('jobs_account_active_idx')
      .on(t.account, t.owner)
      .where(sql`${t.state} IN ('PENDING', 'RUNNING') AND ${t.account} IS NOT NULL`),
    // The jobs that started recently (GET /metrics' queue wait histogram), without reading the history.
    index('jobs_start_time_idx').on(t.startTime),
    // The jobs waiting for their begin time (a settled pass gives them their reason), without reading the queue.
    index('jobs_pending_begin_idx')
      .on(t.beginTime)
      .where(sql`${t.state} = 'PENDING' AND ${t.beginTime} IS NOT NULL`),
    // An array's tasks (cancel, hold, release, progress, aftercorr), without reading other jobs.
    index('jobs_array_task_idx').on(t.arrayJobId, t.arrayTaskId).where(sql`${t.arrayJobId} IS NOT NULL`),
    // The running tasks of arrays: what the placing statement counts against a `%N` cap.
    index('jobs_array_running_idx')
      .on(t.arrayJobId)
      .where(sql`${t.state} = 'RUNNING' AND ${t.arrayJobId} IS NOT NULL`),
    index('jobs_fenced_node_idx').on(t.fencedNode).where(sql`${t.fencedNode} IS NOT NULL`),
    // The jobs waiting for a dependency (every pass resolves them), without reading the queue.
    index('jobs_pending_dependency_idx')
      .on(t.id)
      .where(sql`${t.state} = 'PENDING' AND ${t.dependencyPending}`),
    // The waiting jobs a pass resolves: new ones, and those whose targets moved since the last look.
    index('jobs_dependency_due_idx')
      .on(t.id)
      .where(
        sql`${t.state} = 'PENDING' AND ${t.dependencyPending} AND ${t.dependencyEpoch} <> ${t.dependencyChecked}`,
      ),
    // singleton: the active jobs of a name (the pass finds the first of each name and owner).
    index('jobs_active_name_idx').on(t.name).where(sql`${t.state} IN ('PENDING', 'RUNNING')`),
  ],
);

export const RESERVATION_FLAGS = ['MAINT', 'DAILY', 'WEEKLY'] as const;
export type ReservationFlag = (typeof RESERVATION_FLAGS)[number];

/**
 * Slurm's advanced reservations (scontrol create reservation): nodes held over a window, repeated every
 * `period_s` (DAILY, WEEKLY) when set, for the jobs that name it and match its users and accounts. `nodes` are
 * the workers chosen at creation (a node count is resolved then, as Slurm does).
 */
export const reservations = pgTable(
  'reservations',
  {
    name: text('name').primaryKey(),
    startTime: tstz('start_time').notNull(),
    endTime: tstz('end_time').notNull(),
    periodS: integer('period_s'),
    nodes: text('nodes').array().notNull(),
    partition: text('partition'),
    users: text('users').array().notNull().default(sql`'{}'::text[]`),
    accounts: text('accounts').array().notNull().default(sql`'{}'::text[]`),
    flags: text('flags').array().notNull().default(sql`'{}'::text[]`),
    createdAt: tstz('created_at').notNull().defaultNow(),
  },
  (t) => [
    check(
      'reservations_window_valid',
      sql`${t.endTime} > ${t.startTime} AND (${t.periodS} IS NULL OR ${t.endTime} - ${t.startTime} < make_interval(secs => ${t.periodS}))`,
    ),
  ],
);

/**
 * Each ended attempt of a job (a run on a node, from its placement to its end or requeue), written by a row
 * trigger on jobs in the same statement as the transition out of RUNNING, whichever path made it (migration 0013).
 * The current attempt of a RUNNING job is the job row itself.
 */
/**
 * Fair-share per account (Slurm's classic F = 2^(-U/S)), as the last priority recalculation computed it: read
 * by submissions (a job starts with its account's factor) and by sshare. An account missing has no usage: 1.
 */
export const fairshare = pgTable('fairshare', {
  /** The job's account ('' for jobs without one). */
  account: text('account').primaryKey(),
  /** Its normalized shares S (0..1) and normalized decayed usage U (0..1). */
  sharesNorm: doublePrecision('shares_norm').notNull(),
  usageRaw: doublePrecision('usage_raw').notNull(),
  usageNorm: doublePrecision('usage_norm').notNull(),
  factor: doublePrecision('factor').notNull(),
  computedAt: tstz('computed_at').notNull().defaultNow(),
});

export const jobAttempts = pgTable(
  'job_attempts',
  {
    jobId: bigint('job_id', { mode: 'number' })
      .notNull()
      .references(() => jobs.id, { onDelete: 'cascade' }),
    attempt: integer('attempt').notNull(),
    node: text('node'),
    /** Null: its agent never started it. */
    startTime: tstz('start_time'),
    endTime: tstz('end_time').notNull(),
    /** How it ended: a job state, or REQUEUED (put back by a requeue). */
    state: text('state').notNull(),
    exitCode: text('exit_code'),
    reason: text('reason'),
    /** The job went back to the queue after it (another attempt followed or may follow). */
    requeued: boolean('requeued').notNull(),
    /**
     * What the attempt held (its allocation: an exclusive job holds the whole node) and its partition, kept
     * here because the job's next placement overwrites them; null on attempts recorded before migration 0019.
     */
    cpus: integer('cpus'),
    memoryMb: integer('memory_mb'),
    gpus: integer('gpus'),
    partition: text('partition'),
    /** Peak resident memory (KiB) its agent reported; null: none reported. */
    maxRssKb: bigint('max_rss_kb', { mode: 'number' }),
    /** When it could start: the job's eligible or begin time, or the end of its previous attempt if later. */
    eligibleTime: tstz('eligible_time'),
  },
  (t) => [primaryKey({ columns: [t.jobId, t.attempt] })],
);

const usageColumns = {
  /** Start of the UTC hour (usage_hourly) or UTC day (usage_daily). */
  bucket: tstz('bucket').notNull(),
  /** The job's account, owner, partition and node; '' where the job had none. */
  account: text('account').notNull(),
  owner: text('owner').notNull(),
  partition: text('partition').notNull(),
  node: text('node').notNull(),
  /** Allocated resources × the seconds of the bucket the attempts ran in (an attempt is split across buckets). */
  cpuSeconds: numeric('cpu_seconds').notNull().default('0'),
  gpuSeconds: numeric('gpu_seconds').notNull().default('0'),
  memMbSeconds: numeric('mem_mb_seconds').notNull().default('0'),
  wallSeconds: numeric('wall_seconds').notNull().default('0'),
  maxRssKb: bigint('max_rss_kb', { mode: 'number' }),
  /** Attempts that ended in the bucket, of them requeued ones, and jobs that ended there, per end state. */
  attempts: integer('attempts').notNull().default(0),
  requeued: integer('requeued').notNull().default(0),
  completed: integer('completed').notNull().default(0),
  failed: integer('failed').notNull().default(0),
  cancelled: integer('cancelled').notNull().default(0),
  timeout: integer('timeout').notNull().default(0),
  nodeFail: integer('node_fail').notNull().default(0),
  outOfMemory: integer('out_of_memory').notNull().default(0),
  /** Attempts that started in the bucket, and their seconds between eligible and start (queue wait). */
  starts: integer('starts').notNull().default(0),
  waitSeconds: numeric('wait_seconds').notNull().default('0'),
};

/**
 * Usage roll-ups (sreport), kept by a trigger on job_attempts in the transaction that ends each attempt
 * (migration 0019): reports read these, never the jobs. Usage counts when an attempt ends.
 */
export const usageHourly = pgTable('usage_hourly', usageColumns, (t) => [
  primaryKey({ columns: [t.bucket, t.account, t.owner, t.partition, t.node] }),
]);
export const usageDaily = pgTable('usage_daily', usageColumns, (t) => [
  primaryKey({ columns: [t.bucket, t.account, t.owner, t.partition, t.node] }),
]);

/**
 * The cluster's capacity per UTC hour: the CPUs of the live workers, added once a minute with each
 * utilization sample (what sreport calls Reported), kept for good unlike the samples.
 */
export const capacityHourly = pgTable('capacity_hourly', {
  bucket: tstz('bucket').primaryKey(),
  cpuSeconds: numeric('cpu_seconds').notNull().default('0'),
  samples: integer('samples').notNull().default(0),
});

/**
 * Each partition's capacity per UTC hour, added with capacity_hourly from the same samples: the CPUs of the
 * live nodes in it (a node in two partitions counts for both; a partition's max_cpus_per_node caps a node's).
 */
export const capacityPartitionHourly = pgTable(
  'capacity_partition_hourly',
  {
    bucket: tstz('bucket').notNull(),
    partition: text('partition').notNull(),
    cpuSeconds: numeric('cpu_seconds').notNull().default('0'),
    samples: integer('samples').notNull().default(0),
  },
  (t) => [primaryKey({ columns: [t.bucket, t.partition] })],
);

/**
 * sbatch `--array`: one row per array, written in the statement that inserts its tasks. A scheduling pass that
 * places tasks of capped arrays locks their rows (in id order, after the workers), then the placing statement
 * counts each array's RUNNING tasks and places at most `max_running` minus that (the `%N` cap): concurrent
 * passes queue on the row, and each counts with the placements of those before it committed.
 */
export const jobArrays = pgTable(
  'job_arrays',
  {
    /** The id of the array's first task, which is the array's job id (SLURM_ARRAY_JOB_ID). */
    arrayJobId: bigint('array_job_id', { mode: 'number' }).primaryKey(),
    /** The index list as given without its `%N` (`0-999`, `1,3,5-9`). */
    spec: text('spec').notNull(),
    taskCount: integer('task_count').notNull(),
    taskMin: integer('task_min').notNull(),
    taskMax: integer('task_max').notNull(),
    taskStep: integer('task_step').notNull(),
    /** `%N`: at most this many tasks RUNNING at once; null: no cap. */
    maxRunning: integer('max_running'),
    createdAt: tstz('created_at').notNull().defaultNow(),
    /**
     * The array's own BEGIN and END/FAIL event (sbatch --mail-type without ARRAY_TASKS: one for the array, not
     * one per task) was written: set by the statement that writes it, so that exactly one does.
     */
    beginNotified: boolean('begin_notified').notNull().default(false),
    endNotified: boolean('end_notified').notNull().default(false),
  },
  (t) => [check('job_arrays_max_running_positive', sql`${t.maxRunning} IS NULL OR ${t.maxRunning} >= 1`)],
);

/** The items of a job's `--dependency`: what it waits for (the scheduler reads them in its statements). */
export const jobDependencies = pgTable(
  'job_dependencies',
  {
    jobId: bigint('job_id', { mode: 'number' })
      .notNull()
      .references(() => jobs.id, { onDelete: 'cascade' }),
    kind: text('kind', {
      enum: ['after', 'afterany', 'afterok', 'afternotok', 'aftercorr', 'singleton'],
    }).notNull(),
    /** Null for singleton; for aftercorr, the array's job id (the task of the same index is the target). */
    targetJobId: bigint('target_job_id', { mode: 'number' }),
    delayS: integer('delay_s').notNull().default(0),
  },
  (t) => [
    index('job_dependencies_job_idx').on(t.jobId),
    // The dependants of a job that started or ended (the wake-up trigger).
    index('job_dependencies_target_idx').on(t.targetJobId),
    check(
      'job_dependencies_kind_known',
      sql`${t.kind} IN ('after', 'afterany', 'afterok', 'afternotok', 'aftercorr', 'singleton') AND (${t.targetJobId} IS NULL) = (${t.kind} = 'singleton')`,
    ),
  ],
);

export const resourceAllocations = pgTable(
  'resource_allocations',
  {
    id: bigserial('id', { mode: 'number' }).primaryKey(),
    jobId: bigint('job_id', { mode: 'number' })
      .notNull()
      .references(() => jobs.id, { onDelete: 'cascade' }),
    allocatedCpus: integer('allocated_cpus').notNull(),
    nodeName: text('node_name').notNull(),
    released: boolean('released').notNull().default(false),
    allocationTime: tstz('allocation_time').notNull().defaultNow(),
    releasedTime: tstz('released_time'),
    memoryMb: integer('memory_mb').notNull().default(0),
    /** The GPUs held, as bits of their indexes (see workers.gpus_used). */
    gpuMask: bigint('gpu_mask', { mode: 'number' }).notNull().default(0),
    gres: jsonb('gres').$type<Record<string, number>>().notNull().default({}),
  },
  (t) => [
    uniqueIndex('resource_allocations_job_id_key').on(t.jobId),
    // Live allocations only, per node, with their CPUs in the index: per-node lookups and the contract's
    // `SUM(allocated_cpus) ... WHERE released = false` are index-only scans that never touch released history.
    index('resource_allocations_active_cpus_idx')
      .on(t.nodeName, t.allocatedCpus)
      .where(sql`${t.released} = false`),
  ],
);

/**
 * Jobs per state, as deltas: statement-level triggers on `jobs` (migration 0004) append one row per state a
 * statement changed, with its net count (never a zero). `SELECT state, sum(n) ... GROUP BY state` is the exact
 * count of jobs per state in any snapshot, whatever the job history's size; the backstop compacts the rows
 * (one DELETE ... RETURNING feeding one INSERT). Append-only: job transitions never wait on a counter row.
 */
export const jobStateDeltas = pgTable('job_state_deltas', {
  state: text('state', { enum: JOB_STATES }).notNull(),
  n: bigint('n', { mode: 'number' }).notNull(),
});

/**
 * One row. `version` is bumped by every transaction that changes the allocation, while it holds this row's
 * lock, so versions follow commit order: the Redis cache uses them to apply each delta exactly once.
 */
export const clusterState = pgTable(
  'cluster_state',
  {
    id: smallint('id').primaryKey().default(1),
    allocatedCpus: bigint('allocated_cpus', { mode: 'number' }).notNull().default(0),
    allocationVersion: bigint('allocation_version', { mode: 'number' }).notNull().default(0),
    allocatedMemoryMb: bigint('allocated_memory_mb', { mode: 'number' }).notNull().default(0),
    allocatedGpus: bigint('allocated_gpus', { mode: 'number' }).notNull().default(0),
    /**
     * Random, set when the row is made: names this database's allocation history, so that the cache resets
     * on a snapshot from another database (a new one behind the same Redis) instead of keeping the old count.
     */
    allocationEpoch: text('allocation_epoch').notNull().default(sql`gen_random_uuid()::text`),
  },
  (t) => [check('cluster_state_singleton', sql`${t.id} = 1`)],
);

/**
 * One row of housekeeping, kept apart from cluster_state so that it never queues behind allocations.
 */
export const maintenanceState = pgTable(
  'maintenance_state',
  {
    id: smallint('id').primaryKey().default(1),
    /** The last reap pass, and when reaping resumed after a gap: lost-worker judgement waits a TTL after that. */
    reaperSeenAt: tstz('reaper_seen_at'),
    reaperResumedAt: tstz('reaper_resumed_at'),
    /** The last cache sync, and how far the cache was off before it (cache minus Postgres). */
    cacheSyncedAt: tstz('cache_synced_at'),
    cacheDrift: bigint('cache_drift', { mode: 'number' }),
  },
  (t) => [check('maintenance_state_singleton', sql`${t.id} = 1`)],
);

/** Each output stream of a job's current attempt: how many bytes it had in all (its text is in job_output_chunks). */
export const jobOutput = pgTable(
  'job_output',
  {
    jobId: bigint('job_id', { mode: 'number' })
      .notNull()
      .references(() => jobs.id, { onDelete: 'cascade' }),
    stream: text('stream', { enum: ['stdout', 'stderr'] }).notNull(),
    attempt: integer('attempt').notNull(),
    bytes: bigint('bytes', { mode: 'number' }).notNull().default(0),
  },
  (t) => [primaryKey({ columns: [t.jobId, t.stream] })],
);

export const jobOutputChunksSeq = pgSequence('job_output_chunks_seq');

/**
 * A stream's text, one row per upload (append-only, so an upload writes only itself): the stream shows the
 * concatenation in `seq` order, cut to its last 1 MiB of characters. Whole chunks before that are deleted.
 */
export const jobOutputChunks = pgTable(
  'job_output_chunks',
  {
    jobId: bigint('job_id', { mode: 'number' }).notNull(),
    stream: text('stream', { enum: ['stdout', 'stderr'] }).notNull(),
    attempt: integer('attempt').notNull(),
    seq: bigint('seq', { mode: 'number' }).notNull().default(sql`nextval('job_output_chunks_seq')`),
    /** char_length(data) and octet_length(data): what is kept is counted without reading the text. */
    chars: integer('chars').notNull(),
    size: integer('size').notNull(),
    data: text('data').notNull(),
  },
  (t) => [
    primaryKey({ name: 'job_output_chunks_pk', columns: [t.jobId, t.stream, t.attempt, t.seq] }),
    foreignKey({
      name: 'job_output_chunks_stream_fk',
      columns: [t.jobId, t.stream],
      foreignColumns: [jobOutput.jobId, jobOutput.stream],
    }).onDelete('cascade'),
  ],
);

/**
 * Slurm's associations (sacctmgr): the account tree (organisation -> group -> project: `parent`), with the
 * shares fair-share divides by and the limits of the jobs charged to the account and every account under it.
 * A null limit is no limit. jobs.account is a plain name, not a reference: with enforcement off any name is
 * recorded. A scheduling pass that places jobs of a limited account locks the rows of its chain (in name order,
 * after the workers) before the placing statement counts against them (functions/domain/accounts.ts).
 */
export const accounts = pgTable(
  'accounts',
  {
    name: text('name').primaryKey(),
    parent: text('parent'),
    description: text('description').notNull().default(''),
    /** Slurm's Fairshare: the account's shares among its siblings. */
    fairshare: integer('fairshare').notNull().default(1),
    /** MaxJobs: jobs running at once (AssocMaxJobsLimit). */
    maxJobs: integer('max_jobs'),
    /** MaxSubmitJobs: jobs pending or running at once; more is refused at submit. */
    maxSubmitJobs: integer('max_submit_jobs'),
    /** GrpTRES=cpu: CPUs allocated at once (AssocGrpCpuLimit). */
    grpCpus: integer('grp_cpus'),
    /** GrpTRES=gres/gpu: GPUs allocated at once (AssocGrpGRES). */
    grpGpus: integer('grp_gpus'),
    /** MaxWall: the longest time limit a job may have; a job without one gets it. */
    maxWallS: integer('max_wall_s'),
    /** GrpTRESMins=cpu: CPU-minutes per usage period (AssocGrpCPUMinutesLimit). */
    grpCpuMins: bigint('grp_cpu_mins', { mode: 'number' }),
    createdAt: tstz('created_at').notNull().defaultNow(),
  },
  (t) => [
    foreignKey({ columns: [t.parent], foreignColumns: [t.name], name: 'accounts_parent_fkey' }),
    index('accounts_parent_idx').on(t.parent),
    check(
      'accounts_values_valid',
      sql`${t.parent} IS DISTINCT FROM ${t.name} AND ${t.fairshare} >= 0 AND ${t.maxJobs} >= 0 AND ${t.maxSubmitJobs} >= 0
          AND ${t.grpCpus} >= 0 AND ${t.grpGpus} >= 0 AND ${t.maxWallS} > 0 AND ${t.grpCpuMins} >= 0`,
    ),
  ],
);

/**
 * A user (a token owner) in an account: Slurm's user association, with the same limits for that user's jobs
 * in that account. A user has at most one default account: the one their jobs are charged to when they name none.
 */
export const accountUsers = pgTable(
  'account_users',
  {
    account: text('account')
      .notNull()
      .references(() => accounts.name, { onDelete: 'cascade' }),
    userName: text('user_name').notNull(),
    isDefault: boolean('is_default').notNull().default(false),
    fairshare: integer('fairshare').notNull().default(1),
    maxJobs: integer('max_jobs'),
    maxSubmitJobs: integer('max_submit_jobs'),
    grpCpus: integer('grp_cpus'),
    grpGpus: integer('grp_gpus'),
    maxWallS: integer('max_wall_s'),
    grpCpuMins: bigint('grp_cpu_mins', { mode: 'number' }),
    createdAt: tstz('created_at').notNull().defaultNow(),
  },
  (t) => [
    primaryKey({ columns: [t.account, t.userName] }),
    index('account_users_user_idx').on(t.userName),
    uniqueIndex('account_users_one_default').on(t.userName).where(sql`${t.isDefault}`),
    check(
      'account_users_values_valid',
      sql`${t.fairshare} >= 0 AND ${t.maxJobs} >= 0 AND ${t.maxSubmitJobs} >= 0 AND ${t.grpCpus} >= 0
          AND ${t.grpGpus} >= 0 AND ${t.maxWallS} > 0 AND ${t.grpCpuMins} >= 0`,
    ),
  ],
);

/** What a token may do. `agent` tokens can do nothing else (they are never combined with another scope). */
export const TOKEN_SCOPES = ['admin', 'jobs:write', 'jobs:read', 'agent'] as const;
export type TokenScope = (typeof TOKEN_SCOPES)[number];

/**
 * API and agent tokens. Only the SHA-256 of a token is stored (`token_hash`, hex): the token itself is shown
 * once, when it is created. Rows are never deleted: a revoked token keeps its row (and keeps the API closed).
 */
export const apiTokens = pgTable(
  'api_tokens',
  {
    id: bigserial('id', { mode: 'number' }).primaryKey(),
    name: text('name').notNull(),
    /** The account the token acts for: its jobs are the jobs of this owner. */
    owner: text('owner').notNull(),
    scopes: text('scopes').array().$type<TokenScope[]>().notNull(),
    tokenHash: text('token_hash').notNull(),
    /** The first characters of the token (`cnd_AbCd`), to recognise it in listings. */
    prefix: text('prefix').notNull(),
    /**
     * Minted by the Node entry for its own embedded agent: does not by itself close the local API (see
     * docs/security.md), and is revoked when the next embedded agent gets its own.
     */
    internal: boolean('internal').notNull().default(false),
    createdBy: text('created_by').notNull(),
    createdAt: tstz('created_at').notNull().defaultNow(),
    /** Updated at most once a minute per token. */
    lastUsedAt: tstz('last_used_at'),
    revokedAt: tstz('revoked_at'),
  },
  (t) => [
    uniqueIndex('api_tokens_token_hash_key').on(t.tokenHash),
    check(
      'api_tokens_scopes_known',
      sql`cardinality(${t.scopes}) > 0 AND ${t.scopes} <@ ARRAY['admin', 'jobs:write', 'jobs:read', 'agent']::text[]`,
    ),
    check('api_tokens_agent_alone', sql`NOT ('agent' = ANY(${t.scopes})) OR cardinality(${t.scopes}) = 1`),
  ],
);

/**
 * Named webhook endpoints: `POST /api/v1/webhooks/:name`. The secret is kept as is (an HMAC needs it), the
 * job template is a submit body, and `mapping` (payload path -> environment variable) is the only way a
 * payload reaches a job.
 */
export const webhooks = pgTable(
  'webhooks',
  {
    id: bigserial('id', { mode: 'number' }).primaryKey(),
    name: text('name').notNull(),
    secret: text('secret').notNull(),
    template: jsonb('template').$type<Record<string, unknown>>().notNull(),
    mapping: jsonb('mapping').$type<Record<string, string>>().notNull().default({}),
    /** Event names (X-GitHub-Event / X-Conductor-Event) that submit a job; null: every event but `ping`. */
    events: text('events').array(),
    owner: text('owner').notNull(),
    createdBy: text('created_by').notNull(),
    createdAt: tstz('created_at').notNull().defaultNow(),
  },
  (t) => [uniqueIndex('webhooks_name_key').on(t.name)],
);

/**
 * Keys that make a submission happen once: `Idempotency-Key` headers (scope `token:<id>` or `anonymous`,
 * kept 24 h) and webhook delivery ids and signatures (scope `webhook:<id>`, kept for good). The primary key
 * is what makes concurrent retries safe: the second insert waits for the first and then finds it.
 */
export const submissionKeys = pgTable(
  'submission_keys',
  {
    scope: text('scope').notNull(),
    key: text('key').notNull(),
    jobId: bigint('job_id', { mode: 'number' })
      .notNull()
      .references(() => jobs.id, { onDelete: 'cascade' }),
    /** SHA-256 of the request it was first used with: the same key with another body is refused. */
    requestHash: text('request_hash').notNull(),
    createdAt: tstz('created_at').notNull().defaultNow(),
    expiresAt: tstz('expires_at').notNull(),
  },
  (t) => [primaryKey({ columns: [t.scope, t.key] }), index('submission_keys_expires_idx').on(t.expiresAt)],
);

/** Who did what: submissions, cancels, drains, tokens and webhooks created or revoked. */
export const auditLog = pgTable(
  'audit_log',
  {
    id: bigserial('id', { mode: 'number' }).primaryKey(),
    at: tstz('at').notNull().defaultNow(),
    /** `token:<id> (<name>)`, `anonymous (loopback)`, `webhook:<name>`, `cli:<user>`, `system`. */
    actor: text('actor').notNull(),
    tokenId: bigint('token_id', { mode: 'number' }),
    action: text('action').notNull(),
    target: text('target'),
    details: jsonb('details').$type<Record<string, unknown>>().notNull().default({}),
    requestId: text('request_id'),
  },
  (t) => [index('audit_log_action_id_idx').on(t.action, t.id.desc())],
);

/**
 * Cluster capacity over time, for the dashboard's chart: at most one row a minute (`at` is the minute), written
 * by the scheduling backstop, kept 7 days.
 */
export const utilizationSamples = pgTable('utilization_samples', {
  at: tstz('at').primaryKey(),
  totalCpus: integer('total_cpus').notNull(),
  allocatedCpus: integer('allocated_cpus').notNull(),
  liveWorkers: integer('live_workers').notNull(),
  /** The live CPUs per partition (capacity_partition_hourly bridges the time to the next sample with them). */
  partitionCpus: jsonb('partition_cpus').$type<Record<string, number>>().notNull().default({}),
});

/** The events a subscription or a job's `mail_type` can name (sbatch's `--mail-type` names, and worker events). */
export const JOB_EVENT_TYPES = [
  'BEGIN',
  'END',
  'FAIL',
  'REQUEUE',
  'TIME_LIMIT_50',
  'TIME_LIMIT_80',
  'TIME_LIMIT_90',
  'ARRAY_TASKS',
] as const;
export const WORKER_EVENT_TYPES = ['WORKER_REGISTERED', 'WORKER_LOST', 'WORKER_DRAINED'] as const;
export const NOTIFICATION_FORMATS = ['standard', 'slack'] as const;
export const DELIVERY_STATES = ['pending', 'delivered', 'failed', 'skipped'] as const;
export type DeliveryState = (typeof DELIVERY_STATES)[number];

/**
 * Webhook subscriptions to job and worker events (functions/domain/notifications.ts). `owner` null: cluster-wide
 * (an admin's: every job, and worker events); else the jobs of that owner only.
 */
export const notificationSubscriptions = pgTable(
  'notification_subscriptions',
  {
    id: bigserial('id', { mode: 'number' }).primaryKey(),
    owner: text('owner'),
    url: text('url').notNull(),
    /** Standard Webhooks secret: `whsec_` and base64 of the HMAC key. Kept as is (an HMAC needs it). */
    secret: text('secret').notNull(),
    events: text('events').array().notNull(),
    format: text('format', { enum: NOTIFICATION_FORMATS }).notNull().default('standard'),
    description: text('description'),
    createdBy: text('created_by').notNull(),
    createdAt: tstz('created_at').notNull().defaultNow(),
  },
  (t) => [
    check('notification_subscriptions_format_known', sql`${t.format} IN ('standard', 'slack')`),
    index('notification_subscriptions_owner_idx').on(t.owner),
  ],
);

/**
 * The outbox: one row per event that someone wants (a subscription or the job's mail_type), written by triggers
 * in the transaction that made it happen (migration 0013); its deliveries are written with it.
 */
export const notificationEvents = pgTable(
  'notification_events',
  {
    id: bigserial('id', { mode: 'number' }).primaryKey(),
    type: text('type').notNull(),
    jobId: bigint('job_id', { mode: 'number' }),
    workerId: text('worker_id'),
    /** The job's owner (null: a worker event, or a job of the open local cluster). */
    owner: text('owner'),
    /** The job's attempt the event belongs to. */
    attempt: integer('attempt'),
    /** Where mail goes for this event (the job's mail_type asked for it); null: no mail. */
    mailTo: text('mail_to'),
    /**
     * A BEGIN, END or FAIL of a job array: `task` for one of its tasks (for subscribers of ARRAY_TASKS), `array`
     * for the array as a whole (for the others, as Slurm mails it); null for a job that is no array task.
     */
    arrayScope: text('array_scope', { enum: ['task', 'array'] }),
    data: jsonb('data').$type<Record<string, unknown>>().notNull(),
    createdAt: tstz('created_at').notNull().defaultNow(),
  },
  (t) => [
    // TIME_LIMIT_* once per attempt: the maintenance pass inserts them ON CONFLICT DO NOTHING.
    uniqueIndex('notification_events_time_limit_key')
      .on(t.jobId, t.attempt, t.type)
      .where(sql`${t.type} LIKE 'TIME_LIMIT%'`),
    index('notification_events_job_idx').on(t.jobId),
  ],
);

/** One delivery of one event to one subscription (or one mail): the delivery log, and the retry queue. */
export const notificationDeliveries = pgTable(
  'notification_deliveries',
  {
    id: bigserial('id', { mode: 'number' }).primaryKey(),
    eventId: bigint('event_id', { mode: 'number' })
      .notNull()
      .references(() => notificationEvents.id, { onDelete: 'cascade' }),
    /** Null: an email (recipient). */
    subscriptionId: bigint('subscription_id', { mode: 'number' }).references(
      () => notificationSubscriptions.id,
      { onDelete: 'cascade' },
    ),
    recipient: text('recipient'),
    state: text('state', { enum: DELIVERY_STATES }).notNull().default('pending'),
    attempts: integer('attempts').notNull().default(0),
    /** When it is due (pending): a sender that takes it moves this forward by the lease first. */
    nextAttemptAt: tstz('next_attempt_at').notNull().defaultNow(),
    lastAttemptAt: tstz('last_attempt_at'),
    /** The receiver's HTTP status of the last attempt (null: no answer, or an email). */
    lastStatus: integer('last_status'),
    lastError: text('last_error'),
    deliveredAt: tstz('delivered_at'),
    createdAt: tstz('created_at').notNull().defaultNow(),
  },
  (t) => [
    check(
      'notification_deliveries_state_known',
      sql`${t.state} IN ('pending', 'delivered', 'failed', 'skipped') AND (${t.subscriptionId} IS NULL) = (${t.recipient} IS NOT NULL)`,
    ),
    index('notification_deliveries_due_idx').on(t.nextAttemptAt).where(sql`${t.state} = 'pending'`),
    index('notification_deliveries_subscription_idx').on(t.subscriptionId, t.id.desc()),
  ],
);
