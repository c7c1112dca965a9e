/**
 * Submission rate limits per caller. GCRA: each key keeps its "theoretical arrival time"; a call is allowed
 * while that time is at most `burst` intervals ahead of now. The limiter is a port (Redis across isolates,
 * in-process otherwise); when Redis fails, this isolate's own limiter stands in.
 */
import type { Context } from './context.ts';
import { ConductorError } from './errors.ts';
import { warnRegistryDown } from './liveness.ts';
import type { RateLimiter, RateRule } from './ports.ts';

export function checkRule(rule: RateRule): { intervalMs: number; capacityMs: number } {
  if (!(rule.perSecond > 0) || !Number.isFinite(rule.perSecond)) {
    throw new RangeError(`perSecond must be a positive number, got ${rule.perSecond}`);
  }
  if (!Number.isSafeInteger(rule.burst) || rule.burst < 1) {
    throw new RangeError(`burst must be a positive integer, got ${rule.burst}`);
  }
  const intervalMs = 1000 / rule.perSecond;
  return { intervalMs, capacityMs: intervalMs * rule.burst };
}

/** A cost of units to take at once: a positive whole number. */
export function checkCost(cost: number): number {
  if (!Number.isSafeInteger(cost) || cost < 1)
    throw new RangeError(`cost must be a positive integer, got ${cost}`);
  return cost;
}

/** One step of GCRA: the new arrival time, or how long to wait (the Redis script does the same). */
export function gcra(
  tatMs: number,
  nowMs: number,
  intervalMs: number,
  capacityMs: number,
): { allowed: true; tatMs: number } | { allowed: false; waitMs: number } {
  const next = Math.max(tatMs, nowMs) + intervalMs;
  const excess = next - nowMs;
  if (excess > capacityMs) return { allowed: false, waitMs: excess - capacityMs };
  return { allowed: true, tatMs: next };
}

/** Whole seconds for Retry-After, at least 1. */
export const retryAfterSeconds = (waitMs: number) => Math.max(1, Math.ceil(waitMs / 1000));

export class MemoryRateLimiter implements RateLimiter {
  readonly kind = 'memory' as const;
  private readonly tats = new Map<string, number>();

  constructor(private readonly now: () => number = Date.now) {}

  async take(
    key: string,
    rule: RateRule,
    cost = 1,
  ): Promise<{ allowed: boolean; retryAfterSeconds: number }> {
    const { intervalMs, capacityMs } = checkRule(rule);
    checkCost(cost);
    const now = this.now();
    if (this.tats.size > 10_000) {
      for (const [k, tat] of this.tats) if (tat <= now) this.tats.delete(k);
    }
    const step = gcra(this.tats.get(key) ?? 0, now, intervalMs * cost, capacityMs);
    if (!step.allowed) return { allowed: false, retryAfterSeconds: retryAfterSeconds(step.waitMs) };
    this.tats.set(key, step.tatMs);
    return { allowed: true, retryAfterSeconds: 0 };
  }
}

const fallback = new WeakMap<Context, MemoryRateLimiter>();

/**
 * Counts `count` submissions (1, or the jobs of a batch) against `key` (`token:<id>`, `webhook:<id>`,
 * `anonymous`), all or none; throws 429 with Retry-After when the caller is over its rate. A batch larger
 * than the burst could never pass: a 400 that says to split it. Off when the configured rate is 0.
 */
export async function limitSubmissions(ctx: Context, key: string, count = 1): Promise<void> {
  const { submitRatePerSecond: perSecond, submitBurst: burst } = ctx.config;
  if (!(perSecond > 0)) return;
  const rule = { perSecond, burst: Math.max(1, Math.floor(burst)) };
  checkCost(count);
  if (count > rule.burst) {
    throw new ConductorError(
      'invalid',
      'batch_exceeds_burst',
      `This batch of ${count} jobs is more than the ${rule.burst} submissions a token may make at once (CONDUCTOR_SUBMIT_BURST); split it into batches of at most ${rule.burst} jobs`,
      { jobs: count, burst: rule.burst },
    );
  }
  let result: { allowed: boolean; retryAfterSeconds: number };
  try {
    result = await ctx.rateLimiter.take(`submit:${key}`, rule, count);
  } catch (error) {
    warnRegistryDown(ctx, error);
    let local = fallback.get(ctx);
    if (!local) {
      local = new MemoryRateLimiter();
      fallback.set(ctx, local);
    }
    result = await local.take(`submit:${key}`, rule, count);
  }
  if (result.allowed) return;
  const what = count === 1 ? '' : ` (this batch counts as ${count})`;
  const error = new ConductorError(
    'rate_limited',
    'rate_limited',
    `Too many submissions${what}: at most ${perSecond} per second (bursts of ${rule.burst}) per token; retry in ${result.retryAfterSeconds} s`,
    { retry_after_s: result.retryAfterSeconds },
  );
  error.retryAfterSeconds = result.retryAfterSeconds;
  throw error;
}
