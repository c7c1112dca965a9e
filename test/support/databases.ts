import { readFileSync } from 'node:fs';
import pg from 'pg';
import { inject } from 'vitest';
import { WebSocket } from 'ws';
import { configureNeonForLocal, connectNeonPool } from '../../db/neon.ts';
import { connectNodePg } from '../../db/node-postgres.ts';
import { connectPglite } from '../../db/pglite.ts';
import type { Database } from '../../functions/domain/ports.ts';
import { DEFAULT_NEON_TARGETS, type NeonProxy, startNeonProxy } from './neon-proxy.ts';
import { PG_ADMIN_URL } from './services.ts';

export interface TestDatabase {
  db: Database;
  /** `neon`: the same local Postgres, reached through the Neon driver (WebSocket proxy). */
  kind: 'postgres' | 'pglite' | 'neon';
  /** Connection URL (Postgres and Neon: the database over TCP), e.g. for a control plane in another process. */
  url?: string;
  /** Neon only: the WebSocket proxy the driver goes through, with its counters (round trips, connections). */
  proxy?: NeonProxy;
  close(): Promise<void>;
}

/** Clones the migrated template into a new database: its name, URL, and how to drop it. */
async function clonePostgresTemplate(): Promise<{ name: string; url: string; drop(): Promise<void> }> {
  const template = inject('pgTemplate');
  if (!template) throw new Error('no Postgres template: Postgres was not reachable at setup');
  const name = `conductor_test_${inject('testRunId')}_${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
  const admin = new pg.Client({ connectionString: PG_ADMIN_URL });
  await admin.connect();
  try {
    for (let attempt = 0; ; attempt++) {
      try {
        await admin.query(`CREATE DATABASE ${name} TEMPLATE ${template}`);
        break;
      } catch (error) {
        // "source database is being accessed by other users": another file is cloning right now.
        if (attempt >= 20 || (error as { code?: string }).code !== '55006') throw error;
        await new Promise((resolve) => setTimeout(resolve, 100 + Math.random() * 200));
      }
    }
  } finally {
    await admin.end();
  }
  const url = new URL(PG_ADMIN_URL);
  url.pathname = `/${name}`;
  return {
    name,
    url: url.toString(),
    async drop() {
      const drop = new pg.Client({ connectionString: PG_ADMIN_URL });
      await drop.connect();
      await drop.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`).catch(() => {});
      await drop.end();
    },
  };
}

/** A fresh Postgres database for one test file, cloned from the migrated template. */
export async function createPostgresDatabase(): Promise<TestDatabase> {
  const clone = await clonePostgresTemplate();
  // Tests that run hundreds of transactions at once on 20 connections check what those transactions do: on a
  // loaded CI machine, waiting over 5 s for a free connection (the server's timeout) must not fail them.
  const connection = connectNodePg(clone.url, { max: 20, connectionTimeoutMs: 60_000 });
  return {
    db: connection.db,
    kind: 'postgres',
    url: clone.url,
    async close() {
      await connection.close();
      await clone.drop();
    },
  };
}

let sharedProxy: { proxy: Promise<NeonProxy>; users: number } | undefined;

/**
 * The Neon driver on Node pointed at this process's WebSocket proxy (started on first use, stopped when
 * its last user lets go). `neonConfig` is process-wide, so every Neon database of a process shares it.
 */
export async function acquireNeonProxy(): Promise<{ proxy: NeonProxy; release(): Promise<void> }> {
  if (!sharedProxy) {
    const { hostname, port } = new URL(PG_ADMIN_URL);
    const allow = [...DEFAULT_NEON_TARGETS, `${hostname}:${port || '5432'}`];
    sharedProxy = { proxy: startNeonProxy({ allow }), users: 0 };
  }
  const entry = sharedProxy;
  entry.users++;
  const proxy = await entry.proxy.catch((error) => {
    entry.users--;
    if (sharedProxy === entry) sharedProxy = undefined;
    throw error;
  });
  configureNeonForLocal({ wsProxy: proxy.url, webSocketConstructor: WebSocket });
  let released = false;
  return {
    proxy,
    async release() {
      if (released) return;
      released = true;
      if (--entry.users > 0) return;
      if (sharedProxy === entry) sharedProxy = undefined;
      await proxy.close();
    },
  };
}

/**
 * A fresh Postgres database (cloned from the migrated template) reached through the production Neon driver
 * (Pool, drizzle neon-serverless) over the local WebSocket proxy, on Node with `ws`. `proxy` counts what
 * went through (shared by the Neon databases of this process).
 */
export async function createNeonDatabase(options: { max?: number } = {}): Promise<TestDatabase> {
  const clone = await clonePostgresTemplate();
  const { proxy, release } = await acquireNeonProxy();
  const connection = connectNeonPool(clone.url, { max: options.max ?? 20 });
  return {
    db: connection.db,
    kind: 'neon',
    url: clone.url,
    proxy,
    async close() {
      await connection.close();
      await release();
      await clone.drop();
    },
  };
}

/** A fresh PGlite database loaded from the migrated snapshot. */
export async function createPgliteDatabase(): Promise<TestDatabase> {
  const snapshot = new Blob([readFileSync(inject('pgliteSnapshot'))]);
  const connection = await connectPglite({ snapshot });
  return { db: connection.db, kind: 'pglite', close: connection.close };
}
