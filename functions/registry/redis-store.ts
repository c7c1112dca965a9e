/**
 * The registry and allocation cache over Redis, one Lua script per method (so one billed command on Upstash).
 * Runtime-neutral: the Redis client is behind `RedisScripts` (ioredis on Node, @upstash/redis on Workers).
 *
 * Layout (contract): `worker:<id>` hash {worker_id, cpus, status, hostname, registered_at, last_heartbeat}
 * with a TTL; `resource:allocated_cpus` string integer. Ours: `registry:workers` sorted set (member = id,
 * score = expiry in ms by Redis's clock), `resource:allocated_cpus:version` (version of the last snapshot
 * applied), `resource:allocated_cpus:epoch` (the Postgres history that version belongs to),
 * `resource:allocated_cpus:deltas` sorted set (score = version, member = `<version>:<delta>`).
 */
import type { WorkerStatus } from '../../db/schema.ts';
import type { RegistryStore, SnapshotOptions, SnapshotResult, WorkerEntry } from '../domain/ports.ts';

/** A Lua script with its SHA-1 (hex), so that it is sent by EVALSHA and only sent whole on NOSCRIPT. */
export interface LuaScript {
  readonly name: string;
  readonly source: string;
  readonly sha: string;
}

/** The one thing the store needs from a Redis client. */
export interface RedisScripts {
  /** EVALSHA script.sha, falling back to EVAL script.source on NOSCRIPT. */
  run(script: LuaScript, keys: string[], args: (string | number)[]): Promise<unknown>;
  ping(): Promise<void>;
}

/** True for Redis's "NOSCRIPT No matching script" error, whatever client wrapped it. */
export function isNoScriptError(error: unknown): boolean {
  return error instanceof Error && /\bNOSCRIPT\b/.test(error.message);
}

/** At most this many deltas are kept for snapshots to replay (the newest ones). */
export const MAX_RECORDED_DELTAS = 10_000;

// Redis's own clock in ms; `redis.call('TIME')` is allowed before writes (effects replication, Redis >= 5).
const NOW_MS = `local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)`;

// KEYS: worker key, index. ARGV: id, cpus, status, hostname, registered_at, last_heartbeat, ttl seconds.
const PUT_WORKER = `${NOW_MS}
local ttl = tonumber(ARGV[7])
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'worker_id', ARGV[1], 'cpus', ARGV[2], 'status', ARGV[3], 'hostname', ARGV[4],
  'registered_at', ARGV[5], 'last_heartbeat', ARGV[6])
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('ZADD', KEYS[2], string.format('%.0f', now + ttl * 1000), ARGV[1])
return 1
`;

// KEYS: worker key, index. ARGV: id, last_heartbeat, ttl seconds, status ('' = keep).
const TOUCH_WORKER = `if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
${NOW_MS}
local ttl = tonumber(ARGV[3])
if ARGV[4] ~= '' then
  redis.call('HSET', KEYS[1], 'last_heartbeat', ARGV[2], 'status', ARGV[4])
else
  redis.call('HSET', KEYS[1], 'last_heartbeat', ARGV[2])
end
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('ZADD', KEYS[2], string.format('%.0f', now + ttl * 1000), ARGV[1])
return 1
`;

// KEYS: worker key. ARGV: status. HSET keeps the key's TTL.
const SET_WORKER_STATUS = `if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[1])
return 1
`;

// KEYS: worker key, index. ARGV: id, registered_at ('' = whatever registration wrote the key).
// Returns 0, removing nothing, when the key holds another registration than the one named.
const REMOVE_WORKER = `if ARGV[2] ~= '' then
  local at = redis.call('HGET', KEYS[1], 'registered_at')
  if at and at ~= ARGV[2] then return 0 end
end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
`;

// KEYS: index. ARGV: worker key prefix (`<keyPrefix>worker:`).
const LIVE_WORKERS = `${NOW_MS}
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], string.format('%.0f', now), '+inf')
local live = {}
for _, id in ipairs(ids) do
  if redis.call('EXISTS', ARGV[1] .. id) == 1 then live[#live + 1] = id end
end
return live
`;

// KEYS: index. ARGV: worker key prefix. Members past their expiry whose key is gone; a member whose key
// still exists (renewed by a script that lost a race, or a clock step) is kept.
const TAKE_EXPIRED_WORKERS = `${NOW_MS}
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. string.format('%.0f', now))
local gone = {}
for _, id in ipairs(ids) do
  if redis.call('EXISTS', ARGV[1] .. id) == 0 then
    redis.call('ZREM', KEYS[1], id)
    gone[#gone + 1] = id
  end
end
return gone
`;

// KEYS: value.
const GET_ALLOCATED = `return redis.call('GET', KEYS[1])
`;

// KEYS: value, snapshot version, deltas. ARGV: delta, version, max recorded deltas.
// Returns 1 applied to the value, 2 recorded only (value key missing), 0 stale, -1 duplicate version.
const APPLY_DELTA = `local snap = redis.call('GET', KEYS[2])
if snap and tonumber(ARGV[2]) <= tonumber(snap) then return 0 end
if redis.call('ZCOUNT', KEYS[3], ARGV[2], ARGV[2]) > 0 then return -1 end
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[2] .. ':' .. ARGV[1])
redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -1 - tonumber(ARGV[3]))
if redis.call('EXISTS', KEYS[1]) == 0 then return 2 end
redis.call('INCRBY', KEYS[1], ARGV[1])
return 1
`;

// KEYS: value, snapshot version, deltas, snapshot epoch. ARGV: allocated, version, epoch ('' = not given),
// replacing ('' = no: the version of a newer snapshot that this one replaces all the same).
// Returns {applied 0/1, previous value or nil, value now or nil, snapshot version now, reset}: reset 1 when the
// epoch differed (another database's history), 2 when a newer snapshot was replaced (Postgres went back);
// a reset drops every recorded delta, which belonged to the other history.
const SET_SNAPSHOT = `local raw = redis.call('GET', KEYS[1])
local previous = false
if raw then previous = tonumber(raw) or false end
local snap = tonumber(redis.call('GET', KEYS[2]) or '')
local epoch = redis.call('GET', KEYS[4])
local version = tonumber(ARGV[2])
local reset = 0
if ARGV[3] ~= '' and epoch and epoch ~= ARGV[3] then
  reset = 1
elseif snap and version < snap then
  if ARGV[4] == '' or tonumber(ARGV[4]) ~= snap then return {0, previous, previous, snap, 0} end
  reset = 2
end
if reset > 0 then
  redis.call('DEL', KEYS[3])
else
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[2])
end
local value = tonumber(ARGV[1])
for _, member in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do
  value = value + tonumber(string.match(member, ':(%-?%d+)$'))
end
redis.call('SET', KEYS[1], string.format('%.0f', value))
redis.call('SET', KEYS[2], ARGV[2])
if ARGV[3] ~= '' then redis.call('SET', KEYS[4], ARGV[3]) end
return {1, previous, value, version, reset}
`;

function script(name: string, source: string, sha: string): LuaScript {
  return Object.freeze({ name, source, sha });
}

/**
 * Every script, with its SHA-1 precomputed (test/registry/adapters.test.ts checks each one, so a script edited
 * without its sha fails the tests; in production a wrong sha would only cost an EVAL after each NOSCRIPT).
 */
export const SCRIPTS = Object.freeze({
  putWorker: script('putWorker', PUT_WORKER, '8ba08d86108b24cd38f8c2346a6fd3fc0f8295ea'),
  touchWorker: script('touchWorker', TOUCH_WORKER, '2fdc842800d36024f419f1e0292240be0b81f187'),
  setWorkerStatus: script('setWorkerStatus', SET_WORKER_STATUS, 'a529e794d6a96cf8efe1ec405b8db203ce10fe09'),
  removeWorker: script('removeWorker', REMOVE_WORKER, '072ca64f4fe3af87e3e1d210b23b98d39349fbc5'),
  liveWorkerIds: script('liveWorkerIds', LIVE_WORKERS, '057e51c58aca7379102fbdf8110b217c208a464b'),
  takeExpiredWorkerIds: script(
    'takeExpiredWorkerIds',
    TAKE_EXPIRED_WORKERS,
    '35744aff2724ac429bf9315b28e03a6e93ba4c18',
  ),
  getAllocatedCpus: script('getAllocatedCpus', GET_ALLOCATED, 'f0e4c575f212a47f6a05898b785b6a9d46baaa55'),
  applyAllocationDelta: script(
    'applyAllocationDelta',
    APPLY_DELTA,
    '0e5a736d4509b743c6e676398943349eb5e49b85',
  ),
  setAllocationSnapshot: script(
    'setAllocationSnapshot',
    SET_SNAPSHOT,
    'ad1c30b20260d1679e7236bcb6e97bad38510eca',
  ),
});

export interface RedisRegistryStoreOptions {
  /** Prepended to every key. '' in production (keys are exactly `worker:<id>`); tests use it to isolate. */
  keyPrefix?: string;
  /** How many of the newest deltas are kept for snapshots to replay; MAX_RECORDED_DELTAS by default. */
  maxRecordedDeltas?: number;
}

/** The keys the store uses, for tests and for operators' tooling. */
export function registryKeys(keyPrefix = '') {
  return {
    workerPrefix: `${keyPrefix}worker:`,
    worker: (id: string) => `${keyPrefix}worker:${id}`,
    index: `${keyPrefix}registry:workers`,
    allocated: `${keyPrefix}resource:allocated_cpus`,
    allocatedVersion: `${keyPrefix}resource:allocated_cpus:version`,
    allocatedDeltas: `${keyPrefix}resource:allocated_cpus:deltas`,
    allocatedEpoch: `${keyPrefix}resource:allocated_cpus:epoch`,
  };
}

export class RedisRegistryStore implements RegistryStore {
  readonly kind = 'redis' as const;
  private readonly keys: ReturnType<typeof registryKeys>;
  private readonly maxRecordedDeltas: number;
  private readonly redis: RedisScripts;

  constructor(redis: RedisScripts, options: RedisRegistryStoreOptions = {}) {
    this.redis = redis;
    this.keys = registryKeys(options.keyPrefix ?? '');
    this.maxRecordedDeltas = checkCap(options.maxRecordedDeltas);
  }

  async putWorker(entry: WorkerEntry, ttlSeconds: number): Promise<void> {
    checkEntry(entry);
    checkTtl(ttlSeconds);
    await this.redis.run(
      SCRIPTS.putWorker,
      [this.keys.worker(entry.worker_id), this.keys.index],
      [
        entry.worker_id,
        String(entry.cpus),
        entry.status,
        entry.hostname,
        entry.registered_at,
        entry.last_heartbeat,
        ttlSeconds,
      ],
    );
  }

  async touchWorker(
    id: string,
    lastHeartbeat: string,
    ttlSeconds: number,
    status?: WorkerStatus,
  ): Promise<boolean> {
    checkId(id);
    checkTtl(ttlSeconds);
    const reply = await this.redis.run(
      SCRIPTS.touchWorker,
      [this.keys.worker(id), this.keys.index],
      [id, lastHeartbeat, ttlSeconds, status ?? ''],
    );
    return toInteger(reply) === 1;
  }

  async setWorkerStatus(id: string, status: WorkerStatus): Promise<boolean> {
    checkId(id);
    const reply = await this.redis.run(SCRIPTS.setWorkerStatus, [this.keys.worker(id)], [status]);
    return toInteger(reply) === 1;
  }

  async removeWorker(id: string, registeredAt?: string): Promise<boolean> {
    checkId(id);
    const reply = await this.redis.run(
      SCRIPTS.removeWorker,
      [this.keys.worker(id), this.keys.index],
      [id, registeredAt ?? ''],
    );
    return toInteger(reply) === 1;
  }

  async liveWorkerIds(): Promise<string[]> {
    const reply = await this.redis.run(SCRIPTS.liveWorkerIds, [this.keys.index], [this.keys.workerPrefix]);
    return toStringArray(reply);
  }

  async takeExpiredWorkerIds(): Promise<string[]> {
    const reply = await this.redis.run(
      SCRIPTS.takeExpiredWorkerIds,
      [this.keys.index],
      [this.keys.workerPrefix],
    );
    return toStringArray(reply);
  }

  async getAllocatedCpus(): Promise<number | null> {
    return toInteger(await this.redis.run(SCRIPTS.getAllocatedCpus, [this.keys.allocated], []));
  }

  async applyAllocationDelta(delta: number, version: number): Promise<void> {
    checkInteger('delta', delta);
    checkVersion(version);
    await this.redis.run(
      SCRIPTS.applyAllocationDelta,
      [this.keys.allocated, this.keys.allocatedVersion, this.keys.allocatedDeltas],
      [String(delta), String(version), this.maxRecordedDeltas],
    );
  }

  async setAllocationSnapshot(
    allocated: number,
    version: number,
    options: SnapshotOptions = {},
  ): Promise<SnapshotResult> {
    checkInteger('allocated', allocated);
    checkVersion(version);
    if (options.replacing !== undefined) checkVersion(options.replacing);
    const reply = await this.redis.run(
      SCRIPTS.setAllocationSnapshot,
      [this.keys.allocated, this.keys.allocatedVersion, this.keys.allocatedDeltas, this.keys.allocatedEpoch],
      [String(allocated), String(version), options.epoch ?? '', options.replacing ?? ''],
    );
    if (!Array.isArray(reply) || reply.length < 5) {
      throw new TypeError(`unexpected reply to setAllocationSnapshot: ${JSON.stringify(reply)}`);
    }
    const applied = toInteger(reply[0]) === 1;
    const previous = toInteger(reply[1]);
    // A stale snapshot while the value key is missing leaves the cache empty: the snapshot's own figure is
    // then the best answer for a caller that is refilling after a miss.
    const value = toInteger(reply[2]) ?? allocated;
    const reset = toInteger(reply[4]);
    return {
      applied,
      previous,
      value,
      version: toInteger(reply[3]) ?? version,
      reset: reset === 1 ? 'epoch' : reset === 2 ? 'version' : null,
    };
  }

  async ping(): Promise<void> {
    await this.redis.ping();
  }
}

/** Argument checks shared with MemoryRegistryStore, so that both stores reject the same calls. */
export function checkEntry(entry: WorkerEntry): void {
  checkId(entry.worker_id);
  if (!Number.isSafeInteger(entry.cpus) || entry.cpus < 0) {
    throw new RangeError(`cpus must be a non-negative integer, got ${entry.cpus}`);
  }
}

export function checkCap(maxRecordedDeltas = MAX_RECORDED_DELTAS): number {
  if (!Number.isSafeInteger(maxRecordedDeltas) || maxRecordedDeltas < 1) {
    throw new RangeError(`maxRecordedDeltas must be a positive integer, got ${maxRecordedDeltas}`);
  }
  return maxRecordedDeltas;
}

export function checkId(id: string): void {
  if (typeof id !== 'string' || id.length === 0) throw new TypeError('worker id must be a non-empty string');
}

export function checkTtl(ttlSeconds: number): void {
  if (!Number.isSafeInteger(ttlSeconds) || ttlSeconds <= 0) {
    throw new RangeError(`ttlSeconds must be a positive integer, got ${ttlSeconds}`);
  }
}

export function checkInteger(name: string, value: number): void {
  if (!Number.isSafeInteger(value)) throw new RangeError(`${name} must be an integer, got ${value}`);
}

export function checkVersion(version: number): void {
  if (!Number.isSafeInteger(version) || version < 0) {
    throw new RangeError(`version must be a non-negative integer, got ${version}`);
  }
}

/** A Redis integer or integer string; null for nil or anything else (a garbled value reads as a miss). */
function toInteger(reply: unknown): number | null {
  if (typeof reply === 'number') return Number.isSafeInteger(reply) ? reply : null;
  if (typeof reply === 'string' && /^-?\d+$/.test(reply)) {
    const n = Number(reply);
    return Number.isSafeInteger(n) ? n : null;
  }
  return null;
}

function toStringArray(reply: unknown): string[] {
  if (!Array.isArray(reply)) throw new TypeError(`expected an array reply, got ${JSON.stringify(reply)}`);
  return reply.map((item) => String(item));
}
