/**
 * The registry and allocation cache over Redis, one Lua script per method (so one billed command on Upstash).
 * Runtime-neutral: the Redis client is behind `RedisScripts` (ioredis on Node, @upstash/redis on Workers).
 *
 * Layout (contract): `worker:<id>` hash {worker_id, cpus, status, hostname, registered_at, last_heartbeat,
 * and ours: memory_mb, gpus, gres, features, partitions} with a TTL; `resource:allocated_cpus` string integer.
 * Ours: `resource:allocated_memory_mb` and `resource:allocated_gpus` string integers, `resource:allocated_gres`
 * hash (gres name -> count, only names with a count); `registry:workers` sorted set (member = id, score =
 * expiry in ms by Redis's clock). The allocation keys are versioned together, by keys named after the CPU one
 * (their names predate the other resources): `resource:allocated_cpus:version` (version of the last snapshot
 * applied), `resource:allocated_cpus:epoch` (the Postgres history that version belongs to),
 * `resource:allocated_cpus:deltas` sorted set (score = version, member = the whole change of that version,
 * `<version>:<memory>:<gpus>:<name>=<n>,...:<cpus>`).
 */
import type { WorkerStatus } from '../../db/schema.ts';
import {
  type AllocationVector,
  type CachedAllocation,
  type QuietState,
  type RegistryStore,
  type SnapshotOptions,
  type SnapshotResult,
  WORKER_RESOURCE_FIELDS,
  type WorkerEntry,
} from '../domain/ports.ts';

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

// KEYS: worker key, index. ARGV: id, cpus, status, hostname, registered_at, last_heartbeat, ttl seconds, then
// name/value pairs of the optional fields given.
const PUT_WORKER = `${NOW_MS}
local ttl = tonumber(ARGV[7])
local fields = {'worker_id', ARGV[1], 'cpus', ARGV[2], 'status', ARGV[3], 'hostname', ARGV[4],
  'registered_at', ARGV[5], 'last_heartbeat', ARGV[6]}
for i = 8, #ARGV - 1, 2 do
  fields[#fields + 1] = ARGV[i]
  fields[#fields + 1] = ARGV[i + 1]
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('ZADD', KEYS[2], string.format('%.0f', now + ttl * 1000), ARGV[1])
redis.call('SET', KEYS[3], string.format('%.0f', now), 'NX')
return 1
`;

// KEYS: index. ARGV: worker key prefix, ttl seconds, then id/last_heartbeat pairs. Returns the ids whose key is gone.
const TOUCH_WORKERS = `${NOW_MS}
local ttl = tonumber(ARGV[2])
local expiry = string.format('%.0f', now + ttl * 1000)
local gone = {}
for i = 3, #ARGV - 1, 2 do
  local key = ARGV[1] .. ARGV[i]
  if redis.call('EXISTS', key) == 1 then
    redis.call('HSET', key, 'last_heartbeat', ARGV[i + 1])
    redis.call('EXPIRE', key, ttl)
    redis.call('ZADD', KEYS[1], expiry, ARGV[i])
  else
    gone[#gone + 1] = ARGV[i]
  end
end
return gone
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

// KEYS: index, since. ARGV: worker key prefix. {live ids, ms the registry has remembered workers}; drops
// expired members whose key is gone, as TAKE_EXPIRED_WORKERS does.
const REAP_VIEW = `${NOW_MS}
redis.call('SET', KEYS[2], string.format('%.0f', now), 'NX')
local since = tonumber(redis.call('GET', KEYS[2]))
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. string.format('%.0f', now))) do
  if redis.call('EXISTS', ARGV[1] .. id) == 0 then redis.call('ZREM', KEYS[1], id) end
end
local live = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], string.format('%.0f', now), '+inf')) do
  if redis.call('EXISTS', ARGV[1] .. id) == 1 then live[#live + 1] = id end
end
return {live, string.format('%.0f', now - since)}
`;

// KEYS: epoch.
const NOTE_ACTIVITY = `return redis.call('INCR', KEYS[1])
`;

// KEYS: epoch.
const ACTIVITY_EPOCH = `return tonumber(redis.call('GET', KEYS[1]) or '0')
`;

// KEYS: epoch, quiet. ARGV: the epoch read before looking, ttl seconds.
const MARK_QUIET = `if (redis.call('GET', KEYS[1]) or '0') ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[1], 'EX', tonumber(ARGV[2]))
return 1
`;

// KEYS: epoch, quiet, index, allocated CPUs. ARGV: worker key prefix.
// {quiet, a worker key expired, allocation 0, live workers, their CPUs}.
const QUIET_STATE = `${NOW_MS}
local quiet = redis.call('GET', KEYS[2])
quiet = quiet ~= false and quiet == (redis.call('GET', KEYS[1]) or '0')
local expired = 0
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', '(' .. string.format('%.0f', now))) do
  if redis.call('EXISTS', ARGV[1] .. id) == 0 then expired = 1 break end
end
local workers, cpus = 0, 0
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], string.format('%.0f', now), '+inf')) do
  local n = redis.call('HGET', ARGV[1] .. id, 'cpus')
  if n then
    workers = workers + 1
    cpus = cpus + (tonumber(n) or 0)
  end
end
return {quiet and 1 or 0, expired, redis.call('GET', KEYS[4]) == '0' and 1 or 0, workers, cpus}
`;

// KEYS: value.
const GET_ALLOCATED = `return redis.call('GET', KEYS[1])
`;

// What the allocation keys hold, {cpus, memory, gpus, gres as a flat name/count list}, false where missing.
// Redis keeps no empty hash: a missing gres hash is an empty one while the CPU key exists.
const READ_ALLOCATION = `local function allocation(cpus, memory, gpus, gres)
  local named = false
  if redis.call('EXISTS', gres) == 1 then
    named = redis.call('HGETALL', gres)
  elseif redis.call('EXISTS', cpus) == 1 then
    named = {}
  end
  return {tonumber(redis.call('GET', cpus) or '') or false, tonumber(redis.call('GET', memory) or '') or false,
    tonumber(redis.call('GET', gpus) or '') or false, named}
end
`;

// KEYS: cpus, memory, gpus, gres.
const GET_ALLOCATION = `${READ_ALLOCATION}
return allocation(KEYS[1], KEYS[2], KEYS[3], KEYS[4])
`;

// KEYS: cpus, snapshot version, deltas, memory, gpus, gres. ARGV: cpus delta, version, max recorded deltas,
// memory delta, gpus delta, then gres name/delta pairs. The change is recorded whole, CPUs last: a script of
// the CPU-only layout (members `<version>:<cpus>`, read by their last `:<n>`) still counts it right while
// a deploy rolls out. Each key that exists gets its part; the gres hash counts as existing whenever the CPU
// key does. Returns 1 applied (CPU key there), 2 recorded only (CPU key missing), 0 stale, -1 duplicate version.
const APPLY_DELTA = `local snap = redis.call('GET', KEYS[2])
if snap and tonumber(ARGV[2]) <= tonumber(snap) then return 0 end
if redis.call('ZCOUNT', KEYS[3], ARGV[2], ARGV[2]) > 0 then return -1 end
local named = {}
for i = 6, #ARGV - 1, 2 do named[#named + 1] = ARGV[i] .. '=' .. ARGV[i + 1] end
redis.call('ZADD', KEYS[3], ARGV[2],
  ARGV[2] .. ':' .. ARGV[4] .. ':' .. ARGV[5] .. ':' .. table.concat(named, ',') .. ':' .. ARGV[1])
redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -1 - tonumber(ARGV[3]))
local cpus = redis.call('EXISTS', KEYS[1]) == 1
if cpus then redis.call('INCRBY', KEYS[1], ARGV[1]) end
if redis.call('EXISTS', KEYS[4]) == 1 then redis.call('INCRBY', KEYS[4], ARGV[4]) end
if redis.call('EXISTS', KEYS[5]) == 1 then redis.call('INCRBY', KEYS[5], ARGV[5]) end
if cpus or redis.call('EXISTS', KEYS[6]) == 1 then
  for i = 6, #ARGV - 1, 2 do
    if redis.call('HINCRBY', KEYS[6], ARGV[i], ARGV[i + 1]) == 0 then redis.call('HDEL', KEYS[6], ARGV[i]) end
  end
end
if cpus then return 1 end
return 2
`;

// KEYS: cpus, snapshot version, deltas, snapshot epoch, memory, gpus, gres. ARGV: cpus, version, epoch ('' =
// not given), replacing ('' = no: the version of a newer snapshot that this one replaces all the same),
// memory, gpus, then gres name/count pairs.
// Returns {applied 0/1, snapshot version now, reset, before, now} (before and now as READ_ALLOCATION's): reset
// 1 when the epoch differed (another database's history), 2 when a newer snapshot was replaced (Postgres went
// back); a reset drops every recorded delta, which belonged to the other history.
const SET_SNAPSHOT = `${READ_ALLOCATION}
local before = allocation(KEYS[1], KEYS[5], KEYS[6], KEYS[7])
local snap = tonumber(redis.call('GET', KEYS[2]) or '')
local epoch = redis.call('GET', KEYS[4])
local version = tonumber(ARGV[2])
local reset = 0
if ARGV[3] ~= '' and epoch and epoch ~= ARGV[3] then
  reset = 1
elseif snap and version < snap then
  if ARGV[4] == '' or tonumber(ARGV[4]) ~= snap then return {0, snap, 0, before, before} end
  reset = 2
end
if reset > 0 then
  redis.call('DEL', KEYS[3])
else
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[2])
end
local cpus, memory, gpus = tonumber(ARGV[1]), tonumber(ARGV[5]), tonumber(ARGV[6])
local gres = {}
for i = 7, #ARGV - 1, 2 do gres[ARGV[i]] = tonumber(ARGV[i + 1]) end
for _, member in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do
  local m, g, named, c = string.match(member, '^%d+:(%-?%d+):(%-?%d+):([^:]*):(%-?%d+)$')
  if c then
    memory = memory + tonumber(m)
    gpus = gpus + tonumber(g)
    for name, n in string.gmatch(named, '([^,=]+)=(%-?%d+)') do gres[name] = (gres[name] or 0) + tonumber(n) end
  else
    c = string.match(member, ':(%-?%d+)$')
  end
  cpus = cpus + tonumber(c)
end
local names = {}
for name, n in pairs(gres) do
  if n ~= 0 then names[#names + 1] = name end
end
table.sort(names)
local flat = {}
for _, name in ipairs(names) do
  flat[#flat + 1] = name
  flat[#flat + 1] = string.format('%.0f', gres[name])
end
redis.call('SET', KEYS[1], string.format('%.0f', cpus))
redis.call('SET', KEYS[5], string.format('%.0f', memory))
redis.call('SET', KEYS[6], string.format('%.0f', gpus))
redis.call('DEL', KEYS[7])
if #flat > 0 then redis.call('HSET', KEYS[7], unpack(flat)) end
redis.call('SET', KEYS[2], ARGV[2])
if ARGV[3] ~= '' then redis.call('SET', KEYS[4], ARGV[3]) end
return {1, version, reset, before, {cpus, memory, gpus, flat}}
`;

function script(name: string, source: string, sha: string): LuaScript {
  return Object.freeze({ name, source, sha });
}

/**
 * Every script, with its SHA-1 precomputed (test/registry/adapters.test.ts checks each one, so a script edited
 * without its sha fails the tests; in production a wrong sha would only cost an EVAL after each NOSCRIPT).
 */
export const SCRIPTS = Object.freeze({
  putWorker: script('putWorker', PUT_WORKER, 'a79c7ab4ebd8d4a07e591459720c8249183f25a6'),
  touchWorker: script('touchWorker', TOUCH_WORKER, '2fdc842800d36024f419f1e0292240be0b81f187'),
  touchWorkers: script('touchWorkers', TOUCH_WORKERS, '0a91ea10ae2eda90e7c0e0cd47c37764f1924dc3'),
  reapView: script('reapView', REAP_VIEW, '6d0efa5c3e172c0e7c568d30db6fe81f36ea13c5'),
  noteActivity: script('noteActivity', NOTE_ACTIVITY, '5cb1975929472492c39b214c114b58b40c94f7f4'),
  activityEpoch: script('activityEpoch', ACTIVITY_EPOCH, '1fbe895f9902c9e8f2caf8531b11995341d53fe8'),
  markQuiet: script('markQuiet', MARK_QUIET, '979186b3633212b95a33319e573118ddca23ee6a'),
  quietState: script('quietState', QUIET_STATE, '6b354828651523ef92c642bac3dab56141aa903a'),
  setWorkerStatus: script('setWorkerStatus', SET_WORKER_STATUS, 'a529e794d6a96cf8efe1ec405b8db203ce10fe09'),
  removeWorker: script('removeWorker', REMOVE_WORKER, '072ca64f4fe3af87e3e1d210b23b98d39349fbc5'),
  liveWorkerIds: script('liveWorkerIds', LIVE_WORKERS, '057e51c58aca7379102fbdf8110b217c208a464b'),
  takeExpiredWorkerIds: script(
    'takeExpiredWorkerIds',
    TAKE_EXPIRED_WORKERS,
    '35744aff2724ac429bf9315b28e03a6e93ba4c18',
  ),
  getAllocatedCpus: script('getAllocatedCpus', GET_ALLOCATED, 'f0e4c575f212a47f6a05898b785b6a9d46baaa55'),
  getAllocation: script('getAllocation', GET_ALLOCATION, 'e16bff54e220248f0dec0fc0759941c3ce37a953'),
  applyAllocationDelta: script(
    'applyAllocationDelta',
    APPLY_DELTA,
    'e27fee79b159dfbab5ba1208a9fbe7c50c145cda',
  ),
  setAllocationSnapshot: script(
    'setAllocationSnapshot',
    SET_SNAPSHOT,
    'c7ad16fa645b118ad0861b61e3734d1fdb9ce6fd',
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
    since: `${keyPrefix}registry:since`,
    activityEpoch: `${keyPrefix}maintenance:epoch`,
    quiet: `${keyPrefix}maintenance:quiet`,
    allocated: `${keyPrefix}resource:allocated_cpus`,
    allocatedMemory: `${keyPrefix}resource:allocated_memory_mb`,
    allocatedGpus: `${keyPrefix}resource:allocated_gpus`,
    allocatedGres: `${keyPrefix}resource:allocated_gres`,
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
    const resources = WORKER_RESOURCE_FIELDS.flatMap((field) =>
      entry[field] === undefined ? [] : [field, String(entry[field])],
    );
    await this.redis.run(
      SCRIPTS.putWorker,
      [this.keys.worker(entry.worker_id), this.keys.index, this.keys.since],
      [
        entry.worker_id,
        String(entry.cpus),
        entry.status,
        entry.hostname,
        entry.registered_at,
        entry.last_heartbeat,
        ttlSeconds,
        ...resources,
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

  async touchWorkers(
    entries: readonly { id: string; lastHeartbeat: string }[],
    ttlSeconds: number,
  ): Promise<string[]> {
    checkTtl(ttlSeconds);
    if (entries.length === 0) return [];
    for (const entry of entries) checkId(entry.id);
    const reply = await this.redis.run(
      SCRIPTS.touchWorkers,
      [this.keys.index],
      [this.keys.workerPrefix, ttlSeconds, ...entries.flatMap((e) => [e.id, e.lastHeartbeat])],
    );
    return toStringArray(reply);
  }

  async reapView(): Promise<{ live: string[]; memoryAgeMs: number }> {
    const reply = await this.redis.run(
      SCRIPTS.reapView,
      [this.keys.index, this.keys.since],
      [this.keys.workerPrefix],
    );
    const [live, age] = Array.isArray(reply) ? reply : [];
    return { live: toStringArray(live), memoryAgeMs: Number(age) || 0 };
  }

  async noteActivity(): Promise<void> {
    await this.redis.run(SCRIPTS.noteActivity, [this.keys.activityEpoch], []);
  }

  async activityEpoch(): Promise<number> {
    return toInteger(await this.redis.run(SCRIPTS.activityEpoch, [this.keys.activityEpoch], [])) ?? 0;
  }

  async markQuiet(epoch: number, ttlSeconds: number): Promise<boolean> {
    checkTtl(ttlSeconds);
    const reply = await this.redis.run(
      SCRIPTS.markQuiet,
      [this.keys.activityEpoch, this.keys.quiet],
      [String(epoch), ttlSeconds],
    );
    return toInteger(reply) === 1;
  }

  async quietState(): Promise<QuietState> {
    const reply = await this.redis.run(
      SCRIPTS.quietState,
      [this.keys.activityEpoch, this.keys.quiet, this.keys.index, this.keys.allocated],
      [this.keys.workerPrefix],
    );
    const [quiet, expired, empty, workers, cpus] = Array.isArray(reply) ? reply.map(Number) : [];
    return {
      quiet: quiet === 1,
      expiredWorkers: expired === 1,
      allocationEmpty: empty === 1,
      liveWorkers: workers ?? 0,
      liveCpus: cpus ?? 0,
    };
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

  async getAllocation(): Promise<CachedAllocation> {
    const reply = await this.redis.run(
      SCRIPTS.getAllocation,
      [this.keys.allocated, this.keys.allocatedMemory, this.keys.allocatedGpus, this.keys.allocatedGres],
      [],
    );
    return toCachedAllocation(reply, 'getAllocation');
  }

  async applyAllocationDelta(delta: number | Partial<AllocationVector>, version: number): Promise<void> {
    const change = allocationVector(delta);
    checkVersion(version);
    await this.redis.run(
      SCRIPTS.applyAllocationDelta,
      [
        this.keys.allocated,
        this.keys.allocatedVersion,
        this.keys.allocatedDeltas,
        this.keys.allocatedMemory,
        this.keys.allocatedGpus,
        this.keys.allocatedGres,
      ],
      [
        String(change.cpus),
        String(version),
        this.maxRecordedDeltas,
        String(change.memoryMb),
        String(change.gpus),
        ...Object.entries(change.gres).flatMap(([name, n]) => [name, String(n)]),
      ],
    );
  }

  async setAllocationSnapshot(
    allocated: number | AllocationVector,
    version: number,
    options: SnapshotOptions = {},
  ): Promise<SnapshotResult> {
    const snapshot = allocationVector(allocated);
    checkVersion(version);
    if (options.replacing !== undefined) checkVersion(options.replacing);
    const reply = await this.redis.run(
      SCRIPTS.setAllocationSnapshot,
      [
        this.keys.allocated,
        this.keys.allocatedVersion,
        this.keys.allocatedDeltas,
        this.keys.allocatedEpoch,
        this.keys.allocatedMemory,
        this.keys.allocatedGpus,
        this.keys.allocatedGres,
      ],
      [
        String(snapshot.cpus),
        String(version),
        options.epoch ?? '',
        options.replacing ?? '',
        String(snapshot.memoryMb),
        String(snapshot.gpus),
        ...Object.entries(snapshot.gres).flatMap(([name, n]) => [name, String(n)]),
      ],
    );
    if (!Array.isArray(reply) || reply.length < 5) {
      throw new TypeError(`unexpected reply to setAllocationSnapshot: ${JSON.stringify(reply)}`);
    }
    const applied = toInteger(reply[0]) === 1;
    const reset = toInteger(reply[2]);
    const previousAllocation = toCachedAllocation(reply[3], 'setAllocationSnapshot');
    // A stale snapshot while a key is missing leaves that key missing: the snapshot's own figure is then the
    // best answer for a caller that is refilling after a miss.
    const allocation = orSnapshot(toCachedAllocation(reply[4], 'setAllocationSnapshot'), snapshot);
    return {
      applied,
      previous: previousAllocation.cpus,
      value: allocation.cpus,
      previousAllocation,
      allocation,
      version: toInteger(reply[1]) ?? version,
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
  if (entry.memory_mb !== undefined && (!Number.isSafeInteger(entry.memory_mb) || entry.memory_mb < 0)) {
    throw new RangeError(`memory_mb must be a non-negative integer, got ${entry.memory_mb}`);
  }
}

/**
 * The names agents may give generic resources (the register request's): never `:`, `,` or `=`, which the
 * recorded deltas use as separators.
 */
const GRES_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

/**
 * A whole allocation vector from a CPU count or a partial one, checked, with the gres names sorted and the
 * zero counts left out (so that both stores record and compare the same thing).
 */
export function allocationVector(value: number | Partial<AllocationVector>): AllocationVector {
  const given = typeof value === 'number' ? { cpus: value } : value;
  const vector = { cpus: given.cpus ?? 0, memoryMb: given.memoryMb ?? 0, gpus: given.gpus ?? 0 };
  checkInteger('cpus', vector.cpus);
  checkInteger('memoryMb', vector.memoryMb);
  checkInteger('gpus', vector.gpus);
  const gres: Record<string, number> = {};
  for (const name of Object.keys(given.gres ?? {}).sort()) {
    if (!GRES_NAME.test(name)) throw new RangeError(`not a gres name: ${JSON.stringify(name)}`);
    const n = given.gres?.[name] ?? 0;
    checkInteger(`gres ${name}`, n);
    if (n !== 0) gres[name] = n;
  }
  return { ...vector, gres };
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

/** READ_ALLOCATION's reply: {cpus, memory, gpus, flat gres list}, nil where a key is missing. */
function toCachedAllocation(reply: unknown, method: string): CachedAllocation {
  if (!Array.isArray(reply) || reply.length < 4) {
    throw new TypeError(`unexpected reply to ${method}: ${JSON.stringify(reply)}`);
  }
  const named = reply[3];
  let gres: Record<string, number> | null = null;
  if (Array.isArray(named)) {
    gres = {};
    for (let i = 0; i + 1 < named.length; i += 2) {
      const n = toInteger(named[i + 1]);
      if (n !== null && n !== 0) gres[String(named[i])] = n;
    }
  }
  return { cpus: toInteger(reply[0]), memoryMb: toInteger(reply[1]), gpus: toInteger(reply[2]), gres };
}

/** `cached`, with `snapshot`'s figure wherever a key is missing. */
export function orSnapshot(cached: CachedAllocation, snapshot: AllocationVector): AllocationVector {
  return {
    cpus: cached.cpus ?? snapshot.cpus,
    memoryMb: cached.memoryMb ?? snapshot.memoryMb,
    gpus: cached.gpus ?? snapshot.gpus,
    gres: cached.gres ?? snapshot.gres,
  };
}

function toStringArray(reply: unknown): string[] {
  if (!Array.isArray(reply)) throw new TypeError(`expected an array reply, got ${JSON.stringify(reply)}`);
  return reply.map((item) => String(item));
}
