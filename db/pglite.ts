import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PGlite } from '@electric-sql/pglite';
import { drizzle } from 'drizzle-orm/pglite';
import { migrate } from 'drizzle-orm/pglite/migrator';
import type { Database } from '../functions/domain/ports.ts';
import { MIGRATIONS_FOLDER } from './migrations.ts';
import * as schema from './schema.ts';

/**
 * A migrated data directory made by the build (scripts/build.mjs). `../dist` from here (db/) and from the
 * bundled server (dist/) alike.
 */
export const BUILT_PGDATA_SNAPSHOT = fileURLToPath(new URL('../dist/pglite-pgdata.tar.gz', import.meta.url));

export interface PgliteConnection {
  db: Database;
  client: PGlite;
  close(): Promise<void>;
}

/**
 * Embedded Postgres (PGlite) for the zero-setup local cluster. `dataDir` keeps the data across restarts;
 * without it the database lives in memory. `snapshot` loads a `dumpDataDir()` tarball (tests). A new
 * `dataDir` starts from the build's migrated snapshot when there is one: a first start then takes about a
 * second instead of initdb's 6-11 s.
 */
export async function connectPglite(
  options: { dataDir?: string; snapshot?: Blob } = {},
): Promise<PgliteConnection> {
  const { dataDir } = options;
  if (dataDir && !options.snapshot && isNewDataDir(dataDir) && existsSync(BUILT_PGDATA_SNAPSHOT)) {
    const snapshot = new Blob([readFileSync(BUILT_PGDATA_SNAPSHOT)]);
    try {
      return await openPglite({ dataDir, snapshot });
    } catch {
      // A snapshot this PGlite cannot read (made by another version): initdb as without one.
      rmSync(dataDir, { recursive: true, force: true });
    }
  }
  return openPglite(options);
}

async function openPglite(options: { dataDir?: string; snapshot?: Blob }): Promise<PgliteConnection> {
  if (options.dataDir) mkdirSync(options.dataDir, { recursive: true });
  const client = await PGlite.create({
    ...(options.dataDir ? { dataDir: options.dataDir } : {}),
    ...(options.snapshot ? { loadDataDir: options.snapshot } : {}),
  });
  const db = drizzle(client, { schema }) as unknown as Database;
  return { db, client, close: () => client.close() };
}

function isNewDataDir(dataDir: string): boolean {
  return !existsSync(dataDir) || readdirSync(dataDir).length === 0;
}

export async function migratePglite(connection: PgliteConnection): Promise<void> {
  await migrate(drizzle(connection.client), { migrationsFolder: MIGRATIONS_FOLDER });
}

/** Writes a migrated, empty data directory as a gzipped tarball to `path` (the build's snapshot). */
export async function writePgliteSnapshot(path: string): Promise<void> {
  const lite = await openPglite({});
  await migratePglite(lite);
  const tarball = await lite.client.dumpDataDir('gzip');
  await lite.close();
  mkdirSync(join(path, '..'), { recursive: true });
  writeFileSync(`${path}.partial`, Buffer.from(await tarball.arrayBuffer()));
  renameSync(`${path}.partial`, path);
}
