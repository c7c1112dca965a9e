import { sql } from 'drizzle-orm';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  readAllocatedCpus,
  readAllocatedResources,
  readAllocationSnapshot,
  syncAllocationCache,
} from '../../functions/domain/cache.ts';
import { getDashboard, getHealth } from '../../functions/domain/dashboard.ts';
import { submitJob } from '../../functions/domain/jobs.ts';
import { runSchedulingPass } from '../../functions/domain/scheduler.ts';
import { query } from '../../functions/domain/sql.ts';
import { finishAssignment, registerWorker } from '../../functions/domain/workers.ts';
import { createIoredisScripts } from '../../functions/node/ioredis.ts';
import { RedisRegistryStore } from '../../functions/registry/redis-store.ts';
import { availableBackends, type Backend, testContext } from '../support/cluster.ts';
import { createPostgresDatabase, type TestDatabase } from '../support/databases.ts';
import { checkInvariants } from '../support/invariants.ts';
import { REDIS_URL } from '../support/services.ts';

const backends = await availableBackends();

async function runningJobs(backend: Backend) {
  return query<{ id: number; node: string; attempt: number }>(
    backend.db.db,
    sql`SELECT id, node, attempt FROM jobs WHERE state = 'RUNNING' ORDER BY id`,
  );
}

describe.each(backends)('allocation cache on $name', (factory) => {
  let backend: Backend;
  beforeAll(async () => {
    backend = await factory.create();
  });
  afterAll(async () => {
    await backend?.close();
  });

  it('tracks allocations and releases exactly, also with syncs running concurrently', async () => {
    const { ctx, settle } = testContext(backend);
    for (let i = 0; i < 4; i++) await registerWorker(ctx, { worker_id: `c${i}`, hostname: `c${i}`, cpus: 8 });
    await syncAllocationCache(ctx);
    for (let round = 0; round < 5; round++) {
      for (let i = 0; i < 12; i++) await submitJob(ctx, { script: 'true', cpus: (i % 3) + 1 });
      await Promise.all([
        runSchedulingPass(ctx),
        syncAllocationCache(ctx),
        runSchedulingPass(ctx),
        syncAllocationCache(ctx),
      ]);
      const running = await runningJobs(backend);
      await Promise.all([
        ...running.slice(0, 6).map((j) =>
          finishAssignment(ctx, Number(j.id), {
            worker_id: j.node,
            attempt: Number(j.attempt),
            exit_code: '0:0',
            outcome: 'exited',
          }),
        ),
        syncAllocationCache(ctx),
        runSchedulingPass(ctx),
      ]);
      await settle();
      const snapshot = await readAllocationSnapshot(backend.db.db);
      expect(await backend.registry.getAllocatedCpus()).toBe(snapshot.allocated);
    }
    await checkInvariants(backend.db.db, backend.registry);
  });

  it('tracks memory, GPUs and gres exactly through placements and releases, also with syncs running concurrently', async () => {
    const { ctx, settle } = testContext(backend);
    const a100s = Array.from({ length: 4 }, (_, index) => ({ index, model: 'a100' }));
    for (let i = 0; i < 3; i++) {
      await registerWorker(ctx, {
        worker_id: `res${i}`,
        hostname: `res${i}`,
        cpus: 16,
        memory_mb: 64_000,
        gpus: a100s,
        gres: { nvme: 2, fpga: 1 },
        features: ['avx512'],
      });
    }
    await syncAllocationCache(ctx);
    const job = (i: number) => {
      const kind = i % 4;
      if (kind === 0) return { script: 'true', cpus: 1, memory_per_node: `${(i % 3) + 1}G` };
      if (kind === 1) return { script: 'true', cpus: 2, gpus: (i % 2) + 1, memory_per_node: '1G' };
      if (kind === 2) return { script: 'true', cpus: 1, gres: 'nvme:1' };
      return { script: 'true', cpus: 1, gpus: 1, gres: 'fpga:1' };
    };
    const seen = { memoryMb: 0, gpus: 0, gres: new Set<string>() };
    for (let round = 0; round < 5; round++) {
      for (let i = 0; i < 10; i++) await submitJob(ctx, job(round * 10 + i));
      await Promise.all([
        runSchedulingPass(ctx),
        syncAllocationCache(ctx),
        runSchedulingPass(ctx),
        syncAllocationCache(ctx),
      ]);
      await settle();
      const placed = await readAllocationSnapshot(backend.db.db);
      seen.memoryMb = Math.max(seen.memoryMb, placed.allocation.memoryMb);
      seen.gpus = Math.max(seen.gpus, placed.allocation.gpus);
      for (const name of Object.keys(placed.allocation.gres)) seen.gres.add(name);
      expect(await backend.registry.getAllocation()).toEqual(placed.allocation);
      const running = (await runningJobs(backend)).filter((j) => j.node.startsWith('res'));
      await Promise.all([
        ...running.slice(0, 7).map((j) =>
          finishAssignment(ctx, Number(j.id), {
            worker_id: j.node,
            attempt: Number(j.attempt),
            exit_code: '0:0',
            outcome: 'exited',
          }),
        ),
        syncAllocationCache(ctx),
        runSchedulingPass(ctx),
      ]);
      await settle();
      const snapshot = await readAllocationSnapshot(backend.db.db);
      expect(await backend.registry.getAllocation()).toEqual(snapshot.allocation);
      await checkInvariants(backend.db.db, backend.registry);
    }
    // The scenario moved every resource, not only CPUs.
    expect(seen.memoryMb).toBeGreaterThan(0);
    expect(seen.gpus).toBeGreaterThan(0);
    expect([...seen.gres].sort()).toEqual(['fpga', 'nvme']);
    // Without a sync in between, the deltas alone keep the cache equal to Postgres.
    for (let i = 0; i < 4; i++) await submitJob(ctx, job(i));
    await settle();
    await runSchedulingPass(ctx);
    expect(await backend.registry.getAllocation()).toEqual(
      (await readAllocationSnapshot(backend.db.db)).allocation,
    );
    // Everything on these workers finishes: their memory, GPUs and gres all return.
    for (const j of (await runningJobs(backend)).filter((r) => r.node.startsWith('res'))) {
      await finishAssignment(ctx, Number(j.id), {
        worker_id: j.node,
        attempt: Number(j.attempt),
        exit_code: '0:0',
        outcome: 'exited',
      });
    }
    await settle();
    await backend.db.db.execute(sql`UPDATE workers SET status = 'down' WHERE id LIKE 'res%'`);
    const drained = await readAllocationSnapshot(backend.db.db);
    expect(await backend.registry.getAllocation()).toEqual(drained.allocation);
    expect((await syncAllocationCache(ctx)).resourceDrift).toEqual({ memoryMb: 0, gpus: 0 });
    await checkInvariants(backend.db.db, backend.registry);
  });

  it('repairs a cache that was set wrong, reporting the drift', async () => {
    const { ctx, logger } = testContext(backend);
    const truth = await readAllocationSnapshot(backend.db.db);
    if (backend.name === 'postgres+redis') {
      const redis = new Redis(REDIS_URL);
      await redis.set(`${backend.keyPrefix}resource:allocated_cpus`, String(truth.allocated + 500));
      await redis.quit();
      const result = await syncAllocationCache(ctx);
      expect(result).toMatchObject({ allocated: truth.allocated, drift: 500, reset: null });
      expect(result.allocation).toEqual(truth.allocation);
      expect(result.resourceDrift).toEqual({ memoryMb: 0, gpus: 0 });
      expect(logger.has(`Resource cache synced: ${truth.allocated} CPUs allocated`)).toBe(true);
      expect(logger.has(/WARN|warn Resource cache drifted by 500/)).toBe(true);
    } else {
      const result = await syncAllocationCache(ctx);
      expect(result.allocated).toBe(truth.allocated);
    }
    expect(await backend.registry.getAllocatedCpus()).toBe(truth.allocated);
  });
  it('a database whose allocation history went back (restore, failover, a new database) resets the cache at the next sync', async () => {
    const { ctx, logger, settle } = testContext(backend);
    await backend.db.db.execute(sql`UPDATE workers SET status = 'down' WHERE status <> 'down'`);
    await registerWorker(ctx, { worker_id: 'regress', hostname: 'regress', cpus: 64 });
    for (let i = 0; i < 8; i++) {
      await submitJob(ctx, { script: 'true', cpus: 1 });
      await settle();
      await runSchedulingPass(ctx);
    }
    await syncAllocationCache(ctx);
    const before = await readAllocationSnapshot(backend.db.db);
    expect(before.version).toBeGreaterThan(5);
    expect(await backend.registry.getAllocatedCpus()).toBe(before.allocated);

    // Restored from an older backup behind the same Redis: the allocation and its version are back at 0.
    await backend.db.db.execute(sql`TRUNCATE jobs, resource_allocations, workers CASCADE`);
    await backend.db.db.execute(
      sql`UPDATE cluster_state SET allocated_cpus = 0, allocated_memory_mb = 0, allocated_gpus = 0, allocation_version = 0`,
    );
    await registerWorker(ctx, { worker_id: 'regress', hostname: 'regress', cpus: 64 });
    for (let i = 0; i < 5; i++) {
      await submitJob(ctx, { script: 'true', cpus: 1 });
      await settle();
      await runSchedulingPass(ctx);
    }
    await settle();
    const restored = await readAllocationSnapshot(backend.db.db);
    expect(restored).toMatchObject({ allocated: 5, version: 5 });
    const cachedBefore = await backend.registry.getAllocatedCpus();
    const sync = await syncAllocationCache(ctx);
    expect(sync).toMatchObject({ allocated: 5, reset: 'version' });
    if (cachedBefore !== null) expect(sync.drift).toBe(cachedBefore - 5);
    expect(logger.has(/warn Resource cache reset/)).toBe(true);
    expect(logger.has('Resource cache synced: 5 CPUs allocated')).toBe(true);
    expect(await readAllocatedCpus(ctx)).toMatchObject({ allocated: 5 });
    expect((await getDashboard(ctx)).resources).toMatchObject({ allocated_cpus: 5 });
    // From then on deltas count again.
    await submitJob(ctx, { script: 'true', cpus: 2 });
    await settle();
    await runSchedulingPass(ctx);
    expect(await backend.registry.getAllocatedCpus()).toBe(7);

    // Another database behind the same Redis, whose version is already past the cache's: its own epoch resets.
    await backend.db.db.execute(
      sql`UPDATE cluster_state SET allocation_epoch = gen_random_uuid()::text, allocation_version = allocation_version + 1000`,
    );
    await backend.registry.applyAllocationDelta(40, 1003); // the old database's, never to be counted
    const other = await syncAllocationCache(ctx);
    expect(other).toMatchObject({ allocated: 7, reset: 'epoch' });
    expect(await backend.registry.getAllocatedCpus()).toBe(7);
    const quiet = await syncAllocationCache(ctx);
    expect(quiet).toMatchObject({ allocated: 7, drift: 0, reset: null });
    await checkInvariants(backend.db.db, backend.registry);
  });
});

describe.runIf(backends.some((b) => b.name === 'postgres+redis'))('cache on real Redis', () => {
  let backend: Backend;
  beforeAll(async () => {
    backend = await backends.find((b) => b.name === 'postgres+redis')!.create();
  });
  afterAll(async () => {
    await backend?.close();
  });

  it('DEL resource:allocated_cpus: the next read logs a miss and refills it from Postgres', async () => {
    const { ctx, logger } = testContext(backend);
    await registerWorker(ctx, { worker_id: 'miss-1', hostname: 'h', cpus: 16 });
    await submitJob(ctx, { script: 'true', cpus: 5 });
    await runSchedulingPass(ctx);
    const redis = new Redis(REDIS_URL);
    const key = `${backend.keyPrefix}resource:allocated_cpus`;
    await redis.del(key);
    expect(await readAllocatedCpus(ctx)).toEqual({ allocated: 5, source: 'database' });
    expect(logger.has('Cache miss, querying database')).toBe(true);
    expect(await redis.get(key)).toBe('5');
    expect(await readAllocatedCpus(ctx)).toEqual({ allocated: 5, source: 'cache' });
    await redis.quit();
  });
});

describe.runIf(backends.some((b) => b.name === 'postgres+redis'))('resource keys on real Redis', () => {
  let backend: Backend;
  let redis: Redis;
  beforeAll(async () => {
    backend = await backends.find((b) => b.name === 'postgres+redis')!.create();
    redis = new Redis(REDIS_URL);
  });
  afterAll(async () => {
    await redis?.quit();
    await backend?.close();
  });

  it('DEL of any resource key: the next read logs a miss and refills every key from Postgres', async () => {
    const { ctx, logger, settle } = testContext(backend);
    await registerWorker(ctx, {
      worker_id: 'gpu-01',
      hostname: 'gpu-01',
      cpus: 16,
      memory_mb: 64_000,
      gpus: [
        { index: 0, model: 'a100' },
        { index: 1, model: 'a100' },
      ],
      gres: { nvme: 2 },
    });
    await submitJob(ctx, { script: 'true', cpus: 4, memory_per_node: '2G', gpus: 2, gres: 'nvme:1' });
    await settle();
    await runSchedulingPass(ctx);
    const expected = { cpus: 4, memoryMb: 2048, gpus: 2, gres: { nvme: 1 } };
    const key = (name: string) => `${backend.keyPrefix}resource:${name}`;
    await syncAllocationCache(ctx);
    expect(logger.has('Resource cache synced: 4 CPUs allocated, 2048 MB memory, 2 GPUs')).toBe(true);
    expect(await readAllocatedResources(ctx)).toEqual({ allocation: expected, source: 'cache' });
    expect(await redis.get(key('allocated_memory_mb'))).toBe('2048');
    expect(await redis.get(key('allocated_gpus'))).toBe('2');
    expect(await redis.hgetall(key('allocated_gres'))).toEqual({ nvme: '1' });
    for (const name of ['allocated_memory_mb', 'allocated_gpus', 'allocated_cpus']) {
      await redis.del(key(name));
      logger.lines.length = 0;
      expect(await readAllocatedResources(ctx), name).toEqual({ allocation: expected, source: 'database' });
      expect(logger.has('Cache miss, querying database'), name).toBe(true);
      expect(await readAllocatedResources(ctx), name).toEqual({ allocation: expected, source: 'cache' });
    }
    // The gres hash with the CPU key (alone, a missing hash is an empty one: see RegistryStore).
    await redis.del(key('allocated_cpus'), key('allocated_gres'));
    expect(await readAllocatedResources(ctx)).toEqual({ allocation: expected, source: 'database' });
    expect(await redis.hgetall(key('allocated_gres'))).toEqual({ nvme: '1' });
    expect(await redis.get(key('allocated_cpus'))).toBe('4');
    // The CPU read of the contract refills the siblings too.
    await redis.del(key('allocated_cpus'), key('allocated_memory_mb'));
    expect(await readAllocatedCpus(ctx)).toEqual({ allocated: 4, source: 'database' });
    expect(await redis.get(key('allocated_memory_mb'))).toBe('2048');
  });

  it('HGETALL worker:<id> has the contract fields, then memory_mb, gpus, gres, features and partitions', async () => {
    const { ctx } = testContext(backend);
    await registerWorker(ctx, {
      worker_id: 'kunpeng-gpu-01',
      hostname: 'node-gpu-01',
      cpus: 96,
      memory_mb: 515_000,
      gpus: [
        { index: 1, model: 'a100' },
        { index: 0, model: 'a100' },
      ],
      gres: { nvme: 1, fpga: 2 },
      features: ['avx512', 'ssd'],
      partitions: ['gpu'],
    });
    const key = `${backend.keyPrefix}worker:kunpeng-gpu-01`;
    const flat = (await redis.call('HGETALL', key)) as string[];
    expect(flat.filter((_, i) => i % 2 === 0)).toEqual([
      'worker_id',
      'cpus',
      'status',
      'hostname',
      'registered_at',
      'last_heartbeat',
      'memory_mb',
      'gpus',
      'gres',
      'features',
      'partitions',
    ]);
    const fields = await redis.hgetall(key);
    expect(fields).toMatchObject({
      worker_id: 'kunpeng-gpu-01',
      cpus: '96',
      status: 'ready',
      hostname: 'node-gpu-01',
      memory_mb: '515000',
      gpus: 'a100:0,a100:1',
      gres: 'nvme:1,fpga:2',
      features: 'avx512,ssd',
      partitions: 'gpu',
    });
    expect(fields.registered_at).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d$/);
    expect(await redis.ttl(key)).toBe(60);
    // A plain CPU node: the resource fields are there, empty but for its memory.
    await registerWorker(ctx, { worker_id: 'kunpeng-compute-09', hostname: 'node-09', cpus: 96 });
    expect(await redis.hgetall(`${backend.keyPrefix}worker:kunpeng-compute-09`)).toMatchObject({
      cpus: '96',
      memory_mb: '0',
      gpus: '',
      gres: '',
      features: '',
      partitions: '',
    });
  });
});

describe('Redis unreachable: everything still works from Postgres', () => {
  const hasPostgres = backends.some((b) => b.name === 'postgres+redis');
  let db: TestDatabase;
  let close: () => Promise<void>;
  let backend: Backend;
  beforeAll(async () => {
    if (!hasPostgres) return;
    db = await createPostgresDatabase();
    // Nothing listens on port 1: every Redis command fails at once.
    const dead = createIoredisScripts('redis://127.0.0.1:1', { timeoutMs: 300, onError: () => {} });
    close = dead.close;
    backend = {
      name: 'postgres+dead-redis',
      db,
      registry: new RedisRegistryStore(dead.scripts),
      keyPrefix: '',
      close: async () => {},
    };
  });
  afterAll(async () => {
    await close?.();
    await db?.close();
  });

  it.runIf(hasPostgres)(
    'registers, schedules, serves the dashboard and reports degraded health',
    async () => {
      const { ctx, logger, settle } = testContext(backend);
      await registerWorker(ctx, { worker_id: 'pg-only', hostname: 'h', cpus: 8 });
      const job = await submitJob(ctx, { script: 'true', cpus: 3 });
      // The submit's own pass (deferred) or this one places it: either way, from Postgres alone.
      await settle();
      await runSchedulingPass(ctx);
      const dashboard = await getDashboard(ctx);
      expect(dashboard.resources).toEqual({
        total_cpus: 8,
        allocated_cpus: 3,
        available_cpus: 5,
        utilization: 37.5,
      });
      expect(dashboard.workers.map((w) => w.worker_id)).toEqual(['pg-only']);
      expect(dashboard.jobs.RUNNING).toBe(1);
      const health = await getHealth(ctx);
      expect(health.status).toBe('degraded');
      expect(health.database.status).toBe('ok');
      expect(health.cache.status).toBe('down');
      expect(logger.has('Registry unavailable, falling back to Postgres')).toBe(true);
      const [row] = await query<{ node: string }>(db.db, sql`SELECT node FROM jobs WHERE id = ${job.id}`);
      expect(row?.node).toBe('pg-only');
    },
  );
});
