/**
 * Where pending jobs go: a pure function, so the rule can be tested on its own. The scheduler runs it on
 * rows it holds locked, and commits the result in one statement.
 *
 * The rule:
 * - Jobs are taken in queue order (priority, then submit time, then id).
 * - A job runs on ONE worker with enough free CPUs: best fit (the worker left with the fewest free CPUs),
 *   so large holes stay open for large jobs. Free CPUs summed across workers mean nothing.
 * - A job that fits on no worker now, but would fit on an empty one, reserves the worker where it will
 *   fit first (the most free CPUs). Later jobs may pass it only on other workers: they cannot delay it,
 *   because nothing new lands on the reserved worker, whose CPUs only free up.
 * - A job larger than every live worker reserves nothing: it waits for a bigger node to join.
 */
export interface PendingJob {
  id: number;
  cpus: number;
}

export interface FreeWorker {
  id: string;
  cpus: number;
  allocatedCpus: number;
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
}

export function placeJobs(queue: readonly PendingJob[], workers: readonly FreeWorker[]): PlacementResult {
  const free = new Map(workers.map((w) => [w.id, w.cpus - w.allocatedCpus]));
  const sizes = new Map(workers.map((w) => [w.id, w.cpus]));
  const reservations = new Map<string, number>();
  const placements: Placement[] = [];
  const tooLarge: number[] = [];
  const largest = Math.max(0, ...workers.map((w) => w.cpus));

  for (const job of queue) {
    if (job.cpus > largest) {
      tooLarge.push(job.id);
      continue;
    }
    let best: string | undefined;
    let bestLeft = Number.POSITIVE_INFINITY;
    for (const [id, cpus] of free) {
      if (reservations.has(id) || cpus < job.cpus) continue;
      const left = cpus - job.cpus;
      if (left < bestLeft || (left === bestLeft && best !== undefined && id < best)) {
        best = id;
        bestLeft = left;
      }
    }
    if (best !== undefined) {
      free.set(best, bestLeft);
      placements.push({ jobId: job.id, workerId: best, cpus: job.cpus });
      continue;
    }
    let hold: string | undefined;
    let holdFree = -1;
    for (const [id, cpus] of free) {
      if (reservations.has(id) || (sizes.get(id) ?? 0) < job.cpus) continue;
      if (cpus > holdFree || (cpus === holdFree && hold !== undefined && id < hold)) {
        hold = id;
        holdFree = cpus;
      }
    }
    if (hold !== undefined) reservations.set(hold, job.id);
    if (reservations.size === free.size) break; // every worker is held: nothing later can be placed
  }
  return { placements, reservations, tooLarge };
}
