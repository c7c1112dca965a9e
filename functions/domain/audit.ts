/** The audit log: who submitted, cancelled, drained, created or revoked what. Admin-only reading. */
import { type SQL, sql } from 'drizzle-orm';
import { z } from 'zod';
import type { Principal } from './auth.ts';
import type { Database } from './ports.ts';
import { query } from './sql.ts';

/** How the log names a caller. */
export function actorName(principal: Principal): string {
  switch (principal.kind) {
    case 'anonymous':
      return 'anonymous (open loopback cluster)';
    case 'token':
      return `token:${principal.tokenId} (${principal.name})`;
    case 'webhook':
      return `webhook:${principal.name}`;
    case 'cli':
      return `cli:${principal.name}`;
    case 'system':
      return `system:${principal.name}`;
  }
}

/**
 * An INSERT of audit rows, to run alone or as a CTE of the statement that does the thing. With `from` (a
 * CTE name or subquery), one row per row of it, and `target`/`details` may use its columns.
 */
export function auditInsert(
  principal: Principal,
  action: string,
  entry: { target: SQL | string | null; details?: SQL | Record<string, unknown>; from?: SQL },
): SQL {
  const details = entry.details ?? {};
  const detailsSql = 'getSQL' in details ? details : sql`${JSON.stringify(details)}::jsonb`;
  const target = entry.target;
  const targetSql = target === null || typeof target === 'string' ? sql`${target}::text` : target;
  return sql`INSERT INTO audit_log (actor, token_id, action, target, details, request_id)
             SELECT ${actorName(principal)}, ${principal.tokenId}::bigint, ${action}::text, ${targetSql},
                    ${detailsSql}, ${principal.requestId ?? null}::text
             ${entry.from ? sql`FROM ${entry.from}` : sql``}`;
}

export async function recordAudit(
  db: Database,
  principal: Principal,
  action: string,
  target: string | null,
  details: Record<string, unknown> = {},
): Promise<void> {
  await query(db, auditInsert(principal, action, { target, details }));
}

export const listAuditInput = z.strictObject({
  limit: z.coerce.number().int().min(1).max(1000).default(100),
  /** Entries with an id below this (the `next_before` of the previous page). */
  before: z.coerce.number().int().positive().max(Number.MAX_SAFE_INTEGER).optional(),
  action: z
    .string()
    .max(64)
    .regex(/^[a-z_.]+$/, 'action is letters, "_" and "." (e.g. job.submit)')
    .optional(),
  token_id: z.coerce.number().int().positive().max(Number.MAX_SAFE_INTEGER).optional(),
});
export type ListAuditInput = z.infer<typeof listAuditInput>;

interface AuditRow {
  id: string | number;
  at: Date | string;
  actor: string;
  token_id: string | number | null;
  action: string;
  target: string | null;
  details: Record<string, unknown> | string;
  request_id: string | null;
}

/** Newest first, paged by id like the job list. */
export async function listAudit(db: Database, input: ListAuditInput) {
  const filters = [sql`true`];
  if (input.before) filters.push(sql`id < ${input.before}`);
  if (input.action) filters.push(sql`action = ${input.action}`);
  if (input.token_id) filters.push(sql`token_id = ${input.token_id}`);
  const rows = await query<AuditRow>(
    db,
    sql`SELECT id, at, actor, token_id, action, target, details, request_id FROM audit_log
        WHERE ${sql.join(filters, sql` AND `)} ORDER BY id DESC LIMIT ${input.limit + 1}`,
  );
  const entries = rows.slice(0, input.limit).map((r) => ({
    id: Number(r.id),
    at: new Date(r.at).toISOString(),
    actor: r.actor,
    token_id: r.token_id === null ? null : Number(r.token_id),
    action: r.action,
    target: r.target,
    details: typeof r.details === 'string' ? (JSON.parse(r.details) as Record<string, unknown>) : r.details,
    request_id: r.request_id,
  }));
  return { entries, next_before: rows.length > input.limit ? (entries.at(-1)?.id ?? null) : null };
}
