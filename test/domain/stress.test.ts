/**
 * Two control planes (two contexts, each with its own scheduler and database pool where the backend has
 * one) on one Postgres + Redis, doing everything at once for a bounded number of rounds: scheduling passes,
 * agents claiming and reporting started and finished, cancels, unregister and register cycles, re-
 * registrations listing their running jobs, heartbeats, reaping of silenced workers, overdue checks and
 * cache syncs. Then the invariants. The review's stress run (shared/reviews/repro/stress.ts), bounded by
 * rounds instead of time so that a slow machine runs the same test, only slower.
 */
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectNodePg } from '../../db/node-postgres.ts';
import { syncAllocationCache } from '../../functions/domain/cache.ts';
import type { Context } from '../../functions/domain/context.ts';
import { ConductorError } from '../../functions/domain/errors.ts';
import { cancelJob, submitJobsBatch } from '../../functions/domain/jobs.ts';
import type { Database } from '../../functions/domain/ports.ts';
import { endOverdueJobs, reapLostWorkers } from '../../functions/domain/reaper.ts';
import { runSchedulingPass } from '../../functions/domain/scheduler.ts';
import { pgErrorCode, query } from '../../functions/domain/sql.ts';
import {
  claimAssignments,
  finishAssignment,
  heartbeatWorker,
  registerWorker,
  reportStarted,
  unregisterWorker,
} from '../../functions/domain/workers.ts';
import { prng } from '../registry/contract.ts';
import { availableBackends, type Backend, testContext } from '../support/cluster.ts';
import { hookedDb } from '../support/hooked-db.ts';
import { checkInvariants } from '../support/invariants.ts';

const backends = await availableBackends();

/** Answers the domain gives on purpose when work races (a stale report, a superseded session, ...). */
const EXPECTED = new Set([
  'stale_assignment',
  'unknown_worker',
  'session_superseded',
  'worker_name_in_use',
  'cancel_raced',
  'job_finished',
  'cpus_below_allocation',
  'database_busy',
]);

describe.each(backends)('stress on $name', (factory) => {
  let backend: Backend;
  let secondPool: { close(): Promise<void> } | undefined;
  beforeAll(async () => {
    backend = await factory.create();
  });
  afterAll(async () => {
    await secondPool?.close();
    await backend?.close();
  });

  it('two schedulers, agents, cancels, restarts, reaps and syncs at once: every invariant holds', {
    timeout: 300_000,
  }, async () => {
    const random = prng(20261206);
    const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)]!;
    // Every statement either control plane runs is watched for deadlocks: the lock order (workers, jobs,
    // allocations, cluster_state) allows none, retried or not.
    const deadlocks: string[] = [];
    const watched = (db: Database) =>
      hookedDb(db, {
        failed(text, error) {
          if (pgErrorCode(error) === '40P01') deadlocks.push(text.replace(/\s+/g, ' ').slice(0, 120));
        },
      });
    const a = testContext({ ...backend, db: { ...backend.db, db: watched(backend.db.db) } });
    // The second control plane has its own connections where the backend can (PGlite is one connection).
    let bDb = backend.db.db;
    if (backend.db.kind === 'postgres' && backend.db.url) {
      const pool = connectNodePg(backend.db.url, { max: 4 });
      secondPool = pool;
      bDb = pool.db;
    }
    const b = testContext({ ...backend, db: { ...backend.db, db: watched(bDb) } });
    const either = (): Context => (random() < 0.5 ? a.ctx : b.ctx);
    await backend.db.db.execute(
      sql`UPDATE maintenance_state SET reaper_seen_at = now(), reaper_resumed_at = now() - interval '1 hour'`,
    );

    const ids = Array.from({ length: 12 }, (_, i) => `stress-${String(i).padStart(2, '0')}`);
    const sessions = new Map<string, string>();
    // Memory on every node, 4 GPUs on every other one, a license on a third of them: the same on every
    // registration, so that a node never offers less than its running jobs hold.
    const resourcesOf = (id: string) => {
      const n = Number(id.slice(-2));
      return {
        memory_mb: 64_000,
        ...(n % 2 === 0 ? { gpus: [0, 1, 2, 3].map((index) => ({ index, model: 'a100' })) } : {}),
        ...(n % 3 === 0 ? { gres: { license: 2 } } : {}),
      };
    };
    for (const id of ids) {
      const r = await registerWorker(either(), {
        worker_id: id,
        hostname: id,
        cpus: 4 + Math.floor(random() * 29),
        running: [],
        ...resourcesOf(id),
      });
      sessions.set(id, r.session);
    }
    for (let batch = 0; batch < 2; batch++) {
      await submitJobsBatch(
        a.ctx,
        Array.from({ length: 150 }, () => ({
          script: 'true',
          cpus: 1 + Math.floor(random() * 16),
          priority: Math.floor(random() * 3),
          requeue: random() < 0.5,
          ...(random() < 0.4 ? { memory_per_node: `${1 + Math.floor(random() * 24)}G` } : {}),
          ...(random() < 0.3 ? { gpus: 1 + Math.floor(random() * 2) } : {}),
          ...(random() < 0.15 ? { gres: 'license:1' } : {}),
        })),
      );
    }

    const stats = { passes: 0, placed: 0, finished: 0, cancelled: 0 };
    const unexpected: string[] = [];
    const attempt = async (work: () => Promise<unknown>) => {
      try {
        await work();
      } catch (error) {
        const code = error instanceof ConductorError ? error.code : undefined;
        if (!code || !EXPECTED.has(code))
          unexpected.push(
            error instanceof Error ? `${error.message} ${String(error.cause ?? '')}` : String(error),
          );
      }
    };
    const rounds = async (n: number, work: () => Promise<unknown>) => {
      for (let i = 0; i < n; i++) await attempt(work);
    };
    const runningOn = (id: string) =>
      query<{ id: string | number; attempt: number }>(
        backend.db.db,
        sql`SELECT id, attempt FROM jobs WHERE node = ${id} AND state = 'RUNNING' AND start_time IS NOT NULL`,
      );
    /** What an agent does when the server forgot it: register again, listing its running jobs. */
    const comeBack = async (id: string) => {
      const running = (await runningOn(id)).map((j) => ({
        job_id: Number(j.id),
        attempt: Number(j.attempt),
      }));
      const r = await registerWorker(either(), {
        worker_id: id,
        hostname: id,
        cpus: 32,
        running,
        previous_session: sessions.get(id),
        ...resourcesOf(id),
      });
      sessions.set(id, r.session);
    };
    const asAgent = async (id: string, work: () => Promise<unknown>) => {
      try {
        await work();
      } catch (error) {
        const code = error instanceof ConductorError ? error.code : undefined;
        if (code !== 'unknown_worker' && code !== 'session_superseded') throw error;
        await comeBack(id);
      }
    };

    await Promise.all([
      rounds(30, async () => {
        const r = await runSchedulingPass(a.ctx);
        stats.passes++;
        stats.placed += r.placed;
      }),
      rounds(30, async () => {
        const r = await runSchedulingPass(b.ctx);
        stats.passes++;
        stats.placed += r.placed;
      }),
      // Agents: claim, report started, and finish some of the jobs that run.
      rounds(40, async () => {
        const id = pick(ids);
        await asAgent(id, async () => {
          const claim = await claimAssignments(either(), {
            worker_id: id,
            session: sessions.get(id)!,
            wait_s: 0,
          });
          for (const job of claim.jobs) {
            await attempt(() => reportStarted(either(), job.job_id, { worker_id: id, attempt: job.attempt }));
          }
        });
        const running = await query<{ id: string | number; node: string; attempt: number }>(
          backend.db.db,
          sql`SELECT id, node, attempt FROM jobs WHERE state = 'RUNNING' AND start_time IS NOT NULL
              ORDER BY id LIMIT 8`,
        );
        await Promise.all(
          running.map((job) =>
            attempt(async () => {
              await finishAssignment(either(), Number(job.id), {
                worker_id: job.node,
                attempt: Number(job.attempt),
                exit_code: random() < 0.8 ? '0:0' : '1:0',
                outcome: 'exited',
              });
              stats.finished++;
            }),
          ),
        );
      }),
      rounds(20, async () => {
        const some = await query<{ id: string | number }>(
          backend.db.db,
          sql`SELECT id FROM jobs WHERE state IN ('PENDING', 'RUNNING') ORDER BY id DESC LIMIT 3`,
        );
        for (const job of some) {
          await attempt(async () => {
            await cancelJob(either(), Number(job.id));
            stats.cancelled++;
          });
        }
      }),
      // An agent restarts (unregister, register) or registers again with what it runs.
      rounds(12, async () => {
        const id = pick(ids);
        if (random() < 0.5) {
          await asAgent(id, () => unregisterWorker(either(), { worker_id: id, session: sessions.get(id)! }));
          const r = await registerWorker(either(), {
            worker_id: id,
            hostname: id,
            cpus: 4 + Math.floor(random() * 29),
            running: [],
            ...resourcesOf(id),
          });
          sessions.set(id, r.session);
        } else {
          await comeBack(id);
        }
      }),
      rounds(6, async () => {
        for (const id of ids) {
          await attempt(() =>
            asAgent(id, () => heartbeatWorker(either(), { worker_id: id, session: sessions.get(id)! })),
          );
        }
      }),
      // A node goes silent now and then; the reaper, the overdue check and the cache sync run throughout.
      rounds(10, async () => {
        if (random() < 0.5) {
          await backend.db.db.execute(
            sql`UPDATE workers SET last_heartbeat = now() - interval '10 minutes' WHERE id = ${pick(ids)}`,
          );
        }
        await reapLostWorkers(either());
        await endOverdueJobs(either());
        await syncAllocationCache(either());
      }),
    ]);
    await a.settle();
    await b.settle();

    expect(unexpected, 'errors other than the answers racing work is given on purpose').toEqual([]);
    expect(deadlocks, 'statements Postgres aborted as deadlocked').toEqual([]);
    expect(stats.passes).toBe(60);
    expect(stats.finished + stats.cancelled).toBeGreaterThan(0);
    const elsewhere = await query<{ id: string | number }>(
      backend.db.db,
      sql`SELECT j.id FROM jobs j JOIN resource_allocations r ON r.job_id = j.id AND NOT r.released
          WHERE j.node IS DISTINCT FROM r.node_name`,
    );
    expect(elsewhere, 'jobs whose live allocation is on another node than theirs').toEqual([]);
    const onDown = await query<{ id: string | number }>(
      backend.db.db,
      sql`SELECT j.id FROM jobs j JOIN workers w ON w.id = j.node WHERE j.state = 'RUNNING' AND w.status = 'down'`,
    );
    expect(onDown, 'RUNNING jobs on a worker that is down').toEqual([]);
    // The run placed jobs that hold GPUs, memory and a license, not only CPUs.
    const [held] = await query<{ gpus: string | number; memory: string | number; gres: string | number }>(
      backend.db.db,
      sql`SELECT count(*) FILTER (WHERE gpu_mask <> 0) AS gpus, count(*) FILTER (WHERE memory_mb > 0) AS memory,
                 count(*) FILTER (WHERE gres <> '{}'::jsonb) AS gres
          FROM resource_allocations`,
    );
    expect(Number(held?.gpus)).toBeGreaterThan(0);
    expect(Number(held?.memory)).toBeGreaterThan(0);
    expect(Number(held?.gres)).toBeGreaterThan(0);
    // Every delta reached the cache in this run (Redis never failed), so no sync is needed for it to agree.
    await checkInvariants(backend.db.db, backend.registry);
    expect((await syncAllocationCache(a.ctx)).drift ?? 0).toBe(0);
  });
});
