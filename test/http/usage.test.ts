/**
 * Usage reports (issue 18 item 2): GET /api/v1/usage/report (sreport's cluster utilization and top usage,
 * trends) over roll-ups written by the real transitions, the capacity the utilization samples add up, and
 * what a real attempt records (its allocation, not its request), on every backend.
 */
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { recordUtilizationSample } from '../../functions/domain/dashboard.ts';
import { getJob, jobAttempts, submitJob } from '../../functions/domain/jobs.ts';
import { runSchedulingPass } from '../../functions/domain/scheduler.ts';
import { query, queryOne } from '../../functions/domain/sql.ts';
import { decayedUsage } from '../../functions/domain/usage.ts';
import {
  claimAssignments,
  finishAssignment,
  registerWorker,
  reportStarted,
} from '../../functions/domain/workers.ts';
import { errorOf, type SecureApp, secureApp } from '../security/support.ts';
import { availableBackends, type Backend } from '../support/cluster.ts';

const backends = await availableBackends();
const D = Date.UTC(2026, 2, 10);
const H = 3_600_000;
const at = (t: number) => new Date(t).toISOString();

describe.each(backends)('usage reports on $name', (factory) => {
  let backend: Backend;
  let s: SecureApp;
  const db = () => backend.db.db;

  /** A job that ran from `start` to `end` and ended `state`: placed and ended by UPDATEs, as the scheduler and reports do. */
  async function ran(job: {
    cpus: number;
    account: string;
    owner: string;
    start: number;
    end: number;
    state: string;
    partition?: string;
  }) {
    const row = await queryOne<{ id: string }>(
      db(),
      sql`INSERT INTO jobs (name, script, cpus, account, owner, submit_time, eligible_time)
          VALUES ('r', 'true', ${job.cpus}, ${job.account}, ${job.owner}, ${at(job.start - H)}::timestamptz,
                  ${at(job.start - H)}::timestamptz) RETURNING id`,
    );
    const id = Number(row?.id);
    await db().execute(
      sql`UPDATE jobs SET state = 'RUNNING', node = 'n1', partition = ${job.partition ?? 'batch'}, attempt = 1,
            start_time = ${at(job.start)}::timestamptz WHERE id = ${id}`,
    );
    await db().execute(
      sql`UPDATE jobs SET state = ${job.state}, end_time = ${at(job.end)}::timestamptz WHERE id = ${id}`,
    );
  }

  const report = async (q: string) => {
    const res = await s.request('GET', `/api/v1/usage/report?${q}`);
    expect(res.status, await res.clone().text()).toBe(200);
    return (await res.json()) as {
      start: string;
      end: string;
      reported_cpu_seconds: number;
      rows: Record<string, unknown>[];
    };
  };

  beforeAll(async () => {
    backend = await factory.create({ keyPrefix: `usage-${Date.now()}:` });
    s = secureApp(backend);
    await ran({
      cpus: 4,
      account: 'physics',
      owner: 'ana',
      start: D + 10 * H,
      end: D + 12 * H,
      state: 'COMPLETED',
    });
    await ran({ cpus: 2, account: 'chem', owner: 'bo', start: D + 23 * H, end: D + 25 * H, state: 'FAILED' });
    await ran({
      cpus: 1,
      account: 'physics',
      owner: 'bo',
      start: D - H / 2,
      end: D + H / 2,
      state: 'COMPLETED',
    });
    // Ten CPUs offered through the day D.
    await db().execute(
      sql`INSERT INTO capacity_hourly (bucket, cpu_seconds, samples)
          SELECT h, 36000, 60 FROM generate_series(${at(D)}::timestamptz, ${at(D + 23 * H)}::timestamptz, interval '1 hour') h`,
    );
  });
  afterAll(async () => backend?.close());

  it('cluster utilization: allocated from the roll-ups, reported from the capacity, idle the rest', async () => {
    const r = await report(`report=cluster-utilization&start=${at(D)}&end=${at(D + 24 * H)}`);
    expect(r).toMatchObject({ start: at(D), end: at(D + 24 * H), reported_cpu_seconds: 864000 });
    expect(r.rows).toEqual([
      {
        allocated: 4 * 7200 + 2 * 3600 + 1800,
        down: 0,
        planned_down: 0,
        idle: 864000 - 37800,
        planned: 0,
        reported: 864000,
        gpu_seconds: 0,
        jobs: 2, // ana's, and bo's physics job (bo's chem job ended the next day)
        attempts: 2,
      },
    ]);
  });

  it('top users (per account, or grouped) and top accounts, most used first; filters and top count', async () => {
    const period = `start=${at(D)}&end=${at(D + 24 * H)}`;
    const users = await report(`report=user-topusage&${period}`);
    expect(users.rows.map((r) => [r.user, r.account, r.cpu_seconds])).toEqual([
      ['ana', 'physics', 28800],
      ['bo', 'chem', 7200],
      ['bo', 'physics', 1800],
    ]);
    const grouped = await report(`report=user-topusage&group=true&top=1&${period}&users=bo`);
    expect(grouped.rows).toEqual([
      {
        user: 'bo',
        account: 'chem,physics',
        cpu_seconds: 9000,
        gpu_seconds: 0,
        mem_mb_seconds: 0,
        wall_seconds: 5400,
        jobs: 1,
      },
    ]);
    const accounts = await report(`report=account-topusage&${period}&accounts=physics,chem`);
    expect(accounts.rows.map((r) => [r.account, r.cpu_seconds])).toEqual([
      ['physics', 30600],
      ['chem', 7200],
    ]);
  });

  it('stitches whole days (daily) and the hours at either side (hourly) without counting twice', async () => {
    // D-1 12:00 to D+2: the hours of D-1 from usage_hourly, D and D+1 from usage_daily.
    const all = await report(`report=account-topusage&start=${at(D - 12 * H)}&end=${at(D + 48 * H)}`);
    expect(all.rows.map((r) => [r.account, r.cpu_seconds])).toEqual([
      ['physics', 28800 + 3600],
      ['chem', 14400],
    ]);
    // Within two days, hours only; the ends go down to their hour.
    const part = await report(
      `report=account-topusage&start=${at(D + 11 * H + 59_000)}&end=${at(D + 25 * H + 1)}`,
    );
    expect(part.start).toBe(at(D + 11 * H));
    expect(part.end).toBe(at(D + 25 * H));
    expect(part.rows.map((r) => [r.account, r.cpu_seconds])).toEqual([
      ['chem', 14400],
      ['physics', 14400],
    ]);
  });

  it('trends: CPU-seconds, ends, starts and mean queue wait per partition and hour', async () => {
    const r = await report(`report=trends&start=${at(D + 10 * H)}&end=${at(D + 13 * H)}`);
    // Ana's job ended at 12:00 sharp: its end counts in the hour that begins then.
    expect(r.rows).toEqual([
      {
        bucket: at(D + 10 * H),
        partition: 'batch',
        cpu_seconds: 14400,
        jobs: 0,
        starts: 1,
        mean_wait_seconds: 3600,
      },
      {
        bucket: at(D + 11 * H),
        partition: 'batch',
        cpu_seconds: 14400,
        jobs: 0,
        starts: 0,
        mean_wait_seconds: 0,
      },
      {
        bucket: at(D + 12 * H),
        partition: 'batch',
        cpu_seconds: 0,
        jobs: 1,
        starts: 0,
        mean_wait_seconds: 0,
      },
    ]);
  });

  it('answers CSV with format=csv', async () => {
    const res = await s.request(
      'GET',
      `/api/v1/usage/report?report=account-topusage&start=${at(D)}&end=${at(D + 24 * H)}&format=csv`,
    );
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/csv/);
    expect(await res.text()).toBe(
      'account,cpu_seconds,gpu_seconds,mem_mb_seconds,wall_seconds,jobs\r\nphysics,30600,0,0,9000,2\r\nchem,7200,0,0,3600,0\r\n',
    );
  });

  it.each([
    ['report=bogus', /report is one of/],
    ['report=user-topusage&start=yesterday', /start is an ISO 8601/],
    [`report=user-topusage&start=${at(D + H)}&end=${at(D)}`, /start must be before end/],
    [`report=user-topusage&start=${at(D + 60_000)}&end=${at(D + 120_000)}`, /at least one whole hour/],
    ['report=user-topusage&format=xml', /format is json or csv/],
    ['report=user-topusage&top=0', /top/],
  ])('refuses %s with a 400 that names the problem', async (q, message) => {
    const res = await s.request('GET', `/api/v1/usage/report?${q}`);
    expect(res.status).toBe(400);
    expect((await errorOf(res)).message).toMatch(message);
  });

  it('decayedUsage weighs each account’s CPU-seconds by 2^(−age/half-life)', async () => {
    await db().execute(sql`DELETE FROM usage_hourly WHERE account LIKE 'decay-%'`);
    await db().execute(
      sql`INSERT INTO usage_hourly (bucket, account, owner, partition, node, cpu_seconds)
          VALUES (date_trunc('hour', now(), 'UTC'), 'decay-new', '', '', '', 1000),
                 (date_trunc('hour', now(), 'UTC') - interval '1 hour', 'decay-new', '', 'x', '', 1000)`,
    );
    await db().execute(
      sql`INSERT INTO usage_daily (bucket, account, owner, partition, node, cpu_seconds)
          VALUES (date_trunc('day', now(), 'UTC') - interval '10 days', 'decay-old', '', '', '', 8000)`,
    );
    const ages = await queryOne<{ a: number; b: number; c: number }>(
      db(),
      sql`SELECT extract(epoch FROM now() - (date_trunc('hour', now(), 'UTC') + interval '30 minutes'))::float8 AS a,
                 extract(epoch FROM now() - (date_trunc('hour', now(), 'UTC') - interval '30 minutes'))::float8 AS b,
                 extract(epoch FROM now() - (date_trunc('day', now(), 'UTC') - interval '10 days' + interval '12 hours'))::float8 AS c`,
    );
    const day = 86400;
    const usage = await decayedUsage(db(), day);
    const weight = (age: number) => 2 ** (-Math.max(age, 0) / day);
    expect(usage.get('decay-new')).toBeCloseTo(1000 * weight(ages!.a) + 1000 * weight(ages!.b), 0);
    expect(usage.get('decay-old')).toBeCloseTo(8000 * weight(ages!.c), 1);
    expect(usage.get('decay-old')).toBeLessThan(8000 / 2 ** 9);
    // Beyond 30 half-lives a bucket is not read at all.
    expect((await decayedUsage(db(), 3600)).has('decay-old')).toBe(false);
  });

  it('capacity_hourly adds the previous sample’s CPUs for the time since it, up to the quiet marker’s lifetime', async () => {
    await db().execute(sql`DELETE FROM utilization_samples`);
    await db().execute(sql`DELETE FROM capacity_hourly`);
    await db().execute(
      sql`INSERT INTO utilization_samples (at, total_cpus, allocated_cpus, live_workers)
          VALUES (date_trunc('minute', now()) - interval '90 minutes', 10, 0, 1),
                 (date_trunc('minute', now()) - interval '9 hours', 99, 0, 1)`,
    );
    await recordUtilizationSample(s.harness.ctx);
    const [row] = await query<{ total: string; span: number }>(
      db(),
      sql`SELECT (SELECT sum(cpu_seconds) FROM capacity_hourly) AS total,
                 extract(epoch FROM max(at) - min(at) FILTER (WHERE total_cpus = 10))::float8 AS span
          FROM utilization_samples`,
    );
    expect(Number(row?.total)).toBe(10 * Number(row?.span));
    expect(Number(row?.span)).toBeGreaterThanOrEqual(5400);
    const hours = await query<{ bucket: Date }>(
      db(),
      sql`SELECT bucket FROM capacity_hourly ORDER BY bucket`,
    );
    expect(hours.length).toBeGreaterThanOrEqual(2);
    // A gap longer than the quiet marker lasts (the control plane was down) is not bridged.
    await db().execute(sql`DELETE FROM utilization_samples`);
    await db().execute(sql`DELETE FROM capacity_hourly`);
    await db().execute(
      sql`INSERT INTO utilization_samples (at, total_cpus, allocated_cpus, live_workers)
          VALUES (date_trunc('minute', now()) - interval '7 hours', 10, 0, 1)`,
    );
    await recordUtilizationSample(testContextAgain());
    expect(await query(db(), sql`SELECT * FROM capacity_hourly`)).toEqual([]);
  });

  it('GET /api/v1/ui/usage gives each partition’s utilization: its CPU-hours over its capacity, null where none', async () => {
    const hour = Math.floor(Date.now() / H) * H - H;
    // 2 CPUs for 30 minutes in ui-batch, which offered 4 CPUs that hour; ui-idle offered 2 and ran nothing.
    await ran({
      cpus: 2,
      account: 'ui-acct',
      owner: 'ana',
      start: hour + H / 6,
      end: hour + (2 * H) / 3,
      state: 'COMPLETED',
      partition: 'ui-batch',
    });
    await db().execute(
      sql`INSERT INTO capacity_partition_hourly (bucket, partition, cpu_seconds, samples)
          VALUES (${at(hour)}::timestamptz, 'ui-batch', 4 * 3600, 60), (${at(hour)}::timestamptz, 'ui-idle', 2 * 3600, 60)`,
    );
    const res = await s.request('GET', '/api/v1/ui/usage?period=day');
    expect(res.status).toBe(200);
    const body = (await res.json()) as {
      buckets: string[];
      partitions: { partition: string; utilization_pct: (number | null)[]; capacity_cpu_hours: number[] }[];
    };
    const i = body.buckets.indexOf(at(hour));
    expect(i).toBeGreaterThanOrEqual(0); // the last hour but one, or two when the clock just turned an hour
    const batch = body.partitions.find((p) => p.partition === 'ui-batch');
    const idle = body.partitions.find((p) => p.partition === 'ui-idle');
    expect(batch?.utilization_pct[i]).toBe(25);
    expect(batch?.capacity_cpu_hours[i]).toBe(4);
    expect(idle?.utilization_pct[i]).toBe(0);
    // Every other hour of the day: nothing offered, so no utilization.
    expect(batch?.utilization_pct.filter((_, j) => j !== i).every((v) => v === null)).toBe(true);
    expect(idle?.utilization_pct).toHaveLength(24);
  });

  /** A second context: recordUtilizationSample samples once a minute per context. */
  const testContextAgain = () => secureApp(backend).harness.ctx;

  it('a real attempt records what it held (an exclusive job: the whole node) and rolls it up as it ends', async () => {
    const ctx = s.harness.ctx;
    const id = `usage-w-${backend.name.replace(/\W/g, '')}`;
    const reg = await registerWorker(ctx, { worker_id: id, hostname: id, cpus: 8, running: [] });
    const job = await submitJob(ctx, { script: 'true', cpus: 2, exclusive: true, account: 'real-acct' });
    await runSchedulingPass(ctx);
    const claim = await claimAssignments(ctx, { worker_id: id, session: reg.session, wait_s: 0 });
    const a = claim.jobs.find((j) => j.job_id === job.id);
    expect(a).toBeDefined();
    await reportStarted(ctx, job.id, { worker_id: id, attempt: a!.attempt });
    await db().execute(sql`UPDATE jobs SET start_time = now() - interval '10 seconds' WHERE id = ${job.id}`);
    await finishAssignment(ctx, job.id, {
      worker_id: id,
      attempt: a!.attempt,
      exit_code: '0:0',
      outcome: 'exited',
      max_rss_kb: 5000,
    });
    const done = await getJob(db(), job.id);
    expect(done.state).toBe('COMPLETED');
    const [attempt] = await jobAttempts(db(), done);
    expect(attempt).toMatchObject({ attempt: 1, node: id, cpus: 8, memory_mb: 0, gpus: 0, max_rss_kb: 5000 });
    const elapsed = (Date.parse(attempt!.end_time!) - Date.parse(attempt!.start_time!)) / 1000;
    expect(attempt!.cpu_seconds).toBeCloseTo(8 * elapsed, 1);
    const rolled = await queryOne<{ cpu: string; completed: number; rss: string }>(
      db(),
      sql`SELECT sum(cpu_seconds) AS cpu, sum(completed)::int AS completed, max(max_rss_kb) AS rss
          FROM usage_hourly WHERE account = 'real-acct' AND node = ${id}`,
    );
    expect(Number(rolled?.cpu)).toBeCloseTo(8 * elapsed, 1);
    expect(rolled).toMatchObject({ completed: 1 });
    expect(Number(rolled?.rss)).toBe(5000);
  });
});
