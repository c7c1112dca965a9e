import { sql } from 'drizzle-orm';
import { JOB_STATES, type JobState } from '../../db/schema.ts';
import type { Database, Ports } from './ports.ts';
import { query, queryOne, withRetry } from './sql.ts';

/**
 * Jobs per state, exact, without reading the job history: the sum of the per-state deltas that the triggers on
 * `jobs` append (migration 0004). Cost follows the number of delta rows since the last compaction, not the
 * number of jobs; past `COMPACT_AT` rows a read also asks for a compaction (after the response).
 */
export const COMPACT_AT = 1000;

export async function readJobCounts(ports: Pick<Ports, 'db' | 'defer'>): Promise<Record<JobState, number>> {
  const rows = await query<{ state: JobState; n: string | number; deltas: string | number }>(
    ports.db,
    sql`SELECT state, sum(n) AS n, count(*) AS deltas FROM job_state_deltas GROUP BY state`,
  );
  const counts = Object.fromEntries(JOB_STATES.map((s) => [s, 0])) as Record<JobState, number>;
  let deltas = 0;
  for (const row of rows) {
    if (row.state in counts) counts[row.state] = Number(row.n);
    deltas += Number(row.deltas);
  }
  if (deltas > COMPACT_AT && !compacting.has(ports.db)) {
    compacting.add(ports.db);
    ports.defer(compactJobCounts(ports.db).finally(() => compacting.delete(ports.db)));
  }
  return counts;
}

/** Databases with a compaction in flight from this process (one at a time is plenty). */
const compacting = new WeakSet<Database>();

/**
 * Folds the deltas into one row per state, atomically, in ONE statement: the DELETE's RETURNING feeds the
 * INSERT, so every reader sees either the old rows or their sums, never both nor neither. Deltas that commit
 * meanwhile are not in the DELETE's snapshot and stay as they are; a concurrent compaction skips the rows this
 * one deleted (and the other way round). Returns how many rows there were and how many are left.
 */
export async function compactJobCounts(db: Database): Promise<{ before: number; after: number }> {
  const row = await withRetry(() =>
    queryOne<{ before: string | number; after: string | number }>(
      db,
      sql`WITH d AS (DELETE FROM job_state_deltas RETURNING state, n),
               s AS (INSERT INTO job_state_deltas (state, n)
                     SELECT state, sum(n) FROM d GROUP BY state HAVING sum(n) <> 0 RETURNING 1)
          SELECT (SELECT count(*) FROM d) AS before, (SELECT count(*) FROM s) AS after`,
    ),
  );
  return { before: Number(row?.before ?? 0), after: Number(row?.after ?? 0) };
}

/** When each configuration (one per Node server, one per Workers isolate) last compacted: at most once a minute. */
const compactedMinute = new WeakMap<object, number>();

/**
 * The backstop's compaction: at most once a minute per process (reads past COMPACT_AT rows ask for one
 * sooner). A failure is logged and never stops the backstop.
 */
export async function compactJobCountsIfDue(ports: Pick<Ports, 'db' | 'config' | 'logger'>): Promise<void> {
  const minute = Math.floor(Date.now() / 60_000);
  if (compactedMinute.get(ports.config) === minute) return;
  compactedMinute.set(ports.config, minute);
  try {
    await compactJobCounts(ports.db);
  } catch (error) {
    ports.logger.warn('Job counts compaction failed', {
      error: error instanceof Error ? error.message : String(error),
    });
  }
}
