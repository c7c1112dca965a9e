/**
 * The Worker's side of the agents' push channel (the Durable Object is functions/channel/agent-channel-do.ts):
 * which shard holds a worker's socket, handing a validated upgrade to that shard, and pushing wake-ups to it.
 */
import type { Assignment } from '../../agent/src/protocol.ts';
import { BARE_WAKE, wakeFrame } from '../domain/channel.ts';
import type { ChannelPort, Logger, WorkNotifier } from '../domain/ports.ts';
import type { DurableObjectNamespace, DurableObjectStub } from './workerd-types.ts';

/** The internal origin of requests to the object (never leaves the runtime). */
const OBJECT_ORIGIN = 'https://agent-channel';

/** 32-bit FNV-1a of the UTF-8 bytes of `text`. */
export function fnv1a(text: string): number {
  let hash = 0x811c9dc5;
  for (const byte of new TextEncoder().encode(text)) {
    hash ^= byte;
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash >>> 0;
}

/** The shard (0 .. shards-1) whose object holds `workerId`'s socket. */
export function channelShard(workerId: string, shards: number): number {
  return fnv1a(workerId) % shards;
}

function shardStub(namespace: DurableObjectNamespace, shard: number): DurableObjectStub {
  return namespace.get(namespace.idFromName(`agents-${shard}`));
}

/** The Workers ChannelPort: the upgrade (validated by the route) goes to the worker's shard, which answers 101. */
export function createWorkersChannel(namespace: DurableObjectNamespace, shards: number): ChannelPort {
  return {
    accept(request, { workerId, session, generation }) {
      const url = new URL('/accept', OBJECT_ORIGIN);
      url.searchParams.set('worker_id', workerId);
      url.searchParams.set('session', session);
      url.searchParams.set('generation', String(generation));
      return shardStub(namespace, channelShard(workerId, shards)).fetch(url.toString(), {
        headers: request.headers,
      });
    },
  };
}

/**
 * One invocation's notifier: the isolate's (which wakes long-polling claims in this isolate, as before)
 * plus a push to the channel. The worker ids notified in one turn of the event loop (a scheduling pass
 * notifies every worker it placed on in one loop) go out as ONE request per shard to the object's /notify,
 * `{"workers": [ids], "jobs": {id: [assignments]}}`, made through `defer` (waitUntil) so that it outlives
 * the response. A worker's assignments go in `jobs` when its wake can carry them (wakeFrame); a worker also
 * notified without assignments in the same turn (a cancel, a drain) gets a bare wake, whose claim brings
 * everything.
 */
export function withChannelPush(
  local: WorkNotifier,
  namespace: DurableObjectNamespace,
  shards: number,
  defer: (work: Promise<unknown>) => void,
  logger: Logger,
): WorkNotifier {
  /** Per shard: worker id -> the assignments its wake carries, or null for a bare wake. */
  let batch: Map<number, Map<string, Assignment[] | null>> | undefined;
  const flush = () => {
    const due = batch;
    batch = undefined;
    if (!due) return;
    for (const [shard, ids] of due) {
      defer(
        shardStub(namespace, shard)
          .fetch(`${OBJECT_ORIGIN}/notify`, {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: JSON.stringify({
              workers: [...ids.keys()],
              jobs: Object.fromEntries([...ids].filter(([, jobs]) => jobs !== null)),
            }),
          })
          .then(async (res) => {
            await res.body?.cancel();
            if (!res.ok) throw new Error(`channel shard ${shard} answered ${res.status}`);
          })
          .catch((error: unknown) =>
            // A lost push costs latency only: the agent's catch-up claim and the backstop recover it.
            logger.warn('Channel push failed', {
              shard,
              error: error instanceof Error ? error.message : String(error),
            }),
          ),
      );
    }
  };
  return {
    notify(workerId, jobs) {
      local.notify(workerId);
      if (!batch) {
        batch = new Map();
        queueMicrotask(flush);
      }
      const shard = channelShard(workerId, shards);
      let ids = batch.get(shard);
      if (!ids) {
        ids = new Map();
        batch.set(shard, ids);
      }
      const before = ids.get(workerId);
      const carried = jobs?.length && before !== null ? [...(before ?? []), ...jobs] : null;
      ids.set(workerId, carried && wakeFrame(carried) !== BARE_WAKE ? carried : null);
    },
    wait: local.wait,
  };
}

/** What each object counts when CONDUCTOR_COUNT_EVENTS is 1 (see AgentChannel). */
export interface ChannelStats {
  /** fetches: upgrades, /notify (the stats reads themselves are not counted). */
  requests: number;
  /** webSocketMessage calls (pings answered by the auto-response never reach the object). */
  messages: number;
  /** webSocketClose / webSocketError calls. */
  closes: number;
  alarms: number;
  /** Sum of the handlers' wall time (ms; workerd's clock moves only across I/O). */
  activeMs: number;
  /** Constructor runs that served a counted event: wake-ups from hibernation or eviction. */
  wakeups: number;
}

export const EMPTY_CHANNEL_STATS: ChannelStats = {
  requests: 0,
  messages: 0,
  closes: 0,
  alarms: 0,
  activeMs: 0,
  wakeups: 0,
};

/** Every shard's counters, summed (GET /__channel/stats). */
export async function channelStats(namespace: DurableObjectNamespace, shards: number): Promise<ChannelStats> {
  const all = await Promise.all(
    Array.from({ length: shards }, async (_, shard) => {
      const res = await shardStub(namespace, shard).fetch(`${OBJECT_ORIGIN}/stats`);
      return (await res.json()) as ChannelStats;
    }),
  );
  const sum = { ...EMPTY_CHANNEL_STATS, shards };
  for (const stats of all) {
    for (const key of Object.keys(EMPTY_CHANNEL_STATS) as (keyof ChannelStats)[]) sum[key] += stats[key];
  }
  return sum;
}
