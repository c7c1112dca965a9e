import { describe, expect, it } from 'vitest';
import {
  type AdminReservation,
  type FreeWorker,
  nextWindow,
  type PendingJob,
  placeJobs,
  type RunningJob,
  windowOverlaps,
} from '../../functions/domain/placement.ts';
import { configFromEnv, parseNodeEnv } from '../../functions/node/env.ts';
import { configFromWorkerEnv, parseWorkerEnv } from '../../functions/worker-env.ts';

const placedOn = (plan: ReturnType<typeof placeJobs>) =>
  Object.fromEntries(plan.placements.map((p) => [p.jobId, p.workerId]));

describe('backfill by time limits', () => {
  // w: 8 CPUs, a 6-CPU job running there ends in an hour. The 8-CPU top job can start there in 3600 s.
  const w: FreeWorker = {
    id: 'w',
    cpus: 8,
    allocatedCpus: 6,
    running: [{ cpus: 6, endsInSeconds: 3600 }],
  };
  const top: PendingJob = { id: 1, cpus: 8, timeLimitS: 7200 };

  it('plans the top job at the end of the running job, and starts a short job that ends before then', () => {
    const plan = placeJobs(
      [top, { id: 2, cpus: 2, timeLimitS: 1800 }, { id: 3, cpus: 2, timeLimitS: 3600 }],
      [w],
    );
    expect(plan.reservations.get('w')).toBe(1);
    expect(plan.plannedStarts.get(1)).toBe(3600);
    // 1800 s ends before 3600; the second fits too (ending exactly at the planned start delays nothing).
    expect(placedOn(plan)).toEqual({ 2: 'w' });
    expect(plan.waits.get(3)?.reason).toBe('Priority');
  });

  it('never starts a job that would still run at the planned start, nor one without a time limit', () => {
    const plan = placeJobs(
      [top, { id: 2, cpus: 1, timeLimitS: 3601 }, { id: 3, cpus: 1 }, { id: 4, cpus: 1, timeLimitS: 3600 }],
      [w],
    );
    expect(placedOn(plan)).toEqual({ 4: 'w' });
    expect(plan.waits.get(2)?.reason).toBe('Priority');
    expect(plan.waits.get(3)?.reason).toBe('Priority');
  });

  it('a hold from an earlier pass backfills the same way; without the running jobs known nothing lands', () => {
    const held = { ...top, reservedWorker: 'w' };
    const short = { id: 2, cpus: 2, timeLimitS: 600 };
    expect(placedOn(placeJobs([held, short], [w]))).toEqual({ 2: 'w' });
    const unknown = placeJobs([held, short], [{ ...w, running: undefined }]);
    expect(placedOn(unknown)).toEqual({});
    expect(unknown.plannedStarts.size).toBe(0);
  });

  it('a running job without a time limit leaves the planned start unknown: nothing backfills', () => {
    const endless: FreeWorker = { ...w, running: [{ cpus: 6, endsInSeconds: null }] };
    const plan = placeJobs([top, { id: 2, cpus: 1, timeLimitS: 60 }], [endless]);
    expect(plan.reservations.get('w')).toBe(1);
    expect(plan.plannedStarts.has(1)).toBe(false);
    expect(placedOn(plan)).toEqual({});
  });

  it('sched/builtin (backfill off) keeps the held worker empty', () => {
    const plan = placeJobs([top, { id: 2, cpus: 2, timeLimitS: 60 }], [w], undefined, undefined, [], false);
    expect(placedOn(plan)).toEqual({});
  });

  it('jobs placed earlier in the same plan count for a later hold: its planned start waits for them', () => {
    // An 8-CPU worker, empty: job 1 (4 CPUs, an hour) starts; job 2 (8 CPUs) holds it until job 1 ends.
    const plan = placeJobs(
      [
        { id: 1, cpus: 4, timeLimitS: 3600 },
        { id: 2, cpus: 8, timeLimitS: 60 },
      ],
      [{ id: 'e', cpus: 8, allocatedCpus: 0, running: [] }],
    );
    expect(placedOn(plan)).toEqual({ 1: 'e' });
    expect(plan.plannedStarts.get(2)).toBe(3600);
  });
});

/**
 * A cluster simulated minute by minute through the planner, jobs running exactly their time limits: 4 nodes
 * of 8 CPUs each run a 2-CPU job for 100 more minutes; queued in priority order: 4 whole-node jobs (60 min),
 * then 96 one-CPU jobs (20 min). Without backfill the whole-node jobs hold every node idle at 6 of 8 CPUs
 * for 100 minutes; with it the small jobs fill them, and the whole-node jobs start no later.
 */
function simulate(backfill: boolean) {
  interface Run extends RunningJob {
    id: number;
    node: string;
    end: number;
  }
  const nodes = ['n1', 'n2', 'n3', 'n4'];
  let running: Run[] = nodes.map((node, i) => ({
    id: 1000 + i,
    node,
    cpus: 2,
    endsInSeconds: null,
    end: 100,
  }));
  const queue: PendingJob[] = [
    ...nodes.map((_, i) => ({ id: i + 1, cpus: 8, timeLimitS: 60 })),
    ...Array.from({ length: 96 }, (_, i) => ({ id: 100 + i, cpus: 1, timeLimitS: 20 })),
  ];
  const started = new Map<number, number>();
  const holds = new Map<number, string>();
  let busy = 0;
  let t = 0;
  for (; running.length > 0 || started.size < queue.length; t++) {
    running = running.filter((r) => r.end > t);
    const workers: FreeWorker[] = nodes.map((id) => {
      const here = running.filter((r) => r.node === id);
      return {
        id,
        cpus: 8,
        allocatedCpus: here.reduce((n, r) => n + r.cpus, 0),
        running: here.map((r) => ({ cpus: r.cpus, endsInSeconds: r.end - t })),
      };
    });
    const waiting = queue
      .filter((j) => !started.has(j.id))
      .map((j) => ({ ...j, reservedWorker: holds.get(j.id) ?? null }));
    const plan = placeJobs(waiting, workers, undefined, undefined, [], backfill);
    holds.clear();
    for (const [worker, job] of plan.reservations) holds.set(job, worker);
    for (const p of plan.placements) {
      const job = queue.find((j) => j.id === p.jobId) as PendingJob;
      started.set(job.id, t);
      running.push({
        id: job.id,
        node: p.workerId,
        cpus: p.cpus,
        endsInSeconds: null,
        end: t + (job.timeLimitS ?? 0),
      });
    }
    busy += running.reduce((n, r) => n + r.cpus, 0);
  }
  const makespan = t - 1;
  return {
    utilisation: busy / (nodes.length * 8 * makespan),
    makespan,
    wholeNodeStarts: [1, 2, 3, 4].map((id) => started.get(id)),
  };
}

describe('utilisation with and without backfill', () => {
  it('FIFO leaves over 30 % of the cluster idle; backfill fills it without delaying the top jobs', () => {
    const fifo = simulate(false);
    const withBackfill = simulate(true);
    console.log(
      `utilisation until the last job ends: FIFO (sched/builtin) ${(fifo.utilisation * 100).toFixed(1)} % over ${fifo.makespan} min, ` +
        `backfill ${(withBackfill.utilisation * 100).toFixed(1)} % over ${withBackfill.makespan} min`,
    );
    expect(1 - fifo.utilisation).toBeGreaterThanOrEqual(0.3);
    expect(withBackfill.utilisation).toBeGreaterThan(0.85);
    // The whole-node jobs start the minute the 2-CPU jobs end, either way: backfill delayed none of them.
    expect(fifo.wholeNodeStarts).toEqual([100, 100, 100, 100]);
    expect(withBackfill.wholeNodeStarts).toEqual([100, 100, 100, 100]);
  });
});

describe('CONDUCTOR_SCHEDULER_TYPE (Node and Workers)', () => {
  const workerBindings = {
    DATABASE_URL: 'postgres://db.example/conductor',
    UPSTASH_REDIS_REST_URL: 'https://redis.example',
    UPSTASH_REDIS_REST_TOKEN: 'token',
  };
  const both = (env: Record<string, string>) => [
    configFromEnv(parseNodeEnv(env)).schedulerType,
    configFromWorkerEnv(parseWorkerEnv({ ...workerBindings, ...env })).schedulerType,
  ];

  it('defaults to sched/backfill and takes sched/builtin (any case); anything else is refused by name', () => {
    expect(both({})).toEqual(['sched/backfill', 'sched/backfill']);
    expect(both({ CONDUCTOR_SCHEDULER_TYPE: 'sched/builtin' })).toEqual(['sched/builtin', 'sched/builtin']);
    expect(both({ CONDUCTOR_SCHEDULER_TYPE: 'SCHED/BACKFILL' })).toEqual([
      'sched/backfill',
      'sched/backfill',
    ]);
    for (const value of ['builtin', 'sched/wiki', 'fifo']) {
      const env = { CONDUCTOR_SCHEDULER_TYPE: value };
      expect(() => parseNodeEnv(env)).toThrow(
        /CONDUCTOR_SCHEDULER_TYPE is one of sched\/backfill, sched\/builtin/,
      );
      expect(() => parseWorkerEnv({ ...workerBindings, ...env })).toThrow(/CONDUCTOR_SCHEDULER_TYPE/);
    }
  });
});

describe('admin reservations in the plan', () => {
  const maint: AdminReservation = {
    name: 'maint',
    nodes: new Set(['r']),
    startS: 600,
    endS: 4200,
    periodS: null,
    maint: true,
    users: ['ops'],
    accounts: [],
  };
  const nodes: FreeWorker[] = [{ id: 'r', cpus: 8, allocatedCpus: 0, running: [] }];

  it('a job whose time limit runs into the window does not start on its nodes (MAINT reason); a shorter one does', () => {
    const plan = placeJobs(
      [
        { id: 1, cpus: 2, timeLimitS: 1200, owner: 'alice' },
        { id: 2, cpus: 2, owner: 'alice' },
        { id: 3, cpus: 2, timeLimitS: 600, owner: 'alice' },
      ],
      nodes,
      [],
      undefined,
      [maint],
    );
    expect(placedOn(plan)).toEqual({ 3: 'r' });
    expect(plan.waits.get(1)).toMatchObject({ reason: 'ReqNodeNotAvail, Reserved for maintenance' });
    expect(plan.waits.get(2)).toMatchObject({ reason: 'ReqNodeNotAvail, Reserved for maintenance' });
  });

  it('inside the window only its users’ jobs that name it start there; before it they wait (Reservation)', () => {
    const open = { ...maint, startS: -60, maint: false };
    const plan = placeJobs(
      [
        { id: 1, cpus: 2, timeLimitS: 60, owner: 'alice' },
        { id: 2, cpus: 2, timeLimitS: 60, owner: 'ops', reservation: 'maint' },
        { id: 3, cpus: 2, timeLimitS: 60, owner: 'alice', reservation: 'maint' },
        { id: 4, cpus: 2, timeLimitS: 60, owner: 'ops', reservation: 'gone' },
      ],
      nodes,
      [],
      undefined,
      [open],
    );
    expect(placedOn(plan)).toEqual({ 2: 'r' });
    expect(plan.waits.get(1)).toMatchObject({ reason: 'ReqNodeNotAvail' });
    expect(plan.waits.get(3)).toMatchObject({
      reason: 'Reservation',
      detail: 'not permitted to use reservation maint',
    });
    expect(plan.waits.get(4)).toMatchObject({
      reason: 'Reservation',
      detail: 'reservation gone does not exist',
    });
    const early = placeJobs([{ id: 2, cpus: 2, owner: 'ops', reservation: 'maint' }], nodes, [], undefined, [
      maint,
    ]);
    expect(early.waits.get(2)).toMatchObject({
      reason: 'Reservation',
      detail: 'reservation maint starts in 600 s',
    });
  });

  it('a reservation job runs only on its nodes; other nodes stay open to everyone', () => {
    const open = { ...maint, startS: -60 };
    const plan = placeJobs(
      [
        { id: 1, cpus: 8, timeLimitS: 60, owner: 'ops', reservation: 'maint' },
        { id: 2, cpus: 8, timeLimitS: 60, owner: 'ops', reservation: 'maint' },
        { id: 3, cpus: 8, timeLimitS: 60, owner: 'alice' },
      ],
      [...nodes, { id: 'x', cpus: 8, allocatedCpus: 0, running: [] }],
      [],
      undefined,
      [open],
    );
    expect(placedOn(plan)).toEqual({ 1: 'r', 3: 'x' });
  });

  it('DAILY windows repeat: a job is barred by the next day’s window, and free between them', () => {
    const daily: AdminReservation = { ...maint, startS: -7200, endS: -3600, periodS: 86_400, maint: false };
    // The window that ended an hour ago comes back in 22 hours, and every day after.
    expect(nextWindow(daily, 0)).toEqual({ start: 79_200, end: 82_800 });
    expect(windowOverlaps(daily, 0, 79_200)).toBe(false);
    expect(windowOverlaps(daily, 0, 79_201)).toBe(true);
    expect(windowOverlaps(daily, 86_400 * 3 + 80_000, 86_400 * 3 + 80_001)).toBe(true);
    expect(windowOverlaps(daily, 86_400 * 3 + 83_000, 86_400 * 3 + 84_000)).toBe(false);
    const plan = placeJobs(
      [
        { id: 1, cpus: 1, timeLimitS: 79_200 },
        { id: 2, cpus: 1, timeLimitS: 90_000 },
      ],
      nodes,
      [],
      undefined,
      [daily],
    );
    expect(placedOn(plan)).toEqual({ 1: 'r' });
    expect(plan.waits.get(2)?.reason).toBe('ReqNodeNotAvail');
  });
});
