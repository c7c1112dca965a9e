/**
 * Slurm hostlists for the drop-in commands: sinfo prints node names compressed (`node[01-03],gpu01`) and
 * takes them in `-n`. The control plane's hostlist module (functions/domain/hostlist.ts) cannot be loaded by
 * the CLI, which ships alone (test/cli/module-graph.test.ts), so this is the small part the commands need.
 */

const pad = (n: number, width: number) => String(n).padStart(width, '0');

/** Names that differ only in their last number are merged: `n1,n2,n3,gpu01` -> `gpu01,n[1-3]`. */
export function compressHostlist(names: readonly string[]): string {
  const groups = new Map<string, { prefix: string; width: number; numbers: Set<number> }>();
  const items: { key: string; text: string }[] = [];
  for (const name of new Set(names)) {
    const match = /^(.*?)(\d{1,15})$/.exec(name);
    if (!match) {
      items.push({ key: name, text: name });
      continue;
    }
    const [, prefix = '', digits = ''] = match;
    const width = digits.length > 1 && digits.startsWith('0') ? digits.length : 1;
    const key = `${prefix}\u0000${width}`;
    const group = groups.get(key) ?? { prefix, width, numbers: new Set<number>() };
    groups.set(key, group);
    group.numbers.add(Number(digits));
  }
  for (const [key, group] of groups) {
    const sorted = [...group.numbers].sort((a, b) => a - b);
    const runs: string[] = [];
    for (let i = 0; i < sorted.length; ) {
      let j = i;
      while (j + 1 < sorted.length && sorted[j + 1] === (sorted[j] as number) + 1) j++;
      const lo = pad(sorted[i] as number, group.width);
      runs.push(i === j ? lo : `${lo}-${pad(sorted[j] as number, group.width)}`);
      i = j + 1;
    }
    const single = sorted.length === 1;
    items.push({ key, text: single ? `${group.prefix}${runs[0]}` : `${group.prefix}[${runs.join(',')}]` });
  }
  items.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  return items.map((item) => item.text).join(',');
}

/** Items of a hostlist: split at commas outside brackets. */
function items(spec: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i <= spec.length; i++) {
    const c = spec[i];
    if (c === '[') depth++;
    else if (c === ']') depth--;
    else if (c === undefined || (c === ',' && depth === 0)) {
      const item = spec.slice(start, i).trim();
      if (item !== '') out.push(item);
      start = i + 1;
    }
  }
  return out;
}

/** "This name is in the hostlist", without expanding it. */
export function hostlistMatcher(spec: string): (name: string) => boolean {
  const patterns = items(spec).map((item) => {
    const ranges: { lo: number; hi: number; width: number }[][] = [];
    const source = item.replace(/\[([^\]]*)\]|[^[]+/g, (whole, group: string | undefined) => {
      if (group === undefined) return whole.replace(/[.*+?^${}()|\\]/g, '\\$&');
      ranges.push(
        group.split(',').map((part) => {
          const [lo = '', hi = lo] = part.trim().split('-');
          return { lo: Number(lo), hi: Number(hi), width: lo.length };
        }),
      );
      return '(\\d+)';
    });
    return { regex: new RegExp(`^${source}$`), ranges };
  });
  return (name) =>
    patterns.some(({ regex, ranges }) => {
      const match = regex.exec(name);
      return (
        match !== null &&
        ranges.every((group, i) => {
          const digits = match[i + 1] as string;
          const n = Number(digits);
          return group.some(
            (r) => n >= r.lo && n <= r.hi && (r.width > 1 ? digits.length === r.width : !/^0\d/.test(digits)),
          );
        })
      );
    });
}
