/**
 * The mixed-resource cluster and queue of bench/run.ts's scenarios 2m and 2f: node shapes as agents register
 * them (registerWorker's body) and job requests as clients submit them (submitJobsBatch's body), drawn from a
 * seeded generator so that every run, and both policies of the fragmentation scenario, see the same mix.
 */
import type { RegisterRequest } from '../agent/src/protocol.ts';
import type { SubmitJobInput } from '../functions/domain/jobs.ts';

/** mulberry32: a small seeded generator (the same sequence every run). */
export function seeded(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const pick = <T>(list: readonly T[]): T => list[Math.floor(next() * list.length)] as T;
  return { next, pick };
}

export const CPU_NODES = 800;
export const GPU_NODES = 200;
const GB = 1024;

/**
 * 1,000 nodes: 800 CPU nodes (96 CPUs, 384 GB; features avx512+ssd 40 %, avx512 20 %, ssd 20 %, arm64 10 %,
 * arm64+ssd 10 %; the first 300 in partition `batch`, the rest in the default one) and 200 GPU nodes
 * (partition `gpu`, 64 CPUs, 1 TB, avx512+ssd, gres nvme:1; odd ones 4 × a100, even ones 8 × h100).
 */
export function mixedWorkers(cpuNodes = CPU_NODES, gpuNodes = GPU_NODES): RegisterRequest[] {
  const workers: RegisterRequest[] = [];
  const featureMix = [
    ['avx512', 'ssd'],
    ['avx512', 'ssd'],
    ['avx512', 'ssd'],
    ['avx512', 'ssd'],
    ['avx512'],
    ['avx512'],
    ['ssd'],
    ['ssd'],
    ['arm64'],
    ['arm64', 'ssd'],
  ];
  for (let i = 1; i <= cpuNodes; i++) {
    workers.push({
      worker_id: `cpu-${String(i).padStart(5, '0')}`,
      hostname: `cpu${i}`,
      cpus: 96,
      memory_mb: 384 * GB,
      features: featureMix[i % 10],
      partitions: i <= Math.round(cpuNodes * 0.375) ? ['batch'] : [],
    });
  }
  for (let i = 1; i <= gpuNodes; i++) {
    const a100 = i % 2 === 1;
    workers.push({
      worker_id: `gpu-${String(i).padStart(5, '0')}`,
      hostname: `gpu${i}`,
      cpus: 64,
      memory_mb: 1024 * GB,
      gpus: Array.from({ length: a100 ? 4 : 8 }, (_, index) => ({
        index,
        model: a100 ? 'a100' : 'h100',
      })),
      gres: { nvme: 1 },
      features: ['avx512', 'ssd'],
      partitions: ['gpu'],
    });
  }
  return workers;
}

/**
 * One job of the mixed queue:
 * - 50 % CPU jobs in the default partition (1–16 CPUs; 40 % with --mem-per-cpu, 30 % with --mem; 20 % with a
 *   constraint: `avx512`, `avx512&ssd` or `[ssd|arm64]`),
 * - 15 % in `batch` (4–32 CPUs, 4 GB per CPU, 10 % `avx512`), 10 % in `batch,default` (1–8 CPUs, 16 GB),
 * - 15 % GPU jobs in `gpu` (1, 2 or 4 GPUs, half of them typed a100/h100; 4–16 CPUs, 64–256 GB; 20 % also
 *   gres nvme:1), 4 % staging jobs in `gpu` (2 CPUs, 8 GB, gres nvme:1, no GPU),
 * - 5.8 % one-CPU jobs with 1 GB per CPU, 0.2 % exclusive (whole node, default or `batch`).
 * Half of them have a time limit (30 min to 4 h).
 */
export function mixedJob(rng: ReturnType<typeof seeded>): SubmitJobInput {
  const r = rng.next();
  const job: SubmitJobInput = { name: 'mixed', script: 'true', cpus: 1 };
  if (rng.next() < 0.5) job.time_limit = rng.pick(['30', '1:00:00', '2:00:00', '4:00:00']);
  if (r < 0.5) {
    job.cpus = rng.pick([1, 1, 2, 2, 4, 4, 8, 16]);
    const m = rng.next();
    if (m < 0.4) job.memory_per_cpu = rng.pick(['2G', '3500M', '4G', '6G']);
    else if (m < 0.7) job.memory_per_node = rng.pick(['8G', '16G', '32G', '64G']);
    const c = rng.next();
    if (c < 0.1) job.constraint = 'avx512';
    else if (c < 0.15) job.constraint = 'avx512&ssd';
    else if (c < 0.2) job.constraint = '[ssd|arm64]';
  } else if (r < 0.65) {
    job.partition = 'batch';
    job.cpus = rng.pick([4, 8, 16, 32]);
    job.memory_per_cpu = '4G';
    if (rng.next() < 0.1) job.constraint = 'avx512';
  } else if (r < 0.75) {
    job.partition = 'batch,default';
    job.cpus = rng.pick([1, 2, 4, 8]);
    job.memory_per_node = '16G';
  } else if (r < 0.9) {
    job.partition = 'gpu';
    const n = rng.pick([1, 1, 2, 4]);
    const t = rng.next();
    job.gpus = t < 0.25 ? `a100:${n}` : t < 0.5 ? `h100:${n}` : n;
    job.cpus = rng.pick([4, 8, 16]);
    job.memory_per_node = rng.pick(['64G', '128G', '256G']);
    if (rng.next() < 0.2) job.gres = 'nvme:1';
  } else if (r < 0.94) {
    job.partition = 'gpu';
    job.cpus = 2;
    job.memory_per_node = '8G';
    job.gres = 'nvme:1';
  } else if (r < 0.998) {
    job.memory_per_cpu = '1G';
  } else {
    job.exclusive = true;
    if (rng.next() < 0.5) job.partition = 'batch';
  }
  return job;
}

export function mixedJobs(n: number, seed = 14): SubmitJobInput[] {
  const rng = seeded(seed);
  return Array.from({ length: n }, () => mixedJob(rng));
}

/**
 * The small jobs of the fragmentation scenario: 1–16 CPUs (mostly 1–4), 2–4 GB per CPU, in the default
 * partition, no GPUs: what leaves holes on nodes.
 */
export function smallJob(rng: ReturnType<typeof seeded>): SubmitJobInput {
  return {
    name: 'small',
    script: 'true',
    cpus: rng.pick([1, 1, 1, 2, 2, 4, 4, 8, 12, 16]),
    memory_per_cpu: rng.pick(['2G', '3G', '4G']),
  };
}
