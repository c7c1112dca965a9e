import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import pg from 'pg';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { PG_ADMIN_URL, serviceAvailable } from '../support/services.ts';

const run = promisify(execFile);
const CLI = fileURLToPath(new URL('../../db/migrate-cli.ts', import.meta.url));
const available = await serviceAvailable('postgres');

/** `npm run db:migrate` (db/migrate-cli.ts): creates the database if needed and applies every migration, twice safely. */
describe.runIf(available)('npm run db:migrate', () => {
  const name = `conductor_test_${inject('testRunId')}_migratecli`;
  const url = new URL(PG_ADMIN_URL);
  url.pathname = `/${name}`;

  afterAll(async () => {
    const admin = new pg.Client({ connectionString: PG_ADMIN_URL });
    await admin.connect();
    await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    await admin.end();
  });

  it('creates the database, applies the migrations, and is idempotent', async () => {
    const env = { PATH: process.env.PATH, HOME: process.env.HOME, DATABASE_URL: url.toString() };
    for (let i = 0; i < 2; i++) {
      const { stdout } = await run(process.execPath, ['--import', 'tsx', CLI], { env });
      expect(stdout).toContain('Migrations applied');
    }
    const client = new pg.Client({ connectionString: url.toString() });
    await client.connect();
    const tables = await client.query<{ tablename: string }>(
      `SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename`,
    );
    expect(tables.rows.map((r) => r.tablename)).toEqual(
      expect.arrayContaining([
        'cluster_state',
        'jobs',
        'resource_allocations',
        'workers',
        'maintenance_state',
      ]),
    );
    const state = await client.query(`SELECT allocated_cpus, allocation_version FROM cluster_state`);
    expect(state.rows).toEqual([{ allocated_cpus: '0', allocation_version: '0' }]);
    await client.end();
  });

  it('fails with a clear message and exit code 1 when the database cannot be reached', async () => {
    const failed = await run(process.execPath, ['--import', 'tsx', CLI], {
      env: { PATH: process.env.PATH, DATABASE_URL: 'postgres://postgres@127.0.0.1:1/nothing' },
    }).catch((error: { code: number; stderr: string }) => error);
    expect('code' in failed ? failed.code : 0).toBe(1);
    expect(failed.stderr).toContain('Migration failed');
  });
});
