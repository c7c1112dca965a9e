/**
 * Job arrays (sbatch `--array`): the index specification, Slurm's folded task lists (`[5-9%2]`) and task
 * selectors (`123`, `123_4`, `123_[1-3]`). Pure functions: no database here.
 */

/** Slurm's MaxArraySize default is 1001; Conductor's default allows arrays of 100,000 tasks, as many sites do. */
export const DEFAULT_MAX_ARRAY_SIZE = 100_001;

export interface ArraySpec {
  /** The task indexes, ascending, without repeats. */
  indexes: number[];
  /** `%N`: at most this many tasks run at once; null: no cap. */
  maxRunning: number | null;
  /** The specification without its `%N` as given, normalised (no spaces). */
  text: string;
}

export class ArraySpecError extends Error {}

/** One `a`, `a-b` or `a-b:s` item of a list. */
const ITEM = /^(\d+)(?:-(\d+)(?::(\d+))?)?$/;

/**
 * Parses `0-999`, `1,3,5-9`, `0-99:2`, each with an optional `%N` (at most N tasks running at once).
 * Every index must be below `maxArraySize` (Slurm's MaxArraySize: the largest index is MaxArraySize - 1), and
 * so is the count of tasks. Throws ArraySpecError with a message for people.
 */
export function parseArraySpec(input: string, maxArraySize: number = DEFAULT_MAX_ARRAY_SIZE): ArraySpec {
  const spec = input.replace(/\s+/g, '');
  if (spec === '') throw new ArraySpecError('the array specification is empty');
  const percent = spec.indexOf('%');
  const list = percent < 0 ? spec : spec.slice(0, percent);
  let maxRunning: number | null = null;
  if (percent >= 0) {
    const cap = spec.slice(percent + 1);
    if (!/^\d+$/.test(cap) || Number(cap) < 1) {
      throw new ArraySpecError(`"%${cap}" is no task limit: write %N with N a whole number, at least 1`);
    }
    maxRunning = Math.min(Number(cap), maxArraySize);
  }
  if (list === '') throw new ArraySpecError('the array specification lists no index');
  const seen = new Set<number>();
  for (const item of list.split(',')) {
    const m = ITEM.exec(item);
    if (!m) {
      throw new ArraySpecError(
        `"${item}" is no array index item: write N, N-M or N-M:S (for example 0-999, 1,3,5-9 or 0-99:2)`,
      );
    }
    const first = Number(m[1]);
    const last = m[2] === undefined ? first : Number(m[2]);
    const step = m[3] === undefined ? 1 : Number(m[3]);
    if (last < first) throw new ArraySpecError(`"${item}": the range ends before it starts`);
    if (step < 1) throw new ArraySpecError(`"${item}": the step must be at least 1`);
    if (last >= maxArraySize) {
      throw new ArraySpecError(
        `index ${last} is too large: the largest index is ${maxArraySize - 1} (MaxArraySize ${maxArraySize}, CONDUCTOR_MAX_ARRAY_SIZE)`,
      );
    }
    for (let i = first; i <= last; i += step) {
      seen.add(i);
      if (seen.size > maxArraySize) {
        throw new ArraySpecError(`the array has more than ${maxArraySize} tasks (MaxArraySize)`);
      }
    }
  }
  return { indexes: [...seen].sort((a, b) => a - b), maxRunning, text: list };
}

/** SLURM_ARRAY_TASK_COUNT, _MIN, _MAX and _STEP of an array's indexes (ascending). */
export function arrayBounds(indexes: readonly number[]) {
  const min = indexes[0] ?? 0;
  const max = indexes.at(-1) ?? 0;
  // The common difference when the indexes are evenly spaced (0-99:2 → 2), else 1.
  let step = indexes.length > 1 ? (indexes[1] as number) - min : 1;
  for (let k = 2; k < indexes.length && step !== 1; k++) {
    if ((indexes[k] as number) - (indexes[k - 1] as number) !== step) step = 1;
  }
  return { count: indexes.length, min, max, step };
}

/**
 * Folds indexes (any order) into Slurm's list: `1,3,5-9`, and `0-98:2` for an evenly spaced run of three or
 * more. Runs of consecutive indexes become `a-b`.
 */
export function foldIndexes(indexes: Iterable<number>): string {
  const sorted = [...new Set(indexes)].sort((a, b) => a - b);
  const parts: string[] = [];
  let k = 0;
  while (k < sorted.length) {
    const first = sorted[k] as number;
    let end = k;
    while (end + 1 < sorted.length && (sorted[end + 1] as number) === (sorted[end] as number) + 1) end++;
    if (end > k) {
      parts.push(`${first}-${sorted[end]}`);
      k = end + 1;
      continue;
    }
    parts.push(String(first));
    k++;
  }
  return parts.join(',');
}

/** A job selector: a job id (`123`, the whole array when 123 is one), a task (`123_4`) or tasks (`123_[1-3]`). */
export interface JobSelector {
  id: number;
  /** Null: the job, or the whole array. Otherwise the task indexes named. */
  tasks: number[] | null;
}

/**
 * Parses `123`, `123_4`, `123_[1-3,7]` (Slurm's job ids for scancel and scontrol). Returns null when `text`
 * is none of these.
 */
export function parseJobSelector(
  text: string,
  maxArraySize: number = DEFAULT_MAX_ARRAY_SIZE,
): JobSelector | null {
  const m = /^(\d+)(?:_(\d+|\[[^\]]*\]))?$/.exec(text.trim());
  if (!m) return null;
  const id = Number(m[1]);
  if (!Number.isSafeInteger(id) || id < 1) return null;
  if (m[2] === undefined) return { id, tasks: null };
  const inner = m[2].startsWith('[') ? m[2].slice(1, -1) : m[2];
  try {
    return { id, tasks: parseTaskList(inner, maxArraySize) };
  } catch {
    return null;
  }
}

/** A list of task indexes (`4`, `1-3`, `[1-3,7]`, `0-9:2`), without a `%N`. Throws ArraySpecError. */
export function parseTaskList(text: string, maxArraySize: number = DEFAULT_MAX_ARRAY_SIZE): number[] {
  const inner = text.trim().replace(/^\[(.*)\]$/, '$1');
  if (inner.includes('%')) throw new ArraySpecError('a task list takes no %N');
  return parseArraySpec(inner, maxArraySize).indexes;
}
