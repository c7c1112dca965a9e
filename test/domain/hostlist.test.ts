import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  compressHostlist,
  expandHostlist,
  HostlistError,
  hostlistMatcher,
  MAX_HOSTLIST_NAMES,
} from '../../functions/domain/hostlist.ts';

const SEED = 20_261_206;

function hostlistError(spec: string): HostlistError {
  try {
    expandHostlist(spec);
  } catch (error) {
    expect(error).toBeInstanceOf(HostlistError);
    return error as HostlistError;
  }
  throw new Error(`expected ${JSON.stringify(spec)} to be refused`);
}

describe('expandHostlist', () => {
  it('expands ranges and lists, keeping names as they are', () => {
    expect(expandHostlist('node[01-03,07],gpu01')).toEqual(['node01', 'node02', 'node03', 'node07', 'gpu01']);
    expect(expandHostlist('a')).toEqual(['a']);
    expect(expandHostlist('login.cluster_1-a')).toEqual(['login.cluster_1-a']);
  });

  it('keeps the zero padding of the lower bound', () => {
    expect(expandHostlist('n[08-10]')).toEqual(['n08', 'n09', 'n10']);
    expect(expandHostlist('n[8-10]')).toEqual(['n8', 'n9', 'n10']);
    expect(expandHostlist('n[098-101]')).toEqual(['n098', 'n099', 'n100', 'n101']);
    expect(expandHostlist('n[0-1]')).toEqual(['n0', 'n1']);
  });

  it('gives the cross product of several bracket groups', () => {
    expect(expandHostlist('rack[1-2]-n[1-2]')).toEqual(['rack1-n1', 'rack1-n2', 'rack2-n1', 'rack2-n2']);
    expect(expandHostlist('[1-2]x')).toEqual(['1x', '2x']);
    expect(expandHostlist('r[1,3]n[5]')).toEqual(['r1n5', 'r3n5']);
  });

  it('ignores whitespace around items and removes repeats, keeping the first order', () => {
    expect(expandHostlist(' b , a ,b, node[1-2], node2 ')).toEqual(['b', 'a', 'node1', 'node2']);
    expect(expandHostlist('n[1-3,2-4]')).toEqual(['n1', 'n2', 'n3', 'n4']);
  });

  it.each([
    ['node[1-3', "unbalanced '[' at 4"],
    ['node1-3]', "unbalanced ']' at 7"],
    ['node[1-[2]]', "nested '[' at 7"],
    ['node[5-3]', "reversed range '5-3' at 5"],
    ['a,,b', 'empty item at 2'],
    ['a, ,b', 'empty item at 2'],
    ['a,', 'empty item at 2'],
    ['node[]', 'empty brackets at 4'],
    ['node[1,]', 'empty range'],
    ['node[a-c]', "'a' in [a-c] at 5 is not a number"],
    ['node[1-2-3]', "'2-3'"],
    ['node[1-]', "'' in [1-]"],
    ['no de', "invalid character ' ' at 2"],
    ['node/1', "invalid character '/' at 4"],
    ['nöde', "invalid character 'ö' at 1"],
    ['node[1-1000000000000000000]', 'too long'],
    ['', 'empty'],
    ['   ', 'empty'],
  ])('refuses %j: %s', (spec, message) => {
    const error = hostlistError(spec);
    expect(error.message).toContain(message);
    expect(error.message.startsWith('hostlist: ')).toBe(true);
  });

  it('refuses to expand beyond the cap instead of allocating it', () => {
    expect(expandHostlist(`n[1-${MAX_HOSTLIST_NAMES}]`)).toHaveLength(MAX_HOSTLIST_NAMES);
    expect(hostlistError(`n[1-${MAX_HOSTLIST_NAMES + 1}]`).message).toContain('more than 65536 names');
    // The product is checked before anything is built: 10^15 names fail at once.
    const started = Date.now();
    expect(hostlistError('a[0-99999][0-99999][0-99999]').message).toContain('more than');
    expect(hostlistError('a[1-40000],b[1-40000]').position).toBe(11);
    expect(Date.now() - started).toBeLessThan(1000);
  });

  it('refuses an absurdly long hostlist before parsing', () => {
    expect(hostlistError('a,'.repeat(10_000)).message).toContain('longer than');
  });
});

describe('hostlistMatcher', () => {
  it('matches the names the hostlist expands to and nothing else', () => {
    const matches = hostlistMatcher('node[01-03,07],gpu01,rack[1-2]-n[1-2]');
    for (const name of ['node01', 'node03', 'node07', 'gpu01', 'rack2-n1']) expect(matches(name)).toBe(true);
    for (const name of ['node1', 'node04', 'node007', 'gpu1', 'rack3-n1', 'rack1-n', 'node', '', 'xnode01']) {
      expect(matches(name)).toBe(false);
    }
  });

  it('matches a huge range without expanding it', () => {
    const matches = hostlistMatcher('node[0000-9999999999]');
    expect(matches('node0000')).toBe(true);
    expect(matches('node4242424242')).toBe(true);
    expect(matches('node42')).toBe(false);
    expect(matches('node99999999999')).toBe(false);
  });

  it('honours the width: unpadded ranges match unpadded numbers only', () => {
    const matches = hostlistMatcher('n[8-10]');
    expect(matches('n8')).toBe(true);
    expect(matches('n10')).toBe(true);
    expect(matches('n08')).toBe(false);
  });

  it('finds the split of adjacent groups that matches', () => {
    const matches = hostlistMatcher('n[1-12][1-5]');
    expect(matches('n115')).toBe(true); // 11, 5
    expect(matches('n15')).toBe(true); // 1, 5
    expect(matches('n121')).toBe(true); // 12, 1
    expect(matches('n16')).toBe(false);
    expect(matches('n1')).toBe(false);
  });

  it('stays fast on a name that almost matches many groups', () => {
    const matches = hostlistMatcher(`x${'[0-9]'.repeat(40)}y`);
    const started = Date.now();
    expect(matches(`x${'1'.repeat(40)}z`)).toBe(false);
    expect(matches(`x${'1'.repeat(40)}y`)).toBe(true);
    expect(Date.now() - started).toBeLessThan(1000);
  });

  it('throws on a malformed hostlist when built, not when called', () => {
    expect(() => hostlistMatcher('node[1-')).toThrow(HostlistError);
  });

  it('agrees with expansion on random hostlists and names (property)', () => {
    const range = fc
      .tuple(fc.integer({ min: 0, max: 30 }), fc.integer({ min: 0, max: 5 }), fc.integer({ min: 1, max: 3 }))
      .map(
        ([lo, span, width]) => `${String(lo).padStart(width, '0')}-${String(lo + span).padStart(width, '0')}`,
      );
    const group = fc.array(range, { minLength: 1, maxLength: 2 }).map((ranges) => `[${ranges.join(',')}]`);
    const text = fc.constantFrom('n', 'x', 'rack', '-', 'a.b', '0');
    const item = fc
      .array(fc.oneof(text, group), { minLength: 1, maxLength: 3 })
      .map((parts) => parts.join(''));
    const spec = fc.array(item, { minLength: 1, maxLength: 3 }).map((items) => items.join(','));
    fc.assert(
      fc.property(
        spec,
        fc.array(fc.string({ unit: fc.constantFrom('n', 'x', '0', '1', '2', '-') })),
        (s, extra) => {
          const names = expandHostlist(s);
          const matches = hostlistMatcher(s);
          const set = new Set(names);
          for (const name of names) expect(matches(name)).toBe(true);
          for (const name of extra) expect(matches(name)).toBe(set.has(name));
        },
      ),
      { seed: SEED, numRuns: 300 },
    );
  });
});

describe('compressHostlist', () => {
  it('merges names that differ in their last number, sorted by prefix', () => {
    expect(compressHostlist(['node01', 'node02', 'node03', 'gpu01'])).toBe('gpu01,node[01-03]');
    expect(compressHostlist(['node01', 'node02', 'node03', 'node07'])).toBe('node[01-03,07]');
    expect(compressHostlist(['n9', 'n10', 'n11'])).toBe('n[9-11]');
    expect(compressHostlist(['n09', 'n10'])).toBe('n[09-10]');
    expect(compressHostlist(['login', 'node1', 'node1'])).toBe('login,node1');
    expect(compressHostlist([])).toBe('');
  });

  it('keeps padded and unpadded numbers apart', () => {
    const text = compressHostlist(['n1', 'n01', 'n2']);
    expect(new Set(expandHostlist(text))).toEqual(new Set(['n1', 'n01', 'n2']));
  });

  it('refuses names that are not node names', () => {
    expect(() => compressHostlist(['a,b'])).toThrow(HostlistError);
    expect(() => compressHostlist(['a[1]'])).toThrow(HostlistError);
  });

  it('round-trips: expanding the compressed list gives the same names (property)', () => {
    const name = fc
      .tuple(
        fc.constantFrom('node', 'gpu', 'n', 'rack1-n', 'a.b_', ''),
        fc.integer({ min: 0, max: 130 }),
        fc.integer({ min: 0, max: 4 }),
      )
      .map(([prefix, n, width]) => `${prefix}${String(n).padStart(width, '0')}`)
      .filter((s) => s !== '');
    const plain = fc.constantFrom('login', 'head', 'x-y');
    fc.assert(
      fc.property(fc.array(fc.oneof(name, plain), { maxLength: 40 }), (names) => {
        const text = compressHostlist(names);
        const expanded = names.length === 0 ? [] : expandHostlist(text);
        expect(new Set(expanded)).toEqual(new Set(names));
        expect(expanded).toHaveLength(new Set(names).size);
      }),
      { seed: SEED, numRuns: 300 },
    );
  });
});
