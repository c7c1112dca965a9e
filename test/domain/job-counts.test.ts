import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { JOB_STATES, type JobState } from '../../db/schema.ts';
import { getDashboard } from '../../functions/domain/dashboard.ts';
import { COMPACT_AT, compactJobCounts, readJobCounts } from '../../functions/domain/job-counts.ts';
import { cancelJob, submitJob } from '../../functions/domain/jobs.ts';
import { renderMetrics } from '../../functions/domain/metrics.ts';
import type { Database } from '../../functions/domain/ports.ts';
import { runSchedulingPass } from '../../functions/domain/scheduler.ts';
import { query, queryOne } from '../../functions/domain/sql.ts';
import { finishAssignment, registerWorker, reportStarted } from '../../functions/domain/workers.ts';
import { availableBackends, type Backend, testContext } from '../support/cluster.ts';
import { checkInvariants } from '../support/invariants.ts';

const backends = await availableBackends();

/** What a full scan says: the truth the deltas must equal. */
async function groupByCounts(db: Database): Promise<Record<JobState, number>> {
  const counts = Object.fromEntries(JOB_STATES.map((s) => [s, 0])) as Record<JobState, number>;
  const rows = await query<{ state: JobState; n: string | number }>(
    db,
    sql`SELECT state, count(*) AS n FROM jobs GROUP BY state`,
  );
  for (const r of rows) counts[r.state] = Number(r.n);
  return counts;
}

async function deltaRows(db: Database): Promise<number> {
  return Number(
    (await queryOne<{ n: string | number }>(db, sql`SELECT count(*) AS n FROM job_state_deltas`))?.n,
  );
}

describe.each(backends)('jobs per state (job_state_deltas) on $name', (factory) => {
  let backend: Backend;
  beforeAll(async () => {
    backend = await factory.create();
  });
  afterAll(async () => {
    await backend?.close();
  });

  const expectExact = async (label: string) => {
    const db = backend.db.db;
    const { ctx } = testContext(backend);
    expect(await readJobCounts(ctx), label).toEqual(await groupByCounts(db));
  };

  it('equal a GROUP BY over jobs through every step of the lifecycle, in the dashboard and /metrics too', async () => {
    const db = backend.db.db;
    const { ctx, settle } = testContext(backend);
    await db.execute(sql`TRUNCATE jobs CASCADE`);
    expect(await deltaRows(db), 'TRUNCATE empties the deltas').toBe(0);
    await expectExact('empty');
    const { session } = await registerWorker(ctx, { worker_id: 'counts-a', hostname: 'a', cpus: 4 });
    // Known and down: the 64-CPU job below is admitted and waits for it.
    await registerWorker(ctx, { worker_id: 'counts-big', hostname: 'big', cpus: 64 });
    await db.execute(sql`UPDATE workers SET status = 'down' WHERE id = 'counts-big'`);
    const ids: number[] = [];
    for (let i = 0; i < 6; i++) ids.push((await submitJob(ctx, { script: 'true', cpus: 1 })).id);
    const big = await submitJob(ctx, { script: 'true', cpus: 64 });
    await settle();
    await expectExact('submitted');
    expect(Object.values(await readJobCounts(ctx)).reduce((a, b) => a + b, 0)).toBe(7);

    await runSchedulingPass(ctx);
    await expectExact('placed');
    const running = await query<{ id: string; attempt: number }>(
      db,
      sql`SELECT id, attempt FROM jobs WHERE state = 'RUNNING' ORDER BY id`,
    );
    expect(running).toHaveLength(4);
    const [r0, r1, r2, r3] = running.map((r) => ({ id: Number(r.id), attempt: Number(r.attempt) }));
    if (!r0 || !r1 || !r2 || !r3) throw new Error('four running jobs expected');
    // Started without a claim (as from a pushed assignment): the report carries the session.
    await reportStarted(ctx, r0.id, { worker_id: 'counts-a', attempt: r0.attempt, session });
    await expectExact('started (no state change)');
    const w = { worker_id: 'counts-a' };
    await finishAssignment(ctx, r0.id, { ...w, attempt: r0.attempt, outcome: 'exited', exit_code: '0:0' });
    await finishAssignment(ctx, r1.id, { ...w, attempt: r1.attempt, outcome: 'exited', exit_code: '3:0' });
    await finishAssignment(ctx, r2.id, { ...w, attempt: r2.attempt, outcome: 'timeout', exit_code: '0:9' });
    await expectExact('finished');
    await reportStarted(ctx, r3.id, { worker_id: 'counts-a', attempt: r3.attempt, session });
    await cancelJob(ctx, r3.id); // started: marked, the agent reports CANCELLED
    await expectExact('cancel requested');
    await finishAssignment(ctx, r3.id, {
      ...w,
      attempt: r3.attempt,
      outcome: 'cancelled',
      exit_code: '0:15',
    });
    await cancelJob(ctx, big.id);
    await settle();
    await expectExact('cancelled');
    await runSchedulingPass(ctx);
    await settle();
    await expectExact('placed again');

    // Any statement on jobs counts, not only the domain's: a reaper-style NODE_FAIL, a requeue, a delete.
    await db.execute(sql`UPDATE jobs SET state = 'NODE_FAIL' WHERE id = ${r0.id}`);
    await db.execute(sql`UPDATE jobs SET state = 'PENDING' WHERE id = ${r2.id}`);
    await db.execute(sql`DELETE FROM jobs WHERE id IN (${r1.id}, ${ids[5] ?? 0}) AND state <> 'RUNNING'`);
    await expectExact('direct SQL');
    // A statement that changes no state (or no row) appends nothing.
    const before = await deltaRows(db);
    await db.execute(sql`UPDATE jobs SET reason = 'touched'`);
    await db.execute(sql`UPDATE jobs SET state = 'RUNNING' WHERE false`);
    expect(await deltaRows(db)).toBe(before);

    const truth = await groupByCounts(db);
    expect((await getDashboard(ctx)).jobs).toEqual(truth);
    const metrics = await renderMetrics(ctx);
    for (const state of JOB_STATES) {
      expect(metrics).toContain(`conductor_jobs{state="${state}"} ${truth[state]}\n`);
    }

    // Compaction: one row per state with jobs, same counts.
    const { before: had, after } = await compactJobCounts(db);
    expect(had).toBe(before);
    expect(after).toBe(Object.values(truth).filter((n) => n !== 0).length);
    expect(await deltaRows(db)).toBe(after);
    await expectExact('compacted');
    expect(await compactJobCounts(db)).toEqual({ before: after, after });
    await checkInvariants(db);
  });

  it('stay exact under concurrent submits, passes, finishes and cancels, with and without compactions among them', async () => {
    const db = backend.db.db;
    const { ctx, settle } = testContext(backend);
    await db.execute(sql`TRUNCATE jobs, workers CASCADE`);
    await db.execute(
      sql`UPDATE cluster_state SET allocated_cpus = 0, allocated_memory_mb = 0, allocated_gpus = 0 WHERE id = 1`,
    );
    for (const id of ['burst-a', 'burst-b', 'burst-c']) {
      await registerWorker(ctx, { worker_id: id, hostname: id, cpus: 8 });
    }
    const finishSome = async (outcome: 'exited' | 'timeout', exit: `${number}:${number}`, limit: number) => {
      const rows = await query<{ id: string; attempt: number; node: string }>(
        db,
        sql`SELECT id, attempt, node FROM jobs WHERE state = 'RUNNING' ORDER BY random() LIMIT ${limit}`,
      );
      await Promise.all(
        rows.map((r) =>
          finishAssignment(ctx, Number(r.id), {
            worker_id: r.node,
            attempt: Number(r.attempt),
            outcome,
            exit_code: exit,
          }).catch(() => undefined),
        ),
      );
    };
    const cancelSome = async (limit: number) => {
      const rows = await query<{ id: string }>(
        db,
        sql`SELECT id FROM jobs WHERE state IN ('PENDING', 'RUNNING') ORDER BY random() LIMIT ${limit}`,
      );
      await Promise.all(rows.map((r) => cancelJob(ctx, Number(r.id)).catch(() => undefined)));
    };
    for (const compacting of [false, true, false, true]) {
      const work: Promise<unknown>[] = [];
      for (let i = 0; i < 30; i++) work.push(submitJob(ctx, { script: 'true', cpus: 1 + (i % 3) }));
      work.push(runSchedulingPass(ctx), runSchedulingPass(ctx));
      work.push(
        finishSome('exited', '0:0', 6),
        finishSome('exited', '1:0', 4),
        finishSome('timeout', '0:9', 2),
      );
      work.push(cancelSome(5));
      if (compacting) for (let i = 0; i < 4; i++) work.push(compactJobCounts(db));
      await Promise.all(work);
      await settle();
      await expectExact(`burst (compactions: ${compacting})`);
      await Promise.all([runSchedulingPass(ctx), compactJobCounts(db), finishSome('exited', '0:0', 8)]);
      await settle();
      await expectExact(`after the burst (compactions: ${compacting})`);
    }
    expect(Object.values(await readJobCounts(ctx)).reduce((a, b) => a + b, 0)).toBe(120);
    await checkInvariants(db);
  });

  it('a read past COMPACT_AT delta rows compacts them after the response', async () => {
    const db = backend.db.db;
    const { ctx, settle } = testContext(backend);
    const truth = await groupByCounts(db);
    // Net-zero noise: COMPACT_AT + 2 rows that cancel out.
    await db.execute(
      sql`INSERT INTO job_state_deltas (state, n)
          SELECT 'PENDING', CASE WHEN g % 2 = 0 THEN 1 ELSE -1 END FROM generate_series(1, ${COMPACT_AT + 2}::int) g`,
    );
    expect(await readJobCounts(ctx)).toEqual(truth);
    await settle();
    expect(await deltaRows(db)).toBeLessThanOrEqual(JOB_STATES.length);
    expect(await readJobCounts(ctx)).toEqual(truth);
  });
});
