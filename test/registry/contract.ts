/**
 * The RegistryStore contract, run on every implementation (memory, Redis over ioredis, Redis over Upstash
 * REST). Each test gets a fresh, isolated store from the factory.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { AllocationVector, RegistryStore, WorkerEntry } from '../../functions/domain/ports.ts';

export interface RegistryHarness {
  store: RegistryStore;
  /** What `redis-cli DEL <key>` does, the key unprefixed (`worker:w1`, `resource:allocated_cpus`). */
  deleteKey(key: string): Promise<void>;
  /** HGETALL (as strings) and PTTL of `worker:<id>`, or null when the key is gone. */
  inspectWorker(id: string): Promise<{ fields: Record<string, string>; ttlMs: number } | null>;
  /** Lets `ms` pass on the store's clock: a fake clock for memory, a real sleep for Redis. */
  elapse(ms: number): Promise<void>;
  cleanup(): Promise<void>;
}

export interface HarnessOptions {
  /** Cap on recorded deltas (the stores' maxRecordedDeltas), small to test trimming. */
  maxRecordedDeltas?: number;
}

export type HarnessFactory = (options?: HarnessOptions) => Promise<RegistryHarness>;

export function workerEntry(id: string, overrides: Partial<WorkerEntry> = {}): WorkerEntry {
  return {
    worker_id: id,
    cpus: 96,
    status: 'ready',
    hostname: `host-${id}`,
    registered_at: '2025-11-11T10:00:00',
    last_heartbeat: '2025-11-11T10:00:00',
    ...overrides,
  };
}

const sorted = (ids: string[]) => [...ids].sort();

export function vector(
  cpus: number,
  memoryMb: number,
  gpus: number,
  gres: Record<string, number> = {},
): AllocationVector {
  return { cpus, memoryMb, gpus, gres };
}

/** A small deterministic PRNG (mulberry32), so that a failing shuffle can be replayed. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function registryContract(name: string, makeHarness: HarnessFactory): void {
  describe(`RegistryStore contract: ${name}`, () => {
    let h: RegistryHarness;
    let store: RegistryStore;
    const extra: RegistryHarness[] = [];

    beforeEach(async () => {
      h = await makeHarness();
      store = h.store;
    });
    afterEach(async () => {
      await h.cleanup();
      for (const other of extra.splice(0)) await other.cleanup();
    });

    describe('workers', () => {
      it('putWorker writes the six fields with the TTL and makes the worker live', async () => {
        await store.putWorker(workerEntry('w1'), 60);
        const seen = await h.inspectWorker('w1');
        expect(seen?.fields).toEqual({
          worker_id: 'w1',
          cpus: '96',
          status: 'ready',
          hostname: 'host-w1',
          registered_at: '2025-11-11T10:00:00',
          last_heartbeat: '2025-11-11T10:00:00',
        });
        expect(seen?.ttlMs).toBeGreaterThan(58_000);
        expect(seen?.ttlMs).toBeLessThanOrEqual(60_000);
        expect(await store.liveWorkerIds()).toEqual(['w1']);
        expect(await store.takeExpiredWorkerIds()).toEqual([]);
      });

      it('putWorker writes the resource fields after the contract ones; heartbeats and status keep them', async () => {
        const resources = {
          memory_mb: 515_000,
          gpus: 'a100:0,a100:1',
          gres: 'nvme:1',
          features: 'avx512,ssd',
          partitions: 'gpu',
        };
        await store.putWorker(workerEntry('g1', resources), 60);
        const contract = {
          worker_id: 'g1',
          cpus: '96',
          status: 'ready',
          hostname: 'host-g1',
          registered_at: '2025-11-11T10:00:00',
          last_heartbeat: '2025-11-11T10:00:00',
        };
        const written = { ...resources, memory_mb: '515000' };
        expect((await h.inspectWorker('g1'))?.fields).toEqual({ ...contract, ...written });
        expect(await store.touchWorker('g1', '2025-11-11T10:05:30', 60, 'draining')).toBe(true);
        expect(await store.setWorkerStatus('g1', 'ready')).toBe(true);
        expect((await h.inspectWorker('g1'))?.fields).toEqual({
          ...contract,
          ...written,
          last_heartbeat: '2025-11-11T10:05:30',
        });
        // A node with none of them: the fields are there, empty.
        await store.putWorker(
          workerEntry('c1', { memory_mb: 0, gpus: '', gres: '', features: '', partitions: '' }),
          60,
        );
        expect((await h.inspectWorker('c1'))?.fields).toMatchObject({
          memory_mb: '0',
          gpus: '',
          gres: '',
          features: '',
          partitions: '',
        });
        // A re-registration replaces the whole entry: fields it does not give are gone.
        await store.putWorker(workerEntry('g1'), 60);
        expect((await h.inspectWorker('g1'))?.fields).toEqual(contract);
        await expect(store.putWorker(workerEntry('g2', { memory_mb: -1 }), 60)).rejects.toThrow(RangeError);
        await expect(store.putWorker(workerEntry('g2', { memory_mb: 1.5 }), 60)).rejects.toThrow(RangeError);
      });

      it('putWorker again replaces the whole entry and its TTL (re-registration)', async () => {
        await store.putWorker(workerEntry('w1', { status: 'draining', cpus: 8 }), 60);
        await store.putWorker(
          workerEntry('w1', { hostname: 'other', last_heartbeat: '2025-11-11T11:00:00' }),
          30,
        );
        const seen = await h.inspectWorker('w1');
        expect(seen?.fields).toMatchObject({
          cpus: '96',
          status: 'ready',
          hostname: 'other',
          last_heartbeat: '2025-11-11T11:00:00',
        });
        expect(seen?.ttlMs).toBeLessThanOrEqual(30_000);
        expect(await store.liveWorkerIds()).toEqual(['w1']);
      });

      it('touchWorker refreshes last_heartbeat, the TTL and (when given) the status', async () => {
        await store.putWorker(workerEntry('w1'), 10);
        expect(await store.touchWorker('w1', '2025-11-11T10:05:30', 60)).toBe(true);
        let seen = await h.inspectWorker('w1');
        expect(seen?.fields).toMatchObject({ last_heartbeat: '2025-11-11T10:05:30', status: 'ready' });
        expect(seen?.ttlMs).toBeGreaterThan(50_000);
        expect(await store.touchWorker('w1', '2025-11-11T10:06:00', 60, 'draining')).toBe(true);
        seen = await h.inspectWorker('w1');
        expect(seen?.fields).toMatchObject({ last_heartbeat: '2025-11-11T10:06:00', status: 'draining' });
        expect(Object.keys(seen?.fields ?? {})).toHaveLength(6);
        expect(await store.liveWorkerIds()).toEqual(['w1']);
      });

      it('touchWorker returns false and writes nothing for an unknown worker', async () => {
        expect(await store.touchWorker('ghost', '2025-11-11T10:05:30', 60, 'ready')).toBe(false);
        expect(await h.inspectWorker('ghost')).toBeNull();
        expect(await store.liveWorkerIds()).toEqual([]);
        expect(await store.takeExpiredWorkerIds()).toEqual([]);
      });

      it('touchWorker returns false and does not resurrect a key that was deleted (flushed)', async () => {
        await store.putWorker(workerEntry('w1'), 60);
        await h.deleteKey('worker:w1');
        expect(await store.touchWorker('w1', '2025-11-11T10:05:30', 60)).toBe(false);
        expect(await h.inspectWorker('w1')).toBeNull();
        expect(await store.liveWorkerIds()).toEqual([]);
      });

      it('setWorkerStatus changes only the status and keeps the TTL', async () => {
        await store.putWorker(workerEntry('w1'), 30);
        expect(await store.setWorkerStatus('w1', 'draining')).toBe(true);
        const seen = await h.inspectWorker('w1');
        expect(seen?.fields).toEqual({ ...stringFields(workerEntry('w1')), status: 'draining' });
        expect(seen?.ttlMs).toBeGreaterThan(25_000);
        expect(seen?.ttlMs).toBeLessThanOrEqual(30_000);
      });

      it('setWorkerStatus returns false and writes nothing when the key is gone', async () => {
        expect(await store.setWorkerStatus('ghost', 'down')).toBe(false);
        expect(await h.inspectWorker('ghost')).toBeNull();
        await store.putWorker(workerEntry('w1'), 60);
        await h.deleteKey('worker:w1');
        expect(await store.setWorkerStatus('w1', 'down')).toBe(false);
        expect(await h.inspectWorker('w1')).toBeNull();
      });

      it('removeWorker deletes the key and the index entry: gone at once, never reported as expired', async () => {
        await store.putWorker(workerEntry('w1'), 1);
        await store.putWorker(workerEntry('w2'), 60);
        await store.removeWorker('w1');
        await store.removeWorker('never-registered');
        expect(await h.inspectWorker('w1')).toBeNull();
        expect(await store.liveWorkerIds()).toEqual(['w2']);
        await h.elapse(1_100);
        expect(await store.takeExpiredWorkerIds()).toEqual([]);
      });

      it('removeWorker naming a registration leaves a newer registration of the same worker alone', async () => {
        await store.putWorker(workerEntry('w1', { registered_at: '2025-11-11T10:00:00' }), 60);
        // The reaper judged the 10:00 registration lost, but the agent registered again at 10:02.
        await store.putWorker(workerEntry('w1', { registered_at: '2025-11-11T10:02:00' }), 60);
        expect(await store.removeWorker('w1', '2025-11-11T10:00:00')).toBe(false);
        expect((await h.inspectWorker('w1'))?.fields.registered_at).toBe('2025-11-11T10:02:00');
        expect(await store.liveWorkerIds()).toEqual(['w1']);
        expect(await store.removeWorker('w1', '2025-11-11T10:02:00')).toBe(true);
        expect(await h.inspectWorker('w1')).toBeNull();
        expect(await store.liveWorkerIds()).toEqual([]);
        // A key that is gone already: its index entry goes.
        await store.putWorker(workerEntry('w2'), 60);
        await h.deleteKey('worker:w2');
        expect(await store.removeWorker('w2', '2025-11-11T09:00:00')).toBe(true);
        expect(await store.takeExpiredWorkerIds()).toEqual([]);
      });

      it('a worker whose TTL runs out is not live and is handed out once by takeExpiredWorkerIds', async () => {
        await store.putWorker(workerEntry('dies'), 1);
        await store.putWorker(workerEntry('lives'), 60);
        await store.putWorker(workerEntry('comes-back'), 1);
        await h.elapse(1_100);
        expect(await store.liveWorkerIds()).toEqual(['lives']);
        expect(await h.inspectWorker('dies')).toBeNull();
        // A heartbeat after the TTL ran out is refused and writes nothing: the agent must register again.
        expect(await store.touchWorker('dies', '2025-11-11T10:06:00', 60)).toBe(false);
        expect(await h.inspectWorker('dies')).toBeNull();
        // Re-registered before anyone reaped it: live again, not expired.
        await store.putWorker(workerEntry('comes-back'), 60);
        expect(sorted(await store.liveWorkerIds())).toEqual(['comes-back', 'lives']);
        expect(await store.takeExpiredWorkerIds()).toEqual(['dies']);
        expect(await store.takeExpiredWorkerIds()).toEqual([]);
        expect(sorted(await store.liveWorkerIds())).toEqual(['comes-back', 'lives']);
      });

      it('a deleted key is not live at once; it is reported expired once its TTL would have run out', async () => {
        await store.putWorker(workerEntry('w1'), 1);
        await h.deleteKey('worker:w1');
        expect(await store.liveWorkerIds()).toEqual([]);
        expect(await store.takeExpiredWorkerIds()).toEqual([]);
        await h.elapse(1_100);
        expect(await store.takeExpiredWorkerIds()).toEqual(['w1']);
        expect(await store.takeExpiredWorkerIds()).toEqual([]);
      });

      it('lists many workers', async () => {
        const ids = Array.from({ length: 25 }, (_, i) => `kunpeng-compute-${String(i).padStart(2, '0')}`);
        for (const id of ids) await store.putWorker(workerEntry(id), 60);
        await store.removeWorker(ids[3]!);
        expect(sorted(await store.liveWorkerIds())).toEqual(ids.filter((_, i) => i !== 3));
      });

      it('rejects a TTL Redis cannot take and an empty id', async () => {
        await expect(store.putWorker(workerEntry('w1'), 0)).rejects.toThrow(RangeError);
        await expect(store.putWorker(workerEntry('w1'), 1.5)).rejects.toThrow(RangeError);
        await expect(store.touchWorker('w1', 'x', -1)).rejects.toThrow(RangeError);
        await expect(store.putWorker(workerEntry(''), 60)).rejects.toThrow(TypeError);
        expect(await store.liveWorkerIds()).toEqual([]);
      });
    });

    describe('push channel and idle marker', () => {
      it('touchWorkers refreshes every live worker in one call and names the ones whose key is gone', async () => {
        await store.putWorker(workerEntry('a'), 1);
        await store.putWorker(workerEntry('b'), 1);
        await store.putWorker(workerEntry('gone'), 60);
        await h.deleteKey('worker:gone');
        const gone = await store.touchWorkers(
          [
            { id: 'a', lastHeartbeat: '2025-11-11T10:05:30' },
            { id: 'b', lastHeartbeat: '2025-11-11T10:05:30' },
            { id: 'gone', lastHeartbeat: '2025-11-11T10:05:30' },
          ],
          60,
        );
        expect(gone).toEqual(['gone']);
        expect(await h.inspectWorker('gone')).toBeNull();
        await h.elapse(1_100);
        // Their TTL of 1 s would have run out: refreshed to 60 s, they live on with the new heartbeat.
        expect(sorted(await store.liveWorkerIds())).toEqual(['a', 'b']);
        expect((await h.inspectWorker('a'))?.fields.last_heartbeat).toBe('2025-11-11T10:05:30');
        expect((await h.inspectWorker('a'))?.ttlMs).toBeGreaterThan(50_000);
        expect(await store.touchWorkers([], 60)).toEqual([]);
      });

      it('reapView gives the live ids and how long the registry has remembered workers, from the first registration', async () => {
        const first = await store.reapView();
        expect(first.live).toEqual([]);
        expect(first.memoryAgeMs).toBeLessThan(1_000);
        await store.putWorker(workerEntry('w1'), 60);
        await store.putWorker(workerEntry('short'), 1);
        await h.elapse(1_100);
        const later = await store.reapView();
        expect(later.live).toEqual(['w1']);
        expect(later.memoryAgeMs).toBeGreaterThanOrEqual(1_000);
        // The expired member was dropped from the index, as takeExpiredWorkerIds would.
        expect(await store.takeExpiredWorkerIds()).toEqual([]);
      });

      it('the quiet marker holds only while no activity came since the epoch it was set at', async () => {
        expect((await store.quietState()).quiet).toBe(false);
        const epoch = await store.activityEpoch();
        expect(await store.markQuiet(epoch, 60)).toBe(true);
        expect((await store.quietState()).quiet).toBe(true);
        await store.noteActivity();
        expect((await store.quietState()).quiet).toBe(false);
        // A pass that read the epoch before the activity cannot set it.
        expect(await store.markQuiet(epoch, 60)).toBe(false);
        expect((await store.quietState()).quiet).toBe(false);
        expect(await store.markQuiet(await store.activityEpoch(), 1)).toBe(true);
        await h.elapse(1_100);
        expect((await store.quietState()).quiet).toBe(false); // lapsed
      });

      it('quietState reports an expired worker key, a zero allocation and the live capacity', async () => {
        await store.putWorker(workerEntry('big', { cpus: 64 }), 60);
        await store.putWorker(workerEntry('small', { cpus: 8 }), 60);
        await store.putWorker(workerEntry('dies', { cpus: 4 }), 1);
        await store.setAllocationSnapshot(0, 1);
        await h.elapse(1_100);
        expect(await store.quietState()).toMatchObject({
          expiredWorkers: true,
          allocationEmpty: true,
          liveWorkers: 2,
          liveCpus: 72,
        });
        expect(await store.takeExpiredWorkerIds()).toEqual(['dies']);
        await store.applyAllocationDelta(4, 2);
        expect(await store.quietState()).toMatchObject({ expiredWorkers: false, allocationEmpty: false });
      });
    });

    describe('allocation cache', () => {
      it('is null until a snapshot fills it', async () => {
        expect(await store.getAllocatedCpus()).toBeNull();
        expect(await store.setAllocationSnapshot(48, 5)).toMatchObject({
          applied: true,
          previous: null,
          value: 48,
        });
        expect(await store.getAllocatedCpus()).toBe(48);
      });

      it('applies deltas newer than the snapshot, ignores older ones', async () => {
        await store.setAllocationSnapshot(48, 5);
        await store.applyAllocationDelta(4, 6);
        await store.applyAllocationDelta(-8, 7);
        expect(await store.getAllocatedCpus()).toBe(44);
        await store.applyAllocationDelta(100, 5); // counted by the snapshot
        await store.applyAllocationDelta(100, 2);
        expect(await store.getAllocatedCpus()).toBe(44);
        expect(await store.setAllocationSnapshot(44, 7)).toMatchObject({
          applied: true,
          previous: 44,
          value: 44,
        });
      });

      it('a snapshot keeps the deltas newer than it that were applied meanwhile (the sync race)', async () => {
        await store.setAllocationSnapshot(10, 1);
        // The sync reads Postgres at version 3 (allocated 16)...
        await store.applyAllocationDelta(2, 2);
        await store.applyAllocationDelta(4, 3);
        // ...and commits 4 and 5 land before its SET.
        await store.applyAllocationDelta(8, 4);
        await store.applyAllocationDelta(-2, 5);
        expect(await store.getAllocatedCpus()).toBe(22);
        expect(await store.setAllocationSnapshot(16, 3)).toMatchObject({
          applied: true,
          previous: 22,
          value: 22,
        });
        expect(await store.getAllocatedCpus()).toBe(22);
      });

      it('reports drift: previous is what the cache held before the snapshot', async () => {
        await store.setAllocationSnapshot(10, 1);
        await store.applyAllocationDelta(4, 2);
        // The delta for version 3 (+6) was lost (Redis blip): the cache says 14, Postgres says 20.
        expect(await store.setAllocationSnapshot(20, 3)).toMatchObject({
          applied: true,
          previous: 14,
          value: 20,
        });
      });

      it('deltas that arrive out of order are each counted once', async () => {
        await store.setAllocationSnapshot(10, 5);
        await store.applyAllocationDelta(4, 7);
        await store.applyAllocationDelta(2, 6);
        expect(await store.getAllocatedCpus()).toBe(16);
        // A snapshot at 6 (10 + 2) must keep 7's +4.
        expect(await store.setAllocationSnapshot(12, 6)).toMatchObject({ applied: true, value: 16 });
        await store.applyAllocationDelta(2, 6); // late duplicate
        expect(await store.getAllocatedCpus()).toBe(16);
      });

      it('a delta arriving while the value key is deleted is kept for the next snapshot', async () => {
        await store.setAllocationSnapshot(48, 10);
        await h.deleteKey('resource:allocated_cpus');
        await store.applyAllocationDelta(4, 11); // no INCRBY on a missing key
        expect(await store.getAllocatedCpus()).toBeNull();
        // The refill read Postgres at version 10, before commit 11: the store adds 11's delta.
        expect(await store.setAllocationSnapshot(48, 10)).toMatchObject({
          applied: true,
          previous: null,
          value: 52,
        });
        expect(await store.getAllocatedCpus()).toBe(52);
        // A refill that already saw commit 11 does not count it twice.
        await h.deleteKey('resource:allocated_cpus');
        expect(await store.setAllocationSnapshot(52, 11)).toMatchObject({
          applied: true,
          previous: null,
          value: 52,
        });
      });

      it('a delta before any snapshot is recorded, not applied, and counted by an older snapshot', async () => {
        await store.applyAllocationDelta(4, 3);
        expect(await store.getAllocatedCpus()).toBeNull();
        expect(await store.setAllocationSnapshot(10, 2)).toMatchObject({
          applied: true,
          previous: null,
          value: 14,
        });
      });

      it('a stale snapshot is ignored', async () => {
        await store.setAllocationSnapshot(20, 10);
        expect(await store.setAllocationSnapshot(15, 9)).toMatchObject({
          applied: false,
          previous: 20,
          value: 20,
        });
        expect(await store.getAllocatedCpus()).toBe(20);
        // A delta at 10 is already in the snapshot at 10, even though the stale one came later.
        await store.applyAllocationDelta(5, 10);
        expect(await store.getAllocatedCpus()).toBe(20);
        await store.applyAllocationDelta(5, 11);
        expect(await store.getAllocatedCpus()).toBe(25);
      });

      it('a stale snapshot on an empty cache leaves it empty and reports its own figure as the value', async () => {
        await store.setAllocationSnapshot(20, 10);
        await h.deleteKey('resource:allocated_cpus');
        expect(await store.setAllocationSnapshot(15, 9)).toMatchObject({
          applied: false,
          previous: null,
          value: 15,
        });
        expect(await store.getAllocatedCpus()).toBeNull();
      });

      it('a stale snapshot reports the newer version the cache holds', async () => {
        await store.setAllocationSnapshot(20, 10, { epoch: 'db-1' });
        expect(await store.setAllocationSnapshot(15, 9, { epoch: 'db-1' })).toEqual({
          applied: false,
          previous: 20,
          value: 20,
          previousAllocation: { cpus: 20, memoryMb: 0, gpus: 0, gres: {} },
          allocation: { cpus: 20, memoryMb: 0, gpus: 0, gres: {} },
          version: 10,
          reset: null,
        });
      });

      it('Postgres went back (restore, failover): a snapshot replaces the newer one it names, and only that one', async () => {
        await store.setAllocationSnapshot(60, 60, { epoch: 'db-1' });
        await store.applyAllocationDelta(1, 61); // recorded from the history that is gone
        expect(await store.getAllocatedCpus()).toBe(61);
        // Naming another version than the cache's is refused: another sync got there first.
        expect(await store.setAllocationSnapshot(5, 5, { epoch: 'db-1', replacing: 59 })).toMatchObject({
          applied: false,
          version: 60,
        });
        expect(await store.setAllocationSnapshot(5, 5, { epoch: 'db-1', replacing: 60 })).toEqual({
          applied: true,
          previous: 61,
          value: 5,
          previousAllocation: { cpus: 61, memoryMb: 0, gpus: 0, gres: {} },
          allocation: { cpus: 5, memoryMb: 0, gpus: 0, gres: {} },
          version: 5,
          reset: 'version',
        });
        expect(await store.getAllocatedCpus()).toBe(5);
        // Deltas of the new history count from there on.
        await store.applyAllocationDelta(2, 6);
        expect(await store.getAllocatedCpus()).toBe(7);
        expect(await store.setAllocationSnapshot(7, 6, { epoch: 'db-1' })).toMatchObject({
          applied: true,
          value: 7,
          reset: null,
        });
      });

      it("a snapshot of another epoch (another database) starts over: the old history's deltas are dropped", async () => {
        await store.setAllocationSnapshot(40, 100, { epoch: 'db-1' });
        await store.applyAllocationDelta(4, 103);
        expect(await store.getAllocatedCpus()).toBe(44);
        // The new database is at version 101 already: without the epoch its snapshot would replay 103's +4.
        expect(await store.setAllocationSnapshot(3, 101, { epoch: 'db-2' })).toEqual({
          applied: true,
          previous: 44,
          value: 3,
          previousAllocation: { cpus: 44, memoryMb: 0, gpus: 0, gres: {} },
          allocation: { cpus: 3, memoryMb: 0, gpus: 0, gres: {} },
          version: 101,
          reset: 'epoch',
        });
        // Also a lower version: another epoch's versions do not compare.
        expect(await store.setAllocationSnapshot(1, 2, { epoch: 'db-3' })).toMatchObject({
          applied: true,
          value: 1,
          reset: 'epoch',
        });
        expect(await store.setAllocationSnapshot(1, 2, { epoch: 'db-3' })).toMatchObject({ reset: null });
        // A snapshot that names no epoch (older callers) keeps the epoch and compares versions.
        expect(await store.setAllocationSnapshot(9, 1)).toMatchObject({ applied: false });
      });

      it('a snapshot at the same version again is idempotent', async () => {
        await store.setAllocationSnapshot(20, 10);
        await store.applyAllocationDelta(3, 12);
        expect(await store.setAllocationSnapshot(20, 10)).toMatchObject({
          applied: true,
          previous: 23,
          value: 23,
        });
        expect(await store.setAllocationSnapshot(20, 10)).toMatchObject({
          applied: true,
          previous: 23,
          value: 23,
        });
      });

      it('a duplicate delta (same version twice) is applied once, even with another figure', async () => {
        await store.setAllocationSnapshot(0, 0);
        await store.applyAllocationDelta(4, 1);
        await store.applyAllocationDelta(4, 1);
        expect(await store.getAllocatedCpus()).toBe(4);
        // One version is one commit: a second call for it is a duplicate whatever its delta says.
        await store.applyAllocationDelta(-4, 1);
        expect(await store.getAllocatedCpus()).toBe(4);
        // And the recorded delta is counted once by a later snapshot that predates it.
        expect(await store.setAllocationSnapshot(0, 0)).toMatchObject({ value: 4 });
      });

      it('keeps at most maxRecordedDeltas deltas, dropping the oldest', async () => {
        const small = await makeHarness({ maxRecordedDeltas: 3 });
        extra.push(small);
        for (let version = 1; version <= 5; version++)
          await small.store.applyAllocationDelta(version, version);
        // Deltas 1 and 2 are gone: a (too old) snapshot at 0 only finds 3, 4 and 5.
        expect(await small.store.setAllocationSnapshot(100, 0)).toMatchObject({ value: 112 });
      });

      it('rejects non-integer figures', async () => {
        await expect(store.applyAllocationDelta(1.5, 2)).rejects.toThrow(RangeError);
        await expect(store.applyAllocationDelta(1, -1)).rejects.toThrow(RangeError);
        await expect(store.setAllocationSnapshot(Number.NaN, 2)).rejects.toThrow(RangeError);
      });

      it('stays exact whatever order deltas, snapshots and DELs arrive in (randomized)', async () => {
        for (const seed of [1, 2, 3]) {
          const run = seed === 1 ? h : await makeHarness();
          if (run !== h) extra.push(run);
          await checkRandomHistory(run, prng(seed), 60);
        }
      });
    });

    describe('allocation cache: every resource', () => {
      const empty = { cpus: null, memoryMb: null, gpus: null, gres: null };

      it('a snapshot sets every key, and they read back together', async () => {
        expect(await store.getAllocation()).toEqual(empty);
        const snapshot = vector(48, 65_536, 2, { nvme: 1, fpga: 2 });
        expect(await store.setAllocationSnapshot(snapshot, 5)).toEqual({
          applied: true,
          previous: null,
          value: 48,
          previousAllocation: empty,
          allocation: snapshot,
          version: 5,
          reset: null,
        });
        expect(await store.getAllocation()).toEqual(snapshot);
        expect(await store.getAllocatedCpus()).toBe(48);
      });

      it('a delta moves every resource, once per version; a duplicate or stale version is ignored whatever it says', async () => {
        await store.setAllocationSnapshot(vector(8, 1024, 1, { nvme: 1 }), 10);
        await store.applyAllocationDelta(vector(4, 2048, 2, { nvme: 1, fpga: 1 }), 11);
        const after11 = vector(12, 3072, 3, { nvme: 2, fpga: 1 });
        expect(await store.getAllocation()).toEqual(after11);
        await store.applyAllocationDelta(vector(-4, -2048, -2, { nvme: -1, fpga: -1 }), 11); // duplicate
        await store.applyAllocationDelta(vector(100, 100, 100, { nvme: 100 }), 10); // in the snapshot
        await store.applyAllocationDelta(vector(100, 100, 100, { gpu2: 100 }), 3);
        expect(await store.getAllocation()).toEqual(after11);
        // Counts that reach zero leave the gres hash.
        await store.applyAllocationDelta(vector(-12, -3072, -3, { nvme: -2, fpga: -1 }), 12);
        expect(await store.getAllocation()).toEqual(vector(0, 0, 0));
        // A number is a change of CPUs alone; a partial vector changes what it names.
        await store.applyAllocationDelta(2, 13);
        await store.applyAllocationDelta({ gres: { nvme: 1 }, memoryMb: 10 }, 14);
        expect(await store.getAllocation()).toEqual(vector(2, 10, 0, { nvme: 1 }));
        // And a later snapshot before them counts each once.
        expect(await store.setAllocationSnapshot(vector(0, 0, 0), 12)).toMatchObject({
          allocation: vector(2, 10, 0, { nvme: 1 }),
        });
      });

      it('a snapshot keeps the deltas newer than it, every resource (the sync race)', async () => {
        await store.setAllocationSnapshot(vector(10, 100, 0), 1);
        await store.applyAllocationDelta(vector(2, 200, 1, { nvme: 1 }), 2);
        await store.applyAllocationDelta(vector(4, 0, 1, { fpga: 2 }), 3);
        // The sync reads Postgres at version 3; commits 4 and 5 land before its SET.
        await store.applyAllocationDelta(vector(8, 800, 2, { nvme: 1 }), 4);
        await store.applyAllocationDelta(vector(-2, -100, -1, { fpga: -1 }), 5);
        const now = vector(22, 1000, 3, { nvme: 2, fpga: 1 });
        expect(await store.getAllocation()).toEqual(now);
        expect(await store.setAllocationSnapshot(vector(16, 300, 2, { nvme: 1, fpga: 2 }), 3)).toMatchObject({
          applied: true,
          previousAllocation: now,
          allocation: now,
        });
        expect(await store.getAllocation()).toEqual(now);
        // Drift in any resource is what the snapshot repairs: Postgres says 900 MB at version 5.
        expect(await store.setAllocationSnapshot(vector(22, 900, 3, { nvme: 2, fpga: 1 }), 5)).toMatchObject({
          previousAllocation: now,
          allocation: { ...now, memoryMb: 900 },
        });
      });

      it('a missing key is not written: its part is recorded for the next snapshot while the others move', async () => {
        await store.setAllocationSnapshot(vector(48, 4096, 2, { nvme: 1 }), 10);
        await h.deleteKey('resource:allocated_memory_mb');
        await store.applyAllocationDelta(vector(4, 1024, 1, { nvme: 1 }), 11);
        expect(await store.getAllocation()).toEqual({ cpus: 52, memoryMb: null, gpus: 3, gres: { nvme: 2 } });
        // The refill read Postgres at version 10, before commit 11: the store adds 11's delta to every key.
        expect(await store.setAllocationSnapshot(vector(48, 4096, 2, { nvme: 1 }), 10)).toMatchObject({
          applied: true,
          previousAllocation: { cpus: 52, memoryMb: null, gpus: 3, gres: { nvme: 2 } },
          allocation: vector(52, 5120, 3, { nvme: 2 }),
        });
        await h.deleteKey('resource:allocated_gpus');
        await store.applyAllocationDelta(vector(0, 0, -1), 12);
        expect(await store.getAllocation()).toMatchObject({ gpus: null, memoryMb: 5120 });
        // DEL resource:allocated_cpus (the runbook): CPUs recorded only; the gres hash, still there, moves.
        await h.deleteKey('resource:allocated_cpus');
        await store.applyAllocationDelta(vector(1, 0, 0, { nvme: 1 }), 13);
        expect(await store.getAllocation()).toEqual({
          cpus: null,
          memoryMb: 5120,
          gpus: null,
          gres: { nvme: 3 },
        });
        // Both gone: the gres part is recorded only too.
        await h.deleteKey('resource:allocated_gres');
        await store.applyAllocationDelta(vector(1, 0, 0, { fpga: 1 }), 14);
        expect(await store.getAllocation()).toEqual({ cpus: null, memoryMb: 5120, gpus: null, gres: null });
        // A refill that saw commit 12 (Postgres at 12: 52 CPUs, 5120 MB, 2 GPUs, nvme 2) adds 13 and 14.
        expect(await store.setAllocationSnapshot(vector(52, 5120, 2, { nvme: 2 }), 12)).toMatchObject({
          applied: true,
          allocation: vector(54, 5120, 2, { nvme: 3, fpga: 1 }),
        });
        expect(await store.getAllocation()).toEqual(vector(54, 5120, 2, { nvme: 3, fpga: 1 }));
      });

      it('no gres allocated: the hash does not exist and reads as empty while resource:allocated_cpus does', async () => {
        await store.setAllocationSnapshot(vector(4, 0, 0), 1);
        expect(await store.getAllocation()).toEqual(vector(4, 0, 0));
        await store.applyAllocationDelta({ gres: { nvme: 2 } }, 2);
        expect(await store.getAllocation()).toEqual(vector(4, 0, 0, { nvme: 2 }));
        await store.applyAllocationDelta({ gres: { nvme: -2 } }, 3);
        expect((await store.getAllocation()).gres).toEqual({});
      });

      it('a stale snapshot reports its own figures for the keys that are missing, and writes none', async () => {
        await store.setAllocationSnapshot(vector(20, 200, 2, { nvme: 1 }), 10);
        await h.deleteKey('resource:allocated_memory_mb');
        expect(await store.setAllocationSnapshot(vector(15, 150, 1), 9)).toMatchObject({
          applied: false,
          allocation: vector(20, 150, 2, { nvme: 1 }),
          version: 10,
        });
        expect((await store.getAllocation()).memoryMb).toBeNull();
      });

      it('a number snapshot is CPUs alone: the other resources are set to none', async () => {
        await store.setAllocationSnapshot(vector(8, 800, 1, { nvme: 1 }), 1);
        await store.setAllocationSnapshot(6, 2);
        expect(await store.getAllocation()).toEqual(vector(6, 0, 0));
      });

      it('a reset (another epoch, or Postgres went back) drops the recorded deltas of every resource', async () => {
        await store.setAllocationSnapshot(vector(40, 400, 4, { nvme: 4 }), 100, { epoch: 'db-1' });
        await store.applyAllocationDelta(vector(4, 40, 1, { nvme: 1 }), 103);
        expect(await store.setAllocationSnapshot(vector(3, 30, 0), 101, { epoch: 'db-2' })).toMatchObject({
          applied: true,
          reset: 'epoch',
          allocation: vector(3, 30, 0),
        });
        await store.applyAllocationDelta(vector(1, 10, 1, { fpga: 1 }), 102);
        expect(
          await store.setAllocationSnapshot(vector(2, 20, 0), 5, { epoch: 'db-2', replacing: 101 }),
        ).toMatchObject({ applied: true, reset: 'version', allocation: vector(2, 20, 0) });
        expect(await store.getAllocation()).toEqual(vector(2, 20, 0));
      });

      it('rejects figures the deltas could not record', async () => {
        await expect(store.applyAllocationDelta({ gres: { 'a:b': 1 } }, 1)).rejects.toThrow(RangeError);
        await expect(store.applyAllocationDelta({ gres: { 'a,b': 1 } }, 1)).rejects.toThrow(RangeError);
        await expect(store.applyAllocationDelta({ gres: { nvme: 1.5 } }, 1)).rejects.toThrow(RangeError);
        await expect(store.applyAllocationDelta({ memoryMb: Number.NaN }, 1)).rejects.toThrow(RangeError);
        await expect(store.setAllocationSnapshot(vector(1, 1, 0.5), 1)).rejects.toThrow(RangeError);
        expect(await store.getAllocation()).toEqual(empty);
      });

      it('stays exact for every resource whatever order deltas, snapshots and DELs arrive in (randomized)', async () => {
        for (const seed of [11, 12, 13]) {
          const run = seed === 11 ? h : await makeHarness();
          if (run !== h) extra.push(run);
          await checkRandomVectorHistory(run, prng(seed), 60);
        }
      });
    });

    it('ping resolves', async () => {
      await store.ping();
    });
  });
}

function stringFields(entry: WorkerEntry): Record<string, string> {
  return Object.fromEntries(Object.entries(entry).map(([k, v]) => [k, String(v)]));
}

/**
 * Postgres commits versions 1..n, each with a delta; the cache receives every delta (some twice, some late)
 * and snapshots taken at random versions, all in a shuffled order, with the value key deleted now and then.
 * Whenever the cache holds a value it must equal truth(s) + the deltas newer than s delivered so far, where
 * s is the newest snapshot applied; once a snapshot covers everything the value is the truth.
 */
async function checkRandomHistory(h: RegistryHarness, random: () => number, n: number): Promise<void> {
  const deltas = Array.from({ length: n + 1 }, (_, v) => (v === 0 ? 0 : Math.floor(random() * 17) - 6));
  const truth = (v: number) => deltas.slice(1, v + 1).reduce((a, b) => a + b, 0);
  type Event = { kind: 'delta' | 'snapshot'; version: number } | { kind: 'del' };
  const events: Event[] = [];
  for (let v = 1; v <= n; v++) {
    events.push({ kind: 'delta', version: v });
    if (random() < 0.15) events.push({ kind: 'delta', version: v });
    if (random() < 0.2) events.push({ kind: 'snapshot', version: v });
    if (random() < 0.05) events.push({ kind: 'del' });
  }
  // Shuffle locally: a delta or snapshot arrives at most a few places away from where it was sent.
  for (let i = events.length - 1; i > 0; i--) {
    const j = Math.max(0, i - Math.floor(random() * 6));
    [events[i], events[j]] = [events[j]!, events[i]!];
  }
  let snapshot = -1;
  const delivered = new Set<number>();
  for (const event of events) {
    if (event.kind === 'del') {
      await h.deleteKey('resource:allocated_cpus');
    } else if (event.kind === 'delta') {
      await h.store.applyAllocationDelta(deltas[event.version]!, event.version);
      delivered.add(event.version);
    } else {
      const result = await h.store.setAllocationSnapshot(truth(event.version), event.version);
      expect(result.applied).toBe(event.version >= snapshot);
      snapshot = Math.max(snapshot, event.version);
    }
    const value = await h.store.getAllocatedCpus();
    if (value !== null) {
      const expected = [...delivered]
        .filter((v) => v > snapshot)
        .reduce((a, v) => a + deltas[v]!, truth(snapshot));
      expect(value, `after ${JSON.stringify(event)}`).toBe(expected);
    }
  }
  const final = await h.store.setAllocationSnapshot(truth(n), n);
  expect(final.value).toBe(truth(n));
  expect(await h.store.getAllocatedCpus()).toBe(truth(n));
}

/** `a` plus each of `more`, gres names whose count is zero left out. */
function sum(a: AllocationVector, ...more: AllocationVector[]): AllocationVector {
  const total = { ...a, gres: { ...a.gres } };
  for (const b of more) {
    total.cpus += b.cpus;
    total.memoryMb += b.memoryMb;
    total.gpus += b.gpus;
    for (const [name, n] of Object.entries(b.gres)) total.gres[name] = (total.gres[name] ?? 0) + n;
  }
  total.gres = Object.fromEntries(Object.entries(total.gres).filter(([, n]) => n !== 0));
  return total;
}

/**
 * checkRandomHistory for whole vectors, with DELs of single keys: each key that holds a value must equal the
 * truth at the newest snapshot applied plus the deltas newer than it delivered so far. The gres hash is only
 * deleted together with resource:allocated_cpus (alone, Redis could not tell it from an empty one).
 */
async function checkRandomVectorHistory(h: RegistryHarness, random: () => number, n: number): Promise<void> {
  const names = ['nvme', 'fpga', 'gpu.mig'];
  const int = (lo: number, hi: number) => lo + Math.floor(random() * (hi - lo + 1));
  const deltas: AllocationVector[] = [vector(0, 0, 0)];
  for (let v = 1; v <= n; v++) {
    const gres: Record<string, number> = {};
    for (const name of names) if (random() < 0.4) gres[name] = int(-2, 3);
    deltas.push(vector(int(-6, 10), int(-3, 5) * 512, int(-1, 2), gres));
  }
  const truth = (v: number) => sum(vector(0, 0, 0), ...deltas.slice(1, v + 1));
  const deletable = [
    ['resource:allocated_cpus'],
    ['resource:allocated_memory_mb'],
    ['resource:allocated_gpus'],
    ['resource:allocated_cpus', 'resource:allocated_gres'],
  ];
  type Event = { kind: 'delta' | 'snapshot'; version: number } | { kind: 'del'; keys: string[] };
  const events: Event[] = [];
  for (let v = 1; v <= n; v++) {
    events.push({ kind: 'delta', version: v });
    if (random() < 0.15) events.push({ kind: 'delta', version: v });
    if (random() < 0.2) events.push({ kind: 'snapshot', version: v });
    if (random() < 0.08) events.push({ kind: 'del', keys: deletable[int(0, deletable.length - 1)]! });
  }
  for (let i = events.length - 1; i > 0; i--) {
    const j = Math.max(0, i - Math.floor(random() * 6));
    [events[i], events[j]] = [events[j]!, events[i]!];
  }
  let snapshot = -1;
  const delivered = new Set<number>();
  for (const event of events) {
    if (event.kind === 'del') {
      for (const key of event.keys) await h.deleteKey(key);
    } else if (event.kind === 'delta') {
      await h.store.applyAllocationDelta(deltas[event.version]!, event.version);
      delivered.add(event.version);
    } else {
      const result = await h.store.setAllocationSnapshot(truth(event.version), event.version);
      expect(result.applied).toBe(event.version >= snapshot);
      snapshot = Math.max(snapshot, event.version);
    }
    const expected = sum(
      truth(Math.max(snapshot, 0)),
      ...[...delivered].filter((v) => v > snapshot).map((v) => deltas[v]!),
    );
    const cached = await h.store.getAllocation();
    const where = `after ${JSON.stringify(event)}`;
    if (cached.cpus !== null) expect(cached.cpus, where).toBe(expected.cpus);
    if (cached.memoryMb !== null) expect(cached.memoryMb, where).toBe(expected.memoryMb);
    if (cached.gpus !== null) expect(cached.gpus, where).toBe(expected.gpus);
    if (cached.gres !== null) expect(cached.gres, where).toEqual(expected.gres);
  }
  const final = await h.store.setAllocationSnapshot(truth(n), n);
  expect(final.allocation).toEqual(truth(n));
  expect(await h.store.getAllocation()).toEqual(truth(n));
}
