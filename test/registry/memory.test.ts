import { describe, expect, it } from 'vitest';
import { MemoryRegistryStore } from '../../functions/registry/memory-store.ts';
import { type RegistryHarness, registryContract, workerEntry } from './contract.ts';

function memoryHarness(
  options: { maxRecordedDeltas?: number } = {},
): RegistryHarness & { store: MemoryRegistryStore } {
  let now = Date.UTC(2025, 10, 11, 10, 0, 0);
  const store = new MemoryRegistryStore({ now: () => now, ...options });
  return {
    store,
    async deleteKey(key) {
      store.deleteKey(key);
    },
    async inspectWorker(id) {
      const seen = store.inspectWorker(id);
      if (!seen) return null;
      return {
        fields: Object.fromEntries(Object.entries(seen.fields).map(([k, v]) => [k, String(v)])),
        ttlMs: seen.ttlMs,
      };
    },
    async elapse(ms) {
      now += ms;
    },
    async cleanup() {},
  };
}

registryContract('MemoryRegistryStore', async (options) => memoryHarness(options));

describe('MemoryRegistryStore specifics', () => {
  it('reports kind memory', () => {
    expect(new MemoryRegistryStore().kind).toBe('memory');
  });

  it('expires exactly as Redis does: a key lives until the clock is past its expiry time', async () => {
    const h = memoryHarness();
    await h.store.putWorker(workerEntry('w1'), 60);
    await h.elapse(60_000);
    expect(await h.store.liveWorkerIds()).toEqual(['w1']);
    expect(await h.store.takeExpiredWorkerIds()).toEqual([]);
    await h.elapse(1);
    expect(await h.store.liveWorkerIds()).toEqual([]);
    expect(await h.store.takeExpiredWorkerIds()).toEqual(['w1']);
  });

  it('keeps a TTL renewed by heartbeats alive past the first TTL', async () => {
    const h = memoryHarness();
    await h.store.putWorker(workerEntry('w1'), 60);
    for (let i = 0; i < 10; i++) {
      await h.elapse(30_000);
      expect(await h.store.touchWorker('w1', `beat-${i}`, 60)).toBe(true);
    }
    expect(await h.store.liveWorkerIds()).toEqual(['w1']);
    await h.elapse(60_001);
    expect(await h.store.touchWorker('w1', 'late', 60)).toBe(false);
    expect(await h.store.takeExpiredWorkerIds()).toEqual(['w1']);
  });

  it('keeps the 10,000 newest deltas by default', async () => {
    const store = new MemoryRegistryStore();
    for (let version = 1; version <= 10_050; version++) await store.applyAllocationDelta(1, version);
    expect(await store.setAllocationSnapshot(0, 0)).toMatchObject({ value: 10_000 });
  });
});
