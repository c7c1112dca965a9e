import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  ConstraintError,
  constraintFeatures,
  evaluateConstraint,
  MAX_CONSTRAINT_LENGTH,
  parseConstraint,
} from '../../functions/domain/constraint.ts';

const SEED = 20_261_206;

const satisfies = (expression: string, ...features: string[]) =>
  evaluateConstraint(parseConstraint(expression), new Set(features));

function constraintError(expression: string): ConstraintError {
  try {
    parseConstraint(expression);
  } catch (error) {
    expect(error).toBeInstanceOf(ConstraintError);
    return error as ConstraintError;
  }
  throw new Error(`expected ${JSON.stringify(expression)} to be refused`);
}

describe('parseConstraint and evaluateConstraint', () => {
  it('a single feature', () => {
    expect(satisfies('avx512', 'avx512', 'ssd')).toBe(true);
    expect(satisfies('avx512', 'ssd')).toBe(false);
    expect(satisfies('  avx512 ', 'avx512')).toBe(true);
  });

  it('AND and OR', () => {
    expect(satisfies('a&b', 'a', 'b')).toBe(true);
    expect(satisfies('a&b', 'a')).toBe(false);
    expect(satisfies('a|b', 'b')).toBe(true);
    expect(satisfies('a|b')).toBe(false);
    expect(satisfies('a & b | c', 'c')).toBe(true);
  });

  it('applies & and | left to right, as Slurm does: a|b&c is (a|b)&c', () => {
    expect(satisfies('a|b&c', 'a')).toBe(false);
    expect(satisfies('a|b&c', 'a', 'c')).toBe(true);
    expect(satisfies('a&b|c', 'c')).toBe(true);
    expect(satisfies('a|(b&c)', 'a')).toBe(true);
  });

  it('parentheses group, and nest', () => {
    expect(satisfies('avx512&(ssd|nvme)', 'avx512', 'nvme')).toBe(true);
    expect(satisfies('avx512&(ssd|nvme)', 'nvme')).toBe(false);
    expect(satisfies('((a))', 'a')).toBe(true);
    expect(satisfies('(a|(b&c))&d', 'b', 'c', 'd')).toBe(true);
  });

  it('matching OR [a|b|c] is OR on one node', () => {
    expect(satisfies('[a100|h100|v100]', 'h100')).toBe(true);
    expect(satisfies('[a100|h100|v100]', 'rtx3090')).toBe(false);
    expect(satisfies('ib&[rack1|rack2]', 'ib', 'rack2')).toBe(true);
    expect(satisfies('[(a&b)|c]', 'a', 'b')).toBe(true);
    expect(parseConstraint('[a|b]').root).toEqual({
      kind: 'matching',
      operand: {
        kind: 'or',
        operands: [
          { kind: 'feature', name: 'a' },
          { kind: 'feature', name: 'b' },
        ],
      },
    });
  });

  it('features may hold _ . : = + -', () => {
    expect(satisfies('cpu_gen=icelake&os:rhel-9.2&c++', 'cpu_gen=icelake', 'os:rhel-9.2', 'c++')).toBe(true);
  });

  it('flattens runs of one operator and keeps the text', () => {
    const constraint = parseConstraint(' a&b&c ');
    expect(constraint.text).toBe('a&b&c');
    expect(constraint.root).toEqual({
      kind: 'and',
      operands: ['a', 'b', 'c'].map((name) => ({ kind: 'feature', name })),
    });
  });

  it.each([
    ['', 'constraint: empty'],
    ['  ', 'constraint: empty'],
    ['a&', 'constraint: ends after an operator'],
    ['&a', "constraint: expected a feature before '&' at 0"],
    ['a&|b', "constraint: expected a feature before '|' at 2"],
    ['a b', "constraint: unexpected feature 'b' at 2"],
    ['(a|b', "constraint: unbalanced '(' at 0"],
    ['a&[b|c', "constraint: unbalanced '[' at 2"],
    ['a|b)', "constraint: unbalanced ')' at 3"],
    ['a]', "constraint: unbalanced ']' at 1"],
    ['(a|b]', "constraint: ']' at 4 does not close '(' at 0"],
    ['[a|(b]', "constraint: ']' at 5 does not close '(' at 3"],
    ['[a|[b|c]]', "constraint: nested '[' at 3"],
    ['()', "constraint: empty '(' at 0"],
    ['a&[]', "constraint: empty '[' at 2"],
    ['a*2', "constraint: a node count ('*' at 1) needs a multi-node job"],
    ['[rack1*2&rack2*2]', "'*' at 6"],
    ['!gpu', "constraint: '!' at 0 is not Slurm syntax"],
    ['a,b', "constraint: ',' at 1 is not an operator: use '&' for AND"],
    ['a&b$', "constraint: invalid character '$' at 3"],
    ['gpu(a)', "constraint: unexpected '(' at 3"],
    ['  a&', 'ends after an operator'],
    ['  &a', "before '&' at 2"],
  ])('refuses %j: %s', (expression, message) => {
    const error = constraintError(expression);
    expect(error.message).toContain(message);
  });

  it('refuses expressions longer than the limit, and very deep nesting', () => {
    expect(constraintError(`a${'&a'.repeat(MAX_CONSTRAINT_LENGTH)}`).message).toContain('longer than 1024');
    expect(parseConstraint(`a${'&b'.repeat(500)}`).root.kind).toBe('and');
    expect(constraintError(`${'('.repeat(40)}a${')'.repeat(40)}`).message).toContain('nested too deeply');
  });
});

describe('constraintFeatures', () => {
  it('lists every feature named, once, in order of appearance', () => {
    expect(constraintFeatures(parseConstraint('avx512&(ssd|nvme)&[a100|avx512]'))).toEqual([
      'avx512',
      'ssd',
      'nvme',
      'a100',
    ]);
  });
});

type Tree = { kind: 'feature'; name: string } | { kind: '&' | '|'; left: Tree; right: Tree };

/** Written for Slurm's left-to-right reading: only a compound right operand needs parentheses. */
function render(tree: Tree, wrapAll: boolean): string {
  if (tree.kind === 'feature') return wrapAll ? `(${tree.name})` : tree.name;
  const right = render(tree.right, wrapAll);
  const text = `${render(tree.left, wrapAll)}${tree.kind}${tree.right.kind === 'feature' ? right : `(${right})`}`;
  return wrapAll ? `(${text})` : text;
}

function evaluateTree(tree: Tree, features: ReadonlySet<string>): boolean {
  if (tree.kind === 'feature') return features.has(tree.name);
  const left = evaluateTree(tree.left, features);
  const right = evaluateTree(tree.right, features);
  return tree.kind === '&' ? left && right : left || right;
}

describe('properties', () => {
  const names = ['a', 'b', 'c', 'd'];
  const tree: fc.Arbitrary<Tree> = fc.letrec<{ tree: Tree }>((tie) => ({
    tree: fc.oneof(
      { depthSize: 'small', withCrossShrink: true },
      fc.constantFrom(...names).map((name) => ({ kind: 'feature' as const, name })),
      fc.record({ kind: fc.constantFrom('&' as const, '|' as const), left: tie('tree'), right: tie('tree') }),
    ),
  })).tree;
  const featureSet = fc.subarray(names).map((list) => new Set(list));

  it('evaluates as the expression tree it was written from', () => {
    fc.assert(
      fc.property(tree, fc.boolean(), featureSet, (t, wrapAll, features) => {
        const text = render(t, wrapAll);
        if (text.length > MAX_CONSTRAINT_LENGTH) return;
        expect(evaluateConstraint(parseConstraint(text), features)).toBe(evaluateTree(t, features));
      }),
      { seed: SEED, numRuns: 500 },
    );
  });

  it('without parentheses, folds left to right (Slurm)', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...names),
        fc.array(fc.tuple(fc.constantFrom('&', '|'), fc.constantFrom(...names)), { maxLength: 8 }),
        featureSet,
        (first, rest, features) => {
          let expected = features.has(first);
          for (const [op, name] of rest) {
            expected = op === '&' ? expected && features.has(name) : expected || features.has(name);
          }
          const text = first + rest.map(([op, name]) => op + name).join('');
          expect(evaluateConstraint(parseConstraint(text), features)).toBe(expected);
          expect(evaluateConstraint(parseConstraint(`[${text}]`), features)).toBe(expected);
        },
      ),
      { seed: SEED, numRuns: 500 },
    );
  });

  it('any string either parses or is refused with a ConstraintError', () => {
    fc.assert(
      fc.property(
        fc.string({ unit: fc.constantFrom('a', 'b', '&', '|', '(', ')', '[', ']', '*', '!', ' ', '2') }),
        (text) => {
          try {
            const constraint = parseConstraint(text);
            for (const feature of constraintFeatures(constraint)) expect(text).toContain(feature);
          } catch (error) {
            expect(error).toBeInstanceOf(ConstraintError);
            expect((error as Error).message.startsWith('constraint: ')).toBe(true);
          }
        },
      ),
      { seed: SEED, numRuns: 1000 },
    );
  });
});
