/**
 * What a job asks of its node besides CPUs (memory, GPUs, generic resources, features, a node, a partition),
 * checked at submit: a request no known node of its partitions could ever satisfy is refused, as Slurm
 * refuses it ("Requested node configuration is not available"), instead of waiting forever.
 */
import { sql } from 'drizzle-orm';
import { z } from 'zod';
import type { GpuDevice, PartitionState } from '../../db/schema.ts';
import { type Constraint, ConstraintError, evaluateConstraint, parseConstraint } from './constraint.ts';
import type { Context } from './context.ts';
import { invalid } from './errors.ts';
import { expandHostlist, HostlistError } from './hostlist.ts';
import { partitionMembership } from './partitions.ts';
import { capacityShortfalls, describeNeed, type FreeWorker, placementBar } from './placement.ts';
import { parseGpus, parseGres, parseMemorySize, parseNodeCount, ResourceError } from './resources.ts';
import { jsonColumn, queryOne } from './sql.ts';

const sizeField = z.union([z.number().int().min(0), z.string().max(32)], {
  error: 'a memory size: MB as a number, or a string such as "4G", "512M"',
});
const hostlistField = z.union([z.string().max(16_384), z.array(z.string().max(255)).max(65_536)], {
  error: 'a hostlist such as "node[01-03],gpu01", or a list of node names',
});

/** The submit body's resource fields (Slurm's sbatch options in brackets). */
export const resourceFields = {
  /** `--mem`: MB, or a size with a unit. */
  memory_per_node: sizeField.optional(),
  /** `--mem-per-cpu`. */
  memory_per_cpu: sizeField.optional(),
  /** `--gpus`: `2` or `a100:2`. */
  gpus: z.union([z.number().int().min(0), z.string().max(100)]).optional(),
  /** `--gres`: `gpu:a100:2,nvme:1`. */
  gres: z.string().max(1024).optional(),
  /** `--constraint`: features with `&`, `|`, `[a|b]`. */
  constraint: z.string().max(1024).optional(),
  /** `--exclusive`: the whole node. */
  exclusive: z.boolean().optional(),
  /** `--nodelist`: the node it must run on. */
  nodelist: hostlistField.optional(),
  /** `--exclude`: nodes it must not run on. */
  exclude: hostlistField.optional(),
  /** `--nodes`: 1 (multi-node jobs do not exist yet). */
  nodes: z.union([z.number(), z.string().max(32)]).optional(),
};

export type ResourceInput = { [K in keyof typeof resourceFields]?: z.infer<(typeof resourceFields)[K]> } & {
  cpus: number;
  partition?: string | undefined;
  account?: string | undefined;
  time_limit_s: number | null;
};

/** A job's request, as stored (partition defaults applied). */
export interface JobResources {
  /** The partitions, comma-separated, in the order the job named them (or the default one). */
  partition: string | null;
  timeLimitS: number | null;
  memoryMb: number | null;
  /** `memory_per_cpu` as asked (memoryMb is it times the CPUs); null when the job asked memory otherwise or none. */
  memoryPerCpu: number | null;
  gpus: number;
  gpuType: string | null;
  gres: Record<string, number>;
  constraint: string | null;
  exclusive: boolean;
  nodelist: string[] | null;
  exclude: string[];
}

interface Requested {
  memoryMb: number | null;
  memoryPerCpu: number | null;
  gpus: number;
  gpuType: string | null;
  gres: Record<string, number>;
  constraint: Constraint | null;
  constraintText: string | null;
  exclusive: boolean;
  nodelist: string[] | null;
  exclude: string[];
}

const names = (value: string | string[], field: string): string[] => {
  try {
    return Array.isArray(value) ? expandHostlist(value.join(',')) : expandHostlist(value);
  } catch (error) {
    if (error instanceof HostlistError) throw invalid('invalid_request', `${field}: ${error.message}`);
    throw error;
  }
};

/** The request in one job's fields, parsed; 400 naming the field on anything malformed. */
export function parseRequest(input: ResourceInput, field: (name: string) => string = (n) => n): Requested {
  try {
    if (input.nodes !== undefined) parseNodeCount(input.nodes, field('nodes'));
    if (input.memory_per_node !== undefined && input.memory_per_cpu !== undefined) {
      throw invalid(
        'invalid_request',
        `${field('memory_per_node')} and ${field('memory_per_cpu')} exclude each other (Slurm's --mem and --mem-per-cpu)`,
      );
    }
    const memoryMb =
      input.memory_per_node === undefined
        ? null
        : parseMemorySize(input.memory_per_node, field('memory_per_node'));
    const memoryPerCpu =
      input.memory_per_cpu === undefined
        ? null
        : parseMemorySize(input.memory_per_cpu, field('memory_per_cpu'));
    const fromGres = input.gres === undefined ? null : parseGres(input.gres, field('gres'));
    const fromGpus = input.gpus === undefined ? null : parseGpus(input.gpus, field('gpus'));
    if (fromGres && fromGpus && fromGres.gpus > 0 && fromGpus.gpus > 0) {
      throw invalid('invalid_request', `${field('gpus')} and a gpu in ${field('gres')}: give the GPUs once`);
    }
    const gpu = fromGpus && fromGpus.gpus > 0 ? fromGpus : (fromGres ?? { gpus: 0, gpuType: null });
    let constraint: Constraint | null = null;
    if (input.constraint !== undefined && input.constraint.trim() !== '') {
      constraint = parseConstraint(input.constraint);
    }
    const nodelist = input.nodelist === undefined ? null : names(input.nodelist, field('nodelist'));
    if (nodelist && nodelist.length > 1) {
      throw invalid(
        'invalid_request',
        `${field('nodelist')} names ${nodelist.length} nodes; a job runs on one node, so it may name one (use ${field('exclude')} to keep it off others)`,
      );
    }
    return {
      memoryMb: memoryMb === 0 ? null : memoryMb,
      memoryPerCpu: memoryPerCpu === 0 ? null : memoryPerCpu,
      gpus: gpu.gpus,
      gpuType: gpu.gpus > 0 ? gpu.gpuType : null,
      gres: fromGres?.gres ?? {},
      constraint,
      constraintText: constraint ? (input.constraint ?? '').trim() : null,
      exclusive: input.exclusive ?? false,
      nodelist: nodelist && nodelist.length > 0 ? nodelist : null,
      exclude: input.exclude === undefined ? [] : names(input.exclude, field('exclude')),
    };
  } catch (error) {
    if (error instanceof ResourceError) throw invalid('invalid_request', error.message);
    if (error instanceof ConstraintError)
      throw invalid('invalid_request', `${field('constraint')}: ${error.message}`);
    throw error;
  }
}

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
}

interface NodeShape {
  id: string;
  cpus: number;
  memory_mb: number;
  gpus: GpuDevice[];
  features: string[];
  partitions: string[];
  gres: Record<string, number> | null;
}

/** The partitions and the known nodes (live or not), read once for a submission or a batch. */
async function readInventory(ctx: Context) {
  const row = await queryOne<{ partitions: PartitionRow[] | string; nodes: NodeShape[] | string }>(
    ctx.db,
    sql`SELECT
          (SELECT coalesce(json_agg(p), '[]'::json) FROM (
             SELECT name, is_default, state, nodes, max_time_s, default_time_s, max_cpus_per_node, def_mem_per_cpu,
                    max_mem_per_cpu, allow_accounts FROM partitions ORDER BY name) p) AS partitions,
          (SELECT coalesce(json_agg(w), '[]'::json) FROM (
             SELECT id, cpus, memory_mb, gpus, features, partitions,
                    (SELECT json_object_agg(g.name, g.total) FROM worker_gres g WHERE g.worker_id = workers.id) AS gres
             FROM workers) w) AS nodes`,
  );
  return {
    partitions: jsonColumn<PartitionRow[]>(row?.partitions ?? []),
    nodes: jsonColumn<NodeShape[]>(row?.nodes ?? []),
  };
}

type RawInventory = Awaited<ReturnType<typeof readInventory>>;
type Inventory = ReturnType<typeof indexInventory>;

/**
 * Checks each job's request against the partitions and the known nodes, and returns what to store: 400 for
 * an unknown partition (naming the valid ones), a partition that takes no jobs, a limit it exceeds, an account
 * it does not allow, or a request that no known node of its partitions could ever satisfy (naming the
 * resource and what the largest node offers). A partition with no known node yet takes anything: nodes join.
 */
export async function admitJobs(
  ctx: Context,
  inputs: readonly ResourceInput[],
  field: (index: number, name: string) => string,
): Promise<JobResources[]> {
  const requests = inputs.map((input, i) => parseRequest(input, (name) => field(i, name)));
  const inventory = indexInventory(await readInventory(ctx));
  return inputs.map((input, i) =>
    admit(input, requests[i] as Requested, inventory, (name) => field(i, name)),
  );
}

/**
 * The nodes of each partition (declared by their agents, named by its node list, or the default's), as the
 * planner sees them; and the verdicts already reached for a request shape, so that a batch of 1,000 alike jobs
 * over 1,000 nodes is checked once, not a million times.
 */
function indexInventory(raw: RawInventory) {
  const partitionsOf = partitionMembership(raw.partitions);
  const members = new Map<string, FreeWorker[]>(raw.partitions.map((p) => [p.name, []]));
  for (const node of raw.nodes) {
    const worker = workerOf(node);
    for (const name of partitionsOf(node.id, node.partitions)) members.get(name)?.push(worker);
  }
  return { ...raw, members, verdicts: new Map<string, string | null>() };
}

function admit(
  input: ResourceInput,
  request: Requested,
  inventory: Inventory,
  field: (name: string) => string,
): JobResources {
  const byName = new Map(inventory.partitions.map((p) => [p.name, p]));
  const fallback = inventory.partitions.find((p) => p.is_default);
  const named = input.partition
    ? [...new Set(input.partition.split(',').map((p) => p.trim()))].filter((p) => p !== '')
    : fallback
      ? [fallback.name]
      : [];
  const unknown = named.filter((p) => !byName.has(p));
  if (unknown.length > 0 || named.length === 0) {
    throw invalid(
      'invalid_partition',
      `${field('partition')}: ${unknown.length > 0 ? `no partition ${unknown.join(', ')}` : 'none given and there is no default partition'}; partitions: ${inventory.partitions.map((p) => p.name).join(', ') || '(none)'}`,
      { partitions: inventory.partitions.map((p) => p.name) },
    );
  }

  const memoryFor = (p: PartitionRow): number | null =>
    request.memoryMb ??
    (request.memoryPerCpu !== null
      ? request.memoryPerCpu * input.cpus
      : p.def_mem_per_cpu !== null && !request.exclusive
        ? Number(p.def_mem_per_cpu) * input.cpus
        : null);

  // Each partition the job may use: its limits, then the nodes in it.
  const problems: string[] = [];
  const usable: PartitionRow[] = [];
  for (const name of named) {
    const p = byName.get(name) as PartitionRow;
    const timeLimit = input.time_limit_s ?? (p.default_time_s === null ? null : Number(p.default_time_s));
    const perCpu = request.memoryPerCpu ?? (request.memoryMb === null ? null : request.memoryMb / input.cpus);
    if (p.state === 'DRAIN' || p.state === 'INACTIVE')
      problems.push(`partition ${name} is ${p.state}: it takes no new jobs`);
    else if (p.allow_accounts && !p.allow_accounts.includes(input.account ?? '')) {
      problems.push(
        `partition ${name} allows accounts ${p.allow_accounts.join(', ')} only (account: ${input.account ?? 'none'})`,
      );
    } else if (p.max_time_s !== null && timeLimit !== null && timeLimit > Number(p.max_time_s)) {
      problems.push(
        `time limit ${minutes(timeLimit)} is over partition ${name}'s MaxTime of ${minutes(Number(p.max_time_s))} (PartitionTimeLimit)`,
      );
    } else if (p.max_time_s !== null && timeLimit === null) {
      problems.push(
        `partition ${name} has a MaxTime of ${minutes(Number(p.max_time_s))}: give the job a time limit`,
      );
    } else if (p.max_cpus_per_node !== null && input.cpus > Number(p.max_cpus_per_node)) {
      problems.push(
        `${input.cpus} CPUs is over partition ${name}'s MaxCPUsPerNode of ${p.max_cpus_per_node} (PartitionNodeLimit)`,
      );
    } else if (p.max_mem_per_cpu !== null && perCpu !== null && perCpu > Number(p.max_mem_per_cpu)) {
      problems.push(
        `${Math.ceil(perCpu)} MB per CPU is over partition ${name}'s MaxMemPerCPU of ${p.max_mem_per_cpu} MB`,
      );
    } else usable.push(p);
  }
  if (usable.length === 0)
    throw invalid('partition_refuses_job', `${field('partition')}: ${problems.join('; ')}`);

  const shortfalls: string[] = [];
  let admitted: PartitionRow | undefined;
  for (const p of usable) {
    const members = inventory.members.get(p.name) ?? [];
    if (members.length === 0) {
      admitted = p; // nodes may yet join it
      break;
    }
    const need = {
      cpus: input.cpus,
      memoryMb: memoryFor(p) ?? 0,
      gpus: request.gpus,
      gpuType: request.gpuType,
      gres: request.gres,
      exclusive: request.exclusive,
    };
    const key = JSON.stringify([p.name, need, request.constraintText, request.nodelist, request.exclude]);
    let verdict = inventory.verdicts.get(key);
    if (verdict === undefined) {
      verdict = shortfallIn(p, members, need, request);
      inventory.verdicts.set(key, verdict);
    }
    if (verdict === null) {
      admitted = p;
      break;
    }
    shortfalls.push(verdict);
  }
  if (!admitted) {
    throw invalid(
      'node_configuration_unavailable',
      `Requested node configuration is not available: ${shortfalls.join('; ')}`,
    );
  }
  const chosen = admitted;
  return {
    partition: input.partition ? named.join(',') : chosen.name,
    timeLimitS: input.time_limit_s ?? (chosen.default_time_s === null ? null : Number(chosen.default_time_s)),
    memoryMb: memoryFor(chosen),
    memoryPerCpu: request.memoryMb === null ? request.memoryPerCpu : null,
    gpus: request.gpus,
    gpuType: request.gpuType,
    gres: request.gres,
    constraint: request.constraintText,
    exclusive: request.exclusive,
    nodelist: request.nodelist,
    exclude: request.exclude,
  };
}

/** Why no node of partition `p` could ever take the request (null: one could). */
function shortfallIn(
  p: PartitionRow,
  members: readonly FreeWorker[],
  need: Parameters<typeof capacityShortfalls>[0],
  request: Requested,
): string | null {
  const job = {
    id: 0,
    cpus: need.cpus,
    featuresMatch: request.constraint
      ? (f: ReadonlySet<string>) => evaluateConstraint(request.constraint as Constraint, f)
      : null,
    constraint: request.constraintText,
    nodelist: request.nodelist,
    exclude: request.exclude,
  };
  let best: { node: FreeWorker; short: string[] } | undefined;
  for (const node of members) {
    const bar = placementBar(job, node, null);
    const short = bar !== null ? [bar] : capacityShortfalls(need, node);
    if (short.length === 0) return null;
    if (bar === null && (!best || node.cpus > best.node.cpus)) best = { node, short };
    else if (!best) best = { node, short };
  }
  return `partition ${p.name}: ${best ? `${best.short.join(', ')} (largest known node: ${best.node.id})` : `${describeNeed(need)}, no node fits`}`;
}

const minutes = (seconds: number) => `${Math.round((seconds / 60) * 100) / 100} min`;

const workerOf = (node: NodeShape): FreeWorker => ({
  id: node.id,
  cpus: Number(node.cpus),
  allocatedCpus: 0,
  memoryMb: Number(node.memory_mb),
  gpus: node.gpus,
  gres: Object.fromEntries(
    Object.entries(node.gres ?? {}).map(([name, total]) => [name, { total: Number(total), allocated: 0 }]),
  ),
  features: new Set(node.features),
});
