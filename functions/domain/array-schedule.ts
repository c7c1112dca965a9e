import { sql } from 'drizzle-orm';
import type { Planner, Wait } from './placement.ts';
import { pgArray, query } from './sql.ts';

type Tx = Parameters<typeof query>[0];

/** Slurm's reason for an array task held back by its array's `%N` cap. */
export const ARRAY_TASK_LIMIT = 'JobArrayTaskLimit';

/** The cap's wait, for a task of `arrayJobId` capped at `max`. */
const capWait = (arrayJobId: number, max: number): Wait => ({
  reason: ARRAY_TASK_LIMIT,
  detail: `array ${arrayJobId} runs at most ${max} tasks at once (%${max}) and has that many running`,
});

/**
 * A pass's view of the `%N` caps of the arrays whose tasks it reads: how many more tasks of each it may place.
 * The planner's view only: the placing statement counts again under the array rows' locks (capRoomSql).
 */
export function arrayCaps(tx: Tx) {
  /** Array job id -> [cap, tasks running or placed by this plan]; absent: not looked up yet; null: no cap. */
  const caps = new Map<number, { max: number; used: number } | null>();
  let base = new Map<number, number>();
  const capped = new Map<number, Wait>();

  return {
    /** Reads the caps of the arrays among `ids` not read yet (one statement, none when there is none). */
    async load(ids: Iterable<number>): Promise<void> {
      const fresh = [...new Set(ids)].filter((id) => !caps.has(id));
      if (fresh.length === 0) return;
      for (const id of fresh) caps.set(id, null);
      const rows = await query<{
        array_job_id: string | number;
        max_running: number;
        running: string | number;
      }>(
        tx,
        sql`SELECT a.array_job_id, a.max_running,
                   (SELECT count(*) FROM jobs r WHERE r.array_job_id = a.array_job_id AND r.state = 'RUNNING') AS running
            FROM job_arrays a
            WHERE a.array_job_id = ANY(${pgArray(fresh)}::bigint[]) AND a.max_running IS NOT NULL`,
      );
      for (const row of rows) {
        const id = Number(row.array_job_id);
        caps.set(id, { max: Number(row.max_running), used: Number(row.running) });
        base.set(id, Number(row.running));
      }
    },
    /**
     * Considers job `id` (of array `arrayJobId`, or null) with `planner`, unless its array is at its cap: then
     * it waits with JobArrayTaskLimit (and reserves nothing). Returns false when it was held back.
     */
    consider(planner: Planner, id: number, arrayJobId: number | null, consider: () => void): boolean {
      const cap = arrayJobId === null ? null : caps.get(arrayJobId);
      if (!cap || arrayJobId === null) {
        consider();
        return true;
      }
      if (cap.used >= cap.max) {
        capped.set(id, capWait(arrayJobId, cap.max));
        return false;
      }
      const before = planner.placed;
      consider();
      if (planner.placed > before) cap.used++;
      return true;
    },
    /** Starts over for a new plan of the same rows (the counts from the database, none placed). */
    reset(): void {
      for (const [id, cap] of caps) if (cap) cap.used = base.get(id) ?? 0;
      capped.clear();
    },
    /** The tasks held back by their cap, with why. */
    get capped(): ReadonlyMap<number, Wait> {
      return capped;
    },
    /** The capped arrays among `ids` (the ones whose rows the placing transaction must lock). */
    cappedAmong(ids: Iterable<number>): number[] {
      return [...new Set(ids)].filter((id) => caps.get(id)).sort((a, b) => a - b);
    },
    clear(): void {
      caps.clear();
      base = new Map();
      capped.clear();
    },
  };
}

/**
 * Locks the rows of the capped arrays among `arrayJobIds`, in id order (after the workers, as every pass does,
 * so that passes queue instead of deadlocking). Run in the placing transaction BEFORE the placing statement:
 * that statement's snapshot, taken once the locks are held, sees every placement committed by an earlier pass.
 */
export async function lockArrays(tx: Tx, arrayJobIds: readonly number[]): Promise<void> {
  if (arrayJobIds.length === 0) return;
  await query(
    tx,
    sql`SELECT array_job_id FROM job_arrays WHERE array_job_id = ANY(${pgArray(arrayJobIds)}::bigint[])
        AND max_running IS NOT NULL ORDER BY array_job_id FOR UPDATE`,
  );
}
