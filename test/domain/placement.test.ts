import { describe, expect, it } from 'vitest';
import { type FreeWorker, type Placement, placeJobs } from '../../functions/domain/placement.ts';
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

describe('placement over every resource', () => {
  const gpus = (n: number, model = 'a100') => Array.from({ length: n }, (_, index) => ({ index, model }));
  const node = (id: string, extra: Partial<FreeWorker> = {}): FreeWorker => ({
    id,
    cpus: 16,
    allocatedCpus: 0,
    memoryMb: 64_000,
    allocatedMemoryMb: 0,
    ...extra,
  });

  it('gives GPUs by index, never the same one twice, and only of the model asked', () => {
    const plan = placeJobs(
      [
        { id: 1, cpus: 1, gpus: 1 },
        { id: 2, cpus: 1, gpus: 1 },
        { id: 3, cpus: 1, gpus: 1, gpuType: 'h100' },
        { id: 4, cpus: 1, gpus: 1 },
      ],
      [node('g', { gpus: [...gpus(2), { index: 2, model: 'h100' }] })],
    );
    const byJob = new Map(plan.placements.map((p) => [p.jobId, p.gpus]));
    expect(byJob.get(1)).toEqual([0]);
    expect(byJob.get(2)).toEqual([1]);
    expect(byJob.get(3)).toEqual([2]);
    // Job 4 wants any GPU: none is left, it holds the node (nothing else is free) and waits for one.
    expect(byJob.has(4)).toBe(false);
    expect(plan.waits.get(4)?.reason).toBe('Resources');
  });

  it('a GPU already in use is not given again', () => {
    const plan = placeJobs(
      [{ id: 1, cpus: 1, gpus: 2 }],
      [node('g', { gpus: gpus(4), gpusUsed: new Set([0, 2]) })],
    );
    expect(plan.placements[0]?.gpus).toEqual([1, 3]);
  });

  it('fits memory, CPUs and gres together on one node, never summed across nodes', () => {
    const plan = placeJobs(
      [{ id: 1, cpus: 4, memoryMb: 40_000, gres: { nvme: 1 } }],
      [
        node('a', { allocatedMemoryMb: 30_000, gres: { nvme: { total: 1, allocated: 0 } } }),
        node('b', { gres: { nvme: { total: 1, allocated: 1 } } }),
        node('c', { gres: { nvme: { total: 2, allocated: 1 } }, allocatedCpus: 14 }),
        node('d', { allocatedMemoryMb: 20_000, gres: { nvme: { total: 1, allocated: 0 } } }),
      ],
    );
    expect(plan.placements.map((p) => [p.workerId, p.memoryMb, p.gres])).toEqual([
      ['d', 40_000, { nvme: 1 }],
    ]);
  });

  it('jobs without GPUs go to nodes without free GPUs first, keeping GPU nodes for GPU jobs', () => {
    const plan = placeJobs(
      [
        { id: 1, cpus: 8 },
        { id: 2, cpus: 8 },
        { id: 3, cpus: 16, gpus: 2 },
      ],
      [node('gpu', { gpus: gpus(2) }), node('cpu', { cpus: 16 })],
    );
    expect(plan.placements.map((p) => [p.jobId, p.workerId])).toEqual([
      [1, 'cpu'],
      [2, 'cpu'],
      [3, 'gpu'],
    ]);
  });

  it('a big-memory job reserves a node, so that small jobs cannot starve it', () => {
    const plan = placeJobs(
      [
        { id: 1, cpus: 1, memoryMb: 60_000 },
        { id: 2, cpus: 1, memoryMb: 8_000 },
        { id: 3, cpus: 1, memoryMb: 8_000 },
      ],
      [node('a', { allocatedMemoryMb: 10_000 }), node('b', { allocatedMemoryMb: 50_000 })],
    );
    const reserved = [...plan.reservations].find(([, job]) => job === 1)?.[0];
    expect(reserved).toBeDefined();
    expect(plan.placements.every((p) => p.workerId !== reserved)).toBe(true);
    expect(plan.waits.get(1)).toMatchObject({ reason: 'Resources' });
    expect(plan.waits.get(1)?.detail).toMatch(/^reserved (a|b) for this job; .* of 60000 MB free/);
  });

  it('exclusive takes an idle node whole, and waits while anything runs on the others', () => {
    const plan = placeJobs(
      [{ id: 1, cpus: 1, exclusive: true }],
      [
        node('busy', { allocatedCpus: 1 }),
        node('idle', { gpus: gpus(2), gres: { nvme: { total: 1, allocated: 0 } } }),
      ],
    );
    expect(plan.placements).toEqual([
      {
        jobId: 1,
        workerId: 'idle',
        cpus: 16,
        memoryMb: 64_000,
        gpus: [0, 1],
        gres: { nvme: 1 },
        partition: null,
      },
    ]);
  });

  it('pack fills the fullest node that fits; spread the emptiest', () => {
    const workers = [node('a', { allocatedCpus: 8 }), node('b', { allocatedCpus: 2 })];
    const rules = (policy: 'pack' | 'spread') =>
      new Map([['p', { state: 'UP' as const, policy, maxTimeS: null, maxCpusPerNode: null }]]);
    const inP = workers.map((w) => ({ ...w, partitions: new Set(['p']) }));
    expect(
      placeJobs([{ id: 1, cpus: 4, partitions: ['p'] }], inP, [], rules('pack')).placements[0]?.workerId,
    ).toBe('a');
    expect(
      placeJobs([{ id: 1, cpus: 4, partitions: ['p'] }], inP, [], rules('spread')).placements[0]?.workerId,
    ).toBe('b');
  });

  it('honours partitions in order, node lists, exclusions and constraints, and says why a job waits', () => {
    const rules = new Map([
      ['gpu', { state: 'UP' as const, policy: 'pack' as const, maxTimeS: null, maxCpusPerNode: null }],
      ['batch', { state: 'DOWN' as const, policy: 'pack' as const, maxTimeS: 3600, maxCpusPerNode: 8 }],
      ['default', { state: 'UP' as const, policy: 'pack' as const, maxTimeS: 600, maxCpusPerNode: null }],
    ]);
    const workers = [
      node('g1', { partitions: new Set(['gpu']), features: new Set(['avx512', 'ssd']) }),
      node('c1', { partitions: new Set(['default']), features: new Set(['avx512']) }),
      node('c2', { partitions: new Set(['default']), features: new Set(['arm64']) }),
    ];
    const has = (f: string) => (features: ReadonlySet<string>) => features.has(f);
    const plan = placeJobs(
      [
        { id: 1, cpus: 1, partitions: ['batch', 'default'] },
        { id: 2, cpus: 1, partitions: ['default'], nodelist: ['c2'] },
        { id: 3, cpus: 1, partitions: ['default'], exclude: ['c1', 'c2'] },
        { id: 4, cpus: 1, partitions: ['default'], featuresMatch: has('ssd'), constraint: 'ssd' },
        { id: 5, cpus: 1, partitions: ['batch'] },
        { id: 6, cpus: 1, partitions: ['default'], timeLimitS: 7200 },
        { id: 7, cpus: 1, partitions: ['gpu'], featuresMatch: has('ssd'), constraint: 'ssd' },
        { id: 8, cpus: 1, partitions: ['default'], nodelist: ['gone'] },
      ],
      workers,
      [],
      rules,
    );
    const where = new Map(plan.placements.map((p) => [p.jobId, [p.workerId, p.partition]]));
    expect(where.get(1)).toEqual(['c1', 'default']);
    expect(where.get(2)).toEqual(['c2', 'default']);
    expect(where.get(7)).toEqual(['g1', 'gpu']);
    expect(plan.waits.get(3)?.reason).toBe('ReqNodeNotAvail');
    expect(plan.waits.get(4)).toMatchObject({ reason: 'BadConstraints' });
    expect(plan.waits.get(5)).toEqual({ reason: 'PartitionDown', detail: 'partition batch is DOWN' });
    expect(plan.waits.get(6)?.reason).toBe('PartitionTimeLimit');
    expect(plan.waits.get(8)).toMatchObject({
      reason: 'ReqNodeNotAvail',
      detail: expect.stringContaining('gone'),
    });
  });
});
