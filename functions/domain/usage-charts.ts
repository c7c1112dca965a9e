import { sql } from 'drizzle-orm';
import { z } from 'zod';
import type { Context } from './context.ts';
import { query } from './sql.ts';

export const usageChartsInput = z.strictObject({
  period: z.enum(['day', 'week', 'month'], { error: 'period is day, week or month' }).default('day'),
});

/** Accounts drawn one by one; the others are summed as one line. */
const TOP_ACCOUNTS = 8;
export const OTHER_ACCOUNTS = '(other accounts)';
export const NO_ACCOUNT = '(no account)';
export const NO_PARTITION = '(default)';

const PERIODS = {
  day: { buckets: 24, unit: 'hour', table: sql`usage_hourly` },
  week: { buckets: 7 * 24, unit: 'hour', table: sql`usage_hourly` },
  month: { buckets: 30, unit: 'day', table: sql`usage_daily` },
} as const;

interface SeriesRow {
  kind: 'bucket' | 'capacity' | 'account' | 'partition' | 'partition_capacity';
  bucket: Date | string;
  key: string | null;
  cpu_seconds: string | number | null;
  wait_seconds: string | number | null;
  starts: string | number | null;
}

/** CPU-hours to 4 decimals (a third of a CPU-second): short jobs still show. */
const hours = (seconds: number) => Math.round((seconds / 3600) * 10_000) / 10_000;

/** Percent (2 decimals, at most 100) of the offered CPU-seconds used; null where nothing was offered. */
const utilization = (used: number[], offered: number[]) =>
  used.map((u, i) => (offered[i] ? Math.min(100, Math.round((u / (offered[i] ?? 1)) * 10_000) / 100) : null));

/**
 * The dashboard's usage page: per hour (day, week) or per day (month), the cluster's utilization (CPU-hours
 * used over the CPU-hours its live workers offered), CPU-hours per account, and per partition CPU-hours, the
 * mean queue wait of the attempts that started and the utilization (over the CPU-hours of its live nodes).
 * From the roll-ups (usage_hourly/usage_daily, capacity_hourly, capacity_partition_hourly) in one statement,
 * whatever the size of the job history. Usage counts once an attempt has ended, in the buckets it ran in.
 */
export async function usageCharts(ctx: Context, input: z.infer<typeof usageChartsInput>) {
  const period = PERIODS[input.period];
  const unit = sql.raw(`'${period.unit}'`);
  const step = sql.raw(`interval '1 ${period.unit}'`);
  const first = sql`date_trunc(${unit}, now(), 'UTC') - ${sql.raw(String(period.buckets - 1))} * ${step}`;
  const rows = await query<SeriesRow>(
    ctx.db,
    sql`SELECT 'bucket' AS kind, b AS bucket, NULL::text AS key, NULL::numeric AS cpu_seconds,
               NULL::numeric AS wait_seconds, NULL::bigint AS starts
          FROM generate_series(${first}, date_trunc(${unit}, now(), 'UTC'), ${step}) b
        UNION ALL
        SELECT 'capacity', date_trunc(${unit}, bucket, 'UTC'), NULL, sum(cpu_seconds), NULL, NULL
          FROM capacity_hourly WHERE bucket >= ${first} GROUP BY 2
        UNION ALL
        SELECT 'account', bucket, account, sum(cpu_seconds), NULL, NULL
          FROM ${period.table} WHERE bucket >= ${first} GROUP BY 2, 3
        UNION ALL
        SELECT 'partition', bucket, partition, sum(cpu_seconds), sum(wait_seconds), sum(starts)
          FROM ${period.table} WHERE bucket >= ${first} GROUP BY 2, 3
        UNION ALL
        SELECT 'partition_capacity', date_trunc(${unit}, bucket, 'UTC'), partition, sum(cpu_seconds), NULL, NULL
          FROM capacity_partition_hourly WHERE bucket >= ${first} GROUP BY 2, 3`,
  );
  const buckets = rows
    .filter((r) => r.kind === 'bucket')
    .map((r) => new Date(r.bucket).toISOString())
    .sort();
  const index = new Map(buckets.map((b, i) => [b, i]));
  const zeros = () => buckets.map(() => 0);
  const capacity = zeros();
  const used = zeros();
  const byAccount = new Map<string, number[]>();
  const byPartition = new Map<
    string,
    { cpu: number[]; wait: number[]; starts: number[]; capacity: number[] }
  >();
  const partitionSeries = (name: string) => {
    const series = byPartition.get(name) ?? {
      cpu: zeros(),
      wait: zeros(),
      starts: zeros(),
      capacity: zeros(),
    };
    byPartition.set(name, series);
    return series;
  };
  for (const r of rows) {
    const i = index.get(new Date(r.bucket).toISOString());
    if (i === undefined || r.kind === 'bucket') continue;
    const cpu = Number(r.cpu_seconds ?? 0);
    if (r.kind === 'capacity') {
      capacity[i] = cpu;
    } else if (r.kind === 'account') {
      const name = r.key || NO_ACCOUNT;
      const series = byAccount.get(name) ?? zeros();
      series[i] = (series[i] ?? 0) + cpu;
      byAccount.set(name, series);
      used[i] = (used[i] ?? 0) + cpu;
    } else if (r.kind === 'partition_capacity') {
      partitionSeries(r.key || NO_PARTITION).capacity[i] = cpu;
    } else {
      const series = partitionSeries(r.key || NO_PARTITION);
      series.cpu[i] = cpu;
      series.wait[i] = Number(r.wait_seconds ?? 0);
      series.starts[i] = Number(r.starts ?? 0);
    }
  }
  const total = (series: number[]) => series.reduce((a, b) => a + b, 0);
  const ranked = [...byAccount].sort((a, b) => total(b[1]) - total(a[1]) || a[0].localeCompare(b[0]));
  const accounts = ranked.slice(0, TOP_ACCOUNTS);
  const rest = ranked.slice(TOP_ACCOUNTS);
  if (rest.length > 0) {
    accounts.push([OTHER_ACCOUNTS, buckets.map((_, i) => total(rest.map(([, s]) => s[i] ?? 0)))]);
  }
  return {
    period: input.period,
    bucket: period.unit,
    buckets,
    capacity_cpu_hours: capacity.map(hours),
    used_cpu_hours: used.map(hours),
    /** Percent of the offered CPU-hours used; null where no worker was live (nothing offered). */
    utilization_pct: utilization(used, capacity),
    accounts: accounts.map(([account, series]) => ({
      account,
      cpu_hours: series.map(hours),
      total_cpu_hours: hours(total(series)),
    })),
    partitions: [...byPartition]
      .sort((a, b) => a[0].localeCompare(b[0]))
      .map(([partition, s]) => ({
        partition,
        cpu_hours: s.cpu.map(hours),
        /** Mean seconds from eligible to start of the attempts that started in the bucket; null: none did. */
        mean_wait_s: s.wait.map((w, i) =>
          (s.starts[i] ?? 0) > 0 ? Math.round(w / (s.starts[i] ?? 1)) : null,
        ),
        starts: s.starts,
        capacity_cpu_hours: s.capacity.map(hours),
        /** Its CPU-hours over the CPU-hours its live nodes offered; null where it had none live. */
        utilization_pct: utilization(s.cpu, s.capacity),
      })),
    totals: {
      capacity_cpu_hours: hours(total(capacity)),
      used_cpu_hours: hours(total(used)),
    },
  };
}

export type UsageCharts = Awaited<ReturnType<typeof usageCharts>>;
