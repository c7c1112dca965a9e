/**
 * `npx conductor-agent` on a bare node: the agent is packed (`npm pack`), installed from the tarball alone into
 * an empty folder outside the repository (`npm install --offline`: it has no dependencies to fetch), and that
 * installed binary completes a job against a running control plane, on this machine's Node and on the oldest
 * Node it claims (18, a Node binary from the npm registry). These are the commands of docs/agents.md's
 * `agent-pack` and `agent-install` blocks (the first test checks that the blocks still say what this file does).
 */
import { execFile, execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningServer } from '../../functions/node/server.ts';
import { commandsOf } from '../docs/runnable.ts';
import { eventually } from '../support/agent-process.ts';
import { availableBackends, type Backend, startTestServer, testConfig } from '../support/cluster.ts';
import { installOldestNode, OLDEST_NODE } from '../support/oldest-node.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const AGENT_DIR = join(ROOT, 'agent');
/** Asynchronous, so that the in-process control plane keeps answering while the command runs. */
const run = promisify(execFile);

function du(path: string): number {
  return Number(execFileSync('du', ['-sb', path], { encoding: 'utf8' }).split('\t')[0]);
}

describe('conductor-agent from its packed tarball', () => {
  const work = mkdtempSync(join(tmpdir(), 'agent-package-'));
  const site = join(work, 'node-site');
  let tarball = '';
  let bin = '';
  let backend: Backend;
  let server: RunningServer;
  const sizes: Record<string, number> = {};

  beforeAll(async () => {
    execFileSync('npm', ['run', '--silent', 'build:agent'], { cwd: ROOT, stdio: 'pipe' });
    const packed = execFileSync('npm', ['pack', '--json', '--pack-destination', work], {
      cwd: AGENT_DIR,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    tarball = join(work, (JSON.parse(packed) as { filename: string }[])[0]!.filename);
    sizes.tarball = statSync(tarball).size;
    execFileSync('mkdir', ['-p', site]);
    writeFileSync(join(site, 'package.json'), JSON.stringify({ name: 'node-site', private: true }));
    execFileSync('npm', ['install', '--offline', '--no-audit', '--no-fund', tarball], {
      cwd: site,
      stdio: 'pipe',
      env: { PATH: process.env.PATH, HOME: work, npm_config_cache: join(work, 'npm-cache') },
    });
    bin = join(site, 'node_modules', '.bin', 'conductor-agent');
    sizes.installed = du(join(site, 'node_modules', 'conductor-agent'));
    const [factory] = (await availableBackends()).filter((b) => b.name === 'pglite+memory');
    backend = await factory!.create();
    server = await startTestServer(backend, testConfig({ heartbeatIntervalSeconds: 1 }));
    console.log(
      `[measure] conductor-agent tarball ${sizes.tarball} bytes, installed ${sizes.installed} bytes`,
    );
  }, 120_000);

  afterAll(async () => {
    await server?.close();
    await backend?.close();
  });

  it('is built, packed, installed and started as docs/agents.md says', () => {
    expect(commandsOf('agent-pack')).toEqual(['npm run build:agent', '(cd agent && npm pack)']);
    const install = commandsOf('agent-install');
    // The tarball the docs install is the one `npm pack` made (its name carries the version).
    expect(install[0]).toBe(`npm install --offline ./${basename(tarball)}`);
    expect(install.filter((l) => l.startsWith('export ')).map((l) => l.split('=')[0])).toEqual([
      'export CONDUCTOR_URL',
      'export CONDUCTOR_TOKEN',
      'export CONDUCTOR_RUN_AS',
      'export NODE_NAME',
      'export TOTAL_CPUS',
    ]);
    expect(install.slice(-2)).toEqual(['npx conductor-agent --check', 'npx conductor-agent']);
  });

  it('is small and has no dependencies', () => {
    const manifest = JSON.parse(
      readFileSync(join(site, 'node_modules', 'conductor-agent', 'package.json'), 'utf8'),
    );
    expect(manifest.dependencies ?? {}).toEqual({});
    expect(manifest.engines.node).toBe('>=18.18');
    expect(sizes.tarball).toBeLessThan(100 * 1024);
    expect(
      execFileSync('ls', [join(site, 'node_modules')], { encoding: 'utf8' })
        .trim()
        .split('\n'),
    ).toEqual(['conductor-agent']);
  });

  it('answers --version, --help and print-systemd-unit', () => {
    const version = JSON.parse(readFileSync(join(AGENT_DIR, 'package.json'), 'utf8')).version as string;
    expect(execFileSync(bin, ['--version'], { encoding: 'utf8' }).trim()).toBe(`conductor-agent ${version}`);
    expect(execFileSync(bin, ['--help'], { encoding: 'utf8' })).toContain('CONDUCTOR_URL');
    const unit = execFileSync(bin, ['print-systemd-unit'], { encoding: 'utf8' });
    expect(unit).toContain('[Service]');
    expect(unit).toContain('Restart=on-failure');
    expect(unit).toContain('--drain');
  });

  it('--check says whether the server is reachable', async () => {
    const env = { PATH: process.env.PATH, HOME: work, NODE_NAME: 'checker', CONDUCTOR_ALLOW_ROOT: '1' };
    const ok = await run(bin, ['--check'], { env: { ...env, CONDUCTOR_URL: server.url } });
    expect(ok.stdout).toContain('is reachable');
    const failed = await run(bin, ['--check'], {
      env: { ...env, CONDUCTOR_URL: 'http://127.0.0.1:1' },
    }).catch((error: { code: number; stderr: string }) => error);
    expect('code' in failed ? failed.code : 0).toBe(1);
    expect(failed.stderr).toContain('cannot reach');
  });

  async function runJobWith(node: string, nodeName: string) {
    const child = spawn(node, [join(site, 'node_modules', 'conductor-agent', 'dist', 'cli.js')], {
      env: {
        PATH: process.env.PATH,
        HOME: work,
        CONDUCTOR_URL: server.url,
        NODE_NAME: nodeName,
        TOTAL_CPUS: '2',
        CONDUCTOR_STATE_DIR: join(work, `state-${nodeName}`),
        CONDUCTOR_ALLOW_ROOT: '1',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let log = '';
    child.stdout.on('data', (d: Buffer) => {
      log += d.toString();
    });
    child.stderr.on('data', (d: Buffer) => {
      log += d.toString();
    });
    try {
      await eventually(() => log.includes(`Worker registered: ${nodeName}`), {
        what: `${nodeName} to register`,
      });
      const res = await fetch(`${server.url}/api/v1/jobs/submit`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ script: 'echo "node $(hostname) ok"', cpus: 2 }),
      });
      const { id } = (await res.json()) as { id: number };
      const job = await eventually(
        async () => {
          const j = (await (await fetch(`${server.url}/api/v1/jobs/${id}`)).json()) as {
            state: string;
            node: string;
          };
          return j.state === 'COMPLETED' ? j : undefined;
        },
        { what: `job ${id} on ${nodeName}` },
      );
      expect(job.node).toBe(nodeName);
      const logs = (await (await fetch(`${server.url}/api/v1/jobs/${id}/logs`)).json()) as {
        stdout: { content: string };
      };
      expect(logs.stdout.content).toMatch(/ ok\n$/);
    } finally {
      child.kill('SIGTERM');
      await new Promise((resolve) => child.once('exit', resolve));
    }
    expect(log).toContain('Worker unregistered');
    return log;
  }

  it('completes a job, installed from the tarball alone, on this Node', async () => {
    await runJobWith(process.execPath, 'packaged-node20');
  });

  it(`completes a job on Node ${OLDEST_NODE}, the oldest it claims`, { timeout: 300_000 }, async () => {
    const node18 = await installOldestNode(work);
    await runJobWith(node18, 'packaged-node18');
  });
});
