/**
 * What the routes answer, as zod schemas: the route declarations (functions/routes/*) put them in the OpenAPI
 * document, and the HTTP tests check every JSON answer against them (test/http/response-checks.ts).
 */
import { z } from '@hono/zod-openapi';
import { JOB_STATES } from '../../db/schema.ts';
import { TOKEN_SCOPES } from '../domain/auth.ts';

/** The one error envelope (functions/http/errors.ts). */
export const errorSchema = z
  .object({
    error: z.object({
      code: z.string(),
      message: z.string(),
      details: z.record(z.string(), z.unknown()).optional(),
      request_id: z.string().optional(),
    }),
  })
  .openapi('Error');

const isoTime = z.string().openapi({ format: 'date-time' });

/** One run of a job on a node: ended (recorded with the transition that ended it), or RUNNING now. */
export const attemptSchema = z
  .object({
    attempt: z.number().int(),
    node: z.string().nullable(),
    start_time: isoTime.nullable().openapi({ description: 'Null: its agent never started it' }),
    end_time: isoTime.nullable().openapi({ description: 'Null: it runs now' }),
    state: z.string().openapi({
      description:
        'How it ended: COMPLETED, FAILED, CANCELLED, TIMEOUT, NODE_FAIL, OUT_OF_MEMORY, REQUEUED (scontrol requeue); RUNNING: now',
    }),
    exit_code: z.string().nullable(),
    reason: z.string().nullable(),
    requeued: z.boolean().openapi({ description: 'The job went back to the queue after it' }),
    cpus: z.number().int().nullable().openapi({
      description: 'CPUs it held (an exclusive job: its node’s); null: recorded before usage accounting',
    }),
    memory_mb: z.number().int().nullable(),
    gpus: z.number().int().nullable(),
    partition: z.string().nullable(),
    eligible_time: isoTime
      .nullable()
      .openapi({ description: 'When it could have started (queue wait from here)' }),
    max_rss_kb: z
      .number()
      .int()
      .nullable()
      .openapi({ description: 'Peak resident memory its agent reported (KiB)' }),
    cpu_seconds: z.number().nullable().openapi({ description: 'cpus × its run; null while it runs' }),
  })
  .openapi('JobAttempt');

export const jobSchema = z
  .object({
    id: z.number().int(),
    name: z.string(),
    state: z.enum(JOB_STATES),
    cpus: z.number().int(),
    exit_code: z.string().nullable(),
    node: z.string().nullable(),
    account: z.string().nullable(),
    partition: z.string().nullable(),
    time_limit: z.number().nullable(),
    work_dir: z.string().nullable(),
    priority: z.number().int().openapi({
      description:
        "The submitter's priority: an adjustment added to the computed priority (higher goes first)",
    }),
    computed_priority: z.number().int().openapi({
      description:
        "Slurm's multifactor priority the queue is served by: the weighted factors (GET /api/v1/jobs/priority) plus `priority`",
    }),
    requeue: z.boolean(),
    attempt: z.number().int(),
    reason: z.string().nullable().openapi({
      description:
        "PENDING: Slurm's reason code (None, Resources, Priority, ReqNodeNotAvail, PartitionDown, PartitionInactive, PartitionTimeLimit, PartitionNodeLimit, BadConstraints, JobHeldUser, JobHeldAdmin); ended: why it ended so",
    }),
    reason_detail: z.string().nullable().openapi({ description: 'Why a pending job waits, in words' }),
    cancel_requested: z.boolean(),
    owner: z.string().nullable(),
    memory_mb: z.number().int().nullable().openapi({ description: 'MB on its node; null: none asked' }),
    memory_per_cpu: z.number().int().nullable().openapi({
      description: 'MB per CPU when asked so (memory_mb is it times cpus); null: not asked per CPU',
    }),
    submit_dir: z
      .string()
      .nullable()
      .openapi({ description: 'Where it was submitted from (SLURM_SUBMIT_DIR)' }),
    submit_host: z
      .string()
      .nullable()
      .openapi({ description: 'The host it was submitted from (SLURM_SUBMIT_HOST)' }),
    ntasks: z
      .number()
      .int()
      .nullable()
      .openapi({ description: 'Tasks asked (SLURM_NTASKS); null: not asked, 1' }),
    cpus_per_task: z
      .number()
      .int()
      .nullable()
      .openapi({ description: 'CPUs per task asked (SLURM_CPUS_PER_TASK); null: not asked' }),
    gpus: z.number().int(),
    gpu_type: z.string().nullable(),
    gres: z.record(z.string(), z.number().int()),
    constraint: z.string().nullable(),
    exclusive: z.boolean(),
    nodelist: z.array(z.string()).nullable(),
    exclude: z.array(z.string()),
    held: z.enum(['user', 'admin']).nullable(),
    allocated_gpus: z.array(z.number().int()).nullable().openapi({ description: 'GPU indexes on its node' }),
    qos: z.string().nullable(),
    begin_time: isoTime.nullable().openapi({ description: 'Not placed before this time (sbatch --begin)' }),
    eligible_time: isoTime
      .nullable()
      .openapi({ description: 'When it became eligible: its submit time, or its begin time if later' }),
    stdout: z
      .string()
      .nullable()
      .openapi({ description: 'Output file pattern (sbatch -o); null: slurm-%j.out' }),
    stderr: z
      .string()
      .nullable()
      .openapi({ description: 'Error file pattern (sbatch -e); null: the output file' }),
    stdin: z.string().nullable().openapi({ description: 'Input file pattern (sbatch -i); null: /dev/null' }),
    open_mode: z.enum(['append', 'truncate']).nullable(),
    export_env: z.string().nullable().openapi({ description: 'sbatch --export as given (SLURM_EXPORT_ENV)' }),
    signal: z
      .object({ signal: z.string(), before_s: z.number().int(), batch_only: z.boolean() })
      .nullable()
      .openapi({ description: 'sbatch --signal: sent before_s seconds before the time limit' }),
    comment: z.string().nullable(),
    max_rss_kb: z
      .number()
      .int()
      .nullable()
      .openapi({ description: "Peak resident memory of the job's processes (KiB); null until known" }),
    cancelled_by: z
      .string()
      .nullable()
      .openapi({ description: "Who cancelled it: the cancelling token's owner, or admin" }),
    requeues: z.number().int().openapi({ description: 'Times it went back to the queue' }),
    dependency: z
      .string()
      .nullable()
      .openapi({ description: 'sbatch --dependency as submitted; null: none' }),
    kill_on_invalid_dep: z
      .boolean()
      .openapi({ description: 'Cancelled (DependencyNeverSatisfied) when its dependency can never be met' }),
    max_requeues: z.number().int().nullable().openapi({
      description:
        'Automatic requeues at most (lost node with requeue, non-zero exit with retry_on_failure); null: its partition’s, else CONDUCTOR_MAX_REQUEUES',
    }),
    retry_on_failure: z.boolean().nullable().openapi({
      description: 'A non-zero exit requeues it while requeues are left; null: its partition’s, else no',
    }),
    retry_backoff_s: z.number().int().nullable().openapi({
      description:
        'Seconds a requeued attempt waits (BeginTime), doubled per earlier requeue; null: its partition’s, else CONDUCTOR_RETRY_BACKOFF',
    }),
    crash_limit: z.number().int().nullable().openapi({
      description:
        'The n-th loss of its node while it runs ends it NODE_FAIL (0: none); null: its partition’s, else CONDUCTOR_CRASH_LIMIT',
    }),
    crashes: z.number().int().openapi({ description: 'Times its node was lost while it ran' }),
    mail_type: z.string().nullable().openapi({
      description: 'sbatch --mail-type, expanded (ALL: BEGIN,END,FAIL,REQUEUE); null: no mail',
    }),
    mail_user: z.string().nullable().openapi({ description: 'sbatch --mail-user; null: the owner' }),
    array_job_id: z
      .number()
      .int()
      .nullable()
      .openapi({ description: 'sbatch --array: the array it is a task of (SLURM_ARRAY_JOB_ID); null: none' }),
    array_task_id: z
      .number()
      .int()
      .nullable()
      .openapi({ description: 'Its index in the array (SLURM_ARRAY_TASK_ID); null: no array' }),
    slurm_id: z.string().openapi({
      description: "Slurm's id: `<array_job_id>_<array_task_id>` for an array task, else the id",
    }),
    reservation: z.string().nullable().openapi({ description: 'sbatch --reservation; null: none' }),
    planned_start_time: isoTime.nullable().openapi({
      description:
        'PENDING: when the scheduler plans to start it, by the time limits of the jobs running where it holds a node (squeue --start); null: not planned',
    }),
    submit_time: isoTime.nullable(),
    start_time: isoTime.nullable(),
    end_time: isoTime.nullable(),
    script: z.string().optional(),
    environment: z.record(z.string(), z.string()).optional(),
    attempts: z
      .array(attemptSchema)
      .optional()
      .openapi({ description: 'GET /api/v1/jobs/{id} only: every attempt, first to last' }),
  })
  .openapi('Job');

export const jobBatchSchema = z.object({ jobs: z.array(jobSchema) });

const count = z.number().int();
export const arraySchema = z
  .object({
    array_job_id: z.number().int(),
    name: z.string(),
    owner: z.string().nullable(),
    spec: z.string().openapi({ description: 'The index list as submitted, with its %N' }),
    task_count: count,
    task_min: count,
    task_max: count,
    task_step: count,
    max_running: count.nullable().openapi({ description: '%N: most tasks running at once; null: no cap' }),
    counts: z
      .object({ pending: count, running: count, completed: count, failed: count, cancelled: count })
      .openapi({
        description: 'Tasks per state; failed counts FAILED, TIMEOUT, NODE_FAIL and OUT_OF_MEMORY',
      }),
    pending_id: z
      .string()
      .nullable()
      .openapi({ description: 'The pending tasks folded as squeue shows them (`123_[5-9%2]`); null: none' }),
    submit_time: isoTime,
  })
  .openapi('JobArray');
export const arrayListSchema = z.object({
  arrays: z.array(arraySchema),
  next_before: z.number().int().nullable().openapi({ description: 'The `before` of the next page' }),
});
export const arrayActionSchema = z.object({
  array: arraySchema,
  affected: count.openapi({ description: 'Tasks the action changed' }),
});
export const jobTestSchema = z
  .object({
    ok: z.literal(true),
    node: z.string().nullable().openapi({ description: 'A live node that could start it now; null: none' }),
    partition: z.string(),
    cpus: z.number().int(),
    start: z.literal('now').nullable(),
    reason: z.string().nullable().openapi({
      description: 'Why it would not start now (Resources, BeginTime, JobHeldUser); null: it would',
    }),
  })
  .openapi('JobTest');
const priorityFactorsSchema = z.object({
  age: z.number(),
  fairshare: z.number(),
  jobsize: z.number(),
  partition: z.number(),
  qos: z.number(),
});
export const jobPrioritiesSchema = z
  .object({
    weights: priorityFactorsSchema.openapi({
      description:
        'PriorityWeightAge, ...Fairshare, ...JobSize, ...Partition, ...QOS (CONDUCTOR_PRIORITY_WEIGHT_*)',
    }),
    jobs: z.array(
      z.object({
        job_id: z.number().int(),
        partition: z.string().nullable(),
        user: z.string().nullable(),
        account: z.string().nullable(),
        priority: z.number().int().openapi({ description: 'the computed priority the queue is served by' }),
        nice: z.number().int().openapi({
          description: "Slurm's NICE: minus the submitter's `priority` (a positive nice lowers the priority)",
        }),
        factors: priorityFactorsSchema.openapi({ description: 'each factor, from 0 to 1' }),
        weighted: priorityFactorsSchema.openapi({ description: 'each factor times its weight' }),
      }),
    ),
  })
  .openapi('JobPriorities');
export const fairShareSchema = z
  .object({
    accounts: z.array(
      z.object({
        account: z.string().openapi({ description: "'' for jobs without an account" }),
        norm_shares: z.number(),
        raw_usage: z.number().openapi({ description: 'decayed CPU-seconds' }),
        norm_usage: z.number(),
        fairshare: z.number().openapi({ description: '2^(-norm_usage/norm_shares)' }),
        computed_at: z.string(),
        parent: z.string().nullable().optional().openapi({ description: 'live=true: the account above it' }),
        raw_shares: z
          .number()
          .nullable()
          .optional()
          .openapi({ description: 'live=true: its configured shares (null: not an account of the tree)' }),
        users: z
          .array(
            z.object({
              user: z.string(),
              raw_shares: z.number(),
              norm_shares: z
                .number()
                .openapi({ description: "the account's share split by its users' shares" }),
              raw_usage: z.number(),
              norm_usage: z.number(),
              fairshare: z.number(),
            }),
          )
          .optional()
          .openapi({ description: "live=true: the account's users (sshare's user rows)" }),
      }),
    ),
  })
  .openapi('FairShare');
export const jobExplanationSchema = z
  .object({
    job_id: z.number().int(),
    state: z.enum(JOB_STATES),
    reason: z.string().nullable(),
    reason_detail: z.string().nullable(),
    nodes: z.array(z.object({ node: z.string(), fits: z.boolean(), why: z.array(z.string()) })),
  })
  .openapi('JobExplanation');

export const partitionSchema = z
  .object({
    name: z.string(),
    default: z.boolean(),
    state: z.enum(['UP', 'DOWN', 'DRAIN', 'INACTIVE']),
    nodes: z
      .string()
      .nullable()
      .openapi({ description: 'A hostlist of nodes in it, besides those that declare it' }),
    max_time: z.number().nullable().openapi({ description: 'Minutes' }),
    default_time: z.number().nullable().openapi({ description: 'Minutes' }),
    max_cpus_per_node: z.number().int().nullable(),
    def_mem_per_cpu: z.number().int().nullable().openapi({ description: 'MB' }),
    max_mem_per_cpu: z.number().int().nullable().openapi({ description: 'MB' }),
    allow_accounts: z.array(z.string()).nullable(),
    priority_tier: z.number().int(),
    policy: z.enum(['pack', 'spread']),
    max_requeues: z.number().int().nullable().openapi({
      description: 'Automatic requeues at most of its jobs that set none; null: CONDUCTOR_MAX_REQUEUES',
    }),
    retry_on_failure: z
      .boolean()
      .nullable()
      .openapi({ description: 'Its jobs that set none are requeued after a non-zero exit; null: no' }),
    retry_backoff_s: z.number().int().nullable().openapi({
      description: 'Seconds before a requeued job may start again; null: CONDUCTOR_RETRY_BACKOFF',
    }),
    crash_limit: z.number().int().nullable().openapi({
      description:
        'The n-th loss of a node under its job ends the job NODE_FAIL; null: CONDUCTOR_CRASH_LIMIT',
    }),
    created_by: z.enum(['admin', 'agent']),
    live_nodes: z.array(z.string()),
    total_cpus: z.number().int(),
  })
  .openapi('Partition');
const associationLimits = {
  fairshare: z.number().int().openapi({ description: 'Slurm Fairshare: shares among its siblings' }),
  max_jobs: z
    .number()
    .int()
    .nullable()
    .openapi({ description: 'MaxJobs: jobs running at once (null: no limit)' }),
  max_submit_jobs: z
    .number()
    .int()
    .nullable()
    .openapi({ description: 'MaxSubmitJobs: jobs pending or running at once' }),
  grp_cpus: z.number().int().nullable().openapi({ description: 'GrpTRES=cpu: CPUs allocated at once' }),
  grp_gpus: z.number().int().nullable().openapi({ description: 'GrpTRES=gres/gpu: GPUs allocated at once' }),
  max_wall: z
    .number()
    .nullable()
    .openapi({ description: 'MaxWall: the longest time limit of a job, minutes' }),
  grp_cpu_mins: z
    .number()
    .int()
    .nullable()
    .openapi({ description: 'GrpTRESMins=cpu: CPU-minutes per usage period' }),
};
export const accountUserSchema = z.object({
  user: z.string(),
  default: z.boolean().openapi({ description: "The user's default account" }),
  ...associationLimits,
});
export const accountSchema = z.object({
  name: z.string(),
  parent: z.string().nullable(),
  description: z.string(),
  ...associationLimits,
  users: z.array(accountUserSchema),
});
export const accountUsersSchema = z.object({ users: z.array(accountUserSchema) });
export const accountListSchema = z.object({ accounts: z.array(accountSchema) });
export const partitionListSchema = z.object({ partitions: z.array(partitionSchema) });
export const reservationSchema = z
  .object({
    name: z.string(),
    start_time: isoTime.openapi({
      description: 'The window open now, or the next one (DAILY/WEEKLY move on)',
    }),
    end_time: isoTime,
    duration: z.number().openapi({ description: 'Minutes' }),
    nodes: z.string().openapi({ description: 'Its nodes as a hostlist' }),
    node_list: z.array(z.string()),
    node_count: z.number().int(),
    cpu_count: z.number().int(),
    partition: z.string().nullable(),
    users: z.array(z.string()),
    accounts: z.array(z.string()),
    flags: z.array(z.enum(['MAINT', 'DAILY', 'WEEKLY'])),
    state: z.enum(['ACTIVE', 'INACTIVE']),
  })
  .openapi('Reservation');
export const reservationListSchema = z.object({ reservations: z.array(reservationSchema) });
export const jobListSchema = z.object({
  jobs: z.array(jobSchema),
  next_before: z
    .number()
    .int()
    .nullable()
    .openapi({ description: 'order=desc: the `before` of the next page' }),
  next_after: z.number().int().nullable().openapi({ description: 'order=asc: the `after` of the next page' }),
});

const streamSchema = z.object({ content: z.string(), bytes: z.number().int(), truncated: z.boolean() });
export const logsSchema = z.object({
  job_id: z.number().int(),
  state: z.enum(JOB_STATES),
  stdout: streamSchema,
  stderr: streamSchema,
});

const workerStatus = z.enum(['ready', 'draining', 'down']);
const DECLARED_PARTITIONS =
  'Declared by its agent (none: the default partition, unless a node list names it)';
/** What a worker has of every resource (GET /api/v1/workers). */
const workerResourceFields = {
  memory_mb: z.number().int().openapi({ description: 'MB jobs may use (0: the agent reports none)' }),
  allocated_memory_mb: z.number().int(),
  gpu_devices: z.array(z.object({ index: z.number().int(), model: z.string(), used: z.boolean() })),
  gres: z.record(z.string(), z.object({ total: z.number().int(), allocated: z.number().int() })),
  features: z.array(z.string()),
  declared_partitions: z.array(z.string()).openapi({ description: DECLARED_PARTITIONS }),
  memory_enforcement: z
    .enum(['cgroup', 'rss', 'none'])
    .nullable()
    .openapi({ description: 'How its agent holds jobs to their memory (null: an older agent)' }),
};
const liveWorkerBase = z.object({
  worker_id: z.string(),
  hostname: z.string(),
  cpus: z.number().int(),
  allocated_cpus: z.number().int(),
  available_cpus: z.number().int(),
  status: workerStatus,
  running_jobs: z.number().int(),
  registered_at: isoTime,
  last_heartbeat: isoTime,
});
export const liveWorkerSchema = liveWorkerBase.extend(workerResourceFields).openapi('LiveWorker');
/** GET /api/v1/workers?all=true: every worker ever seen, live or down. */
const anyWorkerSchema = z
  .object({
    worker_id: z.string(),
    hostname: z.string(),
    cpus: z.number().int(),
    allocated_cpus: z.number().int(),
    status: workerStatus,
    live: z.boolean(),
    registered_at: isoTime,
    last_heartbeat: isoTime,
    down_at: isoTime.nullable(),
    down_reason: z.string().nullable(),
    ...workerResourceFields,
  })
  .openapi('Worker');
export const workerListSchema = z.object({ workers: z.array(z.union([liveWorkerSchema, anyWorkerSchema])) });
export const workerStatusSchema = z.object({ worker_id: z.string(), status: workerStatus });

/** A worker as the dashboard lists it: a live worker's fields and what it has of every resource. */
export const dashboardWorkerSchema = liveWorkerBase
  .extend({
    memory_mb: z.number().int().describe('MB jobs may use (0: the agent reports none)'),
    allocated_memory_mb: z.number().int(),
    gpus: z.number().int().describe('How many GPUs it has'),
    allocated_gpus: z.number().int().describe('How many of them running jobs hold'),
    gres: z
      .record(z.string(), z.object({ total: z.number().int(), allocated: z.number().int() }))
      .describe('Generic resources other than GPUs'),
    features: z.array(z.string()),
    partitions: z
      .array(z.string())
      .describe('The partitions it serves: declared, named by a node list, else the default'),
  })
  .openapi('DashboardWorker');

const usedOfTotal = z.object({ total: z.number().int(), allocated: z.number().int() });

/** A partition on the dashboard: its live nodes, what they hold, and its jobs. */
export const partitionSummarySchema = z
  .object({
    name: z.string(),
    state: z.enum(['UP', 'DOWN', 'DRAIN', 'INACTIVE']),
    default: z.boolean(),
    live_nodes: z.number().int().describe('How many live workers serve it'),
    total_cpus: z.number().int(),
    allocated_cpus: z.number().int(),
    total_gpus: z.number().int(),
    allocated_gpus: z.number().int(),
    pending_jobs: z
      .number()
      .int()
      .nullable()
      .describe(
        'Pending jobs that name it (or name none, for the default); null while more than 5,000 jobs are pending in all',
      ),
    running_jobs: z.number().int().describe('Jobs running on its live nodes'),
  })
  .openapi('PartitionSummary');

/**
 * GET /api/v1/dashboard (functions/domain/dashboard.ts `getDashboard`): the one place its answer is
 * declared. `resources` is the contract's (CONTRACT.md); loose, so that more fields may be added.
 */
export const dashboardSchema = z
  .looseObject({
    resources: z.object({
      total_cpus: z.number(),
      allocated_cpus: z.number(),
      available_cpus: z.number(),
      utilization: z.number(),
    }),
    memory: z
      .object({ total_mb: z.number().int(), allocated_mb: z.number().int(), available_mb: z.number().int() })
      .describe('The live workers’ memory; a draining worker’s free memory is not available'),
    gpus: z.object({
      total: z.number().int(),
      allocated: z.number().int(),
      available: z.number().int(),
      by_model: z.record(z.string(), usedOfTotal).describe('Model (a100, v100...) -> GPUs of it'),
    }),
    gres: z.record(z.string(), usedOfTotal).describe('Generic resources of the live workers, by name'),
    partitions: z.array(partitionSummarySchema).describe('The default first, then by name'),
    workers: z.array(dashboardWorkerSchema).describe('The first `workers_page.limit` live workers, by id'),
    workers_page: z.object({
      live_workers: z.number().int().describe('How many workers are live in all'),
      limit: z.number().int(),
      next: z
        .string()
        .nullable()
        .describe('Where the next live workers are (the dashboard’s paged read, scope jobs:read), or null'),
    }),
    jobs: z.record(z.enum(JOB_STATES), z.number().int()),
  })
  .openapi('Dashboard');

const probe = z.union([
  z.object({ status: z.literal('ok'), latency_ms: z.number() }),
  z.object({ status: z.literal('down'), error: z.string() }),
]);
export const healthSchema = z
  .object({
    status: z.enum(['ok', 'degraded', 'down']),
    database: probe,
    cache: z.intersection(
      probe,
      z.object({
        kind: z.string(),
        last_sync: z.object({ at: isoTime, drift: z.number().nullable() }).nullable(),
      }),
    ),
  })
  .openapi('Health');

export const auditListSchema = z.object({
  entries: z.array(
    z.object({
      id: z.number().int(),
      at: isoTime,
      actor: z.string().nullable(),
      token_id: z.number().int().nullable(),
      action: z.string(),
      target: z.string().nullable(),
      details: z.record(z.string(), z.unknown()).nullable(),
      request_id: z.string().nullable(),
    }),
  ),
  next_before: z.number().int().nullable(),
});

export const tokenSchema = z
  .object({
    id: z.number().int(),
    name: z.string(),
    owner: z.string().nullable(),
    scopes: z.array(z.enum(TOKEN_SCOPES)),
    prefix: z.string(),
    internal: z.boolean(),
    created_by: z.string().nullable(),
    created_at: isoTime.nullable(),
    last_used_at: isoTime.nullable(),
    revoked_at: isoTime.nullable(),
  })
  .openapi('Token');
export const createdTokenSchema = tokenSchema.extend({
  token: z.string().openapi({ description: 'The token itself: shown this once' }),
  notice: z.string().optional().openapi({ description: 'Set when this first token closed the open cluster' }),
});
export const tokenListSchema = z.object({
  tokens: z.array(tokenSchema),
  next_before: z.number().int().nullable(),
});

export const webhookSchema = z
  .object({
    id: z.number().int(),
    name: z.string(),
    url_path: z.string(),
    template: z.record(z.string(), z.unknown()),
    mapping: z.record(z.string(), z.string()),
    events: z
      .array(z.string())
      .nullable()
      .openapi({ description: 'The events that make a job; null: every event but ping' }),
    owner: z.string().nullable(),
    created_by: z.string().nullable(),
    created_at: isoTime,
  })
  .openapi('Webhook');
export const createdWebhookSchema = webhookSchema.extend({
  secret: z.string().openapi({ description: 'The signing secret: shown this once' }),
});
export const webhookListSchema = z.object({ webhooks: z.array(webhookSchema) });
export const deliverySchema = z.object({ webhook: z.string(), duplicate: z.boolean(), job: jobSchema });
export const ignoredDeliverySchema = z.object({
  webhook: z.string(),
  ignored: z.literal(true),
  event: z.string().nullable(),
  reason: z.string(),
});

/** The agent protocol's answers (agent/src/protocol.ts). */
const jobRef = z.object({ job_id: z.number().int(), attempt: z.number().int() });
export const registerResponse = z.object({
  worker_id: z.string(),
  session: z.string(),
  heartbeat_interval_s: z.number(),
  worker_ttl_s: z.number(),
  claim_wait_s: z.number(),
  cancel: z.array(jobRef),
  token: z.string().optional(),
});
const jobSignal = jobRef.extend({ signal: z.string(), batch_only: z.boolean() });
export const heartbeatResponse = z.object({
  heartbeat_interval_s: z.number(),
  status: z.enum(['ready', 'draining']),
  cancel: z.array(jobRef),
  signal: z
    .array(jobSignal)
    .optional()
    .openapi({ description: 'Signals to deliver now (each handed out once)' }),
});
export const claimResponse = z.object({
  jobs: z.array(
    jobRef.extend({
      name: z.string(),
      script: z.string(),
      cpus: z.number().int(),
      work_dir: z.string().nullable(),
      environment: z.record(z.string(), z.string()),
      time_limit_s: z.number().nullable(),
      requeue: z.boolean().optional(),
      owner: z.string().nullable().optional(),
      memory_mb: z.number().int().nullable().optional(),
      gpus: z.array(z.number().int()).optional(),
      gres: z.record(z.string(), z.number().int()).optional(),
      account: z.string().nullable().optional(),
      partition: z.string().nullable().optional(),
      submit_dir: z.string().nullable().optional(),
      submit_host: z.string().nullable().optional(),
      ntasks: z.number().int().nullable().optional(),
      cpus_per_task: z.number().int().nullable().optional(),
      memory_per_cpu: z.number().int().nullable().optional(),
      requeues: z.number().int().optional(),
      cluster_name: z.string().optional(),
      stdout: z.string().nullable().optional(),
      stderr: z.string().nullable().optional(),
      stdin: z.string().nullable().optional(),
      open_mode: z.enum(['append', 'truncate']).nullable().optional(),
      export_env: z.string().nullable().optional(),
      qos: z.string().nullable().optional(),
      signal: z
        .object({ signal: z.string(), before_s: z.number().int(), batch_only: z.boolean() })
        .nullable()
        .optional(),
      start_time: isoTime.nullable().optional(),
    }),
  ),
  cancel: z.array(jobRef),
  signal: z
    .array(jobSignal)
    .optional()
    .openapi({ description: 'Signals to deliver now (each handed out once)' }),
  status: z.enum(['ready', 'draining']).optional().openapi({
    description: 'The worker’s status (an operator may have drained it), as a heartbeat answers',
  }),
});
export const okResponse = z.object({ ok: z.literal(true) });
export const stateResponse = z.object({ state: z.string() });
export const outputResponse = z.object({ bytes: z.number().int() });

export const indexSchema = z.object({
  name: z.literal('conductor'),
  api: z.string(),
  dashboard: z.string(),
  health: z.string(),
});

/** A usage report (sreport): its period (whole UTC hours) and rows; CPU-seconds and the like, rounded to 1 ms. */
export const usageReportSchema = z
  .object({
    cluster: z.string().openapi({ description: 'The cluster’s name (CONDUCTOR_CLUSTER_NAME)' }),
    report: z.enum(['cluster-utilization', 'user-topusage', 'account-topusage', 'trends']),
    start: isoTime,
    end: isoTime,
    reported_cpu_seconds: z
      .number()
      .openapi({ description: 'CPU-seconds the live workers offered (Reported)' }),
    rows: z.array(z.record(z.string(), z.union([z.string(), z.number()]))).openapi({
      description:
        'cluster-utilization: one row (allocated, down, planned_down, idle, planned, reported: CPU-seconds; gpu_seconds, jobs, attempts); user-topusage: user, account, cpu_seconds, gpu_seconds, mem_mb_seconds, wall_seconds, jobs, most used first; account-topusage: the same per account; trends: per bucket (hour, or day beyond 3 days) and partition, cpu_seconds, jobs, starts, mean_wait_seconds',
    }),
  })
  .openapi('UsageReport');
