import { describe, expect, it } from 'vitest';
import { placeJobs } from '../../functions/domain/placement.ts';
import { parseTimeLimit } from '../../functions/domain/time-limit.ts';

const worker = (id: string, cpus: number, allocatedCpus = 0) => ({ id, cpus, allocatedCpus });

describe('placeJobs', () => {
  it('never splits a job across nodes: 64 CPUs do not fit two nodes with 48 free each', () => {
    const result = placeJobs([{ id: 1, cpus: 64 }], [worker('a', 96, 48), worker('b', 96, 48)]);
    expect(result.placements).toEqual([]);
  });

  it('best fit: the job goes where the fewest CPUs are left over', () => {
    const result = placeJobs(
      [{ id: 1, cpus: 8 }],
      [worker('a', 96, 0), worker('b', 96, 80), worker('c', 16, 0)],
    );
    expect(result.placements).toEqual([{ jobId: 1, workerId: 'b', cpus: 8 }]);
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
    expect(result.placements).toEqual([{ jobId: 2, workerId: 'b', cpus: 4 }]);
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
    expect(result.placements).toEqual([{ jobId: 2, workerId: 'a', cpus: 2 }]);
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
