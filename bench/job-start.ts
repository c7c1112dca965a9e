/**
 * How long a job takes from its assignment reaching the agent's executor to its script's first line, with
 * the job contained in a cgroup: started cold (spawned, then moved into its cgroup while it waits at its
 * gate) and warm (a spare shell already in a cgroup becomes the job: agent/src/warm-start.ts).
 *
 *   npx tsx bench/job-start.ts          (root, on a machine with a writable cgroup; JOB_START_N=40 by default)
 *
 * Each job prints `date +%s%N` first; the time is taken from just before `startJob`. Jobs run one at a time,
 * 100 ms apart (a spare is ready again by then), alternating cold and warm so that both see the same load.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { detectContainment, removeContainment } from '../agent/src/containment.ts';
import { startJob } from '../agent/src/executor.ts';
import type { Assignment } from '../agent/src/protocol.ts';
import { closeWarmStarts, openWarmStarts, warmShellReady } from '../agent/src/warm-start.ts';
import { round, sleep, stats } from './lib.ts';

const N = Number(process.env.JOB_START_N ?? 40);
const root = mkdtempSync(join(tmpdir(), 'conductor-job-start-'));
const dirs = { cold: join(root, 'cold', 'jobs'), warm: join(root, 'warm', 'jobs') };
const containment = {
  cold: detectContainment(dirs.cold, 'auto'),
  warm: detectContainment(dirs.warm, 'auto'),
};
if (!containment.warm.parent) {
  console.log(
    `no cgroup here (${containment.warm.description}): jobs start without a gate, nothing to compare`,
  );
  process.exit(0);
}
openWarmStarts(dirs.warm, containment.warm);

const times = { cold: [] as number[], warm: [] as number[] };
let id = 1;
for (let i = 0; i < N; i++) {
  for (const which of ['cold', 'warm'] as const) {
    while (which === 'warm' && !warmShellReady(dirs.warm)) await sleep(5);
    await sleep(100);
    const assignment: Assignment = {
      job_id: id++,
      attempt: 1,
      name: 'first-line',
      script: 'date +%s%N',
      cpus: 1,
      work_dir: null,
      environment: {},
      time_limit_s: null,
    };
    const before = performance.timeOrigin + performance.now();
    const job = startJob(assignment, { jobsDir: dirs[which], containment: containment[which] });
    await job.result;
    const firstLine = Number(readFileSync(job.stdoutPath, 'utf8').trim()) / 1e6;
    times[which].push(firstLine - before);
  }
}
await closeWarmStarts(dirs.warm);
removeContainment(containment.cold);
removeContainment(containment.warm);
rmSync(root, { recursive: true, force: true });

const [cold, warm] = [stats(times.cold), stats(times.warm)];
console.log(`job start to first line, ${N} jobs each, ${containment.warm.description}, load ${loadavg()[0]}`);
console.log(
  `  cold (spawned, gate until moved into its cgroup): p50 ${round(cold.median)} ms, p99 ${round(cold.p99)} ms`,
);
console.log(
  `  warm (a spare shell already in a cgroup):         p50 ${round(warm.median)} ms, p99 ${round(warm.p99)} ms`,
);
