/**
 * RedisScripts over Upstash's REST API (@upstash/redis), for Workers and any runtime with fetch.
 * Runtime-neutral. One HTTP request per call: auto-pipelining and telemetry are off, and replies are left raw
 * (no JSON parsing of values) for RedisRegistryStore to read.
 */
import { Redis, type RedisConfigNodejs } from '@upstash/redis';
import { isNoScriptError, type LuaScript, type RedisScripts } from './redis-store.ts';

export interface UpstashScriptsOptions {
  url: string;
  token: string;
  /** Longest a request may take before the caller gets an error. Default 2000 ms. */
  timeoutMs?: number;
  /**
   * Retries on network errors (not on Redis errors). Default: one retry after 50 ms, so that a caller falls
   * back to Postgres quickly; the client's own default (5 retries, exponential) takes about 4 s.
   */
  retry?: RedisConfigNodejs['retry'];
}

export function createUpstashScripts(options: UpstashScriptsOptions): RedisScripts {
  const timeoutMs = options.timeoutMs ?? 2000;
  const redis = new Redis({
    url: options.url,
    token: options.token,
    enableAutoPipelining: false,
    enableTelemetry: false,
    automaticDeserialization: false,
    retry: options.retry ?? { retries: 1, backoff: () => 50 },
    // A function, so each request gets its own deadline, and an abort rejects: with a plain AbortSignal the
    // client would resolve the command with the abort reason as its result.
    signal: () => AbortSignal.timeout(timeoutMs),
  });

  return {
    async run(script: LuaScript, keys: string[], args: (string | number)[]): Promise<unknown> {
      const argv = args.map(String);
      try {
        return await redis.evalsha(script.sha, keys, argv);
      } catch (error) {
        if (!isNoScriptError(error)) throw error;
        return await redis.eval(script.source, keys, argv);
      }
    },
    async ping(): Promise<void> {
      await redis.ping();
    },
  };
}
