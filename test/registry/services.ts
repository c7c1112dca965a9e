/** The real Redis the Redis variants run against, and how they skip (or fail) without it. */
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { describe, it } from 'vitest';
import { RedisRegistryStore, type RedisScripts, registryKeys } from '../../functions/registry/redis-store.ts';
import type { HarnessFactory } from './contract.ts';

export { REDIS_URL } from '../support/services.ts';

import { REDIS_URL } from '../support/services.ts';

const REQUIRED = process.env.CONDUCTOR_REQUIRE_SERVICES === '1';

/** Whether Redis answers PING within a second. */
export async function redisReachable(url = REDIS_URL): Promise<boolean> {
  const client = new Redis(url, {
    lazyConnect: true,
    connectTimeout: 1000,
    commandTimeout: 1000,
    maxRetriesPerRequest: 0,
    enableOfflineQueue: false,
    retryStrategy: () => null,
  });
  client.on('error', () => {});
  try {
    await client.connect();
    await client.ping();
    return true;
  } catch {
    return false;
  } finally {
    client.disconnect();
  }
}

/**
 * `describe` when Redis is up; otherwise `describe.skip` with a console message, or, with
 * CONDUCTOR_REQUIRE_SERVICES=1, a failing test.
 */
export function describeWithRedis(title: string, up: boolean, body: () => void): void {
  if (up) {
    describe(title, body);
  } else if (REQUIRED) {
    describe(title, () => {
      it('needs Redis', () => {
        throw new Error(`Redis is not reachable at ${REDIS_URL} and CONDUCTOR_REQUIRE_SERVICES=1`);
      });
    });
  } else {
    console.warn(
      `[registry tests] Redis is not reachable at ${REDIS_URL}: skipping "${title}" ` +
        '(start Redis or set REDIS_URL; CONDUCTOR_REQUIRE_SERVICES=1 makes this a failure)',
    );
    describe.skip(title, body);
  }
}

/** A fresh key prefix, so that concurrent tests never share a key; never starts with `worker:`. */
export function testPrefix(): string {
  return `conductor-test:${randomUUID()}:`;
}

/** SCAN + DEL of every key under `prefix` (never FLUSHALL: the Redis is shared). */
export async function deleteByPrefix(admin: Redis, prefix: string): Promise<void> {
  let cursor = '0';
  do {
    const [next, keys] = await admin.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
    cursor = next;
    if (keys.length > 0) await admin.del(...keys);
  } while (cursor !== '0');
}

/** Every key under `prefix`, unprefixed and sorted. */
export async function keysUnder(admin: Redis, prefix: string): Promise<string[]> {
  const found: string[] = [];
  let cursor = '0';
  do {
    const [next, keys] = await admin.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
    cursor = next;
    found.push(...keys.map((key) => key.slice(prefix.length)));
  } while (cursor !== '0');
  return found.sort();
}

/** HGETALL + PTTL of `worker:<id>` under `prefix`, or null when the key is gone. */
export async function inspectRedisWorker(
  admin: Redis,
  prefix: string,
  id: string,
): Promise<{ fields: Record<string, string>; ttlMs: number } | null> {
  const key = registryKeys(prefix).worker(id);
  const [fields, ttlMs] = await Promise.all([admin.hgetall(key), admin.pttl(key)]);
  if (ttlMs === -2) return null;
  return { fields, ttlMs };
}

/** Harnesses over a real Redis: each gets its own key prefix, and cleanup deletes everything under it. */
export function redisHarnessFactory(getScripts: () => RedisScripts, getAdmin: () => Redis): HarnessFactory {
  return async (options = {}) => {
    const prefix = testPrefix();
    const admin = getAdmin();
    return {
      store: new RedisRegistryStore(getScripts(), { keyPrefix: prefix, ...options }),
      async deleteKey(key) {
        await admin.del(`${prefix}${key}`);
      },
      inspectWorker: (id) => inspectRedisWorker(admin, prefix, id),
      elapse: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
      cleanup: () => deleteByPrefix(admin, prefix),
    };
  };
}
