/**
 * The rate limiter over Redis: one Lua script, one command per call, on Redis's own clock, so that a limit
 * holds across isolates and servers. Runtime-neutral (RedisScripts: ioredis on Node, Upstash on Workers).
 * Key: `ratelimit:<key>`, a string holding the key's arrival time in ms, expiring when it is in the past.
 */
import type { RateLimiter, RateRule } from '../domain/ports.ts';
import { checkCost, checkRule, retryAfterSeconds } from '../domain/rate-limit.ts';
import type { LuaScript, RedisScripts } from './redis-store.ts';

// KEYS: the key's arrival time. ARGV: interval ms, capacity ms (both may be fractional).
// Returns {1, 0} when allowed, {0, wait ms} when not: GCRA, as gcra() in functions/domain/rate-limit.ts.
const TAKE = `local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local interval = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if tat < now then tat = now end
local nxt = tat + interval
local excess = nxt - now
if excess > capacity then return {0, math.ceil(excess - capacity)} end
redis.call('SET', KEYS[1], string.format('%.3f', nxt), 'PX', math.max(1, math.ceil(excess)))
return {1, 0}
`;

export const RATE_LIMIT_SCRIPT: LuaScript = Object.freeze({
  name: 'rateLimitTake',
  source: TAKE,
  sha: '66cc3cc5909a66f08fe52427eb63fb3f1470c504',
});

export class RedisRateLimiter implements RateLimiter {
  readonly kind = 'redis' as const;
  private readonly prefix: string;

  constructor(
    private readonly redis: RedisScripts,
    options: { keyPrefix?: string } = {},
  ) {
    this.prefix = `${options.keyPrefix ?? ''}ratelimit:`;
  }

  async take(
    key: string,
    rule: RateRule,
    cost = 1,
  ): Promise<{ allowed: boolean; retryAfterSeconds: number }> {
    const { intervalMs, capacityMs } = checkRule(rule);
    // `cost` units at once are one step of `cost` intervals (GCRA): the same script.
    const reply = await this.redis.run(
      RATE_LIMIT_SCRIPT,
      [this.prefix + key],
      [(intervalMs * checkCost(cost)).toFixed(3), capacityMs.toFixed(3)],
    );
    if (!Array.isArray(reply) || reply.length < 2) {
      throw new TypeError(`unexpected reply to rateLimitTake: ${JSON.stringify(reply)}`);
    }
    if (Number(reply[0]) === 1) return { allowed: true, retryAfterSeconds: 0 };
    return { allowed: false, retryAfterSeconds: retryAfterSeconds(Number(reply[1])) };
  }
}
