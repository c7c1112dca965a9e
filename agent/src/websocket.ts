/**
 * A minimal WebSocket client (RFC 6455) over node:http / node:https, for the agent's push channel: Node 20 has
 * no global WebSocket client, and the agent takes no dependencies. It does what the channel needs and what the
 * RFC asks of a client: text frames both ways (binary ones are received), fragmented messages, 7-, 16- and
 * 64-bit payload lengths, masked client frames, protocol pings answered with pongs, and the close handshake.
 * No extensions (no permessage-deflate) and no subprotocols are offered.
 *
 *   const ws = await connectWebSocket('https://host/path?x=1', { headers: { authorization: 'Bearer ...' } });
 *   ws.on('message', (text) => ...);
 *   ws.on('close', ({ code, reason, wasClean }) => ...);
 *   ws.send('ping');
 *   ws.close(1000, 'bye');
 *
 * An answer other than 101 rejects with WebSocketHandshakeError, which carries the HTTP status and body (and
 * the server's `{error: {code, message}}` envelope when the body is one); a socket error rejects with it as is.
 */
import { createHash, randomBytes, randomFillSync } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';

const ACCEPT_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

const OP_CONTINUATION = 0x0;
const OP_TEXT = 0x1;
const OP_BINARY = 0x2;
const OP_CLOSE = 0x8;
const OP_PING = 0x9;
const OP_PONG = 0xa;

/** The most of a refused handshake's body kept (for its error message). */
const MAX_ERROR_BODY = 64 * 1024;

export interface WebSocketConnectOptions {
  /** Extra request headers (authorization, user-agent). */
  headers?: Record<string, string>;
  /** How long the handshake may take; 15 s by default. */
  timeoutMs?: number;
  signal?: AbortSignal;
  /** The largest message accepted (the connection is closed with 1009 beyond it); 16 MiB by default. */
  maxMessageBytes?: number;
  /** How long close() waits for the server's close frame and the end of the connection; 5 s by default. */
  closeTimeoutMs?: number;
  /** TCP keep-alive on the socket, first probe after this idle time; 30 s by default, 0 for none. */
  keepAliveMs?: number;
  /** node:http's or node:https's `request`; by default picked (and loaded) from the URL's scheme. */
  request?: typeof httpRequest;
}

/** The server did not switch protocols: its status and body, and its error envelope when it sent one. */
export class WebSocketHandshakeError extends Error {
  override readonly name = 'WebSocketHandshakeError';
  readonly status: number;
  readonly statusText: string;
  readonly body: string;
  /** `error.code` and `error.message` of a `{error: {code, message}}` body. */
  readonly error: { code: string; message: string; details?: unknown } | undefined;

  constructor(status: number, statusText: string, body: string, message?: string) {
    const error = parseErrorEnvelope(body);
    super(
      message ??
        (error
          ? `${status} ${error.code}: ${error.message}`
          : `HTTP ${status}${statusText ? ` ${statusText}` : ''}${body.trim() ? `: ${snippet(body)}` : ''}`),
    );
    this.status = status;
    this.statusText = statusText;
    this.body = body;
    this.error = error;
  }
}

export interface WebSocketCloseInfo {
  /** The code of the close frame (1005 when it had none, 1006 when the connection ended without one). */
  code: number;
  reason: string;
  /** Both sides sent a close frame. */
  wasClean: boolean;
  /** What broke the connection, when something did (a socket error, a protocol violation). */
  error?: Error;
}

interface WebSocketEvents {
  /** A text message. */
  message: [text: string];
  /** A binary message. */
  binary: [data: Buffer];
  /** A ping from the server (already answered with a pong). */
  ping: [data: Buffer];
  pong: [data: Buffer];
  /** Once, when the connection is gone. */
  close: [info: WebSocketCloseInfo];
}

export type WebSocketState = 'open' | 'closing' | 'closed';

/** Opens a WebSocket to `url` (http:, https:, ws: or wss:); resolves once the server switched protocols. */
export async function connectWebSocket(
  url: string | URL,
  options: WebSocketConnectOptions = {},
): Promise<WebSocket> {
  const target = new URL(url);
  if (target.protocol === 'ws:') target.protocol = 'http:';
  else if (target.protocol === 'wss:') target.protocol = 'https:';
  if (target.protocol !== 'http:' && target.protocol !== 'https:') {
    throw new TypeError(`not an http(s) or ws(s) URL: ${target.href}`);
  }
  const request =
    options.request ??
    (target.protocol === 'https:'
      ? ((await import('node:https')).request as typeof httpRequest)
      : httpRequest);
  const key = randomBytes(16).toString('base64');
  const expectedAccept = createHash('sha1')
    .update(key + ACCEPT_GUID)
    .digest('base64');
  const { signal } = options;

  return new Promise<WebSocket>((resolve, reject) => {
    if (signal?.aborted) return reject(abortError(signal));
    let settled = false;
    const settle = (): boolean => {
      if (settled) return false;
      settled = true;
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      return true;
    };
    const fail = (error: Error) => {
      if (!settle()) return;
      req.destroy();
      reject(error);
    };
    // A dedicated connection (no keep-alive pool): it becomes the WebSocket's own.
    const req = request(target, {
      method: 'GET',
      agent: false,
      headers: {
        ...options.headers,
        connection: 'Upgrade',
        upgrade: 'websocket',
        'sec-websocket-version': '13',
        'sec-websocket-key': key,
      },
    });
    const timer = setTimeout(() => {
      fail(
        Object.assign(new Error('The WebSocket handshake timed out'), {
          name: 'TimeoutError',
          code: 'ETIMEDOUT',
        }),
      );
    }, options.timeoutMs ?? 15_000);
    const onAbort = () => fail(abortError(signal!));
    signal?.addEventListener('abort', onAbort, { once: true });
    req.on('error', (err) => fail(err));
    req.on('response', (res: IncomingMessage) => {
      // Not switching protocols: read the body (bounded) for the error.
      const chunks: Buffer[] = [];
      let length = 0;
      res.on('data', (chunk: Buffer) => {
        if (length < MAX_ERROR_BODY) chunks.push(chunk);
        length += chunk.length;
      });
      const done = () => {
        const body = Buffer.concat(chunks).subarray(0, MAX_ERROR_BODY).toString('utf8');
        fail(new WebSocketHandshakeError(res.statusCode ?? 0, res.statusMessage ?? '', body));
      };
      res.on('end', done);
      res.on('aborted', done);
      res.on('error', done);
    });
    req.on('upgrade', (res: IncomingMessage, socket: Socket, head: Buffer) => {
      if (settled) {
        socket.destroy();
        return;
      }
      const problem =
        res.statusCode !== 101
          ? `status ${res.statusCode}`
          : String(res.headers.upgrade).toLowerCase() !== 'websocket'
            ? `Upgrade: ${res.headers.upgrade}`
            : res.headers['sec-websocket-accept'] !== expectedAccept
              ? 'a wrong Sec-WebSocket-Accept'
              : res.headers['sec-websocket-extensions']
                ? `an extension not asked for (${res.headers['sec-websocket-extensions']})`
                : res.headers['sec-websocket-protocol']
                  ? `a subprotocol not asked for (${res.headers['sec-websocket-protocol']})`
                  : undefined;
      if (problem) {
        socket.destroy();
        fail(
          new WebSocketHandshakeError(
            res.statusCode ?? 0,
            res.statusMessage ?? '',
            '',
            `Bad WebSocket handshake: ${problem}`,
          ),
        );
        return;
      }
      settle();
      resolve(new WebSocket(socket, head, options));
    });
    req.end();
  });
}

/** An open client WebSocket (see connectWebSocket). Never emits 'error': a failure ends it with 'close'. */
export class WebSocket extends EventEmitter<WebSocketEvents> {
  private stateValue: WebSocketState = 'open';
  private readonly socket: Socket;
  private readonly maxMessageBytes: number;
  private readonly closeTimeoutMs: number;
  private buffered: Buffer[] = [];
  private bufferedBytes = 0;
  /** The message being reassembled from fragments. */
  private fragments: Buffer[] | undefined;
  private fragmentsOpcode = 0;
  private fragmentsBytes = 0;
  private closeSent = false;
  private closeReceived: { code: number; reason: string } | undefined;
  private closeError: Error | undefined;
  private closeTimer: NodeJS.Timeout | undefined;
  private readonly decoder = new TextDecoder('utf-8', { fatal: true });

  constructor(socket: Socket, head: Buffer, options: WebSocketConnectOptions = {}) {
    super();
    this.socket = socket;
    this.maxMessageBytes = options.maxMessageBytes ?? 16 * 1024 * 1024;
    this.closeTimeoutMs = options.closeTimeoutMs ?? 5_000;
    socket.setTimeout(0);
    socket.setNoDelay(true);
    const keepAliveMs = options.keepAliveMs ?? 30_000;
    if (keepAliveMs > 0) socket.setKeepAlive(true, keepAliveMs);
    socket.on('error', (err) => {
      this.closeError ??= err;
    });
    socket.on('end', () => {
      // The server ended its side: no close frame is coming any more.
      if (!socket.destroyed) socket.end();
    });
    socket.on('close', () => this.onSocketClose());
    // Reading starts on the next turn, once whoever awaited connectWebSocket has its listeners on; the socket
    // does not flow until then, so what the server sent right after its 101 (in `head`) stays first.
    setImmediate(() => {
      socket.on('data', (chunk: Buffer) => this.onData(chunk));
      if (head.length > 0) this.onData(head);
    });
  }

  get state(): WebSocketState {
    return this.stateValue;
  }

  /** Sends a text message; false (and nothing sent) once the WebSocket is closing. */
  send(text: string): boolean {
    if (this.stateValue !== 'open') return false;
    this.writeFrame(OP_TEXT, Buffer.from(text, 'utf8'));
    return true;
  }

  /** Sends a protocol ping (the server answers it with a pong). */
  ping(data: Buffer = Buffer.alloc(0)): boolean {
    if (this.stateValue !== 'open') return false;
    this.writeFrame(OP_PING, data.subarray(0, 125));
    return true;
  }

  /**
   * Starts the close handshake: sends a close frame, then waits (at most closeTimeoutMs) for the server's and
   * for the end of the connection. 'close' follows.
   */
  close(code = 1000, reason = ''): void {
    if (this.stateValue !== 'open') return;
    this.stateValue = 'closing';
    this.sendClose(code, reason);
    this.armCloseTimer();
  }

  /** Drops the connection at once, without a close handshake. */
  terminate(): void {
    if (this.stateValue === 'closed') return;
    this.stateValue = 'closing';
    this.socket.destroy();
  }

  private armCloseTimer(): void {
    this.closeTimer ??= setTimeout(() => this.socket.destroy(), this.closeTimeoutMs);
  }

  private sendClose(code: number | undefined, reason: string): void {
    if (this.closeSent) return;
    this.closeSent = true;
    let payload = Buffer.alloc(0);
    if (code !== undefined) {
      const text = Buffer.from(reason, 'utf8').subarray(0, 123);
      payload = Buffer.alloc(2 + text.length);
      payload.writeUInt16BE(code, 0);
      text.copy(payload, 2);
    }
    this.writeFrame(OP_CLOSE, payload);
  }

  private writeFrame(opcode: number, payload: Buffer): void {
    if (this.socket.destroyed || this.socket.writableEnded) return;
    const length = payload.length;
    const lengthBytes = length < 126 ? 0 : length <= 0xffff ? 2 : 8;
    const header = Buffer.alloc(2 + lengthBytes + 4);
    header[0] = 0x80 | opcode; // FIN: every frame sent is a whole message
    if (lengthBytes === 0) header[1] = 0x80 | length;
    else if (lengthBytes === 2) {
      header[1] = 0x80 | 126;
      header.writeUInt16BE(length, 2);
    } else {
      header[1] = 0x80 | 127;
      header.writeBigUInt64BE(BigInt(length), 2);
    }
    const maskAt = 2 + lengthBytes;
    randomFillSync(header, maskAt, 4);
    const masked = Buffer.allocUnsafe(length);
    for (let i = 0; i < length; i++) masked[i] = payload[i]! ^ header[maskAt + (i & 3)]!;
    this.socket.write(length > 0 ? Buffer.concat([header, masked]) : header);
  }

  private onData(chunk: Buffer): void {
    if (this.stateValue === 'closed') return;
    this.buffered.push(chunk);
    this.bufferedBytes += chunk.length;
    try {
      while (this.parseFrame()) {}
    } catch (err) {
      if (err instanceof ProtocolError) this.failConnection(err.code, err.message);
      else throw err;
    }
  }

  /** Takes `n` bytes off the front of the buffered data (which holds at least that many). */
  private take(n: number): Buffer {
    if (n === 0) return Buffer.alloc(0);
    const first = this.buffered[0]!;
    if (first.length === n) {
      this.buffered.shift();
      this.bufferedBytes -= n;
      return first;
    }
    if (first.length > n) {
      this.buffered[0] = first.subarray(n);
      this.bufferedBytes -= n;
      return first.subarray(0, n);
    }
    const all = Buffer.concat(this.buffered);
    this.buffered = all.length > n ? [all.subarray(n)] : [];
    this.bufferedBytes -= n;
    return all.subarray(0, n);
  }

  /** The first `n` buffered bytes, without taking them. */
  private peek(n: number): Buffer {
    if (this.buffered[0]!.length < n) this.buffered = [Buffer.concat(this.buffered)];
    return this.buffered[0]!.subarray(0, n);
  }

  /** Parses and handles one frame; false when a whole one is not buffered yet. */
  private parseFrame(): boolean {
    if (this.stateValue === 'closed' || this.bufferedBytes < 2) return false;
    const start = this.peek(2);
    const fin = (start[0]! & 0x80) !== 0;
    const rsv = start[0]! & 0x70;
    const opcode = start[0]! & 0x0f;
    const masked = (start[1]! & 0x80) !== 0;
    const shortLength = start[1]! & 0x7f;
    const lengthBytes = shortLength === 126 ? 2 : shortLength === 127 ? 8 : 0;
    if (this.bufferedBytes < 2 + lengthBytes) return false;
    let length = shortLength;
    if (lengthBytes > 0) {
      const header = this.peek(2 + lengthBytes);
      if (lengthBytes === 2) length = header.readUInt16BE(2);
      else {
        const big = header.readBigUInt64BE(2);
        if (big > BigInt(Number.MAX_SAFE_INTEGER)) throw new ProtocolError(1009, 'frame too large');
        length = Number(big);
      }
    }
    if (rsv !== 0) throw new ProtocolError(1002, 'reserved bits set (no extension was negotiated)');
    if (masked) throw new ProtocolError(1002, 'a masked frame from the server');
    const control = opcode >= 0x8;
    if (control && (!fin || length > 125))
      throw new ProtocolError(1002, 'a fragmented or long control frame');
    if (![OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG].includes(opcode)) {
      throw new ProtocolError(1002, `unknown opcode ${opcode}`);
    }
    if (!control && (this.fragments ? this.fragmentsBytes : 0) + length > this.maxMessageBytes) {
      throw new ProtocolError(1009, `a message over ${this.maxMessageBytes} bytes`);
    }
    if (this.bufferedBytes < 2 + lengthBytes + length) return false;
    this.take(2 + lengthBytes);
    const payload = this.take(length);
    if (control) this.onControl(opcode, payload);
    else this.onDataFrame(opcode, fin, payload);
    return true;
  }

  private onDataFrame(opcode: number, fin: boolean, payload: Buffer): void {
    if (opcode === OP_CONTINUATION) {
      if (!this.fragments) throw new ProtocolError(1002, 'a continuation frame outside a message');
      this.fragments.push(payload);
      this.fragmentsBytes += payload.length;
      if (!fin) return;
      const message = Buffer.concat(this.fragments);
      const messageOpcode = this.fragmentsOpcode;
      this.fragments = undefined;
      this.fragmentsBytes = 0;
      this.deliver(messageOpcode, message);
      return;
    }
    if (this.fragments) throw new ProtocolError(1002, 'a new message inside a fragmented one');
    if (!fin) {
      this.fragments = [payload];
      this.fragmentsOpcode = opcode;
      this.fragmentsBytes = payload.length;
      return;
    }
    this.deliver(opcode, payload);
  }

  private deliver(opcode: number, message: Buffer): void {
    if (this.stateValue !== 'open') return; // closing: data after our close frame is dropped
    if (opcode === OP_BINARY) {
      this.emit('binary', message);
      return;
    }
    let text: string;
    try {
      text = this.decoder.decode(message);
    } catch {
      throw new ProtocolError(1007, 'a text message that is not UTF-8');
    }
    this.emit('message', text);
  }

  private onControl(opcode: number, payload: Buffer): void {
    if (opcode === OP_PING) {
      if (this.stateValue === 'open') this.writeFrame(OP_PONG, payload);
      this.emit('ping', payload);
      return;
    }
    if (opcode === OP_PONG) {
      this.emit('pong', payload);
      return;
    }
    // Close: 1005 when it carries no code; a 1-byte payload or an invalid code is a protocol error.
    if (payload.length === 1) throw new ProtocolError(1002, 'a close frame with a 1-byte payload');
    let code = 1005;
    let reason = '';
    if (payload.length >= 2) {
      code = payload.readUInt16BE(0);
      if (!validCloseCode(code)) throw new ProtocolError(1002, `an invalid close code ${code}`);
      try {
        reason = this.decoder.decode(payload.subarray(2));
      } catch {
        throw new ProtocolError(1007, 'a close reason that is not UTF-8');
      }
    }
    this.closeReceived = { code, reason };
    if (this.stateValue === 'open') this.stateValue = 'closing';
    // Echo the code (RFC 6455 5.5.1), then leave it to the server to end the TCP connection (7.1.1).
    this.sendClose(code === 1005 ? undefined : code, '');
    this.buffered = [];
    this.bufferedBytes = 0;
    this.armCloseTimer();
  }

  /** Closes after a protocol violation by the server (RFC 6455 7.1.7). */
  private failConnection(code: number, message: string): void {
    this.closeError ??= new Error(`WebSocket protocol error: ${message}`);
    this.buffered = [];
    this.bufferedBytes = 0;
    if (this.stateValue === 'open') this.stateValue = 'closing';
    this.sendClose(code, message);
    this.socket.end();
    this.armCloseTimer();
  }

  private onSocketClose(): void {
    if (this.stateValue === 'closed') return;
    this.stateValue = 'closed';
    clearTimeout(this.closeTimer);
    this.closeTimer = undefined;
    const received = this.closeReceived;
    this.emit('close', {
      code: received?.code ?? 1006,
      reason: received?.reason ?? '',
      wasClean: received !== undefined && this.closeSent,
      ...(this.closeError ? { error: this.closeError } : {}),
    });
    this.removeAllListeners();
  }
}

class ProtocolError extends Error {
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(message);
  }
}

/** Close codes a peer may send (RFC 6455 7.4). */
function validCloseCode(code: number): boolean {
  return (
    (code >= 1000 && code <= 1014 && code !== 1004 && code !== 1005 && code !== 1006) ||
    (code >= 3000 && code <= 4999)
  );
}

function parseErrorEnvelope(body: string): WebSocketHandshakeError['error'] {
  try {
    const parsed = JSON.parse(body) as { error?: { code?: unknown; message?: unknown; details?: unknown } };
    const error = parsed?.error;
    if (error && typeof error.code === 'string') {
      return {
        code: error.code,
        message: typeof error.message === 'string' ? error.message : error.code,
        ...(error.details !== undefined ? { details: error.details } : {}),
      };
    }
  } catch {
    // not JSON
  }
  return undefined;
}

function abortError(signal: AbortSignal): Error {
  return Object.assign(new Error('This operation was aborted', { cause: signal.reason }), {
    name: 'AbortError',
  });
}

function snippet(text: string): string {
  const flat = text.replace(/\s+/g, ' ').trim();
  return flat.length > 120 ? `${flat.slice(0, 120)}…` : flat;
}
