/**
 * The `conductor` command's HTTP client: configuration (flags, environment, config file), requests, errors,
 * and a Server-Sent Events reader. Node built-ins and fetch only: no control-plane dependency.
 */
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';

export interface ClientConfig {
  url: string;
  token?: string;
}

export class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number,
    readonly code: string,
  ) {
    super(message);
  }
}

/** `~/.config/conductor/config.json` (or `$XDG_CONFIG_HOME/conductor/config.json`, or CONDUCTOR_CONFIG). */
export function configPath(env: NodeJS.ProcessEnv): string {
  if (env.CONDUCTOR_CONFIG) return env.CONDUCTOR_CONFIG;
  const base = env.XDG_CONFIG_HOME || join(env.HOME || homedir(), '.config');
  return join(base, 'conductor', 'config.json');
}

/** Flags win over the environment, which wins over the config file; the URL defaults to the local cluster. */
export function resolveConfig(flags: { url?: string; token?: string }, env: NodeJS.ProcessEnv): ClientConfig {
  let file: { url?: unknown; token?: unknown } = {};
  const path = configPath(env);
  try {
    file = JSON.parse(readFileSync(path, 'utf8')) as typeof file;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw new Error(`cannot read ${path}: ${(error as Error).message}`);
    }
  }
  const url =
    flags.url ??
    env.CONDUCTOR_URL ??
    (typeof file.url === 'string' ? file.url : undefined) ??
    'http://localhost:8000';
  const token =
    flags.token ?? env.CONDUCTOR_TOKEN ?? (typeof file.token === 'string' ? file.token : undefined);
  return { url: url.replace(/\/+$/, ''), ...(token ? { token } : {}) };
}

export class Client {
  constructor(readonly config: ClientConfig) {}

  private headers(extra: Record<string, string> = {}): Record<string, string> {
    return {
      ...(this.config.token ? { Authorization: `Bearer ${this.config.token}` } : {}),
      ...extra,
    };
  }

  async request<T>(
    method: string,
    path: string,
    body?: unknown,
    options: { onHeaders?: (headers: Headers) => void } = {},
  ): Promise<T> {
    let res: Response;
    try {
      res = await fetch(`${this.config.url}${path}`, {
        method,
        headers: this.headers(body === undefined ? {} : { 'Content-Type': 'application/json' }),
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
    } catch (error) {
      const cause = (error as Error & { cause?: Error }).cause;
      throw new ApiError(
        `cannot reach ${this.config.url}: ${cause?.message ?? (error as Error).message}`,
        0,
        'unreachable',
      );
    }
    const text = await res.text();
    let json: unknown;
    try {
      json = text === '' ? undefined : JSON.parse(text);
    } catch {
      json = undefined;
    }
    if (!res.ok) {
      const err = (json as { error?: { code?: string; message?: string } } | undefined)?.error;
      throw new ApiError(
        err?.message ?? `${res.status} ${res.statusText}`,
        res.status,
        err?.code ?? 'http_error',
      );
    }
    options.onHeaders?.(res.headers);
    return json as T;
  }

  /**
   * Reads a Server-Sent Events stream, calling `onEvent` for each event (its name, its data lines joined by
   * newlines as the spec says, and the last id the stream gave). Resolves when the server closes the stream.
   * `lastEventId` resumes a stream after that event (the `Last-Event-ID` header).
   */
  async events(
    path: string,
    onEvent: (event: string, data: string, id: string | undefined) => void | Promise<void>,
    lastEventId?: string,
  ): Promise<void> {
    const res = await fetch(`${this.config.url}${path}`, {
      headers: this.headers({
        Accept: 'text/event-stream',
        ...(lastEventId === undefined ? {} : { 'Last-Event-ID': lastEventId }),
      }),
    }).catch((error: Error & { cause?: Error }) => {
      throw new ApiError(
        `cannot reach ${this.config.url}: ${error.cause?.message ?? error.message}`,
        0,
        'unreachable',
      );
    });
    if (!res.ok || !res.body) {
      const json = (await res.json().catch(() => undefined)) as {
        error?: { code?: string; message?: string };
      };
      throw new ApiError(
        json?.error?.message ?? `${res.status} ${res.statusText}`,
        res.status,
        json?.error?.code ?? 'http_error',
      );
    }
    const decoder = new TextDecoder();
    let buffer = '';
    let event = '';
    let data: string[] = [];
    let id = lastEventId;
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      buffer += decoder.decode(chunk, { stream: true });
      for (let nl = buffer.search(/\r\n|\r|\n/); nl >= 0; nl = buffer.search(/\r\n|\r|\n/)) {
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + (buffer.startsWith('\r\n', nl) ? 2 : 1));
        if (line === '') {
          if (data.length > 0) await onEvent(event || 'message', data.join('\n'), id);
          event = '';
          data = [];
          continue;
        }
        if (line.startsWith(':')) continue;
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? '' : line.slice(colon + 1);
        if (value.startsWith(' ')) value = value.slice(1);
        if (field === 'event') event = value;
        else if (field === 'data') data.push(value);
        else if (field === 'id') id = value;
      }
    }
  }
}
