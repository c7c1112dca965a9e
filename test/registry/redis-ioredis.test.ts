import { createHash } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { createIoredisScripts } from '../../functions/node/ioredis.ts';
import {
  type LuaScript,
  RedisRegistryStore,
  type RedisScripts,
  registryKeys,
} from '../../functions/registry/redis-store.ts';
import { registryContract, workerEntry } from './contract.ts';
import {
  deleteByPrefix,
  describeWithRedis,
  keysUnder,
  REDIS_URL,
  redisHarnessFactory,
  redisReachable,
  testPrefix,
} from './services.ts';

const up = await redisReachable();

describeWithRedis('RedisRegistryStore over ioredis', up, () => {
  let connection: ReturnType<typeof createIoredisScripts>;
  let admin: Redis;

  beforeAll(() => {
    connection = createIoredisScripts(REDIS_URL);
    admin = new Redis(REDIS_URL, { maxRetriesPerRequest: 1 });
  });
  afterAll(async () => {
    await connection.close();
    await admin.quit();
  });

  registryContract(
    'Redis (ioredis)',
    redisHarnessFactory(
      () => connection.scripts,
      () => admin,
    ),
  );

  describe('key layout (the contract runbook)', () => {
    let prefix: string;
    let store: RedisRegistryStore;
    const keys = () => registryKeys(prefix);

    beforeEach(() => {
      prefix = testPrefix();
      store = new RedisRegistryStore(connection.scripts, { keyPrefix: prefix });
    });
    afterEach(async () => {
      await deleteByPrefix(admin, prefix);
    });

    it('uses exactly the documented keys, and only worker hashes start with worker:', async () => {
      await store.putWorker(
        workerEntry('kunpeng-compute-01', {
          memory_mb: 515_000,
          gpus: 'a100:0,a100:1',
          gres: 'nvme:1',
          features: 'avx512,ssd',
          partitions: 'gpu',
        }),
        60,
      );
      await store.putWorker(workerEntry('kunpeng-compute-02'), 60);
      await store.touchWorker('kunpeng-compute-01', '2025-11-11T10:05:30', 60, 'ready');
      await store.setWorkerStatus('kunpeng-compute-02', 'draining');
      await store.liveWorkerIds();
      await store.takeExpiredWorkerIds();
      await store.setAllocationSnapshot({ cpus: 40, memoryMb: 8192, gpus: 1, gres: { nvme: 1 } }, 1);
      await store.applyAllocationDelta({ cpus: 8, memoryMb: 1024, gpus: 1, gres: { fpga: 2 } }, 2);
      expect(await keysUnder(admin, prefix)).toEqual([
        'registry:since',
        'registry:workers',
        'resource:allocated_cpus',
        'resource:allocated_cpus:deltas',
        'resource:allocated_cpus:version',
        'resource:allocated_gpus',
        'resource:allocated_gres',
        'resource:allocated_memory_mb',
        'worker:kunpeng-compute-01',
        'worker:kunpeng-compute-02',
      ]);
      for (const key of (await keysUnder(admin, prefix)).filter((k) => k.startsWith('worker:'))) {
        expect(await admin.type(prefix + key)).toBe('hash');
        expect(Object.keys(await admin.hgetall(prefix + key))).toEqual(
          expect.arrayContaining([
            'cpus',
            'hostname',
            'last_heartbeat',
            'registered_at',
            'status',
            'worker_id',
          ]),
        );
      }
      // HGETALL lists the contract's fields first, then the node's other resources.
      const hash = await admin.call('HGETALL', keys().worker('kunpeng-compute-01'));
      expect(hash).toEqual([
        'worker_id',
        'kunpeng-compute-01',
        'cpus',
        '96',
        'status',
        'ready',
        'hostname',
        'host-kunpeng-compute-01',
        'registered_at',
        '2025-11-11T10:00:00',
        'last_heartbeat',
        '2025-11-11T10:05:30',
        'memory_mb',
        '515000',
        'gpus',
        'a100:0,a100:1',
        'gres',
        'nvme:1',
        'features',
        'avx512,ssd',
        'partitions',
        'gpu',
      ]);
      expect(Object.keys(await admin.hgetall(keys().worker('kunpeng-compute-02'))).sort()).toEqual([
        'cpus',
        'hostname',
        'last_heartbeat',
        'registered_at',
        'status',
        'worker_id',
      ]);
      expect(await admin.ttl(keys().worker('kunpeng-compute-01'))).toBe(60);
      expect(await admin.type(keys().allocated)).toBe('string');
      expect(await admin.get(keys().allocated)).toBe('48');
      expect(await admin.type(keys().allocatedMemory)).toBe('string');
      expect(await admin.get(keys().allocatedMemory)).toBe('9216');
      expect(await admin.type(keys().allocatedGpus)).toBe('string');
      expect(await admin.get(keys().allocatedGpus)).toBe('2');
      expect(await admin.type(keys().allocatedGres)).toBe('hash');
      expect(await admin.hgetall(keys().allocatedGres)).toEqual({ nvme: '1', fpga: '2' });
    });

    it('scores the index with the expiry time by Redis clock, whatever the caller clock says', async () => {
      const spy = vi.spyOn(Date, 'now').mockReturnValue(Date.UTC(2001, 0, 1));
      try {
        await store.putWorker(workerEntry('w1'), 60);
      } finally {
        spy.mockRestore();
      }
      const [seconds, micros] = await admin.time();
      const redisNow = Number(seconds) * 1000 + Math.floor(Number(micros) / 1000);
      const score = Number(await admin.zscore(keys().index, 'w1'));
      expect(score - redisNow).toBeGreaterThan(59_000);
      expect(score - redisNow).toBeLessThanOrEqual(60_000);
      expect(await store.liveWorkerIds()).toEqual(['w1']);
    });

    it('keeps an index member past its score whose key still exists (not live, not expired)', async () => {
      await store.putWorker(workerEntry('w1'), 60);
      const [seconds] = await admin.time();
      await admin.zadd(keys().index, Number(seconds) * 1000 - 10_000, 'w1');
      expect(await store.takeExpiredWorkerIds()).toEqual([]);
      expect(await admin.zscore(keys().index, 'w1')).not.toBeNull();
      expect(await store.liveWorkerIds()).toEqual([]);
      // The next heartbeat puts it right.
      expect(await store.touchWorker('w1', 'now', 60)).toBe(true);
      expect(await store.liveWorkerIds()).toEqual(['w1']);
    });

    it("records each version's whole change as <version>:<memory>:<gpus>:<gres>:<cpus>, scored by version", async () => {
      await store.setAllocationSnapshot(10, 3);
      await store.applyAllocationDelta(-4, 5);
      await store.applyAllocationDelta({ cpus: 6, memoryMb: 2048, gpus: 1, gres: { nvme: 1, fpga: -2 } }, 4);
      expect(await admin.zrange(keys().allocatedDeltas, '0', '-1', 'WITHSCORES')).toEqual([
        '4:2048:1:fpga=-2,nvme=1:6',
        '4',
        '5:0:0::-4',
        '5',
      ]);
      expect(await admin.get(keys().allocatedVersion)).toBe('3');
      await store.setAllocationSnapshot(12, 4);
      expect(await admin.zrange(keys().allocatedDeltas, '0', '-1')).toEqual(['5:0:0::-4']);
      expect(await admin.get(keys().allocatedVersion)).toBe('4');
      expect(await admin.get(keys().allocated)).toBe('8');
    });

    it('counts a delta recorded in the CPU-only layout (<version>:<cpus>, by the scripts before a deploy)', async () => {
      await store.setAllocationSnapshot({ cpus: 10, memoryMb: 100, gpus: 1, gres: { nvme: 1 } }, 3);
      await admin.zadd(keys().allocatedDeltas, 4, '4:-3');
      await store.applyAllocationDelta({ cpus: 2, memoryMb: 50, gpus: 0, gres: { nvme: 1 } }, 5);
      expect(
        await store.setAllocationSnapshot({ cpus: 10, memoryMb: 100, gpus: 1, gres: { nvme: 1 } }, 3),
      ).toMatchObject({ allocation: { cpus: 9, memoryMb: 150, gpus: 1, gres: { nvme: 2 } } });
      // And the old layout's reading of a member (its last `:<n>`) is the CPU figure of the new one.
      const [member] = await admin.zrangebyscore(keys().allocatedDeltas, 5, 5);
      expect(member?.match(/:(-?\d+)$/)?.[1]).toBe('2');
    });

    it('reads an allocation key that is not an integer as missing, and the next snapshot repairs it', async () => {
      await store.setAllocationSnapshot({ cpus: 1, memoryMb: 2, gpus: 3, gres: {} }, 1);
      await admin.set(keys().allocatedMemory, 'garbage');
      expect(await store.getAllocation()).toEqual({ cpus: 1, memoryMb: null, gpus: 3, gres: {} });
      await store.setAllocationSnapshot({ cpus: 1, memoryMb: 2, gpus: 3, gres: {} }, 2);
      expect(await admin.get(keys().allocatedMemory)).toBe('2');
    });

    it('reads a value that is not an integer as a miss, and the next snapshot repairs it', async () => {
      await admin.set(keys().allocated, 'garbage');
      expect(await store.getAllocatedCpus()).toBeNull();
      expect(await store.setAllocationSnapshot(12, 1)).toMatchObject({
        applied: true,
        previous: null,
        value: 12,
      });
      expect(await store.getAllocatedCpus()).toBe(12);
    });

    it('handles counts beyond 32 bits and large versions exactly', async () => {
      const big = 2 ** 40;
      await store.setAllocationSnapshot(big, 2 ** 50);
      await store.applyAllocationDelta(3, 2 ** 50 + 1);
      expect(await store.getAllocatedCpus()).toBe(big + 3);
      expect(await store.setAllocationSnapshot(big, 2 ** 50)).toMatchObject({ value: big + 3 });
    });
  });

  describe('one Redis command per method', () => {
    it('calls the script port exactly once per method', async () => {
      const calls: string[] = [];
      const counting: RedisScripts = {
        run: (script, keys, args) => {
          calls.push(script.name);
          return connection.scripts.run(script, keys, args);
        },
        ping: () => {
          calls.push('ping');
          return connection.scripts.ping();
        },
      };
      const prefix = testPrefix();
      const store = new RedisRegistryStore(counting, { keyPrefix: prefix });
      try {
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
            () =>
              store.applyAllocationDelta({ cpus: 1, memoryMb: 2, gpus: 1, gres: { nvme: 1, fpga: 2 } }, 3),
          ],
          ['ping', () => store.ping()],
        ];
        for (const [name, call] of methods) {
          calls.length = 0;
          await call();
          expect(calls, name).toEqual([name]);
        }
      } finally {
        await deleteByPrefix(admin, prefix);
      }
    });

    it('falls back to EVAL on NOSCRIPT, which loads the script for the next EVALSHA', async () => {
      const source = `-- ${testPrefix()}\nreturn {KEYS[1], ARGV[1], tonumber(ARGV[2]) + 1}`;
      const script: LuaScript = {
        name: 'probe',
        source,
        sha: createHash('sha1').update(source).digest('hex'),
      };
      expect(await admin.script('EXISTS', script.sha)).toEqual([0]);
      expect(await connection.scripts.run(script, ['k'], ['a', 41])).toEqual(['k', 'a', 42]);
      expect(await admin.script('EXISTS', script.sha)).toEqual([1]);
      expect(await connection.scripts.run(script, ['k'], ['b', 1])).toEqual(['k', 'b', 2]);
    });

    it('surfaces script errors other than NOSCRIPT', async () => {
      const source = `-- ${testPrefix()}\nreturn redis.error_reply('boom')`;
      const script: LuaScript = {
        name: 'boom',
        source,
        sha: createHash('sha1').update(source).digest('hex'),
      };
      await expect(connection.scripts.run(script, [], [])).rejects.toThrow(/boom/);
    });
  });
});
