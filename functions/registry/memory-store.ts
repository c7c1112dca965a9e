/**
 * The registry and allocation cache in process memory, for the zero-setup local cluster and for tests: the
 * semantics of RedisRegistryStore (see redis-store.ts) with Maps and an injected clock. TTLs are honoured
 * lazily, as Redis does on access: a key whose expiry time has passed no longer exists.
 */
import type { WorkerStatus } from '../../db/schema.ts';
import type {
  AllocationVector,
  CachedAllocation,
  QuietState,
  RegistryStore,
  SnapshotOptions,
  SnapshotResult,
  WorkerEntry,
} from '../domain/ports.ts';
import {
  allocationVector,
  checkCap,
  checkEntry,
  checkId,
  checkTtl,
  checkVersion,
  orSnapshot,
} from './redis-store.ts';

export interface MemoryRegistryStoreOptions {
  /** Milliseconds since the epoch; Date.now by default. The stand-in for Redis's own clock. */
  now?: () => number;
  /** How many of the newest deltas are kept for snapshots to replay; MAX_RECORDED_DELTAS by default. */
  maxRecordedDeltas?: number;
}

interface StoredWorker {
  fields: WorkerEntry;
  /** Key expiry (ms). */
  expiresAt: number;
}

export class MemoryRegistryStore implements RegistryStore {
  readonly kind = 'memory' as const;
  private readonly now: () => number;
  private readonly maxRecordedDeltas: number;
  /** `worker:<id>` keys. */
  private readonly workers = new Map<string, StoredWorker>();
  /** `registry:workers`: id -> expiry (ms). */
  private readonly index = new Map<string, number>();
  /** `registry:since` (ms). */
  private since: number | null = null;
  /** `maintenance:epoch`. */
  private epoch_ = 0;
  /** `maintenance:quiet`: the epoch it was set at, and its expiry (ms). */
  private quiet: { epoch: number; expiresAt: number } | null = null;
  /** `resource:allocated_cpus`. */
  private allocated: number | null = null;
  /** `resource:allocated_memory_mb`. */
  private allocatedMemoryMb: number | null = null;
  /** `resource:allocated_gpus`. */
  private allocatedGpus: number | null = null;
  /** `resource:allocated_gres`, only names with a count (empty: the hash does not exist, as in Redis). */
  private allocatedGres = new Map<string, number>();
  /** `resource:allocated_cpus:version`. */
  private snapshotVersion: number | null = null;
  /** `resource:allocated_cpus:epoch`. */
  private epoch: string | null = null;
  /** `resource:allocated_cpus:deltas`, sorted by version ascending, versions unique. */
  private deltas: { version: number; delta: AllocationVector }[] = [];

  constructor(options: MemoryRegistryStoreOptions = {}) {
    this.now = options.now ?? Date.now;
    this.maxRecordedDeltas = checkCap(options.maxRecordedDeltas);
  }

  async putWorker(entry: WorkerEntry, ttlSeconds: number): Promise<void> {
    checkEntry(entry);
    checkTtl(ttlSeconds);
    const expiresAt = this.now() + ttlSeconds * 1000;
    this.workers.set(entry.worker_id, { fields: { ...entry }, expiresAt });
    this.index.set(entry.worker_id, expiresAt);
    this.since ??= this.now();
  }

  async touchWorkers(
    entries: readonly { id: string; lastHeartbeat: string }[],
    ttlSeconds: number,
  ): Promise<string[]> {
    checkTtl(ttlSeconds);
    for (const entry of entries) checkId(entry.id);
    const gone: string[] = [];
    for (const entry of entries) {
      if (!(await this.touchWorker(entry.id, entry.lastHeartbeat, ttlSeconds))) gone.push(entry.id);
    }
    return gone;
  }

  async reapView(): Promise<{ live: string[]; memoryAgeMs: number }> {
    this.since ??= this.now();
    await this.takeExpiredWorkerIds();
    return { live: await this.liveWorkerIds(), memoryAgeMs: this.now() - this.since };
  }

  async noteActivity(): Promise<void> {
    this.epoch_++;
  }

  async activityEpoch(): Promise<number> {
    return this.epoch_;
  }

  async markQuiet(epoch: number, ttlSeconds: number): Promise<boolean> {
    checkTtl(ttlSeconds);
    if (epoch !== this.epoch_) return false;
    this.quiet = { epoch, expiresAt: this.now() + ttlSeconds * 1000 };
    return true;
  }

  async quietState(): Promise<QuietState> {
    const now = this.now();
    const quiet = this.quiet !== null && this.quiet.expiresAt > now && this.quiet.epoch === this.epoch_;
    const expiredWorkers = this.indexByScore().some(
      ([id, score]) => score < now && this.liveKey(id) === undefined,
    );
    const live = (await this.liveWorkerIds()).map((id) => this.liveKey(id)?.fields.cpus ?? 0);
    return {
      quiet,
      expiredWorkers,
      allocationEmpty: this.allocated === 0,
      liveWorkers: live.length,
      liveCpus: live.reduce((a, b) => a + Number(b), 0),
    };
  }

  async touchWorker(
    id: string,
    lastHeartbeat: string,
    ttlSeconds: number,
    status?: WorkerStatus,
  ): Promise<boolean> {
    checkId(id);
    checkTtl(ttlSeconds);
    const worker = this.liveKey(id);
    if (!worker) return false;
    worker.fields.last_heartbeat = lastHeartbeat;
    if (status !== undefined) worker.fields.status = status;
    worker.expiresAt = this.now() + ttlSeconds * 1000;
    this.index.set(id, worker.expiresAt);
    return true;
  }

  async setWorkerStatus(id: string, status: WorkerStatus): Promise<boolean> {
    checkId(id);
    const worker = this.liveKey(id);
    if (!worker) return false;
    worker.fields.status = status;
    return true;
  }

  async removeWorker(id: string, registeredAt?: string): Promise<boolean> {
    checkId(id);
    const worker = this.liveKey(id);
    if (registeredAt !== undefined && worker && worker.fields.registered_at !== registeredAt) return false;
    this.workers.delete(id);
    this.index.delete(id);
    return true;
  }

  async liveWorkerIds(): Promise<string[]> {
    const now = this.now();
    return this.indexByScore()
      .filter(([id, score]) => score >= now && this.liveKey(id) !== undefined)
      .map(([id]) => id);
  }

  async takeExpiredWorkerIds(): Promise<string[]> {
    const now = this.now();
    const gone: string[] = [];
    for (const [id, score] of this.indexByScore()) {
      if (score < now && this.liveKey(id) === undefined) {
        this.index.delete(id);
        gone.push(id);
      }
    }
    return gone;
  }

  async getAllocatedCpus(): Promise<number | null> {
    return this.allocated;
  }

  async getAllocation(): Promise<CachedAllocation> {
    return this.readAllocation();
  }

  async applyAllocationDelta(delta: number | Partial<AllocationVector>, version: number): Promise<void> {
    const change = allocationVector(delta);
    checkVersion(version);
    if (this.snapshotVersion !== null && version <= this.snapshotVersion) return;
    const at = this.deltaIndex(version);
    if (this.deltas[at]?.version === version) return; // a version is counted once
    this.deltas.splice(at, 0, { version, delta: change });
    if (this.deltas.length > this.maxRecordedDeltas) {
      this.deltas.splice(0, this.deltas.length - this.maxRecordedDeltas);
    }
    // Each key that exists gets its part; the gres hash counts as existing whenever the CPU key does.
    const gresExists = this.allocated !== null || this.allocatedGres.size > 0;
    if (this.allocated !== null) this.allocated += change.cpus;
    if (this.allocatedMemoryMb !== null) this.allocatedMemoryMb += change.memoryMb;
    if (this.allocatedGpus !== null) this.allocatedGpus += change.gpus;
    if (gresExists) addGres(this.allocatedGres, change.gres);
  }

  async setAllocationSnapshot(
    allocated: number | AllocationVector,
    version: number,
    options: SnapshotOptions = {},
  ): Promise<SnapshotResult> {
    const snapshot = allocationVector(allocated);
    checkVersion(version);
    if (options.replacing !== undefined) checkVersion(options.replacing);
    const previousAllocation = this.readAllocation();
    const previous = previousAllocation.cpus;
    let reset: SnapshotResult['reset'] = null;
    if (options.epoch !== undefined && this.epoch !== null && this.epoch !== options.epoch) {
      reset = 'epoch';
    } else if (this.snapshotVersion !== null && version < this.snapshotVersion) {
      if (options.replacing !== this.snapshotVersion) {
        const allocation = orSnapshot(previousAllocation, snapshot);
        return {
          applied: false,
          previous,
          value: allocation.cpus,
          previousAllocation,
          allocation,
          version: this.snapshotVersion,
          reset: null,
        };
      }
      reset = 'version';
    }
    this.deltas = reset ? [] : this.deltas.filter((d) => d.version > version);
    const gres = new Map<string, number>();
    addGres(gres, snapshot.gres);
    let { cpus, memoryMb, gpus } = snapshot;
    for (const { delta } of this.deltas) {
      cpus += delta.cpus;
      memoryMb += delta.memoryMb;
      gpus += delta.gpus;
      addGres(gres, delta.gres);
    }
    this.allocated = cpus;
    this.allocatedMemoryMb = memoryMb;
    this.allocatedGpus = gpus;
    this.allocatedGres = new Map([...gres].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
    this.snapshotVersion = version;
    if (options.epoch !== undefined) this.epoch = options.epoch;
    const allocation = { cpus, memoryMb, gpus, gres: Object.fromEntries(this.allocatedGres) };
    return { applied: true, previous, value: cpus, previousAllocation, allocation, version, reset };
  }

  async ping(): Promise<void> {}

  /**
   * Deletes a key as `redis-cli DEL` would (`worker:<id>`, `resource:allocated_cpus`, ...): for tests and
   * for the local cluster's runbook. Returns whether it existed.
   */
  deleteKey(key: string): boolean {
    if (key.startsWith('worker:')) {
      const id = key.slice('worker:'.length);
      const existed = this.liveKey(id) !== undefined;
      this.workers.delete(id);
      return existed;
    }
    switch (key) {
      case 'registry:workers': {
        const existed = this.index.size > 0;
        this.index.clear();
        return existed;
      }
      case 'resource:allocated_cpus': {
        const existed = this.allocated !== null;
        this.allocated = null;
        return existed;
      }
      case 'resource:allocated_memory_mb': {
        const existed = this.allocatedMemoryMb !== null;
        this.allocatedMemoryMb = null;
        return existed;
      }
      case 'resource:allocated_gpus': {
        const existed = this.allocatedGpus !== null;
        this.allocatedGpus = null;
        return existed;
      }
      case 'resource:allocated_gres': {
        const existed = this.allocatedGres.size > 0;
        this.allocatedGres.clear();
        return existed;
      }
      case 'resource:allocated_cpus:version': {
        const existed = this.snapshotVersion !== null;
        this.snapshotVersion = null;
        return existed;
      }
      case 'resource:allocated_cpus:epoch': {
        const existed = this.epoch !== null;
        this.epoch = null;
        return existed;
      }
      case 'resource:allocated_cpus:deltas': {
        const existed = this.deltas.length > 0;
        this.deltas = [];
        return existed;
      }
      default:
        return false;
    }
  }

  /** What `HGETALL worker:<id>` and `PTTL` would show, or null when the key is gone. */
  inspectWorker(id: string): { fields: WorkerEntry; ttlMs: number } | null {
    const worker = this.liveKey(id);
    return worker ? { fields: { ...worker.fields }, ttlMs: worker.expiresAt - this.now() } : null;
  }

  /** What GET_ALLOCATION in redis-store.ts reads. */
  private readAllocation(): CachedAllocation {
    const gresExists = this.allocated !== null || this.allocatedGres.size > 0;
    return {
      cpus: this.allocated,
      memoryMb: this.allocatedMemoryMb,
      gpus: this.allocatedGpus,
      gres: gresExists ? Object.fromEntries(this.allocatedGres) : null,
    };
  }

  /** The `worker:<id>` key if it has not expired; drops it lazily if it has. */
  private liveKey(id: string): StoredWorker | undefined {
    const worker = this.workers.get(id);
    if (!worker) return undefined;
    if (worker.expiresAt < this.now()) {
      // Redis deletes a key once the clock is past its expiry time
      this.workers.delete(id);
      return undefined;
    }
    return worker;
  }

  /** Index entries by score, then id (Redis's sorted-set order). */
  private indexByScore(): [string, number][] {
    return [...this.index].sort(([a, x], [b, y]) => x - y || (a < b ? -1 : a > b ? 1 : 0));
  }

  /** Position of `version` in the sorted delta list, or where it would go. */
  private deltaIndex(version: number): number {
    let lo = 0;
    let hi = this.deltas.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((this.deltas[mid]?.version ?? 0) < version) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
}

/** HINCRBY of each name, dropping the names that reach zero (as APPLY_DELTA's HDEL does). */
function addGres(into: Map<string, number>, change: Record<string, number>): void {
  for (const [name, n] of Object.entries(change)) {
    const total = (into.get(name) ?? 0) + n;
    if (total === 0) into.delete(name);
    else into.set(name, total);
  }
}
