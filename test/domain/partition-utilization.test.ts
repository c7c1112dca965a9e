/**
 * Utilization per partition (issue 18 item 2, the usage page's trends): each utilization sample records the
 * live CPUs per partition (a node in two partitions counts for both, max_cpus_per_node caps a node's), the next
 * sample adds them to capacity_partition_hourly for the time since, and the usage page's per-partition
 * utilization_pct equals a recomputation (here, in TypeScript) of usage ÷ capacity per partition and hour over a
 * small random history, on every backend.
 */
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Principal } from '../../functions/domain/auth.ts';
import { recordUtilizationSample } from '../../functions/domain/dashboard.ts';
import { putPartition } from '../../functions/domain/partitions.ts';
import { query, queryOne } from '../../functions/domain/sql.ts';
import { usageCharts } from '../../functions/domain/usage-charts.ts';
import { registerWorker } from '../../functions/domain/workers.ts';
import { prng } from '../registry/contract.ts';
import { availableBackends, type Backend, testContext } from '../support/cluster.ts';

const backends = await availableBackends();
const admin: Principal = { kind: 'token', tokenId: 8, name: 'ops', owner: 'ops', scopes: ['admin'] };

/** A failing seed replays the same history. */
function random(seed: number) {
  const next = prng(seed);
  return {
    int: (lo: number, hi: number) => lo + Math.floor(next() * (hi - lo + 1)),
    pick: <T>(items: readonly T[]): T => items[Math.floor(next() * items.length)] as T,
    chance: (p: number) => next() < p,
  };
}

const HOUR = 3_600_000;

/**
 * The nodes and, written out by hand, the partitions each is in: node lists `cpu` = n[1-3], `gpu` = n3,g[1-2],
 * `capped` = g[1-2] (at most 4 CPUs of a node), `decl` declared by its agent, `default` for a node in none.
 */
const NODES: Record<string, { declares: string[]; in: string[] }> = {
  'pu-n1': { declares: [], in: ['cpu'] },
  'pu-n2': { declares: [], in: ['cpu'] },
  'pu-n3': { declares: [], in: ['cpu', 'gpu'] },
  'pu-g1': { declares: [], in: ['gpu', 'capped'] },
  'pu-g2': { declares: ['decl'], in: ['gpu', 'capped', 'decl'] },
  'pu-d1': { declares: [], in: ['default'] },
};
const CAPS: Record<string, number> = { capped: 4 };
const PARTITIONS = ['capped', 'cpu', 'decl', 'default', 'gpu'];

/** Seconds of [t0, t1) (ms) in each UTC hour, keyed by the hour's start. */
function perHour(t0: number, t1: number, add: (hour: number, seconds: number) => void) {
  for (let h = Math.floor(t0 / HOUR) * HOUR; h < t1; h += HOUR) {
    const s = (Math.min(t1, h + HOUR) - Math.max(t0, h)) / 1000;
    if (s > 0) add(h, s);
  }
}

describe.each(backends)('utilization per partition on $name', (factory) => {
  let backend: Backend;
  const db = () => backend.db.db;
  beforeAll(async () => {
    backend = await factory.create();
  });
  afterAll(async () => backend?.close());

  it('samples CPUs per partition, bridges them per hour, and usage ÷ capacity per partition matches a recomputation', async () => {
    const seed = Date.now() % 100_000;
    const rnd = random(seed);
    const { ctx } = testContext(backend);
    await putPartition(ctx, 'cpu', { nodes: 'pu-n[1-3]' }, admin);
    await putPartition(ctx, 'gpu', { nodes: 'pu-n3,pu-g[1-2]' }, admin);
    await putPartition(ctx, 'capped', { nodes: 'pu-g[1-2]', max_cpus_per_node: CAPS.capped }, admin);
    for (const [id, node] of Object.entries(NODES)) {
      await registerWorker(ctx, { worker_id: id, hostname: id, cpus: 8, partitions: node.declares });
    }
    await db().execute(sql`DELETE FROM utilization_samples`);
    await db().execute(sql`DELETE FROM capacity_partition_hourly`);

    // Capacity: each step sets which nodes are live and their CPUs, moves the last sample back (the time since
    // it is what the next sample bridges) and samples.
    const capacity = new Map<string, number>(); // `${partition} ${hour}` -> CPU-seconds
    let previous: Record<string, number> | undefined;
    for (let step = 0; step < 5; step++) {
      const expected: Record<string, number> = {};
      for (const [id, node] of Object.entries(NODES)) {
        // pu-n3 (in cpu and gpu) is always live, so both partitions have capacity when usage comes.
        const live = id === 'pu-n3' || rnd.chance(0.75);
        const cpus = rnd.int(1, 16);
        await db().execute(
          sql`UPDATE workers SET cpus = ${cpus}, status = ${live ? 'ready' : 'down'}, last_heartbeat = now()
              WHERE id = ${id}`,
        );
        if (!live) continue;
        for (const p of node.in) expected[p] = (expected[p] ?? 0) + Math.min(cpus, CAPS[p] ?? cpus);
      }
      const back = rnd.int(20, 240);
      await db().execute(
        sql`DELETE FROM utilization_samples WHERE at < (SELECT max(at) FROM utilization_samples)`,
      );
      await db().execute(sql`UPDATE utilization_samples SET at = at - make_interval(mins => ${back})`);
      const before = await queryOne<{ at: Date | string }>(db(), sql`SELECT at FROM utilization_samples`);
      await recordUtilizationSample(testContext(backend).ctx);
      const sample = await queryOne<{ at: Date | string; partition_cpus: Record<string, number> | string }>(
        db(),
        sql`SELECT at, partition_cpus FROM utilization_samples ORDER BY at DESC LIMIT 1`,
      );
      const recorded =
        typeof sample?.partition_cpus === 'string'
          ? JSON.parse(sample.partition_cpus)
          : sample?.partition_cpus;
      expect(recorded, `seed ${seed}, step ${step}`).toEqual(expected);
      if (previous && before) {
        const cpus = previous;
        perHour(new Date(before.at).getTime(), new Date(sample?.at ?? 0).getTime(), (hour, s) => {
          for (const [p, n] of Object.entries(cpus)) {
            capacity.set(`${p} ${hour}`, (capacity.get(`${p} ${hour}`) ?? 0) + n * s);
          }
        });
      }
      previous = expected;
    }
    const stored = await query<{ bucket: Date | string; partition: string; cpu_seconds: string | number }>(
      db(),
      sql`SELECT bucket, partition, cpu_seconds FROM capacity_partition_hourly`,
    );
    expect(
      new Map(stored.map((r) => [`${r.partition} ${new Date(r.bucket).getTime()}`, Number(r.cpu_seconds)])),
      `seed ${seed}`,
    ).toEqual(capacity);

    // Usage: finished attempts in the partitions (and in none), rolled up by the job_attempts trigger.
    const now = Math.floor(Date.now() / 1000) * 1000;
    const usage = new Map<string, number>();
    for (let n = 0; n < 12; n++) {
      // The first: in `cpu` over the last minutes, which the last sample bridged.
      const partition = n === 0 ? 'cpu' : rnd.pick([...PARTITIONS, '']);
      const cpus = rnd.int(1, 4);
      const end = now - (n === 0 ? 120 : rnd.int(60, 6 * 3600)) * 1000;
      const start = end - (n === 0 ? 600 : rnd.int(60, 3 * 3600)) * 1000;
      const [job] = await query<{ id: number }>(
        db(),
        sql`INSERT INTO jobs (name, script, cpus, state, partition, attempt, submit_time, start_time, end_time, exit_code)
            VALUES ('pu', 'true', ${cpus}, 'COMPLETED', ${partition || null}, 1, ${new Date(start).toISOString()}::timestamptz,
                    ${new Date(start).toISOString()}::timestamptz, ${new Date(end).toISOString()}::timestamptz, '0:0')
            RETURNING id`,
      );
      await db().execute(
        sql`INSERT INTO job_attempts (job_id, attempt, node, start_time, end_time, state, exit_code, requeued, cpus,
                                      partition, eligible_time)
            VALUES (${job?.id}, 1, 'pu-n1', ${new Date(start).toISOString()}::timestamptz,
                    ${new Date(end).toISOString()}::timestamptz, 'COMPLETED', '0:0', false, ${cpus},
                    ${partition || null}, ${new Date(start).toISOString()}::timestamptz)`,
      );
      perHour(start, end, (hour, s) => {
        const key = `${partition || '(default)'} ${hour}`;
        usage.set(key, (usage.get(key) ?? 0) + cpus * s);
      });
    }

    const charts = await usageCharts(ctx, { period: 'day' });
    const hours = charts.buckets.map((b) => Date.parse(b));
    const names = new Set([...capacity.keys(), ...usage.keys()].map((k) => k.split(' ')[0]));
    expect(charts.partitions.map((p) => p.partition)).toEqual([...names].sort());
    for (const p of charts.partitions) {
      const pct = hours.map((h) => {
        const offered = capacity.get(`${p.partition} ${h}`) ?? 0;
        const used = usage.get(`${p.partition} ${h}`) ?? 0;
        return offered ? Math.min(100, Math.round((used / offered) * 10_000) / 100) : null;
      });
      expect(p.utilization_pct, `seed ${seed}, partition ${p.partition}`).toEqual(pct);
      expect(p.capacity_cpu_hours).toEqual(
        hours.map((h) => Math.round(((capacity.get(`${p.partition} ${h}`) ?? 0) / 3600) * 10_000) / 10_000),
      );
    }
    // cpu used some of what it offered this hour, so the comparison saw a real ratio.
    const cpu = charts.partitions.find((p) => p.partition === 'cpu');
    expect(cpu?.utilization_pct.some((v) => v !== null && v > 0 && v < 100)).toBe(true);
  });
});
