/**
 * Slurm's partitions: named sets of nodes with limits and defaults. Agents create the ones they name (UP, no
 * limits), so a cluster works without any set-up; an admin creates and changes them. Exactly one is the
 * default (jobs that name none go there, and so do nodes that declare none).
 */

import { sql } from 'drizzle-orm';
import { z } from 'zod';
import {
  PARTITION_STATES,
  type PartitionState,
  PLACEMENT_POLICIES,
  type PlacementPolicy,
} from '../../db/schema.ts';
import { recordAudit } from './audit.ts';
import type { Principal } from './auth.ts';
import type { Context } from './context.ts';
import { conflict, invalid, notFound } from './errors.ts';
import { HostlistError, hostlistMatcher } from './hostlist.ts';
import { liveInPostgres } from './liveness.ts';
import { parseMemorySize, ResourceError } from './resources.ts';
import { query, queryOne } from './sql.ts';
import { parseTimeLimit } from './time-limit.ts';

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;
export const partitionNameParam = z.strictObject({
  name: z
    .string()
    .min(1)
    .max(100, 'partition names are at most 100 characters')
    .regex(NAME, 'partition names are letters, digits, ".", "_" and "-"'),
});

const time = z
  .union([z.number().positive(), z.string().max(32)], {
    error: 'minutes, or a Slurm time such as "30", "1:30:00" or "1-00:00:00"',
  })
  .nullable();
const size = z.union([z.number().int().min(1), z.string().max(32)]).nullable();

export const partitionInput = z.strictObject({
  default: z
    .literal(true, { error: 'default can only be set (true): mark another partition to move it' })
    .optional(),
  state: z.enum(PARTITION_STATES, { error: `state is one of ${PARTITION_STATES.join(', ')}` }).optional(),
  nodes: z.string().max(16_384).nullable().optional(),
  max_time: time.optional(),
  default_time: time.optional(),
  max_cpus_per_node: z.number().int().min(1).max(65_536).nullable().optional(),
  def_mem_per_cpu: size.optional(),
  max_mem_per_cpu: size.optional(),
  allow_accounts: z.array(z.string().min(1).max(255)).max(1000).nullable().optional(),
  priority_tier: z.number().int().min(0).max(65_535).optional(),
  policy: z.enum(PLACEMENT_POLICIES, { error: `policy is ${PLACEMENT_POLICIES.join(' or ')}` }).optional(),
  /** The retry policy of its jobs that set none (null: the cluster's settings). */
  max_requeues: z
    .number({ error: 'max_requeues is a whole number from 0 to 1000, or null' })
    .int('max_requeues must be a whole number')
    .min(0, 'max_requeues is at least 0 (0: never requeued automatically)')
    .max(1000, 'max_requeues is at most 1000')
    .nullable()
    .optional(),
  retry_on_failure: z.boolean({ error: 'retry_on_failure is true, false or null' }).nullable().optional(),
  retry_backoff_s: z
    .number({ error: 'retry_backoff_s is whole seconds from 0 to 86400, or null' })
    .int('retry_backoff_s must be whole seconds')
    .min(0, 'retry_backoff_s is at least 0')
    .max(86_400, 'retry_backoff_s is at most 86400 (a day)')
    .nullable()
    .optional(),
  crash_limit: z
    .number({ error: 'crash_limit is a whole number from 0 to 1000, or null' })
    .int('crash_limit must be a whole number')
    .min(0, 'crash_limit is at least 0 (0: no crash limit)')
    .max(1000, 'crash_limit is at most 1000')
    .nullable()
    .optional(),
});
export type PartitionInput = z.infer<typeof partitionInput>;

interface PartitionRow {
  name: string;
  is_default: boolean;
  state: PartitionState;
  nodes: string | null;
  max_time_s: number | null;
  default_time_s: number | null;
  max_cpus_per_node: number | null;
  def_mem_per_cpu: number | null;
  max_mem_per_cpu: number | null;
  allow_accounts: string[] | null;
  priority_tier: number;
  policy: PlacementPolicy;
  max_requeues: number | null;
  retry_on_failure: boolean | null;
  retry_backoff_s: number | null;
  crash_limit: number | null;
  created_by: 'admin' | 'agent';
  total_cpus: number | string;
  live_nodes: number | string;
}

const COLUMNS = sql`p.name, p.is_default, p.state, p.nodes, p.max_time_s, p.default_time_s, p.max_cpus_per_node,
  p.def_mem_per_cpu, p.max_mem_per_cpu, p.allow_accounts, p.priority_tier, p.policy, p.created_by,
  p.max_requeues, p.retry_on_failure, p.retry_backoff_s, p.crash_limit`;

/**
 * Which partitions a node serves: those its agent declares (that exist), those whose node list names it, and,
 * for a node that declares none and no list names, the default one. The scheduler, admission and the listings
 * all go by this rule.
 */
export function partitionMembership(
  rows: readonly { name: string; is_default: boolean; nodes: string | null }[],
): (id: string, declared: readonly string[]) => Set<string> {
  const known = new Set(rows.map((r) => r.name));
  const lists = rows
    .filter((r) => r.nodes)
    .map((r) => ({ name: r.name, matches: hostlistMatcher(r.nodes as string) }));
  const defaultName = rows.find((r) => r.is_default)?.name;
  return (id, declared) => {
    const names = new Set(declared.filter((d) => known.has(d)));
    for (const list of lists) if (list.matches(id)) names.add(list.name);
    if (names.size === 0 && declared.length === 0 && defaultName !== undefined) names.add(defaultName);
    return names;
  };
}

const minutesOf = (seconds: number | null) => (seconds === null ? null : Number(seconds) / 60);

export function partitionView(row: PartitionRow, members: { nodes: string[]; cpus: number }) {
  return {
    name: row.name,
    default: row.is_default,
    state: row.state,
    nodes: row.nodes,
    max_time: minutesOf(row.max_time_s),
    default_time: minutesOf(row.default_time_s),
    max_cpus_per_node: row.max_cpus_per_node === null ? null : Number(row.max_cpus_per_node),
    def_mem_per_cpu: row.def_mem_per_cpu === null ? null : Number(row.def_mem_per_cpu),
    max_mem_per_cpu: row.max_mem_per_cpu === null ? null : Number(row.max_mem_per_cpu),
    allow_accounts: row.allow_accounts,
    priority_tier: Number(row.priority_tier),
    policy: row.policy,
    max_requeues: row.max_requeues === null ? null : Number(row.max_requeues),
    retry_on_failure: row.retry_on_failure,
    retry_backoff_s: row.retry_backoff_s === null ? null : Number(row.retry_backoff_s),
    crash_limit: row.crash_limit === null ? null : Number(row.crash_limit),
    created_by: row.created_by,
    /** The live nodes in it now, and their CPUs. */
    live_nodes: members.nodes,
    total_cpus: members.cpus,
  };
}
export type PartitionView = ReturnType<typeof partitionView>;

/** Every partition with the live nodes in it (declared by their agents, named by its node list, or the default's). */
export async function listPartitions(ctx: Context): Promise<PartitionView[]> {
  const rows = await query<Omit<PartitionRow, 'total_cpus' | 'live_nodes'>>(
    ctx.db,
    sql`SELECT ${COLUMNS} FROM partitions p ORDER BY p.is_default DESC, p.name`,
  );
  const live = await query<{ id: string; cpus: number; partitions: string[] }>(
    ctx.db,
    sql`SELECT id, cpus, partitions FROM workers
        WHERE ${liveInPostgres(ctx.config.workerTtlSeconds)}
        ORDER BY id`,
  );
  const partitionsOf = partitionMembership(rows);
  const members = new Map(rows.map((r) => [r.name, { nodes: [] as string[], cpus: 0 }]));
  for (const w of live) {
    for (const name of partitionsOf(w.id, w.partitions)) {
      const m = members.get(name);
      if (!m) continue;
      m.nodes.push(w.id);
      m.cpus += Number(w.cpus);
    }
  }
  return rows.map((r) =>
    partitionView({ ...r, total_cpus: 0, live_nodes: 0 }, members.get(r.name) ?? { nodes: [], cpus: 0 }),
  );
}

export async function getPartition(ctx: Context, name: string): Promise<PartitionView> {
  const found = (await listPartitions(ctx)).find((p) => p.name === name);
  if (!found) throw notFound('partition_not_found', `No partition ${name}`);
  return found;
}

const seconds = (value: number | string | null, field: string): number | null => {
  if (value === null) return null;
  const s = parseTimeLimit(value);
  if (s === null || s < 1)
    throw invalid('invalid_request', `${field} is minutes, or a Slurm time such as "1:30:00"`);
  return s;
};
const megabytes = (value: number | string | null, field: string): number | null => {
  if (value === null) return null;
  try {
    return parseMemorySize(value, field);
  } catch (error) {
    if (error instanceof ResourceError) throw invalid('invalid_request', error.message);
    throw error;
  }
};

/**
 * Creates a partition or changes the fields given (an admin's). `default: true` moves the default here. A
 * partition an agent created becomes an admin's once an admin changes it.
 */
export async function putPartition(
  ctx: Context,
  name: string,
  input: PartitionInput,
  caller: Principal,
): Promise<PartitionView> {
  if (input.nodes) {
    try {
      hostlistMatcher(input.nodes);
    } catch (error) {
      if (error instanceof HostlistError) throw invalid('invalid_request', `nodes: ${error.message}`);
      throw error;
    }
  }
  const set: Record<string, unknown> = {};
  if (input.state !== undefined) set.state = input.state;
  if (input.nodes !== undefined) set.nodes = input.nodes === '' ? null : input.nodes;
  if (input.max_time !== undefined) set.max_time_s = seconds(input.max_time, 'max_time');
  if (input.default_time !== undefined) set.default_time_s = seconds(input.default_time, 'default_time');
  if (input.max_cpus_per_node !== undefined) set.max_cpus_per_node = input.max_cpus_per_node;
  if (input.def_mem_per_cpu !== undefined)
    set.def_mem_per_cpu = megabytes(input.def_mem_per_cpu, 'def_mem_per_cpu');
  if (input.max_mem_per_cpu !== undefined)
    set.max_mem_per_cpu = megabytes(input.max_mem_per_cpu, 'max_mem_per_cpu');
  if (input.allow_accounts !== undefined) set.allow_accounts = input.allow_accounts;
  if (input.priority_tier !== undefined) set.priority_tier = input.priority_tier;
  if (input.policy !== undefined) set.policy = input.policy;
  for (const field of ['max_requeues', 'retry_on_failure', 'retry_backoff_s', 'crash_limit'] as const) {
    if (input[field] !== undefined) set[field] = input[field];
  }
  const columns = Object.keys(set);
  const value = (column: string) => {
    const v = set[column];
    if (column === 'allow_accounts')
      return v === null
        ? sql`NULL::text[]`
        : sql`${`{${(v as string[]).map((a) => JSON.stringify(a)).join(',')}}`}::text[]`;
    return sql`${v}`;
  };
  await ctx.db.transaction(async (tx) => {
    if (input.default)
      await query(tx, sql`UPDATE partitions SET is_default = false WHERE is_default AND name <> ${name}`);
    const assignments = [
      sql`created_by = 'admin'`,
      ...(input.default ? [sql`is_default = true`] : []),
      ...columns.map((c) => sql`${sql.identifier(c)} = excluded.${sql.identifier(c)}`),
    ];
    await query(
      tx,
      sql`INSERT INTO partitions (name, created_by, is_default${sql.raw(columns.map((c) => `, ${c}`).join(''))})
          VALUES (${name}, 'admin', ${input.default ?? false}${sql.join(
            columns.map((c) => sql`, ${value(c)}`),
            sql``,
          )})
          ON CONFLICT (name) DO UPDATE SET ${sql.join(assignments, sql`, `)}`,
    );
  });
  await recordAudit(ctx.db, caller, 'partition.put', `partition:${name}`, { ...input });
  ctx.defer(ctx.requestSchedule());
  return getPartition(ctx, name);
}

/** Deletes a partition no waiting or running job names; never the default one. */
export async function deletePartition(ctx: Context, name: string, caller: Principal): Promise<PartitionView> {
  const before = await getPartition(ctx, name);
  if (before.default) {
    throw conflict(
      'partition_is_default',
      `${name} is the default partition: mark another one default first`,
    );
  }
  const row = await queryOne<{ deleted: boolean; jobs: number | string }>(
    ctx.db,
    sql`WITH busy AS (
          SELECT count(*) AS n FROM jobs
          WHERE state IN ('PENDING', 'RUNNING') AND ${name} = ANY(string_to_array(replace(partition, ' ', ''), ','))
        ),
        gone AS (DELETE FROM partitions WHERE name = ${name} AND (SELECT n FROM busy) = 0 RETURNING 1)
        SELECT EXISTS (SELECT 1 FROM gone) AS deleted, (SELECT n FROM busy) AS jobs`,
  );
  if (!row?.deleted) {
    throw conflict(
      'partition_in_use',
      `${Number(row?.jobs ?? 0)} waiting or running jobs name partition ${name}`,
    );
  }
  await recordAudit(ctx.db, caller, 'partition.delete', `partition:${name}`, {});
  return before;
}
