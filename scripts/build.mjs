#!/usr/bin/env node
/**
 * Builds what `npm start` and `npm run agent` run, so that they start plain JavaScript on `node` (no
 * TypeScript transpiled at start, no tsx wrapper process between npm and the server):
 *   dist/server.mjs, dist/agent.mjs   the Node server (functions/node.ts) and the agent's CLI, bundled.
 *                                     The agent's bundle leaves node_modules outside. The server's takes in
 *                                     the packages it loads at every start (hono, zod, drizzle-orm: one
 *                                     file loads faster than their hundreds), but not SERVER_EXTERNAL; its
 *                                     modules that only Postgres or Redis use (pg, ioredis, @upstash/redis)
 *                                     are split into chunks beside it (dist/*-<hash>.mjs), loaded only when
 *                                     configured: the zero-setup server does not load them
 *   functions/ui/assets.generated.ts  the dashboard's browser script and CSS (scripts/build-ui.mjs), which
 *                                     the server imports; rewritten only when they change
 *   dist/pglite-pgdata/               a migrated PGlite data directory, shut down cleanly: a new local
 *                                     cluster starts as a copy of it instead of running initdb (the slow
 *                                     part of a first start)
 * `npm ci` / `npm install` run it (prepare). `--if-stale` (what `npm start` runs first) rebuilds the bundles
 * only when a source file is newer than them, and builds the data directory only when there is none.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeUiAssetsModule } from './build-ui.mjs';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const DIST = join(ROOT, 'dist');
const BUNDLES = { server: 'functions/node.ts', agent: 'agent/src/cli.ts' };
/** The server's chunks (esbuild's default `[name]-[hash]`), in dist/ itself: paths from import.meta.url hold. */
const CHUNK = /-[A-Z0-9]{8}\.mjs(\.map)?$/;
const SOURCES = ['functions', 'db', 'agent/src', 'package.json', 'package-lock.json'];
/**
 * The template is older than the migrations (a checkout that pulled new ones): a new data dir copied from it
 * would start behind, or, when a migration was rewritten before it landed, not start at all.
 */
function templateIsStale() {
  const version = join(PGDATA_TEMPLATE, 'PG_VERSION');
  if (!existsSync(version)) return true;
  return newestMtime(join(ROOT, 'db', 'migrations')) > statSync(version).mtimeMs;
}

/**
 * Packages the server's bundle leaves in node_modules: PGlite (it reads its .wasm and data files beside its
 * own module), and the clients loaded only when configured (nothing to gain at start; pg has an optional
 * native part).
 */
const SERVER_EXTERNAL = [
  '@electric-sql/pglite',
  'pg',
  'pg-native',
  'ioredis',
  '@upstash/redis',
  '@neondatabase/serverless',
  // CommonJS (the push channel's WebSocket server): loaded from node_modules as it is.
  'ws',
];
const PGDATA_TEMPLATE = join(DIST, 'pglite-pgdata');

function newestMtime(path) {
  const stat = statSync(path);
  if (!stat.isDirectory()) return stat.mtimeMs;
  let newest = 0;
  for (const name of readdirSync(path)) newest = Math.max(newest, newestMtime(join(path, name)));
  return newest;
}

function bundlesAreStale() {
  const built = Object.keys(BUNDLES).map((name) => join(DIST, `${name}.mjs`));
  if (!built.every((file) => existsSync(file))) return true;
  const oldestBuilt = Math.min(...built.map((file) => statSync(file).mtimeMs));
  return SOURCES.some((source) => newestMtime(join(ROOT, source)) > oldestBuilt);
}

/**
 * Written beside and renamed into place, chunks before the entries that import them: a server starting
 * meanwhile never reads half a file. The server is split (its dynamic imports become chunks that load only
 * when called); the agent is one file, as before.
 */
async function buildBundles() {
  const { build } = await import('esbuild');
  const options = {
    write: false,
    absWorkingDir: ROOT,
    outdir: DIST,
    outExtension: { '.js': '.mjs' },
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    packages: 'external',
    sourcemap: 'linked',
    logLevel: 'warning',
  };
  const [server, agent] = await Promise.all([
    build({
      ...options,
      entryPoints: { server: BUNDLES.server },
      splitting: true,
      packages: undefined,
      external: SERVER_EXTERNAL,
      // It has no `exports`, and Node's resolution takes its `main` (CommonJS, which requires zod): its ESM
      // build instead, which imports the zod the rest of the bundle has.
      alias: { '@asteasolutions/zod-to-openapi': '@asteasolutions/zod-to-openapi/dist/index.mjs' },
    }),
    build({ ...options, entryPoints: { agent: BUNDLES.agent } }),
  ]);
  // esbuild's ESM output cannot require(): a CommonJS package bundled would throw at run time.
  const requiring = server.outputFiles.find(
    (file) => file.path.endsWith('.mjs') && file.text.includes('__require('),
  );
  if (requiring) throw new Error(`${requiring.path} calls require(): add its package to SERVER_EXTERNAL`);
  const files = [...server.outputFiles, ...agent.outputFiles].sort(
    (a, b) => Number(CHUNK.test(b.path)) - Number(CHUNK.test(a.path)),
  );
  mkdirSync(DIST, { recursive: true });
  for (const file of files) {
    const partial = `${file.path}.${process.pid}.partial`;
    writeFileSync(partial, file.contents);
    renameSync(partial, file.path);
  }
  // Chunks of earlier builds that this one no longer has.
  const current = new Set(files.map((file) => file.path));
  for (const name of readdirSync(DIST)) {
    if (CHUNK.test(name) && !current.has(join(DIST, name))) rmSync(join(DIST, name), { force: true });
  }
}

/** initdb and the migrations, once, in a process of its own (PGlite holds its memory until exit). */
async function buildPgdataTemplate() {
  const { build } = await import('esbuild');
  const maker = join(DIST, 'make-pglite-pgdata.mjs');
  await build({
    absWorkingDir: ROOT,
    stdin: {
      contents: `import { writePgliteTemplate } from './db/pglite.ts';\nawait writePgliteTemplate(process.argv[2]);\n`,
      resolveDir: ROOT,
      loader: 'ts',
    },
    outfile: maker,
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    packages: 'external',
    logLevel: 'warning',
  });
  const made = spawnSync(process.execPath, [maker, PGDATA_TEMPLATE], { stdio: 'inherit' });
  rmSync(maker, { force: true });
  if (made.status !== 0) throw new Error('building the PGlite data directory failed');
  // What builds before this one made instead (a tarball loaded through PGlite's loadDataDir).
  rmSync(join(DIST, 'pglite-pgdata.tar.gz'), { force: true });
}

const ifStale = process.argv.includes('--if-stale');
// The dashboard's browser bundle first: the server imports it (scripts/build-ui.mjs).
await writeUiAssetsModule();
if (!ifStale || bundlesAreStale()) await buildBundles();
// A checkout built before the template existed, or before its migrations, gets it once, rather than an initdb
// (or the newer migrations) at every new data dir.
if (!ifStale || templateIsStale()) await buildPgdataTemplate();
