/**
 * sbatch `--dependency`, `--begin` and holds end to end: the Node server (real Postgres and Redis), a real
 * agent, and the drop-in sbatch and scontrol of `conductor slurm-commands DIR`. The jobs record when they ran
 * in files; the tests read those, not only the API.
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

interface Job {
  id: number;
  state: string;
  reason: string | null;
  start_time: string | null;
  end_time: string | null;
}

describe.runIf(factory)('sbatch --dependency with a real agent', () => {
  let backend: Backend;
  let server: RunningServer;
  let agent: AgentProcess;
  const root = mkdtempSync(join(tmpdir(), 'conductor-e2e-deps-'));
  const bin = join(root, 'bin');
  let env: NodeJS.ProcessEnv;

  beforeAll(async () => {
    backend = await (factory as NonNullable<typeof factory>).create();
    server = await startTestServer(backend, testConfig({ heartbeatIntervalSeconds: 1, workerTtlSeconds: 3 }));
    agent = new AgentProcess(`deps01-${process.pid}`, server.url, { cpus: 4 });
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
  const sbatch = async (args: string[]) => {
    const { stdout } = await promisify(execFile)('sbatch', ['--parsable', ...args], { cwd: root, env });
    return Number(stdout.trim());
  };
  const scontrol = (args: string[]) => promisify(execFile)('scontrol', args, { cwd: root, env });
  const job = async (id: number) => (await (await fetch(`${server.url}/api/v1/jobs/${id}`)).json()) as Job;
  const ended = (id: number) =>
    eventually(
      async () => {
        const j = await job(id);
        return ['PENDING', 'RUNNING'].includes(j.state) ? undefined : j;
      },
      { timeoutMs: 30_000, what: `job ${id} ended` },
    );

  it('afterok: the second job starts after the first ended COMPLETED, and reads what it wrote', {
    timeout: 60_000,
  }, async () => {
    // The first job goes on only once the test has seen the second wait for it.
    const first = await sbatch(['--wrap', 'while [ ! -e go ]; do sleep 0.1; done; echo 21 > first.txt']);
    const second = await sbatch([
      `--dependency=afterok:${first}`,
      '--wrap',
      'echo $(( $(cat first.txt) * 2 )) > second.txt',
    ]);
    await eventually(async () => (await job(first)).state === 'RUNNING', {
      timeoutMs: 30_000,
      what: 'first running',
    });
    const waiting = await eventually(
      async () => {
        const j = await job(second);
        return j.reason === 'Dependency' ? j : undefined;
      },
      { timeoutMs: 30_000, what: 'the second job waiting for its dependency' },
    );
    expect(waiting.state).toBe('PENDING');
    writeFileSync(join(root, 'go'), '');
    const a = await ended(first);
    const b = await ended(second);
    expect(a.state).toBe('COMPLETED');
    expect(b.state).toBe('COMPLETED');
    expect(new Date(b.start_time as string).getTime()).toBeGreaterThanOrEqual(
      new Date(a.end_time as string).getTime(),
    );
    expect(readFileSync(join(root, 'second.txt'), 'utf8')).toBe('42\n');
  });

  it('afterok on a failing job with --kill-on-invalid-dep=yes: CANCELLED, DependencyNeverSatisfied, never run', {
    timeout: 60_000,
  }, async () => {
    const bad = await sbatch(['--wrap', 'exit 3']);
    const dependant = await sbatch([
      `-d`,
      `afterok:${bad}`,
      '--kill-on-invalid-dep=yes',
      '--wrap',
      'touch ran.txt',
    ]);
    expect((await ended(bad)).state).toBe('FAILED');
    const j = await ended(dependant);
    expect(j).toMatchObject({ state: 'CANCELLED', reason: 'DependencyNeverSatisfied', start_time: null });
    expect(existsSync(join(root, 'ran.txt'))).toBe(false);
  });

  it('afterok on a failing job without kill-on-invalid-dep: stays PENDING, DependencyNeverSatisfied', {
    timeout: 60_000,
  }, async () => {
    const bad = await sbatch(['--wrap', 'exit 1']);
    const dependant = await sbatch(['-d', `afterok:${bad}`, '--wrap', 'touch never.txt']);
    expect((await ended(bad)).state).toBe('FAILED');
    const j = await eventually(
      async () => {
        const x = await job(dependant);
        return x.reason === 'DependencyNeverSatisfied' ? x : undefined;
      },
      { timeoutMs: 30_000, what: 'the dependant never satisfied' },
    );
    expect(j).toMatchObject({ state: 'PENDING', start_time: null });
    const { stdout } = await scontrol(['show', 'job', String(dependant)]);
    expect(stdout).toContain('Reason=DependencyNeverSatisfied');
    expect(stdout).toContain(`Dependency=afterok:${bad}`);
    await fetch(`${server.url}/api/v1/jobs/${dependant}/cancel`, { method: 'POST' });
    expect(existsSync(join(root, 'never.txt'))).toBe(false);
  });

  it('afternotok runs only after a failure: after a success it never runs', { timeout: 60_000 }, async () => {
    const good = await sbatch(['--wrap', 'true']);
    const bad = await sbatch(['--wrap', 'exit 2']);
    const afterGood = await sbatch(['-d', `afternotok:${good}`, '--wrap', 'touch after-good.txt']);
    const afterBad = await sbatch(['-d', `afternotok:${bad}`, '--wrap', 'touch after-bad.txt']);
    expect((await ended(afterBad)).state).toBe('COMPLETED');
    expect(existsSync(join(root, 'after-bad.txt'))).toBe(true);
    const never = await eventually(
      async () => {
        const x = await job(afterGood);
        return x.reason === 'DependencyNeverSatisfied' ? x : undefined;
      },
      { timeoutMs: 30_000, what: 'afternotok on a success never satisfied' },
    );
    expect(never.state).toBe('PENDING');
    expect(existsSync(join(root, 'after-good.txt'))).toBe(false);
    await fetch(`${server.url}/api/v1/jobs/${afterGood}/cancel`, { method: 'POST' });
  });

  it('singleton: jobs of one name and user run one at a time, in submission order', {
    timeout: 90_000,
  }, async () => {
    // Each records its start and end (ns); with 4 CPUs free all three would overlap without the dependency.
    const script = (k: number) =>
      `echo start ${k} $(date +%s%N) >> singleton.log; sleep 1; echo end ${k} $(date +%s%N) >> singleton.log`;
    const ids = [];
    for (const k of [1, 2, 3])
      ids.push(await sbatch(['-J', 'same-name', '-d', 'singleton', '--wrap', script(k)]));
    for (const id of ids) expect((await ended(id)).state).toBe('COMPLETED');
    const events = readFileSync(join(root, 'singleton.log'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => l.split(' '));
    expect(events.map(([what, k]) => `${what} ${k}`)).toEqual([
      'start 1',
      'end 1',
      'start 2',
      'end 2',
      'start 3',
      'end 3',
    ]);
  });

  it('--begin=now+5 waits five seconds, with reason BeginTime meanwhile', { timeout: 60_000 }, async () => {
    const before = Date.now();
    const id = await sbatch(['--begin=now+5', '--wrap', 'date +%s%N > begun.txt']);
    const waiting = await job(id);
    expect(waiting).toMatchObject({ state: 'PENDING', reason: 'BeginTime' });
    expect((await ended(id)).state).toBe('COMPLETED');
    const ranAt = Number(readFileSync(join(root, 'begun.txt'), 'utf8').trim()) / 1e6;
    expect(ranAt - before).toBeGreaterThanOrEqual(4_000);
  });

  it('hold and release: sbatch -H waits with JobHeldUser until scontrol release', {
    timeout: 60_000,
  }, async () => {
    const id = await sbatch(['-H', '--wrap', 'touch released.txt']);
    await new Promise((r) => setTimeout(r, 2_000));
    expect(await job(id)).toMatchObject({ state: 'PENDING', reason: 'JobHeldUser', start_time: null });
    expect(existsSync(join(root, 'released.txt'))).toBe(false);
    await scontrol(['release', String(id)]);
    expect((await ended(id)).state).toBe('COMPLETED');
    expect(existsSync(join(root, 'released.txt'))).toBe(true);
  });
});
