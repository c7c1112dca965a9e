import { describe, expect, it } from 'vitest';
import { type Placement, placeJobs } from '../../functions/domain/placement.ts';
import { parseTimeLimit } from '../../functions/domain/time-limit.ts';

const worker = (id: string, cpus: number, allocatedCpus = 0) => ({ id, cpus, allocatedCpus });
/** Placements as far as CPUs go (these tests ask for CPUs only). */
const cpuOnly = (placements: readonly Placement[]) =>
  placements.map(({ jobId, workerId, cpus }) => ({ jobId, workerId, cpus }));

describe('placeJobs', () => {
  it('never splits a job across nodes: 64 CPUs do not fit two nodes with 48 free each', () => {
    const result = placeJobs([{ id: 1, cpus: 64 }], [worker('a', 96, 48), worker('b', 96, 48)]);
    expect(cpuOnly(result.placements)).toEqual([]);
  });

  it('best fit: the job goes where the fewest CPUs are left over', () => {
    const result = placeJobs(
      [{ id: 1, cpus: 8 }],
      [worker('a', 96, 0), worker('b', 96, 80), worker('c', 16, 0)],
    );
    expect(cpuOnly(result.placements)).toEqual([{ jobId: 1, workerId: 'b', cpus: 8 }]);
  });

  it('a blocked head reserves a node; smaller jobs pass it only on other nodes', () => {
    // a: 10 free of 96, b: 4 free of 8. The 64-CPU head fits nowhere now; it reserves a (most free).
    const result = placeJobs(
      [
        { id: 1, cpus: 64 },
        { id: 2, cpus: 4 },
        { id: 3, cpus: 4 },
      ],
      [worker('a', 96, 86), worker('b', 8, 4)],
    );
    expect(result.reservations.get('a')).toBe(1);
    expect(cpuOnly(result.placements)).toEqual([{ jobId: 2, workerId: 'b', cpus: 4 }]);
  });

  it('a job larger than every node reserves nothing and blocks nobody', () => {
    const result = placeJobs(
      [
        { id: 1, cpus: 200 },
        { id: 2, cpus: 2 },
      ],
      [worker('a', 96, 0)],
    );
    expect(result.tooLarge).toEqual([1]);
    expect(cpuOnly(result.placements)).toEqual([{ jobId: 2, workerId: 'a', cpus: 2 }]);
  });

  it('fills several nodes in queue order', () => {
    const queue = Array.from({ length: 10 }, (_, i) => ({ id: i + 1, cpus: 24 }));
    const result = placeJobs(queue, [worker('a', 96), worker('b', 96)]);
    expect(result.placements.map((p) => p.jobId)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    const perNode = new Map<string, number>();
    for (const p of result.placements) perNode.set(p.workerId, (perNode.get(p.workerId) ?? 0) + p.cpus);
    expect([...perNode.values()]).toEqual([96, 96]);
  });
});

/**
 * The review's reservation scenarios (M1). R and X have 8 CPUs each; B (job 1) needs a whole node. The plan
 * of each pass is fed back into the next one as the scheduler does: a reservation is kept on its job.
 */
describe('reservations of blocked jobs', () => {
  const held = (plan: ReturnType<typeof placeJobs>) =>
    new Map([...plan.reservations].map(([workerId, jobId]) => [jobId, workerId]));
  const queue = (jobs: { id: number; cpus: number }[], holds: Map<number, string>) =>
    jobs.map((j) => ({ ...j, reservedWorker: holds.get(j.id) ?? null }));
  const shortJob = { cpus: 3, endsInSeconds: 60 };
  const endless = { cpus: 2, endsInSeconds: null };

  it('A: alone, B reserves the worker whose running job ends first, and starts there when it ends', () => {
    const first = placeJobs(
      [{ id: 1, cpus: 8 }],
      [
        { id: 'R', cpus: 8, allocatedCpus: 3, running: [shortJob] },
        { id: 'X', cpus: 8, allocatedCpus: 2, running: [endless] },
      ],
    );
    expect([...first.reservations]).toEqual([['R', 1]]);
    const later = placeJobs(queue([{ id: 1, cpus: 8 }], held(first)), [
      { id: 'R', cpus: 8, allocatedCpus: 0, running: [] },
      { id: 'X', cpus: 8, allocatedCpus: 2, running: [endless] },
    ]);
    expect(cpuOnly(later.placements)).toEqual([{ jobId: 1, workerId: 'R', cpus: 8 }]);
  });

  it('B: later small jobs go around the reserved worker, so B still starts when its job ends', () => {
    const small = [2, 3, 4, 5, 6].map((id) => ({ id, cpus: 1 }));
    const first = placeJobs(
      [{ id: 1, cpus: 8 }, ...small],
      [
        { id: 'R', cpus: 8, allocatedCpus: 3, running: [shortJob] },
        { id: 'X', cpus: 8, allocatedCpus: 2, running: [endless] },
      ],
    );
    expect([...first.reservations]).toEqual([['R', 1]]);
    expect(first.placements.map((p) => p.workerId)).toEqual(['X', 'X', 'X', 'X', 'X']);
    // A minute later R's job ended; a steady stream of small jobs keeps arriving.
    const more = [7, 8, 9].map((id) => ({ id, cpus: 1 }));
    const later = placeJobs(queue([{ id: 1, cpus: 8 }, ...more], held(first)), [
      { id: 'R', cpus: 8, allocatedCpus: 0, running: [] },
      { id: 'X', cpus: 8, allocatedCpus: 7, running: [endless] },
    ]);
    expect(cpuOnly(later.placements)[0]).toEqual({ jobId: 1, workerId: 'R', cpus: 8 });
  });

  it('C: the reservation does not move when another worker frees more CPUs', () => {
    const first = placeJobs(
      [
        { id: 1, cpus: 8 },
        { id: 7, cpus: 2 },
      ],
      [worker('R', 8, 3), worker('X', 8, 4)],
    );
    expect([...first.reservations]).toEqual([['R', 1]]);
    expect(cpuOnly(first.placements)).toEqual([{ jobId: 7, workerId: 'X', cpus: 2 }]);
    // X's other 4-CPU job ended: X has 6 free, R still 5. The 5-CPU job must not take R.
    const second = placeJobs(
      queue(
        [
          { id: 1, cpus: 8 },
          { id: 8, cpus: 5 },
        ],
        held(first),
      ),
      [worker('R', 8, 3), worker('X', 8, 2)],
    );
    expect([...second.reservations]).toEqual([['R', 1]]);
    expect(cpuOnly(second.placements)).toEqual([{ jobId: 8, workerId: 'X', cpus: 5 }]);
  });

  it('under a steady stream of small jobs, B starts within a bounded number of passes', () => {
    // R runs three 1-CPU jobs that end within a pass; X runs a 2-CPU job without a time limit. Every pass
    // four new 1-CPU jobs arrive, and the small jobs of a pass end before the next one.
    const shortOnes = (n: number) => Array.from({ length: n }, () => ({ cpus: 1, endsInSeconds: 5 }));
    let onR = 3;
    let onX = 0;
    let holds = new Map<number, string>();
    let next = 100;
    let startedAt: number | undefined;
    for (let pass = 1; pass <= 10 && startedAt === undefined; pass++) {
      const stream = Array.from({ length: 4 }, () => ({ id: next++, cpus: 1 }));
      const plan = placeJobs(queue([{ id: 1, cpus: 8 }, ...stream], holds), [
        { id: 'R', cpus: 8, allocatedCpus: onR, running: shortOnes(onR) },
        { id: 'X', cpus: 8, allocatedCpus: 2 + onX, running: [endless, ...shortOnes(onX)] },
      ]);
      if (plan.placements.some((p) => p.jobId === 1)) startedAt = pass;
      holds = held(plan);
      onR = plan.placements.filter((p) => p.workerId === 'R' && p.jobId !== 1).length;
      onX = plan.placements.filter((p) => p.workerId === 'X').length;
    }
    expect(startedAt).toBe(2);
  });

  it('a reservation on a worker that left is dropped, and the job reserves another', () => {
    const plan = placeJobs([{ id: 1, cpus: 8, reservedWorker: 'gone' }], [worker('X', 8, 2)]);
    expect([...plan.reservations]).toEqual([['X', 1]]);
  });
});

describe('parseTimeLimit (Slurm formats)', () => {
  it.each([
    [30, 1800],
    ['30', 1800],
    ['0:05', 5],
    ['1:30', 90],
    ['1:00:00', 3600],
    ['2-0', 172800],
    ['1-02:03', 93780],
    ['1-02:03:04', 93784],
  ])('%s is %i seconds', (input, seconds) => {
    expect(parseTimeLimit(input)).toBe(seconds);
  });

  it.each(['', 'abc', '1:2:3:4', '-5', '0'])('rejects %j', (input) => {
    expect(parseTimeLimit(input)).toBeNull();
  });
});
