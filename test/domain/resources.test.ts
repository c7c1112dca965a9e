import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  MAX_GRES_COUNT,
  MAX_MEMORY_MB,
  parseGpus,
  parseGres,
  parseMemorySize,
  parseNodeCount,
  ResourceError,
} from '../../functions/domain/resources.ts';

const SEED = 20_261_206;

function resourceError(parse: () => unknown): ResourceError {
  try {
    parse();
  } catch (error) {
    expect(error).toBeInstanceOf(ResourceError);
    return error as ResourceError;
  }
  throw new Error('expected the value to be refused');
}

describe('parseMemorySize', () => {
  it.each([
    [4096, 4096],
    [0, 0],
    ['0', 0],
    ['512', 512],
    ['512M', 512],
    ['512mb', 512],
    ['4G', 4096],
    ['4GB', 4096],
    ['4g', 4096],
    ['1T', 1_048_576],
    ['1tb', 1_048_576],
    ['100K', 1],
    ['1024K', 1],
    ['1025K', 2],
    ['0K', 0],
    [' 2G ', 2048],
    ['2 G', 2048],
  ] as const)('%j is %d MB', (value, mb) => {
    expect(parseMemorySize(value)).toBe(mb);
  });

  it.each([
    [-1, 'memory_per_node: -1 is not a whole, non-negative number of MB'],
    [1.5, 'memory_per_node: 1.5 is not a whole'],
    [Number.NaN, 'memory_per_node: NaN'],
    [Number.POSITIVE_INFINITY, 'memory_per_node: Infinity'],
    ['-1G', 'memory_per_node: "-1G" is not a memory size'],
    ['4.5G', '"4.5G" is not a memory size'],
    ['4X', '"4X" is not a memory size'],
    ['G', '"G" is not a memory size'],
    ['', '"" is not a memory size'],
    ['4GiB', '"4GiB"'],
    ['512B', '"512B" is not a memory size'],
    ['1e3', '"1e3"'],
    ['0x10', '"0x10"'],
    ['2048T', `more than ${MAX_MEMORY_MB} MB`],
    [MAX_MEMORY_MB + 1, `more than ${MAX_MEMORY_MB} MB`],
  ] as const)('refuses %j', (value, message) => {
    const error = resourceError(() => parseMemorySize(value, 'memory_per_node'));
    expect(error.message).toContain(message);
    expect(error.field).toBe('memory_per_node');
  });

  it('names the field it was given, "memory" by default', () => {
    expect(resourceError(() => parseMemorySize('x')).message.startsWith('memory: ')).toBe(true);
    expect(resourceError(() => parseMemorySize('x', 'memory_per_cpu')).field).toBe('memory_per_cpu');
  });

  it('refuses a value that is neither a number nor a string', () => {
    expect(resourceError(() => parseMemorySize(null as unknown as string)).message).toContain(
      'must be a number',
    );
  });

  it('the units agree with each other (property)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 1000 }), (n) => {
        expect(parseMemorySize(`${n}G`)).toBe(parseMemorySize(`${n * 1024}M`));
        expect(parseMemorySize(`${n}T`)).toBe(parseMemorySize(`${n * 1024}G`));
        expect(parseMemorySize(`${n}`)).toBe(n);
        expect(parseMemorySize(`${n}K`)).toBe(Math.ceil(n / 1024));
      }),
      { seed: SEED, numRuns: 200 },
    );
  });
});

describe('parseGres', () => {
  it('parses name[:type][:count] items', () => {
    expect(parseGres('gpu:a100:2,nvme:1,license_matlab')).toEqual({
      gpus: 2,
      gpuType: 'a100',
      gres: { nvme: 1, license_matlab: 1 },
    });
    expect(parseGres('gpu:1')).toEqual({ gpus: 1, gpuType: null, gres: {} });
    expect(parseGres('gpu')).toEqual({ gpus: 1, gpuType: null, gres: {} });
    expect(parseGres('gpu:v100')).toEqual({ gpus: 1, gpuType: 'v100', gres: {} });
    expect(parseGres(' nvme:2 , mps:100 ')).toEqual({ gpus: 0, gpuType: null, gres: { nvme: 2, mps: 100 } });
    expect(parseGres('license.x-1_y:3')).toEqual({ gpus: 0, gpuType: null, gres: { 'license.x-1_y': 3 } });
  });

  it('"" and "none" request nothing', () => {
    expect(parseGres('')).toEqual({ gpus: 0, gpuType: null, gres: {} });
    expect(parseGres(' none ')).toEqual({ gpus: 0, gpuType: null, gres: {} });
  });

  it.each([
    ['gpu:a100:2,gpu:h100:1', 'gres: two GPU types (a100 and h100)'],
    ['gpu:a100:2,gpu:1', 'gres: gpu is given twice'],
    ['nvme:1,nvme:2', 'gres: nvme is given twice'],
    ['nvme:samsung:1', 'gres: "nvme:samsung:1": a type is supported for gpu only (use nvme:1)'],
    ['nvme:samsung', 'a type is supported for gpu only'],
    ['gpu:0', 'gres: count 0 of gpu must be between 1 and 1000000'],
    [`nvme:${MAX_GRES_COUNT + 1}`, 'must be between 1 and 1000000'],
    ['gpu:a100:x', 'count "x" of gpu is not a whole number'],
    ['gpu:a100:-1', 'count "-1" of gpu'],
    ['gpu:a100:2:3', '"gpu:a100:2:3" is not name[:type][:count]'],
    ['nvme,,gpu', 'gres: empty item'],
    ['nvme,', 'empty item'],
    ['_x:1', '"_x" is not a resource name'],
    [':1', '"" is not a resource name'],
    ['gp u:1', '"gp u" is not a resource name'],
    ['gpu:a 100:1', '"a 100" is not a type of gpu'],
    ['gpu::1', '"" is not a type of gpu'],
  ])('refuses %j', (spec, message) => {
    const error = resourceError(() => parseGres(spec));
    expect(error.message).toContain(message);
    expect(error.field).toBe('gres');
  });

  it('round-trips generated requests (property)', () => {
    const name = fc.stringMatching(/^[a-z][a-z0-9_]{0,6}$/).filter((n) => n !== 'gpu' && n !== 'none');
    fc.assert(
      fc.property(
        fc.dictionary(name, fc.integer({ min: 1, max: MAX_GRES_COUNT })),
        fc.option(
          fc.tuple(fc.option(fc.constantFrom('a100', 'h100', 'rtx3090')), fc.integer({ min: 1, max: 8 })),
        ),
        (gres, gpu) => {
          const items = Object.entries(gres).map(([n, count]) => `${n}:${count}`);
          if (gpu) items.push(gpu[0] ? `gpu:${gpu[0]}:${gpu[1]}` : `gpu:${gpu[1]}`);
          expect(parseGres(items.join(','))).toEqual({
            gpus: gpu ? gpu[1] : 0,
            gpuType: gpu ? gpu[0] : null,
            gres,
          });
        },
      ),
      { seed: SEED, numRuns: 200 },
    );
  });
});

describe('parseGpus', () => {
  it.each([
    [2, { gpus: 2, gpuType: null }],
    [0, { gpus: 0, gpuType: null }],
    ['2', { gpus: 2, gpuType: null }],
    ['0', { gpus: 0, gpuType: null }],
    [' a100:2 ', { gpus: 2, gpuType: 'a100' }],
    ['rtx3090:1', { gpus: 1, gpuType: 'rtx3090' }],
  ] as const)('%j', (value, expected) => {
    expect(parseGpus(value)).toEqual(expected);
  });

  it.each([
    [-1, 'gpus: -1 is not a whole number of GPUs'],
    [1.5, 'gpus: 1.5'],
    [MAX_GRES_COUNT + 1, 'between 0 and 1000000'],
    ['a100', 'gpus: "a100" is not a GPU count ("2") or type:count ("a100:2")'],
    ['a100:0', 'count 0 of a100 GPUs must be between 1'],
    ['a100:', 'count "" of a100 GPUs'],
    ['2:a100', '"2:a100" is not a GPU count'],
    ['gpu:a100:2', 'is not a GPU count'],
    ['', '"" is not a GPU count'],
    ['-2', '"-2"'],
  ] as const)('refuses %j', (value, message) => {
    expect(resourceError(() => parseGpus(value)).message).toContain(message);
  });
});

describe('parseNodeCount', () => {
  it.each([1, '1', ' 1 ', '1-1'] as const)('accepts %j', (value) => {
    expect(parseNodeCount(value)).toBe(1);
  });

  it.each([0, 2, 1.5, -1, '2', '1-2', '2-2', '0', '', 'one', '1-', '01'] as const)('refuses %j', (value) => {
    const error = resourceError(() => parseNodeCount(value));
    expect(error.message).toBe(
      'nodes: conductor runs each job on one node: nodes must be 1 (multi-node jobs are not supported yet)',
    );
    expect(error.field).toBe('nodes');
  });
});
