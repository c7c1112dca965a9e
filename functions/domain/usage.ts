import { type SQL, sql } from 'drizzle-orm';
import { z } from 'zod';
import { invalid } from './errors.ts';
import type { Database } from './ports.ts';
import { pgArray, query, queryOne } from './sql.ts';

/**
 * Usage reports (sreport) from the roll-ups the job_attempts trigger keeps (usage_hourly, usage_daily,
 * migration 0019) and the capacity the utilization samples add up (capacity_hourly): a report reads the rows
 * of its period, never the jobs, so its cost follows the period, not the history. Usage counts when an
 * attempt ends (a running job's time is not in them yet). Periods are whole UTC hours, as sreport rounds them.
 */

export const USAGE_REPORTS = ['cluster-utilization', 'user-topusage', 'account-topusage', 'trends'] as const;
export type UsageReport = (typeof USAGE_REPORTS)[number];

const HOUR_MS = 3_600_000;
const DAY_MS = 24 * HOUR_MS;

const names = z
  .string()
  .max(4096)
  .transform((s) =>
    s
      .split(',')
      .map((x) => x.trim())
      .filter(Boolean),
  );

const instant = (field: string) =>
  z
    .string()
    .refine((s) => !Number.isNaN(Date.parse(s)), { error: `${field} is an ISO 8601 date or time` })
    .transform((s) => new Date(s));

export const usageReportInput = z
  .strictObject({
    report: z.enum(USAGE_REPORTS, { error: `report is one of ${USAGE_REPORTS.join(', ')}` }),
    start: instant('start').optional(),
    end: instant('end').optional(),
    /** TopUsage: how many rows (sreport's TopCount). */
    top: z.coerce.number().int().min(1).max(1000).default(10),
    accounts: names.optional(),
    users: names.optional(),
    /** user-topusage: one row per user, all their accounts together (sreport's Group). */
    group: z
      .enum(['true', 'false'])
      .transform((v) => v === 'true')
      .default(false),
    format: z.enum(['json', 'csv'], { error: 'format is json or csv' }).default('json'),
  })
  .refine((q) => !q.start || !q.end || q.start < q.end, { error: 'start must be before end' });
export type UsageReportInput = z.infer<typeof usageReportInput>;

/**
 * sreport's default period: yesterday (here the UTC day). Both ends go down to their hour; an end within the
 * start's hour is refused, since the roll-ups cannot split an hour.
 */
export function reportPeriod(
  input: { start?: Date; end?: Date },
  now = new Date(),
): { start: Date; end: Date } {
  const today = Math.floor(now.getTime() / DAY_MS) * DAY_MS;
  const start = Math.floor((input.start?.getTime() ?? today - DAY_MS) / HOUR_MS) * HOUR_MS;
  const end = Math.floor((input.end?.getTime() ?? today) / HOUR_MS) * HOUR_MS;
  if (end <= start) {
    throw invalid(
      'invalid_period',
      'The period must hold at least one whole hour (UTC): end is in start’s hour',
    );
  }
  return { start: new Date(start), end: new Date(end) };
}

/**
 * The roll-up rows of [start, end): whole UTC days from usage_daily, the hours at either side from usage_hourly.
 */
function usageRows(start: Date, end: Date, filters: SQL): SQL {
  const firstDay = Math.ceil(start.getTime() / DAY_MS) * DAY_MS;
  const lastDay = Math.floor(end.getTime() / DAY_MS) * DAY_MS;
  const [d0, d1] = firstDay < lastDay ? [new Date(firstDay), new Date(lastDay)] : [end, end];
  const t = (d: Date) => sql`${d.toISOString()}::timestamptz`;
  return sql`(SELECT * FROM usage_daily WHERE bucket >= ${t(d0)} AND bucket < ${t(d1)} ${filters}
              UNION ALL
              SELECT * FROM usage_hourly
              WHERE ((bucket >= ${t(start)} AND bucket < ${t(d0)}) OR (bucket >= ${t(d1)} AND bucket < ${t(end)}))
                ${filters})`;
}

export interface UsageReportAnswer {
  report: UsageReport;
  start: string;
  end: string;
  /** CPU-seconds the live workers offered over the period (sreport's Reported). */
  reported_cpu_seconds: number;
  rows: Record<string, string | number>[];
}

const num = (v: string | number | null | undefined) => Math.round(Number(v ?? 0) * 1000) / 1000;

export async function usageReport(
  db: Database,
  input: UsageReportInput,
  now = new Date(),
): Promise<UsageReportAnswer> {
  const { start, end } = reportPeriod(input, now);
  const filters = sql.join(
    [
      sql``,
      ...(input.accounts?.length ? [sql`AND account = ANY(${pgArray(input.accounts)}::text[])`] : []),
      ...(input.users?.length ? [sql`AND owner = ANY(${pgArray(input.users)}::text[])`] : []),
    ],
    sql` `,
  );
  const rows = usageRows(start, end, filters);
  const capacity = await queryOne<{ reported: string | null }>(
    db,
    sql`SELECT sum(cpu_seconds) AS reported FROM capacity_hourly
        WHERE bucket >= ${start.toISOString()}::timestamptz AND bucket < ${end.toISOString()}::timestamptz`,
  );
  const reported = num(capacity?.reported);
  const answer = {
    report: input.report,
    start: start.toISOString(),
    end: end.toISOString(),
    reported_cpu_seconds: reported,
  };
  if (input.report === 'cluster-utilization') {
    const row = await queryOne<Record<string, string | null>>(
      db,
      sql`SELECT sum(cpu_seconds) AS cpu, sum(gpu_seconds) AS gpu, sum(completed + failed + cancelled + timeout
                 + node_fail + out_of_memory) AS jobs, sum(attempts) AS attempts
          FROM ${rows} u`,
    );
    const allocated = num(row?.cpu);
    return {
      ...answer,
      rows: [
        {
          allocated,
          down: 0,
          planned_down: 0,
          idle: Math.max(0, Math.round((reported - allocated) * 1000) / 1000),
          planned: 0,
          reported,
          gpu_seconds: num(row?.gpu),
          jobs: num(row?.jobs),
          attempts: num(row?.attempts),
        },
      ],
    };
  }
  if (input.report === 'trends') {
    // Hours for a period of up to three days, days beyond (a chart's worth of points either way).
    const daily = end.getTime() - start.getTime() > 3 * DAY_MS;
    const bucket = daily ? sql`date_trunc('day', bucket, 'UTC')` : sql`bucket`;
    const found = await query<Record<string, string | Date>>(
      db,
      sql`SELECT ${bucket} AS at, partition, sum(cpu_seconds) AS cpu_seconds, sum(starts) AS starts,
                 sum(wait_seconds) AS wait_seconds,
                 sum(completed + failed + cancelled + timeout + node_fail + out_of_memory) AS jobs
          FROM ${rows} u GROUP BY 1, 2 ORDER BY 1, 2`,
    );
    return {
      ...answer,
      rows: found.map((r) => ({
        bucket: new Date(r.at as string).toISOString(),
        partition: String(r.partition),
        cpu_seconds: num(r.cpu_seconds as string),
        jobs: num(r.jobs as string),
        starts: num(r.starts as string),
        mean_wait_seconds: Number(r.starts) > 0 ? num(Number(r.wait_seconds) / Number(r.starts)) : 0,
      })),
    };
  }
  const byUser = input.report === 'user-topusage';
  const keys = byUser ? (input.group ? sql`owner` : sql`owner, account`) : sql`account`;
  const found = await query<Record<string, string>>(
    db,
    sql`SELECT ${keys}, sum(cpu_seconds) AS cpu_seconds, sum(gpu_seconds) AS gpu_seconds,
               sum(mem_mb_seconds) AS mem_mb_seconds, sum(wall_seconds) AS wall_seconds,
               sum(completed + failed + cancelled + timeout + node_fail + out_of_memory) AS jobs
               ${byUser && input.group ? sql`, string_agg(DISTINCT account, ',' ORDER BY account) AS account` : sql``}
        FROM ${rows} u GROUP BY ${keys}
        ORDER BY sum(cpu_seconds) DESC, ${keys} LIMIT ${input.top}`,
  );
  return {
    ...answer,
    rows: found.map((r) => ({
      ...(byUser ? { user: r.owner ?? '' } : {}),
      account: r.account ?? '',
      cpu_seconds: num(r.cpu_seconds),
      gpu_seconds: num(r.gpu_seconds),
      mem_mb_seconds: num(r.mem_mb_seconds),
      wall_seconds: num(r.wall_seconds),
      jobs: num(r.jobs),
    })),
  };
}

/** A report's rows as CSV (RFC 4180): a header of the row fields, then one line per row. */
export function usageCsv(answer: UsageReportAnswer): string {
  const columns = Object.keys(answer.rows[0] ?? {});
  const cell = (v: unknown) => {
    const s = String(v ?? '');
    return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
  };
  return [columns, ...answer.rows.map((r) => columns.map((c) => r[c]))]
    .map((line) => line.map(cell).join(','))
    .join('\r\n')
    .concat(columns.length > 0 ? '\r\n' : '');
}

/**
 * CPU-seconds per account, each bucket's weighed by 2^(−age/half-life) at its middle (fair-share's usage):
 * hourly rows for the last two UTC days, daily rows before (and none older than 30 half-lives, which weigh
 * under 10⁻⁹). Jobs without an account count under ''.
 */
export async function decayedUsage(tx: Database, halfLifeS: number): Promise<Map<string, number>> {
  const rows = await decayedUsageRows(tx, halfLifeS, false);
  return new Map(rows.map((r) => [r.account, r.usage]));
}

/** decayedUsage per account and owner (sshare's user rows). */
export async function decayedUsageByOwner(
  tx: Database,
  halfLifeS: number,
): Promise<{ account: string; owner: string; usage: number }[]> {
  return decayedUsageRows(tx, halfLifeS, true);
}

async function decayedUsageRows(tx: Database, halfLifeS: number, perOwner: boolean) {
  if (!(halfLifeS > 0)) throw new Error(`decayedUsage: the half-life must be positive (got ${halfLifeS})`);
  const owner = perOwner ? sql`owner` : sql`''::text`;
  const rows = await query<{ account: string; owner: string; usage: string | number }>(
    tx,
    sql`WITH cut AS (SELECT date_trunc('day', now(), 'UTC') - interval '1 day' AS hourly_from),
        u AS (
          SELECT account, owner, cpu_seconds, bucket + interval '30 minutes' AS middle
          FROM usage_hourly, cut WHERE bucket >= cut.hourly_from
          UNION ALL
          SELECT account, owner, cpu_seconds, bucket + interval '12 hours'
          FROM usage_daily, cut
          WHERE bucket < cut.hourly_from AND bucket >= now() - make_interval(secs => ${30 * halfLifeS}::float8)
        )
        SELECT account, ${owner} AS owner, sum(cpu_seconds::float8 * power(2::float8,
                 -greatest(extract(epoch FROM now() - middle)::float8, 0) / ${halfLifeS}::float8)) AS usage
        FROM u GROUP BY 1, 2`,
  );
  return rows.map((r) => ({ account: r.account, owner: r.owner, usage: Number(r.usage) }));
}
