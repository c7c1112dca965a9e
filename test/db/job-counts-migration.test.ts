import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sql } from 'drizzle-orm';
import { drizzle } from 'drizzle-orm/node-postgres';
import { migrate as migratePg } from 'drizzle-orm/node-postgres/migrator';
import { drizzle as drizzleLite } from 'drizzle-orm/pglite';
import { migrate as migrateLite } from 'drizzle-orm/pglite/migrator';
import pg from 'pg';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { MIGRATIONS_FOLDER } from '../../db/migrations.ts';
import { connectPglite } from '../../db/pglite.ts';
import type { Database } from '../../functions/domain/ports.ts';
import { query } from '../../functions/domain/sql.ts';
import { PG_ADMIN_URL, serviceAvailable } from '../support/services.ts';

/** The migrations folder as it was before job_state_deltas (0000–0002): what an existing database has. */
function foldersBefore0003(): { dir: string; remove(): void } {
  const dir = mkdtempSync(join(tmpdir(), 'conductor-migrations-'));
  cpSync(MIGRATIONS_FOLDER, dir, { recursive: true });
  const journalPath = join(dir, 'meta', '_journal.json');
  const journal = JSON.parse(readFileSync(journalPath, 'utf8')) as { entries: { idx: number }[] };
  journal.entries = journal.entries.filter((e) => e.idx <= 2);
  writeFileSync(journalPath, JSON.stringify(journal));
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

const HISTORY = sql`INSERT INTO jobs (name, script, cpus, state)
  SELECT 'old', 'true', 1, (ARRAY['PENDING', 'RUNNING', 'COMPLETED', 'COMPLETED', 'FAILED', 'CANCELLED', 'TIMEOUT', 'NODE_FAIL'])[1 + g % 8]
  FROM generate_series(1, 1000) g`;

async function expectBackfilled(db: Database) {
  const truth = await query<{ state: string; n: string | number }>(
    db,
    sql`SELECT state, count(*) AS n FROM jobs GROUP BY state ORDER BY state`,
  );
  const deltas = await query<{ state: string; n: string | number }>(
    db,
    sql`SELECT state, sum(n) AS n FROM job_state_deltas GROUP BY state ORDER BY state`,
  );
  expect(deltas.map((r) => [r.state, Number(r.n)])).toEqual(truth.map((r) => [r.state, Number(r.n)]));
  // And the triggers run from then on.
  await db.execute(sql`UPDATE jobs SET state = 'COMPLETED' WHERE state = 'RUNNING'`);
  const after = await query<{ n: string | number }>(
    db,
    sql`SELECT (SELECT count(*) FROM jobs WHERE state = 'COMPLETED') - (SELECT sum(n) FROM job_state_deltas WHERE state = 'COMPLETED') AS n`,
  );
  expect(Number(after[0]?.n)).toBe(0);
  const indexes = await query<{ indexname: string }>(
    db,
    sql`SELECT indexname FROM pg_indexes WHERE tablename = 'resource_allocations' ORDER BY indexname`,
  );
  expect(indexes.map((i) => i.indexname)).toContain('resource_allocations_active_cpus_idx');
  expect(indexes.map((i) => i.indexname)).not.toContain('resource_allocations_active_idx');
}

const postgres = await serviceAvailable('postgres');

describe('migrations 0003–0004 (job_state_deltas) on a database that already has jobs', () => {
  it('PGlite: backfill the counts from the existing jobs, then keep them', async () => {
    const before = foldersBefore0003();
    const lite = await connectPglite();
    try {
      await migrateLite(drizzleLite(lite.client), { migrationsFolder: before.dir });
      await lite.db.execute(HISTORY);
      await migrateLite(drizzleLite(lite.client), { migrationsFolder: MIGRATIONS_FOLDER });
      await expectBackfilled(lite.db);
    } finally {
      await lite.close();
      before.remove();
    }
  });

  const name = `conductor_test_${inject('testRunId')}_jobcounts`;
  afterAll(async () => {
    if (!postgres) return;
    const admin = new pg.Client({ connectionString: PG_ADMIN_URL });
    await admin.connect();
    await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    await admin.end();
  });

  it.runIf(postgres)('Postgres: backfill the counts from the existing jobs, then keep them', async () => {
    const admin = new pg.Client({ connectionString: PG_ADMIN_URL });
    await admin.connect();
    await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    await admin.query(`CREATE DATABASE ${name}`);
    await admin.end();
    const url = new URL(PG_ADMIN_URL);
    url.pathname = `/${name}`;
    const pool = new pg.Pool({ connectionString: url.toString(), max: 2 });
    const before = foldersBefore0003();
    try {
      const db = drizzle(pool) as unknown as Database;
      await migratePg(drizzle(pool), { migrationsFolder: before.dir });
      await db.execute(HISTORY);
      await migratePg(drizzle(pool), { migrationsFolder: MIGRATIONS_FOLDER });
      await expectBackfilled(db);
    } finally {
      await pool.end();
      before.remove();
    }
  });
});
