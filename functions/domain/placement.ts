/**
 * Where pending jobs go: pure functions, so the rule can be tested on its own. The scheduler feeds them the
 * rows it read (workers locked, jobs not) and commits the result in one statement.
 *
 * The rule:
 * - Jobs are taken in queue order (priority, then submit time, then id).
 * - A job runs on ONE worker of one of its partitions (in the order it named them) that has every resource it
 *   asks for free at once: CPUs, memory, GPUs (of its type), generic resources; its constraint holds on the
 *   worker's features, the worker is the one it named (`-w`) and not one it excluded (`-x`). An exclusive job
 *   takes a worker with nothing running and all of it. Free resources summed across workers mean nothing.
 * - Among the workers it fits, `pack` (the default) takes the one left with the fewest free CPUs, then the
 *   least memory, so that large holes stay open for large jobs; `spread` the one with the most free CPUs.
 *   Either way a job that asks no GPU goes to a worker without free GPUs when it can, so GPU nodes are kept
 *   for GPU jobs.
 * - A job that fits on no worker now, but would fit on one of its workers when empty, reserves a worker: the
 *   one where it can start first by the time limits of the jobs running there (a job without a time limit
 *   may run forever), then the one with the most free CPUs. The reservation is kept (on the job) until the job
 *   starts or the worker leaves. Its planned start there is when the time limits of the running jobs free
 *   enough (null when that depends on a job without a time limit). Backfill: a later job lands on a reserved
 *   worker only when it fits now and its own time limit ends it by that planned start, so it never delays
 *   the reserving job; with the planned start unknown nothing lands there.
 * - An admin's reservation (scontrol create reservation) holds its nodes over its window: only the jobs that
 *   name it (and may use it) start there inside it, and no other job starts there whose time limit would run
 *   into a window of it (a job without a time limit runs into every later one).
 * - A job that fits no live worker even when empty reserves nothing: it waits for a node that can take it.
 * - Every job left waiting gets Slurm's reason and a line that says what it waits for.
 */
import type { GpuDevice, PartitionState, PlacementPolicy } from '../../db/schema.ts';

/** How the detail of a job that no live node could take, even when empty, begins. */
export const TOO_LARGE_PREFIX = 'waiting for a node that can take it: ';

/** Slurm's reasons for a pending job. */
export const REASON_CODES = [
  'None',
  'Resources',
  'Priority',
  'ReqNodeNotAvail',
  'PartitionDown',
  'PartitionInactive',
  'PartitionTimeLimit',
  'PartitionNodeLimit',
  'BadConstraints',
  'JobHeldUser',
  'JobHeldAdmin',
  'JobArrayTaskLimit',
  'AssocMaxJobsLimit',
  'AssocGrpCpuLimit',
  'AssocGrpGRES',
  'AssocGrpCPUMinutesLimit',
  'Reservation',
  'ReqNodeNotAvail, Reserved for maintenance',
] as const;
export type ReasonCode = (typeof REASON_CODES)[number];

export interface PendingJob {
  id: number;
  cpus: number;
  /** MB; 0 or absent: none asked. */
  memoryMb?: number;
  gpus?: number;
  gpuType?: string | null;
  gres?: Readonly<Record<string, number>>;
  exclusive?: boolean;
  /** The partitions it may run in, in order of preference; absent: every worker (no partitions in play). */
  partitions?: readonly string[];
  /** Its constraint, compiled: true when a worker's features satisfy it. */
  featuresMatch?: ((features: ReadonlySet<string>) => boolean) | null;
  /** The constraint as written, for reasons. */
  constraint?: string | null;
  /** The worker it must run on (`-w`). */
  nodelist?: readonly string[] | null;
  exclude?: readonly string[];
  timeLimitS?: number | null;
  /** The worker this job holds from an earlier pass (null: none). */
  reservedWorker?: string | null;
  /** sbatch `--reservation`: the admin reservation it runs in (null: none). */
  reservation?: string | null;
  /** Who submitted it and its account, for a reservation's Users= and Accounts=. */
  owner?: string | null;
  account?: string | null;
}

/**
 * An admin's reservation as the planner sees it, in seconds relative to the pass's now: its first window
 * [startS, endS), repeated every periodS (DAILY, WEEKLY) when set.
 */
export interface AdminReservation {
  name: string;
  nodes: ReadonlySet<string>;
  startS: number;
  endS: number;
  periodS: number | null;
  maint: boolean;
  /** Users= and Accounts= (empty: not restricted that way). */
  users: readonly string[];
  accounts: readonly string[];
}

/** The occurrence of `r` that is the first to end after `from` (its start may be before `from`). */
export function nextWindow(r: AdminReservation, from: number): { start: number; end: number } {
  if (r.periodS === null || from < r.endS) return { start: r.startS, end: r.endS };
  const k = Math.floor((from - r.endS) / r.periodS) + 1;
  return { start: r.startS + k * r.periodS, end: r.endS + k * r.periodS };
}

/** Whether a window of `r` overlaps [from, to). */
export const windowOverlaps = (r: AdminReservation, from: number, to: number): boolean => {
  const w = nextWindow(r, from);
  return w.start < to && w.end > from;
};

/** Whether `r`'s window is open now (the planner's time 0). */
export const windowOpen = (r: AdminReservation): boolean => nextWindow(r, 0).start <= 0;

/** Slurm's rule: a job may use a reservation when it matches its Users= and its Accounts= (each when set). */
export const mayUse = (r: AdminReservation, owner: string | null, account: string | null): boolean =>
  (r.users.length === 0 || (owner !== null && r.users.includes(owner))) &&
  (r.accounts.length === 0 || (account !== null && r.accounts.includes(account))) &&
  (r.users.length > 0 || r.accounts.length > 0);

/** A job running on a worker, as far as its reservation matters. */
export interface RunningJob {
  cpus: number;
  memoryMb?: number;
  gpus?: readonly number[];
  gres?: Readonly<Record<string, number>>;
  /** Seconds until its time limit ends it; null: it has no time limit. */
  endsInSeconds: number | null;
}

export interface FreeWorker {
  id: string;
  cpus: number;
  allocatedCpus: number;
  memoryMb?: number;
  allocatedMemoryMb?: number;
  gpus?: readonly GpuDevice[];
  /** Indexes of the GPUs held by running jobs. */
  gpusUsed?: ReadonlySet<number>;
  gres?: Readonly<Record<string, { total: number; allocated: number }>>;
  features?: ReadonlySet<string>;
  /** The partitions it serves (resolved: declared, named by a partition's node list, or the default). */
  partitions?: ReadonlySet<string>;
  /** Its running jobs; unknown (undefined) when the choice of a reservation does not need them. */
  running?: readonly RunningJob[];
}

export interface PartitionRules {
  state: PartitionState;
  policy: PlacementPolicy;
  maxTimeS: number | null;
  maxCpusPerNode: number | null;
}

export interface Placement {
  jobId: number;
  workerId: string;
  cpus: number;
  memoryMb: number;
  /** GPU indexes on the worker. */
  gpus: number[];
  gres: Record<string, number>;
  /** The partition it runs in (null: no partitions in play). */
  partition: string | null;
}

export interface Wait {
  reason: ReasonCode;
  detail: string;
}

export interface PlacementResult {
  placements: Placement[];
  /** Workers held for a blocked job, with the job that holds each. */
  reservations: Map<string, number>;
  /** Jobs that fit on no live worker even when it is empty. */
  tooLarge: number[];
  /** Reservations made by this plan (not held from an earlier pass), with their job. */
  newReservations: Map<string, number>;
  /** Why each job considered and not placed waits. */
  waits: Map<number, Wait>;
  /** Seconds from now until each job holding a worker starts there by the running jobs' time limits (known only). */
  plannedStarts: Map<number, number>;
}

/** Placement decisions over a queue read in pages: `consider` each job in queue order. */
export interface Planner {
  consider(job: PendingJob): void;
  /** Nothing later in the queue can be placed or reserve anything: every worker is held, none backfills. */
  readonly exhausted: boolean;
  /** Every worker is held: only a job with a time limit may still start (backfill). */
  readonly holdsAll: boolean;
  /** The most CPUs a later job may ask and still be placed or reserve a worker. */
  readonly largestUseful: number;
  readonly placed: number;
  result(): PlacementResult;
}

/** What is free on a worker while a plan is made. */
interface Free {
  worker: FreeWorker;
  cpus: number;
  memoryMb: number;
  gpus: Set<number>;
  gres: Map<string, number>;
  /** Nothing at all is allocated (an exclusive job may go there). */
  idle: boolean;
  /** Jobs this plan placed there, ending by their time limits: a reservation made later waits for them. */
  placedHere?: RunningJob[];
}

interface Need {
  cpus: number;
  memoryMb: number;
  gpus: number;
  gpuType: string | null;
  gres: Readonly<Record<string, number>>;
  exclusive: boolean;
}

const needOf = (job: PendingJob): Need => ({
  cpus: job.cpus,
  memoryMb: job.memoryMb ?? 0,
  gpus: job.gpus ?? 0,
  gpuType: job.gpuType ?? null,
  gres: job.gres ?? {},
  exclusive: job.exclusive ?? false,
});

const typedGpus = (worker: FreeWorker, type: string | null): GpuDevice[] =>
  (worker.gpus ?? []).filter((g) => type === null || g.model === type);

function freeOf(worker: FreeWorker): Free {
  const used = worker.gpusUsed ?? new Set<number>();
  const gres = new Map<string, number>();
  let gresBusy = false;
  for (const [name, g] of Object.entries(worker.gres ?? {})) {
    gres.set(name, g.total - g.allocated);
    if (g.allocated > 0) gresBusy = true;
  }
  return {
    worker,
    cpus: worker.cpus - worker.allocatedCpus,
    memoryMb: (worker.memoryMb ?? 0) - (worker.allocatedMemoryMb ?? 0),
    gpus: new Set((worker.gpus ?? []).map((g) => g.index).filter((i) => !used.has(i))),
    gres,
    idle: worker.allocatedCpus === 0 && (worker.allocatedMemoryMb ?? 0) === 0 && used.size === 0 && !gresBusy,
  };
}

/**
 * What stops `need` from ever running on `worker` (empty: nothing; it fits when the worker is empty), in
 * words for reasons and `explain`. Partition, node list and constraint are checked by the caller.
 */
export function capacityShortfalls(need: Need, worker: FreeWorker): string[] {
  const why: string[] = [];
  if (need.cpus > worker.cpus) why.push(`needs ${need.cpus} CPUs, has ${worker.cpus}`);
  const memory = worker.memoryMb ?? 0;
  if (need.memoryMb > memory) why.push(`needs ${need.memoryMb} MB of memory, has ${memory}`);
  if (need.gpus > 0) {
    const gpus = typedGpus(worker, need.gpuType).length;
    if (need.gpus > gpus) why.push(`needs ${need.gpus} ${gpuWords(need.gpuType)}, has ${gpus}`);
  }
  for (const [name, count] of Object.entries(need.gres)) {
    const total = worker.gres?.[name]?.total ?? 0;
    if (count > total) why.push(`needs ${count} ${name}, has ${total}`);
  }
  return why;
}

/** capacityShortfalls(...).length === 0, without building the words. */
function fitsWhenEmpty(need: Need, worker: FreeWorker): boolean {
  if (need.cpus > worker.cpus || need.memoryMb > (worker.memoryMb ?? 0)) return false;
  if (need.gpus > 0 && typedGpus(worker, need.gpuType).length < need.gpus) return false;
  for (const name in need.gres) if ((need.gres[name] ?? 0) > (worker.gres?.[name]?.total ?? 0)) return false;
  return true;
}

const gpuWords = (type: string | null) => (type === null ? 'GPUs' : `${type} GPUs`);

/** What is short on `free` for `need` right now (empty: it fits now). */
function freeShortfalls(need: Need, free: Free): string[] {
  if (need.exclusive && !free.idle) return ['exclusive: jobs are running there'];
  const why: string[] = [];
  if (need.cpus > free.cpus) why.push(`${free.cpus} of ${need.cpus} CPUs free`);
  if (need.memoryMb > free.memoryMb) why.push(`${free.memoryMb} of ${need.memoryMb} MB free`);
  if (need.gpus > 0) {
    const n = freeGpus(free, need.gpuType).length;
    if (need.gpus > n) why.push(`${n} of ${need.gpus} ${gpuWords(need.gpuType)} free`);
  }
  for (const [name, count] of Object.entries(need.gres)) {
    const left = free.gres.get(name) ?? 0;
    if (count > left) why.push(`${left} of ${count} ${name} free`);
  }
  return why;
}

const freeGpus = (free: Free, type: string | null): number[] =>
  typedGpus(free.worker, type)
    .map((g) => g.index)
    .filter((i) => free.gpus.has(i))
    .sort((a, b) => a - b);

const fitsNow = (need: Need, free: Free): boolean => {
  if (need.exclusive) return free.idle;
  if (need.cpus > free.cpus || need.memoryMb > free.memoryMb) return false;
  if (need.gpus > 0) {
    if (free.gpus.size < need.gpus) return false;
    let n = 0;
    for (const g of free.worker.gpus ?? []) {
      if ((need.gpuType === null || g.model === need.gpuType) && free.gpus.has(g.index)) n++;
    }
    if (n < need.gpus) return false;
  }
  for (const name in need.gres) if ((need.gres[name] ?? 0) > (free.gres.get(name) ?? 0)) return false;
  return true;
};

/**
 * Whether the job may run on the worker at all, apart from sizes: it serves `partition`, is the node the job
 * named, is not excluded, and has the features. Returns why not, or null.
 */
export function placementBar(job: PendingJob, worker: FreeWorker, partition: string | null): string | null {
  if (partition !== null && worker.partitions && !worker.partitions.has(partition)) {
    return `not in partition ${partition}`;
  }
  if (job.nodelist && job.nodelist.length > 0 && !job.nodelist.includes(worker.id))
    return 'not in its node list';
  if (job.exclude?.includes(worker.id)) return 'excluded by the job';
  if (job.featuresMatch && !job.featuresMatch(worker.features ?? new Set())) {
    return `features ${[...(worker.features ?? [])].join(',') || '(none)'} do not satisfy ${job.constraint ?? 'the constraint'}`;
  }
  return null;
}

/**
 * `held` are the jobs holding a reservation from an earlier pass (in queue order): each keeps its worker
 * while that worker is live and large enough, and starts there as soon as it fits. `partitions` are the
 * rules of the partitions the jobs name (absent: none in play).
 */
export function createPlanner(
  workers: readonly FreeWorker[],
  held: readonly PendingJob[] = [],
  partitions: ReadonlyMap<string, PartitionRules> = new Map(),
  adminReservations: readonly AdminReservation[] = [],
  /** false: Slurm's sched/builtin, nothing lands on a held worker; true: sched/backfill. */
  backfill = true,
): Planner {
  const free = new Map(workers.map((w) => [w.id, freeOf(w)]));
  const reservations = new Map<string, number>();
  const newReservations = new Map<string, number>();
  const holding = new Map<number, string>();
  /** Per reserved worker, seconds until its holder starts there (absent: unknown, so nothing backfills). */
  const plannedStart = new Map<string, number>();
  const plannedStarts = new Map<number, number>();
  /** Each worker's running jobs by when their time limits end them, sorted once per plan. */
  const endsInOrder = new Map<Free, RunningJob[]>();
  const adminByName = new Map(adminReservations.map((r) => [r.name, r]));
  const adminOn = new Map<string, AdminReservation[]>();
  for (const r of adminReservations)
    for (const node of r.nodes) adminOn.set(node, [...(adminOn.get(node) ?? []), r]);
  /** The admin reservation that stops `job` from starting on `worker` now (its own open one does not). */
  const adminBar = (job: PendingJob, worker: string): AdminReservation | null => {
    const on = adminOn.get(worker);
    if (!on) return null;
    const end = job.timeLimitS ?? Number.POSITIVE_INFINITY;
    for (const r of on) {
      if (r.name === job.reservation && windowOpen(r)) continue;
      if (windowOverlaps(r, 0, end)) return r;
    }
    return null;
  };
  /** A job may start on a worker another job holds: it ends by that job's planned start there (backfill). */
  const backfills = (job: PendingJob, worker: string): boolean => {
    const start = plannedStart.get(worker);
    return backfill && start !== undefined && job.timeLimitS != null && job.timeLimitS <= start;
  };
  const limitOf = (job: PendingJob) => job.timeLimitS ?? Number.POSITIVE_INFINITY;
  /**
   * A held worker may still take a backfilled job: its holder's planned start is known, or not known yet
   * (the running jobs were not read: a plan with them may backfill there).
   */
  const mayBackfill = (w: FreeWorker) =>
    backfill && reservations.has(w.id) && (plannedStart.has(w.id) || w.running === undefined);
  const placements: Placement[] = [];
  const placedJobs = new Set<number>();
  const tooLarge: number[] = [];
  const waits = new Map<number, Wait>();
  // Workers per partition, and whether a job shape may use a worker: computed once per pass.
  const members = new Map<string | null, Free[]>();
  const membersOf = (partition: string | null): Free[] => {
    let list = members.get(partition);
    if (!list) {
      list = [...free.values()].filter(
        (f) => partition === null || !f.worker.partitions || f.worker.partitions.has(partition),
      );
      members.set(partition, list);
    }
    return list;
  };

  const take = (job: PendingJob, need: Need, target: Free, partition: string | null) => {
    const worker = target.worker;
    const placement: Placement = need.exclusive
      ? {
          jobId: job.id,
          workerId: worker.id,
          cpus: worker.cpus,
          memoryMb: worker.memoryMb ?? 0,
          gpus: (worker.gpus ?? []).map((g) => g.index).sort((a, b) => a - b),
          gres: Object.fromEntries(Object.entries(worker.gres ?? {}).map(([n, g]) => [n, g.total])),
          partition,
        }
      : {
          jobId: job.id,
          workerId: worker.id,
          cpus: need.cpus,
          memoryMb: need.memoryMb,
          gpus: freeGpus(target, need.gpuType).slice(0, need.gpus),
          gres: { ...need.gres },
          partition,
        };
    target.cpus -= placement.cpus;
    target.memoryMb -= placement.memoryMb;
    for (const i of placement.gpus) target.gpus.delete(i);
    for (const [name, count] of Object.entries(placement.gres)) {
      target.gres.set(name, (target.gres.get(name) ?? 0) - count);
    }
    target.idle = false;
    const ending = {
      cpus: placement.cpus,
      memoryMb: placement.memoryMb,
      gpus: placement.gpus,
      gres: placement.gres,
      endsInSeconds: job.timeLimitS ?? null,
    };
    if (target.placedHere) target.placedHere.push(ending);
    else target.placedHere = [ending];
    endsInOrder.delete(target);
    placements.push(placement);
    placedJobs.add(job.id);
    waits.delete(job.id);
    const own = holding.get(job.id);
    if (own !== undefined) {
      reservations.delete(own);
      newReservations.delete(own);
      plannedStart.delete(own);
      plannedStarts.delete(job.id);
      holding.delete(job.id);
      freed++;
    }
  };

  /** The job's partitions that can start jobs, with the reasons of those that cannot. */
  const usablePartitions = (job: PendingJob): { usable: (string | null)[]; wait: Wait | null } => {
    if (!job.partitions) return { usable: [null], wait: null };
    const usable: string[] = [];
    let wait: Wait | null = null;
    for (const name of job.partitions) {
      const rules = partitions.get(name);
      if (!rules) {
        wait ??= { reason: 'PartitionDown', detail: `partition ${name} no longer exists` };
        continue;
      }
      if (rules.state === 'DOWN' || rules.state === 'INACTIVE') {
        wait ??= {
          reason: rules.state === 'DOWN' ? 'PartitionDown' : 'PartitionInactive',
          detail: `partition ${name} is ${rules.state}`,
        };
        continue;
      }
      if (rules.maxTimeS !== null && job.timeLimitS != null && job.timeLimitS > rules.maxTimeS) {
        wait ??= {
          reason: 'PartitionTimeLimit',
          detail: `time limit ${job.timeLimitS / 60} min is over partition ${name}'s MaxTime of ${rules.maxTimeS / 60} min`,
        };
        continue;
      }
      if (rules.maxCpusPerNode !== null && job.cpus > rules.maxCpusPerNode) {
        wait ??= {
          reason: 'PartitionNodeLimit',
          detail: `${job.cpus} CPUs is over partition ${name}'s MaxCPUsPerNode of ${rules.maxCpusPerNode}`,
        };
        continue;
      }
      usable.push(name);
    }
    return { usable, wait };
  };

  const better = (policy: PlacementPolicy, need: Need, a: Free, b: Free): boolean => {
    if (need.gpus === 0) {
      const aGpus = a.gpus.size > 0 ? 1 : 0;
      const bGpus = b.gpus.size > 0 ? 1 : 0;
      if (aGpus !== bGpus) return aGpus < bGpus;
    }
    if (a.cpus !== b.cpus) return policy === 'spread' ? a.cpus > b.cpus : a.cpus < b.cpus;
    if (a.memoryMb !== b.memoryMb)
      return policy === 'spread' ? a.memoryMb > b.memoryMb : a.memoryMb < b.memoryMb;
    return a.worker.id < b.worker.id;
  };

  interface StaticFit {
    eligible: { partition: string | null; free: Free }[];
    barred: Map<string, string>;
    sizeless: number;
    /**
     * The shortest time limit (Infinity: none; null: not yet) with which a job of this shape found no worker to
     * start on, or none left to reserve. Within a plan free resources only shrink and reservations only grow, and a longer
     * time limit only bars more (backfill, admin reservations), so the next job of the shape with a time limit
     * as long need not look again.
     */
    full: number | null;
    reservedOut: number | null;
    /** The admin reservation that kept the job that set `full` off a worker it fitted (null: none did). */
    blockedBy: AdminReservation | null;
    /** `freed` when full and reservedOut were set: a reservation given back since makes them stale. */
    seenAt: number;
  }
  /** Counts reservations given back (their job started): a worker may be free for others again. */
  let freed = 0;
  const shapes = new Map<string, StaticFit>();
  const matcherIds = new Map<(features: ReadonlySet<string>) => boolean, number>();
  const staticFit = (job: PendingJob, need: Need, usable: (string | null)[]): StaticFit => {
    let matcher = 0;
    if (job.featuresMatch) {
      matcher = matcherIds.get(job.featuresMatch) ?? matcherIds.size + 1;
      matcherIds.set(job.featuresMatch, matcher);
    }
    const key = [
      usable.join(','),
      matcher,
      job.nodelist?.join(',') ?? '',
      job.exclude?.join(',') ?? '',
      job.reservation ?? '',
      need.cpus,
      need.memoryMb,
      need.gpus,
      need.gpuType ?? '',
      JSON.stringify(need.gres),
      need.exclusive,
    ].join('|');
    const known = shapes.get(key);
    if (known) return known;
    const fit: StaticFit = {
      eligible: [],
      barred: new Map(),
      sizeless: 0,
      full: null,
      reservedOut: null,
      blockedBy: null,
      seenAt: 0,
    };
    const inside = job.reservation ? adminByName.get(job.reservation) : undefined;
    for (const partition of usable) {
      for (const f of membersOf(partition)) {
        const bar =
          inside && !inside.nodes.has(f.worker.id)
            ? `not in reservation ${inside.name}`
            : placementBar(job, f.worker, null);
        if (bar !== null) {
          fit.barred.set(f.worker.id, bar);
          continue;
        }
        fit.sizeless++;
        if (!fitsWhenEmpty(need, f.worker)) continue;
        fit.eligible.push({ partition, free: f });
      }
    }
    shapes.set(key, fit);
    return fit;
  };

  const consider = (job: PendingJob): void => {
    if (placedJobs.has(job.id)) return;
    const need = needOf(job);
    const own = holding.get(job.id);
    const { usable, wait: partitionWait } = usablePartitions(job);
    if (usable.length === 0) {
      waits.set(job.id, partitionWait ?? { reason: 'PartitionDown', detail: 'no partition can run it' });
      return;
    }
    const outside = job.reservation ? reservationWait(job) : null;
    if (outside !== null) {
      waits.set(job.id, outside);
      return;
    }
    // Workers it may ever use, per partition in its order (the same for every job of its shape); and the
    // first fit among those.
    const shape = staticFit(job, need, usable);
    if (shape.seenAt !== freed) {
      shape.full = null;
      shape.reservedOut = null;
      shape.seenAt = freed;
    }
    const limit = limitOf(job);
    const { eligible, barred, sizeless } = shape;
    const skip = shape.full !== null && limit >= shape.full && own === undefined;
    let blockedBy: AdminReservation | null = skip ? shape.blockedBy : null;
    for (const partition of skip ? [] : usable) {
      const policy = partition === null ? 'pack' : (partitions.get(partition)?.policy ?? 'pack');
      let best: Free | undefined;
      for (const candidate of eligible) {
        if (candidate.partition !== partition) continue;
        const f = candidate.free;
        if (reservations.has(f.worker.id) && f.worker.id !== own && !backfills(job, f.worker.id)) continue;
        if (!fitsNow(need, f)) continue;
        if (adminOn.size > 0) {
          const bar = adminBar(job, f.worker.id);
          if (bar !== null) {
            // Maintenance says more than another reservation: the node is being drained ahead of it.
            if (blockedBy === null || (!blockedBy.maint && bar.maint)) blockedBy = bar;
            continue;
          }
        }
        if (best === undefined || better(policy, need, f, best)) best = f;
      }
      if (best !== undefined) {
        take(job, need, best, partition);
        return;
      }
    }
    if (eligible.length === 0) {
      tooLarge.push(job.id);
      waits.set(job.id, neverFits(job, need, usable, barred, sizeless));
      return;
    }
    if (own === undefined) {
      if (shape.full === null || limit < shape.full) {
        shape.full = limit;
        shape.blockedBy = blockedBy;
      }
      if ((shape.reservedOut === null || limit < shape.reservedOut) && !reserve(job, need, eligible))
        shape.reservedOut = limit;
    }
    const holds = holding.get(job.id);
    waits.set(job.id, blockedBy ? adminWait(blockedBy) : waitingFor(job, need, eligible, holds));
  };

  /** Why a job that names an admin reservation cannot use it now (null: it can). */
  const reservationWait = (job: PendingJob): Wait | null => {
    const r = adminByName.get(job.reservation ?? '');
    if (!r) return { reason: 'Reservation', detail: `reservation ${job.reservation} does not exist` };
    if (!mayUse(r, job.owner ?? null, job.account ?? null)) {
      return { reason: 'Reservation', detail: `not permitted to use reservation ${r.name}` };
    }
    const w = nextWindow(r, 0);
    if (w.start > 0)
      return { reason: 'Reservation', detail: `reservation ${r.name} starts in ${Math.ceil(w.start)} s` };
    return null;
  };

  const adminWait = (r: AdminReservation): Wait => {
    const w = nextWindow(r, 0);
    const when = w.start <= 0 ? 'now' : `in ${Math.ceil(w.start)} s`;
    const nodes = [...r.nodes].sort().join(',');
    return r.maint
      ? {
          reason: 'ReqNodeNotAvail, Reserved for maintenance',
          detail: `${nodes} reserved for maintenance (${r.name}, ${when}); its time limit would run into it`,
        }
      : {
          reason: 'ReqNodeNotAvail',
          detail: `UnavailableNodes:${nodes} (reservation ${r.name}, ${when}); its time limit would run into it`,
        };
  };

  const neverFits = (
    job: PendingJob,
    need: Need,
    usable: (string | null)[],
    barred: Map<string, string>,
    sizeless: number,
  ): Wait => {
    const where = usable.filter((p) => p !== null).join(',');
    const inWhere = where ? ` in partition ${where}` : '';
    if (job.nodelist && job.nodelist.length > 0 && !job.nodelist.some((n) => free.has(n))) {
      return { reason: 'ReqNodeNotAvail', detail: `node ${job.nodelist.join(',')} is not up${inWhere}` };
    }
    if (sizeless === 0) {
      if (barred.size === 0) return { reason: 'Resources', detail: `no live node${inWhere}` };
      if (job.featuresMatch && [...barred.values()].every((b) => b.startsWith('features'))) {
        return { reason: 'BadConstraints', detail: `no live node${inWhere} has features ${job.constraint}` };
      }
      return { reason: 'ReqNodeNotAvail', detail: `no live node${inWhere} it may use` };
    }
    let largest: FreeWorker | undefined;
    for (const p of usable)
      for (const f of membersOf(p)) {
        if (placementBar(job, f.worker, null) !== null) continue;
        if (!largest || f.worker.cpus > largest.cpus) largest = f.worker;
      }
    const short = largest ? capacityShortfalls(need, largest) : [];
    return {
      reason: 'Resources',
      detail: `${TOO_LARGE_PREFIX}${short[0] ?? 'none fits'}${largest ? ` (largest live node${inWhere}: ${largest.id})` : ''}`,
    };
  };

  const waitingFor = (
    job: PendingJob,
    need: Need,
    eligible: { free: Free }[],
    holds: string | undefined,
  ): Wait => {
    if (holds !== undefined) {
      const f = free.get(holds);
      const short = f ? freeShortfalls(need, f) : [];
      return {
        reason: 'Resources',
        detail: `reserved ${holds} for this job; ${short.join(', ') || 'freeing'}`,
      };
    }
    const parts: string[] = [];
    let reservedOnly = true;
    for (const { free: f } of eligible.slice(0, 3)) {
      const holder = reservations.get(f.worker.id);
      if (holder !== undefined && holder !== job.id) parts.push(`${f.worker.id} reserved for job ${holder}`);
      else {
        reservedOnly = false;
        parts.push(`${f.worker.id} has ${freeShortfalls(need, f).join(', ')}`);
      }
    }
    if (eligible.length > 3) parts.push(`${eligible.length - 3} more`);
    return {
      reason:
        reservedOnly && eligible.every((e) => reservations.has(e.free.worker.id)) ? 'Priority' : 'Resources',
      detail: `${describeNeed(need)}; ${parts.join('; ')}`,
    };
  };

  const reserve = (job: PendingJob, need: Need, eligible: { free: Free }[]): boolean => {
    let hold: Free | undefined;
    let holdStart = Number.POSITIVE_INFINITY;
    for (const { free: f } of eligible) {
      if (reservations.has(f.worker.id)) continue;
      if (adminOn.size > 0 && adminBar(job, f.worker.id) !== null) continue;
      const start = startsIn(need, f, endsInOrder);
      if (
        hold === undefined ||
        start < holdStart ||
        (start === holdStart &&
          (f.cpus > hold.cpus || (f.cpus === hold.cpus && f.worker.id < hold.worker.id)))
      ) {
        hold = f;
        holdStart = start;
      }
    }
    if (hold === undefined) return false;
    reservations.set(hold.worker.id, job.id);
    newReservations.set(hold.worker.id, job.id);
    holding.set(job.id, hold.worker.id);
    plan(job.id, hold, holdStart);
    return true;
  };

  /** Records when a holder starts on its worker, when the running jobs' time limits say so. */
  const plan = (jobId: number, f: Free, start: number) => {
    if (!f.worker.running || !Number.isFinite(start)) return;
    plannedStart.set(f.worker.id, start);
    plannedStarts.set(jobId, start);
  };

  for (const job of held) {
    const worker = job.reservedWorker ? free.get(job.reservedWorker) : undefined;
    if (!worker || reservations.has(worker.worker.id) || holding.has(job.id)) continue;
    if (capacityShortfalls(needOf(job), worker.worker).length > 0) continue;
    if (placementBar(job, worker.worker, null) !== null) continue;
    if (adminOn.size > 0 && adminBar(job, worker.worker.id) !== null) continue;
    if (job.reservation && reservationWait(job) !== null) continue;
    const { usable } = usablePartitions(job);
    const partition = usable.find(
      (p) => p === null || !worker.worker.partitions || worker.worker.partitions.has(p),
    );
    if (partition === undefined) continue;
    reservations.set(worker.worker.id, job.id);
    holding.set(job.id, worker.worker.id);
    if (fitsNow(needOf(job), worker)) take(job, needOf(job), worker, partition);
    else {
      plan(job.id, worker, startsIn(needOf(job), worker, endsInOrder));
      waits.set(job.id, waitingFor(job, needOf(job), [], worker.worker.id));
    }
  }

  return {
    consider,
    get exhausted() {
      return reservations.size >= free.size && !workers.some(mayBackfill);
    },
    get holdsAll() {
      return reservations.size >= free.size;
    },
    get largestUseful() {
      let size = 0;
      for (const w of workers) if (!reservations.has(w.id) || mayBackfill(w)) size = Math.max(size, w.cpus);
      return size;
    },
    get placed() {
      return placements.length;
    },
    result() {
      return { placements, reservations, tooLarge, newReservations, waits, plannedStarts };
    },
  };
}

export interface NodeVerdict {
  node: string;
  fits: boolean;
  why: string[];
}

/**
 * Per worker, whether `job` could start there now and why not (HyperQueue's `explain`, Nomad's placement
 * failures): partition, node list, features, sizes, what is free, and reservations held by other jobs.
 */
export function explainPlacement(
  job: PendingJob,
  workers: readonly FreeWorker[],
  partitions: ReadonlyMap<string, PartitionRules>,
  reservations: ReadonlyMap<string, number>,
): NodeVerdict[] {
  const need = needOf(job);
  return workers.map((worker) => {
    const why: string[] = [];
    const named = job.partitions ?? null;
    if (named && worker.partitions && !named.some((p) => worker.partitions?.has(p))) {
      why.push(`not in partition ${named.join(',')} (in ${[...worker.partitions].join(',') || 'none'})`);
    }
    for (const p of named ?? []) {
      const rules = partitions.get(p);
      if (rules && (rules.state === 'DOWN' || rules.state === 'INACTIVE') && worker.partitions?.has(p)) {
        why.push(`partition ${p} is ${rules.state}`);
      }
    }
    const bar = placementBar(job, worker, null);
    if (bar !== null) why.push(bar);
    const never = capacityShortfalls(need, worker);
    for (const short of never) why.push(`never fits: ${short}`);
    if (why.length === 0) {
      const holder = reservations.get(worker.id);
      if (holder !== undefined && holder !== job.id) why.push(`reserved for job ${holder}`);
      why.push(...freeShortfalls(need, freeOf(worker)));
    }
    return { node: worker.id, fits: why.length === 0, why };
  });
}

export function describeNeed(need: Need): string {
  if (need.exclusive) return 'needs a whole node';
  const parts = [`${need.cpus} CPU${need.cpus === 1 ? '' : 's'}`];
  if (need.memoryMb > 0) parts.push(`${need.memoryMb} MB`);
  if (need.gpus > 0) parts.push(`${need.gpus} ${gpuWords(need.gpuType)}`);
  for (const [name, count] of Object.entries(need.gres)) parts.push(`${count} ${name}`);
  return `needs ${parts.join(', ')}`;
}

/**
 * Seconds until `need` fits on a worker if nothing new lands on it, by the time limits of its running jobs.
 * Infinity when that depends on a job without a time limit, or when the running jobs are unknown.
 */
function startsIn(need: Need, f: Free, endsInOrder: Map<Free, RunningJob[]>): number {
  if (fitsNow(need, f)) return 0;
  const running = f.worker.running;
  if (!running) return Number.POSITIVE_INFINITY;
  let ends = endsInOrder.get(f);
  if (!ends) {
    ends = [...running, ...(f.placedHere ?? [])].sort(
      (a, b) => (a.endsInSeconds ?? Number.POSITIVE_INFINITY) - (b.endsInSeconds ?? Number.POSITIVE_INFINITY),
    );
    endsInOrder.set(f, ends);
  }
  const later: Free = { ...f, gpus: new Set(f.gpus), gres: new Map(f.gres) };
  let left = ends.length;
  for (const job of ends) {
    if (job.endsInSeconds === null) break;
    later.cpus += job.cpus;
    later.memoryMb += job.memoryMb ?? 0;
    for (const i of job.gpus ?? []) later.gpus.add(i);
    for (const [name, count] of Object.entries(job.gres ?? {}))
      later.gres.set(name, (later.gres.get(name) ?? 0) + count);
    later.idle = --left === 0;
    if (fitsNow(need, later)) return Math.max(0, job.endsInSeconds);
  }
  return Number.POSITIVE_INFINITY;
}

/** GPUs as bits of a bigint (workers.gpus_used, resource_allocations.gpu_mask): the indexes of the bits set. */
export function maskIndexes(mask: string | number | bigint): Set<number> {
  const out = new Set<number>();
  let bits = BigInt(mask);
  for (let i = 0; bits > 0n; i++, bits >>= 1n) if (bits & 1n) out.add(i);
  return out;
}
export const indexesMask = (indexes: readonly number[]): string =>
  indexes.reduce((mask, i) => mask | (1n << BigInt(i)), 0n).toString();

/** One plan over a whole queue (see createPlanner). */
export function placeJobs(
  queue: readonly PendingJob[],
  workers: readonly FreeWorker[],
  held: readonly PendingJob[] = queue.filter((j) => j.reservedWorker),
  partitions: ReadonlyMap<string, PartitionRules> = new Map(),
  adminReservations: readonly AdminReservation[] = [],
  backfill = true,
): PlacementResult {
  const planner = createPlanner(workers, held, partitions, adminReservations, backfill);
  for (const job of queue) {
    if (planner.exhausted) break;
    planner.consider(job);
  }
  return planner.result();
}
