/**
 * The serverless cost promise's two halves on every backend: an idle cluster's backstop reads one registry
 * key set and sends Postgres nothing (so Neon's compute can sleep), and a push-channel worker, whose pings
 * refresh only its registry key, is judged by that key (its Postgres heartbeat stays its registration's).
 */
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { channelHeartbeat, openChannelSession } from '../../functions/domain/channel.ts';
import type { Context } from '../../functions/domain/context.ts';
import { submitJob } from '../../functions/domain/jobs.ts';
import { cacheSyncSkippable, runBackstopUnlessQuiet } from '../../functions/domain/maintenance.ts';
import type { RegistryStore } from '../../functions/domain/ports.ts';
import { reapLostWorkers } from '../../functions/domain/reaper.ts';
import { query, queryOne } from '../../functions/domain/sql.ts';
import { registerWorker } from '../../functions/domain/workers.ts';
import { availableBackends, type Backend, testConfig, testContext } from '../support/cluster.ts';
import { hookedDb } from '../support/hooked-db.ts';

const backends = await availableBackends();

describe.each(backends)('an idle control plane on $name', (factory) => {
  let backend: Backend;
  beforeAll(async () => {
    backend = await factory.create();
  });
  afterAll(async () => {
    await backend?.close();
  });

  /** A context whose Postgres statements are counted; `registry` replaces the backend's. */
  function counted(registry: RegistryStore = backend.registry, ttl = 1) {
    const statements: string[] = [];
    const db = hookedDb(backend.db.db, { before: (text) => statements.push(text) });
    const config = testConfig({
      workerTtlSeconds: ttl,
      heartbeatIntervalSeconds: 1,
      scheduleIntervalSeconds: 1,
    });
    return { ...testContext(backend, config, { db, registry }), statements };
  }
  const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

  it('skips Postgres once a pass found nothing to do, until a submission; never while a job is pending', async () => {
    const { ctx, statements, settle } = counted();
    expect((await runBackstopUnlessQuiet(ctx)).ran).toBe(true); // no marker yet: it looks, finds nothing
    statements.length = 0;
    const quiet = await runBackstopUnlessQuiet(ctx);
    expect(quiet.ran).toBe(false);
    expect(statements).toEqual([]);
    await setAllocationZero(ctx);
    expect(await cacheSyncSkippable(ctx)).toBe(true);

    // A job that cannot run (no worker has 10,000 CPUs) ends the quiet: the submission notes activity.
    await submitJob(ctx, { script: '#!/bin/sh\ntrue\n', cpus: 10_000 });
    await settle();
    expect((await runBackstopUnlessQuiet(ctx)).ran).toBe(true);
    // Still pending: every pass looks again (time limits, begin times, a node that comes).
    expect((await runBackstopUnlessQuiet(ctx)).ran).toBe(true);
    expect(await cacheSyncSkippable(ctx)).toBe(false);
    await query(
      backend.db.db,
      sql`UPDATE jobs SET state = 'CANCELLED', end_time = now() WHERE state = 'PENDING'`,
    );
    expect((await runBackstopUnlessQuiet(ctx)).ran).toBe(true);
    expect((await runBackstopUnlessQuiet(ctx)).ran).toBe(false);
  });

  it('a submission racing the pass that found nothing is never hidden by its marker', async () => {
    await backend.registry.noteActivity(); // whatever an earlier test left: the next pass looks
    // The pass reads the epoch, finds nothing, and a submission's activity lands before it sets the marker.
    let raced = false;
    const registry: RegistryStore = Object.create(backend.registry);
    registry.markQuiet = async (epoch, ttl) => {
      if (!raced) {
        raced = true;
        await backend.registry.noteActivity();
      }
      return backend.registry.markQuiet(epoch, ttl);
    };
    const { ctx: passing } = counted(registry);
    expect((await runBackstopUnlessQuiet(passing)).ran).toBe(true);
    expect(raced).toBe(true);
    const { ctx } = counted();
    expect((await runBackstopUnlessQuiet(ctx)).ran).toBe(true);
  });

  it('a worker key that expired wakes the backstop so that the reaper acts', async () => {
    const { ctx } = counted();
    await runBackstopUnlessQuiet(ctx);
    expect((await runBackstopUnlessQuiet(ctx)).ran).toBe(false);
    await backend.registry.putWorker(
      {
        worker_id: 'idle-dies',
        cpus: 1,
        status: 'ready',
        hostname: 'idle-dies',
        registered_at: '2025-11-11T10:00:00',
        last_heartbeat: '2025-11-11T10:00:00',
      },
      1,
    );
    await sleep(1_100);
    const state = await runBackstopUnlessQuiet(ctx);
    expect(state.state?.expiredWorkers).toBe(true);
    expect(state.ran).toBe(true);
  });

  it('judges a channel worker by its registry key: live while its hub refreshes it, lost once it expired', async () => {
    const { ctx } = counted(backend.registry, 2);
    const worker = await registerWorker(ctx, { worker_id: 'chan-1', hostname: 'chan-1', cpus: 2 });
    await openChannelSession(ctx, { worker_id: 'chan-1', session: worker.session });
    await query(
      backend.db.db,
      sql`UPDATE workers SET last_heartbeat = now() - interval '1 hour' WHERE id = 'chan-1'`,
    );
    // Its Postgres heartbeat is old; its hub refreshes its key (TTL 2 s) every second: never lost.
    for (let round = 0; round < 3; round++) {
      await sleep(1_000);
      expect(await channelHeartbeat(ctx, [{ worker_id: 'chan-1', session: worker.session }])).toEqual({
        reregister: [],
      });
      expect((await reapLostWorkers(ctx)).lostWorkers).not.toContain('chan-1');
    }
    // The hub stops refreshing it (its socket died): the key expires, and a reap then declares it lost. (The
    // reaper keeps passing meanwhile: a pause longer than its gap would read as an outage and give grace.)
    const lost: string[] = [];
    for (let round = 0; round < 3; round++) {
      await sleep(1_000);
      lost.push(...(await reapLostWorkers(ctx)).lostWorkers);
    }
    expect(lost).toContain('chan-1');
  });

  it('with the registry down, a hub heartbeats its channel workers in Postgres and the reaper judges from there', async () => {
    const broken: RegistryStore = Object.create(backend.registry);
    const fail = async () => {
      throw new Error('registry down');
    };
    broken.touchWorkers = fail;
    broken.reapView = fail;
    const { ctx } = counted(broken, 1);
    await reapLostWorkers(ctx); // the reaper runs (a pause before this test reads as an outage: grace)
    await sleep(1_100);
    const { ctx: registering } = counted(backend.registry, 1);
    const fresh = await registerWorker(registering, { worker_id: 'chan-2', hostname: 'chan-2', cpus: 2 });
    const stale = await registerWorker(registering, { worker_id: 'chan-3', hostname: 'chan-3', cpus: 2 });
    await openChannelSession(registering, { worker_id: 'chan-2', session: fresh.session });
    await openChannelSession(registering, { worker_id: 'chan-3', session: stale.session });
    await query(
      backend.db.db,
      sql`UPDATE workers SET last_heartbeat = now() - interval '1 hour' WHERE id IN ('chan-2', 'chan-3')`,
    );
    expect(await channelHeartbeat(ctx, [{ worker_id: 'chan-2', session: fresh.session }])).toEqual({
      reregister: [],
    });
    const row = await queryOne<{ age: number }>(
      backend.db.db,
      sql`SELECT extract(epoch FROM now() - last_heartbeat) AS age FROM workers WHERE id = 'chan-2'`,
    );
    expect(Number(row?.age)).toBeLessThan(5);
    const lost = (await reapLostWorkers(ctx)).lostWorkers;
    expect(lost).toContain('chan-3');
    expect(lost).not.toContain('chan-2');
  });
});

async function setAllocationZero(ctx: Context) {
  await ctx.registry.setAllocationSnapshot(0, 1);
}
