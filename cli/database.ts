/**
 * The database the `conductor` command works on: DATABASE_URL (Postgres or Neon over TCP), else the local
 * cluster's embedded PGlite under CONDUCTOR_DATA_DIR (default `.conductor`), the same one `npm start` uses.
 * Migrations are applied first, as the server does.
 */
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { connectNodePg, ensureDatabase, migrateNodePg } from '../db/node-postgres.ts';
import { connectPglite, migratePglite } from '../db/pglite.ts';
import type { Database } from '../functions/domain/ports.ts';

export interface CliDatabase {
  db: Database;
  /** Where, for messages: `Postgres at host/db` or `PGlite in <dir>`. */
  where: string;
  close(): Promise<void>;
}

export async function openCliDatabase(env: NodeJS.ProcessEnv): Promise<CliDatabase> {
  const url = env.DATABASE_URL?.trim();
  if (url) {
    await ensureDatabase(url).catch(() => {});
    await migrateNodePg(url);
    const pg = connectNodePg(url, { max: 2 });
    const parsed = new URL(url);
    return { db: pg.db, where: `Postgres at ${parsed.host}${parsed.pathname}`, close: pg.close };
  }
  const dataDir = resolve(env.CONDUCTOR_DATA_DIR?.trim() || '.conductor');
  const dir = join(dataDir, 'pgdata');
  if (localServerRunning(dataDir)) {
    // PGlite is one process's database: two processes writing it would corrupt it.
    throw new Error(
      `The local database in ${dir} is in use (is \`npm start\` running?). Stop the server first, or use the ` +
        'admin API on loopback instead (curl -X POST http://127.0.0.1:8000/api/v1/tokens ...).',
    );
  }
  const lite = await connectPglite({ dataDir: dir });
  await migratePglite(lite);
  return { db: lite.db, where: `PGlite in ${dir}`, close: lite.close };
}

/** The PID in `<dataDir>/server.pid` (written by `npm start` on PGlite) names a live process. */
export function localServerRunning(dataDir: string): boolean {
  let pid: number;
  try {
    pid = Number(readFileSync(join(dataDir, 'server.pid'), 'utf8').trim());
  } catch {
    return false;
  }
  if (!Number.isSafeInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}
