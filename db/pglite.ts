import { cpSync, existsSync, mkdirSync, readdirSync, renameSync, rmdirSync, rmSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PGlite } from '@electric-sql/pglite';
import { drizzle } from 'drizzle-orm/pglite';
import { migrate } from 'drizzle-orm/pglite/migrator';
import type { Database } from '../functions/domain/ports.ts';
import { MIGRATIONS_FOLDER } from './migrations.ts';
import * as schema from './schema.ts';

/**
 * A migrated, cleanly shut down data directory made by the build (scripts/build.mjs): a new local cluster
 * starts from a copy of it instead of running initdb. `../dist` from here (db/) and from the bundled server
 * (dist/) alike.
 */
export const BUILT_PGDATA_TEMPLATE = fileURLToPath(new URL('../dist/pglite-pgdata', import.meta.url));

/**
 * Postgres' shared buffers for every PGlite opened here. initdb writes 128MB, and Postgres initialises all of
 * them at each start: about 0.5 s more to open than with 16MB, and memory this one-connection embedded
 * database does not need (a data directory's pages are in the OS's cache besides).
 */
export const PGLITE_SHARED_BUFFERS = '16MB';

export interface PgliteConnection {
  db: Database;
  client: PGlite;
  close(): Promise<void>;
}

/**
 * Embedded Postgres (PGlite) for the zero-setup local cluster. `dataDir` keeps the data across restarts;
 * without it the database lives in memory. `snapshot` loads a `dumpDataDir()` tarball (tests). A new
 * `dataDir` starts as a copy of `template` (default: the build's, when there is one): a first start then
 * takes about a second instead of initdb's 6-11 s.
 */
export async function connectPglite(
  options: { dataDir?: string; snapshot?: Blob; template?: string } = {},
): Promise<PgliteConnection> {
  const { dataDir } = options;
  const template = options.template ?? BUILT_PGDATA_TEMPLATE;
  if (dataDir && !options.snapshot && isNewDataDir(dataDir) && existsSync(template)) {
    let copied = false;
    try {
      copyDataDir(template, dataDir);
      copied = true;
      return await openPglite({ dataDir });
    } catch {
      // A template this PGlite cannot open (made by another version), or one replaced while we copied it:
      // initdb as without one.
      if (copied) rmSync(dataDir, { recursive: true, force: true });
    }
  }
  return openPglite(options);
}

async function openPglite(options: { dataDir?: string; snapshot?: Blob }): Promise<PgliteConnection> {
  if (options.dataDir) mkdirSync(options.dataDir, { recursive: true });
  const client = await PGlite.create({
    ...(options.dataDir ? { dataDir: options.dataDir } : {}),
    ...(options.snapshot ? { loadDataDir: options.snapshot } : {}),
    startParams: [...PGlite.defaultStartParams, '-c', `shared_buffers=${PGLITE_SHARED_BUFFERS}`],
  });
  const db = drizzle(client, { schema }) as unknown as Database;
  return { db, client, close: () => client.close() };
}

function isNewDataDir(dataDir: string): boolean {
  return !existsSync(dataDir) || readdirSync(dataDir).length === 0;
}

/**
 * Copies `template` to `dataDir` through a sibling directory renamed into place: a copy cut short (a crash,
 * a full disk) leaves only that sibling, so `dataDir` never looks like an existing database with half its
 * files. Such leftovers of processes no longer running are removed first.
 */
function copyDataDir(template: string, dataDir: string): void {
  const parent = dirname(dataDir);
  const prefix = `.${basename(dataDir)}.partial-`;
  mkdirSync(parent, { recursive: true });
  for (const name of readdirSync(parent)) {
    if (!name.startsWith(prefix)) continue;
    const pid = Number(name.slice(prefix.length));
    if (pid === process.pid || !processRunning(pid))
      rmSync(join(parent, name), { recursive: true, force: true });
  }
  const partial = join(parent, `${prefix}${process.pid}`);
  try {
    cpSync(template, partial, { recursive: true });
    rmSync(join(partial, 'postmaster.pid'), { force: true });
    if (existsSync(dataDir)) rmdirSync(dataDir); // empty (isNewDataDir): rename needs it gone or empty
    renameSync(partial, dataDir);
  } catch (error) {
    rmSync(partial, { recursive: true, force: true });
    throw error;
  }
}

function processRunning(pid: number): boolean {
  if (!Number.isSafeInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export async function migratePglite(connection: PgliteConnection): Promise<void> {
  await migrate(drizzle(connection.client), { migrationsFolder: MIGRATIONS_FOLDER });
}

/**
 * Writes a migrated, empty data directory to `path` (the build's template): initdb and the migrations in a
 * directory beside it, shut down cleanly (so that a copy opens without crash recovery), then renamed into
 * place (a server copying the previous one meanwhile fails its copy and runs initdb instead of reading a
 * mixture).
 */
export async function writePgliteTemplate(path: string): Promise<void> {
  const partial = `${path}.partial-${process.pid}`;
  const previous = `${path}.previous-${process.pid}`;
  rmSync(partial, { recursive: true, force: true });
  const lite = await openPglite({ dataDir: partial });
  await migratePglite(lite);
  await lite.close();
  rmSync(join(partial, 'postmaster.pid'), { force: true });
  if (existsSync(path)) renameSync(path, previous);
  renameSync(partial, path);
  rmSync(previous, { recursive: true, force: true });
}
