/**
 * What the built server (dist/server.mjs, what `npm start` runs) loads: with nothing configured (the
 * zero-setup local cluster) no Postgres, Redis or Upstash client, which cost start-up time and memory for
 * nothing; with REDIS_URL, the Redis client. A loader hook in the server's process records every module
 * that is resolved.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import { freePort, ServerProcess } from '../support/server-process.ts';
import { REDIS_URL, serviceAvailable } from '../support/services.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const CLIENTS =
  /node_modules\/(pg|pg-[^/]+|ioredis|@upstash\/redis|@neondatabase\/serverless|drizzle-orm\/(node-postgres|neon-[^/]+))\//;
const redis = await serviceAvailable('redis');

/** Starts dist/server.mjs with `env` until it answers health, stops it; the modules it resolved. */
async function modulesOfServer(env: Record<string, string>): Promise<string[]> {
  const dir = mkdtempSync(join(tmpdir(), 'server-modules-'));
  const log = join(dir, 'modules.log');
  const hooks = join(dir, 'hooks.mjs');
  writeFileSync(
    hooks,
    `import { appendFileSync } from 'node:fs';
export async function resolve(specifier, context, next) {
  const result = await next(specifier, context);
  appendFileSync(${JSON.stringify(log)}, result.url + '\\n');
  return result;
}`,
  );
  const register = join(dir, 'register.mjs');
  writeFileSync(
    register,
    `import { register } from 'node:module';\nregister(${JSON.stringify(pathToFileURL(hooks).href)});\n`,
  );
  writeFileSync(log, '');
  const server = new ServerProcess(
    await freePort(),
    { CONDUCTOR_DATA_DIR: join(dir, 'data'), CONDUCTOR_EMBEDDED_AGENT: '0', ...env },
    { nodeArgs: ['--import', register, join(ROOT, 'dist/server.mjs')] },
  );
  try {
    await server.ready(120_000);
  } finally {
    expect(await server.stop()).toBe(0);
  }
  return readFileSync(log, 'utf8').split('\n').filter(Boolean);
}

describe('the built server’s modules (dist/server.mjs)', () => {
  beforeAll(() => {
    execFileSync(process.execPath, ['scripts/build.mjs', '--if-stale'], { cwd: ROOT, stdio: 'inherit' });
  });

  it('zero-setup (no DATABASE_URL, no Redis): no Postgres, Redis or Upstash client is loaded', {
    timeout: 180_000,
  }, async () => {
    const modules = await modulesOfServer({});
    expect(modules.some((m) => m.includes('/node_modules/@electric-sql/pglite/'))).toBe(true);
    expect(modules.filter((m) => CLIENTS.test(m))).toEqual([]);
  });

  it.runIf(redis)(
    'the check would notice: with REDIS_URL the Redis client is loaded',
    {
      timeout: 180_000,
    },
    async () => {
      const url = new URL(REDIS_URL);
      url.pathname = '/14';
      const modules = await modulesOfServer({ REDIS_URL: url.toString() });
      expect(modules.some((m) => m.includes('/node_modules/ioredis/'))).toBe(true);
      expect(modules.some((m) => /node_modules\/(pg|@upstash\/redis)\//.test(m))).toBe(false);
    },
  );
});
