/**
 * The agent's WebSocket client (agent/src/websocket.ts) against the `ws` package's server: messages both
 * ways, every payload length encoding, fragmented messages, protocol pings, the close handshake from either
 * side, and handshakes that do not switch protocols (their status and error envelope reach the caller).
 */
import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { type WebSocket as ServerSocket, WebSocketServer } from 'ws';
import { AgentApiError, AgentClient, needsReregistration } from '../../agent/src/client.ts';
import {
  connectWebSocket,
  type WebSocket,
  type WebSocketCloseInfo,
  WebSocketHandshakeError,
} from '../../agent/src/websocket.ts';
import { eventually } from '../support/agent-process.ts';

interface TestServer {
  url: string;
  /** Server sides of the accepted connections, in order. */
  sockets: ServerSocket[];
  /** Headers of the upgrade requests. */
  upgrades: IncomingMessage['headers'][];
  close(): Promise<void>;
}

const servers: TestServer[] = [];
const clients: WebSocket[] = [];
afterEach(async () => {
  for (const c of clients.splice(0)) c.terminate();
  await Promise.all(servers.splice(0).map((s) => s.close()));
});

/** A `ws` server; `onUpgrade` may answer an upgrade itself (return true) instead of accepting it. */
async function wsServer(
  onConnection: (ws: ServerSocket) => void = () => {},
  onUpgrade?: (req: IncomingMessage, socket: Socket) => boolean,
): Promise<TestServer> {
  const wss = new WebSocketServer({ noServer: true });
  const sockets: ServerSocket[] = [];
  const upgrades: IncomingMessage['headers'][] = [];
  // Upgraded sockets are no longer the HTTP server's: closeAllConnections does not see them.
  const raw: Socket[] = [];
  const server: Server = createServer((_req, res) => {
    res.writeHead(404, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ error: { code: 'not_found', message: 'No route' } }));
  });
  server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
    upgrades.push(req.headers);
    raw.push(socket);
    if (onUpgrade?.(req, socket)) return;
    wss.handleUpgrade(req, socket, head, (ws) => {
      sockets.push(ws);
      onConnection(ws);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const s: TestServer = {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    sockets,
    upgrades,
    async close() {
      for (const ws of sockets) ws.terminate();
      for (const socket of raw) socket.destroy();
      wss.close();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  servers.push(s);
  return s;
}

async function connect(url: string, options?: Parameters<typeof connectWebSocket>[1]): Promise<WebSocket> {
  const ws = await connectWebSocket(url, options);
  clients.push(ws);
  return ws;
}

function messages(ws: WebSocket): string[] {
  const received: string[] = [];
  ws.on('message', (text) => received.push(text));
  return received;
}

function closed(ws: WebSocket): Promise<WebSocketCloseInfo> {
  return new Promise((resolve) => ws.on('close', resolve));
}

/** Answers an upgrade with `status`, `body` and no switch. */
function refuse(status: number, body: string, type = 'application/json') {
  return (_req: IncomingMessage, socket: Socket) => {
    socket.end(
      `HTTP/1.1 ${status} No\r\ncontent-type: ${type}\r\ncontent-length: ${Buffer.byteLength(body)}\r\n` +
        `connection: close\r\n\r\n${body}`,
    );
    return true;
  };
}

describe('connectWebSocket against the ws server', () => {
  it('sends and receives text messages, and the first message sent right after the 101 arrives', async () => {
    const server = await wsServer((ws) => {
      ws.send('welcome');
      ws.on('message', (data) => ws.send(`echo:${data.toString()}`));
    });
    const ws = await connect(`${server.url}/chan?x=1`);
    const received = messages(ws);
    expect(ws.state).toBe('open');
    ws.send('hello');
    ws.send('héllo ✓');
    await eventually(() => received.length === 3, { what: 'three messages' });
    expect(received).toEqual(['welcome', 'echo:hello', 'echo:héllo ✓']);
    expect(server.upgrades[0]!['sec-websocket-version']).toBe('13');
  });

  it('carries messages of every length encoding both ways: 7-bit, 16-bit and 64-bit (70 KB)', async () => {
    const got: string[] = [];
    const server = await wsServer((ws) =>
      ws.on('message', (data) => {
        got.push(data.toString());
        ws.send(data.toString());
      }),
    );
    const ws = await connect(server.url);
    const received = messages(ws);
    const big = `${'0123456789abcdef'.repeat(4480)}é`; // 71,681 bytes: a 64-bit length
    const medium = 'm'.repeat(300); // a 16-bit length
    const lengths = ['', 'x'.repeat(125), 'y'.repeat(126), medium, 'z'.repeat(65_535), big];
    for (const text of lengths) ws.send(text);
    await eventually(() => received.length === lengths.length, { what: 'every echo' });
    expect(got).toEqual(lengths);
    expect(received).toEqual(lengths);
    expect(Buffer.byteLength(big)).toBeGreaterThan(70 * 1024);
  });

  it('reassembles fragmented messages, with a ping between the fragments answered', async () => {
    const pongs: string[] = [];
    const server = await wsServer((ws) => {
      ws.on('pong', (data) => pongs.push(data.toString()));
      ws.send('frag', { fin: false });
      ws.send('men', { fin: false });
      ws.ping('between');
      ws.send('ted', { fin: true });
      ws.send(Buffer.alloc(70 * 1024, 'b').toString(), { fin: false });
      ws.send('!', { fin: true });
      ws.send('whole');
    });
    const ws = await connect(server.url);
    const received = messages(ws);
    await eventually(() => received.length === 3, { what: 'three messages' });
    expect(received[0]).toBe('fragmented');
    expect(received[1]).toBe(`${'b'.repeat(70 * 1024)}!`);
    expect(received[2]).toBe('whole');
    await eventually(() => pongs.length === 1, { what: 'the pong' });
    expect(pongs).toEqual(['between']);
  });

  it('answers protocol pings with pongs carrying the same payload', async () => {
    const pongs: string[] = [];
    let server!: TestServer;
    server = await wsServer((ws) => ws.on('pong', (data) => pongs.push(data.toString())));
    const ws = await connect(server.url);
    const pings: string[] = [];
    ws.on('ping', (data) => pings.push(data.toString()));
    await eventually(() => server.sockets.length === 1, { what: 'the server side' });
    server.sockets[0]!.ping('one');
    server.sockets[0]!.ping('two');
    await eventually(() => pongs.length === 2, { what: 'two pongs' });
    expect(pongs).toEqual(['one', 'two']);
    expect(pings).toEqual(['one', 'two']);
    expect(ws.state).toBe('open');
  });

  it('closes with the handshake when the client closes: the server gets the code and reason', async () => {
    const serverClose = new Promise<{ code: number; reason: string }>((resolve) => {
      void wsServer((ws) =>
        ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() })),
      ).then(async (server) => {
        const ws = await connect(server.url);
        const info = closed(ws);
        ws.close(1000, 'bye');
        expect(ws.state).toBe('closing');
        expect(ws.send('late')).toBe(false);
        expect(await info).toMatchObject({ code: 1000, wasClean: true });
        expect(ws.state).toBe('closed');
      });
    });
    expect(await serverClose).toEqual({ code: 1000, reason: 'bye' });
  });

  it('closes with the handshake when the server closes: the client gets its code and reason', async () => {
    const server = await wsServer((ws) => setTimeout(() => ws.close(1012, 'restarting'), 50));
    const ws = await connect(server.url);
    const info = await closed(ws);
    expect(info).toEqual({ code: 1012, reason: 'restarting', wasClean: true });
    expect(ws.state).toBe('closed');
  });

  it('reports a connection that ends without a close frame as 1006, not clean', async () => {
    const server = await wsServer((ws) => setTimeout(() => ws.terminate(), 50));
    const ws = await connect(server.url);
    const info = await closed(ws);
    expect(info).toMatchObject({ code: 1006, wasClean: false });
  });

  it('fails the connection on a protocol error (an unknown opcode) with 1002', async () => {
    const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
    let serverGot = Buffer.alloc(0);
    const server = await wsServer(undefined, (req, socket) => {
      const accept = createHash('sha1')
        .update(req.headers['sec-websocket-key'] + GUID)
        .digest('base64');
      socket.on('data', (d: Buffer) => {
        serverGot = Buffer.concat([serverGot, d]);
      });
      socket.write(
        `HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: ${accept}\r\n\r\n`,
      );
      socket.write(Buffer.from([0x83, 0x00])); // FIN + opcode 3 (reserved)
      return true;
    });
    const ws = await connect(server.url, { closeTimeoutMs: 200 });
    const info = await closed(ws);
    expect(info.code).toBe(1006); // the server never answered the close frame
    expect(info.error?.message).toContain('unknown opcode 3');
    // The client's close frame (masked): opcode 8, then code 1002 once unmasked.
    expect(serverGot[0]).toBe(0x88);
    const mask = serverGot.subarray(2, 6);
    expect(((serverGot[6]! ^ mask[0]!) << 8) | (serverGot[7]! ^ mask[1]!)).toBe(1002);
  });

  it('refuses a 101 whose Sec-WebSocket-Accept is wrong', async () => {
    const server = await wsServer(undefined, (_req, socket) => {
      socket.write(
        'HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: bogus\r\n\r\n',
      );
      return true;
    });
    await expect(connectWebSocket(server.url)).rejects.toThrow(/Sec-WebSocket-Accept/);
  });

  it('surfaces the status and JSON error envelope of an answer other than 101', async () => {
    const body = JSON.stringify({
      error: { code: 'session_superseded', message: 'another session took over' },
    });
    const server = await wsServer(undefined, refuse(409, body));
    const err = await connectWebSocket(server.url).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WebSocketHandshakeError);
    const refused = err as WebSocketHandshakeError;
    expect(refused.status).toBe(409);
    expect(refused.error).toEqual({ code: 'session_superseded', message: 'another session took over' });
    expect(refused.body).toBe(body);
    expect(refused.message).toBe('409 session_superseded: another session took over');
  });

  it('surfaces a body that is not an envelope (a proxy that strips the upgrade) as text', async () => {
    const server = await wsServer(undefined, refuse(426, 'Upgrade Required', 'text/plain'));
    const err = (await connectWebSocket(server.url).catch((e: unknown) => e)) as WebSocketHandshakeError;
    expect(err).toBeInstanceOf(WebSocketHandshakeError);
    expect(err.status).toBe(426);
    expect(err.error).toBeUndefined();
    expect(err.body).toBe('Upgrade Required');
  });

  it('answers a server with no upgrade handler by its plain HTTP answer', async () => {
    // The route does not exist: the server answers the GET as any other request.
    const server = createServer((_req, res) => {
      res.writeHead(404, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: { code: 'not_found', message: 'No route for GET /x' } }));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/x`;
      const err = (await connectWebSocket(url).catch((e: unknown) => e)) as WebSocketHandshakeError;
      expect(err.status).toBe(404);
      expect(err.error?.code).toBe('not_found');
    } finally {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });

  it('rejects with the socket error when nothing listens, and on a handshake timeout', async () => {
    await expect(connectWebSocket('http://127.0.0.1:9/')).rejects.toMatchObject({ code: 'ECONNREFUSED' });
    const server = await wsServer(undefined, () => true); // never answers
    await expect(connectWebSocket(server.url, { timeoutMs: 200 })).rejects.toMatchObject({
      name: 'TimeoutError',
    });
  });
});

describe('AgentClient.openChannel', () => {
  it('sends the token and user agent, to /api/v1/agents/channel with the worker and session', async () => {
    const server = await wsServer();
    const client = new AgentClient({
      url: `${server.url}/base/`,
      token: 'tok-1',
      userAgent: 'conductor-agent/x',
    });
    const ws = await client.openChannel({ worker_id: 'node 1', session: 's-1' });
    clients.push(ws);
    expect(server.upgrades[0]).toMatchObject({
      authorization: 'Bearer tok-1',
      'user-agent': 'conductor-agent/x',
    });
    const received = messages(ws);
    server.sockets[0]!.send('hi');
    await eventually(() => received.length === 1, { what: 'a message' });
    // The path the server saw.
    const paths: string[] = [];
    const server2 = await wsServer(undefined, (req, socket) => {
      paths.push(req.url ?? '');
      return refuse(404, JSON.stringify({ error: { code: 'unknown_worker', message: 'who?' } }))(req, socket);
    });
    const err = await new AgentClient({ url: server2.url })
      .openChannel({ worker_id: 'node 1', session: 's-1' })
      .catch((e: unknown) => e);
    expect(paths).toEqual(['/api/v1/agents/channel?worker_id=node+1&session=s-1']);
    expect(err).toBeInstanceOf(AgentApiError);
    expect(err).toMatchObject({ status: 404, code: 'unknown_worker' });
    expect(needsReregistration(err)).toBe(true);
  });

  it('turns a refusal without an envelope into http_<status>, and no answer into status 0', async () => {
    const server = await wsServer(undefined, refuse(502, 'Bad Gateway', 'text/plain'));
    const err = await new AgentClient({ url: server.url })
      .openChannel({ worker_id: 'n', session: 's' })
      .catch((e: unknown) => e);
    expect(err).toMatchObject({ status: 502, code: 'http_502' });
    expect(needsReregistration(err)).toBe(false);
    const down = await new AgentClient({ url: 'http://127.0.0.1:9' })
      .openChannel({ worker_id: 'n', session: 's' })
      .catch((e: unknown) => e);
    expect(down).toMatchObject({ status: 0, code: 'network_error' });
  });
});
