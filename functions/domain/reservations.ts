/**
 * Slurm's advanced reservations (scontrol create reservation): an admin holds whole nodes over a time window,
 * one-off or repeated DAILY or WEEKLY, for users and accounts. Only jobs that name the reservation
 * (`--reservation`) and match it start on its nodes inside the window; no other job starts there whose time
 * limit would run into a window (placement.ts plans it, the placing statement checks it again). MAINT only
 * changes the reason the others show (`ReqNodeNotAvail, Reserved for maintenance`).
 *
 * Creating, changing or deleting one locks the worker rows of its nodes (old and new) first, the rows every
 * scheduling pass locks before it plans: a pass either commits before the change or plans with it.
 */

import { sql } from 'drizzle-orm';
import { z } from 'zod';
import { RESERVATION_FLAGS, type ReservationFlag } from '../../db/schema.ts';
import { recordAudit } from './audit.ts';
import type { Principal } from './auth.ts';
import type { Context } from './context.ts';
import { conflict, invalid, notFound } from './errors.ts';
import { compressHostlist, expandHostlist, HostlistError } from './hostlist.ts';
import { mayUse } from './placement.ts';
import { PARTITION_COLUMNS, type PartitionRow, partitionsOf } from './scheduler.ts';
import { pgArray, query, queryOne } from './sql.ts';
import { parseTimeLimit } from './time-limit.ts';

type Db = Context['db'];

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;
const name = z
  .string()
  .min(1)
  .max(100, 'reservation names are at most 100 characters')
  .regex(NAME, 'reservation names are letters, digits, ".", "_" and "-"');
export const reservationNameParam = z.strictObject({ name });

const time = z.string().min(1).max(64, 'a time is at most 64 characters');
const names = (what: string) =>
  z
    .array(
      z
        .string()
        .min(1)
        .max(255)
        .regex(/^[^\s,]+$/, `${what} are names without spaces or commas`),
    )
    .max(1000);

const fields = {
  /** `now`, `now+<n>[minutes|hours|days]`, or an ISO date and time (UTC unless it says). */
  start_time: time.optional(),
  end_time: time.optional(),
  /** Minutes, or a Slurm time (`2:00:00`, `1-00:00:00`). */
  duration: z.union([z.number().positive(), z.string().min(1).max(32)]).optional(),
  /** A hostlist of known nodes (`node[01-04]`), or ALL. */
  nodes: z.string().min(1).max(16_384).optional(),
  /** NodeCnt: that many nodes of `partition` (or of the cluster), chosen when it is created. */
  node_count: z.number().int().min(1).max(65_536).optional(),
  partition: z.string().min(1).max(100).optional(),
  users: names('users').optional(),
  accounts: names('accounts').optional(),
  flags: z
    .array(z.enum(RESERVATION_FLAGS, { error: `flags are ${RESERVATION_FLAGS.join(', ')}` }))
    .max(3)
    .optional(),
};
export const createReservationInput = z.strictObject({ name, ...fields });
export type CreateReservationInput = z.infer<typeof createReservationInput>;
export const updateReservationInput = z.strictObject(fields);
export type UpdateReservationInput = z.infer<typeof updateReservationInput>;

interface ReservationRow {
  name: string;
  start_time: Date | string;
  end_time: Date | string;
  period_s: number | null;
  nodes: string[];
  partition: string | null;
  users: string[];
  accounts: string[];
  flags: string[];
  /** The start and end of the window that is open now or comes next (a repeating one moves on). */
  next_start: Date | string;
  next_end: Date | string;
  active: boolean;
  cpus: number | string;
}

const COLUMNS = sql`r.name, r.start_time, r.end_time, r.period_s, r.nodes, r.partition, r.users, r.accounts, r.flags,
  n.next_start, n.next_end, n.next_start <= now() AS active,
  (SELECT coalesce(sum(w.cpus), 0) FROM workers w WHERE w.id = ANY(r.nodes)) AS cpus`;
/** The window of r that is the first to end after now (reservation_overlaps' rule). */
const NEXT = sql`CROSS JOIN LATERAL (
    SELECT r.start_time + k * make_interval(secs => coalesce(r.period_s, 0)) AS next_start,
           r.end_time + k * make_interval(secs => coalesce(r.period_s, 0)) AS next_end
    FROM (SELECT CASE WHEN r.period_s IS NULL OR now() < r.end_time THEN 0
                      ELSE floor(extract(epoch FROM now() - r.end_time) / r.period_s)::int + 1 END AS k) x
  ) n`;

const iso = (value: Date | string) => new Date(value).toISOString();

export function reservationView(row: ReservationRow) {
  const nodes = [...row.nodes].sort();
  return {
    name: row.name,
    /** The window open now, or the next one (a DAILY or WEEKLY reservation moves on after each). */
    start_time: iso(row.next_start),
    end_time: iso(row.next_end),
    /** Minutes. */
    duration: (new Date(row.end_time).getTime() - new Date(row.start_time).getTime()) / 60_000,
    nodes: compressHostlist(nodes),
    node_list: nodes,
    node_count: nodes.length,
    cpu_count: Number(row.cpus),
    partition: row.partition,
    users: row.users,
    accounts: row.accounts,
    flags: row.flags,
    state: row.active ? ('ACTIVE' as const) : ('INACTIVE' as const),
  };
}
export type ReservationView = ReturnType<typeof reservationView>;

export async function listReservations(db: Db): Promise<ReservationView[]> {
  const rows = await query<ReservationRow>(
    db,
    sql`SELECT ${COLUMNS} FROM reservations r ${NEXT}
        WHERE r.period_s IS NOT NULL OR r.end_time > now() ORDER BY n.next_start, r.name`,
  );
  return rows.map(reservationView);
}

export async function getReservation(db: Db, reservation: string): Promise<ReservationView> {
  const row = await queryOne<ReservationRow>(
    db,
    sql`SELECT ${COLUMNS} FROM reservations r ${NEXT} WHERE r.name = ${reservation}`,
  );
  if (!row) throw notFound('reservation_not_found', `Reservation ${reservation} not found`);
  return reservationView(row);
}

/** Slurm's StartTime/EndTime: `now`, `now+<count>[units]`, or a date and time. Milliseconds since the epoch. */
export function parseReservationTime(value: string, now: number, field: string): number {
  const relative = /^now(?:\+(\d+)(seconds?|minutes?|hours?|days?|weeks?)?)?$/i.exec(value.trim());
  if (relative) {
    const count = Number(relative[1] ?? 0);
    const unit = (relative[2] ?? 'seconds').toLowerCase().replace(/s$/, '');
    const seconds = { second: 1, minute: 60, hour: 3600, day: 86_400, week: 604_800 }[unit] ?? 1;
    return now + count * seconds * 1000;
  }
  const zoned = /(Z|[+-]\d\d:?\d\d)$/.test(value) ? value : `${value}Z`;
  const at = /^\d{4}-\d\d-\d\d(T\d\d:\d\d(:\d\d(\.\d+)?)?)?/.test(value) ? Date.parse(zoned) : Number.NaN;
  if (Number.isNaN(at)) {
    throw invalid(
      'invalid_reservation',
      `${field} "${value}" is not a time: now, now+<n>[minutes|hours|days], or YYYY-MM-DD[THH:MM[:SS]]`,
    );
  }
  return at;
}

const PERIODS: Partial<Record<ReservationFlag, number>> = { DAILY: 86_400, WEEKLY: 604_800 };

interface Window {
  start: number;
  end: number;
  periodS: number | null;
}

/** The window of a new or changed reservation, from `input` over `before` (the reservation as it was). */
function windowOf(
  input: UpdateReservationInput,
  before: { start: number; end: number } | null,
  flags: readonly ReservationFlag[],
  now: number,
): Window {
  const start =
    input.start_time !== undefined
      ? parseReservationTime(input.start_time, now, 'start_time')
      : (before?.start ?? null);
  if (start === null)
    throw invalid('invalid_reservation', 'start_time is required (now, or a date and time)');
  let end: number | null = null;
  if (input.end_time !== undefined && input.duration !== undefined) {
    throw invalid('invalid_reservation', 'give end_time or duration, not both');
  }
  if (input.end_time !== undefined) end = parseReservationTime(input.end_time, now, 'end_time');
  else if (input.duration !== undefined) {
    const seconds = parseTimeLimit(input.duration);
    if (seconds === null || seconds < 1) {
      throw invalid(
        'invalid_reservation',
        'duration is minutes, or a Slurm time such as "2:00:00" or "1-00:00:00"',
      );
    }
    end = start + seconds * 1000;
  } else if (before) end = start + (before.end - before.start);
  if (end === null) throw invalid('invalid_reservation', 'end_time or duration is required');
  if (end <= start) throw invalid('invalid_reservation', 'the reservation must end after it starts');
  if (flags.includes('DAILY') && flags.includes('WEEKLY')) {
    throw invalid('invalid_reservation', 'flags DAILY and WEEKLY exclude each other');
  }
  const periodS = flags.map((f) => PERIODS[f]).find((p) => p !== undefined) ?? null;
  if (periodS !== null && end - start >= periodS * 1000) {
    throw invalid(
      'invalid_reservation',
      `a ${flags.includes('DAILY') ? 'DAILY' : 'WEEKLY'} reservation lasts less than its period`,
    );
  }
  if (periodS === null && end <= now)
    throw invalid('invalid_reservation', 'the reservation would end in the past');
  return { start, end, periodS };
}

/** The nodes of a new or changed reservation: a hostlist of known workers, ALL, or a count of a partition's. */
async function nodesOf(
  db: Db,
  input: UpdateReservationInput,
  before: string[] | null,
): Promise<{ nodes: string[]; partition: string | null }> {
  if (input.nodes !== undefined && input.node_count !== undefined) {
    throw invalid('invalid_reservation', 'give nodes or node_count, not both');
  }
  const known = await query<{ id: string; partitions: string[]; allocated_cpus: number }>(
    db,
    sql`SELECT id, partitions, allocated_cpus FROM workers WHERE status <> 'down' ORDER BY id`,
  );
  const partitionRows = await query<PartitionRow>(db, sql`SELECT ${PARTITION_COLUMNS} FROM partitions`);
  const { workerPartitions } = partitionsOf(partitionRows);
  const partition = input.partition ?? null;
  if (partition !== null && !partitionRows.some((p) => p.name === partition)) {
    throw invalid('invalid_reservation', `partition ${partition} does not exist`);
  }
  const inPartition = known.filter(
    (w) => partition === null || workerPartitions(w.id, w.partitions).has(partition),
  );
  if (input.node_count !== undefined) {
    if (inPartition.length < input.node_count) {
      throw invalid(
        'invalid_reservation',
        `node_count ${input.node_count}: ${partition === null ? 'the cluster has' : `partition ${partition} has`} ${inPartition.length} nodes`,
      );
    }
    // Idle nodes first, as Slurm prefers, then by name.
    const chosen = [...inPartition]
      .sort((a, b) => Number(a.allocated_cpus > 0) - Number(b.allocated_cpus > 0) || (a.id < b.id ? -1 : 1))
      .slice(0, input.node_count);
    return { nodes: chosen.map((w) => w.id).sort(), partition };
  }
  if (input.nodes === undefined) {
    if (before) return { nodes: before, partition };
    throw invalid('invalid_reservation', 'nodes (a hostlist, or ALL) or node_count is required');
  }
  if (input.nodes.toUpperCase() === 'ALL') {
    if (inPartition.length === 0) throw invalid('invalid_reservation', 'nodes=ALL: there are no nodes');
    return { nodes: inPartition.map((w) => w.id), partition };
  }
  let asked: string[];
  try {
    asked = expandHostlist(input.nodes);
  } catch (error) {
    if (error instanceof HostlistError) throw invalid('invalid_reservation', `nodes: ${error.message}`);
    throw error;
  }
  const ids = new Set(inPartition.map((w) => w.id));
  const unknown = asked.filter((n) => !ids.has(n));
  if (unknown.length > 0) {
    throw invalid(
      'invalid_reservation',
      `nodes: ${unknown.slice(0, 5).join(', ')} ${unknown.length === 1 ? 'is no' : 'are no'} known node${partition ? ` of partition ${partition}` : ''}`,
    );
  }
  return { nodes: [...new Set(asked)].sort(), partition };
}

/** Locks the worker rows of `nodes`, in id order as a scheduling pass does (see the module comment). */
async function lockNodes(tx: Db, nodes: readonly string[]) {
  await query(
    tx,
    sql`SELECT id FROM workers WHERE id = ANY(${pgArray([...new Set(nodes)])}::text[]) ORDER BY id FOR UPDATE`,
  );
}

const textArray = (values: readonly string[]) => sql`${pgArray(values)}::text[]`;

export async function createReservation(
  ctx: Context,
  input: CreateReservationInput,
  caller: Principal,
): Promise<ReservationView> {
  const flags = [...new Set(input.flags ?? [])];
  const users = input.users ?? [];
  const accounts = input.accounts ?? [];
  if (users.length === 0 && accounts.length === 0) {
    throw invalid(
      'invalid_reservation',
      'a reservation must name users or accounts (or both) that may use it',
    );
  }
  const window = windowOf(input, null, flags, Date.now());
  const { nodes, partition } = await nodesOf(ctx.db, input, null);
  const created = await ctx.db.transaction(async (tx) => {
    await lockNodes(tx, nodes);
    return queryOne<{ name: string }>(
      tx,
      sql`INSERT INTO reservations (name, start_time, end_time, period_s, nodes, partition, users, accounts, flags)
          VALUES (${input.name}, ${new Date(window.start).toISOString()}::timestamptz,
                  ${new Date(window.end).toISOString()}::timestamptz, ${window.periodS}::int, ${textArray(nodes)},
                  ${partition}::text, ${textArray(users)}, ${textArray(accounts)}, ${textArray(flags)})
          ON CONFLICT (name) DO NOTHING RETURNING name`,
    );
  });
  if (!created) throw conflict('reservation_exists', `Reservation ${input.name} already exists`);
  await recordAudit(ctx.db, caller, 'reservation.create', `reservation:${input.name}`, { ...input });
  ctx.defer(ctx.requestSchedule());
  return getReservation(ctx.db, input.name);
}

export async function updateReservation(
  ctx: Context,
  reservation: string,
  input: UpdateReservationInput,
  caller: Principal,
): Promise<ReservationView> {
  const before = await queryOne<ReservationRow>(
    ctx.db,
    sql`SELECT ${COLUMNS} FROM reservations r ${NEXT} WHERE r.name = ${reservation}`,
  );
  if (!before) throw notFound('reservation_not_found', `Reservation ${reservation} not found`);
  const flags = input.flags ? [...new Set(input.flags)] : (before.flags as ReservationFlag[]);
  const users = input.users ?? before.users;
  const accounts = input.accounts ?? before.accounts;
  if (users.length === 0 && accounts.length === 0) {
    throw invalid(
      'invalid_reservation',
      'a reservation must name users or accounts (or both) that may use it',
    );
  }
  const window = windowOf(
    input,
    { start: new Date(before.start_time).getTime(), end: new Date(before.end_time).getTime() },
    flags,
    Date.now(),
  );
  const { nodes, partition } = await nodesOf(
    ctx.db,
    { ...input, partition: input.partition ?? before.partition ?? undefined },
    before.nodes,
  );
  const updated = await ctx.db.transaction(async (tx) => {
    await lockNodes(tx, [...before.nodes, ...nodes]);
    return queryOne<{ name: string }>(
      tx,
      sql`UPDATE reservations SET start_time = ${new Date(window.start).toISOString()}::timestamptz,
            end_time = ${new Date(window.end).toISOString()}::timestamptz, period_s = ${window.periodS}::int,
            nodes = ${textArray(nodes)}, partition = ${partition}::text, users = ${textArray(users)},
            accounts = ${textArray(accounts)}, flags = ${textArray(flags)}
          WHERE name = ${reservation} RETURNING name`,
    );
  });
  if (!updated) throw notFound('reservation_not_found', `Reservation ${reservation} not found`);
  await recordAudit(ctx.db, caller, 'reservation.update', `reservation:${reservation}`, { ...input });
  ctx.defer(ctx.requestSchedule());
  return getReservation(ctx.db, reservation);
}

/** Deletes a reservation; jobs that name it wait (reason Reservation) until they are changed or cancelled. */
export async function deleteReservation(
  ctx: Context,
  reservation: string,
  caller: Principal,
): Promise<ReservationView> {
  const before = await getReservation(ctx.db, reservation);
  await ctx.db.transaction(async (tx) => {
    await lockNodes(tx, before.node_list);
    await query(tx, sql`DELETE FROM reservations WHERE name = ${reservation}`);
  });
  await recordAudit(ctx.db, caller, 'reservation.delete', `reservation:${reservation}`, {});
  ctx.defer(ctx.requestSchedule());
  return before;
}

/**
 * sbatch `--reservation`: each one named must exist and admit the job (its owner among Users=, its account
 * among Accounts=, each when set), else 400 invalid_reservation with sbatch's words.
 */
export async function checkReservations(
  db: Db,
  inputs: readonly { reservation?: string; account?: string }[],
  owner: string | null,
  field: (k: number) => string,
): Promise<void> {
  const named = [...new Set(inputs.map((i) => i.reservation).filter((r) => r !== undefined))];
  if (named.length === 0) return;
  const rows = await query<{ name: string; users: string[]; accounts: string[] }>(
    db,
    sql`SELECT name, users, accounts FROM reservations WHERE name = ANY(${textArray(named)})`,
  );
  const found = new Map(rows.map((r) => [r.name, r]));
  inputs.forEach((input, k) => {
    if (input.reservation === undefined) return;
    const r = found.get(input.reservation);
    if (!r) {
      throw invalid(
        'invalid_reservation',
        `${field(k)}: Requested reservation is invalid: ${input.reservation} does not exist`,
      );
    }
    const rules = { name: r.name, nodes: new Set<string>(), startS: 0, endS: 0, periodS: null, maint: false };
    if (!mayUse({ ...rules, users: r.users, accounts: r.accounts }, owner, input.account ?? null)) {
      throw invalid(
        'invalid_reservation',
        `${field(k)}: Access denied to requested reservation ${r.name}: it admits ${[
          r.users.length > 0 ? `users ${r.users.join(',')}` : '',
          r.accounts.length > 0 ? `accounts ${r.accounts.join(',')}` : '',
        ]
          .filter(Boolean)
          .join(' and ')}`,
      );
    }
  });
}
