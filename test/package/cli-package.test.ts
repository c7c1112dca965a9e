/**
 * `conductor` on a user's machine: the CLI is packed (`npm pack` in cli/: the `conductor-cli` package),
 * installed from the tarball alone into an empty folder outside the repository (`npm install --offline`: it
 * has no dependencies to fetch, and nothing of the repository's node_modules is on its path), and that
 * installed binary submits a real `#SBATCH` script with --wait against a running control plane (with a real
 * agent) and exits with the job's code, on this machine's Node and on the oldest Node it claims (18, a Node
 * binary from the npm registry). `conductor token` there says where to run it instead. These are the steps
 * of docs/submitting-jobs.md's `cli-install` block (the first test checks that it still says so).
 */
import { execFile, execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningServer } from '../../functions/node/server.ts';
import { commandsOf } from '../docs/runnable.ts';
import { AgentProcess } from '../support/agent-process.ts';
import { availableBackends, type Backend, startTestServer } from '../support/cluster.ts';
import { installOldestNode, OLDEST_NODE } from '../support/oldest-node.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const CLI_DIR = join(ROOT, 'cli');
/** Asynchronous, so that the in-process control plane keeps answering while the command runs. */
const execFileAsync = promisify(execFile);

function du(path: string): number {
  return Number(execFileSync('du', ['-sb', path], { encoding: 'utf8' }).split('\t')[0]);
}

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

describe('conductor-cli from its packed tarball', () => {
  const work = mkdtempSync(join(tmpdir(), 'cli-package-'));
  let tarballName = '';
  const site = join(work, 'user-site');
  let script = '';
  let backend: Backend;
  let server: RunningServer;
  let agent: AgentProcess;
  const sizes: Record<string, number> = {};

  /** The installed bin, run with `node` (this one, or another) and a bare environment. */
  async function conductor(node: string, args: string[]): Promise<Run> {
    const main = join(site, 'node_modules', 'conductor-cli', 'dist', 'standalone.js');
    return execFileAsync(node, [main, ...args], {
      cwd: work,
      env: { PATH: process.env.PATH, HOME: work, CONDUCTOR_URL: server.url },
    }).then(
      ({ stdout, stderr }) => ({ code: 0, stdout, stderr }),
      (error: { code: number; stdout: string; stderr: string }) => ({
        code: error.code,
        stdout: error.stdout,
        stderr: error.stderr,
      }),
    );
  }

  beforeAll(async () => {
    const packed = execFileSync('npm', ['pack', '--json', '--pack-destination', work], {
      cwd: CLI_DIR,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const tarball = join(work, (JSON.parse(packed) as { filename: string }[])[0]!.filename);
    tarballName = basename(tarball);
    sizes.tarball = statSync(tarball).size;
    execFileSync('mkdir', ['-p', site]);
    writeFileSync(join(site, 'package.json'), JSON.stringify({ name: 'user-site', private: true }));
    execFileSync('npm', ['install', '--offline', '--no-audit', '--no-fund', tarball], {
      cwd: site,
      stdio: 'pipe',
      env: { PATH: process.env.PATH, HOME: work, npm_config_cache: join(work, 'npm-cache') },
    });
    sizes.installed = du(join(site, 'node_modules', 'conductor-cli'));
    script = join(work, 'exit3.sh');
    writeFileSync(
      script,
      [
        '#!/bin/bash',
        '#SBATCH --job-name=packaged',
        '#SBATCH --ntasks=2',
        '#SBATCH -c 1',
        '#SBATCH --time=0:30',
        '#SBATCH --export=ALL,GREETING=hi',
        '',
        'echo "$GREETING from $CONDUCTOR_JOB_NAME with $CONDUCTOR_CPUS CPUs"',
        'exit 3',
        '',
      ].join('\n'),
    );
    const [factory] = (await availableBackends()).filter((b) => b.name === 'pglite+memory');
    backend = await factory!.create();
    server = await startTestServer(backend);
    agent = new AgentProcess('cli-package-node', server.url, { cpus: 2 });
    await agent.registered();
    console.log(`[measure] conductor-cli tarball ${sizes.tarball} bytes, installed ${sizes.installed} bytes`);
  }, 120_000);

  afterAll(async () => {
    await agent?.stop();
    await server?.close();
    await backend?.close();
  });

  it('is packed, installed and used as docs/submitting-jobs.md says', () => {
    const steps = commandsOf('cli-install');
    expect(steps[0]).toBe('(cd cli && npm pack)');
    // The tarball the docs install is the one `npm pack` made (its name carries the version).
    expect(steps[1]).toBe(`npm install -g ./${tarballName}`);
    expect(steps.at(-1)).toBe('conductor submit job.sh --wait');
  });

  it('is small, plain JavaScript, and has no dependencies', () => {
    const installed = join(site, 'node_modules', 'conductor-cli');
    const manifest = JSON.parse(readFileSync(join(installed, 'package.json'), 'utf8'));
    expect(manifest.dependencies ?? {}).toEqual({});
    expect(manifest.engines.node).toBe('>=18.18');
    expect(manifest.bin).toEqual({ conductor: 'dist/standalone.js' });
    // About 88 KiB, most of it the eleven Slurm commands of cli/slurm (50 KiB before them); comments stripped.
    expect(sizes.tarball).toBeLessThan(100 * 1024);
    expect(readdirSync(join(site, 'node_modules')).filter((n) => !n.startsWith('.'))).toEqual([
      'conductor-cli',
    ]);
    // The control plane's code is not in it: only the CLI's own compiled files.
    const files = (readdirSync(join(installed, 'dist'), { recursive: true }) as string[])
      .filter((file) => file.endsWith('.js'))
      .sort();
    expect(files.filter((file) => !file.startsWith('slurm/'))).toEqual([
      'api.js',
      'follow.js',
      'io.js',
      'main.js',
      'standalone.js',
    ]);
    expect(files).toContain('slurm/sbatch.js');
    for (const file of files) {
      const code = readFileSync(join(installed, 'dist', file), 'utf8');
      expect(code, file).not.toMatch(/\bimport\s*\(/);
      expect(code, file).not.toMatch(/from\s+['"](?!node:|\.\.?\/)/);
    }
  });

  it('installs a `conductor` bin that answers --version and --help', () => {
    const bin = join(site, 'node_modules', '.bin', 'conductor');
    const env = { PATH: process.env.PATH, HOME: work };
    expect(execFileSync(bin, ['--version'], { encoding: 'utf8', env }).trim()).toBe('conductor 0.1.0');
    expect(execFileSync(bin, ['submit', '--help'], { encoding: 'utf8', env })).toContain('#SBATCH');
  });

  async function submitAndWait(node: string) {
    const run = await conductor(node, ['submit', script, '--wait']);
    expect(run.stderr).toMatch(/Submitted batch job \d+/);
    expect(run.stderr).not.toContain('Warning');
    expect(run.stderr).toMatch(/Job \d+ FAILED \(exit code 3:0\)/);
    expect(run.code, run.stderr).toBe(3);
    const id = /Submitted batch job (\d+)/.exec(run.stderr)![1]!;
    const logs = await conductor(node, ['logs', id]);
    expect(logs.stdout).toBe('hi from packaged with 2 CPUs\n');
    const show = JSON.parse((await conductor(node, ['show', id, '--json'])).stdout);
    expect(show).toMatchObject({ name: 'packaged', cpus: 2, node: 'cli-package-node' });
  }

  it('submits an #SBATCH script with --wait and exits with the job code, on this Node', async () => {
    await submitAndWait(process.execPath);
  });

  it('`conductor token` says where to run it instead of failing obscurely', async () => {
    const run = await conductor(process.execPath, ['token', 'create', '--scope', 'admin', '--name', 'x']);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain('not available in this installation');
    expect(run.stderr).toContain('npm run conductor -- token');
    expect(run.stderr).toContain('/api/v1/tokens');
    const webhook = await conductor(process.execPath, ['webhook', 'list']);
    expect(webhook.code).toBe(2);
    expect(webhook.stderr).toContain('npm run conductor -- webhook');
  });

  it(`submits and waits on Node ${OLDEST_NODE}, the oldest it claims`, { timeout: 300_000 }, async () => {
    const node18 = await installOldestNode(work);
    await submitAndWait(node18);
    const follow = await conductor(node18, ['submit', script, '--follow']);
    expect(follow.stdout).toBe('hi from packaged with 2 CPUs\n');
    expect(follow.code).toBe(3);
  });
});
