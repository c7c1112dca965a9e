/**
 * A new local data directory starts as a copy of the build's template (db/pglite.ts, made by
 * scripts/build.mjs with writePgliteTemplate): it must be the complete migrated database, a copy cut short
 * must not leave a directory that a later start takes for an existing database, and a template that cannot
 * be copied or opened must still give a working database (initdb, as without a template).
 */
import { execFileSync, spawn } from 'node:child_process';
import {
  closeSync,
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MIGRATIONS_FOLDER } from '../../db/migrations.ts';
import {
  connectPglite,
  migratePglite,
  PGLITE_SHARED_BUFFERS,
  type PgliteConnection,
  writePgliteTemplate,
} from '../../db/pglite.ts';
import { query } from '../../functions/domain/sql.ts';

const PGLITE_MODULE = fileURLToPath(new URL('../../db/pglite.ts', import.meta.url));
const journal = JSON.parse(readFileSync(join(MIGRATIONS_FOLDER, 'meta', '_journal.json'), 'utf8')) as {
  entries: { tag: string; when: number }[];
};

async function appliedMigrations(lite: PgliteConnection) {
  const rows = await query<{ created_at: string | number }>(
    lite.db,
    sql`SELECT created_at FROM drizzle.__drizzle_migrations ORDER BY id`,
  );
  return rows.map((r) => Number(r.created_at));
}

async function fromTemplate(lite: PgliteConnection): Promise<boolean> {
  const [row] = await query<{ t: string | null }>(
    lite.db,
    sql`SELECT to_regclass('copied_from_template') AS t`,
  );
  return row?.t != null;
}

describe('a new PGlite data directory from the build’s template', () => {
  const root = mkdtempSync(join(tmpdir(), 'conductor-pgtemplate-'));
  const template = join(root, 'template');

  beforeAll(async () => {
    await writePgliteTemplate(template); // what scripts/build.mjs runs for dist/pglite-pgdata
    // A mark that only copies of this template have.
    const lite = await connectPglite({ dataDir: template });
    await lite.client.exec('CREATE TABLE copied_from_template ()');
    await lite.close();
  }, 180_000);
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  it('is the complete migrated database: every migration, the latest last; a restart keeps its data', {
    timeout: 60_000,
  }, async () => {
    expect(existsSync(join(template, 'postmaster.pid'))).toBe(false); // shut down cleanly
    const dataDir = join(root, 'first', 'pgdata');
    let lite = await connectPglite({ dataDir, template });
    try {
      expect(await fromTemplate(lite)).toBe(true);
      const applied = await appliedMigrations(lite);
      expect(applied).toEqual(journal.entries.map((e) => e.when));
      await migratePglite(lite); // what every start does: nothing left to apply
      expect(await appliedMigrations(lite)).toEqual(applied);
      const [buffers] = await query<{ shared_buffers: string }>(lite.db, sql`SHOW shared_buffers`);
      expect(buffers?.shared_buffers).toBe(PGLITE_SHARED_BUFFERS);
      await lite.db.execute(sql`INSERT INTO jobs (name, script, cpus) VALUES ('kept', 'true', 1)`);
    } finally {
      await lite.close();
    }
    expect(readdirSync(join(root, 'first'))).toEqual(['pgdata']);
    lite = await connectPglite({ dataDir, template }); // a second start: the directory is not new
    try {
      const jobs = await query<{ name: string }>(lite.db, sql`SELECT name FROM jobs`);
      expect(jobs.map((j) => j.name)).toEqual(['kept']);
      const [buffers] = await query<{ shared_buffers: string }>(lite.db, sql`SHOW shared_buffers`);
      expect(buffers?.shared_buffers).toBe(PGLITE_SHARED_BUFFERS);
    } finally {
      await lite.close();
    }
  });

  it('a start killed mid-copy leaves no half data directory: the next start copies anew', {
    timeout: 60_000,
  }, async () => {
    // A template that takes a while to copy (Postgres ignores a file it does not know).
    const slow = mkdtempSync(join(root, 'slow-'));
    cpSync(template, slow, { recursive: true });
    const block = Buffer.alloc(1024 * 1024, 1);
    const fd = openSync(join(slow, 'zz-ballast'), 'w');
    for (let i = 0; i < 256; i++) writeSync(fd, block);
    closeSync(fd);
    const parent = join(root, 'killed');
    mkdirSync(parent);
    const dataDir = join(parent, 'pgdata');
    const copier = spawn(
      process.execPath,
      [
        '--import',
        'tsx',
        '--input-type=module',
        '-e',
        `const { connectPglite } = await import(${JSON.stringify(PGLITE_MODULE)});
         await connectPglite({ dataDir: ${JSON.stringify(dataDir)}, template: ${JSON.stringify(slow)} });`,
      ],
      { stdio: 'ignore' },
    );
    const exited = new Promise((resolve) => copier.once('exit', resolve));
    // Killed as soon as its copy has begun.
    while (readdirSync(parent).length === 0 && copier.exitCode === null) {
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
    copier.kill('SIGKILL');
    await exited;
    expect(copier.signalCode).toBe('SIGKILL');
    expect(existsSync(dataDir)).toBe(false);
    expect(readdirSync(parent)).toEqual([`.pgdata.partial-${copier.pid}`]);

    const lite = await connectPglite({ dataDir, template });
    try {
      expect(await fromTemplate(lite)).toBe(true);
      expect(await appliedMigrations(lite)).toEqual(journal.entries.map((e) => e.when));
    } finally {
      await lite.close();
    }
    expect(readdirSync(parent)).toEqual(['pgdata']); // the leftover is gone
  });

  it.each([
    [
      'cannot be copied (the copy fails half way)',
      (dir: string) => execFileSync('mkfifo', [join(dir, 'zz-fifo')]),
    ],
    [
      'cannot be opened (another Postgres version)',
      (dir: string) => writeFileSync(join(dir, 'PG_VERSION'), '9\n'),
    ],
  ])(
    'a template that %s: initdb as without one, nothing half left',
    {
      timeout: 120_000,
    },
    async (_what, spoil) => {
      const bad = mkdtempSync(join(root, 'bad-'));
      cpSync(template, bad, { recursive: true });
      spoil(bad);
      const parent = mkdtempSync(join(root, 'fallback-'));
      const lite = await connectPglite({ dataDir: join(parent, 'pgdata'), template: bad });
      try {
        expect(await fromTemplate(lite)).toBe(false);
        await migratePglite(lite);
        expect(await appliedMigrations(lite)).toEqual(journal.entries.map((e) => e.when));
      } finally {
        await lite.close();
      }
      expect(readdirSync(parent)).toEqual(['pgdata']);
    },
  );
});
