/**
 * Slurm hostlists: `node[01-03,07],gpu01,rack[1-2]-n[1-2]`.
 *
 * - Items are separated by commas outside brackets; whitespace around an item is ignored.
 * - A bracket group holds comma-separated numbers and ranges `lo-hi`. Every number of a group is written with
 *   at least as many digits as the group's bound it comes from (`[08-10]`: 08, 09, 10; `[8-10]`: 8, 9, 10).
 * - Several groups in one item give their cross product (`rack[1-2]-n[1-2]`: rack1-n1, rack1-n2, ...).
 * - Node names are letters, digits, `.`, `_` and `-`.
 */

export class HostlistError extends Error {
  constructor(
    message: string,
    /** Where in the hostlist (0-based), when the problem has one place. */
    readonly position: number | null = null,
  ) {
    super(message);
    this.name = 'HostlistError';
  }
}

/** More names than this from one hostlist is a mistake (or an attack), not a cluster. */
export const MAX_HOSTLIST_NAMES = 65_536;
/** Longer hostlists are refused before parsing. */
export const MAX_HOSTLIST_LENGTH = 16_384;
/** Beyond this a bound loses integer precision in a double; no node is numbered like that. */
const MAX_NUMBER_DIGITS = 15;

interface NumberRange {
  lo: number;
  hi: number;
  /** Digits of the lower bound as written: numbers are zero-padded to this width. */
  width: number;
}

type Segment = { kind: 'text'; text: string } | { kind: 'ranges'; ranges: NumberRange[] };

interface HostPattern {
  segments: Segment[];
  /** Where the item starts in the hostlist, for messages. */
  position: number;
}

const NAME_CHAR = /[A-Za-z0-9._-]/;
const NAME = /^[A-Za-z0-9._-]+$/;

const pad = (n: number, width: number) => String(n).padStart(width, '0');

/** Items split at commas outside brackets, each with the position of its first character. */
function splitItems(spec: string): { text: string; position: number }[] {
  const items: { text: string; position: number }[] = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i <= spec.length; i++) {
    const c = spec[i];
    if (c === '[') {
      if (depth > 0) throw new HostlistError(`hostlist: nested '[' at ${i}`, i);
      depth++;
    } else if (c === ']') {
      if (depth === 0) throw new HostlistError(`hostlist: unbalanced ']' at ${i}`, i);
      depth--;
    } else if ((c === ',' && depth === 0) || c === undefined) {
      if (c === undefined && depth > 0) {
        const open = spec.lastIndexOf('[');
        throw new HostlistError(`hostlist: unbalanced '[' at ${open}`, open);
      }
      const raw = spec.slice(start, i);
      const text = raw.trim();
      items.push({ text, position: text === '' ? start : start + raw.indexOf(text) });
      start = i + 1;
    }
  }
  return items;
}

function parseNumber(text: string, position: number, group: string): string {
  const trimmed = text.trim();
  if (!/^\d+$/.test(trimmed)) {
    throw new HostlistError(
      `hostlist: '${trimmed}' in [${group}] at ${position} is not a number or a range lo-hi`,
      position,
    );
  }
  if (trimmed.length > MAX_NUMBER_DIGITS) {
    throw new HostlistError(`hostlist: number '${trimmed}' at ${position} is too long`, position);
  }
  return trimmed;
}

function parseRanges(group: string, position: number): NumberRange[] {
  const ranges: NumberRange[] = [];
  let offset = 0;
  for (const part of group.split(',')) {
    const at = position + offset;
    offset += part.length + 1;
    if (part.trim() === '') {
      throw new HostlistError(`hostlist: empty range in [${group}] at ${at}`, at);
    }
    const dash = part.indexOf('-');
    const loText = parseNumber(dash < 0 ? part : part.slice(0, dash), at, group);
    const hiText = dash < 0 ? loText : parseNumber(part.slice(dash + 1), at, group);
    const lo = Number(loText);
    const hi = Number(hiText);
    if (hi < lo) {
      throw new HostlistError(`hostlist: reversed range '${part.trim()}' at ${at} (${lo} > ${hi})`, at);
    }
    ranges.push({ lo, hi, width: loText.length });
  }
  return ranges;
}

function parseItem(text: string, position: number): HostPattern {
  if (text === '') throw new HostlistError(`hostlist: empty item at ${position}`, position);
  const segments: Segment[] = [];
  let i = 0;
  while (i < text.length) {
    const c = text[i]!;
    if (c === '[') {
      const close = text.indexOf(']', i);
      const group = text.slice(i + 1, close);
      if (group.trim() === '') {
        throw new HostlistError(`hostlist: empty brackets at ${position + i}`, position + i);
      }
      segments.push({ kind: 'ranges', ranges: parseRanges(group, position + i + 1) });
      i = close + 1;
    } else {
      let end = i;
      while (end < text.length && text[end] !== '[') {
        if (!NAME_CHAR.test(text[end]!)) {
          const at = position + end;
          throw new HostlistError(
            `hostlist: invalid character '${text[end]}' at ${at} in '${text}' (node names are letters, digits, '.', '_' and '-')`,
            at,
          );
        }
        end++;
      }
      segments.push({ kind: 'text', text: text.slice(i, end) });
      i = end;
    }
  }
  return { segments, position };
}

function parsePatterns(spec: string): HostPattern[] {
  if (spec.length > MAX_HOSTLIST_LENGTH) {
    throw new HostlistError(`hostlist: longer than ${MAX_HOSTLIST_LENGTH} characters`);
  }
  if (spec.trim() === '') throw new HostlistError('hostlist: empty');
  return splitItems(spec).map((item) => parseItem(item.text, item.position));
}

const rangeCount = (ranges: readonly NumberRange[]) => ranges.reduce((n, r) => n + (r.hi - r.lo + 1), 0);

/** Every name of the hostlist, in order, without repeats. */
export function expandHostlist(spec: string): string[] {
  const patterns = parsePatterns(spec);
  let total = 0;
  for (const pattern of patterns) {
    let count = 1;
    for (const segment of pattern.segments) {
      if (segment.kind === 'ranges') count *= rangeCount(segment.ranges);
    }
    total += count;
    if (total > MAX_HOSTLIST_NAMES) {
      throw new HostlistError(
        `hostlist: expands to more than ${MAX_HOSTLIST_NAMES} names (at the item at ${pattern.position})`,
        pattern.position,
      );
    }
  }
  const names = new Set<string>();
  for (const pattern of patterns) {
    let partial = [''];
    for (const segment of pattern.segments) {
      if (segment.kind === 'text') {
        partial = partial.map((p) => p + segment.text);
      } else {
        const next: string[] = [];
        for (const p of partial) {
          for (const r of segment.ranges) {
            for (let n = r.lo; n <= r.hi; n++) next.push(p + pad(n, r.width));
          }
        }
        partial = next;
      }
    }
    for (const name of partial) names.add(name);
  }
  return [...names];
}

function digitsMatch(digits: string, ranges: readonly NumberRange[]): boolean {
  const n = Number(digits);
  return ranges.some((r) => n >= r.lo && n <= r.hi && pad(n, r.width) === digits);
}

/** Whether the name is one of the pattern's, without expanding it: digit runs are tried against each group. */
function patternMatches(pattern: HostPattern, name: string): boolean {
  const { segments } = pattern;
  // (segment, offset) pairs already known not to lead to a match: keeps the search linear-ish.
  const failed = new Set<number>();
  const stride = name.length + 1;
  const matchFrom = (index: number, offset: number): boolean => {
    if (index === segments.length) return offset === name.length;
    const key = index * stride + offset;
    if (failed.has(key)) return false;
    const segment = segments[index]!;
    let matched = false;
    if (segment.kind === 'text') {
      matched = name.startsWith(segment.text, offset) && matchFrom(index + 1, offset + segment.text.length);
    } else {
      let end = offset;
      while (end < name.length && end - offset < MAX_NUMBER_DIGITS && /\d/.test(name[end]!)) {
        end++;
        if (digitsMatch(name.slice(offset, end), segment.ranges) && matchFrom(index + 1, end)) {
          matched = true;
          break;
        }
      }
    }
    if (!matched) failed.add(key);
    return matched;
  };
  return matchFrom(0, 0);
}

/**
 * A predicate for "this node is in the hostlist" that never expands it, so `node[0000-9999]` costs no more
 * than `node0001`. Malformed hostlists throw here, once, not in the predicate.
 */
export function hostlistMatcher(spec: string): (name: string) => boolean {
  const patterns = parsePatterns(spec);
  return (name) => patterns.some((pattern) => patternMatches(pattern, name));
}

/**
 * The names in Slurm's compact form, for display: names that differ only in their last number are merged
 * (`node01,node02,node03,gpu01` -> `gpu01,node[01-03]`), sorted by prefix. Expanding the result gives the
 * same set of names.
 */
export function compressHostlist(names: readonly string[]): string {
  interface NumberedGroup {
    prefix: string;
    /** Zero-padded width (1: not padded). */
    width: number;
    numbers: Set<number>;
  }
  const plain = new Set<string>();
  const parsed: { prefix: string; digits: string }[] = [];
  for (const name of names) {
    if (!NAME.test(name)) throw new HostlistError(`hostlist: '${name}' is not a valid node name`);
    const match = /^(.*?)(\d{1,15})$/.exec(name);
    if (match) parsed.push({ prefix: match[1]!, digits: match[2]! });
    else plain.add(name);
  }
  const key = (prefix: string, width: number) => `${prefix}\u0000${width}`;
  // A number written with leading zeros fixes its group's width; the others join such a group when their
  // length equals its width (node10 with node09), and otherwise the unpadded group.
  const paddedWidths = new Set<string>();
  for (const { prefix, digits } of parsed) {
    if (digits.length > 1 && digits.startsWith('0')) paddedWidths.add(key(prefix, digits.length));
  }
  const groups = new Map<string, NumberedGroup>();
  for (const { prefix, digits } of parsed) {
    const width = paddedWidths.has(key(prefix, digits.length)) ? digits.length : 1;
    const k = key(prefix, width);
    let group = groups.get(k);
    if (!group) {
      group = { prefix, width, numbers: new Set() };
      groups.set(k, group);
    }
    group.numbers.add(Number(digits));
  }
  const items: { sortKey: string; text: string }[] = [...plain].map((name) => ({
    sortKey: name,
    text: name,
  }));
  for (const group of groups.values()) {
    const sorted = [...group.numbers].sort((a, b) => a - b);
    const runs: string[] = [];
    let start = sorted[0]!;
    let previous = start;
    for (const n of [...sorted.slice(1), Number.NaN]) {
      if (n === previous + 1) {
        previous = n;
        continue;
      }
      runs.push(
        start === previous
          ? pad(start, group.width)
          : `${pad(start, group.width)}-${pad(previous, group.width)}`,
      );
      start = n;
      previous = n;
    }
    const single = sorted.length === 1;
    items.push({
      sortKey: `${group.prefix}\u0000${String(group.width).padStart(3, '0')}`,
      text: single ? `${group.prefix}${runs[0]}` : `${group.prefix}[${runs.join(',')}]`,
    });
  }
  items.sort((a, b) => (a.sortKey < b.sortKey ? -1 : a.sortKey > b.sortKey ? 1 : 0));
  return items.map((item) => item.text).join(',');
}
