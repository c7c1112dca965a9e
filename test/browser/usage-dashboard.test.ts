/**
 * The dashboard's usage page in a real headless Chromium against a real control plane with a real agent:
 * jobs of two accounts run and end, and the page charts the cluster's utilization, the accounts' CPU-hours and
 * the partitions' queue wait and utilization from the usage roll-ups; switching to the last month brings in an
 * older job's account and a partition's capacity that the last day does not show.
 */
import { copyFileSync, mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { sql } from 'drizzle-orm';
import { type Browser, chromium, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { query } from '../../functions/domain/sql.ts';
import type { RunningServer } from '../../functions/node/server.ts';
import { AgentProcess, eventually } from '../support/agent-process.ts';
import {
  availableBackends,
  type Backend,
  type RecordingLogger,
  startTestServer,
  testConfig,
} from '../support/cluster.ts';

const ARTIFACTS = fileURLToPath(new URL('./artifacts/', import.meta.url));
const DOCS = fileURLToPath(new URL('../../docs/', import.meta.url));
const CHROMIUM = '/usr/bin/chromium';

const factory = (await availableBackends()).at(-1);
if (!factory) throw new Error('no backend');

interface Job {
  id: number;
  state: string;
}

describe('dashboard usage page in headless Chromium', () => {
  let backend: Backend;
  let server: RunningServer & { logger: RecordingLogger };
  let browser: Browser;
  let page: Page;
  const agents: AgentProcess[] = [];
  const problems: string[] = [];

  beforeAll(async () => {
    mkdirSync(ARTIFACTS, { recursive: true });
    backend = await factory.create();
    server = await startTestServer(
      backend,
      testConfig({ heartbeatIntervalSeconds: 1, workerTtlSeconds: 5, scheduleIntervalSeconds: 1 }),
    );
    agents.push(new AgentProcess('usage-node', server.url, { cpus: 4 }));
    await Promise.all(agents.map((a) => a.registered()));
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
    });
    page = await browser.newPage({ viewport: { width: 1200, height: 1400 }, timezoneId: 'America/Chicago' });
    page.on('console', (m) => {
      if (m.type() === 'error' && /Content Security Policy/i.test(m.text())) problems.push(m.text());
    });
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  });
  afterAll(async () => {
    await browser?.close();
    await Promise.allSettled(agents.map((a) => a.stop().catch(() => a.kill9())));
    await server?.close();
    await backend?.close();
  });

  const api = async <T>(method: string, path: string, body?: unknown): Promise<T> => {
    const res = await fetch(`${server.url}${path}`, {
      method,
      headers: { 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${await res.text()}`);
    return (await res.json()) as T;
  };
  const tableRows = async () =>
    (await page.locator('#usage-accounts-table tbody tr').allTextContents()).map((r) => r.trim());
  const legend = async (chart: string) =>
    (await page.locator(`#${chart} .u-legend .u-label`).allTextContents()).map((l) => l.trim());

  it('charts the accounts’ CPU-hours, the utilization and the queue wait of jobs that ran', async () => {
    const jobs = [
      await api<Job>('POST', '/api/v1/jobs/submit', { script: 'sleep 2', cpus: 2, account: 'physics' }),
      await api<Job>('POST', '/api/v1/jobs/submit', { script: 'sleep 2', cpus: 1, account: 'chemistry' }),
    ];
    await eventually(
      async () => {
        for (const job of jobs) {
          if ((await api<Job>('GET', `/api/v1/jobs/${job.id}`)).state !== 'COMPLETED') return false;
        }
        return true;
      },
      { what: 'both jobs COMPLETED', timeoutMs: 30_000 },
    );
    // What the once-a-minute utilization samples add up: 4 CPUs offered this hour.
    await query(
      backend.db.db,
      sql`INSERT INTO capacity_hourly (bucket, cpu_seconds, samples)
          VALUES (date_trunc('hour', now(), 'UTC'), 4 * 3600, 60)
          ON CONFLICT (bucket) DO UPDATE SET cpu_seconds = 4 * 3600, samples = 60`,
    );
    // And per partition: the agent's node is in the default partition.
    await query(
      backend.db.db,
      sql`INSERT INTO capacity_partition_hourly (bucket, partition, cpu_seconds, samples)
          VALUES (date_trunc('hour', now(), 'UTC'), 'default', 4 * 3600, 60)
          ON CONFLICT (bucket, partition) DO UPDATE SET cpu_seconds = 4 * 3600, samples = 60`,
    );
    const data = await api<{
      accounts: { account: string; total_cpu_hours: number }[];
      utilization_pct: (number | null)[];
      partitions: { partition: string; mean_wait_s: (number | null)[]; utilization_pct: (number | null)[] }[];
    }>('GET', '/api/v1/ui/usage?period=day');
    const physics = data.accounts.find((a) => a.account === 'physics');
    const chemistry = data.accounts.find((a) => a.account === 'chemistry');
    // 2 CPUs × ~2 s and 1 CPU × ~2 s: physics used about twice chemistry's CPU-hours.
    expect(physics?.total_cpu_hours).toBeGreaterThan(0);
    expect(chemistry?.total_cpu_hours).toBeGreaterThan(0);
    expect(physics?.total_cpu_hours ?? 0).toBeGreaterThan(chemistry?.total_cpu_hours ?? 0);
    expect(data.utilization_pct.at(-1)).toBeGreaterThan(0);
    expect(data.partitions.map((p) => p.partition)).toEqual(['default']);
    expect(data.partitions[0]?.utilization_pct.at(-1)).toBeGreaterThan(0);

    await page.goto(`${server.url}/ui/usage`);
    await eventually(async () => (await tableRows()).length === 2, { what: 'two accounts in the table' });
    const rows = await tableRows();
    expect(rows[0]).toMatch(/^physics/);
    expect(rows[1]).toMatch(/^chemistry/);
    expect(await legend('usage-accounts')).toEqual(expect.arrayContaining(['physics', 'chemistry']));
    expect(await legend('usage-wait')).toEqual(expect.arrayContaining(['default']));
    expect(await legend('usage-partition-utilization')).toEqual(['Time', 'default']);
    for (const chart of [
      'usage-utilization',
      'usage-accounts',
      'usage-wait',
      'usage-partitions',
      'usage-partition-utilization',
    ]) {
      expect(await page.locator(`#${chart} canvas`).count()).toBe(1);
      // A job pushed to its agent may start within the second: a mean wait of 0 s is still a point drawn.
      const attribute = chart === 'usage-wait' ? 'data-values' : 'data-points';
      expect(Number(await page.locator(`#${chart}`).getAttribute(attribute))).toBeGreaterThan(0);
    }
    const caption = (await page.locator('#usage-utilization-caption').textContent()) ?? '';
    expect(caption).toMatch(/Utilization per hour over the last day: [\d.]+% overall/);
    expect(caption).toContain('America/Chicago');
    expect(problems).toEqual([]);
  });

  it('switching to the last month shows an account that ran ten days ago; the last day does not', async () => {
    const [old] = await query<{ id: number }>(
      backend.db.db,
      sql`INSERT INTO jobs (name, script, cpus, state, account, partition, attempt, submit_time, start_time, end_time,
                            exit_code)
          VALUES ('old', 'true', 8, 'COMPLETED', 'biology', 'default', 1, now() - interval '10 days 2 hours',
                  now() - interval '10 days 1 hour', now() - interval '10 days', '0:0')
          RETURNING id`,
    );
    // The attempt row, as the trigger on jobs writes it when an attempt ends; its insert rolls it up.
    await query(
      backend.db.db,
      sql`INSERT INTO job_attempts (job_id, attempt, node, start_time, end_time, state, exit_code, requeued, cpus,
                                    partition, eligible_time)
          VALUES (${old?.id}, 1, 'usage-node', now() - interval '10 days 1 hour', now() - interval '10 days',
                  'COMPLETED', '0:0', false, 8, 'default', now() - interval '10 days 2 hours')`,
    );
    // A partition that offered CPUs ten days ago (the hour the old job ran), and none since.
    await query(
      backend.db.db,
      sql`INSERT INTO capacity_partition_hourly (bucket, partition, cpu_seconds, samples)
          VALUES (date_trunc('hour', now() - interval '10 days', 'UTC'), 'archive', 8 * 3600, 60)`,
    );
    await page.goto(`${server.url}/ui/usage`);
    await eventually(async () => (await tableRows()).length === 2, { what: 'the day’s two accounts' });
    expect((await tableRows()).join(' ')).not.toContain('biology');
    expect(await legend('usage-partition-utilization')).toEqual(['Time', 'default']);
    await page.getByRole('button', { name: 'month' }).click();
    await eventually(async () => (await tableRows()).some((r) => r.startsWith('biology')), {
      what: 'biology in the month’s table',
    });
    // 8 CPUs for an hour: biology leads the month with 8 CPU-hours.
    expect((await tableRows())[0]).toMatch(/^biology\s*8$/);
    expect(await page.getByRole('button', { name: 'month' }).getAttribute('aria-pressed')).toBe('true');
    expect(await page.locator('#usage-accounts-caption').textContent()).toContain('per day');
    expect(await legend('usage-accounts')).toEqual(
      expect.arrayContaining(['biology', 'physics', 'chemistry']),
    );
    // The per-partition utilization follows the period: per day, with the archive partition's day (0 %).
    expect(await legend('usage-partition-utilization')).toEqual(['Time', 'archive', 'default']);
    expect(await page.locator('#usage-partition-utilization-caption').textContent()).toMatch(
      /^Utilization per day per partition over the last month/,
    );
    const month = await api<{ partitions: { partition: string; utilization_pct: (number | null)[] }[] }>(
      'GET',
      '/api/v1/ui/usage?period=month',
    );
    const archive = month.partitions.find((p) => p.partition === 'archive')?.utilization_pct ?? [];
    expect(archive.filter((v) => v !== null)).toEqual([0]);
    await page.getByRole('button', { name: 'day' }).click();
    await eventually(async () => !(await tableRows()).some((r) => r.startsWith('biology')), {
      what: 'biology gone with the day',
    });
    expect(await legend('usage-partition-utilization')).toEqual(['Time', 'default']);
    expect(await page.locator('#usage-partition-utilization-caption').textContent()).toMatch(
      /^Utilization per hour per partition over the last day/,
    );
    expect(problems).toEqual([]);
  });

  it('draws a week of history of several accounts (the README’s screenshot)', async () => {
    // Synthetic finished attempts over the last week, rolled up by the same trigger as real ones, and the
    // capacity the samples would have recorded (16 CPUs).
    await query(
      backend.db.db,
      sql`WITH h AS (
            SELECT g AS at, row_number() OVER () AS n
            FROM generate_series(date_trunc('hour', now(), 'UTC') - interval '167 hours',
                                 date_trunc('hour', now(), 'UTC') - interval '1 hour', interval '1 hour') g
          ),
          j AS (
            INSERT INTO jobs (name, script, cpus, state, account, partition, attempt, submit_time, start_time,
                              end_time, exit_code)
            SELECT 'history', 'true', 2 + ((n + k) % 3)::int, 'COMPLETED',
                   (ARRAY['astro', 'genomics', 'climate'])[1 + ((n / 24 + k) % 3)::int],
                   CASE WHEN k % 3 = 0 THEN 'gpu' ELSE 'default' END, 1,
                   at - make_interval(mins => (n % 40)::int), at, at + interval '50 minutes', '0:0'
            FROM h, generate_series(1, 1 + round(2 * (1 + sin(n * pi() / 12)))::int) k
            RETURNING id, cpus, partition, submit_time, start_time, end_time
          )
          INSERT INTO job_attempts (job_id, attempt, node, start_time, end_time, state, exit_code, requeued, cpus,
                                    partition, eligible_time)
          SELECT id, 1, 'usage-node', start_time, end_time, 'COMPLETED', '0:0', false, cpus, partition, submit_time
          FROM j`,
    );
    await query(
      backend.db.db,
      sql`INSERT INTO capacity_hourly (bucket, cpu_seconds, samples)
          SELECT g, 16 * 3600, 60 FROM generate_series(date_trunc('hour', now(), 'UTC') - interval '167 hours',
                                                       date_trunc('hour', now(), 'UTC') - interval '1 hour',
                                                       interval '1 hour') g
          ON CONFLICT (bucket) DO NOTHING`,
    );
    // Of the 16: 12 in the default partition, 4 in gpu.
    await query(
      backend.db.db,
      sql`INSERT INTO capacity_partition_hourly (bucket, partition, cpu_seconds, samples)
          SELECT g, p.name, p.cpus * 3600, 60
          FROM generate_series(date_trunc('hour', now(), 'UTC') - interval '167 hours',
                               date_trunc('hour', now(), 'UTC') - interval '1 hour', interval '1 hour') g,
               (VALUES ('default', 12), ('gpu', 4)) p(name, cpus)
          ON CONFLICT (bucket, partition) DO NOTHING`,
    );
    await page.goto(`${server.url}/ui/usage`);
    await page.getByRole('button', { name: 'week' }).click();
    await eventually(async () => (await tableRows()).some((r) => r.startsWith('genomics')), {
      what: 'the week’s accounts',
    });
    expect(await legend('usage-accounts')).toEqual(
      expect.arrayContaining(['astro', 'genomics', 'climate', 'physics', 'chemistry']),
    );
    expect(Number(await page.locator('#usage-utilization').getAttribute('data-points'))).toBeGreaterThan(100);
    expect(await legend('usage-partition-utilization')).toEqual(['Time', 'default', 'gpu']);
    expect(
      Number(await page.locator('#usage-partition-utilization').getAttribute('data-points')),
    ).toBeGreaterThan(200);
    await page.screenshot({ path: `${ARTIFACTS}usage.png`, fullPage: true });
    mkdirSync(DOCS, { recursive: true });
    // The README's screenshot: refreshed on request, so that a test run leaves the committed tree alone.
    if (process.env.CONDUCTOR_UPDATE_SCREENSHOTS === '1')
      copyFileSync(`${ARTIFACTS}usage.png`, `${DOCS}usage.png`);
    expect(problems).toEqual([]);
  });

  it('refuses an unknown period with a 400', async () => {
    const res = await fetch(`${server.url}/api/v1/ui/usage?period=year`);
    expect(res.status).toBe(400);
    expect(((await res.json()) as { error: { message: string } }).error.message).toContain(
      'period is day, week or month',
    );
  });
});
