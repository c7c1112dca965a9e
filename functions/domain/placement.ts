/**
 * Where pending jobs go: pure functions, so the rule can be tested on its own. The scheduler feeds them the
 * rows it read (workers locked, jobs not) and commits the result in one statement.
 *
 * The rule:
 * - Jobs are taken in queue order (priority, then submit time, then id).
 * - A job runs on ONE worker with enough free CPUs: best fit (the worker left with the fewest free CPUs),
 *   so large holes stay open for large jobs. Free CPUs summed across workers mean nothing.
 * - A job that fits on no worker now, but would fit on an empty one, reserves a worker: the one where it
 *   can start first by the time limits of the jobs running there (a job without a time limit may run
 *   forever), then the one with the most free CPUs. The reservation is kept (on the job) until the job
 *   starts or the worker leaves: nothing else lands on a reserved worker, whose CPUs only free up, so later
 *   jobs cannot delay it.
 * - A job larger than every live worker reserves nothing: it waits for a bigger node to join.
 */
export interface PendingJob {
  id: number;
  cpus: number;
  /** The worker this job holds from an earlier pass (null: none). */
  reservedWorker?: string | null;
}

/** A job running on a worker, as far as its reservation matters. */
export interface RunningJob {
  cpus: number;
  /** Seconds until its time limit ends it; null: it has no time limit. */
  endsInSeconds: number | null;
}

export interface FreeWorker {
  id: string;
  cpus: number;
  allocatedCpus: number;
  /** Its running jobs; unknown (undefined) when the choice of a reservation does not need them. */
  running?: readonly RunningJob[];
}

export interface Placement {
  jobId: number;
  workerId: string;
  cpus: number;
}

export interface PlacementResult {
  placements: Placement[];
  /** Workers held for a blocked job, with the job that holds each. */
  reservations: Map<string, number>;
  /** Jobs that fit on no live worker even when it is empty. */
  tooLarge: number[];
  /** Reservations made by this plan (not held from an earlier pass), with their job. */
  newReservations: Map<string, number>;
}

/** Placement decisions over a queue read in pages: `consider` each job in queue order. */
export interface Planner {
  consider(job: PendingJob): void;
  /** Nothing later in the queue can be placed or reserve anything: every worker is held. */
  readonly exhausted: boolean;
  /** The largest job a later job may be and still be placed or reserve a worker. */
  readonly largestUseful: number;
  readonly placed: number;
  result(): PlacementResult;
}

/**
 * `held` are the jobs holding a reservation from an earlier pass (in queue order): each keeps its worker
 * while that worker is live and large enough, and starts there as soon as it fits.
 */
export function createPlanner(workers: readonly FreeWorker[], held: readonly PendingJob[] = []): Planner {
  const free = new Map(workers.map((w) => [w.id, w.cpus - w.allocatedCpus]));
  const byId = new Map(workers.map((w) => [w.id, w]));
  const schedules = new Map(workers.map((w) => [w.id, freeingSchedule(w)]));
  const reservations = new Map<string, number>();
  const newReservations = new Map<string, number>();
  const holding = new Map<number, string>();
  const placements: Placement[] = [];
  const placedJobs = new Set<number>();
  const tooLarge: number[] = [];
  const largest = Math.max(0, ...workers.map((w) => w.cpus));

  const place = (job: PendingJob, workerId: string) => {
    free.set(workerId, (free.get(workerId) ?? 0) - job.cpus);
    placements.push({ jobId: job.id, workerId, cpus: job.cpus });
    placedJobs.add(job.id);
    const own = holding.get(job.id);
    if (own !== undefined) {
      reservations.delete(own);
      newReservations.delete(own);
      holding.delete(job.id);
    }
  };

  for (const job of held) {
    const worker = job.reservedWorker ? byId.get(job.reservedWorker) : undefined;
    if (!worker || worker.cpus < job.cpus || reservations.has(worker.id) || holding.has(job.id)) continue;
    reservations.set(worker.id, job.id);
    holding.set(job.id, worker.id);
    if ((free.get(worker.id) ?? 0) >= job.cpus) place(job, worker.id);
  }

  const bestFit = (cpus: number, own: string | undefined): string | undefined => {
    let best: string | undefined;
    let bestLeft = Number.POSITIVE_INFINITY;
    for (const [id, available] of free) {
      if ((reservations.has(id) && id !== own) || available < cpus) continue;
      const left = available - cpus;
      if (left < bestLeft || (left === bestLeft && best !== undefined && id < best)) {
        best = id;
        bestLeft = left;
      }
    }
    return best;
  };

  const reserve = (job: PendingJob) => {
    let hold: string | undefined;
    let holdStart = Number.POSITIVE_INFINITY;
    let holdFree = -1;
    for (const [id, available] of free) {
      const worker = byId.get(id);
      if (!worker || reservations.has(id) || worker.cpus < job.cpus) continue;
      const start = startsIn(schedules.get(id), available, job.cpus);
      if (
        hold === undefined ||
        start < holdStart ||
        (start === holdStart && (available > holdFree || (available === holdFree && id < hold)))
      ) {
        hold = id;
        holdStart = start;
        holdFree = available;
      }
    }
    if (hold === undefined) return;
    reservations.set(hold, job.id);
    newReservations.set(hold, job.id);
    holding.set(job.id, hold);
  };

  return {
    consider(job) {
      if (placedJobs.has(job.id)) return;
      if (job.cpus > largest) {
        tooLarge.push(job.id);
        return;
      }
      const own = holding.get(job.id);
      const target = bestFit(job.cpus, own);
      if (target !== undefined) {
        place(job, target);
        return;
      }
      if (own === undefined) reserve(job);
    },
    get exhausted() {
      return reservations.size >= free.size;
    },
    get largestUseful() {
      let size = 0;
      for (const w of workers) if (!reservations.has(w.id)) size = Math.max(size, w.cpus);
      return size;
    },
    get placed() {
      return placements.length;
    },
    result() {
      return { placements, reservations, tooLarge, newReservations };
    },
  };
}

/**
 * For each worker, when its running jobs free their CPUs at the latest: their time limits in order, with the
 * CPUs freed by then. Stops at the first job without a time limit (what follows it is never sure). Null
 * when the running jobs are unknown.
 */
function freeingSchedule(worker: FreeWorker): { at: number; freed: number }[] | null {
  if (!worker.running) return null;
  const ends = [...worker.running].sort(
    (a, b) => (a.endsInSeconds ?? Number.POSITIVE_INFINITY) - (b.endsInSeconds ?? Number.POSITIVE_INFINITY),
  );
  const schedule: { at: number; freed: number }[] = [];
  let freed = 0;
  for (const job of ends) {
    if (job.endsInSeconds === null) break;
    freed += job.cpus;
    schedule.push({ at: Math.max(0, job.endsInSeconds), freed });
  }
  return schedule;
}

/**
 * Seconds until `cpus` CPUs are free on a worker with `available` free now, if nothing new lands on it.
 * Infinity when that depends on a job without a time limit, or when the running jobs are unknown.
 */
function startsIn(
  schedule: { at: number; freed: number }[] | null | undefined,
  available: number,
  cpus: number,
): number {
  if (available >= cpus) return 0;
  for (const step of schedule ?? []) if (available + step.freed >= cpus) return step.at;
  return Number.POSITIVE_INFINITY;
}

/** One plan over a whole queue (see createPlanner). */
export function placeJobs(
  queue: readonly PendingJob[],
  workers: readonly FreeWorker[],
  held: readonly PendingJob[] = queue.filter((j) => j.reservedWorker),
): PlacementResult {
  const planner = createPlanner(workers, held);
  for (const job of queue) {
    if (planner.exhausted) break;
    planner.consider(job);
  }
  return planner.result();
}
