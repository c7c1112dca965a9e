#!/usr/bin/env node
/**
 * Builds what `npm start` and `npm run agent` run, so that they start plain JavaScript on `node` (no
 * TypeScript transpiled at start, no tsx wrapper process between npm and the server):
 *   dist/server.mjs, dist/agent.mjs   the Node server (functions/node.ts) and the agent's CLI, bundled
 *                                     (node_modules stay outside the bundle)
 *   dist/pglite-pgdata.tar.gz         a migrated PGlite data directory: a new local cluster starts from it
 *                                     instead of running initdb (the slow part of a first start)
 * `npm ci` / `npm install` run it (prepare). `--if-stale` (what `npm start` runs first) rebuilds the bundles
 * only when a source file is newer than them, and leaves the data directory alone.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const DIST = join(ROOT, 'dist');
const BUNDLES = { server: 'functions/node.ts', agent: 'agent/src/cli.ts' };
const SOURCES = ['functions', 'db', 'agent/src', 'package.json', 'package-lock.json'];
const PGDATA_SNAPSHOT = join(DIST, 'pglite-pgdata.tar.gz');

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

/** Written beside and renamed into place: a server starting meanwhile never reads half a file. */
async function buildBundles() {
  const { build } = await import('esbuild');
  const built = await build({
    write: false,
    absWorkingDir: ROOT,
    entryPoints: Object.fromEntries(Object.entries(BUNDLES).map(([name, entry]) => [name, entry])),
    outdir: DIST,
    outExtension: { '.js': '.mjs' },
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    packages: 'external',
    sourcemap: 'linked',
    logLevel: 'warning',
  });
  mkdirSync(DIST, { recursive: true });
  for (const file of built.outputFiles) {
    const partial = `${file.path}.${process.pid}.partial`;
    writeFileSync(partial, file.contents);
    renameSync(partial, file.path);
  }
}

/** initdb and the migrations, once, in a process of its own (PGlite holds its memory until exit). */
async function buildSnapshot() {
  const { build } = await import('esbuild');
  const maker = join(DIST, 'make-pglite-snapshot.mjs');
  await build({
    absWorkingDir: ROOT,
    stdin: {
      contents: `import { writePgliteSnapshot } from './db/pglite.ts';\nawait writePgliteSnapshot(process.argv[2]);\n`,
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
  const made = spawnSync(process.execPath, [maker, PGDATA_SNAPSHOT], { stdio: 'inherit' });
  rmSync(maker, { force: true });
  if (made.status !== 0) throw new Error('building the PGlite snapshot failed');
}

const ifStale = process.argv.includes('--if-stale');
if (!ifStale || bundlesAreStale()) await buildBundles();
if (!ifStale) await buildSnapshot();
