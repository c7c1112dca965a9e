/** The script table and the clients' behaviour when Redis goes away and comes back. */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { createIoredisScripts } from '../../functions/node/ioredis.ts';
import { RedisRegistryStore, SCRIPTS } from '../../functions/registry/redis-store.ts';
import { createUpstashScripts } from '../../functions/registry/upstash.ts';
import { describeWithRedis, REDIS_URL, redisReachable } from './services.ts';

const up = await redisReachable();

describe('Lua scripts', () => {
  it.each(Object.values(SCRIPTS))('$name ships the SHA-1 of its source', (script) => {
    expect(script.sha).toBe(createHash('sha1').update(script.source).digest('hex'));
  });

  it('names every script after its RegistryStore method', () => {
    for (const [key, script] of Object.entries(SCRIPTS)) expect(script.name).toBe(key);
  });

  it.each([
    '../../functions/registry/redis-store.ts',
    '../../functions/registry/upstash.ts',
    '../../functions/registry/memory-store.ts',
  ])('%s is runtime-neutral (no node: or ioredis imports)', (file) => {
    const source = readFileSync(fileURLToPath(new URL(file, import.meta.url)), 'utf8');
    const imports = [...source.matchAll(/^import\s[^;]*?from\s+'([^']+)'/gms)].map((m) => m[1]);
    expect(imports.filter((name) => name?.startsWith('node:') || name === 'ioredis')).toEqual([]);
  });
});

/** A closed local port: nothing listens there. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

describe('fail fast when Redis is down', () => {
  const closers: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const close of closers.splice(0)) await close();
  });

  it('ioredis: a call rejects within about a second when nothing listens', async () => {
    const errors: Error[] = [];
    const connection = createIoredisScripts(`redis://127.0.0.1:${await closedPort()}`, {
      onError: (e) => errors.push(e),
    });
    closers.push(connection.close);
    const store = new RedisRegistryStore(connection.scripts);
    for (const attempt of [1, 2, 3]) {
      const started = Date.now();
      await expect(store.getAllocatedCpus(), `attempt ${attempt}`).rejects.toThrow();
      expect(Date.now() - started).toBeLessThan(1_500);
    }
    expect(errors.length).toBe(1); // reported once per outage, not once per retry
  });

  it('upstash: a call rejects quickly when the REST endpoint is down', async () => {
    const scripts = createUpstashScripts({ url: `http://127.0.0.1:${await closedPort()}`, token: 't' });
    const store = new RedisRegistryStore(scripts);
    const started = Date.now();
    await expect(store.liveWorkerIds()).rejects.toThrow();
    expect(Date.now() - started).toBeLessThan(1_500);
  });

  it('upstash: a call that hangs is cut at timeoutMs and rejects (never resolves with the abort reason)', async () => {
    const sockets = new Set<Socket>();
    const silent = createServer((socket) => sockets.add(socket)); // accepts, never answers
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    closers.push(async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => silent.close(() => resolve()));
    });
    const { port } = silent.address() as { port: number };
    const scripts = createUpstashScripts({ url: `http://127.0.0.1:${port}`, token: 't', timeoutMs: 300 });
    const started = Date.now();
    await expect(new RedisRegistryStore(scripts).getAllocatedCpus()).rejects.toThrow();
    expect(Date.now() - started).toBeLessThan(1_500);
  });
});

/** A TCP proxy in front of Redis that a test can cut and restore, on the same port. */
async function redisProxy(target: URL) {
  const sockets = new Set<Socket>();
  let server: Server | undefined;
  let port = 0;
  const start = async () => {
    server = createServer((client) => {
      const upstream = createConnection(Number(target.port || 6379), target.hostname);
      sockets.add(client).add(upstream);
      client.pipe(upstream).pipe(client);
      const drop = () => {
        client.destroy();
        upstream.destroy();
        sockets.delete(client);
        sockets.delete(upstream);
      };
      client.on('error', drop).on('close', drop);
      upstream.on('error', drop).on('close', drop);
    });
    await new Promise<void>((resolve) => server?.listen(port, '127.0.0.1', resolve));
    port = (server.address() as { port: number }).port;
  };
  const stop = async () => {
    for (const socket of sockets) socket.destroy();
    sockets.clear();
    await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
  };
  await start();
  const url = new URL(target); // keeps any credentials and database of REDIS_URL
  url.hostname = '127.0.0.1';
  url.port = String(port);
  return { url: url.toString(), start, stop };
}

describeWithRedis('ioredis reconnects by itself', up, () => {
  it('serves calls made before the first connection is ready (no offline queue needed)', async () => {
    const connection = createIoredisScripts(REDIS_URL);
    const warnings: string[] = [];
    const onWarning = (warning: Error) => warnings.push(warning.name);
    process.on('warning', onWarning);
    try {
      const store = new RedisRegistryStore(connection.scripts, {
        keyPrefix: `conductor-test:${Date.now()}:`,
      });
      const replies = await Promise.all(Array.from({ length: 50 }, () => store.getAllocatedCpus()));
      expect(replies).toEqual(Array(50).fill(null));
      await new Promise((resolve) => setImmediate(resolve));
      expect(warnings).toEqual([]);
    } finally {
      process.off('warning', onWarning);
      await connection.close();
    }
  });

  it('fails fast during an outage and works again once Redis is back, without a restart', async () => {
    const proxy = await redisProxy(new URL(REDIS_URL));
    const connection = createIoredisScripts(proxy.url, { onError: () => {} });
    try {
      const store = new RedisRegistryStore(connection.scripts);
      await store.ping();

      await proxy.stop();
      const started = Date.now();
      await expect(store.ping()).rejects.toThrow();
      await expect(store.getAllocatedCpus()).rejects.toThrow();
      expect(Date.now() - started).toBeLessThan(2_500);

      await proxy.start();
      const deadline = Date.now() + 10_000;
      let back = false;
      while (!back && Date.now() < deadline) {
        back = await store.ping().then(
          () => true,
          () => new Promise<boolean>((resolve) => setTimeout(() => resolve(false), 100)),
        );
      }
      expect(back).toBe(true);
    } finally {
      await connection.close();
      await proxy.stop();
    }
  });
});
