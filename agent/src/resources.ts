/**
 * What this node offers jobs besides CPUs: memory (detected, minus a reserve for the system), GPUs (from
 * `nvidia-smi`, or GPUS=), generic resources, features and partitions (configured only). The parsers read
 * the values of TOTAL_MEMORY, MEMORY_RESERVE, GPUS, GRES, FEATURES and PARTITIONS; detection runs at start.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { totalmem } from 'node:os';
import type { GpuDevice } from './protocol.ts';

/** As the control plane tracks GPUs: indexes 0 to 62 (bits of a bigint per node). */
export const MAX_GPUS = 63;

/** Names of partitions, features, GPU models and generic resources (the control plane's rule). */
export const RESOURCE_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/;

const MIB = 1024 * 1024;

/**
 * `4096`, `4096M`, `4G`, `1T`, `512K`, `1.5G` (also with a trailing `B`, any case) → MB (MiB, rounded
 * down); a bare number is MB, as in Slurm's `--mem`. Undefined for anything else.
 */
export function parseMemoryMb(value: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?$/i.exec(value.trim());
  if (!m) return undefined;
  const unit = (m[2] || 'M').toUpperCase();
  const mb = Number(m[1]) * 1024 ** ('KMGT'.indexOf(unit) - 1);
  return Number.isFinite(mb) && mb <= 2 ** 31 - 1 ? Math.floor(mb) : undefined;
}

/** `a100:4` → four GPUs of model a100 at indexes 0-3; `4` → model `gpu`; `0` → none. Or why not. */
export function parseGpus(value: string): GpuDevice[] | { error: string } {
  const m = /^(?:([^:\s]+):)?(\d+)$/.exec(value.trim());
  const count = m ? Number(m[2]) : Number.NaN;
  const model = m?.[1] ?? 'gpu';
  if (!m || !Number.isSafeInteger(count) || count > MAX_GPUS || !RESOURCE_NAME_RE.test(model)) {
    return {
      error: `must be a GPU count (0 to ${MAX_GPUS}) or <model>:<count> such as a100:4, got ${JSON.stringify(value)}`,
    };
  }
  return Array.from({ length: count }, (_, index) => ({ index, model: model.toLowerCase() }));
}

/** `nvme:1,license_matlab:2,scratch` (count 1 when left out) → name → count, or why not. */
export function parseGres(value: string): Record<string, number> | { error: string } {
  const gres: Record<string, number> = {};
  for (const part of value.split(',')) {
    const item = part.trim();
    if (item === '') continue;
    const m = /^([^:]+)(?::(\d+))?$/.exec(item);
    const name = m?.[1] ?? '';
    const count = m?.[2] === undefined ? 1 : Number(m[2]);
    if (!m || !RESOURCE_NAME_RE.test(name) || !Number.isSafeInteger(count) || count > 1_000_000) {
      return {
        error: `must be <name>[:<count>] items separated by commas, such as nvme:1,license_matlab:2, got ${JSON.stringify(item)}`,
      };
    }
    if (name.toLowerCase() === 'gpu') return { error: 'must not name gpu (GPUs are set with GPUS)' };
    if (name in gres) return { error: `names ${name} twice` };
    gres[name] = count;
  }
  return gres;
}

/** `avx512, ssd` → names (features, partitions), or why not. */
export function parseNameList(value: string): string[] | { error: string } {
  const names: string[] = [];
  for (const part of value.split(',')) {
    const name = part.trim();
    if (name === '') continue;
    if (!RESOURCE_NAME_RE.test(name)) {
      return {
        error: `must be names (letters, digits, '.', '_' and '-') separated by commas, got ${JSON.stringify(name)}`,
      };
    }
    if (!names.includes(name)) names.push(name);
  }
  return names;
}

/** Kept for the system by default: the smaller of 1 GiB and 10 % of the machine. */
export function defaultMemoryReserveMb(totalMb: number): number {
  return Math.min(1024, Math.round(totalMb / 10));
}

/**
 * MB of memory jobs may use: `totalMb` (TOTAL_MEMORY) as given, less the reserve only when MEMORY_RESERVE
 * sets one; otherwise the machine's memory less `reserveMb` or the default reserve.
 */
export function jobMemoryMb(totalMb: number | undefined, reserveMb: number | undefined): number {
  if (totalMb !== undefined) return Math.max(0, totalMb - (reserveMb ?? 0));
  const machineMb = Math.floor(totalmem() / MIB);
  return Math.max(0, machineMb - (reserveMb ?? defaultMemoryReserveMb(machineMb)));
}

/**
 * `NVIDIA A100-SXM4-40GB` → `a100`, `Tesla V100-SXM2-16GB` → `v100`, `NVIDIA GeForce RTX 3090` → `rtx3090`:
 * lower case, vendor words dropped, spaces removed, cut at the first `-`.
 */
export function gpuModelName(name: string): string {
  const words = name
    .toLowerCase()
    .split(/\s+/)
    .filter((w) => w !== '' && !['nvidia', 'tesla', 'geforce', 'quadro'].includes(w));
  const model = words
    .join('')
    .split('-')[0]!
    .replace(/[^a-z0-9._]/g, '');
  return model === '' ? 'gpu' : model;
}

/** The GPUs in `nvidia-smi --query-gpu=index,name --format=csv,noheader` output. */
export function parseNvidiaSmi(output: string): GpuDevice[] {
  const gpus: GpuDevice[] = [];
  for (const line of output.split('\n')) {
    const m = /^\s*(\d+)\s*,\s*(.+?)\s*$/.exec(line);
    if (!m) continue;
    const index = Number(m[1]);
    if (index >= MAX_GPUS || gpus.some((g) => g.index === index)) continue;
    gpus.push({ index, model: gpuModelName(m[2]!) });
  }
  return gpus;
}

/**
 * The node's GPUs as `nvidia-smi` (looked up on `path`) lists them; none when it is not there. A failing
 * `nvidia-smi` (driver not loaded) is a warning: the node then offers no GPUs.
 */
export function detectGpus(path: string | undefined): { gpus: GpuDevice[]; warning?: string } {
  const run = spawnSync('nvidia-smi', ['--query-gpu=index,name', '--format=csv,noheader'], {
    encoding: 'utf8',
    timeout: 20_000,
    env: { ...process.env, PATH: path ?? '/usr/bin:/bin' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  if ((run.error as NodeJS.ErrnoException | undefined)?.code === 'ENOENT') return { gpus: [] };
  if (run.error || run.status !== 0) {
    const why = run.error?.message ?? (run.stderr.trim().split('\n')[0] || `exit code ${run.status}`);
    return { gpus: [], warning: `nvidia-smi failed (${why}): this node offers no GPUs` };
  }
  return { gpus: parseNvidiaSmi(run.stdout) };
}

/** `2 GPUs (a100:0,1)`, `3 GPUs (a100:0,1 v100:2)`, `no GPUs`. */
export function describeGpus(gpus: readonly GpuDevice[]): string {
  if (gpus.length === 0) return 'no GPUs';
  const byModel = new Map<string, number[]>();
  for (const g of gpus) byModel.set(g.model, [...(byModel.get(g.model) ?? []), g.index]);
  const groups = [...byModel].map(([model, indexes]) => `${model}:${indexes.join(',')}`);
  return `${gpus.length} GPU${gpus.length === 1 ? '' : 's'} (${groups.join(' ')})`;
}

/** `nvme:1,license_matlab:2`. */
export function formatGres(gres: Record<string, number>): string {
  return Object.entries(gres)
    .map(([name, count]) => `${name}:${count}`)
    .join(',');
}

/** Resident memory of `pid` in KiB (VmRSS of /proc/<pid>/status); 0 when it is gone or has none. */
export function processRssKb(pid: number): number {
  try {
    const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}
