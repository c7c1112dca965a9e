import { sql } from 'drizzle-orm';
import { z } from 'zod';
import { FINAL_STATES, JOB_STATES, type JobState } from '../../db/schema.ts';
import { endJobsAndRelease } from './allocation.ts';
import type { Context } from './context.ts';
import { ConductorError, conflict, notFound } from './errors.ts';
import type { Database } from './ports.ts';
import { query, queryOne } from './sql.ts';
import { parseTimeLimit } from './time-limit.ts';

const MiB = 1024 * 1024;
/** Kept per output stream: at least the last 1 MiB. */
export const OUTPUT_KEEP_CHARS = MiB;

// biome-ignore lint/suspicious/noControlCharactersInRegex: the point is to find control characters
const CONTROL = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]/;
const label = (what: string) =>
  z
    .string()
    .min(1, `${what} must not be empty`)
    .max(255, `${what} is at most 255 characters`)
    .refine(
      (s) => !CONTROL.test(s) && !s.includes('\n') && !s.includes('\r'),
      `${what} has control characters`,
    );

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
    }),
  work_dir: z
    .string()
    .max(4096)
    .refine((s) => s.startsWith('/'), 'work_dir must be an absolute path')
    .refine((s) => !CONTROL.test(s), 'work_dir has control characters')
    .optional(),
  environment: z
    .record(
      z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'environment variable names are letters, digits and _'),
      z
        .string()
        .max(128 * 1024)
        .refine((s) => !s.includes('\u0000'), 'environment values must not contain NUL'),
    )
    .refine((env) => Object.keys(env).length <= 256, 'environment has at most 256 variables')
    .optional(),
  priority: z.number().int().min(-1_000_000).max(1_000_000).optional(),
  requeue: z.boolean().optional(),
});
export type SubmitJobInput = z.infer<typeof submitJobInput>;

export const listJobsInput = z.strictObject({
  state: z
    .string()
    .transform((s) => s.split(',').map((x) => x.trim().toUpperCase()))
    .pipe(z.array(z.enum(JOB_STATES, { error: `state is one of ${JOB_STATES.join(', ')}` })))
    .optional(),
  limit: z.coerce.number().int().min(1).max(1000).default(50),
  /** Jobs with an id below this (the `next_before` of the previous page). */
  before: z.coerce.number().int().positive().optional(),
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
  requeue: boolean;
  attempt: number;
  reason: string | null;
  cancel_requested: boolean;
  script?: string;
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
    priority: Number(row.priority),
    requeue: row.requeue,
    attempt: Number(row.attempt),
    reason: row.reason,
    cancel_requested: row.cancel_requested,
    submit_time: iso(row.submit_time),
    start_time: iso(row.start_time),
    end_time: iso(row.end_time),
    ...(options.script ? { script: row.script, environment: row.environment } : {}),
  };
}
export type JobView = ReturnType<typeof jobView>;

const JOB_COLUMNS = sql`id, name, state, cpus, exit_code, node, account, partition, time_limit_s, work_dir,
  environment, priority, requeue, attempt, reason, cancel_requested, submit_time, start_time, end_time`;

export async function submitJob(ctx: Context, input: SubmitJobInput): Promise<JobView> {
  const timeLimit = input.time_limit === undefined ? null : parseTimeLimit(input.time_limit);
  const row = await queryOne<JobRow>(
    ctx.db,
    sql`INSERT INTO jobs (name, script, cpus, account, partition, time_limit_s, work_dir, environment, priority, requeue)
        VALUES (${input.name ?? 'job'}, ${input.script}, ${input.cpus}, ${input.account ?? null},
                ${input.partition ?? null}, ${timeLimit}, ${input.work_dir ?? null},
                ${JSON.stringify(input.environment ?? {})}::jsonb, ${input.priority ?? 0}, ${input.requeue ?? false})
        RETURNING ${JOB_COLUMNS}`,
  );
  if (!row) throw new Error('insert returned no row');
  ctx.defer(ctx.requestSchedule());
  return jobView(row);
}

export async function getJob(db: Database, id: number): Promise<JobView> {
  const row = await queryOne<JobRow>(db, sql`SELECT ${JOB_COLUMNS}, script FROM jobs WHERE id = ${id}`);
  if (!row) throw notFound('job_not_found', `Job ${id} does not exist`);
  return jobView(row, { script: true });
}

export async function listJobs(db: Database, input: ListJobsInput) {
  const filters = [sql`true`];
  if (input.state) filters.push(sql`state = ANY(${`{${input.state.join(',')}}`}::text[])`);
  if (input.before) filters.push(sql`id < ${input.before}`);
  const rows = await query<JobRow>(
    db,
    sql`SELECT ${JOB_COLUMNS} FROM jobs WHERE ${sql.join(filters, sql` AND `)}
        ORDER BY id DESC LIMIT ${input.limit + 1}`,
  );
  const page = rows.slice(0, input.limit).map((r) => jobView(r));
  const more = rows.length > input.limit;
  return { jobs: page, next_before: more ? (page.at(-1)?.id ?? null) : null };
}

/**
 * Cancels a job. PENDING, or placed but not yet picked up by its agent: CANCELLED at once (allocation
 * released). Running on an agent: marked, the agent is woken, kills the process group and reports
 * CANCELLED. Already finished: 409.
 */
export async function cancelJob(ctx: Context, id: number): Promise<JobView> {
  const ended = await endJobsAndRelease(
    ctx,
    sql`UPDATE jobs SET state = 'CANCELLED', end_time = now(), reason = 'cancelled by user',
          exit_code = CASE WHEN state = 'RUNNING' THEN '0:15' ELSE NULL END
        WHERE id = ${id} AND (state = 'PENDING' OR (state = 'RUNNING' AND claimed_session IS NULL))
        RETURNING id, state, node, attempt, exit_code`,
  );
  if (ended.length === 0) {
    const marked = await queryOne<{ node: string }>(
      ctx.db,
      sql`UPDATE jobs SET cancel_requested = true WHERE id = ${id} AND state = 'RUNNING' RETURNING node`,
    );
    if (marked) {
      ctx.notifier.notify(marked.node);
    } else {
      const job = await getJob(ctx.db, id);
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
  return getJob(ctx.db, id);
}

export interface StreamOutput {
  content: string;
  /** Bytes the job wrote to the stream in all. */
  bytes: number;
  /** True when only the tail is kept. */
  truncated: boolean;
}

export async function getJobOutput(db: Database, id: number) {
  const rows = await query<{
    stream: 'stdout' | 'stderr';
    content: string;
    bytes: string | number;
    state: string;
  }>(
    db,
    sql`SELECT o.stream, o.content, o.bytes, j.state FROM jobs j
        LEFT JOIN job_output o ON o.job_id = j.id AND o.attempt = j.attempt
        WHERE j.id = ${id}`,
  );
  if (rows.length === 0) throw notFound('job_not_found', `Job ${id} does not exist`);
  const stream = (name: 'stdout' | 'stderr'): StreamOutput => {
    const row = rows.find((r) => r.stream === name);
    if (!row) return { content: '', bytes: 0, truncated: false };
    const bytes = Number(row.bytes);
    return { content: row.content, bytes, truncated: new TextEncoder().encode(row.content).length < bytes };
  };
  return { job_id: id, state: rows[0]!.state, stdout: stream('stdout'), stderr: stream('stderr') };
}
