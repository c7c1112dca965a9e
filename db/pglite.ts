import { mkdirSync } from 'node:fs';
import { PGlite } from '@electric-sql/pglite';
import { drizzle } from 'drizzle-orm/pglite';
import { migrate } from 'drizzle-orm/pglite/migrator';
import type { Database } from '../functions/domain/ports.ts';
import { MIGRATIONS_FOLDER } from './migrations.ts';
import * as schema from './schema.ts';

export interface PgliteConnection {
  db: Database;
  client: PGlite;
  close(): Promise<void>;
}

/**
 * Embedded Postgres (PGlite) for the zero-setup local cluster. `dataDir` keeps the data across restarts;
 * without it the database lives in memory. `snapshot` loads a `dumpDataDir()` tarball (tests).
 */
export async function connectPglite(
  options: { dataDir?: string; snapshot?: Blob } = {},
): Promise<PgliteConnection> {
  if (options.dataDir) mkdirSync(options.dataDir, { recursive: true });
  const client = await PGlite.create({
    ...(options.dataDir ? { dataDir: options.dataDir } : {}),
    ...(options.snapshot ? { loadDataDir: options.snapshot } : {}),
  });
  const db = drizzle(client, { schema }) as unknown as Database;
  return { db, client, close: () => client.close() };
}

export async function migratePglite(connection: PgliteConnection): Promise<void> {
  await migrate(drizzle(connection.client), { migrationsFolder: MIGRATIONS_FOLDER });
}
