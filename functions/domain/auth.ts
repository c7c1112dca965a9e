/**
 * Who is calling, and what they may do. API and agent tokens are random (`cnd_` + 32 bytes), shown once and
 * stored only as their SHA-256; a request's token is found by ONE indexed query on that hash, every time:
 * nothing is cached, so a revoked token stops working on the next request. `last_used_at` is written at
 * most once a minute per token, after the response.
 */
import { sql } from 'drizzle-orm';
import { z } from 'zod';
import { TOKEN_SCOPES, type TokenScope } from '../../db/schema.ts';
import { actorName, auditInsert } from './audit.ts';
import type { Context } from './context.ts';
import { randomSecret, sha256Hex } from './crypto.ts';
import { notFound, unauthorized } from './errors.ts';
import type { Database } from './ports.ts';
import { query, queryOne } from './sql.ts';

export type { TokenScope };
export { TOKEN_SCOPES };

export interface Principal {
  /**
   * `anonymous`: no token, on the open loopback cluster (it may do everything); `token`: an API or agent
   * token; `webhook`: a signed webhook delivery; `cli`: the `conductor` command (direct database access);
   * `system`: the server itself (its embedded agent's token).
   */
  kind: 'anonymous' | 'token' | 'webhook' | 'cli' | 'system';
  tokenId: number | null;
  /** The token's, webhook's or OS user's name. */
  name: string;
  /** Whose jobs: the token's owner; null for anonymous (sees every job). */
  owner: string | null;
  scopes: readonly TokenScope[];
  /** The request this principal made (for the audit log). */
  requestId?: string;
}

export const ANONYMOUS: Principal = Object.freeze({
  kind: 'anonymous',
  tokenId: null,
  name: 'anonymous',
  owner: null,
  scopes: TOKEN_SCOPES,
});

export const TOKEN_PREFIX = 'cnd_';

/** What a scope lets a caller do: `admin` includes jobs:read and jobs:write, never `agent`. */
export function hasScope(principal: Principal, scope: TokenScope): boolean {
  if (principal.scopes.includes(scope)) return true;
  return scope !== 'agent' && principal.scopes.includes('admin');
}

/** Admins and the anonymous local caller see every job; anyone else the jobs of their owner. */
export function seesAllJobs(principal: Principal): boolean {
  return principal.kind === 'anonymous' || principal.scopes.includes('admin');
}

/** Whether `viewer` may see a job of `owner` (another owner's job is "not found" to it). */
export function seesJobOf(viewer: Principal, owner: string | null): boolean {
  return seesAllJobs(viewer) || (owner !== null && owner === viewer.owner);
}

export function tokenHash(token: string): Promise<string> {
  return sha256Hex(token);
}

/** Whether any token that closes the API exists (revoked ones count: revoking never reopens an API). */
export async function apiTokensExist(db: Database): Promise<boolean> {
  const row = await queryOne<{ exists: boolean }>(
    db,
    sql`SELECT EXISTS (SELECT 1 FROM api_tokens WHERE NOT internal) AS exists`,
  );
  return Boolean(row?.exists);
}

/** What creating the first API token on the open loopback cluster changes (the API's and the CLI's answer). */
export const OPEN_ACCESS_ENDED =
  'This is the first API token: the control plane now requires a token on every request but ' +
  'GET /api/v1/health, and open access on loopback has ended. Agents that registered while it was open keep working on the agent tokens ' +
  'they were given; one started by hand needs CONDUCTOR_TOKEN (an agent token) from its next restart on.';

interface TokenRow {
  id: string | number;
  name: string;
  owner: string;
  scopes: TokenScope[] | string;
  internal: boolean;
  revoked: boolean;
  stale: boolean;
}

async function findToken(db: Database, hash: string): Promise<TokenRow | undefined> {
  return queryOne<TokenRow>(
    db,
    sql`SELECT id, name, owner, scopes, internal, revoked_at IS NOT NULL AS revoked,
               (last_used_at IS NULL OR last_used_at < now() - interval '1 minute') AS stale
        FROM api_tokens WHERE token_hash = ${hash}`,
  );
}

/** Postgres text[] as the drivers return it: an array, or `{a,b}` text (PGlite/neon in some modes). */
export function parseTextArray(value: unknown): string[] {
  if (Array.isArray(value)) return value.map(String);
  if (typeof value === 'string') {
    const inner = value.replace(/^\{|\}$/g, '');
    return inner === '' ? [] : inner.split(',').map((s) => s.replace(/^"|"$/g, ''));
  }
  return [];
}

/**
 * The domain verb behind the auth middleware: the principal a bearer token (or its absence) stands for.
 * With `auth: 'auto'` and no API token in existence, there is nothing to check against: the caller is
 * ANONYMOUS (the open loopback cluster), and a token it sends that names nothing is ignored. Otherwise a
 * missing, unknown or revoked token is a 401.
 */
export async function authenticate({
  ctx,
  token,
}: {
  ctx: Pick<Context, 'db' | 'config' | 'defer'>;
  token: string | undefined;
}): Promise<Principal> {
  const required = ctx.config.auth === 'required';
  if (token === undefined || token === '') {
    if (!required && !(await apiTokensExist(ctx.db))) return ANONYMOUS;
    throw unauthorized(
      'missing_token',
      'This API needs a token: send "Authorization: Bearer <token>" (create one with `conductor token create`, see docs/operating.md, Tokens)',
    );
  }
  const hash = await tokenHash(token);
  let row = await findToken(ctx.db, hash);
  if (!row && ctx.config.bootstrapAdminTokenHash && hash === ctx.config.bootstrapAdminTokenHash) {
    // The Workers ADMIN_TOKEN binding: stored (hashed) the first time it is used. Once its row exists it is
    // an ordinary token: revoking it sticks, even though the binding still holds it.
    await query(
      ctx.db,
      sql`INSERT INTO api_tokens (name, owner, scopes, token_hash, prefix, created_by)
          VALUES ('bootstrap-admin', 'admin', '{admin}'::text[], ${hash}, ${token.slice(0, 8)}, 'ADMIN_TOKEN binding')
          ON CONFLICT (token_hash) DO NOTHING`,
    );
    row = await findToken(ctx.db, hash);
  }
  if (!row || row.revoked) {
    if (!required && !(await apiTokensExist(ctx.db))) return ANONYMOUS;
    throw unauthorized(
      row ? 'token_revoked' : 'invalid_token',
      row
        ? 'This API token was revoked'
        : 'Unknown API token (check CONDUCTOR_TOKEN / the Authorization header)',
    );
  }
  const id = Number(row.id);
  if (row.stale) {
    ctx.defer(
      query(
        ctx.db,
        sql`UPDATE api_tokens SET last_used_at = now()
            WHERE id = ${id} AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')`,
      ),
    );
  }
  return {
    kind: row.internal ? 'system' : 'token',
    tokenId: id,
    name: row.name,
    owner: row.owner,
    scopes: parseTextArray(row.scopes) as TokenScope[],
  };
}

// ---- tokens: create, list, revoke (the admin API and the `conductor token` CLI) -----------------------

// biome-ignore lint/suspicious/noControlCharactersInRegex: the point is to find control characters
export const CONTROL_CHARS = /[\u0000-\u001f\u007f]/;
export const label = (what: string) =>
  z
    .string({ error: `${what} is required` })
    .min(1, `${what} must not be empty`)
    .max(255, `${what} is at most 255 characters`)
    .refine((s) => !CONTROL_CHARS.test(s), `${what} has control characters`);

export const createTokenInput = z
  .strictObject({
    name: label('name'),
    scopes: z
      .array(z.enum(TOKEN_SCOPES, { error: `scopes are ${TOKEN_SCOPES.join(', ')}` }), {
        error: `scopes is a list of ${TOKEN_SCOPES.join(', ')}`,
      })
      .min(1, 'scopes must name at least one scope')
      .max(4),
    owner: label('owner').optional(),
  })
  .refine((t) => !t.scopes.includes('agent') || t.scopes.every((s) => s === 'agent'), {
    message: 'scopes: an agent token has the scope agent alone (it can do nothing but agent calls)',
    path: ['scopes'],
  });
export type CreateTokenInput = z.infer<typeof createTokenInput>;

interface TokenListRow {
  id: string | number;
  name: string;
  owner: string;
  scopes: TokenScope[] | string;
  prefix: string;
  internal: boolean;
  created_by: string;
  created_at: Date | string;
  last_used_at: Date | string | null;
  revoked_at: Date | string | null;
}

const iso = (v: Date | string | null) => (v === null ? null : new Date(v).toISOString());

function tokenView(row: TokenListRow) {
  return {
    id: Number(row.id),
    name: row.name,
    owner: row.owner,
    scopes: parseTextArray(row.scopes) as TokenScope[],
    prefix: row.prefix,
    internal: row.internal,
    created_by: row.created_by,
    created_at: iso(row.created_at),
    last_used_at: iso(row.last_used_at),
    revoked_at: iso(row.revoked_at),
  };
}
export type TokenView = ReturnType<typeof tokenView>;

const TOKEN_COLUMNS = sql`id, name, owner, scopes, prefix, internal, created_by, created_at, last_used_at, revoked_at`;

/** Creates a token; the result carries the token itself, which is never shown again. */
export async function createToken(
  db: Database,
  input: CreateTokenInput,
  by: Principal,
  options: { internal?: boolean } = {},
): Promise<TokenView & { token: string }> {
  const token = randomSecret(TOKEN_PREFIX);
  const scopes = [...new Set(input.scopes)];
  const owner = input.owner ?? input.name;
  const row = await queryOne<TokenListRow>(
    db,
    sql`WITH t AS (
          INSERT INTO api_tokens (name, owner, scopes, token_hash, prefix, internal, created_by)
          VALUES (${input.name}, ${owner}, ${`{${scopes.join(',')}}`}::text[], ${await tokenHash(token)},
                  ${token.slice(0, 8)}, ${options.internal ?? false}, ${actorName(by)})
          RETURNING ${TOKEN_COLUMNS}
        ),
        a AS (${auditInsert(by, 'token.create', {
          target: sql`'token:' || t.id`,
          details: sql`jsonb_build_object('name', t.name, 'owner', t.owner, 'scopes', to_jsonb(t.scopes), 'internal', t.internal)`,
          from: sql`t`,
        })})
        SELECT * FROM t`,
  );
  if (!row) throw new Error('token insert returned no row');
  return { ...tokenView(row), token };
}

export const listTokensInput = z.strictObject({
  limit: z.coerce.number().int().min(1).max(1000).default(100),
  before: z.coerce.number().int().positive().max(Number.MAX_SAFE_INTEGER).optional(),
  revoked: z
    .enum(['true', 'false', '1', '0'])
    .transform((v) => v === 'true' || v === '1')
    .optional(),
});
export type ListTokensInput = z.infer<typeof listTokensInput>;

/** Tokens newest first (never their hashes). Revoked ones are listed too unless `revoked=false`. */
export async function listTokens(db: Database, input: Partial<ListTokensInput> = {}) {
  const limit = input.limit ?? 100;
  const filters = [sql`true`];
  if (input.before) filters.push(sql`id < ${input.before}`);
  if (input.revoked === false) filters.push(sql`revoked_at IS NULL`);
  if (input.revoked === true) filters.push(sql`revoked_at IS NOT NULL`);
  const rows = await query<TokenListRow>(
    db,
    sql`SELECT ${TOKEN_COLUMNS} FROM api_tokens WHERE ${sql.join(filters, sql` AND `)}
        ORDER BY id DESC LIMIT ${limit + 1}`,
  );
  const tokens = rows.slice(0, limit).map(tokenView);
  return { tokens, next_before: rows.length > limit ? (tokens.at(-1)?.id ?? null) : null };
}

/** Revokes a token at once (the next request with it is a 401). Revoking it again changes nothing. */
export async function revokeToken(db: Database, id: number, by: Principal): Promise<TokenView> {
  const row = await queryOne<TokenListRow>(
    db,
    sql`WITH t AS (
          UPDATE api_tokens SET revoked_at = now() WHERE id = ${id} AND revoked_at IS NULL
          RETURNING ${TOKEN_COLUMNS}
        ),
        a AS (${auditInsert(by, 'token.revoke', {
          target: sql`'token:' || t.id`,
          details: sql`jsonb_build_object('name', t.name, 'owner', t.owner)`,
          from: sql`t`,
        })})
        SELECT * FROM t`,
  );
  if (row) return tokenView(row);
  const existing = await queryOne<TokenListRow>(
    db,
    sql`SELECT ${TOKEN_COLUMNS} FROM api_tokens WHERE id = ${id}`,
  );
  if (!existing) throw notFound('token_not_found', `Token ${id} does not exist`);
  return tokenView(existing);
}

export const tokenIdParam = z.strictObject({
  id: z.coerce
    .number({ error: 'token id must be a number' })
    .int('token id must be a whole number')
    .positive('token id must be a positive integer')
    .max(Number.MAX_SAFE_INTEGER),
});
