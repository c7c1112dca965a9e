import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { parseAgentArgs } from '../../agent/src/config.ts';
import { FakeControlPlane } from './fake-control-plane.ts';

const BIN = join(import.meta.dirname, '../../agent/bin/conductor-agent.js');
const root = mkdtempSync(join(tmpdir(), 'conductor-cli-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

let server: FakeControlPlane;
beforeEach(async () => {
  server = new FakeControlPlane();
  await server.listen();
});
afterEach(() => server.close());

interface Run {
  child: ChildProcess;
  output: () => string;
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function runAgent(env: Record<string, string>, args: string[] = []): Run {
  let out = '';
  const child = spawn(process.execPath, [BIN, ...args], {
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: root, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (out += d));
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('exit', (code, signal) => resolve({ code, signal })),
  );
  return { child, output: () => out, exit };
}

async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
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

describe('conductor-agent process', () => {
  it('exits 2 on bad configuration', async () => {
    const run = runAgent({ TOTAL_CPUS: 'abc', CONDUCTOR_URL: server.url });
    expect((await run.exit).code).toBe(2);
    expect(run.output()).toContain('TOTAL_CPUS must be a positive integer');
  });

  it('prints help', async () => {
    const run = runAgent({}, ['--help']);
    expect((await run.exit).code).toBe(0);
    expect(run.output()).toContain('CONDUCTOR_URL');
  });

  it('registers, runs a job, and on SIGTERM cancels it, unregisters and exits 0', async () => {
    const stateDir = join(root, 'state-sigterm');
    const run = runAgent({
      CONDUCTOR_URL: server.url,
      CONDUCTOR_TOKEN: 'cli-token',
      NODE_NAME: 'cli-node',
      TOTAL_CPUS: '3',
      CONDUCTOR_STATE_DIR: stateDir,
    });
    await until(() => run.output().includes('Worker registered'), 10_000, 'registration');
    expect(run.output()).toMatch(
      /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ✓ Worker registered: cli-node \(3 CPUs\)$/m,
    );
    expect(server.calls('/register')[0]!.auth).toBe('Bearer cli-token');
    // biome-ignore lint/suspicious/noTemplateCurlyInString: a bash parameter expansion, not a template
    server.assign({ job_id: 1, script: 'echo "token=${CONDUCTOR_TOKEN:-none}"; sleep 300' });
    await until(() => (server.output.get('1:1:stdout')?.text ?? '') !== '', 10_000, 'output');
    expect(server.output.get('1:1:stdout')?.text).toBe('token=none\n');
    run.child.kill('SIGTERM');
    const exit = await run.exit;
    expect(exit.code).toBe(0);
    expect(server.calls('/jobs/1/finish')[0]?.body).toMatchObject({
      outcome: 'cancelled',
      message: 'agent stopped',
    });
    expect(server.calls('/unregister')).toHaveLength(1);
    expect(run.output()).toContain('Worker unregistered: cli-node');
  });

  it('a second signal kills the jobs and exits 130 at once', async () => {
    const stateDir = join(root, 'state-twice');
    const run = runAgent(
      { CONDUCTOR_URL: server.url, NODE_NAME: 'cli-drain', CONDUCTOR_STATE_DIR: stateDir },
      ['--drain'],
    );
    await until(() => run.output().includes('Worker registered'), 10_000, 'registration');
    server.assign({
      job_id: 2,
      script: 'echo $$ > "$PIDFILE"; sleep 300',
      environment: { PIDFILE: join(root, 'pid-2') },
    });
    await until(() => server.calls('/jobs/2/started').length === 1, 10_000, 'started');
    await until(
      () => {
        try {
          return readFileSync(join(root, 'pid-2'), 'utf8').trim() !== '';
        } catch {
          return false;
        }
      },
      5000,
      'pid file',
    );
    const jobPid = Number(readFileSync(join(root, 'pid-2'), 'utf8').trim());
    run.child.kill('SIGTERM');
    await until(() => run.output().includes('Draining'), 5000, 'drain message');
    run.child.kill('SIGTERM');
    expect((await run.exit).code).toBe(130);
    await until(
      () => {
        try {
          process.kill(jobPid, 0);
          const stat = readFileSync(`/proc/${jobPid}/stat`, 'utf8');
          return stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
        } catch {
          return true;
        }
      },
      3000,
      'job killed',
    );
  });

  it('exits 1 when registration is refused', async () => {
    server.override('/register', {
      status: 401,
      body: { error: { code: 'unauthorized', message: 'bad token' } },
    });
    const run = runAgent({
      CONDUCTOR_URL: server.url,
      NODE_NAME: 'cli-refused',
      CONDUCTOR_STATE_DIR: join(root, 's3'),
    });
    expect((await run.exit).code).toBe(1);
    expect(run.output()).toContain('✗ Worker registration failed: 401 unauthorized: bad token');
  });
});
