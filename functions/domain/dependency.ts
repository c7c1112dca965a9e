/** sbatch `--dependency`: Slurm's syntax, parsed and checked before anything is stored. */

export const DEPENDENCY_KINDS = [
  'after',
  'afterany',
  'afterok',
  'afternotok',
  'aftercorr',
  'singleton',
] as const;
export type DependencyKind = (typeof DEPENDENCY_KINDS)[number];

export interface DependencyItem {
  kind: DependencyKind;
  /** The job it waits for; null for singleton. */
  targetJobId: number | null;
  /** Slurm's `+time` (minutes), in seconds. */
  delayS: number;
}

export interface Dependency {
  /** `?`: any one item satisfied is enough; `,`: all of them must be. */
  any: boolean;
  items: DependencyItem[];
}

export class DependencyError extends Error {}

const MAX_ITEMS = 1000;

/** Parses `type:id[+minutes][:id...]` items joined by `,` (all) or `?` (any); an empty string means none. */
export function parseDependency(text: string): Dependency | null {
  const spec = text.trim();
  if (spec === '') return null;
  if (spec.includes(',') && spec.includes('?')) {
    throw new DependencyError('dependency mixes "," (all) and "?" (any): use one of them');
  }
  const any = spec.includes('?');
  const items: DependencyItem[] = [];
  for (const part of spec.split(any ? '?' : ',')) {
    const [kind, ...targets] = part.trim().split(':');
    if (kind === 'singleton') {
      if (targets.length > 0) throw new DependencyError('singleton takes no job ids');
      items.push({ kind, targetJobId: null, delayS: 0 });
      continue;
    }
    if (!DEPENDENCY_KINDS.includes(kind as DependencyKind)) {
      throw new DependencyError(
        `unknown dependency type "${kind}" in "${part}": use after, afterany, afterok, afternotok, aftercorr or singleton`,
      );
    }
    if (targets.length === 0) throw new DependencyError(`"${part}" names no job id (${kind}:<job_id>)`);
    for (const target of targets) {
      const match = /^(\d{1,15})(?:\+(\d{1,6}))?$/.exec(target);
      if (!match) {
        throw new DependencyError(`"${target}" in "${part}" is not a job id with an optional +minutes delay`);
      }
      items.push({
        kind: kind as DependencyKind,
        targetJobId: Number(match[1]),
        delayS: Number(match[2] ?? 0) * 60,
      });
    }
  }
  if (items.length > MAX_ITEMS) throw new DependencyError(`a dependency names at most ${MAX_ITEMS} jobs`);
  return { any, items };
}

/** The job ids a dependency names, once each. */
export const dependencyTargets = (dep: Dependency): number[] => [
  ...new Set(dep.items.flatMap((i) => (i.targetJobId === null ? [] : [i.targetJobId]))),
];
