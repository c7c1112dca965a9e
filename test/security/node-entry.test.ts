/**
 * The Node entry (`npm start`) and the `conductor` command as processes: the server refuses to listen
 * beyond loopback with no token; the local cluster is open on loopback until a token exists, and its
 * embedded agent keeps working once one does (it runs on a token the server minted for it).
 */
import { execFile } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { eventually } from '../support/agent-process.ts';
import { freePort, ServerProcess } from '../support/server-process.ts';

const CLI = fileURLToPath(new URL('../../cli/bin/conductor.js', import.meta.url));

function conductor(
  args: string[],
  env: Record<string, string>,
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [CLI, ...args],
      { env: { PATH: process.env.PATH, HOME: process.env.HOME, ...env } },
      (error, stdout, stderr) =>
        resolve({ code: error ? Number((error as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

describe('Node entry and CLI', () => {
  let server: ServerProcess | undefined;
  afterEach(async () => {
    await server?.stop();
    server = undefined;
  });

  it('refuses to listen beyond loopback with no token, saying how to create one; then serves with one', {
    timeout: 180_000,
  }, async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'conductor-public-'));
    const env = { CONDUCTOR_DATA_DIR: dataDir, HOST: '0.0.0.0', NODE_NAME: 'public-node', TOTAL_CPUS: '2' };
    server = new ServerProcess(await freePort(), env);
    const child = server.child;
    expect(child.exitCode ?? (await new Promise((resolve) => child.once('exit', resolve)))).toBe(1);
    // stdout may still be draining after the exit.
    await eventually(() => server!.has('conductor token create --scope admin'), { what: 'the refusal' });
    const said = server.lines.join('\n');
    expect(said).toContain('Refusing to listen on HOST=0.0.0.0 with no API token');
    expect(said).toContain('conductor token create --scope admin');
    server = undefined;

    const created = await conductor(['token', 'create', '--scope', 'admin', '--name', 'ops'], {
      CONDUCTOR_DATA_DIR: dataDir,
    });
    expect(created.code).toBe(0);
    const token = created.stdout.trim();
    expect(token).toMatch(/^cnd_[A-Za-z0-9_-]{43}$/);
    expect(created.stderr).toContain('shown once');

    server = new ServerProcess(await freePort(), env);
    await server.ready(90_000);
    expect(
      server.has('Listening beyond loopback: every request but GET /api/v1/health needs an API token'),
    ).toBe(true);
    expect((await fetch(`${server.url}/api/v1/dashboard`)).status).toBe(401);
    const auth = { authorization: `Bearer ${token}`, 'content-type': 'application/json' };
    // The embedded agent registers with the token the server minted for it.
    await eventually(
      async () => {
        const dash = (await (await fetch(`${server!.url}/api/v1/dashboard`, { headers: auth })).json()) as {
          resources: { total_cpus: number };
        };
        return dash.resources.total_cpus === 2;
      },
      { timeoutMs: 60_000, what: 'the embedded agent' },
    );
    // The CLI will not open the PGlite the running server holds.
    const busy = await conductor(['token', 'list'], { CONDUCTOR_DATA_DIR: dataDir });
    expect(busy.code).toBe(1);
    expect(busy.stderr).toContain('is in use');
  });

  it('the loopback cluster is open until a token exists; then closed, and its embedded agent keeps working', {
    timeout: 180_000,
  }, async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'conductor-loopback-'));
    server = new ServerProcess(await freePort(), {
      CONDUCTOR_DATA_DIR: dataDir,
      NODE_NAME: 'loop-node',
      TOTAL_CPUS: '2',
    });
    await server.ready(90_000);
    expect(server.has('Open on loopback only: no API token exists')).toBe(true);
    await eventually(
      async () =>
        (
          (await (await fetch(`${server!.url}/api/v1/dashboard`)).json()) as {
            resources: { total_cpus: number };
          }
        ).resources.total_cpus === 2,
      { timeoutMs: 60_000, what: 'the embedded agent' },
    );
    const res = await fetch(`${server.url}/api/v1/tokens`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'first', scopes: ['jobs:read', 'jobs:write'] }),
    });
    expect(res.status).toBe(201);
    const { token } = (await res.json()) as { token: string };
    expect(
      (
        await fetch(`${server.url}/api/v1/jobs/submit`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ script: 'echo test', cpus: 1 }),
        })
      ).status,
    ).toBe(401);
    const auth = { authorization: `Bearer ${token}`, 'content-type': 'application/json' };
    const submitted = await fetch(`${server.url}/api/v1/jobs/submit`, {
      method: 'POST',
      headers: auth,
      // biome-ignore lint/suspicious/noTemplateCurlyInString: shell syntax, not a template
      body: JSON.stringify({ script: 'echo "token=${CONDUCTOR_TOKEN:-none}"', cpus: 1 }),
    });
    const { id } = (await submitted.json()) as { id: number };
    await eventually(
      async () =>
        (
          (await (await fetch(`${server!.url}/api/v1/jobs/${id}`, { headers: auth })).json()) as {
            state: string;
          }
        ).state === 'COMPLETED',
      { timeoutMs: 60_000, what: 'the job to run on the embedded agent' },
    );
    const logs = (await (await fetch(`${server.url}/api/v1/jobs/${id}/logs`, { headers: auth })).json()) as {
      stdout: { content: string };
    };
    expect(logs.stdout.content).toBe('token=none\n');
  });
});
