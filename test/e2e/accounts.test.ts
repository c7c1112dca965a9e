/**
 * Account limits end to end: the Node server (real Postgres and Redis), a real agent with room for every job,
 * the drop-in `sacctmgr`, `sbatch` and `squeue`. An account with MaxJobs=2 never runs more than 2 jobs at once
 * (the jobs record their own start and end times), the others wait with AssocMaxJobsLimit as squeue shows, each
 * job's end lets the next one in, and another account's job is not held back.
 */
import { execFile, execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { delimiter, join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningServer } from '../../functions/node/server.ts';
import { AgentProcess, eventually } from '../support/agent-process.ts';
import { availableBackends, type Backend, startTestServer, testConfig } from '../support/cluster.ts';

const ROOT = join(import.meta.dirname, '..', '..');
const [factory] = await availableBackends();

/** The most intervals [start, end] open at one instant (an end before a start at the same time). */
function maxOverlap(intervals: [number, number][]): number {
  const events = intervals.flatMap(([s, e]) => [
    [s, 1],
    [e, -1],
  ]) as [number, number][];
  events.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  let open = 0;
  let most = 0;
  for (const [, d] of events) {
    open += d;
    most = Math.max(most, open);
  }
  return most;
}

describe.runIf(factory)('account limits with a real agent', () => {
  let backend: Backend;
  let server: RunningServer;
  let agent: AgentProcess;
  const root = mkdtempSync(join(tmpdir(), 'conductor-e2e-accounts-'));
  const bin = join(root, 'bin');
  let env: NodeJS.ProcessEnv;

  beforeAll(async () => {
    backend = await (factory as NonNullable<typeof factory>).create();
    server = await startTestServer(backend, testConfig({ heartbeatIntervalSeconds: 1, workerTtlSeconds: 3 }));
    agent = new AgentProcess(`accounts01-${process.pid}`, server.url, { cpus: 8 });
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

  const run = async (command: string, args: string[]) =>
    (await promisify(execFile)(command, args, { cwd: root, env })).stdout;
  const state = async (id: number) =>
    ((await (await fetch(`${server.url}/api/v1/jobs/${id}`)).json()) as { state: string }).state;

  it('a MaxJobs=2 account runs 2 of its 5 jobs at a time; the rest wait with AssocMaxJobsLimit and follow', {
    timeout: 120_000,
  }, async () => {
    await run('sacctmgr', ['-i', 'add', 'account', 'physics']);
    await run('sacctmgr', ['-i', 'add', 'account', 'qcd', 'parent=physics']);
    await run('sacctmgr', ['-i', 'modify', 'account', 'where', 'name=physics', 'set', 'MaxJobs=2']);
    const script = join(root, 'job.sh');
    writeFileSync(
      script,
      [
        '#!/bin/bash',
        '#SBATCH -A qcd',
        'date +%s.%N > start.$SLURM_JOB_ID',
        'while [ ! -e go ]; do sleep 0.1; done',
        'sleep 0.5',
        'date +%s.%N > end.$SLURM_JOB_ID',
        '',
      ].join('\n'),
    );
    const ids: number[] = [];
    for (let k = 0; k < 5; k++) ids.push(Number((await run('sbatch', ['--parsable', script])).trim()));
    const squeue = await eventually(
      async () => {
        const out = await run('squeue', ['-h', '-o', '%i %t %r', '-A', 'qcd']);
        const lines = out.trim().split('\n');
        return lines.filter((l) => l.endsWith('R None')).length === 2 &&
          lines.filter((l) => l.endsWith('PD AssocMaxJobsLimit')).length === 3
          ? out
          : undefined;
      },
      { timeoutMs: 30_000, what: 'two jobs running, three waiting with AssocMaxJobsLimit' },
    );
    expect(squeue.trim().split('\n')).toHaveLength(5);
    // Another account is not held back.
    const other = Number((await run('sbatch', ['--parsable', '-A', 'chemistry', '--wrap', 'true'])).trim());
    await eventually(async () => ((await state(other)) === 'COMPLETED' ? true : undefined), {
      timeoutMs: 30_000,
      what: "the other account's job completed",
    });
    writeFileSync(join(root, 'go'), '');
    for (const id of ids) {
      await eventually(async () => ((await state(id)) === 'COMPLETED' ? true : undefined), {
        timeoutMs: 60_000,
        what: `job ${id} completed`,
      });
    }
    const intervals = ids.map(
      (id) =>
        [
          Number(readFileSync(join(root, `start.${id}`), 'utf8')),
          Number(readFileSync(join(root, `end.${id}`), 'utf8')),
        ] as [number, number],
    );
    expect(maxOverlap(intervals)).toBe(2);
  });
});
