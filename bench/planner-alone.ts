/**
 * The placement planner alone, no database: `npx tsx bench/planner-alone.ts`. The mixed cluster and queue of
 * scenario 2m (bench/mixed.ts: 1,000 nodes, 100,000 jobs) as the scheduler hands them to the planner, then
 * passes as runSchedulingPass makes them: a planner over the workers' current state and the jobs holding
 * reservations, `consider` over the queue in order until 1,000 placements, every worker reserved or 10 pages
 * of 1,000, a second plan when the pass reserved a worker anew (with the running jobs' time limits), the
 * placements applied. Until a pass places nothing. Prints the time in the planner per pass and placements/s.
 *
 * PLANNER_MODULE=/path/to/placement.ts times another version of functions/domain/placement.ts (same exports)
 * on the same input, for a before/after of a planner change. PLANNER_JOBS (100000) and PLANNER_ROUNDS (3).
 */
import { loadavg } from 'node:os';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { evaluateConstraint } from '../functions/domain/constraint.ts';
import { parseRequest } from '../functions/domain/job-resources.ts';
import type * as Placement from '../functions/domain/placement.ts';
import { parseTimeLimit } from '../functions/domain/time-limit.ts';
import { round, stats } from './lib.ts';
import { mixedJobs, mixedWorkers } from './mixed.ts';

const modulePath = process.env.PLANNER_MODULE
  ? pathToFileURL(resolve(process.env.PLANNER_MODULE)).href
  : '../functions/domain/placement.ts';
const planner = (await import(modulePath)) as typeof Placement;
const JOBS = Number(process.env.PLANNER_JOBS ?? 100_000);
const ROUNDS = Number(process.env.PLANNER_ROUNDS ?? 3);
const BATCH = 1000;
const PAGES = 10;

const rules = new Map<string, Placement.PartitionRules>(
  ['default', 'batch', 'gpu'].map((name) => [
    name,
    { state: 'UP', policy: 'pack', maxTimeS: null, maxCpusPerNode: null },
  ]),
);

// The queue as jobReader makes it from the rows submitJobsBatch stores.
const queue: Placement.PendingJob[] = mixedJobs(JOBS).map((input, i) => {
  const timeLimitS = input.time_limit === undefined ? null : parseTimeLimit(input.time_limit);
  const request = parseRequest({ ...input, time_limit_s: timeLimitS });
  const constraint = request.constraint;
  return {
    id: i + 1,
    cpus: input.cpus,
    memoryMb: request.memoryMb ?? (request.memoryPerCpu === null ? 0 : request.memoryPerCpu * input.cpus),
    gpus: request.gpus,
    gpuType: request.gpuType,
    gres: request.gres,
    exclusive: request.exclusive,
    partitions: input.partition ? input.partition.split(',') : ['default'],
    featuresMatch: constraint ? (f: ReadonlySet<string>) => evaluateConstraint(constraint, f) : null,
    constraint: request.constraintText,
    nodelist: request.nodelist,
    exclude: request.exclude,
    timeLimitS,
    reservedWorker: null,
  };
});

interface State {
  allocatedCpus: number;
  allocatedMemoryMb: number;
  gpusUsed: Set<number>;
  gres: Map<string, number>;
  running: Placement.RunningJob[];
}

const hash = (text: string) => {
  let h = 0;
  for (let i = 0; i < text.length; i++) h = (h * 33 + text.charCodeAt(i)) % 1_000_003;
  return h;
};

function simulate() {
  const shapes = mixedWorkers();
  const state = new Map<string, State>(
    shapes.map((w) => [
      w.worker_id,
      { allocatedCpus: 0, allocatedMemoryMb: 0, gpusUsed: new Set(), gres: new Map(), running: [] },
    ]),
  );
  const workers = (withRunning: boolean): Placement.FreeWorker[] =>
    shapes.map((w) => {
      const s = state.get(w.worker_id) as State;
      return {
        id: w.worker_id,
        cpus: w.cpus,
        allocatedCpus: s.allocatedCpus,
        memoryMb: w.memory_mb ?? 0,
        allocatedMemoryMb: s.allocatedMemoryMb,
        gpus: w.gpus ?? [],
        gpusUsed: new Set(s.gpusUsed),
        gres: Object.fromEntries(
          Object.entries(w.gres ?? {}).map(([name, total]) => [
            name,
            { total, allocated: s.gres.get(name) ?? 0 },
          ]),
        ),
        features: new Set(w.features ?? []),
        partitions: new Set(w.partitions && w.partitions.length > 0 ? w.partitions : ['default']),
        ...(withRunning ? { running: s.running } : {}),
      };
    });
  const pending = queue.map((j) => ({ ...j }));
  const byId = new Map(pending.map((j) => [j.id, j]));
  const passMs: number[] = [];
  let placed = 0;
  let checksum = 0;
  for (;;) {
    const t = performance.now();
    const held = pending.filter((j) => j.reservedWorker);
    let plan = planner.createPlanner(workers(false), held, rules);
    const considered: Placement.PendingJob[] = [];
    // Pages as the pass reads them: up to 1,000 jobs no larger than the largest worker still unreserved.
    let k = 0;
    for (let page = 0; page < PAGES && !plan.exhausted && plan.placed < BATCH; page++) {
      const largest = plan.largestUseful;
      const rows: Placement.PendingJob[] = [];
      for (; k < pending.length && rows.length < BATCH; k++) {
        const job = pending[k] as Placement.PendingJob;
        if (job.cpus <= largest) rows.push(job);
      }
      for (const job of rows) {
        if (plan.exhausted || plan.placed >= BATCH) break;
        plan.consider(job);
        considered.push(job);
      }
      if (rows.length < BATCH) break;
    }
    if (plan.result().newReservations.size > 0) {
      plan = planner.createPlanner(workers(true), held, rules);
      for (const job of considered) {
        if (plan.exhausted || plan.placed >= BATCH) break;
        plan.consider(job);
      }
    }
    const { placements, reservations } = plan.result();
    passMs.push(performance.now() - t);
    for (const p of placements) {
      // Which job went where, and with which GPUs: equal sums for equal plans (a quick check of a change).
      checksum = (checksum * 31 + p.jobId * 7919 + hash(`${p.workerId}:${p.gpus.join(',')}`)) % 2_147_483_647;
      const s = state.get(p.workerId) as State;
      s.allocatedCpus += p.cpus;
      s.allocatedMemoryMb += p.memoryMb;
      for (const g of p.gpus) s.gpusUsed.add(g);
      for (const [name, n] of Object.entries(p.gres)) s.gres.set(name, (s.gres.get(name) ?? 0) + n);
      const job = byId.get(p.jobId) as Placement.PendingJob;
      s.running.push({
        cpus: p.cpus,
        memoryMb: p.memoryMb,
        gpus: p.gpus,
        gres: p.gres,
        endsInSeconds: job.timeLimitS ?? null,
      });
      byId.delete(p.jobId);
    }
    const holders = new Map([...reservations].map(([w, j]) => [j, w]));
    for (const job of byId.values()) job.reservedWorker = holders.get(job.id) ?? null;
    const left = pending.filter((j) => byId.has(j.id));
    pending.length = 0;
    pending.push(...left);
    placed += placements.length;
    if (placements.length === 0) break;
  }
  return { placed, passMs, seconds: passMs.reduce((a, b) => a + b, 0) / 1000, checksum };
}

console.log(
  `planner alone: ${process.env.PLANNER_MODULE ?? 'functions/domain/placement.ts'}, ${JOBS} jobs, load average ${loadavg()
    .map((x) => round(x))
    .join(' ')}`,
);
const out = [];
for (let r = 0; r < ROUNDS; r++) {
  const s = simulate();
  out.push(s);
  console.log(
    `round ${r + 1}: ${s.placed} placed in ${s.passMs.length} passes, ${round(s.seconds, 2)} s in the planner: ${round(s.placed / s.seconds, 0)} placements/s; pass median ${round(stats(s.passMs).median)} ms, p99 ${round(stats(s.passMs).p99)} ms; placements checksum ${s.checksum}`,
  );
}
console.log(
  `load average ${loadavg()
    .map((x) => round(x))
    .join(' ')}`,
);
