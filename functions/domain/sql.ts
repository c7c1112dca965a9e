import type { SQL } from 'drizzle-orm';
import { ConductorError } from './errors.ts';
import type { Database } from './ports.ts';

/** Runs raw SQL and returns its rows, whatever the driver's result shape. */
export async function query<T>(db: Database, statement: SQL): Promise<T[]> {
  const result = (await db.execute(statement)) as unknown as { rows?: T[] } | T[];
  return Array.isArray(result) ? result : (result.rows ?? []);
}

export async function queryOne<T>(db: Database, statement: SQL): Promise<T | undefined> {
  return (await query<T>(db, statement))[0];
}

/** Postgres errors worth retrying the whole transaction for: deadlock, serialization failure. */
export function isRetryableConflict(error: unknown): boolean {
  const code = pgErrorCode(error);
  return code === '40P01' || code === '40001';
}

export function pgErrorCode(error: unknown): string | undefined {
  for (let e: unknown = error, depth = 0; e && depth < 4; e = (e as { cause?: unknown }).cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string') return code;
  }
  return undefined;
}

/** How many times a transaction is run in all when it keeps losing conflicts (deadlock, serialization failure). */
export const CONFLICT_ATTEMPTS = 10;

/**
 * Runs `work` (one statement or transaction) again when Postgres aborted it for a conflict, with exponential
 * backoff and full jitter (up to about 1.3 s in all). A conflict that outlasts every attempt is a 503
 * `database_busy` with Retry-After: the request did nothing and may be sent again.
 */
export async function withRetry<T>(work: () => Promise<T>, attempts = CONFLICT_ATTEMPTS): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await work();
    } catch (error) {
      if (!isRetryableConflict(error)) throw error;
      if (attempt >= attempts) throw databaseBusy(error);
      const backoffMs = Math.min(250, 5 * 2 ** attempt);
      await new Promise((resolve) => setTimeout(resolve, Math.random() * backoffMs));
    }
  }
}

function databaseBusy(cause: unknown): ConductorError {
  const busy = new ConductorError(
    'unavailable',
    'database_busy',
    'The database is busy with conflicting changes; nothing was done, retry shortly',
  );
  busy.retryAfterSeconds = 1;
  busy.cause = cause;
  return busy;
}

/** Postgres arrays as one text parameter (`{a,b}`): driver-neutral, unlike JS arrays. */
export function pgArray(values: readonly (string | number)[]): string {
  return `{${values.map((v) => (typeof v === 'number' ? String(v) : `"${v.replaceAll('\\', '\\\\').replaceAll('"', '\\"')}"`)).join(',')}}`;
}

/** A json or jsonb column's value: the drivers give it parsed, or as text (json_agg through some drivers). */
export function jsonColumn<T>(value: T | string): T {
  return typeof value === 'string' ? (JSON.parse(value) as T) : value;
}
