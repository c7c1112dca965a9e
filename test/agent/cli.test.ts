import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parseAgentArgs } from '../../agent/src/config.ts';
import { eventually } from '../support/agent-process.ts';
import { agentBackends, processGone, sentBy, useControlPlane } from './control-plane.ts';

const BIN = join(import.meta.dirname, '../../agent/bin/conductor-agent.js');
const root = mkdtempSync(join(tmpdir(), 'conductor-cli-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const { pglite } = await agentBackends();

interface Run {
  child: ChildProcess;
  output: () => string;
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function runAgent(env: Record<string, string>, args: string[] = []): Run {
  let out = '';
  const child = spawn(process.execPath, [BIN, ...args], {
    env: {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      HOME: root,
      // These tests may run as root (CI containers): let the jobs run as this user, whoever it is.
      CONDUCTOR_ALLOW_ROOT: '1',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (out += d));
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('exit', (code, signal) => resolve({ code, signal })),
  );
  return { child, output: () => out, exit };
}

describe('parseAgentArgs', () => {
  it('reads the environment, with flags taking precedence', () => {
    const parsed = parseAgentArgs(['--cpus', '8'], {
      CONDUCTOR_URL: 'https://cp.example/base',
      CONDUCTOR_TOKEN: 't',
      NODE_NAME: 'worker-node-01',
      TOTAL_CPUS: '96',
      CONDUCTOR_HEARTBEAT_INTERVAL: '5',
      CONDUCTOR_DRAIN: '1',
      XDG_STATE_HOME: '/var/state',
    });
    expect(parsed.kind).toBe('run');
    if (parsed.kind !== 'run') return;
    expect(parsed.config).toMatchObject({
      url: 'https://cp.example/base',
      token: 't',
      nodeName: 'worker-node-01',
      cpus: 8,
      heartbeatIntervalS: 5,
      drain: true,
      stateDir: '/var/state/conductor-agent/worker-node-01',
    });
  });

  it('defaults the state dir to ~/.local/state/conductor-agent/<node>', () => {
    const parsed = parseAgentArgs([], { NODE_NAME: 'n1', HOME: '/home/x' });
    expect(parsed.kind === 'run' && parsed.config.stateDir).toBe('/home/x/.local/state/conductor-agent/n1');
  });

  it('reads the token from CONDUCTOR_TOKEN_FILE once (kept in memory, out of the environment)', () => {
    const file = join(root, 'token');
    writeFileSync(file, 'cnd_from_file\n', { mode: 0o600 });
    const parsed = parseAgentArgs([], { NODE_NAME: 'n1', CONDUCTOR_TOKEN_FILE: file });
    expect(parsed.kind === 'run' && parsed.config.token).toBe('cnd_from_file');
    for (const [env, text] of [
      [{ CONDUCTOR_TOKEN_FILE: join(root, 'missing') }, 'cannot read CONDUCTOR_TOKEN_FILE'],
      [
        { CONDUCTOR_TOKEN_FILE: file, CONDUCTOR_TOKEN: 'cnd_x' },
        'CONDUCTOR_TOKEN or CONDUCTOR_TOKEN_FILE, not both',
      ],
    ] as const) {
      const refused = parseAgentArgs([], env);
      expect(refused.kind === 'error' && refused.message).toContain(text);
    }
  });

  it('rejects bad values with a clear message', () => {
    for (const [env, text] of [
      [{ TOTAL_CPUS: '0' }, 'TOTAL_CPUS must be a positive integer'],
      [{ TOTAL_CPUS: '2.5' }, 'TOTAL_CPUS must be a positive integer'],
      [{ TOTAL_CPUS: 'lots' }, 'TOTAL_CPUS must be a positive integer'],
      [{ CONDUCTOR_URL: 'not a url' }, 'CONDUCTOR_URL is not a valid URL'],
      [{ CONDUCTOR_URL: 'ftp://x' }, 'must be an http:// or https:// URL'],
      [{ CONDUCTOR_HEARTBEAT_INTERVAL: '-1' }, 'CONDUCTOR_HEARTBEAT_INTERVAL must be a positive number'],
      [{ NODE_NAME: '../etc' }, 'NODE_NAME must be letters'],
      [{ CONDUCTOR_DRAIN: 'maybe' }, 'CONDUCTOR_DRAIN must be 1 or 0'],
    ] as const) {
      const parsed = parseAgentArgs([], env);
      expect(parsed.kind).toBe('error');
      expect(parsed.kind === 'error' && parsed.message).toContain(text);
    }
    expect(parseAgentArgs(['--nope'], {}).kind).toBe('error');
  });
});

describe('conductor-agent process against the real control plane on pglite+memory', () => {
  const { control } = useControlPlane(pglite, root);
  const runs: Run[] = [];
  const start = (env: Record<string, string>, args: string[] = []) => {
    const run = runAgent(env, args);
    runs.push(run);
    return run;
  };
  afterAll(() => {
    for (const run of runs) if (run.child.exitCode === null) run.child.kill('SIGKILL');
  });

  it('exits 2 on bad configuration', async () => {
    const run = start({ TOTAL_CPUS: 'abc', CONDUCTOR_URL: control().url });
    expect((await run.exit).code).toBe(2);
    expect(run.output()).toContain('TOTAL_CPUS must be a positive integer');
  });

  it('prints help', async () => {
    const run = start({}, ['--help']);
    expect((await run.exit).code).toBe(0);
    expect(run.output()).toContain('CONDUCTOR_URL');
  });

  it('registers, runs a job, and on SIGTERM cancels it, unregisters and exits 0', async () => {
    const cp = control();
    const run = start({
      CONDUCTOR_URL: cp.url,
      CONDUCTOR_TOKEN: 'cli-token',
      NODE_NAME: 'cli-node',
      TOTAL_CPUS: '3',
      CONDUCTOR_STATE_DIR: join(root, 'state-sigterm'),
    });
    await eventually(() => run.output().includes('Worker registered'), { what: 'registration' });
    expect(run.output()).toMatch(
      /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ✓ Worker registered: cli-node \(3 CPUs\)$/m,
    );
    expect(sentBy(cp, '/agents/register', 'cli-node')[0]!.headers.authorization).toBe('Bearer cli-token');
    const job = await cp.submit({
      // biome-ignore lint/suspicious/noTemplateCurlyInString: a bash parameter expansion, not a template
      script: 'echo "token=${CONDUCTOR_TOKEN:-none}"; sleep 30',
      cpus: 1,
    });
    await eventually(async () => (await cp.logs(job.id)).stdout.content !== '', { what: 'output' });
    expect((await cp.logs(job.id)).stdout.content).toBe('token=none\n');
    run.child.kill('SIGTERM');
    expect((await run.exit).code).toBe(0);
    expect(await cp.job(job.id)).toMatchObject({ state: 'CANCELLED', reason: 'agent stopped' });
    expect(await cp.worker('cli-node')).toMatchObject({ status: 'down', down_reason: 'unregistered' });
    expect(run.output()).toContain('Worker unregistered: cli-node');
  });

  it('a second signal kills the jobs and exits 130 at once', async () => {
    const cp = control();
    const run = start(
      { CONDUCTOR_URL: cp.url, NODE_NAME: 'cli-drain', CONDUCTOR_STATE_DIR: join(root, 'state-twice') },
      ['--drain'],
    );
    await eventually(() => run.output().includes('Worker registered'), { what: 'registration' });
    const pidFile = join(root, 'pid-2');
    const job = await cp.submit({
      script: 'echo $$ > "$PIDFILE"; sleep 30',
      cpus: 1,
      environment: { PIDFILE: pidFile },
    });
    await cp.started(job.id);
    await eventually(() => existsSync(pidFile) && readFileSync(pidFile, 'utf8').trim() !== '', {
      what: 'pid file',
    });
    const jobPid = Number(readFileSync(pidFile, 'utf8').trim());
    run.child.kill('SIGTERM');
    await eventually(() => run.output().includes('Draining'), { what: 'drain message' });
    run.child.kill('SIGTERM');
    expect((await run.exit).code).toBe(130);
    await eventually(() => processGone(jobPid), { timeoutMs: 3000, what: 'job killed' });
    // It left without a word: the server still has the job running, until the node is declared lost.
    expect(await cp.job(job.id)).toMatchObject({ state: 'RUNNING' });
    expect((await cp.worker('cli-drain'))?.status).not.toBe('down');
    expect((await cp.reapLostWorkersNow(['cli-drain'])).lostWorkers).toEqual(['cli-drain']);
    expect(await cp.job(job.id)).toMatchObject({ state: 'NODE_FAIL' });
  });

  it('exits 1 when registration is refused', async () => {
    const cp = control();
    // The command line takes any positive CPU count; the control plane refuses more than 65536.
    const run = start({
      CONDUCTOR_URL: cp.url,
      NODE_NAME: 'cli-refused',
      TOTAL_CPUS: '100000',
      CONDUCTOR_STATE_DIR: join(root, 's3'),
    });
    expect((await run.exit).code).toBe(1);
    expect(run.output()).toContain('✗ Worker registration failed: 400 invalid_request: Invalid body: cpus');
    expect(sentBy(cp, '/agents/register', 'cli-refused')).toHaveLength(1);
    expect(await cp.worker('cli-refused')).toBeUndefined();
  });
});
