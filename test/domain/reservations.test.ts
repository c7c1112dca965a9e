import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Principal } from '../../functions/domain/auth.ts';
import { ConductorError } from '../../functions/domain/errors.ts';
import { getJob, submitJob } from '../../functions/domain/jobs.ts';
import {
  createReservation,
  deleteReservation,
  getReservation,
  listReservations,
  updateReservation,
} from '../../functions/domain/reservations.ts';
import { runSchedulingPass } from '../../functions/domain/scheduler.ts';
import { query } from '../../functions/domain/sql.ts';
import { registerWorker } from '../../functions/domain/workers.ts';
import { availableBackends, type Backend, testContext } from '../support/cluster.ts';
import { hookedDb } from '../support/hooked-db.ts';
import { checkInvariants } from '../support/invariants.ts';

const backends = (await availableBackends()).filter((b) => b.name !== 'neon+redis');

const user = (owner: string): Principal => ({
  kind: 'token',
  tokenId: null,
  name: owner,
  owner,
  scopes: ['jobs:read', 'jobs:write'],
});
const ADMIN: Principal = { kind: 'token', tokenId: null, name: 'root', owner: 'root', scopes: ['admin'] };

describe.each(backends)('reservations and backfill on $name', (factory) => {
  let backend: Backend;
  beforeAll(async () => {
    backend = await factory.create();
  });
  afterAll(async () => {
    await backend?.close();
  });

  async function reset() {
    await backend.db.db.execute(
      sql`TRUNCATE jobs, job_dependencies, job_attempts, resource_allocations, workers, worker_gres, job_output, job_output_chunks, submission_keys, reservations`,
    );
    const [row] = await query<{ v: string }>(
      backend.db.db,
      sql`UPDATE cluster_state SET allocated_cpus = 0, allocated_memory_mb = 0, allocated_gpus = 0, allocation_version = allocation_version + 1 RETURNING allocation_version AS v`,
    );
    await backend.registry.setAllocationSnapshot(0, Number(row?.v));
  }
  const jobRow = async (id: number) =>
    (
      await query<{ state: string; node: string | null; reason: string | null }>(
        backend.db.db,
        sql`SELECT state, node, reason FROM jobs WHERE id = ${id}`,
      )
    )[0];
  const refused = async (work: Promise<unknown>) => {
    const error = await work.then(
      () => null,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(ConductorError);
    return error as ConductorError;
  };

  it('a reservation keeps its nodes free for its account in its window; a too-long job does not start on them', {
    timeout: 60_000,
  }, async () => {
    await reset();
    const { ctx, settle } = testContext(backend);
    await registerWorker(ctx, { worker_id: 'r1', hostname: 'r1', cpus: 8 });
    await registerWorker(ctx, { worker_id: 'x1', hostname: 'x1', cpus: 8 });
    await createReservation(
      ctx,
      { name: 'physics', start_time: 'now', duration: 60, nodes: 'r1', accounts: ['physics'] },
      ADMIN,
    );
    // Starting in 30 minutes on x1, for maintenance.
    await createReservation(
      ctx,
      {
        name: 'maint',
        start_time: 'now+30minutes',
        duration: '2:00:00',
        nodes: 'x1',
        users: ['ops'],
        flags: ['MAINT'],
      },
      ADMIN,
    );
    const chem = user('carol');
    const tooLong = await submitJob(
      ctx,
      { script: 'true', cpus: 4, account: 'chem', time_limit: 60 },
      { caller: chem },
    );
    const endless = await submitJob(ctx, { script: 'true', cpus: 1, account: 'chem' }, { caller: chem });
    const short = await submitJob(
      ctx,
      { script: 'true', cpus: 4, account: 'chem', time_limit: 20 },
      { caller: chem },
    );
    const inside = await submitJob(
      ctx,
      { script: 'true', cpus: 8, account: 'physics', time_limit: 600, reservation: 'physics' },
      { caller: user('dave') },
    );
    await settle();
    await runSchedulingPass(ctx);
    // The physics job runs on its reservation's node; the 20-minute job ends before maintenance starts.
    expect(await jobRow(inside.id)).toMatchObject({ state: 'RUNNING', node: 'r1' });
    expect(await jobRow(short.id)).toMatchObject({ state: 'RUNNING', node: 'x1' });
    // An hour runs into the maintenance window; no time limit runs into every window.
    expect(await jobRow(tooLong.id)).toMatchObject({
      state: 'PENDING',
      reason: 'ReqNodeNotAvail, Reserved for maintenance',
    });
    expect(await jobRow(endless.id)).toMatchObject({ state: 'PENDING' });
    expect((await jobRow(endless.id))?.reason).toMatch(/^ReqNodeNotAvail/);
    // Nobody else lands on r1 inside the window, even with it free: the physics job ends, r1 stays empty.
    await query(
      backend.db.db,
      sql`WITH j AS (UPDATE jobs SET state = 'COMPLETED', end_time = now() WHERE id = ${inside.id} RETURNING node, cpus),
               a AS (UPDATE resource_allocations SET released = true, released_time = now() WHERE job_id = ${inside.id}),
               w AS (UPDATE workers SET allocated_cpus = allocated_cpus - j.cpus FROM j WHERE workers.id = j.node)
          UPDATE cluster_state SET allocated_cpus = allocated_cpus - (SELECT cpus FROM j), allocation_version = allocation_version + 1`,
    );
    const other = await submitJob(
      ctx,
      { script: 'true', cpus: 1, account: 'chem', time_limit: 5 },
      { caller: chem },
    );
    await settle();
    await runSchedulingPass(ctx);
    expect(await jobRow(other.id)).toMatchObject({ state: 'RUNNING', node: 'x1' });
    const running = await query<{ n: string }>(
      backend.db.db,
      sql`SELECT count(*) AS n FROM jobs WHERE node = 'r1' AND state = 'RUNNING'`,
    );
    expect(Number(running[0]?.n)).toBe(0);
    // r1 is free now, and still not for it: physics holds it (its hour would also run into maint on x1).
    expect(await getJob(ctx.db, tooLong.id)).toMatchObject({
      reason: 'ReqNodeNotAvail',
      reason_detail: expect.stringContaining('UnavailableNodes:r1 (reservation physics, now)'),
    });
    await checkInvariants(backend.db.db);
  });

  it('refuses a reservation a submitter may not use, and bad reservations, with 400s that change nothing', {
    timeout: 60_000,
  }, async () => {
    await reset();
    const { ctx } = testContext(backend);
    await registerWorker(ctx, { worker_id: 'n1', hostname: 'n1', cpus: 4 });
    await createReservation(
      ctx,
      { name: 'team', start_time: 'now', duration: 30, nodes: 'n1', users: ['alice'], accounts: ['bio'] },
      ADMIN,
    );
    // Users and Accounts both set: a job must match both (Slurm).
    for (const [owner, account] of [
      ['bob', 'bio'],
      ['alice', 'chem'],
    ] as const) {
      const error = await refused(
        submitJob(ctx, { script: 'true', cpus: 1, account, reservation: 'team' }, { caller: user(owner) }),
      );
      expect(error.code).toBe('invalid_reservation');
      expect(error.message).toContain('Access denied to requested reservation team');
    }
    expect(
      (await refused(submitJob(ctx, { script: 'true', cpus: 1, reservation: 'nope' }))).message,
    ).toContain('Requested reservation is invalid');
    const ok = await submitJob(
      ctx,
      { script: 'true', cpus: 1, account: 'bio', reservation: 'team' },
      { caller: user('alice') },
    );
    expect(ok.reservation).toBe('team');
    for (const [input, words] of [
      [{ name: 'a', start_time: 'now', duration: 10, nodes: 'n1' }, 'users or accounts'],
      [{ name: 'a', start_time: 'soon', duration: 10, nodes: 'n1', users: ['x'] }, 'is not a time'],
      [{ name: 'a', start_time: 'now', nodes: 'n1', users: ['x'] }, 'end_time or duration'],
      [{ name: 'a', start_time: 'now', duration: 10, nodes: 'n[1-2]', users: ['x'] }, 'n2 is no known node'],
      [
        { name: 'a', start_time: 'now', duration: 10, node_count: 2, users: ['x'] },
        'the cluster has 1 nodes',
      ],
      [
        { name: 'a', start_time: 'now', duration: '1-00:00:00', nodes: 'n1', users: ['x'], flags: ['DAILY'] },
        'less than its period',
      ],
      [{ name: 'team', start_time: 'now', duration: 10, nodes: 'n1', users: ['x'] }, 'already exists'],
    ] as const) {
      const error = await refused(
        createReservation(ctx, input as Parameters<typeof createReservation>[1], ADMIN),
      );
      expect(error.message).toContain(words);
    }
    expect((await listReservations(ctx.db)).map((r) => r.name)).toEqual(['team']);
  });

  it('create, show, update and delete: a node count is resolved to idle nodes, DAILY moves on', {
    timeout: 60_000,
  }, async () => {
    await reset();
    const { ctx } = testContext(backend);
    for (const id of ['c1', 'c2', 'c3']) await registerWorker(ctx, { worker_id: id, hostname: id, cpus: 16 });
    await query(backend.db.db, sql`UPDATE workers SET allocated_cpus = 4 WHERE id = 'c1'`);
    const made = await createReservation(
      ctx,
      {
        name: 'nightly',
        start_time: 'now+1hours',
        duration: 120,
        node_count: 2,
        users: ['ops'],
        flags: ['DAILY'],
      },
      ADMIN,
    );
    expect(made).toMatchObject({
      nodes: 'c[2-3]',
      node_count: 2,
      cpu_count: 32,
      duration: 120,
      state: 'INACTIVE',
      flags: ['DAILY'],
      users: ['ops'],
    });
    const changed = await updateReservation(
      ctx,
      'nightly',
      { start_time: 'now', nodes: 'c3', accounts: ['ops'] },
      ADMIN,
    );
    expect(changed).toMatchObject({ nodes: 'c3', state: 'ACTIVE', duration: 120, accounts: ['ops'] });
    // A DAILY window that ended yesterday shows today's.
    await query(
      backend.db.db,
      sql`UPDATE reservations SET start_time = now() - interval '25 hours', end_time = now() - interval '24 hours' + interval '10 minutes'`,
    );
    const today = await getReservation(ctx.db, 'nightly');
    expect(today.state).toBe('ACTIVE');
    expect(Date.parse(today.end_time) - Date.now()).toBeGreaterThan(9 * 60_000);
    await deleteReservation(ctx, 'nightly', ADMIN);
    expect(await listReservations(ctx.db)).toEqual([]);
    expect((await refused(getReservation(ctx.db, 'nightly'))).code).toBe('reservation_not_found');
  });

  // PGlite has one connection: nothing commits beside an open transaction there.
  it.runIf(factory.name === 'postgres+redis')(
    'the placing statement refuses a placement that a reservation committed after the plan makes invalid',
    { timeout: 60_000 },
    async () => {
      await reset();
      const { ctx: setup, settle } = testContext(backend);
      await registerWorker(setup, { worker_id: 'z1', hostname: 'z1', cpus: 4 });
      // Held at submission and released by hand: the submission's own pass does not place it.
      const job = await submitJob(setup, { script: 'true', cpus: 1, time_limit: 60, hold: true });
      await settle();
      await query(backend.db.db, sql`UPDATE jobs SET held = NULL, reason = 'None' WHERE id = ${job.id}`);
      // The pass plans (it read the partitions and reservations: none), then a reservation commits on z1
      // without waiting for the pass's locks, as a stale plan would see it.
      let injected = false;
      const db = hookedDb(backend.db.db, {
        after: async (text) => {
          if (!injected && text.includes('FROM partitions) p) AS partitions')) {
            injected = true;
            await query(
              backend.db.db,
              sql`INSERT INTO reservations (name, start_time, end_time, nodes, users, flags)
                VALUES ('late', now() + interval '10 minutes', now() + interval '1 hour', '{z1}', '{ops}', '{MAINT}')`,
            );
          }
        },
      });
      const { ctx } = testContext(backend, undefined, { db });
      expect((await runSchedulingPass(ctx)).placed).toBe(0);
      expect(injected).toBe(true);
      expect(await jobRow(job.id)).toMatchObject({ state: 'PENDING' });
      // The next pass plans with it, and says why.
      await runSchedulingPass(setup);
      expect(await jobRow(job.id)).toMatchObject({
        state: 'PENDING',
        reason: 'ReqNodeNotAvail, Reserved for maintenance',
      });
      await checkInvariants(backend.db.db);
    },
  );

  it('backfill: a short low-priority job starts before the top job’s planned start, never one that would delay it', {
    timeout: 60_000,
  }, async () => {
    await reset();
    const { ctx, settle } = testContext(backend);
    await registerWorker(ctx, { worker_id: 'b1', hostname: 'b1', cpus: 8 });
    const first = await submitJob(ctx, { script: 'true', cpus: 5, time_limit: 60 });
    await settle();
    await runSchedulingPass(ctx);
    expect(await jobRow(first.id)).toMatchObject({ state: 'RUNNING' });
    const top = await submitJob(ctx, { script: 'true', cpus: 8, time_limit: 10, priority: 10 });
    const long = await submitJob(ctx, { script: 'true', cpus: 1, time_limit: 61 });
    const endless = await submitJob(ctx, { script: 'true', cpus: 1 });
    const short = await submitJob(ctx, { script: 'true', cpus: 2, time_limit: 59 });
    await settle();
    await runSchedulingPass(ctx);
    expect(await jobRow(short.id)).toMatchObject({ state: 'RUNNING', node: 'b1' });
    expect(await jobRow(long.id)).toMatchObject({ state: 'PENDING' });
    expect(await jobRow(endless.id)).toMatchObject({ state: 'PENDING' });
    const view = await getJob(ctx.db, top.id);
    expect(view).toMatchObject({ state: 'PENDING', reason: 'Resources' });
    // Planned: when the 5-CPU job's hour is up.
    const [ends] = await query<{ at: Date | string }>(
      backend.db.db,
      sql`SELECT coalesce(start_time, now()) + interval '60 minutes' AS at FROM jobs WHERE id = ${first.id}`,
    );
    expect(view.planned_start_time).not.toBeNull();
    expect(
      Math.abs(Date.parse(view.planned_start_time as string) - new Date(ends?.at as Date).getTime()),
    ).toBeLessThan(2000);
    // A pass later, with the hold kept from the earlier one: a job that fits the last CPU and ends in time
    // starts; one that would not end in time does not.
    const late = await submitJob(ctx, { script: 'true', cpus: 1, time_limit: 30 });
    const lateLong = await submitJob(ctx, { script: 'true', cpus: 1, time_limit: 90 });
    await settle();
    await runSchedulingPass(ctx);
    expect(await jobRow(late.id)).toMatchObject({ state: 'RUNNING', node: 'b1' });
    expect(await jobRow(lateLong.id)).toMatchObject({ state: 'PENDING' });
    expect(await jobRow(top.id)).toMatchObject({ state: 'PENDING' });
    // Another pass changes nothing: nothing written when the plan did not move.
    const before = await query<{ xmin: string }>(
      backend.db.db,
      sql`SELECT xmin::text FROM jobs WHERE id = ${top.id}`,
    );
    await runSchedulingPass(ctx);
    expect(await query(backend.db.db, sql`SELECT xmin::text FROM jobs WHERE id = ${top.id}`)).toEqual(before);
    await checkInvariants(backend.db.db);
  });
});
