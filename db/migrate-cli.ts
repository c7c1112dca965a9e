/** `npm run db:migrate`: applies the migrations to DATABASE_URL (default: the local `conductor` database). */
import { ensureDatabase, migrateNodePg } from './node-postgres.ts';

const url = process.env.DATABASE_URL ?? 'postgres://127.0.0.1:5432/conductor';
try {
  // Best effort: hosted Postgres (Neon) creates databases in its console, not over SQL.
  await ensureDatabase(url).catch(() => {});
  await migrateNodePg(url);
  console.log(`Migrations applied to ${new URL(url).host}${new URL(url).pathname}`);
} catch (error) {
  console.error(`Migration failed: ${error instanceof Error ? error.message : String(error)}`);
  process.exitCode = 1;
}
