import { describe, expect, it } from 'vitest';
import type { Assignment } from '../../agent/src/protocol.ts';
import type { DurableObjectNamespace } from '../../functions/channel/workerd-types.ts';
import { channelShard, fnv1a, withChannelPush } from '../../functions/channel/workers-channel.ts';
import { WAKE_JOBS_MAX_BYTES } from '../../functions/domain/channel.ts';
import { createLocalNotifier } from '../../functions/domain/notifier.ts';

/** A namespace that records the requests made to each shard's object. */
function fakeNamespace() {
  const requests: { shard: string; url: string; body: unknown }[] = [];
  const namespace: DurableObjectNamespace = {
    idFromName: (name) => ({ toString: () => name }),
    get: (id) => ({
      async fetch(input, init) {
        requests.push({
          shard: id.toString(),
          url: String(input),
          body: JSON.parse(String(init?.body)),
        });
        return new Response(null, { status: 204 });
      },
    }),
  };
  return { namespace, requests };
}

const logger = { info() {}, warn() {}, error() {} };

describe('the Workers channel push', () => {
  it('hashes ids with 32-bit FNV-1a (reference values) and spreads them over the shards', () => {
    expect(fnv1a('')).toBe(0x811c9dc5);
    expect(fnv1a('a')).toBe(0xe40c292c);
    expect(fnv1a('foobar')).toBe(0xbf9cf968);
    const counts = [0, 0, 0, 0];
    for (let i = 0; i < 4000; i++) counts[channelShard(`node-${i}`, 4)]!++;
    for (const count of counts) expect(count).toBeGreaterThan(800);
    expect(channelShard('anything', 1)).toBe(0);
  });

  it('sends the ids notified in one turn as one request per shard, through defer, and still wakes local claims', async () => {
    const { namespace, requests } = fakeNamespace();
    const deferred: Promise<unknown>[] = [];
    const local = createLocalNotifier();
    const notifier = withChannelPush(local, namespace, 4, (work) => deferred.push(work), logger);
    const woken = local.wait('node-1', 5_000);
    const ids = Array.from({ length: 20 }, (_, i) => `node-${i}`);
    for (const id of ids) notifier.notify(id);
    notifier.notify('node-1'); // twice in a turn: once in the batch
    expect(deferred).toHaveLength(0); // not before the turn ends
    await woken;
    const shards = new Set(ids.map((id) => channelShard(id, 4)));
    expect(deferred).toHaveLength(shards.size);
    await Promise.all(deferred);
    expect(requests).toHaveLength(shards.size);
    for (const request of requests) {
      expect(request.url).toBe('https://agent-channel/notify');
      const { workers } = request.body as { workers: string[] };
      for (const id of workers) expect(`agents-${channelShard(id, 4)}`).toBe(request.shard);
    }
    expect(requests.flatMap((r) => (r.body as { workers: string[] }).workers).sort()).toEqual(ids.sort());
    // A later turn is a new batch.
    notifier.notify('node-3');
    await Promise.resolve();
    await Promise.all(deferred);
    expect(requests).toHaveLength(shards.size + 1);
  });

  it("carries each worker's assignments in the same request; a bare notify of the worker in the same turn, or too much to carry, leaves its wake bare", async () => {
    const { namespace, requests } = fakeNamespace();
    const deferred: Promise<unknown>[] = [];
    const notifier = withChannelPush(
      createLocalNotifier(),
      namespace,
      1,
      (work) => deferred.push(work),
      logger,
    );
    const a = job(1, 'echo a');
    const b = job(2, 'echo b');
    notifier.notify('node-jobs', [a]);
    notifier.notify('node-jobs', [b]); // two passes in one turn: both carried
    notifier.notify('node-bare', [a]);
    notifier.notify('node-bare'); // a cancel or a drain too: its claim brings everything
    notifier.notify('node-plain');
    notifier.notify('node-large', [job(3, 'x'.repeat(WAKE_JOBS_MAX_BYTES))]);
    await Promise.resolve();
    await Promise.all(deferred);
    expect(requests).toHaveLength(1);
    expect(requests[0]!.body).toEqual({
      workers: ['node-jobs', 'node-bare', 'node-plain', 'node-large'],
      jobs: { 'node-jobs': [a, b] },
    });
  });
});

function job(id: number, script: string): Assignment {
  return {
    job_id: id,
    attempt: 1,
    name: 'j',
    script,
    cpus: 1,
    work_dir: null,
    environment: {},
    time_limit_s: null,
  };
}
