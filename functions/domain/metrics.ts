/**
 * Prometheus metrics. Two kinds:
 * - cluster figures read from Postgres at scrape time (workers, CPUs, jobs by state, queue wait of recently
 *   started jobs, cache drift at the last sync): the same on every server and isolate;
 * - counters of this process (or Workers isolate) since it started: scheduling pass durations, cache
 *   hits/misses, heartbeats received. Summed across processes by Prometheus; they restart at 0 with it.
 */
import { sql } from 'drizzle-orm';
import { JOB_STATES } from '../../db/schema.ts';
import type { Context } from './context.ts';
import { listLiveWorkers } from './dashboard.ts';
import { readJobCounts } from './job-counts.ts';
import { PASS_BUCKETS } from './process-metrics.ts';
import { queryOne } from './sql.ts';

/** Queue wait buckets, seconds. */
export const WAIT_BUCKETS = [1, 5, 10, 30, 60, 300, 900, 3600, 14400, 86400];
/** Jobs that started within this window make the queue wait histogram. */
export const WAIT_WINDOW_SECONDS = 3600;

const num = (n: number) => (Number.isFinite(n) ? String(n) : n > 0 ? '+Inf' : '-Inf');
const label = (v: string) => v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');

class Exposition {
  private lines: string[] = [];
  metric(name: string, type: 'gauge' | 'counter' | 'histogram', help: string) {
    this.lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    return this;
  }
  sample(name: string, value: number, labels: Record<string, string> = {}) {
    const l = Object.entries(labels)
      .map(([k, v]) => `${k}="${label(v)}"`)
      .join(',');
    this.lines.push(`${name}${l ? `{${l}}` : ''} ${num(value)}`);
    return this;
  }
  histogram(name: string, bounds: number[], cumulative: number[], count: number, sum: number) {
    bounds.forEach((le, i) => {
      this.sample(`${name}_bucket`, cumulative[i] ?? 0, { le: String(le) });
    });
    this.sample(`${name}_bucket`, count, { le: '+Inf' });
    this.sample(`${name}_sum`, sum);
    this.sample(`${name}_count`, count);
    return this;
  }
  toString() {
    return `${this.lines.join('\n')}\n`;
  }
}

/** The metrics page, Prometheus text format 0.0.4. */
export async function renderMetrics(ctx: Context): Promise<string> {
  const bucketSql = sql.join(
    WAIT_BUCKETS.map((le) => sql`count(*) FILTER (WHERE wait <= ${le})`),
    sql`, `,
  );
  const [live, down, jobs, wait, sync] = await Promise.all([
    listLiveWorkers(ctx),
    queryOne<{ n: string | number }>(ctx.db, sql`SELECT count(*) AS n FROM workers WHERE status = 'down'`),
    readJobCounts(ctx),
    queryOne<{ buckets: (string | number)[]; n: string | number; total: string | number | null }>(
      ctx.db,
      sql`SELECT ARRAY[${bucketSql}] AS buckets, count(*) AS n, sum(wait) AS total FROM (
            SELECT extract(epoch FROM start_time - submit_time)::float8 AS wait FROM jobs
            WHERE start_time > now() - make_interval(secs => ${WAIT_WINDOW_SECONDS})) w`,
    ),
    queryOne<{ cache_drift: string | number | null; cache_synced_at: Date | string | null }>(
      ctx.db,
      sql`SELECT cache_drift, cache_synced_at FROM maintenance_state WHERE id = 1`,
    ),
  ]);
  const m = ctx.metrics;
  const out = new Exposition();

  out.metric('conductor_workers', 'gauge', 'Workers by status: live ones (ready, draining) and down ones');
  const byStatus: Record<string, number> = { ready: 0, draining: 0 };
  for (const w of live) byStatus[w.status] = (byStatus[w.status] ?? 0) + 1;
  for (const [status, n] of Object.entries(byStatus)) out.sample('conductor_workers', n, { status });
  out.sample('conductor_workers', Number(down?.n ?? 0), { status: 'down' });

  out.metric('conductor_cpus_capacity', 'gauge', 'CPUs of the live workers');
  out.sample(
    'conductor_cpus_capacity',
    live.reduce((s, w) => s + w.cpus, 0),
  );
  out.metric('conductor_cpus_allocated', 'gauge', 'CPUs allocated to jobs on the live workers (Postgres)');
  out.sample(
    'conductor_cpus_allocated',
    live.reduce((s, w) => s + w.allocated_cpus, 0),
  );

  out.metric('conductor_jobs', 'gauge', 'Jobs by state');
  for (const state of JOB_STATES) {
    out.sample('conductor_jobs', jobs[state], { state });
  }

  out.metric(
    'conductor_queue_wait_seconds',
    'histogram',
    `Submit-to-start wait of the jobs that started in the last ${WAIT_WINDOW_SECONDS} s (computed from Postgres at scrape time)`,
  );
  out.histogram(
    'conductor_queue_wait_seconds',
    WAIT_BUCKETS,
    (wait?.buckets ?? []).map(Number),
    Number(wait?.n ?? 0),
    Number(wait?.total ?? 0),
  );

  out.metric(
    'conductor_scheduling_pass_duration_seconds',
    'histogram',
    'Duration of the scheduling passes run by this process since it started (per process)',
  );
  out.histogram(
    'conductor_scheduling_pass_duration_seconds',
    PASS_BUCKETS,
    m.passBuckets,
    m.passCount,
    m.passSum,
  );

  out.metric(
    'conductor_cache_hits_total',
    'counter',
    'Allocated-CPU reads served by the cache (per process)',
  );
  out.sample('conductor_cache_hits_total', m.cacheHits);
  out.metric(
    'conductor_cache_misses_total',
    'counter',
    'Allocated-CPU reads that missed the cache (per process)',
  );
  out.sample('conductor_cache_misses_total', m.cacheMisses);
  out.metric(
    'conductor_cache_errors_total',
    'counter',
    'Allocated-CPU reads that found the cache down (per process)',
  );
  out.sample('conductor_cache_errors_total', m.cacheErrors);
  out.metric(
    'conductor_cache_drift_cpus',
    'gauge',
    'How far the cache was off (cache minus Postgres) at the last sync',
  );
  out.sample('conductor_cache_drift_cpus', Number(sync?.cache_drift ?? 0));
  out.metric(
    'conductor_cache_last_sync_timestamp_seconds',
    'gauge',
    'When the cache was last synced (0: never)',
  );
  out.sample(
    'conductor_cache_last_sync_timestamp_seconds',
    sync?.cache_synced_at ? new Date(sync.cache_synced_at).getTime() / 1000 : 0,
  );

  out.metric('conductor_heartbeats_received_total', 'counter', 'Agent heartbeats accepted (per process)');
  out.sample('conductor_heartbeats_received_total', m.heartbeats);
  return out.toString();
}
