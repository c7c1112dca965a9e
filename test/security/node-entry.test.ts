/**
 * The Node entry (`npm start`) and the `conductor` command as processes: the server refuses to listen
 * beyond loopback with no token; the local cluster is open on loopback until a token exists, and its
 * embedded agent keeps working once one does (it runs on a token the server minted for it).
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { AgentProcess, eventually } from '../support/agent-process.ts';
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

/** One request as any client may send it, Host header included (fetch would not send that one as given). */
function send(
  url: string,
  options: { method?: string; headers?: Record<string, string>; body?: string } = {},
): Promise<{ status: number; headers: Record<string, unknown>; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      url,
      { method: options.method ?? 'GET', headers: options.headers ?? {} },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: Buffer.concat(chunks).toString(),
          }),
        );
      },
    );
    req.on('error', reject);
    req.end(options.body);
  });
}

describe('Node entry and CLI', () => {
  let server: ServerProcess | undefined;
  let agent: AgentProcess | undefined;
  afterEach(async () => {
    await agent?.stop().catch(() => agent?.kill9());
    agent = undefined;
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
    // The first token: the CLI says what it changes.
    expect(created.stderr).toContain('now requires a token');

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
      // Nor in the agent's environment (its parent, here as the same user): the agent got it on a pipe.
      body: JSON.stringify({
        script:
          // biome-ignore lint/suspicious/noTemplateCurlyInString: shell syntax, not a template
          'echo "token=${CONDUCTOR_TOKEN:-none}"; echo "agent=$(tr \'\\0\' \'\\n\' < /proc/$PPID/environ | grep -c ^CONDUCTOR_TOKEN=)"',
        cpus: 1,
      }),
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
    expect(logs.stdout.content).toBe('token=none\nagent=0\n');
  });

  it('the open local cluster refuses what a web page can send; curl, the CLI and its own pages still work', {
    timeout: 180_000,
  }, async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'conductor-web-'));
    const port = await freePort();
    server = new ServerProcess(port, { CONDUCTOR_DATA_DIR: dataDir, CONDUCTOR_EMBEDDED_AGENT: '0' });
    await server.ready(90_000);
    const url = server.url;
    const jobs = async () =>
      ((await (await fetch(`${url}/api/v1/jobs`)).json()) as { jobs: { id: number }[] }).jobs.length;

    // The review's evidence: a text/plain POST from another origin, a form body under a rebound name.
    const csrf = await send(`${url}/api/v1/jobs/submit`, {
      method: 'POST',
      headers: { 'content-type': 'text/plain', origin: 'http://evil.example' },
      body: '{"script":"id > pwned-csrf","cpus":1}',
    });
    expect(csrf.status).toBe(403);
    const textOnly = await send(`${url}/api/v1/jobs/submit`, {
      method: 'POST',
      headers: { 'content-type': 'text/plain' },
      body: '{"script":"id > pwned-form #=","cpus":1}\r\n',
    });
    expect(textOnly.status).toBe(415);
    const rebound = await send(`${url}/api/v1/jobs/submit`, {
      method: 'POST',
      headers: {
        host: 'evil.example:8000',
        origin: 'http://evil.example:8000',
        'content-type': 'application/x-www-form-urlencoded',
      },
      body: '{"script":"id > pwned-rebind","cpus":1}',
    });
    expect(rebound.status).toBe(403);
    const crossJson = await send(`${url}/api/v1/tokens`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        origin: 'http://evil.example',
        'sec-fetch-site': 'cross-site',
      },
      body: JSON.stringify({ name: 'evil', scopes: ['admin'] }),
    });
    expect(crossJson.status).toBe(403);
    expect(await jobs()).toBe(0);

    // The contract's curl walk-through, as curl sends it.
    const curl = await send(`http://localhost:${port}/api/v1/jobs/submit`, {
      method: 'POST',
      headers: {
        host: `localhost:${port}`,
        'user-agent': 'curl/8.5.0',
        accept: '*/*',
        'content-type': 'application/json',
      },
      body: '{"script": "sleep 60", "cpus": 4}',
    });
    expect(curl.status).toBe(201);
    const { id } = JSON.parse(curl.body) as { id: number };
    expect(
      (await send(`http://localhost:${port}/api/v1/dashboard`, { headers: { host: `localhost:${port}` } }))
        .status,
    ).toBe(200);

    // A rebinding page cannot read answers either.
    for (const path of [`/api/v1/jobs/${id}`, '/api/v1/dashboard', '/']) {
      const read = await send(`${url}${path}`, {
        headers: { host: 'evil.example:8000', accept: 'text/html' },
      });
      expect(read.status, path).toBe(403);
      expect(read.body).not.toContain('sleep 60');
    }

    // The dashboard's own requests: same-origin fetches from the page served at GET /.
    const page = await send(`${url}/`, { headers: { accept: 'text/html' } });
    expect(page.status).toBe(200);
    const own = { origin: url, 'sec-fetch-site': 'same-origin', 'sec-fetch-mode': 'cors' };
    expect((await send(`${url}/api/v1/ui/jobs`, { headers: own })).status).toBe(200);
    const cancelled = await send(`${url}/api/v1/jobs/${id}/cancel`, { method: 'POST', headers: own });
    expect(cancelled.status).toBe(200);

    // The CLI.
    const script = join(dataDir, 'job.sh');
    writeFileSync(script, 'echo from-cli\n');
    const cli = await conductor(['submit', script, '--json'], { CONDUCTOR_URL: url });
    expect(cli.code, cli.stderr).toBe(0);
    const listed = await conductor(['jobs', '--json'], { CONDUCTOR_URL: `http://localhost:${port}` });
    expect(listed.code, listed.stderr).toBe(0);
    expect((JSON.parse(listed.stdout) as { jobs: unknown[] }).jobs).toHaveLength(2);

    for (const res of [csrf, textOnly, rebound, crossJson, curl, page, cancelled])
      expect(Object.keys(res.headers).filter((h) => h.startsWith('access-control-'))).toEqual([]);
    // Other users of this machine: said at start.
    expect(server.has('Every user of this machine can use it too')).toBe(true);
  });

  it('agents registered while the cluster was open keep working once the first token exists', {
    timeout: 240_000,
  }, async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'conductor-first-token-'));
    server = new ServerProcess(await freePort(), {
      CONDUCTOR_DATA_DIR: dataDir,
      CONDUCTOR_EMBEDDED_AGENT: '0',
    });
    await server.ready(90_000);
    const url = server.url;
    // Started as docs/getting-started.md's walk-through does: no CONDUCTOR_TOKEN, the cluster is open.
    agent = new AgentProcess('open-node', url, { cpus: 2, env: { CONDUCTOR_HEARTBEAT_INTERVAL: '2' } });
    await agent.waitForLine(/Worker registered: open-node/, 60_000);
    const json = { 'content-type': 'application/json' };
    const run = async (headers: Record<string, string>, script: string) => {
      const res = await fetch(`${url}/api/v1/jobs/submit`, {
        method: 'POST',
        headers: { ...json, ...headers },
        body: JSON.stringify({ script, cpus: 1 }),
      });
      expect(res.status).toBe(201);
      const { id } = (await res.json()) as { id: number };
      await eventually(
        async () =>
          ((await (await fetch(`${url}/api/v1/jobs/${id}`, { headers })).json()) as { state: string })
            .state === 'COMPLETED',
        { timeoutMs: 90_000, what: `job ${id} to complete on open-node` },
      );
      return id;
    };
    await run({}, 'echo before');

    const created = await fetch(`${url}/api/v1/tokens`, {
      method: 'POST',
      headers: json,
      body: JSON.stringify({ name: 'first-admin', scopes: ['admin'] }),
    });
    expect(created.status).toBe(201);
    const first = (await created.json()) as { token: string; notice?: string };
    expect((await fetch(`${url}/api/v1/dashboard`)).status).toBe(401);

    const auth = { authorization: `Bearer ${first.token}` };
    const id = await run(auth, 'echo after');
    const job = (await (await fetch(`${url}/api/v1/jobs/${id}`, { headers: auth })).json()) as {
      node: string;
      exit_code: string;
    };
    expect(job).toMatchObject({ node: 'open-node', exit_code: '0:0' });
    const logs = (await (await fetch(`${url}/api/v1/jobs/${id}/logs`, { headers: auth })).json()) as {
      stdout: { content: string };
    };
    expect(logs.stdout.content).toBe('after\n');
    // Heartbeats go on with the agent's own token: the node stays up.
    await agent.waitForLine(/Heartbeat sent: open-node/);
    const workers = (await (await fetch(`${url}/api/v1/workers`, { headers: auth })).json()) as {
      workers: { worker_id: string; status: string }[];
    };
    expect(workers.workers.map((w) => [w.worker_id, w.status])).toEqual([['open-node', 'ready']]);
    // A 401 as a status, not as digits of the server's random port.
    expect(agent.lines.join('\n')).not.toMatch(/\b401\b/);
    // The answer that closed the cluster says so.
    expect(first.notice).toMatch(/now requires a token.*open access on loopback has ended/);
  });
});
