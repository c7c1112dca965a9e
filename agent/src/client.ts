/**
 * HTTP client for the agent half of the wire protocol (see protocol.ts). Node built-ins only: node:http (and
 * node:https, loaded when the URL asks for it) with keep-alive, not the global fetch, whose undici and its
 * WebAssembly HTTP parser cost an idle agent about 20 MB of memory (bench/agent-footprint.ts). Every call is
 * a JSON POST with a per-request timeout; failures throw AgentApiError, which carries the HTTP status (0 when
 * no response arrived) and the server's error code.
 */
import {
  Agent as HttpAgent,
  type RequestOptions as HttpRequestOptions,
  request as httpRequest,
  type IncomingMessage,
} from 'node:http';
import type {
  ChannelQuery,
  ClaimRequest,
  ClaimResponse,
  FinishRequest,
  FinishResponse,
  HeartbeatRequest,
  HeartbeatResponse,
  OutputRequest,
  OutputResponse,
  RegisterRequest,
  RegisterResponse,
  StartedRequest,
  UnregisterRequest,
} from './protocol.ts';
import { connectWebSocket, type WebSocket, WebSocketHandshakeError } from './websocket.ts';

export class AgentApiError extends Error {
  override readonly name = 'AgentApiError';
  /** HTTP status, or 0 when no response arrived (network error, timeout, aborted). */
  readonly status: number;
  /** The server's `error.code`; `network_error`, `timeout`, `aborted` or `http_<status>` otherwise. */
  readonly code: string;
  readonly details: unknown;

  constructor(status: number, code: string, message: string, details?: unknown, options?: ErrorOptions) {
    super(message, options);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

/** Worth trying again later: no response, a timeout, 408, 429 or a server error. */
export function isRetryable(err: unknown): boolean {
  if (!(err instanceof AgentApiError)) return false;
  return err.status === 0 || err.status === 408 || err.status === 429 || err.status >= 500;
}

/** The server no longer knows this agent's session: register again. */
export function needsReregistration(err: unknown): boolean {
  return (
    err instanceof AgentApiError &&
    ((err.status === 404 && err.code === 'unknown_worker') ||
      (err.status === 409 && err.code === 'session_superseded'))
  );
}

/** A report for an attempt that is no longer current. */
export function isStaleAssignment(err: unknown): boolean {
  return err instanceof AgentApiError && err.status === 409 && err.code === 'stale_assignment';
}

export interface AgentClientOptions {
  /** Base URL of the control plane, e.g. `http://localhost:8000` (a path prefix is kept). */
  url: string;
  /** Sent as `Authorization: Bearer <token>` when set. */
  token?: string;
  /** Timeout of every request except claim; 15 s by default. */
  requestTimeoutMs?: number;
  /** Extra time a claim gets beyond its `wait_s`; 10 s by default. */
  claimTimeoutMarginMs?: number;
  userAgent?: string;
}

export interface RequestOptions {
  /** Aborts the request (the call then throws AgentApiError with code `aborted`). */
  signal?: AbortSignal;
  timeoutMs?: number;
}

export class AgentClient {
  private readonly base: string;
  private readonly requestTimeoutMs: number;
  private readonly claimTimeoutMarginMs: number;
  private transport: Promise<Transport> | undefined;
  private token: string | undefined;

  constructor(private readonly options: AgentClientOptions) {
    this.token = options.token;
    const url = new URL(options.url);
    this.base = `${url.origin}${url.pathname.replace(/\/+$/, '')}/api/v1/agents`;
    this.requestTimeoutMs = options.requestTimeoutMs ?? 15_000;
    this.claimTimeoutMarginMs = options.claimTimeoutMarginMs ?? 10_000;
  }

  /** On the open local cluster, the answer carries this agent's own token: every later call sends it. */
  async register(body: RegisterRequest, options?: RequestOptions): Promise<RegisterResponse> {
    const { token, ...response } = await this.post<RegisterResponse>('/register', body, options);
    if (typeof token === 'string' && token !== '') this.token = token;
    return response;
  }

  heartbeat(body: HeartbeatRequest, options?: RequestOptions): Promise<HeartbeatResponse> {
    return this.post('/heartbeat', body, options);
  }

  /** Long poll: the request may take `wait_s`, so its timeout is `wait_s` + the claim margin. */
  claim(body: ClaimRequest, options?: RequestOptions): Promise<ClaimResponse> {
    const timeoutMs = options?.timeoutMs ?? (body.wait_s ?? 0) * 1000 + this.claimTimeoutMarginMs;
    return this.post('/claim', body, { ...options, timeoutMs });
  }

  started(jobId: number, body: StartedRequest, options?: RequestOptions): Promise<unknown> {
    return this.post(`/jobs/${jobId}/started`, body, options);
  }

  output(jobId: number, body: OutputRequest, options?: RequestOptions): Promise<OutputResponse> {
    return this.post(`/jobs/${jobId}/output`, body, options);
  }

  finish(jobId: number, body: FinishRequest, options?: RequestOptions): Promise<FinishResponse> {
    return this.post(`/jobs/${jobId}/finish`, body, options);
  }

  async unregister(body: UnregisterRequest, options?: RequestOptions): Promise<void> {
    await this.post('/unregister', body, options);
  }

  /**
   * Opens the push channel (`GET /channel?worker_id=&session=`, upgraded to a WebSocket), with the token and
   * user agent every other call sends. A refusal throws AgentApiError with the answer's status and error
   * code (404 `unknown_worker`, 409 `session_superseded`, ..., `http_<status>` without an envelope); no
   * answer throws it with status 0, as the other calls do.
   */
  async openChannel(query: ChannelQuery, options: RequestOptions = {}): Promise<WebSocket> {
    const headers: Record<string, string> = {};
    if (this.token) headers.authorization = `Bearer ${this.token}`;
    if (this.options.userAgent) headers['user-agent'] = this.options.userAgent;
    const url = `${this.base}/channel?${new URLSearchParams({ worker_id: query.worker_id, session: query.session })}`;
    try {
      return await connectWebSocket(url, {
        headers,
        request: (await this.connection()).request,
        timeoutMs: options.timeoutMs ?? this.requestTimeoutMs,
        ...(options.signal ? { signal: options.signal } : {}),
      });
    } catch (err) {
      if (err instanceof WebSocketHandshakeError) {
        const code = err.error?.code ?? `http_${err.status}`;
        throw new AgentApiError(err.status, code, `/channel: ${err.message}`, err.error?.details);
      }
      throw transportError(err, options.signal, '/channel');
    }
  }

  /** node:http or node:https, chosen (and loaded) at the first request. */
  private connection(): Promise<Transport> {
    if (!this.transport) this.transport = transportFor(this.base);
    return this.transport;
  }

  private async post<T>(path: string, body: unknown, options: RequestOptions = {}): Promise<T> {
    const headers: Record<string, string> = {
      'content-type': 'application/json',
      accept: 'application/json',
    };
    if (this.token) headers.authorization = `Bearer ${this.token}`;
    if (this.options.userAgent) headers['user-agent'] = this.options.userAgent;
    const timeoutMs = options.timeoutMs ?? this.requestTimeoutMs;
    let response: { status: number; statusText: string; text: string };
    try {
      response = await postWithHttp(
        await this.connection(),
        this.base + path,
        headers,
        JSON.stringify(body),
        timeoutMs,
        options.signal,
      );
    } catch (err) {
      throw transportError(err, options.signal, path);
    }
    const { text } = response;
    if (response.status < 200 || response.status > 299) throw httpError(response, text);
    if (text.trim() === '') return undefined as T;
    try {
      return JSON.parse(text) as T;
    } catch (err) {
      throw new AgentApiError(
        response.status,
        'invalid_response',
        `${path}: response is not JSON: ${snippet(text)}`,
        undefined,
        { cause: err },
      );
    }
  }
}

interface Transport {
  request: typeof httpRequest;
  agent: HttpAgent;
}

/**
 * node:http (node:https, loaded only for an https URL), with one keep-alive agent per client. Idle sockets
 * are closed after 4 s, before the Node server's own 5 s keep-alive timeout (as undici, behind fetch, does),
 * so a request rarely meets a socket the server is closing; when it does, it is sent once more on a new one.
 */
async function transportFor(base: string): Promise<Transport> {
  const options = { keepAlive: true, timeout: 4_000, maxFreeSockets: 4 };
  if (new URL(base).protocol === 'https:') {
    const https = await import('node:https');
    return { request: https.request as typeof httpRequest, agent: new https.Agent(options) };
  }
  return { request: httpRequest, agent: new HttpAgent(options) };
}

class TimeoutError extends Error {
  override readonly name = 'TimeoutError';
}

/** One POST over node:http(s); rejects with TimeoutError, an AbortError, or the socket's error. */
function postWithHttp(
  transport: Transport,
  url: string,
  headers: Record<string, string>,
  body: string,
  timeoutMs: number,
  signal: AbortSignal | undefined,
  retried = false,
): Promise<{ status: number; statusText: string; text: string }> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(abortError(signal));
    const payload = Buffer.from(body);
    const requestOptions: HttpRequestOptions = {
      method: 'POST',
      agent: transport.agent,
      headers: { ...headers, 'content-length': String(payload.length) },
    };
    let settled = false;
    /** Marks the request settled (false when it already was) and drops its timer and abort listener. */
    const settle = () => {
      if (settled) return false;
      settled = true;
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      return true;
    };
    const finish = (error: unknown, result?: { status: number; statusText: string; text: string }) => {
      if (!settle()) return;
      if (error) reject(error);
      else resolve(result!);
    };
    const req = transport.request(url, requestOptions, (res: IncomingMessage) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('error', (err) => finish(err));
      res.on('aborted', () => finish(Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' })));
      res.on('end', () =>
        finish(undefined, {
          status: res.statusCode ?? 0,
          statusText: res.statusMessage ?? '',
          text: Buffer.concat(chunks).toString('utf8'),
        }),
      );
    });
    const timer = setTimeout(() => {
      const error = new TimeoutError('The operation was aborted due to timeout');
      finish(error);
      req.destroy(error);
    }, timeoutMs);
    const onAbort = () => {
      const error = abortError(signal!);
      finish(error);
      req.destroy(error);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    req.on('error', (err: NodeJS.ErrnoException) => {
      // A kept-alive socket the server closed just as it was reused: the request never reached the server.
      if (!settled && !retried && req.reusedSocket && err.code === 'ECONNRESET') {
        settle();
        postWithHttp(transport, url, headers, body, timeoutMs, signal, true).then(resolve, reject);
        return;
      }
      finish(err);
    });
    req.end(payload);
  });
}

function abortError(signal: AbortSignal): Error {
  return Object.assign(new Error('This operation was aborted', { cause: signal.reason }), {
    name: 'AbortError',
  });
}

function transportError(err: unknown, callerSignal: AbortSignal | undefined, path: string): AgentApiError {
  if (callerSignal?.aborted) return new AgentApiError(0, 'aborted', `${path}: request aborted`);
  if (err instanceof Error && (err.name === 'TimeoutError' || err.name === 'AbortError')) {
    return new AgentApiError(0, 'timeout', `${path}: request timed out`, undefined, { cause: err });
  }
  // node:http throws the socket's error as it is; a wrapped one (an error with the socket's as its cause) too.
  const cause =
    err instanceof Error && err.cause instanceof Error
      ? err.cause
      : err instanceof Error && 'code' in err
        ? err
        : undefined;
  const causeCode = cause && 'code' in cause ? ` (${String(cause.code)})` : '';
  const detail = cause ? cause.message : err instanceof Error ? err.message : String(err);
  return new AgentApiError(0, 'network_error', `${path}: ${detail}${causeCode}`.trim(), undefined, {
    cause: err,
  });
}

function httpError(response: { status: number; statusText: string }, text: string): AgentApiError {
  try {
    const parsed = JSON.parse(text) as { error?: { code?: unknown; message?: unknown; details?: unknown } };
    const error = parsed?.error;
    if (error && typeof error.code === 'string') {
      const message = typeof error.message === 'string' ? error.message : error.code;
      return new AgentApiError(
        response.status,
        error.code,
        `${response.status} ${error.code}: ${message}`,
        error.details,
      );
    }
  } catch {
    // not JSON: fall through
  }
  const statusText = response.statusText ? ` ${response.statusText}` : '';
  const body = text.trim() ? `: ${snippet(text)}` : '';
  return new AgentApiError(
    response.status,
    `http_${response.status}`,
    `HTTP ${response.status}${statusText}${body}`,
  );
}

function snippet(text: string): string {
  const flat = text.replace(/\s+/g, ' ').trim();
  return flat.length > 120 ? `${flat.slice(0, 120)}…` : flat;
}
