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

/** The migrations folder as it was before usage accounting (up to 0017): what an existing database has. */
function foldersBeforeUsage(): { dir: string; remove(): void } {
  const dir = mkdtempSync(join(tmpdir(), 'conductor-migrations-'));
  cpSync(MIGRATIONS_FOLDER, dir, { recursive: true });
  const journalPath = join(dir, 'meta', '_journal.json');
  const journal = JSON.parse(readFileSync(journalPath, 'utf8')) as { entries: { tag: string }[] };
  journal.entries = journal.entries.filter((e) => e.tag < '0018');
  writeFileSync(journalPath, JSON.stringify(journal));
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Three jobs that ran and ended before the migration: 2 CPUs for 90 min, 3 CPUs for 30 min, 1 CPU requeued then done. */
async function history(db: Database) {
  await db.execute(sql`INSERT INTO jobs (id, name, script, cpus, account, owner, state, node, attempt, start_time)
    VALUES (1, 'a', 'true', 2, 'physics', 'ana', 'RUNNING', 'n1', 1, '2026-01-05T10:30:00Z'),
           (2, 'b', 'true', 3, 'chem', 'bo', 'RUNNING', 'n2', 1, '2026-01-05T11:00:00Z'),
           (3, 'c', 'true', 1, 'chem', 'bo', 'RUNNING', 'n2', 1, '2026-01-05T09:00:00Z')`);
  await db.execute(
    sql`UPDATE jobs SET state = 'COMPLETED', end_time = start_time + interval '90 minutes' WHERE id = 1`,
  );
  await db.execute(
    sql`UPDATE jobs SET state = 'FAILED', end_time = start_time + interval '30 minutes' WHERE id = 2`,
  );
  await db.execute(
    sql`UPDATE jobs SET state = 'PENDING', requeued_from = 'NODE_FAIL', end_time = '2026-01-05T09:10:00Z' WHERE id = 3`,
  );
  await db.execute(
    sql`UPDATE jobs SET state = 'RUNNING', attempt = 2, node = 'n1', start_time = '2026-01-05T09:20:00Z', end_time = NULL WHERE id = 3`,
  );
  await db.execute(sql`UPDATE jobs SET state = 'COMPLETED', end_time = '2026-01-05T09:40:00Z' WHERE id = 3`);
}

async function expectRolledUp(db: Database) {
  const attempts = await query<{ job_id: string; attempt: number; cpus: number }>(
    db,
    sql`SELECT job_id, attempt, cpus FROM job_attempts ORDER BY job_id, attempt`,
  );
  expect(attempts.map((a) => [Number(a.job_id), a.attempt, a.cpus])).toEqual([
    [1, 1, 2],
    [2, 1, 3],
    [3, 1, 1],
    [3, 2, 1],
  ]);
  const hours = await query<{ bucket: Date; account: string; cpu: string; ended: number }>(
    db,
    sql`SELECT bucket, account, sum(cpu_seconds) AS cpu, sum(completed + failed)::int AS ended
        FROM usage_hourly GROUP BY bucket, account ORDER BY bucket, account`,
  );
  expect(
    hours.map((h) => [new Date(h.bucket).toISOString().slice(11, 16), h.account, Number(h.cpu), h.ended]),
  ).toEqual([
    ['09:00', 'chem', 600 + 1200, 1],
    ['10:00', 'physics', 2 * 1800, 0],
    ['11:00', 'chem', 3 * 1800, 1],
    ['11:00', 'physics', 2 * 3600, 0],
    ['12:00', 'physics', 0, 1], // it ended at 12:00 sharp
  ]);
  const days = await query<{ cpu: string }>(db, sql`SELECT sum(cpu_seconds) AS cpu FROM usage_daily`);
  expect(Number(days[0]?.cpu)).toBe(1800 + 3600 + 7200 + 5400);
  // And the trigger runs from then on.
  await db.execute(sql`INSERT INTO jobs (id, name, script, cpus, account, state, node, attempt, start_time)
    VALUES (4, 'd', 'true', 4, 'bio', 'RUNNING', 'n3', 1, '2026-01-06T00:00:00Z')`);
  await db.execute(sql`UPDATE jobs SET state = 'COMPLETED', end_time = '2026-01-06T00:10:00Z' WHERE id = 4`);
  const bio = await query<{ cpu: string }>(
    db,
    sql`SELECT cpu_seconds AS cpu FROM usage_daily WHERE account = 'bio'`,
  );
  expect(bio.map((b) => Number(b.cpu))).toEqual([2400]);
}

const postgres = await serviceAvailable('postgres');

describe('migration 0019 (usage roll-ups) on a database that already has finished jobs', () => {
  it('PGlite: records what the old attempts held and rolls them up, then keeps rolling up', async () => {
    const before = foldersBeforeUsage();
    const lite = await connectPglite();
    try {
      await migrateLite(drizzleLite(lite.client), { migrationsFolder: before.dir });
      await history(lite.db);
      await migrateLite(drizzleLite(lite.client), { migrationsFolder: MIGRATIONS_FOLDER });
      await expectRolledUp(lite.db);
    } finally {
      await lite.close();
      before.remove();
    }
  });

  const name = `conductor_test_${inject('testRunId')}_usage`;
  afterAll(async () => {
    if (!postgres) return;
    const admin = new pg.Client({ connectionString: PG_ADMIN_URL });
    await admin.connect();
    await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    await admin.end();
  });

  it.runIf(postgres)(
    'Postgres: records what the old attempts held and rolls them up, then keeps rolling up',
    async () => {
      const admin = new pg.Client({ connectionString: PG_ADMIN_URL });
      await admin.connect();
      await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await admin.query(`CREATE DATABASE ${name}`);
      await admin.end();
      const url = new URL(PG_ADMIN_URL);
      url.pathname = `/${name}`;
      const pool = new pg.Pool({ connectionString: url.toString(), max: 2 });
      const before = foldersBeforeUsage();
      try {
        const db = drizzle(pool) as unknown as Database;
        await migratePg(drizzle(pool), { migrationsFolder: before.dir });
        await history(db);
        await migratePg(drizzle(pool), { migrationsFolder: MIGRATIONS_FOLDER });
        await expectRolledUp(db);
      } finally {
        await pool.end();
        before.remove();
      }
    },
  );
});
