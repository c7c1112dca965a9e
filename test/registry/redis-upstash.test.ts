import { Redis as IoRedis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedisRegistryStore } from '../../functions/registry/redis-store.ts';
import { createUpstashScripts } from '../../functions/registry/upstash.ts';
import { startUpstashBridge, type UpstashBridge } from '../support/upstash-bridge.ts';
import { registryContract, workerEntry } from './contract.ts';
import {
  deleteByPrefix,
  describeWithRedis,
  REDIS_URL,
  redisHarnessFactory,
  redisReachable,
  testPrefix,
} from './services.ts';

const up = await redisReachable();

describeWithRedis('RedisRegistryStore over @upstash/redis (local REST bridge)', up, () => {
  let bridge: UpstashBridge;
  let admin: IoRedis;

  beforeAll(async () => {
    bridge = await startUpstashBridge({ redisUrl: REDIS_URL });
    admin = new IoRedis(REDIS_URL, { maxRetriesPerRequest: 1 });
  });
  afterAll(async () => {
    await bridge.close();
    await admin.quit();
  });

  registryContract(
    'Redis (Upstash REST)',
    redisHarnessFactory(
      () => createUpstashScripts({ url: bridge.url, token: bridge.token }),
      () => admin,
    ),
  );

  describe('billing: one command in one request per method', () => {
    it('sends exactly one EVALSHA per method once the scripts are loaded', async () => {
      const prefix = testPrefix();
      const store = new RedisRegistryStore(createUpstashScripts({ url: bridge.url, token: bridge.token }), {
        keyPrefix: prefix,
      });
      const methods: [string, () => Promise<unknown>][] = [
        ['putWorker', () => store.putWorker(workerEntry('w1'), 60)],
        ['touchWorker', () => store.touchWorker('w1', 'now', 60, 'ready')],
        ['setWorkerStatus', () => store.setWorkerStatus('w1', 'draining')],
        ['liveWorkerIds', () => store.liveWorkerIds()],
        ['takeExpiredWorkerIds', () => store.takeExpiredWorkerIds()],
        ['removeWorker', () => store.removeWorker('w1')],
        ['getAllocatedCpus', () => store.getAllocatedCpus()],
        ['getAllocation', () => store.getAllocation()],
        ['setAllocationSnapshot', () => store.setAllocationSnapshot(1, 1)],
        ['applyAllocationDelta', () => store.applyAllocationDelta(1, 2)],
        [
          'applyAllocationDelta',
          () => store.applyAllocationDelta({ cpus: 1, memoryMb: 2, gpus: 1, gres: { nvme: 1, fpga: 2 } }, 3),
        ],
      ];
      try {
        for (const [, call] of methods) await call(); // loads every script (EVAL after a NOSCRIPT at most once)
        for (const [name, call] of methods) {
          const requests = bridge.requests;
          const commands = bridge.commands.length;
          await call();
          expect(bridge.requests - requests, name).toBe(1);
          expect(
            bridge.commands.slice(commands).map((c) => c[0]),
            name,
          ).toEqual(['EVALSHA']);
        }
        const requests = bridge.requests;
        await store.ping();
        expect(bridge.commands.at(-1)?.[0]).toBe('PING');
        expect(bridge.requests - requests).toBe(1);
      } finally {
        await deleteByPrefix(admin, prefix);
      }
    });

    it('concurrent calls stay separate requests (no auto-pipelining) and keep their order', async () => {
      const prefix = testPrefix();
      const store = new RedisRegistryStore(createUpstashScripts({ url: bridge.url, token: bridge.token }), {
        keyPrefix: prefix,
      });
      try {
        await store.setAllocationSnapshot(0, 0);
        const pipelined = bridge.commands.length;
        await Promise.all([1, 2, 3, 4, 5].map((v) => store.applyAllocationDelta(v, v)));
        expect(bridge.commands.length - pipelined).toBe(5);
        expect(await store.getAllocatedCpus()).toBe(15);
      } finally {
        await deleteByPrefix(admin, prefix);
      }
    });

    it('reads worker ids back exactly, whatever characters they hold (base64 both ways)', async () => {
      const prefix = testPrefix();
      const store = new RedisRegistryStore(createUpstashScripts({ url: bridge.url, token: bridge.token }), {
        keyPrefix: prefix,
      });
      const ids = ['abcd', 'OK', '12', 'nœud-ü-🚀', 'a b:c'];
      try {
        for (const id of ids) await store.putWorker(workerEntry(id), 60);
        expect((await store.liveWorkerIds()).sort()).toEqual([...ids].sort());
        expect(await admin.hget(`${prefix}worker:nœud-ü-🚀`, 'worker_id')).toBe('nœud-ü-🚀');
      } finally {
        await deleteByPrefix(admin, prefix);
      }
    });

    it('rejects a wrong token', async () => {
      const store = new RedisRegistryStore(createUpstashScripts({ url: bridge.url, token: 'wrong' }));
      await expect(store.getAllocatedCpus()).rejects.toThrow(/Unauthorized/);
    });
  });
});
