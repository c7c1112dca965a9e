/**
 * RedisScripts over TCP with ioredis, for the Node server. Fails fast while Redis is down (callers fall back
 * to Postgres) and reconnects by itself when it comes back.
 *
 * No offline queue: a command is only ever written on a ready connection, so nothing queued during an outage
 * runs late (a putWorker of a worker that has since unregistered, say) after its caller was told it failed.
 */
import { Redis } from 'ioredis';
import { isNoScriptError, type LuaScript, type RedisScripts } from '../registry/redis-store.ts';

export interface IoredisScriptsOptions {
  /** Longest a command (or the first connection) may take before the caller gets an error. Default 1000 ms. */
  timeoutMs?: number;
  /** Called on connection errors, once per outage; default: one console.warn per outage. */
  onError?: (error: Error) => void;
}

export function createIoredisScripts(
  url: string,
  options: IoredisScriptsOptions = {},
): { scripts: RedisScripts; close(): Promise<void> } {
  const timeoutMs = options.timeoutMs ?? 1000;
  const onError =
    options.onError ?? ((error: Error) => console.warn(`Redis unavailable (${url}): ${error.message}`));
  const client = new Redis(url, {
    connectTimeout: timeoutMs,
    commandTimeout: timeoutMs,
    maxRetriesPerRequest: 1,
    enableOfflineQueue: false,
    autoResendUnfulfilledCommands: false,
    // Reconnect forever, quickly: at most 2 s between attempts.
    retryStrategy: (times) => Math.min(100 * 2 ** Math.min(times, 5), 2000),
  });
  let reported = false;
  client.on('ready', () => {
    reported = false;
  });
  client.on('error', (error: Error) => {
    if (reported) return;
    reported = true;
    onError(error);
  });

  /** Settles when the connection is ready or fails; shared by every caller waiting at that moment. */
  let waiting: Promise<void> | undefined;

  /** Resolves once the connection is ready, waiting at most timeoutMs for a first connection or reconnect. */
  function ready(): Promise<void> {
    if (client.status === 'ready') return Promise.resolve();
    if (client.status === 'end') return Promise.reject(new Error('Redis connection is closed'));
    if (client.status === 'reconnecting' || client.status === 'close') {
      // Known down (the last attempt failed): fail now rather than make every caller wait.
      return Promise.reject(new Error('Redis unavailable (reconnecting)'));
    }
    waiting ??= new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => finish(new Error(`Redis not ready after ${timeoutMs} ms`)), timeoutMs);
      const onReady = () => finish();
      const onEnd = () => finish(new Error('Redis connection is closed'));
      const onReconnecting = () => finish(new Error('Redis unavailable (reconnecting)'));
      function finish(error?: Error) {
        clearTimeout(timer);
        client.off('ready', onReady);
        client.off('end', onEnd);
        client.off('reconnecting', onReconnecting);
        waiting = undefined;
        if (error) reject(error);
        else resolve();
      }
      client.on('ready', onReady);
      client.on('end', onEnd);
      client.on('reconnecting', onReconnecting);
    });
    return waiting;
  }

  const scripts: RedisScripts = {
    async run(script: LuaScript, keys: string[], args: (string | number)[]): Promise<unknown> {
      await ready();
      try {
        return await client.evalsha(script.sha, keys.length, ...keys, ...args);
      } catch (error) {
        if (!isNoScriptError(error)) throw error;
        return await client.eval(script.source, keys.length, ...keys, ...args);
      }
    },
    async ping(): Promise<void> {
      await ready();
      await client.ping();
    },
  };

  return {
    scripts,
    close: () => quitRedis(client),
  };
}

/** QUIT when connected; otherwise a QUIT would wait in the offline queue for a Redis that may never come. */
export async function quitRedis(client: Redis): Promise<void> {
  if (client.status === 'end') return;
  if (client.status !== 'ready') {
    client.disconnect();
    return;
  }
  try {
    await client.quit();
  } catch {
    client.disconnect();
  }
}
