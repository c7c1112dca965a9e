/**
 * AgentClient over node:http (not fetch, for the agent's memory: bench/agent-footprint.ts): the same errors as
 * before (timeout, aborted, network_error with the socket's code, the server's error code), keep-alive
 * connections, and one more try when a kept-alive socket turns out closed by the server.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import {
  type AddressInfo,
  createServer as createNetServer,
  type Server as NetServer,
  type Socket,
} from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { AgentApiError, AgentClient } from '../../agent/src/client.ts';

const servers: (Server | NetServer)[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) {
    if ('closeAllConnections' in s) s.closeAllConnections();
    await new Promise((resolve) => s.close(resolve));
  }
});

function listen<T extends Server | NetServer>(server: T): Promise<string> {
  servers.push(server);
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () =>
      resolve(`http://127.0.0.1:${(server.address() as AddressInfo).port}`),
    ),
  );
}

async function failure(promise: Promise<unknown>): Promise<AgentApiError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(AgentApiError);
  return error as AgentApiError;
}

describe('AgentClient over node:http', () => {
  it('posts JSON with the token, and reuses one kept-alive connection', async () => {
    const seen: { url?: string; auth?: string; type?: string; body: string }[] = [];
    let connections = 0;
    const server = createServer((req, res) => {
      let body = '';
      req.on('data', (d: Buffer) => {
        body += d.toString();
      });
      req.on('end', () => {
        seen.push({ url: req.url, auth: req.headers.authorization, type: req.headers['content-type'], body });
        res.setHeader('content-type', 'application/json');
        res.end(JSON.stringify({ interval_s: 30, cancel: [], ok: 'é' }));
      });
    });
    server.on('connection', () => connections++);
    const url = await listen(server);
    const client = new AgentClient({ url: `${url}/prefix/`, token: 'cnd_x' });
    const first = await client.heartbeat({ worker_id: 'n1', session: 's' } as never);
    await client.heartbeat({ worker_id: 'n1', session: 's' } as never);
    expect(first).toMatchObject({ interval_s: 30, ok: 'é' });
    expect(seen[0]).toEqual({
      url: '/prefix/api/v1/agents/heartbeat',
      auth: 'Bearer cnd_x',
      type: 'application/json',
      body: JSON.stringify({ worker_id: 'n1', session: 's' }),
    });
    expect(connections).toBe(1);
  });

  it("sends the token the open cluster's register answer gave it, and keeps it out of the answer", async () => {
    const auth: (string | undefined)[] = [];
    const server = createServer((req, res) => {
      req.resume();
      req.on('end', () => {
        auth.push(req.headers.authorization);
        res.setHeader('content-type', 'application/json');
        const registered = req.url?.endsWith('/register');
        res.end(JSON.stringify(registered ? { session: 's', token: 'cnd_issued' } : { cancel: [] }));
      });
    });
    const client = new AgentClient({ url: await listen(server) });
    const answer = await client.register({ worker_id: 'n1', hostname: 'h', cpus: 1 });
    expect(answer).toEqual({ session: 's' });
    await client.heartbeat({ worker_id: 'n1', session: 's' });
    expect(auth).toEqual([undefined, 'Bearer cnd_issued']);
  });

  it("turns the server's error body into status and code", async () => {
    const url = await listen(
      createServer((_req, res) => {
        res.writeHead(409, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ error: { code: 'session_superseded', message: 'another session' } }));
      }),
    );
    const error = await failure(new AgentClient({ url }).heartbeat({} as never));
    expect(error.status).toBe(409);
    expect(error.code).toBe('session_superseded');
    expect(error.message).toBe('409 session_superseded: another session');
  });

  it('times out (code timeout), and a caller abort is code aborted', async () => {
    const url = await listen(createServer(() => {}));
    const timedOut = await failure(new AgentClient({ url, requestTimeoutMs: 200 }).heartbeat({} as never));
    expect(timedOut.status).toBe(0);
    expect(timedOut.code).toBe('timeout');
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 100);
    const aborted = await failure(
      new AgentClient({ url }).heartbeat({} as never, { signal: controller.signal }),
    );
    expect(aborted.code).toBe('aborted');
  });

  it('names the network error and its code', async () => {
    const error = await failure(new AgentClient({ url: 'http://127.0.0.1:1' }).heartbeat({} as never));
    expect(error.status).toBe(0);
    expect(error.code).toBe('network_error');
    expect(error.message).toMatch(/^\/heartbeat: connect ECONNREFUSED 127\.0\.0\.1:1 \(ECONNREFUSED\)$/);
  });

  it('sends a request once more when the kept-alive socket it reused was closed by the server', async () => {
    // Answers the first request on each connection, then drops the connection at the next one.
    let connections = 0;
    const response = 'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}';
    const sockets: Socket[] = [];
    const server = createNetServer((socket) => {
      sockets.push(socket);
      connections++;
      let requests = 0;
      socket.on('data', (chunk) => {
        if (!chunk.toString().includes('\r\n\r\n')) return;
        requests++;
        if (requests === 1) socket.write(response);
        else socket.destroy();
      });
    });
    const url = await listen(server);
    const client = new AgentClient({ url });
    await client.heartbeat({} as never);
    await expect(client.heartbeat({} as never)).resolves.toEqual({});
    expect(connections).toBe(2);
    for (const socket of sockets) socket.destroy();
  });

  it('speaks HTTPS to an https URL (and checks the certificate)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'client-tls-'));
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'rsa:2048',
        '-nodes',
        '-days',
        '1',
        '-subj',
        '/CN=127.0.0.1',
        '-keyout',
        'key.pem',
        '-out',
        'cert.pem',
      ],
      { cwd: dir, stdio: 'ignore', env: { ...process.env, RANDFILE: join(dir, '.rnd') }, input: '' },
    );
    const server = createHttpsServer(
      { key: readFileSync(join(dir, 'key.pem')), cert: readFileSync(join(dir, 'cert.pem')) },
      (_req, res) => {
        res.setHeader('content-type', 'application/json');
        res.end('{"tls":true}');
      },
    );
    const url = (await listen(server)).replace('http:', 'https:');
    // A self-signed certificate is refused, as fetch refused it.
    const refused = await failure(new AgentClient({ url }).heartbeat({} as never));
    expect(refused.code).toBe('network_error');
    expect(refused.message).toMatch(/self[- ]signed/i);
    process.env.NODE_TLS_REJECT_UNAUTHORIZED = '0';
    try {
      await expect(new AgentClient({ url }).heartbeat({} as never)).resolves.toEqual({ tls: true });
    } finally {
      delete process.env.NODE_TLS_REJECT_UNAUTHORIZED;
    }
  });
});
