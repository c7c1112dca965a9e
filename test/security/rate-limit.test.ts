import { createHash, randomUUID } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { createApp } from '../../functions/app.ts';
import { MemoryRateLimiter } from '../../functions/domain/rate-limit.ts';
import { createIoredisScripts } from '../../functions/node/ioredis.ts';
import { RATE_LIMIT_SCRIPT, RedisRateLimiter } from '../../functions/registry/rate-limiter.ts';
import type { LuaScript, RedisScripts } from '../../functions/registry/redis-store.ts';
import { createUpstashScripts } from '../../functions/registry/upstash.ts';
import { checkResponses } from '../http/response-checks.ts';
import { availableBackends, testConfig, testContext } from '../support/cluster.ts';
import { REDIS_URL, serviceAvailable } from '../support/services.ts';
import { startUpstashBridge } from '../support/upstash-bridge.ts';
import { errorOf, secureApp } from './support.ts';

const redisUp = await serviceAvailable('redis');
const [pglite] = (await availableBackends()).filter((b) => b.name === 'pglite+memory');

describe('rate limiter (GCRA)', () => {
  it('in-process: a burst, then the rate, with the wait to the next unit', async () => {
    let now = 1_000_000;
    const limiter = new MemoryRateLimiter(() => now);
    const rule = { perSecond: 1, burst: 3 };
    for (let i = 0; i < 3; i++) expect((await limiter.take('k', rule)).allowed).toBe(true);
    expect(await limiter.take('k', rule)).toEqual({ allowed: false, retryAfterSeconds: 1 });
    expect((await limiter.take('other', rule)).allowed).toBe(true);
    now += 1000;
    expect((await limiter.take('k', rule)).allowed).toBe(true);
    expect((await limiter.take('k', rule)).allowed).toBe(false);
    now += 10_000;
    for (let i = 0; i < 3; i++) expect((await limiter.take('k', rule)).allowed).toBe(true);
  });

  it('ships the SHA-1 of its Lua script', () => {
    expect(RATE_LIMIT_SCRIPT.sha).toBe(createHash('sha1').update(RATE_LIMIT_SCRIPT.source).digest('hex'));
  });
});

describe.runIf(redisUp)('rate limiter on Redis: one script, one command, shared by every isolate', () => {
  const closers: (() => Promise<void>)[] = [];
  afterAll(async () => {
    for (const close of closers) await close();
  });

  it('two connections (two isolates) share one limit, each call is one command', async () => {
    const prefix = `test:${randomUUID()}:`;
    const calls: string[] = [];
    const counted = (scripts: RedisScripts): RedisScripts => ({
      run(script: LuaScript, keys: string[], args: (string | number)[]) {
        calls.push(script.name);
        return scripts.run(script, keys, args);
      },
      ping: () => scripts.ping(),
    });
    const one = createIoredisScripts(REDIS_URL, { onError: () => {} });
    const two = createIoredisScripts(REDIS_URL, { onError: () => {} });
    closers.push(one.close, two.close);
    const a = new RedisRateLimiter(counted(one.scripts), { keyPrefix: prefix });
    const b = new RedisRateLimiter(counted(two.scripts), { keyPrefix: prefix });
    const rule = { perSecond: 0.5, burst: 4 };
    const results = [];
    for (let i = 0; i < 6; i++) results.push(await (i % 2 === 0 ? a : b).take('token:1', rule));
    expect(results.map((r) => r.allowed)).toEqual([true, true, true, true, false, false]);
    expect(results[4]!.retryAfterSeconds).toBeGreaterThanOrEqual(1);
    expect(results[4]!.retryAfterSeconds).toBeLessThanOrEqual(2);
    expect(calls).toEqual(Array(6).fill('rateLimitTake'));
  });

  it('works through Upstash REST (the Workers path): one billed command per call', async () => {
    const bridge = await startUpstashBridge({ redisUrl: REDIS_URL });
    closers.push(bridge.close);
    const limiter = new RedisRateLimiter(createUpstashScripts({ url: bridge.url, token: bridge.token }), {
      keyPrefix: `test:${randomUUID()}:`,
    });
    const rule = { perSecond: 1, burst: 2 };
    const allowed = [];
    for (let i = 0; i < 3; i++) allowed.push((await limiter.take('webhook:1', rule)).allowed);
    expect(allowed).toEqual([true, true, false]);
    // EVALSHA each time (one EVAL after the first NOSCRIPT at most).
    const billed = bridge.commands.filter((c) => c[0] === 'EVALSHA' || c[0] === 'EVAL');
    expect(billed.length).toBeLessThanOrEqual(4);
    expect(bridge.commands.filter((c) => c[0] !== 'EVALSHA' && c[0] !== 'EVAL')).toEqual([]);
  });
});

describe.runIf(pglite)('submit rate limits over HTTP', () => {
  it('answers 429 with Retry-After per token, and another token is not held back', async () => {
    const backend = await pglite!.create();
    try {
      const s = secureApp(backend, { submitRatePerSecond: 0.2, submitBurst: 2 });
      const a = (await s.token(['jobs:write'])).token;
      const b = (await s.token(['jobs:write'])).token;
      const submit = (token: string) =>
        s.request('POST', '/api/v1/jobs/submit', { token, body: { script: 'true', cpus: 1 } });
      expect((await submit(a)).status).toBe(201);
      expect((await submit(a)).status).toBe(201);
      const limited = await submit(a);
      expect(limited.status).toBe(429);
      expect(Number(limited.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
      const error = await errorOf(limited);
      expect(error.code).toBe('rate_limited');
      expect(error.message).toMatch(/Too many submissions: at most 0.2 per second/);
      expect((await submit(b)).status).toBe(201);
      // A limited request is refused before its body is read: nothing was stored.
      await s.harness.settle();
    } finally {
      await backend.close();
    }
  });

  it('when the shared limiter fails, the isolate limits on its own', async () => {
    const backend = await pglite!.create();
    try {
      const failing = {
        kind: 'redis' as const,
        take: async () => {
          throw new Error('Redis down');
        },
      };
      const harness = testContext(backend, testConfig({ submitRatePerSecond: 0.1, submitBurst: 1 }));
      const app = createApp({ ...harness.ctx, rateLimiter: failing });
      checkResponses(app);
      const submit = () =>
        app.request('/api/v1/jobs/submit', {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ script: 'true', cpus: 1 }),
        });
      expect((await submit()).status).toBe(201);
      expect((await submit()).status).toBe(429);
      expect(harness.logger.has('Registry unavailable')).toBe(true);
      await harness.settle();
    } finally {
      await backend.close();
    }
  });
});
