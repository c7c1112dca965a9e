/** Migration 0020 (multifactor priority) on a database with jobs: their priority becomes their adjustment. */
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sql } from 'drizzle-orm';
import { drizzle as drizzleLite } from 'drizzle-orm/pglite';
import { migrate as migrateLite } from 'drizzle-orm/pglite/migrator';
import { describe, expect, it } from 'vitest';
import { MIGRATIONS_FOLDER } from '../../db/migrations.ts';
import { connectPglite } from '../../db/pglite.ts';
import { query } from '../../functions/domain/sql.ts';

/** The migrations folder without the priority migration and later: what an existing database has. */
function foldersBeforePriority(): { dir: string; remove(): void } {
  const dir = mkdtempSync(join(tmpdir(), 'conductor-migrations-'));
  cpSync(MIGRATIONS_FOLDER, dir, { recursive: true });
  const journalPath = join(dir, 'meta', '_journal.json');
  const journal = JSON.parse(readFileSync(journalPath, 'utf8')) as { entries: { tag: string }[] };
  const at = journal.entries.findIndex((e) => e.tag.endsWith('_priority'));
  expect(at).toBeGreaterThan(0);
  journal.entries = journal.entries.slice(0, at);
  writeFileSync(journalPath, JSON.stringify(journal));
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

describe('migration 0020 (multifactor priority) on a database that already has jobs', () => {
  it('PGlite: keeps each job’s submitted priority as its requested_priority, and its place in the queue', async () => {
    const before = foldersBeforePriority();
    const lite = await connectPglite();
    try {
      await migrateLite(drizzleLite(lite.client), { migrationsFolder: before.dir });
      await lite.db.execute(
        sql`INSERT INTO jobs (name, script, cpus, priority) VALUES ('high', 'true', 1, 7), ('low', 'true', 1, -3)`,
      );
      await migrateLite(drizzleLite(lite.client), { migrationsFolder: MIGRATIONS_FOLDER });
      const rows = await query<{ name: string; priority: number; requested_priority: number }>(
        lite.db,
        sql`SELECT name, priority, requested_priority FROM jobs ORDER BY priority DESC`,
      );
      expect(rows).toEqual([
        { name: 'high', priority: 7, requested_priority: 7 },
        { name: 'low', priority: -3, requested_priority: -3 },
      ]);
    } finally {
      await lite.close();
      before.remove();
    }
  }, 180_000);
});
