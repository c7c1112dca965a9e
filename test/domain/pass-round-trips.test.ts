/**
 * What stands between a submission on an idle cluster and its push, in the scheduling pass: the queue's
 * explanation is written only when there can be something to write (a job pending when the pass locked its
 * workers that the pass did not read, or a reason that changed), and the agents are told before the
 * allocated-resources cache. A placing pass on an idle cluster is four statements.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openChannelSession } from '../../functions/domain/channel.ts';
import { getJob, submitJob } from '../../functions/domain/jobs.ts';
import { createLocalNotifier } from '../../functions/domain/notifier.ts';
import type { RegistryStore, WorkNotifier } from '../../functions/domain/ports.ts';
import { runSchedulingPass } from '../../functions/domain/scheduler.ts';
import { registerWorker } from '../../functions/domain/workers.ts';
import { availableBackends, type Backend, testContext } from '../support/cluster.ts';
import { hookedDb } from '../support/hooked-db.ts';
import { checkInvariants } from '../support/invariants.ts';

const backends = await availableBackends();

describe.each(backends)('the scheduling pass before a push, on $name', (factory) => {
  let backend: Backend;
  let h: ReturnType<typeof testContext>;
  const statements: string[] = [];
  /** The order in which the agents and the cache heard of placements. */
  const told: string[] = [];
  beforeAll(async () => {
    backend = await factory.create();
    const db = hookedDb(backend.db.db, { before: (text) => statements.push(text) });
    const registry = new Proxy(backend.registry, {
      get(target, property, receiver) {
        const value = Reflect.get(target, property, receiver);
        if (property === 'applyAllocationDelta') {
          return (...args: Parameters<RegistryStore['applyAllocationDelta']>) => {
            told.push('cache');
            return target.applyAllocationDelta(...args);
          };
        }
        return typeof value === 'function' ? value.bind(target) : value;
      },
    });
    const local = createLocalNotifier();
    const notifier: WorkNotifier = {
      notify(workerId, jobs) {
        told.push(`agent ${workerId}`);
        local.notify(workerId, jobs);
      },
      wait: (workerId, ms) => local.wait(workerId, ms),
    };
    h = testContext(backend, undefined, { db, registry, notifier });
  });
  afterAll(async () => {
    await h?.settle();
    await backend?.close();
  });

  /** Whether `work`, and the passes it asked for, wrote the queue's explanation. */
  async function explains(work: () => Promise<unknown>) {
    await h.settle();
    statements.length = 0;
    await work();
    await h.settle();
    return statements.some((text) => text.includes('UPDATE jobs SET reason = r.reason'));
  }
  const job = (id: number) => getJob(h.ctx.db, id);

  it('places the only pending job without writing an explanation; explains while a job it did not read waits', async () => {
    await registerWorker(h.ctx, { worker_id: 'rt-a', hostname: 'rt-a', cpus: 2 });
    let first = 0;
    expect(
      await explains(async () => {
        first = (await submitJob(h.ctx, { script: 'true', cpus: 1 })).id;
      }),
    ).toBe(false);
    expect(await job(first)).toMatchObject({ state: 'RUNNING', node: 'rt-a' });
    // Nothing pending: nothing to explain.
    expect(await explains(() => runSchedulingPass(h.ctx))).toBe(false);

    // Waiting for another job: the pass does not read it, so it explains the queue.
    let waiting = 0;
    expect(
      await explains(async () => {
        waiting = (await submitJob(h.ctx, { script: 'true', cpus: 1, dependency: `afterok:${first}` })).id;
      }),
    ).toBe(true);
    expect(await job(waiting)).toMatchObject({ state: 'PENDING', reason: 'Dependency' });
    // While it waits unread, every pass explains, a placing one too.
    let second = 0;
    expect(
      await explains(async () => {
        second = (await submitJob(h.ctx, { script: 'true', cpus: 1 })).id;
      }),
    ).toBe(true);
    expect(await job(second)).toMatchObject({ state: 'RUNNING', node: 'rt-a' });
    // Read but not placed (the node is full): its reason changes, so the pass writes it.
    let third = 0;
    expect(
      await explains(async () => {
        third = (await submitJob(h.ctx, { script: 'true', cpus: 1 })).id;
      }),
    ).toBe(true);
    expect(await job(third)).toMatchObject({ state: 'PENDING', reason: 'Priority' });
    await checkInvariants(backend.db.db, backend.registry);
  });

  it('tells the agents before the cache', async () => {
    await registerWorker(h.ctx, { worker_id: 'rt-b', hostname: 'rt-b', cpus: 4 });
    await h.settle();
    told.length = 0;
    await submitJob(h.ctx, { script: 'true', cpus: 1 });
    await h.settle();
    expect(told).toHaveLength(2);
    expect(told[0]).toMatch(/^agent rt-/);
    expect(told[1]).toBe('cache');
  });
});

describe.each(backends)('a placing pass on an idle cluster, on $name', (factory) => {
  let backend: Backend;
  let h: ReturnType<typeof testContext>;
  const statements: string[] = [];
  beforeAll(async () => {
    backend = await factory.create();
    const db = hookedDb(backend.db.db, { before: (text) => statements.push(text) });
    h = testContext(backend, undefined, { db });
  });
  afterAll(async () => {
    await h?.settle();
    await backend?.close();
  });
  const job = (id: number) => getJob(h.ctx.db, id);

  it('places a job for a channel worker in four statements: the lock, what the plan starts from, a page of the queue, the placing statement (which returns the pushed assignment)', async () => {
    const w = await registerWorker(h.ctx, { worker_id: 'rt-c', hostname: 'rt-c', cpus: 16 });
    await openChannelSession(h.ctx, { worker_id: 'rt-c', session: w.session });
    await h.settle();
    statements.length = 0;
    const { id } = await submitJob(h.ctx, { script: 'true', cpus: 16 });
    await h.settle();
    const pass = statements.slice(statements.findIndex((text) => text.includes('AS pending_sample')));
    expect(await job(id)).toMatchObject({ state: 'RUNNING', node: 'rt-c' });
    expect(pass).toHaveLength(4);
    expect(pass[1]).toContain('AS holders');
    expect(pass[2]).toContain('LIMIT');
    expect(pass[3]).toContain('AS assignment');
  });
});
