import { describe, expect, it } from 'vitest';
import { DependencyError, dependencyTargets, parseDependency } from '../../functions/domain/dependency.ts';

describe('parseDependency', () => {
  it('reads an empty string as no dependency', () => {
    expect(parseDependency('')).toBeNull();
    expect(parseDependency('  ')).toBeNull();
  });

  it('reads every type, several ids and delays, joined by ","', () => {
    expect(parseDependency('afterok:12:13+5,afterany:7,after:8+1,afternotok:9,singleton')).toEqual({
      any: false,
      items: [
        { kind: 'afterok', targetJobId: 12, delayS: 0 },
        { kind: 'afterok', targetJobId: 13, delayS: 300 },
        { kind: 'afterany', targetJobId: 7, delayS: 0 },
        { kind: 'after', targetJobId: 8, delayS: 60 },
        { kind: 'afternotok', targetJobId: 9, delayS: 0 },
        { kind: 'singleton', targetJobId: null, delayS: 0 },
      ],
    });
  });

  it('reads "?" as any', () => {
    const dep = parseDependency('afterok:1?afternotok:1:2');
    expect(dep?.any).toBe(true);
    expect(dep && dependencyTargets(dep)).toEqual([1, 2]);
  });

  it.each([
    ['afterok:1,afterany:2?after:3', /mixes/],
    ['afterok', /no job id/],
    ['afterok:', /not a job id/],
    ['afterok:x', /not a job id/],
    ['afterok:1+', /not a job id/],
    ['before:1', /unknown dependency type "before"/],
    ['singleton:1', /no job ids/],
  ])('refuses %s', (text, message) => {
    expect(() => parseDependency(text)).toThrow(DependencyError);
    expect(() => parseDependency(text)).toThrow(message);
  });
});
