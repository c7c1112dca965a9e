/**
 * The process a user starts is the one that stops everything: `npm start`, `npm run agent` and
 * `npx conductor-agent`, run exactly as the docs say (real npm, from the repository's root: `npm start` read
 * from the set-up block of README.md and docs/getting-started.md, `npx conductor-agent` as in
 * docs/agents.md). A SIGTERM to npm stops the server, its local agent and whatever else it started; when npm
 * is SIGKILLed (it forwards nothing then), the server and the agents notice that it is gone and stop by
 * themselves. /proc tells what is left running.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningServer } from '../../functions/node/server.ts';
import { commandsOf } from '../docs/runnable.ts';
import { eventually } from '../support/agent-process.ts';
import { availableBackends, type Backend, startTestServer, testConfig } from '../support/cluster.ts';
import {
  descendantsOf,
  freePort,
  LaunchedCommand,
  type ProcessEntry,
  stillRunning,
} from '../support/server-process.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
/** The command that starts the local cluster: the last line of the README's set-up block (`npm start`). */
const START = commandsOf('readme-setup').at(-1)!.split(' ');
const root = mkdtempSync(join(tmpdir(), 'conductor-launchers-'));
const seen: ProcessEntry[] = [];

afterAll(() => {
  for (const entry of stillRunning(seen)) {
    try {
      process.kill(entry.pid, 'SIGKILL');
    } catch {}
  }
});

/** The processes under `launched` once `ready` holds: they are what must be gone after it stops. */
async function treeOnce(
  launched: LaunchedCommand,
  ready: () => Promise<boolean> | boolean,
  expected: RegExp[],
): Promise<ProcessEntry[]> {
  await eventually(
    async () => {
      if (launched.child.exitCode !== null) throw new Error(`exited:\n${launched.output()}`);
      return ready();
    },
    { timeoutMs: 120_000, intervalMs: 250, what: `${launched.child.spawnargs.join(' ')} to be ready` },
  );
  const tree = descendantsOf(launched.pid);
  seen.push(...tree);
  for (const pattern of expected) expect(tree.map((e) => e.command).join('\n')).toMatch(pattern);
  return tree;
}

async function allGone(tree: ProcessEntry[], what: string): Promise<void> {
  await eventually(() => stillRunning(tree).length === 0, {
    timeoutMs: 60_000,
    intervalMs: 200,
    what: `${what} to exit (left: ${stillRunning(tree)
      .map((e) => `${e.pid} ${e.command}`)
      .join('; ')})`,
  });
}

describe('npm start', () => {
  it('is what README.md and docs/getting-started.md say to run', () => {
    expect(START).toEqual(['npm', 'start']);
    expect(commandsOf('quick-start')).toEqual(commandsOf('readme-setup'));
    // The installed agent is started as docs/agents.md says (the tests below).
    expect(commandsOf('agent-install')).toContain('npx conductor-agent');
  });

  async function npmStart(name: string) {
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    const launched = new LaunchedCommand(START[0]!, START.slice(1), {
      CONDUCTOR_DATA_DIR: join(root, name),
      PORT: String(port),
      NODE_NAME: name,
      TOTAL_CPUS: '1',
      CONDUCTOR_ALLOW_ROOT: '1',
    });
    const tree = await treeOnce(
      launched,
      async () => launched.has(`✓ Worker registered: ${name}`) && (await fetch(`${url}/api/v1/health`)).ok,
      [/agent/],
    );
    return { launched, url, tree };
  }

  it('SIGTERM to npm stops the server and its local agent (unregistered), and frees the port', {
    timeout: 180_000,
  }, async () => {
    const { launched, url, tree } = await npmStart('term-node');
    process.kill(launched.pid, 'SIGTERM');
    await launched.exited;
    await allGone(tree, 'the server and its agent');
    await launched.drained;
    await expect(fetch(`${url}/api/v1/health`)).rejects.toThrow();
    expect(launched.has('Worker unregistered: term-node')).toBe(true);
  });

  it('SIGKILL to npm: the server notices that npm is gone and stops with its agent', {
    timeout: 180_000,
  }, async () => {
    const { launched, url, tree } = await npmStart('kill-node');
    process.kill(launched.pid, 'SIGKILL');
    await launched.exited;
    await allGone(tree, 'the server and its agent');
    await launched.drained;
    await expect(fetch(`${url}/api/v1/health`)).rejects.toThrow();
    expect(launched.output()).toMatch(/npm \(pid \d+\) is gone, shutting down/);
    expect(launched.has('Worker unregistered: kill-node'), launched.output()).toBe(true);
  });
});

describe('the agent launched by npm', () => {
  let backend: Backend;
  let server: RunningServer;
  const site = join(root, 'node-site');

  beforeAll(async () => {
    // `npx conductor-agent` where the packed agent is installed, as on a node (test/package/agent-package.test.ts).
    execFileSync('npm', ['run', '--silent', 'build:agent'], { cwd: ROOT, stdio: 'pipe' });
    const packed = execFileSync('npm', ['pack', '--json', '--pack-destination', root], {
      cwd: join(ROOT, 'agent'),
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const tarball = join(root, (JSON.parse(packed) as { filename: string }[])[0]!.filename);
    mkdirSync(site);
    writeFileSync(join(site, 'package.json'), JSON.stringify({ name: 'node-site', private: true }));
    execFileSync('npm', ['install', '--offline', '--no-audit', '--no-fund', tarball], {
      cwd: site,
      stdio: 'pipe',
      env: { PATH: process.env.PATH, HOME: root, npm_config_cache: join(root, 'npm-cache') },
    });
    const [factory] = (await availableBackends()).filter((b) => b.name === 'pglite+memory');
    backend = await factory!.create();
    server = await startTestServer(backend, testConfig({ heartbeatIntervalSeconds: 1 }));
  }, 120_000);
  afterAll(async () => {
    await server?.close();
    await backend?.close();
  });

  const launch = (command: string, args: string[], name: string) =>
    new LaunchedCommand(
      command,
      args,
      {
        CONDUCTOR_URL: server.url,
        NODE_NAME: name,
        TOTAL_CPUS: '1',
        CONDUCTOR_STATE_DIR: join(root, `state-${name}`),
        CONDUCTOR_ALLOW_ROOT: '1',
      },
      command === 'npx' ? site : ROOT,
    );
  const registered = (launched: LaunchedCommand, name: string) => () =>
    launched.has(`✓ Worker registered: ${name}`);

  for (const [command, args, signal] of [
    ['npm', ['run', 'agent'], 'SIGTERM'],
    ['npm', ['run', 'agent'], 'SIGKILL'],
    ['npx', ['conductor-agent'], 'SIGTERM'],
    ['npx', ['conductor-agent'], 'SIGKILL'],
  ] as const) {
    it(`${signal} to \`${command} ${args.join(' ')}\` stops the agent, which unregisters`, {
      timeout: 180_000,
    }, async () => {
      const name = `${command}-${signal.toLowerCase()}`;
      const launched = launch(command, [...args], name);
      const tree = await treeOnce(launched, registered(launched, name), [/agent/]);
      process.kill(launched.pid, signal);
      await launched.exited;
      await allGone(tree, 'the agent');
      await launched.drained;
      expect(launched.has(`Worker unregistered: ${name}`), launched.output()).toBe(true);
    });
  }
});
