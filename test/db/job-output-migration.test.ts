/** Migration 0007 (job_output_chunks) on a database that already holds job output: the logs read the same. */
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sql } from 'drizzle-orm';
import { drizzle as drizzleLite } from 'drizzle-orm/pglite';
import { migrate as migrateLite } from 'drizzle-orm/pglite/migrator';
import { describe, expect, it } from 'vitest';
import { MIGRATIONS_FOLDER } from '../../db/migrations.ts';
import { connectPglite } from '../../db/pglite.ts';
import { readOutput, streamView } from '../../functions/domain/job-logs.ts';
import { query } from '../../functions/domain/sql.ts';

/** The migrations folder without 0007 and later: what an existing database has. */
function foldersBefore0007(): { dir: string; remove(): void } {
  const dir = mkdtempSync(join(tmpdir(), 'conductor-migrations-'));
  cpSync(MIGRATIONS_FOLDER, dir, { recursive: true });
  const journalPath = join(dir, 'meta', '_journal.json');
  const journal = JSON.parse(readFileSync(journalPath, 'utf8')) as { entries: { idx: number }[] };
  journal.entries = journal.entries.filter((e) => e.idx < 7);
  writeFileSync(journalPath, JSON.stringify(journal));
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

describe('migration 0007 (job_output_chunks) on a database that already has job output', () => {
  it('PGlite: moves each stream’s stored text into a chunk; content, bytes and truncation read the same', async () => {
    const before = foldersBefore0007();
    const lite = await connectPglite();
    try {
      await migrateLite(drizzleLite(lite.client), { migrationsFolder: before.dir });
      const long = `${'é'.repeat(1024 * 1024 - 5)}tail\n`;
      const [job] = await query<{ id: string | number }>(
        lite.db,
        sql`INSERT INTO jobs (name, script, cpus, state, attempt) VALUES ('old', 'true', 1, 'COMPLETED', 2)
            RETURNING id`,
      );
      const id = Number(job!.id);
      await lite.db.execute(
        sql`INSERT INTO job_output (job_id, stream, attempt, content, bytes)
            VALUES (${id}, 'stdout', 2, ${long}, 5000000), (${id}, 'stderr', 2, 'err\n', 4)`,
      );
      await migrateLite(drizzleLite(lite.client), { migrationsFolder: MIGRATIONS_FOLDER });
      const output = await readOutput(lite.db, id);
      expect(output.streams.stdout.bytes).toBe(5_000_000);
      expect(output.streams.stdout.content === long).toBe(true);
      expect(streamView(output.streams.stdout).truncated).toBe(true);
      expect(output.streams.stderr).toEqual({ content: 'err\n', bytes: 4 });
      const columns = await query<{ column_name: string }>(
        lite.db,
        sql`SELECT column_name FROM information_schema.columns WHERE table_name = 'job_output'`,
      );
      expect(columns.map((c) => c.column_name)).not.toContain('content');
    } finally {
      await lite.close();
      before.remove();
    }
  }, 180_000);
});
