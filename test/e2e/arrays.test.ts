/**
 * sbatch `--array` end to end: the Node server (real Postgres and Redis), a real agent with room for every
 * task, and the drop-in Slurm commands. A `%2` array never runs more than 2 tasks at once (the tasks record
 * their own start and end times), every task sees its SLURM_ARRAY_* ids and writes to `%A_%a` files, and
 * squeue folds the pending tasks as Slurm does.
 */
import { execFile, execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { delimiter, join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningServer } from '../../functions/node/server.ts';
import { AgentProcess, eventually } from '../support/agent-process.ts';
import { availableBackends, type Backend, startTestServer, testConfig } from '../support/cluster.ts';

const ROOT = join(import.meta.dirname, '..', '..');
const [factory] = await availableBackends();

interface ArrayView {
  array_job_id: number;
  counts: { pending: number; running: number; completed: number; failed: number; cancelled: number };
  pending_id: string | null;
}

/** The most intervals [start, end] open at one instant. */
function maxOverlap(intervals: [number, number][]): number {
  const events = intervals.flatMap(([s, e]) => [
    [s, 1],
    [e, -1],
  ]) as [number, number][];
  // At equal times an end comes before a start: a task that ended as another started did not overlap it.
  events.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  let open = 0;
  let most = 0;
  for (const [, d] of events) {
    open += d;
    most = Math.max(most, open);
  }
  return most;
}

describe.runIf(factory)('sbatch --array with a real agent', () => {
  let backend: Backend;
  let server: RunningServer;
  let agent: AgentProcess;
  const root = mkdtempSync(join(tmpdir(), 'conductor-e2e-arrays-'));
  const bin = join(root, 'bin');
  let env: NodeJS.ProcessEnv;

  beforeAll(async () => {
    backend = await (factory as NonNullable<typeof factory>).create();
    server = await startTestServer(backend, testConfig({ heartbeatIntervalSeconds: 1, workerTtlSeconds: 3 }));
    // 8 CPUs for 1-CPU tasks: only the cap keeps them from all running at once.
    agent = new AgentProcess(`arrays01-${process.pid}`, server.url, { cpus: 8 });
    await agent.registered();
    execFileSync('npm', ['run', '--silent', 'conductor', '--', 'slurm-commands', bin], {
      cwd: ROOT,
      env: { ...process.env, CONDUCTOR_URL: server.url },
      stdio: 'pipe',
    });
    env = {
      PATH: `${bin}${delimiter}${process.env.PATH}`,
      HOME: process.env.HOME,
      USER: userInfo().username,
      LANG: 'C.UTF-8',
      CONDUCTOR_URL: server.url,
    };
  }, 120_000);

  afterAll(async () => {
    await agent?.stop().catch(() => agent.kill9());
    await server?.close();
    await backend?.close();
    rmSync(root, { recursive: true, force: true });
  });

  // Asynchronously: the server runs in this process, and a blocking spawn would keep it from answering.
  const run = async (command: string, args: string[]) =>
    (await promisify(execFile)(command, args, { cwd: root, env })).stdout;
  const array = async (id: number) =>
    (await (await fetch(`${server.url}/api/v1/arrays/${id}`)).json()) as ArrayView;

  it('a %2 array never runs more than 2 tasks at once, every task sees its SLURM_ARRAY_* ids and writes %A_%a files', {
    timeout: 120_000,
  }, async () => {
    const script = join(root, 'task.sh');
    writeFileSync(
      script,
      [
        '#!/bin/bash',
        '#SBATCH --array=0-5%2',
        '#SBATCH -o out-%A_%a.txt',
        't=$SLURM_ARRAY_TASK_ID',
        'date +%s.%N > start.$t',
        'echo "$SLURM_ARRAY_JOB_ID $SLURM_ARRAY_TASK_ID $SLURM_ARRAY_TASK_COUNT $SLURM_ARRAY_TASK_MIN $SLURM_ARRAY_TASK_MAX $SLURM_ARRAY_TASK_STEP $SLURM_JOB_ID" > ids.$t',
        // The first tasks wait for the test's go, so that it sees the rest folded and waiting.
        'while [ ! -e go ]; do sleep 0.1; done',
        'sleep 0.5',
        'echo "task $t done"',
        'date +%s.%N > end.$t',
        '',
      ].join('\n'),
    );
    const id = Number((await run('sbatch', ['--parsable', script])).trim());
    expect(id).toBeGreaterThan(0);

    // Two tasks run, four wait with JobArrayTaskLimit, shown on one line as Slurm does.
    await eventually(async () => ((await array(id)).counts.running === 2 ? true : undefined), {
      timeoutMs: 30_000,
      what: 'two tasks running',
    });
    const squeue = await eventually(
      async () => {
        const out = await run('squeue', ['-h', '-o', '%i %t %r']);
        return out.includes(`${id}_[2-5%2] PD JobArrayTaskLimit`) ? out : undefined;
      },
      { timeoutMs: 30_000, what: 'squeue showing the pending tasks folded with their reason' },
    );
    expect(squeue.trim().split('\n').sort()).toEqual(
      [`${id}_0 R None`, `${id}_1 R None`, `${id}_[2-5%2] PD JobArrayTaskLimit`].sort(),
    );
    // Slow the next tasks down no more: let them all go.
    writeFileSync(join(root, 'go'), '');
    const done = await eventually(
      async () => {
        const a = await array(id);
        return a.counts.completed === 6 ? a : undefined;
      },
      { timeoutMs: 90_000, what: 'all six tasks completed' },
    );
    expect(done.counts).toEqual({ pending: 0, running: 0, completed: 6, failed: 0, cancelled: 0 });

    const intervals: [number, number][] = [];
    const jobIds = new Set<string>();
    for (let t = 0; t <= 5; t++) {
      const [arrayJobId, taskId, count, min, max, step, jobId] = readFileSync(join(root, `ids.${t}`), 'utf8')
        .trim()
        .split(' ');
      expect([arrayJobId, taskId, count, min, max, step]).toEqual([
        String(id),
        String(t),
        '6',
        '0',
        '5',
        '1',
      ]);
      jobIds.add(jobId as string);
      intervals.push([
        Number(readFileSync(join(root, `start.${t}`), 'utf8')),
        Number(readFileSync(join(root, `end.${t}`), 'utf8')),
      ]);
      // %A_%a: the array's job id and the task's index.
      expect(readFileSync(join(root, `out-${id}_${t}.txt`), 'utf8')).toBe(`task ${t} done\n`);
    }
    // Each task is a job of its own, the first with the array's id.
    expect(jobIds.size).toBe(6);
    expect(jobIds.has(String(id))).toBe(true);
    expect(maxOverlap(intervals)).toBeLessThanOrEqual(2);
    // The cap was reached, not a one-at-a-time run.
    expect(maxOverlap(intervals)).toBe(2);
    expect(existsSync(join(root, `slurm-${id}_0.out`))).toBe(false);

    // sacct -j <array job id> shows every task, each as <array_job_id>_<index>.
    const sacct = await run('sacct', ['-n', '-X', '-P', '-o', 'JobID,State', '-j', String(id)]);
    expect(sacct.trim().split('\n').sort()).toEqual(
      Array.from({ length: 6 }, (_, t) => `${id}_${t}|COMPLETED`).sort(),
    );
  });

  it('scancel 123_[1-2] cancels those tasks, scancel 123 the rest of the array', {
    timeout: 60_000,
  }, async () => {
    const id = Number((await run('sbatch', ['--parsable', '--array=0-9%1', '--wrap', 'sleep 30'])).trim());
    await eventually(async () => ((await array(id)).counts.running === 1 ? true : undefined), {
      timeoutMs: 30_000,
      what: 'one task running',
    });
    await run('scancel', [`${id}_[1-2]`]);
    let a = await array(id);
    expect(a.counts).toMatchObject({ cancelled: 2, pending: 7, running: 1 });
    await run('scancel', [String(id)]);
    a = await eventually(
      async () => {
        const now = await array(id);
        return now.counts.cancelled === 10 ? now : undefined;
      },
      { timeoutMs: 30_000, what: 'every task cancelled' },
    );
    expect(a.counts).toEqual({ pending: 0, running: 0, completed: 0, failed: 0, cancelled: 10 });
  });

  it('aftercorr: task i of B starts only after task i of A completed, each pair on its own', {
    timeout: 120_000,
  }, async () => {
    // A's tasks end in reverse order of their index (2 first, 0 last), each writing its end time.
    const a = Number(
      (
        await run('sbatch', [
          '--parsable',
          '--array=0-2',
          '--wrap',
          'sleep $(( (3 - SLURM_ARRAY_TASK_ID) * 2 )); date +%s.%N > a-end.$SLURM_ARRAY_TASK_ID',
        ])
      ).trim(),
    );
    const b = Number(
      (
        await run('sbatch', [
          '--parsable',
          '--array=0-2',
          `--dependency=aftercorr:${a}`,
          '--wrap',
          'date +%s.%N > b-start.$SLURM_ARRAY_TASK_ID',
        ])
      ).trim(),
    );
    await eventually(
      async () => {
        const x = await array(b);
        return x.counts.completed === 3 ? x : undefined;
      },
      { timeoutMs: 90_000, what: "all of B's tasks completed" },
    );
    const time = (file: string) => Number(readFileSync(join(root, file), 'utf8'));
    for (let t = 0; t <= 2; t++) {
      expect(time(`b-start.${t}`), `B_${t} after A_${t}`).toBeGreaterThanOrEqual(time(`a-end.${t}`));
    }
    // Paired, not all at the end: B_2 started before A_0 ended.
    expect(time('b-start.2')).toBeLessThan(time('a-end.0'));
  });
});
