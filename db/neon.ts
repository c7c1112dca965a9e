/**
 * The Neon serverless driver (@neondatabase/serverless), for the control plane on Cloudflare Workers.
 * Runtime-neutral: it is bundled into the Worker, so no `node:` imports, no `ws`, no `process.env`.
 *
 * Which path uses which driver, and why:
 *
 * - Everything the domain does goes through `connectNeonPool` (Postgres wire protocol over a WebSocket,
 *   drizzle `neon-serverless`). The domain runs on one `Database` port and needs interactive transactions:
 *   the scheduling pass is BEGIN, `FOR UPDATE` on workers, `FOR UPDATE SKIP LOCKED` on pending jobs, a
 *   decision in JS, one write, COMMIT. drizzle `neon-http` cannot do that (`db.transaction` throws: HTTP
 *   transactions are a fixed list of statements sent at once). So the routes, the agent protocol, the
 *   scheduler, the reaper and the cache sync all use the Pool.
 * - On Workers a Pool (each of its clients is a WebSocket) cannot outlive the request or cron invocation
 *   that opened it. Create one per invocation and end it when the invocation ends, without making the
 *   response wait: `const neon = connectNeonPool(env.DATABASE_URL); ...; ctx.waitUntil(neon.close())`.
 *   Work the domain defers past the response (`Ports.defer`, e.g. cache deltas) may still query: end the
 *   pool after it settles, not before.
 *   Creating a Pool costs nothing: a connection is opened only by the first query. Keep `max` small there:
 *   a Worker invocation may hold at most 6 simultaneous outgoing connections (WebSockets and fetches,
 *   Upstash's REST calls included).
 * - `connectNeonHttp` (one HTTPS request per statement, `neon()` + drizzle `neon-http`) has no connection
 *   to open, so a lone statement costs one round trip instead of a WebSocket handshake plus Postgres
 *   start-up first. Nothing in the domain uses it today: that would need a second, non-transactional port.
 *   It is here for one-shot work outside the domain (a database probe, ops and deploy scripts) and for the
 *   benchmark to measure whether the single-statement hot paths (heartbeat, finish, job reads) are worth
 *   moving to it. Its non-interactive `sql.transaction([...])` / `db.batch([...])` is atomic but cannot
 *   read before it writes.
 * - Migrations are not run from a Worker (drizzle's migrators read the migration files with `node:fs`):
 *   run them from Node at deploy time, over TCP with `migrateNodePg` (Neon accepts plain Postgres
 *   connections) or through this Pool with `drizzle-orm/neon-serverless/migrator` and `ws`.
 *
 * Production leaves `neonConfig` alone (Neon's own WebSocket and HTTP endpoints, TLS, pipelined connect).
 * `configureNeonForLocal` points the driver at this machine's bridges (test/support/neon-proxy.ts and
 * test/support/neon-http-bridge.ts), which stand in for Neon's endpoints in front of a local Postgres.
 *
 * Result shapes and types match node-postgres (the driver bundles node-postgres 8.8 and its type parsers):
 * `db.execute` returns `{ rows, fields, rowCount, command }`, int8 and numeric come back as strings,
 * json/jsonb parsed, timestamps as strings from drizzle's raw `execute` and as `Date` from typed selects.
 * One difference: constructing a drizzle `neon-http` database sets the driver's *global* type parsers for
 * timestamp, timestamptz, date and interval (and their arrays) to return the raw text. Drizzle's own queries
 * are unaffected (they bring their own parsers), but after `connectNeonHttp` a bare `sql\`...\`` or
 * `pool.query(...)` returns timestamps as strings instead of `Date`s, in every Pool of the process.
 * Another: failures to connect carry no error code through the WebSocket; `connectNeonPool` gives them one
 * (08001) so that an outage is a 503 as with node-postgres (see `normalizeConnectErrors`).
 */
import {
  type NeonConfig,
  type NeonQueryFunction,
  neon,
  neonConfig,
  Pool,
  type PoolClient,
  type PoolConfig,
} from '@neondatabase/serverless';
import { drizzle as drizzleHttp, type NeonHttpDatabase } from 'drizzle-orm/neon-http';
import { drizzle as drizzlePool } from 'drizzle-orm/neon-serverless';
import type { Database } from '../functions/domain/ports.ts';
import * as schema from './schema.ts';

export interface NeonPoolConnection {
  db: Database;
  pool: Pool;
  /** Ends every client of the pool (on Workers: `ctx.waitUntil(connection.close())`). */
  close(): Promise<void>;
}

export interface NeonPoolOptions {
  /** Most clients (WebSockets) at once. Default 5: a Worker invocation may hold 6 connections in all. */
  max?: number;
  /** Milliseconds to wait for a connection. Default 10 s. */
  connectionTimeoutMillis?: number;
  /** Milliseconds an idle client is kept. Default 10 s; irrelevant on Workers, where the pool is ended. */
  idleTimeoutMillis?: number;
}

/**
 * A Neon Pool (interactive transactions, `FOR UPDATE`) with drizzle over our schema. On Workers: one per
 * request or cron invocation, closed with `ctx.waitUntil(connection.close())`.
 */
export function connectNeonPool(url: string, options: NeonPoolOptions = {}): NeonPoolConnection {
  const config: PoolConfig = {
    connectionString: url,
    max: options.max ?? 5,
    connectionTimeoutMillis: options.connectionTimeoutMillis ?? 10_000,
    idleTimeoutMillis: options.idleTimeoutMillis ?? 10_000,
  };
  const pool = new Pool(config);
  // An idle client losing its connection (Postgres restarted, WebSocket dropped) must not throw an
  // unhandled 'error' event; the next query gets a fresh client.
  pool.on('error', () => {});
  normalizeConnectErrors(pool);
  const db = drizzlePool(pool, { schema }) as unknown as Database;
  let closing: Promise<void> | undefined;
  return {
    db,
    pool,
    close: () => {
      closing ??= pool.end();
      return closing;
    },
  };
}

/**
 * Failing to connect through the WebSocket tunnel surfaces as a bare `ErrorEvent` (not even an Error) when
 * the endpoint cannot be reached, or as a code-less "Connection terminated unexpectedly" when Postgres is
 * down behind it, where node-postgres reports `ECONNREFUSED`. The HTTP layer answers a database outage
 * with 503 + Retry-After only when it finds a connection-level code (functions/http/errors.ts), so every
 * code-less failure to get a connection becomes an Error with SQLSTATE 08001 (sqlclient unable to
 * establish sqlconnection), the original kept as `cause`. Errors that carry a code (28P01 bad password,
 * 3D000 unknown database, 57P03 starting up) pass unchanged. Covers `pool.connect()` (drizzle's
 * transactions) and `pool.query()` (pg-pool calls `this.connect(callback)`).
 */
function normalizeConnectErrors(pool: Pool): void {
  const normalize = (error: unknown): Error => {
    if (error instanceof Error && typeof (error as { code?: unknown }).code === 'string') return error;
    const message = (error as { message?: unknown } | null)?.message;
    const detail = typeof message === 'string' && message ? message : String(error);
    return Object.assign(new Error(`Could not connect to the database: ${detail}`, { cause: error }), {
      code: '08001',
    });
  };
  type Callback = (
    error: Error | undefined,
    client: PoolClient | undefined,
    done: (release?: unknown) => void,
  ) => void;
  const connect = pool.connect.bind(pool) as (callback?: Callback) => Promise<PoolClient> | undefined;
  pool.connect = ((callback?: Callback) => {
    if (callback) return connect((error, client, done) => callback(error && normalize(error), client, done));
    return connect()?.catch((error: unknown) => {
      throw normalize(error);
    });
  }) as Pool['connect'];
}

export interface NeonHttpConnection {
  /** drizzle `neon-http`: selects, inserts, `execute`, `batch([...])`; `transaction` throws. */
  db: NeonHttpDatabase<typeof schema>;
  /** The raw `neon()` query function: `sql\`...\``, `sql.query(text, params)`, `sql.transaction([...])`. */
  sql: NeonQueryFunction<false, false>;
}

/**
 * Neon over HTTP: one fetch per statement (or per non-interactive transaction), nothing to open or close.
 * Not a domain `Database`: it has no interactive transactions. Note the global type-parser side effect
 * described at the top of this file.
 */
export function connectNeonHttp(url: string): NeonHttpConnection {
  const sql = neon(url);
  const db = drizzleHttp(sql, { schema });
  return { db, sql };
}

export interface NeonLocalOptions {
  /**
   * Where the Pool's WebSockets go, without the protocol: `127.0.0.1:PORT/v1` (the driver appends
   * `?address=host:port`), or a function of the database host and port.
   */
  wsProxy?: string | ((host: string, port: number | string) => string);
  /** The HTTP SQL endpoint for `neon()`, e.g. `http://127.0.0.1:PORT/sql`. */
  fetchEndpoint?: string;
  /** On Node (no global WebSocket before Node 22): `ws`. Inside workerd leave it out: the global is used. */
  webSocketConstructor?: unknown;
}

/**
 * Points the driver (process-wide: `neonConfig` is global) at local stand-ins for Neon's endpoints: plain
 * `ws://` and `http://`, no TLS inside the tunnel, and no pipelined connect (it assumes cleartext-password
 * auth and fails against trust auth with `invalid frontend message type 112`). Production never calls it.
 */
export function configureNeonForLocal(options: NeonLocalOptions): void {
  if (options.wsProxy !== undefined) neonConfig.wsProxy = options.wsProxy;
  neonConfig.useSecureWebSocket = false;
  neonConfig.pipelineTLS = false;
  neonConfig.pipelineConnect = false;
  if (options.fetchEndpoint !== undefined) neonConfig.fetchEndpoint = options.fetchEndpoint;
  if (options.webSocketConstructor !== undefined) {
    neonConfig.webSocketConstructor = options.webSocketConstructor as NeonConfig['webSocketConstructor'];
  }
}
