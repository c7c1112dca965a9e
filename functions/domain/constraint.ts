/**
 * Slurm `--constraint` expressions over node features: `avx512&(ssd|nvme)`, `[a100|h100]`.
 *
 * - `&` is AND, `|` is OR, parentheses group.
 * - Slurm applies `&` and `|` strictly left to right, with no precedence between them: `a|b&c` is
 *   `(a|b)&c` (slurmctld folds each feature into the running result with the operator before it). This
 *   parser does the same, so an expression means here what it means in Slurm.
 * - `[a|b|c]` is Slurm's matching OR: every node of the job must have the same one of them. A job runs on
 *   one node, so it is the plain OR; the brackets are kept in the tree for display. Brackets do not nest.
 * - `a*2` (a count of nodes with a feature) needs several nodes: refused. `!` and `,` are not Slurm
 *   operators: refused, with the operator to use instead.
 * - Features are letters, digits and `_ . : = + -`.
 */

export class ConstraintError extends Error {
  constructor(
    message: string,
    /** Where in the expression (0-based), when the problem has one place. */
    readonly position: number | null = null,
  ) {
    super(message);
    this.name = 'ConstraintError';
  }
}

export const MAX_CONSTRAINT_LENGTH = 1024;

export type ConstraintNode =
  | { kind: 'feature'; name: string }
  | { kind: 'and'; operands: ConstraintNode[] }
  | { kind: 'or'; operands: ConstraintNode[] }
  /** `[...]`: Slurm's matching OR; on one node, its contents. */
  | { kind: 'matching'; operand: ConstraintNode };

export interface Constraint {
  /** The expression as given, trimmed. */
  text: string;
  root: ConstraintNode;
}

const FEATURE_CHAR = /[A-Za-z0-9_.:=+-]/;

type Token =
  | { kind: 'feature'; name: string; position: number }
  | { kind: '&' | '|' | '(' | ')' | '[' | ']' | 'end'; position: number };

function tokenize(text: string): Token[] {
  const tokens: Token[] = [];
  let i = 0;
  while (i < text.length) {
    const c = text[i]!;
    if (c === ' ' || c === '\t') {
      i++;
    } else if (c === '&' || c === '|' || c === '(' || c === ')' || c === '[' || c === ']') {
      tokens.push({ kind: c, position: i });
      i++;
    } else if (FEATURE_CHAR.test(c)) {
      const start = i;
      while (i < text.length && FEATURE_CHAR.test(text[i]!)) i++;
      tokens.push({ kind: 'feature', name: text.slice(start, i), position: start });
    } else if (c === '*') {
      throw new ConstraintError(
        `constraint: a node count ('*' at ${i}) needs a multi-node job; conductor runs each job on one node`,
        i,
      );
    } else if (c === '!') {
      throw new ConstraintError(`constraint: '!' at ${i} is not Slurm syntax (there is no NOT)`, i);
    } else if (c === ',') {
      throw new ConstraintError(`constraint: ',' at ${i} is not an operator: use '&' for AND`, i);
    } else {
      throw new ConstraintError(
        `constraint: invalid character '${c}' at ${i} (features are letters, digits and _ . : = + -)`,
        i,
      );
    }
  }
  tokens.push({ kind: 'end', position: text.length });
  return tokens;
}

/**
 * Deeper nesting is refused: it bounds the parser's recursion, and Slurm's own evaluator keeps a single level
 * of parentheses, so nothing written for Slurm needs more.
 */
const MAX_NESTING = 32;

class Parser {
  private index = 0;
  private readonly openers: Token[] = [];

  constructor(private readonly tokens: Token[]) {}

  private peek(): Token {
    return this.tokens[this.index]!;
  }

  parse(): ConstraintNode {
    const root = this.expression();
    const next = this.peek();
    if (next.kind !== 'end') throw this.unexpected(next);
    return root;
  }

  private unexpected(token: Token): ConstraintError {
    if (token.kind === ')' || token.kind === ']') {
      const open = this.openers.at(-1);
      if (!open)
        return new ConstraintError(
          `constraint: unbalanced '${token.kind}' at ${token.position}`,
          token.position,
        );
      return new ConstraintError(
        `constraint: '${token.kind}' at ${token.position} does not close '${open.kind}' at ${open.position}`,
        token.position,
      );
    }
    if (token.kind === 'end') {
      const open = this.openers.at(-1);
      if (open)
        return new ConstraintError(
          `constraint: unbalanced '${open.kind}' at ${open.position}`,
          open.position,
        );
      return new ConstraintError(`constraint: ends after an operator`, token.position);
    }
    const what = token.kind === 'feature' ? `feature '${token.name}'` : `'${token.kind}'`;
    return new ConstraintError(`constraint: unexpected ${what} at ${token.position}`, token.position);
  }

  /** operand (op operand)*, folded left to right as Slurm does. */
  private expression(): ConstraintNode {
    let result = this.operand();
    for (;;) {
      const op = this.peek();
      if (op.kind !== '&' && op.kind !== '|') return result;
      this.index++;
      const right = this.operand();
      const kind = op.kind === '&' ? 'and' : 'or';
      result =
        result.kind === kind
          ? { kind, operands: [...result.operands, right] }
          : { kind, operands: [result, right] };
    }
  }

  private operand(): ConstraintNode {
    const token = this.peek();
    if (token.kind === 'feature') {
      this.index++;
      return { kind: 'feature', name: token.name };
    }
    if (token.kind === '(' || token.kind === '[') {
      if (token.kind === '[' && this.openers.some((o) => o.kind === '[')) {
        throw new ConstraintError(`constraint: nested '[' at ${token.position}`, token.position);
      }
      if (this.openers.length >= MAX_NESTING) {
        throw new ConstraintError(`constraint: nested too deeply at ${token.position}`, token.position);
      }
      this.openers.push(token);
      this.index++;
      if (this.peek().kind === (token.kind === '(' ? ')' : ']')) {
        throw new ConstraintError(`constraint: empty '${token.kind}' at ${token.position}`, token.position);
      }
      const inner = this.expression();
      const close = this.peek();
      if (close.kind !== (token.kind === '(' ? ')' : ']')) throw this.unexpected(close);
      this.openers.pop();
      this.index++;
      return token.kind === '[' ? { kind: 'matching', operand: inner } : inner;
    }
    if (token.kind === '&' || token.kind === '|') {
      throw new ConstraintError(
        `constraint: expected a feature before '${token.kind}' at ${token.position}`,
        token.position,
      );
    }
    throw this.unexpected(token);
  }
}

/** Parses a constraint, or throws a ConstraintError that says what is wrong and where. */
export function parseConstraint(expression: string): Constraint {
  if (expression.length > MAX_CONSTRAINT_LENGTH) {
    throw new ConstraintError(`constraint: longer than ${MAX_CONSTRAINT_LENGTH} characters`);
  }
  const text = expression.trim();
  if (text === '') throw new ConstraintError('constraint: empty');
  // Tokenized untrimmed (whitespace is skipped) so that positions refer to the expression as given.
  return { text, root: new Parser(tokenize(expression)).parse() };
}

function evaluateNode(node: ConstraintNode, features: ReadonlySet<string>): boolean {
  switch (node.kind) {
    case 'feature':
      return features.has(node.name);
    case 'and':
      return node.operands.every((operand) => evaluateNode(operand, features));
    case 'or':
      return node.operands.some((operand) => evaluateNode(operand, features));
    case 'matching':
      return evaluateNode(node.operand, features);
  }
}

/** Whether a node with these features satisfies the constraint. */
export function evaluateConstraint(constraint: Constraint, features: ReadonlySet<string>): boolean {
  return evaluateNode(constraint.root, features);
}

/** Every feature the constraint names, once each, in order of appearance. */
export function constraintFeatures(constraint: Constraint): string[] {
  const names = new Set<string>();
  const visit = (node: ConstraintNode) => {
    if (node.kind === 'feature') names.add(node.name);
    else if (node.kind === 'matching') visit(node.operand);
    else for (const operand of node.operands) visit(operand);
  };
  visit(constraint.root);
  return [...names];
}
