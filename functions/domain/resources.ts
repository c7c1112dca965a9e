/**
 * Slurm's resource request syntax: `--mem`, `--gres`, `--gpus` and `--nodes`. Every error names the field
 * it is about, so the HTTP layer can hand the message to the user as it is.
 */

export class ResourceError extends Error {
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(`${field}: ${message}`);
    this.name = 'ResourceError';
  }
}

/** 1 PiB in MB: far above any node, far below the loss of integer precision. */
export const MAX_MEMORY_MB = 1024 ** 3;
export const MAX_GRES_COUNT = 1_000_000;

const MB_PER_UNIT: Record<string, number> = { K: 1 / 1024, M: 1, G: 1024, T: 1024 ** 2 };
// B only after a unit: a bare `512B` reads as bytes, which Slurm does not take either.
const SIZE = /^(\d{1,16})\s*(?:([KMGT])B?)?$/i;
const GRES_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;
const COUNT = /^\d{1,16}$/;

const quoted = (value: unknown) => JSON.stringify(value);

/**
 * Memory in MB: a number is MB; a string is digits with an optional unit K, M, G or T (powers of 1024,
 * optionally followed by B, any case); no unit is MB. Kilobytes round up to whole MB. 0 is returned as 0:
 * Slurm's `--mem=0` means all the memory of the node, which is the caller's to apply.
 */
export function parseMemorySize(value: number | string, field = 'memory'): number {
  let mb: number;
  if (typeof value === 'number') {
    if (!Number.isInteger(value) || value < 0) {
      throw new ResourceError(field, `${value} is not a whole, non-negative number of MB`);
    }
    mb = value;
  } else if (typeof value === 'string') {
    const match = SIZE.exec(value.trim());
    if (!match) {
      throw new ResourceError(
        field,
        `${quoted(value)} is not a memory size (MB as a number, or a whole number with K, M, G or T: "4G", "512M")`,
      );
    }
    mb = Math.ceil(Number(match[1]) * MB_PER_UNIT[(match[2] ?? 'M').toUpperCase()]!);
  } else {
    throw new ResourceError(field, 'must be a number of MB or a string like "4G"');
  }
  if (mb > MAX_MEMORY_MB) throw new ResourceError(field, `${quoted(value)} is more than ${MAX_MEMORY_MB} MB`);
  return mb;
}

function parseCount(text: string, field: string, what: string): number {
  if (!COUNT.test(text))
    throw new ResourceError(field, `count ${quoted(text)} of ${what} is not a whole number`);
  const count = Number(text);
  if (count < 1 || count > MAX_GRES_COUNT) {
    throw new ResourceError(field, `count ${count} of ${what} must be between 1 and ${MAX_GRES_COUNT}`);
  }
  return count;
}

export interface GresRequest {
  gpus: number;
  /** null: any type. */
  gpuType: string | null;
  /** Every other generic resource by name, with its count. */
  gres: Record<string, number>;
}

/**
 * Slurm's `--gres`: comma-separated `name[:type][:count]` (count 1 when absent), e.g.
 * `gpu:a100:2,nvme:1,license_matlab`. `gpu` fills gpus/gpuType; the rest go to gres by name. The same name
 * twice is refused (the user meant one count, we would have to guess which). A type is accepted for gpu
 * only: the gres of a node are counted by name, so a typed `nvme:samsung:1` could only be honoured by
 * ignoring the type, which would hand out what was not asked for. `""` and `"none"` request nothing.
 */
export function parseGres(spec: string, field = 'gres'): GresRequest {
  const result: GresRequest = { gpus: 0, gpuType: null, gres: {} };
  const text = spec.trim();
  if (text === '' || text.toLowerCase() === 'none') return result;
  const seen = new Map<string, string | null>();
  for (const rawItem of text.split(',')) {
    const item = rawItem.trim();
    if (item === '') throw new ResourceError(field, `empty item in ${quoted(spec)}`);
    const parts = item.split(':');
    if (parts.length > 3) {
      throw new ResourceError(field, `${quoted(item)} is not name[:type][:count]`);
    }
    const name = parts[0]!;
    if (!GRES_NAME.test(name)) {
      throw new ResourceError(
        field,
        `${quoted(name)} is not a resource name (a letter or digit, then letters, digits, '.', '_', '-')`,
      );
    }
    let type: string | null = null;
    let count = 1;
    if (parts.length === 3) {
      type = parts[1]!;
      count = parseCount(parts[2]!, field, name);
    } else if (parts.length === 2) {
      // name:count or name:type, told apart as Slurm does: all digits is a count.
      if (COUNT.test(parts[1]!)) count = parseCount(parts[1]!, field, name);
      else type = parts[1]!;
    }
    if (type !== null && !GRES_NAME.test(type)) {
      throw new ResourceError(field, `${quoted(type)} is not a type of ${name}`);
    }
    if (seen.has(name)) {
      const earlier = seen.get(name) ?? null;
      if (name === 'gpu' && earlier !== type && earlier !== null && type !== null) {
        throw new ResourceError(
          field,
          `two GPU types (${earlier} and ${type}): a job runs on one node, so its GPUs are of one type`,
        );
      }
      throw new ResourceError(field, `${name} is given twice: give it once with the total count`);
    }
    seen.set(name, type);
    if (name === 'gpu') {
      result.gpus = count;
      result.gpuType = type;
    } else {
      if (type !== null) {
        throw new ResourceError(
          field,
          `${quoted(item)}: a type is supported for gpu only (use ${name}:${count})`,
        );
      }
      result.gres[name] = count;
    }
  }
  return result;
}

/**
 * Slurm's `--gpus` on one node: a count (`2`) or `type:count` (`a100:2`). 0 (as a number or "0") means
 * none; a type with a count of 0 is refused as a contradiction.
 */
export function parseGpus(value: number | string, field = 'gpus'): { gpus: number; gpuType: string | null } {
  if (typeof value === 'number') {
    if (!Number.isInteger(value) || value < 0 || value > MAX_GRES_COUNT) {
      throw new ResourceError(
        field,
        `${value} is not a whole number of GPUs between 0 and ${MAX_GRES_COUNT}`,
      );
    }
    return { gpus: value, gpuType: null };
  }
  if (typeof value !== 'string') throw new ResourceError(field, 'must be a number or a string like "a100:2"');
  const text = value.trim();
  if (text === '0') return { gpus: 0, gpuType: null };
  const parts = text.split(':');
  if (parts.length === 1 && COUNT.test(text)) return { gpus: parseCount(text, field, 'GPUs'), gpuType: null };
  if (parts.length === 2 && GRES_NAME.test(parts[0]!) && !COUNT.test(parts[0]!)) {
    return { gpus: parseCount(parts[1]!, field, `${parts[0]} GPUs`), gpuType: parts[0]! };
  }
  throw new ResourceError(field, `${quoted(value)} is not a GPU count ("2") or type:count ("a100:2")`);
}

const ONE_NODE_ONLY =
  'conductor runs each job on one node: nodes must be 1 (multi-node jobs are not supported yet)';

/** Slurm's `--nodes`: conductor accepts exactly one node, written 1, "1" or "1-1". */
export function parseNodeCount(value: number | string, field = 'nodes'): 1 {
  if (value === 1) return 1;
  if (typeof value === 'string' && /^\s*1(?:-1)?\s*$/.test(value)) return 1;
  throw new ResourceError(field, ONE_NODE_ONLY);
}
