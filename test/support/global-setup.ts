import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import type { TestProject } from 'vitest/node';
import { migrateNodePg } from '../../db/node-postgres.ts';
import { connectPglite, migratePglite } from '../../db/pglite.ts';
import { PG_ADMIN_URL, REQUIRE_SERVICES, reachable } from './services.ts';

/**
 * Once per run: a migrated Postgres template database (each test file clones it, which takes ~50 ms) and a
 * migrated PGlite snapshot (each file loads it in ~1.5 s instead of migrating anew).
 */
export default async function setup(project: TestProject) {
  // Several runs may share this Postgres (a developer's and a helper's): each touches only its own databases.
  const runId = `${process.pid}${Math.random().toString(36).slice(2, 6)}`;
  const TEMPLATE_DB = `conductor_test_${runId}_template`;
  project.provide('testRunId', runId);
  const dir = mkdtempSync(join(tmpdir(), 'conductor-test-'));
  const lite = await connectPglite();
  await migratePglite(lite);
  const snapshot = await lite.client.dumpDataDir('none');
  await lite.close();
  const snapshotPath = join(dir, 'pglite.tar');
  writeFileSync(snapshotPath, Buffer.from(await snapshot.arrayBuffer()));
  project.provide('pgliteSnapshot', snapshotPath);

  let template: string | null = null;
  if (await reachable(PG_ADMIN_URL)) {
    const admin = new pg.Client({ connectionString: PG_ADMIN_URL });
    await admin.connect();
    await admin.query(`DROP DATABASE IF EXISTS ${TEMPLATE_DB}`);
    await admin.query(`CREATE DATABASE ${TEMPLATE_DB}`);
    await admin.end();
    const url = new URL(PG_ADMIN_URL);
    url.pathname = `/${TEMPLATE_DB}`;
    await migrateNodePg(url.toString());
    template = TEMPLATE_DB;
  } else if (REQUIRE_SERVICES) {
    throw new Error('Postgres is required (CONDUCTOR_REQUIRE_SERVICES=1) but not reachable');
  }
  project.provide('pgTemplate', template);

  return async () => {
    if (!template) return;
    const admin = new pg.Client({ connectionString: PG_ADMIN_URL });
    await admin.connect();
    const leftovers = await admin.query<{ datname: string }>(
      `SELECT datname FROM pg_database WHERE datname LIKE $1`,
      [`conductor_test_${runId}_%`],
    );
    for (const { datname } of leftovers.rows) {
      await admin.query(`DROP DATABASE IF EXISTS "${datname}" WITH (FORCE)`).catch(() => {});
    }
    await admin.end();
  };
}

declare module 'vitest' {
  export interface ProvidedContext {
    pgliteSnapshot: string;
    pgTemplate: string | null;
    testRunId: string;
  }
}
