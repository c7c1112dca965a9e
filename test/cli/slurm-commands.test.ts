/**
 * `conductor slurm <cmd>` and `conductor slurm-commands DIR` as people run them: real processes, the
 * written `sinfo` first on PATH, against a stub control plane.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../../cli/main.ts';
import { SLURM_COMMANDS } from '../../cli/slurm/index.ts';
import { CLUSTER_ROUTES, captureIo, stubServer } from './slurm-stub.ts';

const BIN = fileURLToPath(new URL('../../cli/bin/conductor.js', import.meta.url));

function run(command: string, args: string[], env: NodeJS.ProcessEnv) {
  return new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve, reject) => {
    const child = spawn(command, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
    });
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

let server: Awaited<ReturnType<typeof stubServer>>;
beforeAll(async () => {
  server = await stubServer(CLUSTER_ROUTES);
});
afterAll(() => server.close());

describe('conductor slurm-commands DIR', () => {
  it('writes an executable per command that runs this CLI: DIR/sinfo -o %P answers from the control plane', async () => {
    const dir = join(mkdtempSync(join(tmpdir(), 'slurm-commands-')), 'bin');
    const home = mkdtempSync(join(tmpdir(), 'home-'));
    const written = await run(process.execPath, [BIN, 'slurm-commands', dir], {
      PATH: process.env.PATH,
      HOME: home,
    });
    expect(written.code).toBe(0);
    const names = Object.keys(SLURM_COMMANDS);
    expect(written.stdout).toBe(names.map((n) => `${join(dir, n)}\n`).join(''));
    expect(written.stderr).toBe(`Put them first on PATH:\n  export PATH=${dir}:$PATH\n`);
    for (const name of names) {
      expect(statSync(join(dir, name)).mode & 0o777).toBe(0o755);
      expect(readFileSync(join(dir, name), 'utf8')).toMatch(
        new RegExp(`^#!/bin/sh\\n.*\\nexec .* slurm ${name} "\\$@"\\n$`),
      );
    }
    // Found by PATH as a workflow tool finds it, from another directory.
    const sinfo = await run('sh', ['-c', 'cd / && sinfo -o %P'], {
      PATH: `${dir}:${process.env.PATH}`,
      HOME: home,
      CONDUCTOR_URL: server.url,
    });
    expect(sinfo).toEqual({ code: 0, stdout: 'PARTITION\nbatch*\ngpu\n', stderr: '' });
    const scontrol = await run(join(dir, 'scontrol'), ['--version'], { PATH: process.env.PATH, HOME: home });
    expect(scontrol).toEqual({ code: 0, stdout: 'slurm 22.05.0\n', stderr: '' });
  });

  it('from the conductor-cli package (dist/standalone.js) too', async () => {
    const dist = mkdtempSync(join(tmpdir(), 'cli-dist-'));
    const tsc = fileURLToPath(new URL('../../node_modules/typescript/bin/tsc', import.meta.url));
    const config = fileURLToPath(new URL('../../cli/tsconfig.build.json', import.meta.url));
    const built = await run(process.execPath, [tsc, '-p', config, '--outDir', dist], {
      PATH: process.env.PATH,
    });
    expect(built.code, built.stdout).toBe(0);
    const dir = join(dist, 'bin');
    const home = mkdtempSync(join(tmpdir(), 'home-'));
    const written = await run(process.execPath, [join(dist, 'standalone.js'), 'slurm-commands', dir], {
      PATH: process.env.PATH,
      HOME: home,
    });
    expect(written.code).toBe(0);
    expect(readFileSync(join(dir, 'sinfo'), 'utf8')).toContain(
      `'${join(dist, 'standalone.js')}' slurm sinfo "$@"`,
    );
    const sinfo = await run(join(dir, 'sinfo'), ['-h', '-o', '%P'], {
      PATH: process.env.PATH,
      HOME: home,
      CONDUCTOR_URL: server.url,
    });
    expect(sinfo).toEqual({ code: 0, stdout: 'batch*\ngpu\n', stderr: '' });
  }, 60_000);
});

describe('conductor slurm <command>', () => {
  it('runs the command with its own options; --url before it reaches it', async () => {
    const io = captureIo();
    const code = await main(
      ['--url', server.url, 'slurm', 'sinfo', '-h', '-o', '%R'],
      { HOME: '/nonexistent' },
      io,
    );
    expect({ code, stdout: io.stdout, stderr: io.stderr }).toEqual({
      code: 0,
      stdout: 'batch\ngpu\n',
      stderr: '',
    });
  });

  it('an unknown command is a usage error naming the commands; errors print as Slurm prints them', async () => {
    const io = captureIo();
    expect(await main(['slurm', 'sfoo'], { HOME: '/nonexistent' }, io)).toBe(2);
    expect(io.stderr).toBe(
      `conductor slurm: unknown command sfoo (one of ${Object.keys(SLURM_COMMANDS).join(', ')})\nUsage: conductor slurm <${Object.keys(SLURM_COMMANDS).join('|')}> [options]\n`,
    );
    const failing = captureIo();
    expect(await main(['slurm', 'scontrol', 'show', 'job', 'x'], { HOME: '/nonexistent' }, failing)).toBe(1);
    expect(failing.stderr).toBe('scontrol: error: Invalid job id specified: x\n');
  });

  it('conductor slurm --help lists the commands', async () => {
    const io = captureIo();
    expect(await main(['slurm', '--help'], {}, io)).toBe(0);
    expect(io.stdout).toContain('Usage: conductor slurm <command> [options]');
    expect(io.stdout).toContain(Object.keys(SLURM_COMMANDS).join(', '));
  });
});
