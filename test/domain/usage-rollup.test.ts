/**
 * Usage roll-ups (issue 18 item 2): usage_hourly and usage_daily, kept by the job_attempts trigger, equal a
 * recomputation (here, in TypeScript) from job_attempts ⋈ jobs, over random job histories driven through the
 * real transitions (placements, ends, requeues; ends batched and concurrent), on Postgres and PGlite.
 */
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Database } from '../../functions/domain/ports.ts';
import { query } from '../../functions/domain/sql.ts';
import { createPgliteDatabase, createPostgresDatabase, type TestDatabase } from '../support/databases.ts';

/** mulberry32: a failing seed replays the same history. */
function random(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    next,
    int: (lo: number, hi: number) => lo + Math.floor(next() * (hi - lo + 1)),
    pick: <T>(items: readonly T[]): T => items[Math.floor(next() * items.length)] as T,
  };
}

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const END_STATES = ['COMPLETED', 'FAILED', 'CANCELLED', 'TIMEOUT', 'NODE_FAIL', 'OUT_OF_MEMORY'] as const;

interface AttemptRow {
  job_id: string;
  attempt: number;
  node: string | null;
  start_time: Date | string | null;
  end_time: Date | string;
  state: string;
  requeued: boolean;
  cpus: number | null;
  memory_mb: number | null;
  gpus: number | null;
  partition: string | null;
  max_rss_kb: string | number | null;
  eligible_time: Date | string | null;
  account: string | null;
  owner: string | null;
}

const COUNTERS = [
  'attempts',
  'requeued',
  'completed',
  'failed',
  'cancelled',
  'timeout',
  'node_fail',
  'out_of_memory',
  'starts',
] as const;
const SECONDS = ['cpu_seconds', 'gpu_seconds', 'mem_mb_seconds', 'wall_seconds', 'wait_seconds'] as const;
type Bucket = Record<(typeof COUNTERS)[number] | (typeof SECONDS)[number], number> & {
  max_rss_kb: number | null;
};

const ms = (t: Date | string) => new Date(t).getTime();

/** The roll-up as documented, recomputed from the attempts: the reference the trigger must equal. */
function recompute(attempts: AttemptRow[], size: number): Map<string, Bucket> {
  const out = new Map<string, Bucket>();
  for (const a of attempts) {
    const end = ms(a.end_time);
    const t0 = a.start_time === null ? end : ms(a.start_time);
    const t1 = Math.max(end, t0);
    const key = (b: number) =>
      [new Date(b).toISOString(), a.account ?? '', a.owner ?? '', a.partition ?? '', a.node ?? ''].join('|');
    for (let b = Math.floor(t0 / size) * size; b <= t1; b += size) {
      const seconds = Math.max(0, Math.min(t1, b + size) - Math.max(t0, b)) / 1000;
      const row =
        out.get(key(b)) ??
        ({ max_rss_kb: null, ...Object.fromEntries([...COUNTERS, ...SECONDS].map((c) => [c, 0])) } as Bucket);
      out.set(key(b), row);
      row.cpu_seconds += (a.cpus ?? 0) * seconds;
      row.gpu_seconds += (a.gpus ?? 0) * seconds;
      row.mem_mb_seconds += (a.memory_mb ?? 0) * seconds;
      row.wall_seconds += seconds;
      if (a.max_rss_kb !== null) row.max_rss_kb = Math.max(row.max_rss_kb ?? 0, Number(a.max_rss_kb));
      if (b === Math.floor(t1 / size) * size) {
        row.attempts++;
        if (a.requeued) row.requeued++;
        else row[a.state.toLowerCase() as (typeof COUNTERS)[number]]++;
      }
      if (a.start_time !== null && b === Math.floor(t0 / size) * size) {
        row.starts++;
        row.wait_seconds += Math.max(0, t0 - ms(a.eligible_time ?? a.start_time)) / 1000;
      }
    }
  }
  return out;
}

async function stored(db: Database, table: 'usage_hourly' | 'usage_daily'): Promise<Map<string, Bucket>> {
  const rows = await query<Record<string, string | number | Date | null>>(
    db,
    sql`SELECT * FROM ${sql.identifier(table)}`,
  );
  return new Map(
    rows.map((r) => [
      [new Date(r.bucket as string).toISOString(), r.account, r.owner, r.partition, r.node].join('|'),
      {
        max_rss_kb: r.max_rss_kb === null ? null : Number(r.max_rss_kb),
        ...Object.fromEntries([...COUNTERS, ...SECONDS].map((c) => [c, Number(r[c])])),
      } as Bucket,
    ]),
  );
}

const rounded = (buckets: Map<string, Bucket>) =>
  Object.fromEntries(
    [...buckets.entries()]
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([k, v]) => [
        k,
        Object.fromEntries(
          Object.entries(v).map(([c, n]) => [c, typeof n === 'number' ? Math.round(n * 1000) / 1000 : n]),
        ),
      ]),
  );

async function expectRollUpsMatch(db: Database) {
  const attempts = await query<AttemptRow>(
    db,
    sql`SELECT a.*, j.account, j.owner FROM job_attempts a JOIN jobs j ON j.id = a.job_id`,
  );
  expect(rounded(await stored(db, 'usage_hourly'))).toEqual(rounded(recompute(attempts, HOUR)));
  expect(rounded(await stored(db, 'usage_daily'))).toEqual(rounded(recompute(attempts, DAY)));
  return attempts.length;
}

const backends: [string, () => Promise<TestDatabase>][] = [
  ['postgres', createPostgresDatabase],
  ['pglite', createPgliteDatabase],
];

describe.each(backends)('usage roll-ups on %s', (_name, create) => {
  let database: TestDatabase;
  beforeAll(async () => {
    database = await create();
  });
  afterAll(async () => database?.close());

  const db = () => database.db;
  const iso = (t: number) => new Date(t).toISOString();

  async function insertJob(fields: {
    cpus: number;
    gpus: number;
    memoryMb: number | null;
    account: string | null;
    owner: string | null;
    eligible: number;
  }): Promise<number> {
    const [row] = await query<{ id: string }>(
      db(),
      sql`INSERT INTO jobs (name, script, cpus, gpus, memory_mb, account, owner, submit_time, eligible_time)
          VALUES ('u', 'true', ${fields.cpus}, ${fields.gpus}, ${fields.memoryMb}, ${fields.account}, ${fields.owner},
                  ${iso(fields.eligible)}::timestamptz, ${iso(fields.eligible)}::timestamptz)
          RETURNING id`,
    );
    return Number(row?.id);
  }

  const place = (id: number, node: string, partition: string | null, start: number | null) =>
    db().execute(
      sql`UPDATE jobs SET state = 'RUNNING', node = ${node}, partition = ${partition}, attempt = attempt + 1,
            start_time = ${start === null ? null : iso(start)}::timestamptz, end_time = NULL, max_rss_kb = NULL
          WHERE id = ${id}`,
    );

  /** Ends several running jobs in ONE statement (as a batch of agent reports or a lost node does). */
  function endAll(ends: { id: number; state: string; end: number; rss: number | null }[]) {
    if (ends.length === 0) return Promise.resolve();
    return db().execute(
      sql`UPDATE jobs SET state = e.state, requeued_from = CASE WHEN e.state = 'PENDING' THEN 'NODE_FAIL' END,
            end_time = e.end_time,
            node = CASE WHEN e.state = 'PENDING' THEN NULL ELSE jobs.node END, max_rss_kb = e.rss
          FROM (SELECT unnest(${`{${ends.map((e) => e.id).join(',')}}`}::bigint[]) AS id,
                       unnest(${`{${ends.map((e) => e.state).join(',')}}`}::text[]) AS state,
                       unnest(${`{${ends.map((e) => iso(e.end)).join(',')}}`}::timestamptz[]) AS end_time,
                       unnest(${`{${ends.map((e) => e.rss ?? 'NULL').join(',')}}`}::bigint[]) AS rss) e
          WHERE jobs.id = e.id AND jobs.state = 'RUNNING'`,
    );
  }

  it('splits an attempt across the hours and days it ran, counts its end and its wait where they happened', async () => {
    const day = Date.UTC(2026, 0, 5);
    const id = await insertJob({
      cpus: 2,
      gpus: 1,
      memoryMb: 100,
      account: 'physics',
      owner: 'ana',
      eligible: day + 22 * HOUR,
    });
    await place(id, 'n1', 'batch', day + 23 * HOUR + 30 * 60_000);
    await endAll([{ id, state: 'COMPLETED', end: day + DAY + HOUR + 15 * 60_000, rss: 2048 }]);
    const hours = await query<{
      bucket: Date;
      cpu_seconds: string;
      completed: number;
      starts: number;
      wait_seconds: string;
    }>(
      db(),
      sql`SELECT bucket, cpu_seconds, completed, starts, wait_seconds FROM usage_hourly
          WHERE account = 'physics' ORDER BY bucket`,
    );
    expect(
      hours.map((h) => [new Date(h.bucket).toISOString(), Number(h.cpu_seconds), h.completed, h.starts]),
    ).toEqual([
      ['2026-01-05T23:00:00.000Z', 3600, 0, 1],
      ['2026-01-06T00:00:00.000Z', 7200, 0, 0],
      ['2026-01-06T01:00:00.000Z', 1800, 1, 0],
    ]);
    expect(Number(hours[0]?.wait_seconds)).toBe(5400);
    const days = await query<{
      bucket: Date;
      cpu_seconds: string;
      gpu_seconds: string;
      mem_mb_seconds: string;
      max_rss_kb: string;
    }>(
      db(),
      sql`SELECT bucket, cpu_seconds, gpu_seconds, mem_mb_seconds, max_rss_kb FROM usage_daily
          WHERE account = 'physics' ORDER BY bucket`,
    );
    expect(
      days.map((d) => [
        new Date(d.bucket).toISOString(),
        Number(d.cpu_seconds),
        Number(d.gpu_seconds),
        Number(d.mem_mb_seconds),
        Number(d.max_rss_kb),
      ]),
    ).toEqual([
      ['2026-01-05T00:00:00.000Z', 3600, 1800, 180000, 2048],
      ['2026-01-06T00:00:00.000Z', 9000, 4500, 450000, 2048],
    ]);
  });

  it.each([1, 2, 3])(
    'equal a recomputation from job_attempts ⋈ jobs over a random history (seed %i)',
    async (seed) => {
      const r = random(seed);
      const origin = Date.UTC(2026, 1, 1) + seed * 20 * DAY;
      const jobs: { id: number; attempts: number; at: number }[] = [];
      for (let i = 0; i < 40; i++) {
        const eligible = origin + r.int(0, 3 * DAY);
        jobs.push({
          id: await insertJob({
            cpus: r.int(1, 16),
            gpus: r.pick([0, 0, 1, 4]),
            memoryMb: r.pick([null, 512, 4096]),
            account: r.pick([null, 'physics', 'chem', 'bio']),
            owner: r.pick([null, 'ana', 'bo']),
            eligible,
          }),
          attempts: r.int(1, 3),
          at: eligible,
        });
      }
      // Waves: some jobs start, then end together (one statement) or concurrently (one statement each).
      let live = jobs.filter((j) => j.attempts > 0);
      while (live.length > 0) {
        const wave = live.filter(() => r.next() < 0.6);
        for (const j of wave) {
          // Starts on an hour boundary sometimes; some attempts never start (null start time).
          const start =
            r.next() < 0.15 ? null : j.at + (r.next() < 0.2 ? HOUR - (j.at % HOUR) : r.int(0, 5 * HOUR));
          await place(j.id, r.pick(['n1', 'n2', 'n3']), r.pick([null, 'batch', 'gpu']), start);
          const length = r.pick([0, r.int(1, 3600_000), r.int(1, 60 * HOUR), DAY]);
          j.at = (start ?? j.at) + length;
          j.attempts--;
        }
        const ends = wave.map((j) => ({
          id: j.id,
          state: j.attempts > 0 ? 'PENDING' : r.pick(END_STATES),
          end: j.at,
          rss: r.next() < 0.3 ? null : r.int(1, 10_000_000),
        }));
        const together = ends.filter(() => r.next() < 0.5);
        await Promise.all([
          endAll(together),
          ...ends.filter((e) => !together.includes(e)).map((e) => endAll([e])),
        ]);
        live = live.filter((j) => j.attempts > 0);
      }
      expect(await expectRollUpsMatch(db())).toBeGreaterThan(40);
    },
  );
});
