import { drizzle } from 'drizzle-orm/node-postgres';
import { migrate } from 'drizzle-orm/node-postgres/migrator';
import pg from 'pg';
import type { Database } from '../functions/domain/ports.ts';
import { MIGRATIONS_FOLDER } from './migrations.ts';
import * as schema from './schema.ts';

export interface NodePgConnection {
  db: Database;
  pool: pg.Pool;
  close(): Promise<void>;
}

/** A pooled node-postgres connection (self-hosted Postgres, or Neon over TCP). */
export function connectNodePg(
  url: string,
  options: { max?: number; queryTimeoutMs?: number; connectionTimeoutMs?: number } = {},
): NodePgConnection {
  const pool = new pg.Pool({
    connectionString: url,
    max: options.max ?? 10,
    connectionTimeoutMillis: options.connectionTimeoutMs ?? 5_000,
    idleTimeoutMillis: 30_000,
    // A partitioned network (packets dropped, nothing refused) must not hang requests: give up on a query
    // after 5 s (the API answers 503; every query here is small) and let TCP keepalive find dead connections.
    query_timeout: options.queryTimeoutMs ?? 5_000,
    keepAlive: true,
  });
  // A client losing its connection (Postgres restarted, the network cut) must not crash the process:
  // the pool reports idle ones here; one that a request holds between two queries emits 'error' on itself
  // with no listener of the pool's (its holder's next query fails, and the pool drops it on release).
  pool.on('error', () => {});
  pool.on('connect', (client) => client.on('error', () => {}));
  const db = drizzle(pool, { schema }) as unknown as Database;
  return { db, pool, close: () => pool.end() };
}

/** Creates the database named in `url` when it does not exist yet (connecting to `postgres` to do so). */
export async function ensureDatabase(url: string): Promise<void> {
  const target = new URL(url);
  const name = decodeURIComponent(target.pathname.replace(/^\//, ''));
  if (!name) return;
  const admin = new URL(url);
  admin.pathname = '/postgres';
  const client = new pg.Client({ connectionString: admin.toString(), connectionTimeoutMillis: 5_000 });
  await client.connect();
  try {
    const found = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [name]);
    if (found.rowCount === 0) {
      await client
        .query(`CREATE DATABASE "${name.replaceAll('"', '""')}"`)
        .catch((error: { code?: string }) => {
          if (error.code !== '42P04') throw error; // created meanwhile by another process
        });
    }
  } finally {
    await client.end();
  }
}

/** Applies the migrations under an advisory lock, so that several servers starting at once do not race. */
export async function migrateNodePg(url: string): Promise<void> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5_000 });
  await client.connect();
  try {
    await client.query('SELECT pg_advisory_lock(4242001)');
    await migrate(drizzle(client), { migrationsFolder: MIGRATIONS_FOLDER });
  } finally {
    await client.end();
  }
}
