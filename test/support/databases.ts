import { readFileSync } from 'node:fs';
import pg from 'pg';
import { inject } from 'vitest';
import { connectNodePg } from '../../db/node-postgres.ts';
import { connectPglite } from '../../db/pglite.ts';
import type { Database } from '../../functions/domain/ports.ts';
import { PG_ADMIN_URL } from './services.ts';

export interface TestDatabase {
  db: Database;
  kind: 'postgres' | 'pglite';
  /** Connection URL (Postgres only), e.g. for a control plane in another process. */
  url?: string;
  close(): Promise<void>;
}

/** A fresh Postgres database for one test file, cloned from the migrated template. */
export async function createPostgresDatabase(): Promise<TestDatabase> {
  const template = inject('pgTemplate');
  if (!template) throw new Error('no Postgres template: Postgres was not reachable at setup');
  const name = `conductor_test_${inject('testRunId')}_${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
  const admin = new pg.Client({ connectionString: PG_ADMIN_URL });
  await admin.connect();
  try {
    for (let attempt = 0; ; attempt++) {
      try {
        await admin.query(`CREATE DATABASE ${name} TEMPLATE ${template}`);
        break;
      } catch (error) {
        // "source database is being accessed by other users": another file is cloning right now.
        if (attempt >= 20 || (error as { code?: string }).code !== '55006') throw error;
        await new Promise((resolve) => setTimeout(resolve, 100 + Math.random() * 200));
      }
    }
  } finally {
    await admin.end();
  }
  const url = new URL(PG_ADMIN_URL);
  url.pathname = `/${name}`;
  const connection = connectNodePg(url.toString(), { max: 20 });
  return {
    db: connection.db,
    kind: 'postgres',
    url: url.toString(),
    async close() {
      await connection.close();
      const drop = new pg.Client({ connectionString: PG_ADMIN_URL });
      await drop.connect();
      await drop.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`).catch(() => {});
      await drop.end();
    },
  };
}

/** A fresh PGlite database loaded from the migrated snapshot. */
export async function createPgliteDatabase(): Promise<TestDatabase> {
  const snapshot = new Blob([readFileSync(inject('pgliteSnapshot'))]);
  const connection = await connectPglite({ snapshot });
  return { db: connection.db, kind: 'pglite', close: connection.close };
}
