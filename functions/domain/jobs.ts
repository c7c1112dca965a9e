import { type SQL, sql } from 'drizzle-orm';
import { z } from 'zod';
import {
  FINAL_STATES,
  JOB_STATES,
  type JobState,
  OPEN_MODES,
  type PendingSignalColumn,
  type TimeLimitSignalColumn,
} from '../../db/schema.ts';
import { type Charge, chargeAccounts, lockSubmitLimits, wallLimit } from './accounts.ts';
import { endJobsAndRelease } from './allocation.ts';
import { cancelArray, holdArray, holdPending, releaseArray } from './array-ops.ts';
import { type ArraySpec, ArraySpecError, arrayBounds, parseArraySpec } from './arrays.ts';
import { auditInsert, recordAudit } from './audit.ts';
import { ANONYMOUS, CONTROL_CHARS, hasScope, type Principal, seesAllJobs, seesJobOf } from './auth.ts';
import type { Context } from './context.ts';
import { type Dependency, DependencyError, dependencyTargets, parseDependency } from './dependency.ts';
import { ConductorError, conflict, forbidden, invalid, notFound } from './errors.ts';
import { admitJobs, type JobResources, resourceFields } from './job-resources.ts';
import { liveInPostgres } from './liveness.ts';
import { mailTypeColumn } from './notifications.ts';
import { explainPlacement } from './placement.ts';
import type { Database } from './ports.ts';
import { priorityExpressions } from './priority.ts';
import { checkReservations } from './reservations.ts';
import {
  beginTimeDetail,
  jobReader,
  PARTITION_COLUMNS,
  type PartitionRow,
  partitionsOf,
  QUEUE_COLUMNS,
  type QueueRow,
  toWorker,
  WORKER_COLUMNS,
  type WorkerRow,
} from './scheduler.ts';
import { signalName } from './signals.ts';
import { jsonColumn, pgArray, pgErrorCode, query, queryOne } from './sql.ts';
import { parseTimeLimit } from './time-limit.ts';

const MiB = 1024 * 1024;
const MAX_TIME_LIMIT_S = 365 * 24 * 3600;
/** Kept per output stream: at least the last 1 MiB. */
export const OUTPUT_KEEP_CHARS = MiB;

const label = (what: string) =>
  z
    .string()
    .min(1, `${what} must not be empty`)
    .max(255, `${what} is at most 255 characters`)
    .refine((s) => !CONTROL_CHARS.test(s), `${what} has control characters`);

/** sbatch `-o`, `-e`, `-i`: a file name pattern, expanded by the agent. */
const filePattern = (what: string) =>
  z
    .string()
    .min(1, `${what} must not be empty`)
    .max(4096, `${what} is at most 4096 characters`)
    .refine((s) => !s.includes('\u0000'), `${what} contains a NUL byte`)
    .optional();

export const submitJobInput = z.strictObject({
  script: z
    .string({ error: 'script is required (the shell script to run)' })
    .min(1, 'script must not be empty')
    .refine((s) => new TextEncoder().encode(s).length <= MiB, 'script is larger than 1 MiB')
    .refine((s) => !s.includes('\u0000'), 'script contains a NUL byte'),
  cpus: z
    .number({ error: 'cpus is required (a whole number of CPUs, at least 1)' })
    .int('cpus must be a whole number')
    .min(1, 'cpus must be at least 1')
    .max(65_536, 'cpus is at most 65536'),
  name: label('name').optional(),
  account: label('account').optional(),
  partition: label('partition').optional(),
  time_limit: z
    .union([z.number().positive(), z.string().max(32)], {
      error: 'time_limit is minutes, or a Slurm time such as "30", "1:30:00" or "1-00:00:00"',
    })
    .optional()
    .refine((v) => v === undefined || parseTimeLimit(v) !== null, {
      message: 'time_limit is minutes, or a Slurm time such as "30", "1:30:00" or "1-00:00:00"',
    })
    .refine((v) => v === undefined || (parseTimeLimit(v) ?? 1) >= 1, {
      message: 'time_limit must be at least 1 second (0.0167 minutes or "0:01"); it would round to 0 s',
    })
    .refine((v) => v === undefined || (parseTimeLimit(v) ?? 0) <= MAX_TIME_LIMIT_S, {
      message: 'time_limit is at most 365 days',
    }),
  work_dir: z
    .string()
    .max(4096)
    .refine((s) => s.startsWith('/'), 'work_dir must be an absolute path')
    .refine((s) => !CONTROL_CHARS.test(s), 'work_dir has control characters')
    .optional(),
  environment: z
    .record(
      z
        .string()
        .max(255, 'environment variable names are at most 255 characters')
        .regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'environment variable names are letters, digits and _'),
      z
        .string()
        .max(128 * 1024)
        .refine((s) => !s.includes('\u0000'), 'environment values must not contain NUL'),
    )
    .refine((env) => Object.keys(env).length <= 1024, 'environment has at most 1024 variables')
    .optional(),
  priority: z.number().int().min(-1_000_000).max(1_000_000).optional(),
  requeue: z.boolean().optional(),
  /** The directory it was submitted from (SLURM_SUBMIT_DIR). */
  submit_dir: z
    .string()
    .max(4096, 'submit_dir is at most 4096 characters')
    .refine((s) => s.startsWith('/'), 'submit_dir must be an absolute path')
    .refine((s) => !CONTROL_CHARS.test(s), 'submit_dir has control characters')
    .optional(),
  /** The host it was submitted from (SLURM_SUBMIT_HOST). */
  submit_host: z
    .string()
    .min(1, 'submit_host must not be empty')
    .max(255, 'submit_host is at most 255 characters')
    .regex(/^[A-Za-z0-9._-]+$/, 'submit_host is a host name: letters, digits, ".", "-" and "_"')
    .optional(),
  /** `--ntasks`: what the job sees as SLURM_NTASKS (cpus stays what it is given). */
  ntasks: z
    .number({ error: 'ntasks is a whole number of tasks, at least 1' })
    .int('ntasks must be a whole number')
    .min(1, 'ntasks must be at least 1')
    .max(65_536, 'ntasks is at most 65536')
    .optional(),
  /** `--cpus-per-task`: what the job sees as SLURM_CPUS_PER_TASK. */
  cpus_per_task: z
    .number({ error: 'cpus_per_task is a whole number of CPUs, at least 1' })
    .int('cpus_per_task must be a whole number')
    .min(1, 'cpus_per_task must be at least 1')
    .max(65_536, 'cpus_per_task is at most 65536')
    .optional(),
  /** The quality of service (SLURM_JOB_QOS); stored and shown, not enforced. */
  qos: z
    .string()
    .min(1, 'qos must not be empty')
    .max(64, 'qos is at most 64 characters')
    .regex(/^[A-Za-z0-9._-]+$/, 'qos is a name: letters, digits, ".", "-" and "_"')
    .optional(),
  /** sbatch `--begin`: not placed before this time. */
  begin_time: z.iso
    .datetime({
      offset: true,
      error: 'begin_time is an ISO 8601 date and time, e.g. "2026-01-31T18:00:00Z"',
    })
    .optional(),
  /** sbatch `-H`: submitted held by its user (release it to let it run). */
  hold: z.boolean().optional(),
  stdout: filePattern('stdout'),
  stderr: filePattern('stderr'),
  stdin: filePattern('stdin'),
  open_mode: z.enum(OPEN_MODES, { error: 'open_mode is append or truncate' }).optional(),
  /** sbatch `--export` as given (ALL, NONE, a list); the variables themselves come in `environment`. */
  export_env: z
    .string()
    .min(1, 'export_env must not be empty')
    .max(4096, 'export_env is at most 4096 characters')
    .refine((s) => !CONTROL_CHARS.test(s), 'export_env has control characters')
    .optional(),
  /** sbatch `--signal`: a signal sent `before_s` seconds before the time limit. */
  signal: z
    .strictObject({
      signal: signalName,
      before_s: z
        .number({ error: 'signal.before_s is whole seconds from 0 to 65535' })
        .int('signal.before_s must be whole seconds')
        .min(0, 'signal.before_s is at least 0')
        .max(65_535, 'signal.before_s is at most 65535')
        .default(60),
      batch_only: z.boolean().default(false),
    })
    .optional(),
  comment: z
    .string()
    .max(1024, 'comment is at most 1024 characters')
    .refine((s) => !s.includes('\u0000'), 'comment contains a NUL byte')
    .optional(),
  /**
   * sbatch `--dependency`: `type:id[+minutes][:id...]` items joined by `,` (all) or `?` (any), types after,
   * afterany, afterok, afternotok and singleton; empty: none. Checked by checkDependencies (400 invalid_dependency).
   */
  dependency: z.string().max(65_536, 'dependency is at most 65536 characters').optional(),
  /** sbatch `--kill-on-invalid-dep=yes`: cancel the job when its dependency can never be met. */
  kill_on_invalid_dep: z.boolean().optional(),
  /**
   * The retry policy (absent: its partition's, else the cluster's). Automatic requeues at most: after its
   * node is lost (with `requeue`) and after a non-zero exit (with `retry_on_failure`).
   */
  max_requeues: z
    .number({ error: 'max_requeues is a whole number from 0 to 1000 (0: never requeued automatically)' })
    .int('max_requeues must be a whole number')
    .min(0, 'max_requeues is at least 0 (0: never requeued automatically)')
    .max(1000, 'max_requeues is at most 1000')
    .optional(),
  /** A non-zero exit puts the job back in the queue (while it has requeues left) instead of ending it FAILED. */
  retry_on_failure: z.boolean({ error: 'retry_on_failure is true or false' }).optional(),
  /** Seconds a requeued job waits before it may start again, doubled with each earlier requeue. */
  retry_backoff_s: z
    .number({ error: 'retry_backoff_s is whole seconds from 0 to 86400' })
    .int('retry_backoff_s must be whole seconds')
    .min(0, 'retry_backoff_s is at least 0 (0: at once)')
    .max(86_400, 'retry_backoff_s is at most 86400 (a day)')
    .optional(),
  /** The n-th loss of its node while it runs ends it NODE_FAIL, requeues left or not (0: no crash limit). */
  crash_limit: z
    .number({ error: 'crash_limit is a whole number from 0 to 1000 (0: no crash limit)' })
    .int('crash_limit must be a whole number')
    .min(0, 'crash_limit is at least 0 (0: no crash limit)')
    .max(1000, 'crash_limit is at most 1000')
    .optional(),
  /**
   * sbatch `--mail-type`: comma-separated BEGIN, END, FAIL, REQUEUE, TIME_LIMIT_50/80/90, ARRAY_TASKS, ALL,
   * TIME_LIMIT, NONE. Mailed to mail_user (or the owner) when an SMTP server is configured.
   */
  mail_type: z
    .string()
    .max(256, 'mail_type is at most 256 characters')
    .superRefine((s, check) => {
      try {
        mailTypeColumn(s);
      } catch (error) {
        check.addIssue({ code: 'custom', message: error instanceof Error ? error.message : String(error) });
      }
    })
    .optional(),
  /**
   * sbatch `--reservation`: the admin reservation to run in (its nodes, inside its window); it must exist and
   * admit the submitter (400 invalid_reservation).
   */
  reservation: z
    .string()
    .min(1, 'reservation must not be empty')
    .max(100, 'reservation names are at most 100 characters')
    .optional(),
  /** sbatch `--mail-user`: who gets the job's mail; default: its owner. */
  mail_user: z
    .string()
    .min(1, 'mail_user must not be empty')
    .max(254, 'mail_user is at most 254 characters')
    .regex(/^[^\s<>,;:"()[\]\\]+$/, 'mail_user is one address (user or user@host)')
    .optional(),
  /**
   * sbatch `--array`: `0-999`, `1,3,5-9`, `0-99:2`, with `%N` for at most N tasks running at once. One task (a
   * job of its own) per index, all inserted by one statement. Checked by checkArray (400 invalid_array).
   */
  array: z
    .string()
    .min(1, 'array must not be empty')
    .max(65_536, 'array is at most 65536 characters')
    .optional(),
  ...resourceFields,
});
export type SubmitJobInput = z.infer<typeof submitJobInput>;

/** Most entries in one list filter of GET /api/v1/jobs. */
const MAX_FILTER_ITEMS = 1000;

/** A comma list in a query parameter (`a,b`), each item checked with `item`. */
const commaList = <T extends z.ZodType<unknown, string>>(what: string, item: T) =>
  z
    .string()
    .max(65_536, `${what} is at most 65536 characters`)
    .transform((s) => s.split(',').map((x) => x.trim()))
    .pipe(z.array(item).min(1).max(MAX_FILTER_ITEMS, `${what} lists at most ${MAX_FILTER_ITEMS} values`));

const isoFilter = (what: string) =>
  z.iso
    .datetime({ offset: true, error: `${what} is an ISO 8601 date and time, e.g. "2026-01-31T18:00:00Z"` })
    .optional();

/** sprio's filters (-j, -u, -p): GET /api/v1/jobs/priority. */
export const jobPrioritiesInput = z.strictObject({
  ids: commaList(
    'ids',
    z
      .string()
      .regex(/^[1-9][0-9]{0,15}$/, 'ids is a comma list of job ids')
      .transform(Number)
      .pipe(z.number().max(Number.MAX_SAFE_INTEGER, 'ids is a comma list of job ids')),
  ).optional(),
  owner: commaList('owner', label('owner')).optional(),
  partition: commaList('partition', label('partition')).optional(),
});

export const listJobsInput = z
  .strictObject({
    state: z
      .string()
      .transform((s) => s.split(',').map((x) => x.trim().toUpperCase()))
      .pipe(z.array(z.enum(JOB_STATES, { error: `state is one of ${JOB_STATES.join(', ')}` })))
      .optional(),
    limit: z.coerce.number().int().min(1).max(1000).default(50),
    /** order=desc: jobs with an id below this (the `next_before` of the previous page). */
    before: z.coerce.number().int().positive().max(Number.MAX_SAFE_INTEGER).optional(),
    /** order=asc: jobs with an id above this (the `next_after` of the previous page). */
    after: z.coerce.number().int().min(0).max(Number.MAX_SAFE_INTEGER).optional(),
    order: z.enum(['desc', 'asc'], { error: 'order is desc (newest first) or asc' }).default('desc'),
    ids: commaList(
      'ids',
      z
        .string()
        .regex(/^[1-9][0-9]{0,15}$/, 'ids is a comma list of job ids')
        .transform(Number)
        .pipe(z.number().max(Number.MAX_SAFE_INTEGER, 'ids is a comma list of job ids')),
    ).optional(),
    name: commaList('name', label('name')).optional(),
    owner: commaList('owner', label('owner')).optional(),
    account: commaList('account', label('account')).optional(),
    partition: commaList('partition', label('partition')).optional(),
    node: label('node').optional(),
    /** sbatch `--array`: the tasks of this array (its job id). */
    array: z.coerce
      .number({ error: 'array is an array job id' })
      .int('array is an array job id')
      .positive('array is an array job id')
      .max(Number.MAX_SAFE_INTEGER, 'array is an array job id')
      .optional(),
    /** Jobs that had not ended by then (sacct -S). */
    active_since: isoFilter('active_since'),
    /** Jobs submitted before then (sacct -E). */
    active_until: isoFilter('active_until'),
  })
  .refine((q) => !(q.order === 'asc' && q.before !== undefined), {
    message: 'before is the cursor of order=desc; with order=asc use after',
    path: ['before'],
  })
  .refine((q) => !(q.order === 'desc' && q.after !== undefined), {
    message: 'after is the cursor of order=asc (next_after); with order=desc use before',
    path: ['after'],
  });
export type ListJobsInput = z.infer<typeof listJobsInput>;

export interface JobRow {
  id: number | string;
  name: string;
  state: JobState;
  cpus: number;
  exit_code: string | null;
  node: string | null;
  account: string | null;
  partition: string | null;
  time_limit_s: number | null;
  work_dir: string | null;
  environment: Record<string, string>;
  priority: number;
  requested_priority: number;
  requeue: boolean;
  attempt: number;
  reason: string | null;
  reason_detail: string | null;
  cancel_requested: boolean;
  memory_mb: number | null;
  memory_per_cpu: number | null;
  submit_dir: string | null;
  submit_host: string | null;
  ntasks: number | null;
  cpus_per_task: number | null;
  gpus: number;
  gpu_type: string | null;
  gres: Record<string, number> | string;
  feature_constraint: string | null;
  exclusive: boolean;
  nodelist: string[] | null;
  exclude_nodes: string[];
  held: 'user' | 'admin' | null;
  allocated_gpus: number[] | null;
  qos: string | null;
  begin_time: Date | string | null;
  eligible_time: Date | string;
  stdout: string | null;
  stderr: string | null;
  stdin: string | null;
  open_mode: 'append' | 'truncate' | null;
  export_env: string | null;
  signal: TimeLimitSignalColumn | string | null;
  comment: string | null;
  max_rss_kb: number | string | null;
  cancelled_by: string | null;
  requeues: number;
  dependency: string | null;
  kill_on_invalid_dep: boolean;
  max_requeues: number | null;
  retry_on_failure: boolean | null;
  retry_backoff_s: number | null;
  crash_limit: number | null;
  crashes: number;
  mail_type: string[] | string | null;
  mail_user: string | null;
  array_job_id: number | string | null;
  array_task_id: number | null;
  reservation: string | null;
  planned_start_time: Date | string | null;
  script?: string;
  owner: string | null;
  submit_time: Date | string;
  start_time: Date | string | null;
  end_time: Date | string | null;
}

const iso = (value: Date | string | null) => (value === null ? null : new Date(value).toISOString());

/** A job as the API shows it. */
export function jobView(row: JobRow, options: { script?: boolean } = {}) {
  return {
    id: Number(row.id),
    name: row.name,
    state: row.state,
    cpus: Number(row.cpus),
    exit_code: row.exit_code,
    node: row.node,
    account: row.account,
    partition: row.partition,
    time_limit: row.time_limit_s === null ? null : Number(row.time_limit_s) / 60,
    work_dir: row.work_dir,
    priority: Number(row.requested_priority),
    computed_priority: Number(row.priority),
    requeue: row.requeue,
    attempt: Number(row.attempt),
    reason: row.reason,
    reason_detail: row.reason_detail,
    cancel_requested: row.cancel_requested,
    memory_mb: row.memory_mb === null ? null : Number(row.memory_mb),
    memory_per_cpu: row.memory_per_cpu === null ? null : Number(row.memory_per_cpu),
    submit_dir: row.submit_dir,
    submit_host: row.submit_host,
    ntasks: row.ntasks === null ? null : Number(row.ntasks),
    cpus_per_task: row.cpus_per_task === null ? null : Number(row.cpus_per_task),
    gpus: Number(row.gpus),
    gpu_type: row.gpu_type,
    gres: jsonColumn(row.gres),
    constraint: row.feature_constraint,
    exclusive: row.exclusive,
    nodelist: row.nodelist,
    exclude: row.exclude_nodes,
    held: row.held,
    // A job back in the queue (requeued) holds no GPUs until it is placed again.
    allocated_gpus: row.state === 'PENDING' ? null : row.allocated_gpus,
    owner: row.owner,
    qos: row.qos,
    begin_time: iso(row.begin_time),
    eligible_time: iso(row.eligible_time),
    stdout: row.stdout,
    stderr: row.stderr,
    stdin: row.stdin,
    open_mode: row.open_mode,
    export_env: row.export_env,
    signal: jsonColumn(row.signal),
    comment: row.comment,
    max_rss_kb: row.max_rss_kb === null ? null : Number(row.max_rss_kb),
    cancelled_by: row.cancelled_by,
    requeues: Number(row.requeues),
    dependency: row.dependency,
    kill_on_invalid_dep: row.kill_on_invalid_dep,
    max_requeues: row.max_requeues === null ? null : Number(row.max_requeues),
    retry_on_failure: row.retry_on_failure,
    retry_backoff_s: row.retry_backoff_s === null ? null : Number(row.retry_backoff_s),
    crash_limit: row.crash_limit === null ? null : Number(row.crash_limit),
    crashes: Number(row.crashes),
    mail_type:
      row.mail_type === null
        ? null
        : (Array.isArray(row.mail_type)
            ? row.mail_type
            : row.mail_type.replace(/^\{|\}$/g, '').split(',')
          ).join(','),
    mail_user: row.mail_user,
    /** sbatch `--array`: the array's job id and this task's index (its Slurm id is `<array_job_id>_<task>`). */
    array_job_id: row.array_job_id === null ? null : Number(row.array_job_id),
    array_task_id: row.array_task_id === null ? null : Number(row.array_task_id),
    slurm_id: row.array_job_id === null ? String(row.id) : `${row.array_job_id}_${row.array_task_id}`,
    reservation: row.reservation,
    /** PENDING: when the scheduler plans to start it (squeue --start); null: not planned. */
    planned_start_time: row.state === 'PENDING' && row.held === null ? iso(row.planned_start_time) : null,
    submit_time: iso(row.submit_time),
    start_time: iso(row.start_time),
    end_time: iso(row.end_time),
    ...(options.script ? { script: row.script, environment: row.environment } : {}),
  };
}
export type JobView = ReturnType<typeof jobView>;

/** The columns `jobView` reads (JobRow). */
export const JOB_COLUMNS = sql`id, name, state, cpus, exit_code, node, account, partition, time_limit_s, work_dir,
  environment, priority, requested_priority, requeue, attempt, reason, reason_detail, cancel_requested, owner, submit_time, start_time,
  end_time, memory_mb, gpus, gpu_type, gres, feature_constraint, exclusive, nodelist, exclude_nodes, held,
  allocated_gpus, memory_per_cpu, submit_dir, submit_host, ntasks, cpus_per_task, qos, begin_time, eligible_time,
  stdout, stderr, stdin, open_mode, export_env, signal, comment, max_rss_kb, cancelled_by, requeues, dependency,
  kill_on_invalid_dep, max_requeues, retry_on_failure, retry_backoff_s, crash_limit, crashes,
  mail_type, mail_user, array_job_id, array_task_id, reservation, planned_start_time`;

/** A key that makes a submission happen once (the `submission_keys` table). */
export interface SubmissionKey {
  /** Whose key: `token:<id>`, `anonymous`, `webhook:<id>`. */
  scope: string;
  key: string;
  /** How long the key holds; null: for good. */
  ttlSeconds: number | null;
  /** What the key is, for messages: `Idempotency-Key`, `X-GitHub-Delivery`, ... */
  label: string;
}

export interface SubmitOptions {
  /** Who submits: the job's owner and the audit entry. ANONYMOUS by default. */
  caller?: Principal;
  /** The job's owner when it is not the caller's (webhooks). */
  owner?: string | null;
  /** The submission happens once per key: a repeat returns the first job. */
  keys?: readonly SubmissionKey[];
  /** SHA-256 of the request the keys belong to: a key seen with another request is refused (422). */
  requestHash?: string;
  /** Extra audit details (the webhook, the delivery). */
  audit?: Record<string, unknown>;
}

/** `Idempotency-Key`: printable ASCII, 1 to 255 characters. */
export const IDEMPOTENCY_KEY = /^[\x21-\x7e]{1,255}$/;
/** How long an Idempotency-Key holds. */
export const IDEMPOTENCY_TTL_SECONDS = 24 * 60 * 60;

/** Canonical JSON (sorted keys) of a request, for request hashes. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

/**
 * Raising a job's priority above `priorityCeiling` puts it ahead of other owners' jobs: an admin's right (a
 * webhook's job template is an admin's too). Throws 403 naming the first job that asks for more.
 */
function checkPriorities(
  ctx: Context,
  caller: Principal,
  inputs: readonly SubmitJobInput[],
  field: (index: number) => string,
): void {
  if (hasScope(caller, 'admin') || caller.kind === 'webhook') return;
  const ceiling = ctx.config.priorityCeiling;
  const index = inputs.findIndex((input) => (input.priority ?? 0) > ceiling);
  if (index < 0) return;
  throw forbidden(
    'priority_not_allowed',
    `${field(index)}: priority ${inputs[index]?.priority} is above ${ceiling}, the most a token without the admin scope may set; lower it, or ask an admin`,
    { ceiling },
  );
}

/** Submits a job (see submitJobOnce); returns the job, or the first one for a repeated key. */
export async function submitJob(
  ctx: Context,
  input: SubmitJobInput,
  options: SubmitOptions = {},
): Promise<JobView> {
  return (await submitJobOnce(ctx, input, options)).job;
}

/**
 * Submits a job, once per key. Everything is ONE statement: the keys are claimed (the primary key of
 * submission_keys makes a concurrent retry wait for the first, then find it), the job is inserted with the
 * id the keys point to, and the audit entry is written. If any key is already held (and not expired), no
 * job is inserted and the job the key points to is returned with `duplicate: true`.
 */
export async function submitJobOnce(
  ctx: Context,
  input: SubmitJobInput,
  options: SubmitOptions = {},
): Promise<{ job: JobView; duplicate: boolean }> {
  const caller = options.caller ?? ANONYMOUS;
  checkPriorities(ctx, caller, [input], () => 'priority');
  const array = checkArray(ctx, input, 'array');
  const owner = options.owner !== undefined ? options.owner : caller.owner;
  const [charge] = await chargeSubmission(ctx, owner, [input], () => 'account');
  const charged = chargedInput(input, charge);
  const [resources] = await admitJobs(ctx, [withTimeLimit(charged)], (_, name) => name);
  chargeWall(charge, resources, 'time_limit');
  await checkDependencies(ctx, [input], () => 'dependency');
  await checkReservations(ctx.db, [input], owner, () => 'reservation');
  const keys = [...(options.keys ?? [])].sort((a, b) =>
    `${a.scope}\u0000${a.key}` < `${b.scope}\u0000${b.key}` ? -1 : 1,
  );
  const requestHash = options.requestHash ?? '';
  for (let attempt = 1; ; attempt++) {
    let row: JobRow | undefined;
    const statement = submitStatement(
      ctx,
      charged,
      resources as JobResources,
      caller,
      options,
      keys,
      requestHash,
      array,
    );
    try {
      row = await underSubmitLimits(ctx, owner, [charge], array ? array.indexes.length : 1, (db) =>
        queryOne<JobRow>(db, statement),
      );
    } catch (error) {
      // A key held by another submission while another key was free: the free one was claimed for a job
      // id that was not inserted, which the foreign key refuses, rolling the whole statement back.
      if (pgErrorCode(error) !== '23503' || keys.length < 2) throw error;
    }
    if (row) {
      ctx.defer(ctx.requestSchedule());
      return { job: jobView(row), duplicate: false };
    }
    const held = await queryOne<{
      job_id: string | number;
      request_hash: string;
      scope: string;
      key: string;
    }>(
      ctx.db,
      sql`SELECT job_id, request_hash, scope, key FROM submission_keys
          WHERE (scope, key) IN (SELECT * FROM unnest(${pgArray(keys.map((k) => k.scope))}::text[], ${pgArray(keys.map((k) => k.key))}::text[]))
            AND expires_at > now()
          ORDER BY created_at LIMIT 1`,
    );
    if (held) {
      const key = keys.find((k) => k.scope === held.scope && k.key === held.key);
      if (key?.label === 'Idempotency-Key' && held.request_hash !== requestHash) {
        throw new ConductorError(
          'unprocessable',
          'idempotency_key_reused',
          `Idempotency-Key ${JSON.stringify(key.key)} was used with a different request within 24 h; use a new key for a new job`,
          { job_id: Number(held.job_id) },
        );
      }
      return { job: await getJob(ctx.db, Number(held.job_id)), duplicate: true };
    }
    // The holder rolled back or expired meanwhile: try again.
    if (attempt >= 3) throw new Error('submission key contention did not settle');
  }
}

/**
 * The accounts a submission's jobs are charged to (see chargeAccounts): none to look up, no read, for a caller
 * without an owner that names no account (the open local cluster).
 */
async function chargeSubmission(
  ctx: Context,
  owner: string | null,
  inputs: readonly SubmitJobInput[],
  field: (index: number) => string,
): Promise<(Charge | undefined)[]> {
  if (owner === null && inputs.every((input) => input.account === undefined)) {
    if (ctx.config.enforceAssociations) await chargeAccounts(ctx.db, ctx.config, owner, [undefined], field);
    return inputs.map(() => undefined);
  }
  return chargeAccounts(
    ctx.db,
    ctx.config,
    owner,
    inputs.map((input) => input.account),
    field,
  );
}

const chargedInput = (input: SubmitJobInput, charge: Charge | undefined): SubmitJobInput =>
  charge?.account ? { ...input, account: charge.account } : input;

/** MaxWall (wallLimit) on the time limit admission chose. */
function chargeWall(charge: Charge | undefined, resources: JobResources | undefined, field: string): void {
  if (charge && resources) resources.timeLimitS = wallLimit(charge, resources.timeLimitS, field);
}

/**
 * Runs `insert`, in a transaction under the submit limits' locks (lockSubmitLimits) when an account charged has
 * a MaxSubmitJobs; else as it is. `each` is how many jobs each charge adds (an array's tasks).
 */
async function underSubmitLimits<T>(
  ctx: Context,
  owner: string | null,
  charges: readonly (Charge | undefined)[],
  each: number,
  insert: (db: Database) => Promise<T>,
): Promise<T> {
  const limited = charges.filter((c): c is Charge & { account: string } => !!c?.submitLimited && !!c.account);
  if (limited.length === 0) return insert(ctx.db);
  return ctx.db.transaction(async (tx) => {
    await lockSubmitLimits(
      tx,
      owner,
      limited.map((c) => ({ account: c.account, jobs: each })),
    );
    return insert(tx);
  });
}

/** The live nodes as a submission sees them: how many (`live.nodes`). */
const liveNodesSql = (ttlSeconds: number) =>
  sql`SELECT count(*) AS nodes FROM workers w
      WHERE ${liveInPostgres(ttlSeconds, 'w')}`;

/**
 * A new job's reason until the scheduler's first look at it: None (Slurm's), or Resources when no node is live
 * (no pass runs then, so this is what it shows until one joins).
 */
const NEW_REASON = sql`CASE WHEN live.nodes = 0 THEN 'Resources' ELSE 'None' END`;
const NEW_REASON_DETAIL = sql`CASE WHEN live.nodes = 0 THEN 'waiting for a node: no node is live' END`;

/**
 * A new job's reason and its detail: held at submission (JobHeldUser), waiting for its begin time (BeginTime),
 * else `reason`/`detail` (NEW_REASON).
 */
function submitReason(hold: SQL, begin: SQL, heldBy: SQL, reason: SQL, detail: SQL) {
  return {
    reason: sql`CASE WHEN ${hold} THEN 'JobHeldUser' WHEN ${begin} > now() THEN 'BeginTime' ELSE ${reason} END`,
    detail: sql`CASE WHEN ${hold} THEN 'held by ' || coalesce(${heldBy}, 'its owner') || ': release it to let it run'
                     WHEN ${begin} > now() THEN ${beginTimeDetail(begin)} ELSE ${detail} END`,
  };
}

/** The columns of sbatch's options beyond resources, in the order of `slurmValues`. */
const SLURM_COLUMNS = sql`qos, begin_time, eligible_time, held, stdout, stderr, stdin, open_mode, export_env, signal,
  comment, dependency, dependency_any, kill_on_invalid_dep, dependency_pending`;

/** A job's own retry policy (null: its partition's, else the cluster's). */
const RETRY_COLUMNS = sql`max_requeues, retry_on_failure, retry_backoff_s, crash_limit`;
/** sbatch `--mail-type`/`--mail-user` (event notifications), after RETRY_COLUMNS. */
const MAIL_COLUMNS = sql`mail_type, mail_user, reservation`;

/** A submission's values for SLURM_COLUMNS (for json_to_recordset in a batch, or as parameters). */
const slurmFields = (input: SubmitJobInput, killInvalidDepend: boolean) => ({
  qos: input.qos ?? null,
  begin_time: input.begin_time ?? null,
  hold: input.hold ?? false,
  stdout: input.stdout ?? null,
  stderr: input.stderr ?? null,
  stdin: input.stdin ?? null,
  open_mode: input.open_mode ?? null,
  export_env: input.export_env ?? null,
  signal: input.signal ?? null,
  comment: input.comment ?? null,
  ...dependencyFields(input.dependency),
  kill_on_invalid_dep: input.kill_on_invalid_dep ?? killInvalidDepend,
  mail_type: mailTypeColumn(input.mail_type),
  mail_user: input.mail_user ?? null,
  reservation: input.reservation ?? null,
});

/** A submission's dependency: as given (null: none), whether any item is enough, and its items. */
function dependencyFields(text: string | undefined) {
  const parsed = parseDependency(text ?? '');
  return {
    dependency: parsed ? (text as string).trim() : null,
    dependency_any: parsed?.any ?? false,
    deps: (parsed?.items ?? []).map((d) => ({
      kind: d.kind,
      target_job_id: d.targetJobId,
      delay_s: d.delayS,
    })),
  };
}

/** Inserts the job_dependencies rows of the jobs `job` inserted; `deps` is a json array per job (a column or a parameter). */
const dependenciesInsert = (from: SQL, deps: SQL) =>
  sql`INSERT INTO job_dependencies (job_id, kind, target_job_id, delay_s)
      SELECT job.id, d.kind, d.target_job_id, d.delay_s
      FROM ${from}, json_to_recordset(${deps}) AS d(kind text, target_job_id bigint, delay_s int)
      RETURNING 1`;

/**
 * Refuses a dependency that does not parse, or that names jobs that do not exist (Slurm's "Job dependency
 * problem"): 400 invalid_dependency. A new job cannot name itself: its id is not known before it is inserted.
 */
async function checkDependencies(
  ctx: Context,
  inputs: readonly SubmitJobInput[],
  field: (k: number) => string,
) {
  const targets = new Map<number, number[]>();
  inputs.forEach((input, k) => {
    let parsed: Dependency | null;
    try {
      parsed = parseDependency(input.dependency ?? '');
    } catch (error) {
      if (!(error instanceof DependencyError)) throw error;
      throw invalid('invalid_dependency', `${field(k)}: ${error.message}`);
    }
    if (parsed) targets.set(k, dependencyTargets(parsed));
  });
  // aftercorr pairs array tasks: the job is an array, and so is each target (the task of the same index).
  const corr = new Set<number>();
  inputs.forEach((input, k) => {
    const items = parseDependency(input.dependency ?? '')?.items ?? [];
    const paired = items.filter((i) => i.kind === 'aftercorr');
    if (paired.length > 0 && input.array === undefined) {
      throw invalid(
        'invalid_dependency',
        `${field(k)}: aftercorr pairs array tasks: submit the job as an array (--array), each task then waits for the task of the same index`,
      );
    }
    for (const i of paired) corr.add(i.targetJobId as number);
  });
  if (corr.size > 0) {
    const arrays = await query<{ id: string | number }>(
      ctx.db,
      sql`SELECT array_job_id AS id FROM job_arrays WHERE array_job_id = ANY(${pgArray([...corr])}::bigint[])`,
    );
    const known = new Set(arrays.map((r) => Number(r.id)));
    const missing = [...corr].filter((id) => !known.has(id));
    if (missing.length > 0) {
      throw invalid(
        'invalid_dependency',
        `dependency: aftercorr:${missing[0]}: job ${missing[0]} is no job array`,
        {
          missing_job_ids: missing,
        },
      );
    }
  }
  const all = [...new Set([...targets.values()].flat())];
  if (all.length === 0) return;
  const found = await query<{ id: string | number }>(
    ctx.db,
    sql`SELECT id FROM jobs WHERE id = ANY(${pgArray(all)}::bigint[])`,
  );
  const known = new Set(found.map((r) => Number(r.id)));
  for (const [k, ids] of targets) {
    const missing = ids.filter((id) => !known.has(id));
    if (missing.length > 0) {
      throw invalid(
        'invalid_dependency',
        `${field(k)}: Job dependency problem: no job ${missing.join(', ')}`,
        { missing_job_ids: missing },
      );
    }
  }
}

const withTimeLimit = (input: SubmitJobInput) => ({
  ...input,
  time_limit_s: input.time_limit === undefined ? null : parseTimeLimit(input.time_limit),
});

/** The resource columns of a job, in the order of RESOURCE_COLUMNS. */
const resourceValues = (r: JobResources) =>
  sql`${r.partition}, ${r.timeLimitS}, ${r.memoryMb}, ${r.memoryPerCpu}::int, ${r.gpus}, ${r.gpuType}, ${JSON.stringify(r.gres)}::jsonb,
      ${r.constraint}, ${r.exclusive}, ${r.nodelist === null ? null : pgArray(r.nodelist)}::text[],
      ${pgArray(r.exclude)}::text[]`;
const RESOURCE_COLUMNS = sql`partition, time_limit_s, memory_mb, memory_per_cpu, gpus, gpu_type, gres, feature_constraint, exclusive,
  nodelist, exclude_nodes`;

/**
 * sbatch `--array`: the parsed specification, or null for a job that is no array. 400 invalid_array for one
 * that does not parse, or whose indexes reach the cluster's MaxArraySize (CONDUCTOR_MAX_ARRAY_SIZE).
 */
function checkArray(ctx: Context, input: SubmitJobInput, field: string): ArraySpec | null {
  if (input.array === undefined) return null;
  try {
    return parseArraySpec(input.array, ctx.config.maxArraySize);
  } catch (error) {
    if (!(error instanceof ArraySpecError)) throw error;
    throw invalid('invalid_array', `${field}: ${error.message}`, { max_array_size: ctx.config.maxArraySize });
  }
}

function submitStatement(
  ctx: Context,
  input: SubmitJobInput,
  resources: JobResources,
  caller: Principal,
  options: SubmitOptions,
  keys: readonly SubmissionKey[],
  requestHash: string,
  array: ArraySpec | null = null,
) {
  const owner = options.owner !== undefined ? options.owner : caller.owner;
  const submittedBy = caller.kind === 'token' ? caller.tokenId : null;
  const ttl = ctx.config.workerTtlSeconds;
  const live = sql`(${liveNodesSql(ttl)}) live`;
  const f = slurmFields(input, ctx.config.killInvalidDepend);
  const begin = sql`${f.begin_time}::timestamptz`;
  const why = submitReason(
    sql`${f.hold}::boolean`,
    begin,
    sql`${owner}::text`,
    sql`(SELECT ${NEW_REASON} FROM ${live})`,
    sql`(SELECT ${NEW_REASON_DETAIL} FROM ${live})`,
  );
  const prio = priorityExpressions(ctx.config.priority, {
    requested: sql`${input.priority ?? 0}::int`,
    account: sql`${input.account ?? null}::text`,
    cpus: sql`${input.cpus}::int`,
    partition: sql`${resources.partition}::text`,
    qos: sql`${f.qos}::text`,
    eligible: sql`greatest(now(), ${begin})`,
  });
  const values = sql`${input.name ?? 'job'}, ${input.script}, ${input.cpus}, ${input.account ?? null},
                ${input.work_dir ?? null}, ${JSON.stringify(input.environment ?? {})}::jsonb, ${prio.priority},
                ${input.priority ?? 0}::int, ${prio.factors},
                ${input.requeue ?? false}, ${owner}::text, ${submittedBy}::bigint,
                ${input.submit_dir ?? null}::text, ${input.submit_host ?? null}::text, ${input.ntasks ?? null}::int,
                ${input.cpus_per_task ?? null}::int, ${why.reason}, ${why.detail},
                ${resourceValues(resources)},
                ${f.qos}::text, ${begin}, greatest(now(), ${begin}), ${f.hold ? 'user' : null}::text,
                ${f.stdout}::text, ${f.stderr}::text, ${f.stdin}::text, ${f.open_mode}::text, ${f.export_env}::text,
                ${f.signal === null ? null : JSON.stringify(f.signal)}::jsonb, ${f.comment}::text,
                ${f.dependency}::text, ${f.dependency_any}::boolean, ${f.kill_on_invalid_dep}::boolean,
                ${f.dependency !== null}::boolean,
                ${input.max_requeues ?? null}::int, ${input.retry_on_failure ?? null}::boolean,
                ${input.retry_backoff_s ?? null}::int, ${input.crash_limit ?? null}::int,
                ${f.mail_type === null ? null : pgArray(f.mail_type)}::text[], ${f.mail_user}::text,
                ${f.reservation}::text`;
  const deps = dependenciesInsert(sql`job`, sql`${JSON.stringify(f.deps)}::json`);
  const columns = sql`name, script, cpus, account, work_dir, environment, priority, requested_priority,
                      priority_factors, requeue, owner, submitted_by, submit_dir, submit_host, ntasks, cpus_per_task, reason, reason_detail, ${RESOURCE_COLUMNS},
                      ${SLURM_COLUMNS}, ${RETRY_COLUMNS}, ${MAIL_COLUMNS}`;
  const audit = auditInsert(caller, 'job.submit', {
    target: sql`'job:' || job.id`,
    details: sql`jsonb_build_object('name', job.name, 'cpus', job.cpus, 'owner', job.owner) || ${JSON.stringify(options.audit ?? {})}::jsonb`,
    from: sql`job`,
  });
  if (array) return arraySubmitStatement({ keys, requestHash, columns, values, array, caller, options, f });
  if (keys.length === 0) {
    return sql`WITH job AS (INSERT INTO jobs (${columns}) VALUES (${values}) RETURNING ${JOB_COLUMNS}),
               audit AS (${audit}),
               deps AS (${deps})
               SELECT * FROM job`;
  }
  return sql`WITH reserved AS MATERIALIZED (SELECT nextval(pg_get_serial_sequence('jobs', 'id')) AS id),
             claim AS (${claimKeys(keys, requestHash)}),
             job AS (
               INSERT INTO jobs (id, ${columns})
               SELECT reserved.id, ${values} FROM reserved
               WHERE (SELECT count(*) FROM claim) = ${keys.length}
               RETURNING ${JOB_COLUMNS}
             ),
             audit AS (${audit}),
             deps AS (${deps})
             SELECT * FROM job`;
}

/** Claims the submission keys for the job id `reserved.id` (a CTE of the statement that uses it). */
const claimKeys = (keys: readonly SubmissionKey[], requestHash: string) =>
  sql`INSERT INTO submission_keys AS k (scope, key, job_id, request_hash, expires_at)
      SELECT v.scope, v.key, reserved.id, ${requestHash}::text,
             CASE WHEN v.ttl < 0 THEN 'infinity'::timestamptz ELSE now() + make_interval(secs => v.ttl) END
      FROM unnest(${pgArray(keys.map((k) => k.scope))}::text[], ${pgArray(keys.map((k) => k.key))}::text[],
                  ${pgArray(keys.map((k) => k.ttlSeconds ?? -1))}::int[]) AS v(scope, key, ttl)
      CROSS JOIN reserved
      ORDER BY v.scope, v.key
      ON CONFLICT (scope, key) DO UPDATE SET job_id = excluded.job_id, request_hash = excluded.request_hash,
        created_at = now(), expires_at = excluded.expires_at
      WHERE k.expires_at <= now()
      RETURNING 1`;

/**
 * An array's submission, ONE statement: the keys are claimed for the array's job id (reserved first), every
 * task is inserted (the first with that id, the others with ids of their own, in index order), the array's
 * row and the audit entry (one for the array) are written. Returns the first task.
 */
function arraySubmitStatement(a: {
  keys: readonly SubmissionKey[];
  requestHash: string;
  columns: SQL;
  values: SQL;
  array: ArraySpec;
  caller: Principal;
  options: SubmitOptions;
  f: ReturnType<typeof slurmFields>;
}) {
  const bounds = arrayBounds(a.array.indexes);
  const claimed = sql`(SELECT count(*) FROM claim) = ${a.keys.length}`;
  const audit = auditInsert(a.caller, 'job.submit', {
    target: sql`'job:' || job.id`,
    details: sql`jsonb_build_object('name', job.name, 'cpus', job.cpus, 'owner', job.owner,
      'array', ${a.array.text}::text, 'tasks', ${bounds.count}::int, 'max_running', ${a.array.maxRunning}::int)
      || ${JSON.stringify(a.options.audit ?? {})}::jsonb`,
    from: sql`first AS job`,
  });
  const deps = dependenciesInsert(sql`job`, sql`${JSON.stringify(a.f.deps)}::json`);
  return sql`WITH reserved AS MATERIALIZED (
               SELECT nextval(s.seq) AS id, s.seq FROM (SELECT pg_get_serial_sequence('jobs', 'id')::regclass AS seq) s
             ),
             claim AS (${claimKeys(a.keys, a.requestHash)}),
             job AS (
               INSERT INTO jobs (id, array_job_id, array_task_id, ${a.columns})
               SELECT CASE WHEN t.ord = 1 THEN reserved.id ELSE nextval(reserved.seq) END, reserved.id, t.task,
                      ${a.values}
               FROM reserved, unnest(${pgArray(a.array.indexes)}::int[]) WITH ORDINALITY AS t(task, ord)
               WHERE ${claimed}
               RETURNING ${JOB_COLUMNS}
             ),
             first AS (SELECT * FROM job WHERE id = (SELECT id FROM reserved)),
             arr AS (
               INSERT INTO job_arrays (array_job_id, spec, task_count, task_min, task_max, task_step, max_running)
               SELECT reserved.id, ${a.array.text}::text, ${bounds.count}::int, ${bounds.min}::int, ${bounds.max}::int,
                      ${bounds.step}::int, ${a.array.maxRunning}::int
               FROM reserved WHERE ${claimed}
               RETURNING 1
             ),
             audit AS (${audit}),
             deps AS (${deps})
             SELECT * FROM first`;
}

/** Most jobs in one batch (`POST /api/v1/jobs/batch`). */
export const MAX_BATCH_JOBS = 1000;

/**
 * A batch body: `{jobs: [...]}`, 1 to MAX_BATCH_JOBS jobs. Each job is checked with `submitJobInput` on its own
 * (routes/jobs.ts), so that an error names `jobs[k].field`; this schema checks the envelope.
 */
export const submitBatchEnvelope = z.strictObject({
  jobs: z
    .array(z.unknown(), { error: 'jobs is required: a list of 1 to 1000 jobs (each like a /submit body)' })
    .min(1, 'jobs must hold at least 1 job')
    .max(MAX_BATCH_JOBS, `jobs holds at most ${MAX_BATCH_JOBS} jobs per batch; split the submission`),
});
/** The batch body as documented (OpenAPI): the envelope with each job's own schema. */
export const submitBatchInput = z.strictObject({
  jobs: z.array(submitJobInput).min(1).max(MAX_BATCH_JOBS),
});
export type SubmitBatchInput = z.infer<typeof submitBatchInput>;

export interface BatchOptions {
  /** Who submits: the jobs' owner and the audit entries. ANONYMOUS by default. */
  caller?: Principal;
  /**
   * An Idempotency-Key for the whole batch: `scope` as for /submit (`token:<id>` or `anonymous`). The key
   * points to the first job; each job `k` of the batch also holds the key `<key> #<k>` (a space: never a
   * client's key), so that a repeat finds every id of the batch.
   */
  idempotency?: { scope: string; key: string; requestHash: string };
}

/**
 * Submits a batch of jobs in ONE statement: the ids are reserved (ascending in request order), the jobs
 * inserted, one `job.submit` audit entry per job written and, with an Idempotency-Key, the keys claimed, all
 * or nothing. Then ONE scheduling pass is asked for. Returns the jobs in request order; a repeated key
 * returns the first batch with `duplicate: true`.
 */
export async function submitJobsBatch(
  ctx: Context,
  inputs: readonly SubmitJobInput[],
  options: BatchOptions = {},
): Promise<{ jobs: JobView[]; duplicate: boolean }> {
  if (inputs.length < 1 || inputs.length > MAX_BATCH_JOBS) {
    throw new ConductorError(
      'invalid',
      'invalid_request',
      `Invalid body: jobs holds 1 to ${MAX_BATCH_JOBS} jobs`,
    );
  }
  const caller = options.caller ?? ANONYMOUS;
  checkPriorities(ctx, caller, inputs, (k) => `jobs[${k}].priority`);
  const arrayAt = inputs.findIndex((input) => input.array !== undefined);
  if (arrayAt >= 0) {
    throw invalid(
      'invalid_array',
      `jobs[${arrayAt}].array: an array is submitted on its own (POST /api/v1/jobs/submit), not in a batch`,
    );
  }
  const charges = await chargeSubmission(ctx, caller.owner, inputs, (k) => `jobs[${k}].account`);
  const charged = inputs.map((input, k) => chargedInput(input, charges[k]));
  const resources = await admitJobs(ctx, charged.map(withTimeLimit), (k, name) => `jobs[${k}].${name}`);
  for (const [k, c] of charges.entries()) chargeWall(c, resources[k], `jobs[${k}].time_limit`);
  await checkDependencies(ctx, inputs, (k) => `jobs[${k}].dependency`);
  await checkReservations(ctx.db, inputs, caller.owner, (k) => `jobs[${k}].reservation`);
  const idem = options.idempotency;
  for (let attempt = 1; ; attempt++) {
    let rows: JobRow[] | undefined;
    const statement = batchStatement(ctx, charged, resources, caller, idem);
    try {
      rows = await underSubmitLimits(ctx, caller.owner, charges, 1, (db) => query<JobRow>(db, statement));
    } catch (error) {
      // Some keys of the batch were free and others held: the free ones were claimed for job ids that were
      // not inserted, which the foreign key refuses, rolling the whole statement back. Look the holder up.
      if (pgErrorCode(error) !== '23503' || !idem) throw error;
    }
    if (rows && rows.length > 0) {
      ctx.defer(ctx.requestSchedule());
      const sorted = [...rows].sort((a, b) => Number(a.id) - Number(b.id));
      return { jobs: sorted.map((r) => jobView(r)), duplicate: false };
    }
    if (!idem) throw new Error('the batch insert returned no rows');
    const replay = await findBatch(ctx.db, idem, inputs.length);
    if (replay) return { jobs: replay, duplicate: true };
    // The holder rolled back or expired meanwhile: try again.
    if (attempt >= 3) throw new Error('submission key contention did not settle');
  }
}

/** The key of job `index` of a batch submitted with the Idempotency-Key `key`. */
const batchMemberKey = (key: string, index: number) => `${key} #${index}`;

/** The batch a live Idempotency-Key points to, in request order; undefined when the key is not held. */
async function findBatch(
  db: Database,
  idem: NonNullable<BatchOptions['idempotency']>,
  size: number,
): Promise<JobView[] | undefined> {
  const held = await queryOne<{ job_id: string | number; request_hash: string }>(
    db,
    sql`SELECT job_id, request_hash FROM submission_keys
        WHERE scope = ${idem.scope} AND key = ${idem.key} AND expires_at > now()`,
  );
  if (!held) return undefined;
  if (held.request_hash !== idem.requestHash) {
    throw new ConductorError(
      'unprocessable',
      'idempotency_key_reused',
      `Idempotency-Key ${JSON.stringify(idem.key)} was used with a different request within 24 h; use a new key for a new batch`,
      { job_id: Number(held.job_id) },
    );
  }
  // Same request hash: the same batch (same size). Its member keys were written by the same statement as the
  // batch's own key: the same request hash and expiry (one transaction's now()).
  const members = Array.from({ length: size }, (_, i) => batchMemberKey(idem.key, i));
  const rows = await query<JobRow>(
    db,
    sql`SELECT ${JOB_COLUMNS} FROM jobs WHERE id IN (
          SELECT m.job_id FROM submission_keys m
          JOIN submission_keys k ON k.scope = m.scope AND k.key = ${idem.key}
          WHERE m.scope = ${idem.scope} AND m.key = ANY(${pgArray(members)}::text[])
            AND m.request_hash = k.request_hash AND m.expires_at = k.expires_at)
        ORDER BY id`,
  );
  if (rows.length !== size || Number(rows[0]?.id) !== Number(held.job_id)) {
    throw conflict(
      'idempotency_batch_incomplete',
      `Idempotency-Key ${JSON.stringify(idem.key)} belongs to a batch that is no longer complete (jobs were deleted); use a new key`,
    );
  }
  return rows.map((r) => jobView(r));
}

function batchStatement(
  ctx: Context,
  inputs: readonly SubmitJobInput[],
  resources: readonly JobResources[],
  caller: Principal,
  idem: BatchOptions['idempotency'],
) {
  const owner = caller.owner;
  const submittedBy = caller.kind === 'token' ? caller.tokenId : null;
  const ttl = ctx.config.workerTtlSeconds;
  const n = inputs.length;
  // One JSON parameter for the whole batch; `i` is the job's place in the request.
  const data = JSON.stringify(
    inputs.map((input, i) => {
      const r = resources[i] as JobResources;
      return {
        i,
        name: input.name ?? 'job',
        script: input.script,
        cpus: input.cpus,
        account: input.account ?? null,
        partition: r.partition,
        time_limit_s: r.timeLimitS,
        work_dir: input.work_dir ?? null,
        environment: input.environment ?? {},
        priority: input.priority ?? 0,
        requeue: input.requeue ?? false,
        memory_mb: r.memoryMb,
        memory_per_cpu: r.memoryPerCpu,
        submit_dir: input.submit_dir ?? null,
        submit_host: input.submit_host ?? null,
        ntasks: input.ntasks ?? null,
        cpus_per_task: input.cpus_per_task ?? null,
        gpus: r.gpus,
        gpu_type: r.gpuType,
        gres: r.gres,
        feature_constraint: r.constraint,
        exclusive: r.exclusive,
        nodelist: r.nodelist,
        exclude_nodes: r.exclude,
        ...slurmFields(input, ctx.config.killInvalidDepend),
        max_requeues: input.max_requeues ?? null,
        retry_on_failure: input.retry_on_failure ?? null,
        retry_backoff_s: input.retry_backoff_s ?? null,
        crash_limit: input.crash_limit ?? null,
      };
    }),
  );
  const columns = sql`name, script, cpus, account, partition, time_limit_s, work_dir, environment, priority,
                      requested_priority, priority_factors, requeue, owner, submitted_by, reason, reason_detail, memory_mb, gpus, gpu_type, gres, feature_constraint,
                      exclusive, nodelist, exclude_nodes, memory_per_cpu, submit_dir, submit_host, ntasks,
                      cpus_per_task, ${SLURM_COLUMNS}, ${RETRY_COLUMNS}, ${MAIL_COLUMNS}`;
  const prio = priorityExpressions(ctx.config.priority, {
    requested: sql`x.priority`,
    account: sql`x.account`,
    cpus: sql`x.cpus`,
    partition: sql`x.partition`,
    qos: sql`x.qos`,
    eligible: sql`greatest(now(), x.begin_time)`,
  });
  const why = submitReason(
    sql`x.hold`,
    sql`x.begin_time`,
    sql`${owner}::text`,
    NEW_REASON,
    NEW_REASON_DETAIL,
  );
  const audit = auditInsert(caller, 'job.submit', {
    target: sql`'job:' || job.id`,
    details: sql`jsonb_build_object('name', job.name, 'cpus', job.cpus, 'owner', job.owner,
                   'batch_index', r.i, 'batch_size', ${n}::int)
                 || ${JSON.stringify(idem ? { idempotency_key: idem.key } : {})}::jsonb`,
    from: sql`job JOIN reserved r ON r.id = job.id`,
  });
  // The keys: the batch's own (to the first job), then one per job.
  const keyRows = idem
    ? [{ key: idem.key, i: 0 }, ...inputs.map((_, i) => ({ key: batchMemberKey(idem.key, i), i }))]
    : [];
  const claim = idem
    ? sql`claim AS (
            INSERT INTO submission_keys AS k (scope, key, job_id, request_hash, expires_at)
            SELECT ${idem.scope}::text, v.key, r.id, ${idem.requestHash}::text,
                   now() + make_interval(secs => ${IDEMPOTENCY_TTL_SECONDS}::int)
            FROM unnest(${pgArray(keyRows.map((k) => k.key))}::text[], ${pgArray(keyRows.map((k) => k.i))}::int[]) AS v(key, i)
            JOIN reserved r ON r.i = v.i
            ORDER BY v.key
            ON CONFLICT (scope, key) DO UPDATE SET job_id = excluded.job_id, request_hash = excluded.request_hash,
              created_at = now(), expires_at = excluded.expires_at
            WHERE k.expires_at <= now()
            RETURNING 1
          ),`
    : sql``;
  const claimed = idem ? sql`WHERE (SELECT count(*) FROM claim) = ${keyRows.length}` : sql``;
  return sql`WITH input AS MATERIALIZED (
               SELECT * FROM json_to_recordset(${data}::json) AS x(i int, name text, script text, cpus int,
                 account text, partition text, time_limit_s int, work_dir text, environment jsonb, priority int,
                 requeue boolean, memory_mb int, gpus int, gpu_type text, gres jsonb, feature_constraint text,
                 exclusive boolean, nodelist text[], exclude_nodes text[], memory_per_cpu int, submit_dir text,
                 submit_host text, ntasks int, cpus_per_task int, qos text, begin_time timestamptz, hold boolean,
                 stdout text, stderr text, stdin text, open_mode text, export_env text, signal jsonb, comment text,
                 dependency text, dependency_any boolean, kill_on_invalid_dep boolean, deps json,
                 max_requeues int, retry_on_failure boolean, retry_backoff_s int, crash_limit int,
                 mail_type text[], mail_user text, reservation text)
             ),
             live AS MATERIALIZED (${liveNodesSql(ttl)}),
             ids AS MATERIALIZED (
               SELECT nextval(pg_get_serial_sequence('jobs', 'id')) AS id FROM generate_series(1, ${n}::int)
             ),
             reserved AS MATERIALIZED (
               SELECT id, (row_number() OVER (ORDER BY id) - 1)::int AS i FROM ids
             ),
             ${claim}
             job AS (
               INSERT INTO jobs (id, ${columns})
               SELECT r.id, x.name, x.script, x.cpus, x.account, x.partition, x.time_limit_s, x.work_dir,
                      x.environment, ${prio.priority}, x.priority, ${prio.factors}, x.requeue, ${owner}::text, ${submittedBy}::bigint,
                      ${why.reason}, ${why.detail}, x.memory_mb, x.gpus, x.gpu_type, x.gres,
                      x.feature_constraint, x.exclusive, x.nodelist, x.exclude_nodes, x.memory_per_cpu,
                      x.submit_dir, x.submit_host, x.ntasks, x.cpus_per_task, x.qos, x.begin_time,
                      greatest(now(), x.begin_time), CASE WHEN x.hold THEN 'user' END, x.stdout, x.stderr, x.stdin,
                      x.open_mode, x.export_env, x.signal, x.comment, x.dependency, x.dependency_any,
                      x.kill_on_invalid_dep, x.dependency IS NOT NULL,
                      x.max_requeues, x.retry_on_failure, x.retry_backoff_s, x.crash_limit, x.mail_type, x.mail_user,
                      x.reservation
               FROM input x JOIN reserved r ON r.i = x.i CROSS JOIN live
               ${claimed}
               ORDER BY x.i
               RETURNING ${JOB_COLUMNS}
             ),
             audit AS (${audit}),
             deps AS (${dependenciesInsert(sql`job JOIN reserved r ON r.id = job.id JOIN input x ON x.i = r.i`, sql`x.deps`)})
             SELECT * FROM job`;
}

/** One job with its script and environment; another owner's job is "not found" to a non-admin. */
export async function getJob(db: Database, id: number, viewer: Principal = ANONYMOUS): Promise<JobView> {
  const row = await queryOne<JobRow>(db, sql`SELECT ${JOB_COLUMNS}, script FROM jobs WHERE id = ${id}`);
  if (!row || !seesJobOf(viewer, row.owner)) throw notFound('job_not_found', `Job ${id} does not exist`);
  return jobView(row, { script: true });
}

/** One run of a job on a node (GET /api/v1/jobs/{id} `attempts`; sacct --duplicates). */
export interface AttemptView {
  attempt: number;
  node: string | null;
  /** Null: its agent never started it. */
  start_time: string | null;
  /** Null: it runs now. */
  end_time: string | null;
  /** How it ended (a job state, or REQUEUED: put back by scontrol requeue); RUNNING: it runs now. */
  state: string;
  exit_code: string | null;
  reason: string | null;
  /** The job went back to the queue after it. */
  requeued: boolean;
  /** What it held (null: recorded before usage accounting, migration 0019). */
  cpus: number | null;
  memory_mb: number | null;
  gpus: number | null;
  partition: string | null;
  /** When it could have started (its queue wait runs from here to start_time). */
  eligible_time: string | null;
  /** Peak resident memory (KiB) its agent reported. */
  max_rss_kb: number | null;
  /** cpus × its run (start to end); null while it runs. */
  cpu_seconds: number | null;
}

/**
 * A job's attempts, first to last: the ended ones (job_attempts, written with each transition out of RUNNING)
 * and, while it runs, the current one (from the job's row and its allocation).
 */
export async function jobAttempts(db: Database, job: JobView): Promise<AttemptView[]> {
  const rows = await query<{
    attempt: number;
    node: string | null;
    start_time: Date | string | null;
    end_time: Date | string;
    state: string;
    exit_code: string | null;
    reason: string | null;
    requeued: boolean;
    cpus: number | null;
    memory_mb: number | null;
    gpus: number | null;
    partition: string | null;
    eligible_time: Date | string | null;
    max_rss_kb: string | number | null;
    cpu_seconds: string | number | null;
  }>(
    db,
    sql`SELECT attempt, node, start_time, end_time, state, exit_code, reason, requeued, cpus, memory_mb, gpus,
               partition, eligible_time, max_rss_kb,
               cpus * greatest(extract(epoch FROM end_time - coalesce(start_time, end_time)), 0) AS cpu_seconds
        FROM job_attempts WHERE job_id = ${job.id} ORDER BY attempt`,
  );
  const attempts: AttemptView[] = rows.map((r) => ({
    attempt: Number(r.attempt),
    node: r.node,
    start_time: iso(r.start_time),
    end_time: iso(r.end_time),
    state: r.state,
    exit_code: r.exit_code,
    reason: r.reason,
    requeued: r.requeued,
    cpus: r.cpus,
    memory_mb: r.memory_mb,
    gpus: r.gpus,
    partition: r.partition,
    eligible_time: iso(r.eligible_time),
    max_rss_kb: r.max_rss_kb === null ? null : Number(r.max_rss_kb),
    cpu_seconds: r.cpu_seconds === null ? null : Number(r.cpu_seconds),
  }));
  if (job.state === 'RUNNING' && !attempts.some((a) => a.attempt === job.attempt)) {
    const held = await queryOne<{ cpus: number; memory_mb: number; gpus: number }>(
      db,
      sql`SELECT allocated_cpus AS cpus, memory_mb, bit_count(gpu_mask::bit(64))::int AS gpus
          FROM resource_allocations WHERE job_id = ${job.id} AND NOT released`,
    );
    attempts.push({
      attempt: job.attempt,
      node: job.node,
      start_time: job.start_time,
      end_time: null,
      state: 'RUNNING',
      exit_code: null,
      reason: null,
      requeued: false,
      cpus: held?.cpus ?? job.cpus,
      memory_mb: held?.memory_mb ?? null,
      gpus: held?.gpus ?? null,
      partition: job.partition,
      eligible_time: null,
      max_rss_kb: null,
      cpu_seconds: null,
    });
  }
  return attempts;
}

export async function listJobs(db: Database, input: ListJobsInput, viewer: Principal = ANONYMOUS) {
  const filters = [sql`true`];
  if (input.state) filters.push(sql`state = ANY(${`{${input.state.join(',')}}`}::text[])`);
  if (input.before) filters.push(sql`id < ${input.before}`);
  if (input.after !== undefined) filters.push(sql`id > ${input.after}`);
  // An array's job id names all its tasks, as in Slurm (squeue -j, sacct -j).
  if (input.ids) {
    const ids = sql`${pgArray(input.ids)}::bigint[]`;
    filters.push(sql`(id = ANY(${ids}) OR array_job_id = ANY(${ids}))`);
  }
  if (input.name) filters.push(sql`name = ANY(${pgArray(input.name)}::text[])`);
  if (input.owner) filters.push(sql`owner = ANY(${pgArray(input.owner)}::text[])`);
  if (input.account) filters.push(sql`account = ANY(${pgArray(input.account)}::text[])`);
  // A pending job may name several partitions (`a,b`); a placed one holds the one it runs in.
  if (input.partition) {
    filters.push(sql`string_to_array(partition, ',') && ${pgArray(input.partition)}::text[]`);
  }
  if (input.node) filters.push(sql`node = ${input.node}`);
  if (input.array !== undefined) filters.push(sql`array_job_id = ${input.array}`);
  if (input.active_since) {
    filters.push(sql`(end_time IS NULL OR end_time >= ${input.active_since}::timestamptz)`);
  }
  if (input.active_until) filters.push(sql`submit_time < ${input.active_until}::timestamptz`);
  if (!seesAllJobs(viewer)) filters.push(sql`owner = ${viewer.owner ?? ''}`);
  const asc = input.order === 'asc';
  const rows = await query<JobRow>(
    db,
    sql`SELECT ${JOB_COLUMNS} FROM jobs WHERE ${sql.join(filters, sql` AND `)}
        ORDER BY ${asc ? sql`id ASC` : sql`id DESC`} LIMIT ${input.limit + 1}`,
  );
  const page = rows.slice(0, input.limit).map((r) => jobView(r));
  const next = rows.length > input.limit ? (page.at(-1)?.id ?? null) : null;
  return { jobs: page, next_before: asc ? null : next, next_after: asc ? next : null };
}

/** `id` is an array's job id (its first task's): cancel, hold and release then act on every task. */
async function isArrayJobId(db: Database, id: number): Promise<boolean> {
  return (await queryOne(db, sql`SELECT 1 AS one FROM job_arrays WHERE array_job_id = ${id}`)) !== undefined;
}

/** Who acts, as a job records it (cancelled_by): the caller's owner, or `admin` for an admin without one. */
const actingAs = (caller: Principal): string | null =>
  caller.owner ?? (hasScope(caller, 'admin') ? 'admin' : null);

/**
 * Cancels a job. PENDING, or placed but not yet started by its agent: CANCELLED at once (allocation
 * released; an agent that picked it up learns it from the answer to its `started` report and kills it).
 * Running on an agent: marked, the agent is woken, kills the process group and reports CANCELLED. Already finished: 409. A non-admin may cancel only its owner's jobs (others are not found).
 */
export async function cancelJob(ctx: Context, id: number, caller: Principal = ANONYMOUS): Promise<JobView> {
  // An array's job id names the whole array (Slurm's `scancel 123`): every task is cancelled.
  if (await isArrayJobId(ctx.db, id)) {
    await cancelArray(ctx, id, {}, caller);
    return getJob(ctx.db, id, caller);
  }
  const mine = seesAllJobs(caller) ? sql`true` : sql`owner = ${caller.owner ?? ''}`;
  const by = actingAs(caller);
  if (!seesAllJobs(caller)) await getJob(ctx.db, id, caller); // 404 for another owner's job
  const ended = await endJobsAndRelease(
    ctx,
    {
      update: sql`UPDATE jobs SET state = 'CANCELLED', end_time = now(), reason = 'cancelled by user',
          cancelled_by = ${by}::text,
          exit_code = CASE WHEN state = 'RUNNING' THEN '0:15' ELSE NULL END
        WHERE id = ${id} AND ${mine} AND (state = 'PENDING' OR (state = 'RUNNING' AND start_time IS NULL))
        RETURNING id, state, node, attempt, exit_code`,
      workers: sql`SELECT node FROM jobs WHERE id = ${id}`,
    },
    { racesPlacement: true },
  );
  if (ended.length === 0) {
    const marked = await queryOne<{ node: string }>(
      ctx.db,
      sql`UPDATE jobs SET cancel_requested = true, cancelled_by = ${by}::text
          WHERE id = ${id} AND ${mine} AND state = 'RUNNING' RETURNING node`,
    );
    if (marked) {
      ctx.notifier.notify(marked.node);
    } else {
      const job = await getJob(ctx.db, id, caller);
      if ((FINAL_STATES as string[]).includes(job.state)) {
        throw conflict(
          'job_finished',
          `Job ${id} already ended as ${job.state}; there is nothing to cancel`,
          {
            state: job.state,
          },
        );
      }
      throw new ConductorError('conflict', 'cancel_raced', `Job ${id} changed state meanwhile; try again`);
    }
  }
  await recordAudit(ctx.db, caller, 'job.cancel', `job:${id}`, {
    stage: ended.length > 0 ? 'cancelled' : 'kill requested',
  });
  return getJob(ctx.db, id, caller);
}

/**
 * Deletes submission keys that expired (up to 10,000 per call): Idempotency-Keys and webhook delivery and
 * signature keys (webhooks.ts says how long those hold). Housekeeping on the cache-sync cadence. Returns how
 * many went.
 */
export async function pruneSubmissionKeys(db: Database): Promise<number> {
  const rows = await query<{ n: string | number }>(
    db,
    sql`WITH gone AS (
          DELETE FROM submission_keys WHERE ctid IN (
            SELECT ctid FROM submission_keys WHERE expires_at < now() LIMIT 10000)
          RETURNING 1)
        SELECT count(*) AS n FROM gone`,
  );
  return Number(rows[0]?.n ?? 0);
}

/**
 * Holds a pending job (Slurm's `scontrol hold`): it stays PENDING and is not placed until released. An admin's
 * hold (JobHeldAdmin) can only be released by an admin; the owner's (JobHeldUser) by the owner or an admin.
 */
export async function holdJob(ctx: Context, id: number, caller: Principal = ANONYMOUS): Promise<JobView> {
  if (await isArrayJobId(ctx.db, id)) {
    await holdArray(ctx, id, {}, caller);
    return getJob(ctx.db, id, caller);
  }
  await getJob(ctx.db, id, caller); // 404 for another owner's job
  const { kind, statement } = holdPending(caller, sql`id = ${id}`);
  const row = await queryOne<{ id: number }>(ctx.db, statement);
  if (!row) await refuseHoldChange(ctx, id, caller, 'hold');
  await recordAudit(ctx.db, caller, 'job.hold', `job:${id}`, { kind });
  return getJob(ctx.db, id, caller);
}

/** Releases a held job (Slurm's `scontrol release`): it waits in the queue again, in its old place. */
export async function releaseJob(ctx: Context, id: number, caller: Principal = ANONYMOUS): Promise<JobView> {
  if (await isArrayJobId(ctx.db, id)) {
    await releaseArray(ctx, id, {}, caller);
    return getJob(ctx.db, id, caller);
  }
  await getJob(ctx.db, id, caller);
  const admin = hasScope(caller, 'admin');
  const row = await queryOne<{ id: number }>(
    ctx.db,
    sql`UPDATE jobs SET held = NULL, reason = 'None', reason_detail = NULL
        WHERE id = ${id} AND state = 'PENDING' AND (held = 'user' OR (held = 'admin' AND ${admin}))
        RETURNING id`,
  );
  if (!row) await refuseHoldChange(ctx, id, caller, 'release');
  await recordAudit(ctx.db, caller, 'job.release', `job:${id}`, {});
  // Read before the pass is asked for: the answer is what the release did, not what a pass did next.
  const released = await getJob(ctx.db, id, caller);
  ctx.defer(ctx.requestSchedule());
  return released;
}

async function refuseHoldChange(ctx: Context, id: number, caller: Principal, what: 'hold' | 'release') {
  const job = await getJob(ctx.db, id, caller);
  if (job.state !== 'PENDING') {
    throw conflict(
      'job_not_pending',
      `Job ${id} is ${job.state}: only a pending job can be held or released`,
      {
        state: job.state,
      },
    );
  }
  if (job.held === 'admin') {
    throw forbidden(
      'held_by_admin',
      `Job ${id} is held by an admin (JobHeldAdmin): only an admin can ${what} it`,
    );
  }
  throw conflict('job_not_held', `Job ${id} is not held`);
}

/**
 * Why a job waits, node by node (HyperQueue's `hq task explain`): for each known node, live or not, whether
 * the job could start there now, and what stops it.
 */
export async function explainJob(ctx: Context, id: number, caller: Principal = ANONYMOUS) {
  const job = await getJob(ctx.db, id, caller);
  const [row] = await query<QueueRow>(ctx.db, sql`SELECT ${QUEUE_COLUMNS} FROM jobs WHERE id = ${id}`);
  const { workers, verdicts } = await nodeVerdicts(ctx, row as QueueRow);
  return {
    job_id: id,
    state: job.state,
    reason: job.reason,
    reason_detail: job.reason_detail,
    nodes: verdicts.map((v, i) => {
      const w = workers[i] as (typeof workers)[number];
      const down = !w.live
        ? ['down: not heartbeating']
        : w.status !== 'ready'
          ? [`${w.status}: takes no new jobs`]
          : [];
      const why = [...down, ...v.why];
      return { node: v.node, fits: why.length === 0, why };
    }),
  };
}

/** For each known node, live or not, whether a job (its queue row) could start there now, and what stops it. */
async function nodeVerdicts(ctx: Context, row: QueueRow) {
  const partitionRows = await query<PartitionRow>(ctx.db, sql`SELECT ${PARTITION_COLUMNS} FROM partitions`);
  const workers = await query<WorkerRow & { live: boolean; status: string }>(
    ctx.db,
    sql`SELECT ${WORKER_COLUMNS}, status, drained,
               ${liveInPostgres(ctx.config.workerTtlSeconds)} AS live
        FROM workers ORDER BY id`,
  );
  const reservations = await query<{ id: number | string; reserved_worker: string }>(
    ctx.db,
    sql`SELECT id, reserved_worker FROM jobs WHERE state = 'PENDING' AND reserved_worker IS NOT NULL`,
  );
  const partitions = partitionsOf(partitionRows);
  const pending = jobReader(partitions)(row);
  const candidates = workers.map((w) => toWorker(w, partitions));
  const verdicts = explainPlacement(
    pending,
    candidates,
    partitions.rules,
    new Map(reservations.map((r) => [r.reserved_worker, Number(r.id)])),
  );
  return { workers, candidates, verdicts, pending };
}

/** `PATCH /api/v1/jobs/{id}` (scontrol update): at least one field. */
export const updateJobInput = z
  .strictObject({
    time_limit: submitJobInput.shape.time_limit,
    partition: label('partition').optional(),
    name: label('name').optional(),
    comment: submitJobInput.shape.comment,
    qos: submitJobInput.shape.qos,
  })
  .refine((input) => Object.values(input).some((v) => v !== undefined), {
    message: 'give at least one of time_limit, partition, name, comment, qos',
  });
export type UpdateJobInput = z.infer<typeof updateJobInput>;

const isFinal = (state: string) => (FINAL_STATES as readonly string[]).includes(state);

const finished = (id: number, state: string, what: string) =>
  conflict('job_finished', `Job ${id} already ended as ${state}; there is nothing to ${what}`, { state });

/** A stored job's resource request, as a submission would give it (for admission into another partition). */
async function storedRequest(db: Database, id: number) {
  const row = await queryOne<
    Pick<
      JobRow,
      | 'cpus'
      | 'account'
      | 'memory_mb'
      | 'memory_per_cpu'
      | 'gpus'
      | 'gpu_type'
      | 'gres'
      | 'feature_constraint'
      | 'exclusive'
      | 'nodelist'
      | 'exclude_nodes'
    >
  >(
    db,
    sql`SELECT cpus, account, memory_mb, memory_per_cpu, gpus, gpu_type, gres, feature_constraint, exclusive,
               nodelist, exclude_nodes FROM jobs WHERE id = ${id}`,
  );
  if (!row) throw notFound('job_not_found', `Job ${id} does not exist`);
  const gres = Object.entries(jsonColumn(row.gres) ?? {});
  return {
    cpus: Number(row.cpus),
    ...(row.account === null ? {} : { account: row.account }),
    ...(row.memory_per_cpu !== null
      ? { memory_per_cpu: Number(row.memory_per_cpu) }
      : row.memory_mb !== null
        ? { memory_per_node: Number(row.memory_mb) }
        : {}),
    gpus: row.gpu_type ? `${row.gpu_type}:${row.gpus}` : Number(row.gpus),
    ...(gres.length > 0 ? { gres: gres.map(([name, n]) => `${name}:${n}`).join(',') } : {}),
    ...(row.feature_constraint === null ? {} : { constraint: row.feature_constraint }),
    exclusive: row.exclusive,
    ...(row.nodelist === null ? {} : { nodelist: row.nodelist }),
    ...(row.exclude_nodes.length === 0 ? {} : { exclude: row.exclude_nodes }),
  };
}

/**
 * Changes a job (Slurm's `scontrol update`): its name, comment and QOS until it ends; its time limit until it
 * ends, only lower unless the caller is an admin; its partition while it is PENDING, into partitions that
 * admit it as a submission would. One conditional UPDATE: a job that ended or started meanwhile is refused.
 */
export async function updateJob(
  ctx: Context,
  id: number,
  input: UpdateJobInput,
  caller: Principal = ANONYMOUS,
): Promise<JobView> {
  const job = await getJob(ctx.db, id, caller);
  if (isFinal(job.state)) throw finished(id, job.state, 'update');
  if (input.partition !== undefined && job.state !== 'PENDING') {
    throw conflict(
      'job_not_pending',
      `Job ${id} is ${job.state}: its partition can only change while it is pending`,
      { state: job.state },
    );
  }
  const admin = hasScope(caller, 'admin');
  const limitS = input.time_limit === undefined ? null : parseTimeLimit(input.time_limit);
  const raise = () =>
    forbidden(
      'time_limit_not_allowed',
      `Job ${id}: only an admin may raise a time limit (it is ${job.time_limit === null ? 'unlimited' : `${job.time_limit} minutes`}); give a lower one`,
    );
  if (limitS !== null && !admin && job.time_limit !== null && limitS > job.time_limit * 60) throw raise();
  const resources =
    input.partition === undefined
      ? null
      : (
          await admitJobs(
            ctx,
            [
              {
                ...(await storedRequest(ctx.db, id)),
                partition: input.partition,
                time_limit_s: limitS ?? (job.time_limit === null ? null : Math.round(job.time_limit * 60)),
              },
            ],
            (_, name) => name,
          )
        )[0];
  const setLimit = limitS !== null || resources !== null;
  const newLimit = resources ? resources.timeLimitS : limitS;
  const row = await queryOne<{ id: number }>(
    ctx.db,
    sql`UPDATE jobs SET
          time_limit_s = CASE WHEN ${setLimit}::boolean THEN ${newLimit}::int ELSE time_limit_s END,
          partition = coalesce(${resources?.partition ?? null}::text, partition),
          memory_mb = CASE WHEN ${resources !== null}::boolean THEN ${resources?.memoryMb ?? null}::int ELSE memory_mb END,
          reserved_worker = CASE WHEN ${resources !== null}::boolean THEN NULL ELSE reserved_worker END,
          name = coalesce(${input.name ?? null}::text, name),
          comment = coalesce(${input.comment ?? null}::text, comment),
          qos = coalesce(${input.qos ?? null}::text, qos)
        WHERE id = ${id} AND NOT (state = ANY(${pgArray(FINAL_STATES)}::text[]))
          AND (${resources === null}::boolean OR state = 'PENDING')
          AND (${admin || limitS === null}::boolean OR time_limit_s IS NULL OR ${limitS}::int <= time_limit_s)
        RETURNING id`,
  );
  if (!row) {
    const now = await getJob(ctx.db, id, caller);
    if (isFinal(now.state)) throw finished(id, now.state, 'update');
    if (input.partition !== undefined && now.state !== 'PENDING') {
      throw conflict('job_not_pending', `Job ${id} started meanwhile: its partition can no longer change`, {
        state: now.state,
      });
    }
    throw raise();
  }
  await recordAudit(ctx.db, caller, 'job.update', `job:${id}`, {
    fields: Object.keys(input).filter((k) => input[k as keyof UpdateJobInput] !== undefined),
  });
  const updated = await getJob(ctx.db, id, caller);
  if (job.state === 'PENDING') ctx.defer(ctx.requestSchedule());
  return updated;
}

export const requeueJobInput = z.strictObject({
  /** scontrol requeuehold: back in the queue, held. */
  hold: z.boolean().optional(),
});
export type RequeueJobInput = z.infer<typeof requeueJobInput>;

/**
 * Puts a job back in the queue (Slurm's `scontrol requeue`, `requeuehold` with `hold`). RUNNING: its
 * allocation is released and it is PENDING again at once, as a lost node's job is requeued; the attempt it ran
 * is fenced (its reports are stale) and its node's agent finds it in its cancel list and kills it. Ended: PENDING
 * again. The next placement runs it as the next attempt, with SLURM_RESTART_COUNT one higher.
 */
export async function requeueJob(
  ctx: Context,
  id: number,
  input: RequeueJobInput,
  caller: Principal = ANONYMOUS,
): Promise<JobView> {
  const job = await getJob(ctx.db, id, caller);
  if (job.state === 'PENDING') {
    throw conflict('job_pending', `Job ${id} is pending: it is in the queue already`, { state: job.state });
  }
  const admin = hasScope(caller, 'admin') && caller.kind !== 'anonymous';
  const hold = input.hold === true;
  const by = actingAs(caller) ?? 'its owner';
  const again = sql`state = 'PENDING', node = NULL, claimed_session = NULL, claimed_at = NULL, start_time = NULL,
      end_time = NULL, exit_code = NULL, requeues = requeues + 1, requeued_from = 'REQUEUED',
      cancel_requested = false, cancelled_by = NULL,
      reserved_worker = NULL, signal_pending = NULL, max_rss_kb = NULL,
      held = CASE WHEN ${hold}::boolean THEN ${admin ? 'admin' : 'user'}::text ELSE held END,
      reason = CASE WHEN ${hold}::boolean THEN ${admin ? 'JobHeldAdmin' : 'JobHeldUser'}::text
                    WHEN held = 'admin' THEN 'JobHeldAdmin' WHEN held = 'user' THEN 'JobHeldUser' ELSE 'None' END,
      reason_detail = ${`requeued by ${by}`}::text
        || CASE WHEN ${hold}::boolean OR held IS NOT NULL THEN ', held: release it to let it run' ELSE '' END`;
  const ended = await endJobsAndRelease(
    ctx,
    {
      update: sql`UPDATE jobs SET ${again}, fenced_node = node, fenced_attempt = attempt, fenced_at = now()
        WHERE id = ${id} AND state = 'RUNNING' AND NOT cancel_requested
        RETURNING id, state, node, attempt, exit_code`,
      workers: sql`SELECT node FROM jobs WHERE id = ${id}`,
    },
    { racesPlacement: true },
  );
  let stage = 'running';
  if (ended.length > 0) {
    if (job.node) ctx.notifier.notify(job.node);
  } else {
    // An ended job holds nothing; one the server timed out may still be dying on its node: fence that attempt.
    const row = await queryOne<{ id: number }>(
      ctx.db,
      sql`UPDATE jobs SET ${again},
            fenced_node = CASE WHEN cancel_requested THEN node ELSE fenced_node END,
            fenced_attempt = CASE WHEN cancel_requested THEN attempt ELSE fenced_attempt END,
            fenced_at = CASE WHEN cancel_requested THEN now() ELSE fenced_at END
          WHERE id = ${id} AND state = ANY(${pgArray(FINAL_STATES)}::text[])
          RETURNING id`,
    );
    if (!row) {
      const now = await getJob(ctx.db, id, caller);
      if (now.state === 'RUNNING' && now.cancel_requested) {
        throw conflict('cancel_requested', `Job ${id} is being cancelled; requeue it once it ended`);
      }
      throw conflict('requeue_raced', `Job ${id} changed state meanwhile (${now.state}); try again`, {
        state: now.state,
      });
    }
    stage = 'ended';
    ctx.defer(ctx.requestSchedule());
  }
  await recordAudit(ctx.db, caller, 'job.requeue', `job:${id}`, { from: stage, hold });
  return getJob(ctx.db, id, caller);
}

export const signalJobInput = z.strictObject({
  signal: signalName,
  /** scancel --batch: the batch shell only, not its children. */
  batch_only: z.boolean().optional(),
});
export type SignalJobInput = z.infer<typeof signalJobInput>;

/** Signals asked for one job and not yet handed to its agent, at most. */
const MAX_PENDING_SIGNALS = 64;

/**
 * Sends a signal to a running job (Slurm's `scancel --signal`): kept on the job until its agent's next heartbeat
 * or claim hands it out (once), and the agent is woken.
 */
export async function signalJob(
  ctx: Context,
  id: number,
  input: SignalJobInput,
  caller: Principal = ANONYMOUS,
): Promise<JobView> {
  await getJob(ctx.db, id, caller);
  const mine = seesAllJobs(caller) ? sql`true` : sql`owner = ${caller.owner ?? ''}`;
  const signal: PendingSignalColumn = { signal: input.signal, batch_only: input.batch_only ?? false };
  const row = await queryOne<{ node: string }>(
    ctx.db,
    sql`UPDATE jobs SET signal_pending = coalesce(signal_pending, '[]'::jsonb) || ${JSON.stringify([signal])}::jsonb
        WHERE id = ${id} AND ${mine} AND state = 'RUNNING' AND NOT cancel_requested
          AND coalesce(jsonb_array_length(signal_pending), 0) < ${MAX_PENDING_SIGNALS}
        RETURNING node`,
  );
  if (!row) {
    const job = await getJob(ctx.db, id, caller);
    if (job.state !== 'RUNNING' || job.cancel_requested) {
      throw conflict(
        'job_not_running',
        `Job ${id} is ${job.cancel_requested ? 'being cancelled' : job.state}: only a running job can be signalled`,
        { state: job.state },
      );
    }
    throw conflict(
      'too_many_signals',
      `Job ${id} has ${MAX_PENDING_SIGNALS} signals waiting for its agent; try again once they are delivered`,
    );
  }
  ctx.notifier.notify(row.node);
  await recordAudit(ctx.db, caller, 'job.signal', `job:${id}`, { ...signal });
  return getJob(ctx.db, id, caller);
}

/**
 * sbatch --test-only: checks a submission exactly as submitting it would (400, 403 on the same bodies) and
 * stores nothing; says on which live node it could start now, if any.
 */
export async function testSubmission(ctx: Context, input: SubmitJobInput, caller: Principal = ANONYMOUS) {
  checkPriorities(ctx, caller, [input], () => 'priority');
  const [charge] = await chargeSubmission(ctx, caller.owner, [input], () => 'account');
  const [r] = (await admitJobs(ctx, [withTimeLimit(chargedInput(input, charge))], (_, name) => name)) as [
    JobResources,
  ];
  chargeWall(charge, r, 'time_limit');
  checkArray(ctx, input, 'array');
  await checkDependencies(ctx, [input], () => 'dependency');
  await checkReservations(ctx.db, [input], caller.owner, () => 'reservation');
  const row: QueueRow = {
    array_job_id: null,
    account: input.account ?? null,
    owner: caller.owner,
    id: 0,
    cpus: input.cpus,
    reason: null,
    reason_detail: null,
    reserved_worker: null,
    priority: input.priority ?? 0,
    submitted: new Date().toISOString(),
    memory_mb: r.memoryMb,
    gpus: r.gpus,
    gpu_type: r.gpuType,
    gres: r.gres,
    feature_constraint: r.constraint,
    exclusive: r.exclusive,
    nodelist: r.nodelist,
    exclude_nodes: r.exclude,
    partition: r.partition,
    time_limit_s: r.timeLimitS,
    reservation: input.reservation ?? null,
    planned_in: null,
  };
  const { workers, candidates, verdicts, pending } = await nodeVerdicts(ctx, row);
  const fits = verdicts.findIndex((v, i) => v.fits && workers[i]?.live && workers[i]?.status === 'ready');
  const node = fits < 0 ? null : (workers[fits]?.id ?? null);
  const served = fits < 0 ? undefined : candidates[fits]?.partitions;
  const partition =
    pending.partitions?.find((p) => served === undefined || served.has(p)) ??
    r.partition?.split(',')[0] ??
    '';
  const reason = input.hold
    ? 'JobHeldUser'
    : input.begin_time !== undefined && new Date(input.begin_time).getTime() > Date.now()
      ? 'BeginTime'
      : node === null
        ? 'Resources'
        : null;
  return {
    ok: true as const,
    node: reason === null ? node : null,
    partition,
    cpus: input.cpus,
    start: reason === null ? ('now' as const) : null,
    reason,
  };
}
