import { type SQL, sql } from 'drizzle-orm';
import { z } from 'zod';
import { endJobsAndRelease } from './allocation.ts';
import { ArraySpecError, foldIndexes, parseTaskList } from './arrays.ts';
import { recordAudit } from './audit.ts';
import { ANONYMOUS, hasScope, type Principal, seesAllJobs, seesJobOf } from './auth.ts';
import type { Context } from './context.ts';
import { forbidden, invalid, notFound } from './errors.ts';
import type { Database } from './ports.ts';
import { pgArray, query, queryOne } from './sql.ts';

/** `?tasks=`: the tasks an operation on an array applies to (`4`, `1-3`, `[1-3,7]`); absent: all of them. */
export const arrayTasksQuery = z.strictObject({
  tasks: z
    .string()
    .min(1, 'tasks must not be empty')
    .max(65_536, 'tasks is at most 65536 characters')
    .optional(),
});
export type ArrayTasksQuery = z.infer<typeof arrayTasksQuery>;

export const listArraysInput = z.strictObject({
  limit: z.coerce.number().int().min(1).max(500).default(50),
  /** Arrays whose job id is below this (the next page: `next_before`). */
  before: z.coerce.number().int().positive().optional(),
});
export type ListArraysInput = z.infer<typeof listArraysInput>;

interface ArrayRow {
  array_job_id: string | number;
  spec: string;
  task_count: number;
  task_min: number;
  task_max: number;
  task_step: number;
  max_running: number | null;
  name: string;
  owner: string | null;
  submit_time: Date | string;
  pending: string | number;
  running: string | number;
  completed: string | number;
  failed: string | number;
  cancelled: string | number;
  pending_tasks: number[] | null;
}

/**
 * An array's progress as one row: its tasks per state (pending, running, completed; failed counts FAILED,
 * TIMEOUT, NODE_FAIL and OUT_OF_MEMORY; cancelled), and its pending tasks folded as squeue shows them
 * (`5-9`); `%N` is `max_running`. Its tasks themselves: GET /api/v1/jobs?array=<id>.
 */
export function arrayView(row: ArrayRow) {
  const id = Number(row.array_job_id);
  const pending = (row.pending_tasks ?? []).map(Number);
  const cap = row.max_running === null ? '' : `%${row.max_running}`;
  return {
    array_job_id: id,
    name: row.name,
    owner: row.owner,
    spec: `${row.spec}${cap}`,
    task_count: Number(row.task_count),
    task_min: Number(row.task_min),
    task_max: Number(row.task_max),
    task_step: Number(row.task_step),
    max_running: row.max_running === null ? null : Number(row.max_running),
    counts: {
      pending: Number(row.pending),
      running: Number(row.running),
      completed: Number(row.completed),
      failed: Number(row.failed),
      cancelled: Number(row.cancelled),
    },
    /** Slurm's id of the pending tasks, folded (`123_[5-9%2]`); null when none is pending. */
    pending_id: pending.length === 0 ? null : `${id}_[${foldIndexes(pending)}${cap}]`,
    submit_time: new Date(row.submit_time).toISOString(),
  };
}
export type ArrayView = ReturnType<typeof arrayView>;

/** The arrays `where` selects (over `a`, job_arrays, and `f`, the first task), with their counts. */
const arraysSql = (where: SQL, tail: SQL = sql``) =>
  sql`SELECT a.array_job_id, a.spec, a.task_count, a.task_min, a.task_max, a.task_step, a.max_running,
             f.name, f.owner, f.submit_time, c.*
      FROM job_arrays a JOIN jobs f ON f.id = a.array_job_id
      CROSS JOIN LATERAL (
        SELECT count(*) FILTER (WHERE t.state = 'PENDING') AS pending,
               count(*) FILTER (WHERE t.state = 'RUNNING') AS running,
               count(*) FILTER (WHERE t.state = 'COMPLETED') AS completed,
               count(*) FILTER (WHERE t.state IN ('FAILED', 'TIMEOUT', 'NODE_FAIL', 'OUT_OF_MEMORY')) AS failed,
               count(*) FILTER (WHERE t.state = 'CANCELLED') AS cancelled,
               array_agg(t.array_task_id ORDER BY t.array_task_id) FILTER (WHERE t.state = 'PENDING') AS pending_tasks
        FROM jobs t WHERE t.array_job_id = a.array_job_id
      ) c
      WHERE ${where} ${tail}`;

/** One array (GET /api/v1/arrays/{id}); another owner's is "not found" to a non-admin. */
export async function getArray(db: Database, id: number, viewer: Principal = ANONYMOUS): Promise<ArrayView> {
  const row = await queryOne<ArrayRow>(db, arraysSql(sql`a.array_job_id = ${id}`));
  if (!row || !seesJobOf(viewer, row.owner)) {
    throw notFound('array_not_found', `Job array ${id} does not exist`);
  }
  return arrayView(row);
}

/** The arrays among `ids`, by array job id (the dashboard's array rows). */
export async function arraysByIds(db: Database, ids: readonly number[]): Promise<Map<number, ArrayView>> {
  if (ids.length === 0) return new Map();
  const rows = await query<ArrayRow>(db, arraysSql(sql`a.array_job_id = ANY(${pgArray(ids)}::bigint[])`));
  return new Map(rows.map((r) => [Number(r.array_job_id), arrayView(r)]));
}

/** The arrays the viewer sees, newest first, each as one row with its progress. */
export async function listArrays(db: Database, input: ListArraysInput, viewer: Principal = ANONYMOUS) {
  const filters = [sql`true`];
  if (input.before) filters.push(sql`a.array_job_id < ${input.before}`);
  if (!seesAllJobs(viewer)) filters.push(sql`f.owner = ${viewer.owner ?? ''}`);
  const rows = await query<ArrayRow>(
    db,
    arraysSql(sql.join(filters, sql` AND `), sql`ORDER BY a.array_job_id DESC LIMIT ${input.limit + 1}`),
  );
  const page = rows.slice(0, input.limit).map(arrayView);
  return {
    arrays: page,
    next_before: rows.length > input.limit ? (page.at(-1)?.array_job_id ?? null) : null,
  };
}

/** The task indexes `tasks` names (400 invalid_tasks), or null for all. */
function taskList(ctx: Context, tasks: string | undefined): number[] | null {
  if (tasks === undefined) return null;
  try {
    return parseTaskList(tasks, ctx.config.maxArraySize);
  } catch (error) {
    if (!(error instanceof ArraySpecError)) throw error;
    throw invalid('invalid_tasks', `tasks: ${error.message}`);
  }
}

/** The array's tasks named (all when null), of an owner the caller may act for: SQL over `jobs`. */
function selected(id: number, tasks: number[] | null, caller: Principal): SQL {
  const mine = seesAllJobs(caller) ? sql`true` : sql`jobs.owner = ${caller.owner ?? ''}`;
  const which = tasks === null ? sql`true` : sql`jobs.array_task_id = ANY(${pgArray(tasks)}::int[])`;
  return sql`jobs.array_job_id = ${id} AND ${which} AND ${mine}`;
}

/** Who acts, as a job records it (cancelled_by). */
const actingAs = (caller: Principal): string | null =>
  caller.owner ?? (hasScope(caller, 'admin') ? 'admin' : null);

export interface ArrayActionResult {
  array: ArrayView;
  /** Tasks the action changed (cancelled or asked to stop, held, released). */
  affected: number;
}

/**
 * Cancels an array's tasks (scancel `123`, `123_4`, `123_[1-3]`): pending ones (and placed ones not yet
 * started) end CANCELLED at once with their allocations released, in one statement; running ones are marked
 * and their agents woken, as cancelJob does. Tasks already ended are left as they are.
 */
export async function cancelArray(
  ctx: Context,
  id: number,
  query_: ArrayTasksQuery,
  caller: Principal = ANONYMOUS,
): Promise<ArrayActionResult> {
  await getArray(ctx.db, id, caller);
  const tasks = taskList(ctx, query_.tasks);
  const by = actingAs(caller);
  const where = selected(id, tasks, caller);
  const ended = await endJobsAndRelease(
    ctx,
    {
      update: sql`UPDATE jobs SET state = 'CANCELLED', end_time = now(), reason = 'cancelled by user',
          cancelled_by = ${by}::text, exit_code = CASE WHEN state = 'RUNNING' THEN '0:15' ELSE NULL END
        WHERE ${where} AND (state = 'PENDING' OR (state = 'RUNNING' AND start_time IS NULL))
        RETURNING id, state, node, attempt, exit_code`,
      workers: sql`SELECT DISTINCT node FROM jobs WHERE ${where} AND state = 'RUNNING' AND node IS NOT NULL`,
    },
    { racesPlacement: true },
  );
  const marked = await query<{ node: string }>(
    ctx.db,
    sql`UPDATE jobs SET cancel_requested = true, cancelled_by = ${by}::text
        WHERE ${where} AND state = 'RUNNING' AND NOT cancel_requested RETURNING node`,
  );
  for (const node of new Set(marked.map((m) => m.node))) ctx.notifier.notify(node);
  const affected = ended.length + marked.length;
  await recordAudit(ctx.db, caller, 'array.cancel', `job:${id}`, { tasks: query_.tasks ?? 'all', affected });
  return { array: await getArray(ctx.db, id, caller), affected };
}

/**
 * Holds the pending jobs `where` (scontrol hold): JobHeldAdmin by an admin, else JobHeldUser; a user's hold
 * does not replace an admin's. The person at the keyboard of the open local cluster holds as a user, though
 * they may do everything. Returns the held ids.
 */
export function holdPending(caller: Principal, where: SQL): { kind: 'admin' | 'user'; statement: SQL } {
  const admin = hasScope(caller, 'admin') && caller.kind !== 'anonymous';
  const kind = admin ? 'admin' : 'user';
  return {
    kind,
    statement: sql`UPDATE jobs SET held = ${kind}, reason = ${admin ? 'JobHeldAdmin' : 'JobHeldUser'},
          reason_detail = ${`held by ${caller.owner ?? (admin ? 'an admin' : 'its owner')}: release it to let it run`},
          reserved_worker = NULL
        WHERE ${where} AND state = 'PENDING' AND (held IS NULL OR held = 'user' OR ${admin})
        RETURNING id`,
  };
}

/** Holds an array's pending tasks (scontrol hold `123`, `123_[1-3]`): JobHeldUser, or JobHeldAdmin by an admin. */
export async function holdArray(
  ctx: Context,
  id: number,
  query_: ArrayTasksQuery,
  caller: Principal = ANONYMOUS,
): Promise<ArrayActionResult> {
  await getArray(ctx.db, id, caller);
  const tasks = taskList(ctx, query_.tasks);
  const { kind, statement } = holdPending(caller, selected(id, tasks, caller));
  const rows = await query<{ id: number }>(ctx.db, statement);
  await recordAudit(ctx.db, caller, 'array.hold', `job:${id}`, {
    tasks: query_.tasks ?? 'all',
    kind,
    affected: rows.length,
  });
  return { array: await getArray(ctx.db, id, caller), affected: rows.length };
}

/** Releases an array's held tasks (scontrol release); an admin's hold only by an admin (403 if that is all). */
export async function releaseArray(
  ctx: Context,
  id: number,
  query_: ArrayTasksQuery,
  caller: Principal = ANONYMOUS,
): Promise<ArrayActionResult> {
  await getArray(ctx.db, id, caller);
  const tasks = taskList(ctx, query_.tasks);
  const admin = hasScope(caller, 'admin');
  const where = selected(id, tasks, caller);
  const rows = await query<{ id: number }>(
    ctx.db,
    sql`UPDATE jobs SET held = NULL, reason = 'None', reason_detail = NULL
        WHERE ${where} AND state = 'PENDING' AND (held = 'user' OR (held = 'admin' AND ${admin}))
        RETURNING id`,
  );
  if (rows.length === 0 && !admin) {
    const adminHeld = await queryOne<{ n: string }>(
      ctx.db,
      sql`SELECT count(*) AS n FROM jobs WHERE ${where} AND state = 'PENDING' AND held = 'admin'`,
    );
    if (Number(adminHeld?.n ?? 0) > 0) {
      throw forbidden(
        'held_by_admin',
        `Tasks of array ${id} are held by an admin (JobHeldAdmin): only an admin can release them`,
      );
    }
  }
  await recordAudit(ctx.db, caller, 'array.release', `job:${id}`, {
    tasks: query_.tasks ?? 'all',
    affected: rows.length,
  });
  const array = await getArray(ctx.db, id, caller);
  if (rows.length > 0) ctx.defer(ctx.requestSchedule());
  return { array, affected: rows.length };
}
