/**
 * The production Neon driver (db/neon.ts) against this machine's Postgres, through the local stand-ins for
 * Neon's endpoints: the WebSocket proxy (Pool, interactive transactions) and the HTTP SQL bridge (`neon()`).
 * The tests after the first use the database the first one migrates.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { eq, sql } from 'drizzle-orm';
import { drizzle } from 'drizzle-orm/neon-serverless';
import { migrate } from 'drizzle-orm/neon-serverless/migrator';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { WebSocket } from 'ws';
import { MIGRATIONS_FOLDER } from '../../db/migrations.ts';
import { configureNeonForLocal, connectNeonHttp, connectNeonPool } from '../../db/neon.ts';
import * as schema from '../../db/schema.ts';
import { pgErrorCode, query as rows } from '../../functions/domain/sql.ts';
import { MemoryRegistryStore } from '../../functions/registry/memory-store.ts';
import { startTestServer } from '../support/cluster.ts';
import { createNeonDatabase } from '../support/databases.ts';
import { type NeonHttpBridge, startNeonHttpBridge } from '../support/neon-http-bridge.ts';
import { DEFAULT_NEON_TARGETS, type NeonProxy, startNeonProxy } from '../support/neon-proxy.ts';
import { PG_ADMIN_URL, serviceAvailable } from '../support/services.ts';

const hasPostgres = await serviceAvailable('postgres');
/** Nothing listens on port 1: a Postgres that is down, behind a proxy that is up. */
const DEAD_POSTGRES = '127.0.0.1:1';

describe.runIf(hasPostgres)('the Neon driver against local Postgres', () => {
  let proxy: NeonProxy;
  let bridge: NeonHttpBridge;
  let url: string;
  const name = `conductor_test_${inject('testRunId')}_neon_${process.pid}`;
  const admin = async (statement: string) => {
    const client = new pg.Client({ connectionString: PG_ADMIN_URL });
    await client.connect();
    try {
      await client.query(statement);
    } finally {
      await client.end();
    }
  };

  beforeAll(async () => {
    [proxy, bridge] = await Promise.all([
      startNeonProxy({ allow: [...DEFAULT_NEON_TARGETS, DEAD_POSTGRES] }),
      startNeonHttpBridge(),
    ]);
    configureNeonForLocal({ wsProxy: proxy.url, fetchEndpoint: bridge.url, webSocketConstructor: WebSocket });
    await admin(`DROP DATABASE IF EXISTS ${name}`);
    await admin(`CREATE DATABASE ${name}`);
    const target = new URL(PG_ADMIN_URL);
    target.pathname = `/${name}`;
    url = target.toString();
  });
  afterAll(async () => {
    await proxy?.close();
    await bridge?.close();
    await admin(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  });

  it('applies the migrations to a fresh database through the Pool (drizzle neon-serverless migrator)', async () => {
    const connection = connectNeonPool(url, { max: 2 });
    try {
      const migrator = drizzle(connection.pool);
      await migrate(migrator, { migrationsFolder: MIGRATIONS_FOLDER });
      await migrate(migrator, { migrationsFolder: MIGRATIONS_FOLDER }); // a second run applies nothing
      // Read with the domain's own helper (functions/domain/sql.ts), as the domain reads every driver.
      const tables = await rows<{ table_name: string }>(
        connection.db,
        sql`SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1`,
      );
      expect(tables.map((r) => r.table_name)).toEqual(
        expect.arrayContaining(['cluster_state', 'jobs', 'resource_allocations', 'workers']),
      );
      const journal = JSON.parse(readFileSync(join(MIGRATIONS_FOLDER, 'meta/_journal.json'), 'utf8'));
      const applied = await rows<{ n: number }>(
        connection.db,
        sql`SELECT count(*)::int AS n FROM drizzle.__drizzle_migrations`,
      );
      expect(applied).toEqual([{ n: journal.entries.length }]);
      expect(proxy.stats.connections).toBeGreaterThan(0);
    } finally {
      await connection.close();
    }
  });

  it('runs FOR UPDATE transactions through the proxy: the second waits for the first to commit', async () => {
    const { db, close } = connectNeonPool(url, { max: 4 });
    try {
      await db.insert(schema.workers).values({ id: 'w1', hostname: 'h1', cpus: 8, session: 's1' });
      const events: string[] = [];
      let unblock!: () => void;
      const gate = new Promise<void>((resolve) => (unblock = resolve));
      let signalLocked!: () => void;
      const locked = new Promise<void>((resolve) => (signalLocked = resolve));
      const first = db.transaction(async (tx) => {
        await tx.execute(sql`SELECT id FROM workers WHERE id = 'w1' FOR UPDATE`);
        signalLocked();
        await gate;
        await tx.update(schema.workers).set({ allocatedCpus: 3 }).where(eq(schema.workers.id, 'w1'));
        events.push('first updated');
      });
      await locked;
      const second = db.transaction(async (tx) => {
        const [row] = await tx.select().from(schema.workers).where(eq(schema.workers.id, 'w1')).for('update');
        events.push(`second saw ${row?.allocatedCpus}`);
        return row;
      });
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect(events).toEqual([]); // the second is blocked on the row lock
      unblock();
      const [, row] = await Promise.all([first, second]);
      expect(events).toEqual(['first updated', 'second saw 3']);
      // Typed selects through the Pool: timestamps as Date, jsonb parsed.
      expect(row?.registeredAt).toBeInstanceOf(Date);
      expect(row?.labels).toEqual({});

      // Round trips as the proxy counts them: BEGIN, SELECT ... FOR UPDATE, UPDATE, COMMIT.
      const before = proxy.stats.roundTrips;
      await db.transaction(async (tx) => {
        await tx.execute(sql`SELECT id FROM workers WHERE id = 'w1' FOR UPDATE`);
        await tx.update(schema.workers).set({ allocatedCpus: 0 }).where(eq(schema.workers.id, 'w1'));
      });
      expect(proxy.stats.roundTrips - before).toBe(4);
    } finally {
      await close();
    }
  });

  it('rolls back through the proxy, on a thrown error and on a Postgres error (code reachable)', async () => {
    const { db, close } = connectNeonPool(url, { max: 2 });
    try {
      await expect(
        db.transaction(async (tx) => {
          await tx.insert(schema.jobs).values({ name: 'rolled-back', script: 'true', cpus: 1 });
          throw new Error('roll it back');
        }),
      ).rejects.toThrow('roll it back');
      const violation = await db
        .transaction(async (tx) => {
          await tx.insert(schema.jobs).values({ name: 'rolled-back', script: 'true', cpus: 1 });
          await tx.update(schema.workers).set({ allocatedCpus: 99 }).where(eq(schema.workers.id, 'w1'));
        })
        .catch((error: unknown) => error);
      expect(pgErrorCode(violation)).toBe('23514'); // workers_allocation_fits, as the domain reads it
      const left = await rows<{ n: number }>(
        db,
        sql`SELECT count(*)::int AS n FROM jobs WHERE name = 'rolled-back'`,
      );
      expect(left).toEqual([{ n: 0 }]);
      // The pool's client is usable after the rollbacks.
      expect(await rows(db, sql`SELECT 1 AS one`)).toEqual([{ one: 1 }]);
    } finally {
      await close();
    }
  });

  it('runs neon() HTTP queries and non-interactive transactions through the bridge', async () => {
    const { sql: query, db } = connectNeonHttp(url);
    const selected =
      await query`SELECT ${41}::int + 1 AS answer, ${'{"a":[1]}'}::jsonb AS j, 9007199254740993::bigint AS big, ${null}::text AS nothing`;
    expect(selected).toEqual([{ answer: 42, j: { a: [1] }, big: '9007199254740993', nothing: null }]);

    // drizzle neon-http: typed selects and inserts, timestamps as Date.
    await db.insert(schema.workers).values({ id: 'w-http', hostname: 'h', cpus: 2, session: 's' });
    const [worker] = await db.select().from(schema.workers).where(eq(schema.workers.id, 'w-http'));
    expect(worker).toMatchObject({ id: 'w-http', cpus: 2, allocatedCpus: 0, status: 'ready' });
    expect(worker?.lastHeartbeat).toBeInstanceOf(Date);

    // A non-interactive transaction is one HTTP request.
    const requests = bridge.stats.requests;
    const [inserted, counted] = await query.transaction([
      query`INSERT INTO jobs (name, script, cpus) VALUES ('http-1', 'true', 2) RETURNING cpus`,
      query`SELECT count(*)::int AS n FROM jobs WHERE name = 'http-1'`,
    ]);
    expect(bridge.stats.requests - requests).toBe(1);
    expect(inserted).toEqual([{ cpus: 2 }]);
    expect(counted).toEqual([{ n: 1 }]);

    // A failing statement rolls the whole batch back, with Postgres's error code.
    await expect(
      query.transaction([
        query`INSERT INTO jobs (name, script, cpus) VALUES ('http-2', 'true', 2)`,
        query`SELECT 1 / 0`,
      ]),
    ).rejects.toMatchObject({ name: 'NeonDbError', code: '22012' });
    expect(await query`SELECT count(*)::int AS n FROM jobs WHERE name = 'http-2'`).toEqual([{ n: 0 }]);

    // The transaction options reach Postgres.
    const [mode, level] = await query.transaction(
      [query`SHOW transaction_read_only`, query`SHOW transaction_isolation`],
      { readOnly: true, isolationLevel: 'Serializable' },
    );
    expect(mode).toEqual([{ transaction_read_only: 'on' }]);
    expect(level).toEqual([{ transaction_isolation: 'serializable' }]);

    // What neon-http cannot do: interactive transactions (why the domain uses the Pool).
    await expect(db.transaction(async () => {})).rejects.toThrow(/No transactions support/);
  });

  it('refuses targets outside the allow-list, in the proxy and in the HTTP bridge', async () => {
    // Redis listens on 6379: a real TCP service that the proxy must not open to a WebSocket client.
    const stray = connectNeonPool('postgres://postgres@127.0.0.1:6379/x', {
      max: 1,
      connectionTimeoutMillis: 5_000,
    });
    const refused = proxy.stats.refused;
    const connections = proxy.stats.connections;
    await expect(stray.db.execute(sql`SELECT 1`)).rejects.toThrow();
    await stray.close();
    expect(proxy.stats.refused).toBe(refused + 1);
    expect(proxy.stats.connections).toBe(connections);

    const status = (target: string) =>
      new Promise<number>((resolve, reject) => {
        const ws = new WebSocket(`ws://${target}`);
        ws.on('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
        ws.on('open', () => {
          ws.close();
          reject(new Error(`${target} was opened`));
        });
        ws.on('error', () => {});
      });
    expect(await status(`${proxy.url}?address=10.0.0.1:5432`)).toBe(403);
    expect(await status(`${proxy.url}?address=127.0.0.1:22`)).toBe(403);
    expect(await status(`${proxy.url.replace('/v1', '/v2')}?address=127.0.0.1:5432`)).toBe(403);

    const before = bridge.stats.refused;
    const { sql: strayHttp } = connectNeonHttp('postgres://postgres@127.0.0.1:6379/x');
    await expect(strayHttp`SELECT 1`).rejects.toThrow(/403/);
    expect(bridge.stats.refused).toBe(before + 1);
    expect(proxy.url.startsWith('127.0.0.1:')).toBe(true);
  });

  it('a database outage through the Neon driver is a connection error (08001): 503 + Retry-After', async () => {
    // Postgres down behind a live endpoint (the proxy accepts, its TCP connect fails), then the endpoint
    // itself unreachable (the WebSocket fails: a bare ErrorEvent from the driver).
    const down = connectNeonPool(`postgres://postgres@${DEAD_POSTGRES}/x`, { max: 2 });
    const database = { db: down.db, kind: 'neon' as const, close: down.close };
    const server = await startTestServer({
      name: 'neon-down',
      db: database,
      registry: new MemoryRegistryStore(),
      keyPrefix: '',
      close: down.close,
    });
    try {
      for (const wsProxy of [proxy.url, '127.0.0.1:1/v1']) {
        configureNeonForLocal({ wsProxy });
        const read = await fetch(`${server.url}/api/v1/jobs/1`);
        expect(read.status).toBe(503);
        expect(read.headers.get('retry-after')).toBe('5');
        expect(await read.json()).toMatchObject({ error: { code: 'database_unavailable' } });
        const submit = await fetch(`${server.url}/api/v1/jobs/submit`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ script: 'true', cpus: 1 }),
        });
        expect(submit.status).toBe(503);
        expect((await fetch(`${server.url}/api/v1/health`)).status).toBe(503);
        const failed = await down.db.transaction(async () => {}).catch((error: unknown) => error);
        expect(pgErrorCode(failed)).toBe('08001');
      }
    } finally {
      configureNeonForLocal({ wsProxy: proxy.url });
      await server.close();
      await down.close();
    }
  });

  it('createNeonDatabase (the neon+redis matrix database) goes through the Neon driver and its proxy', async () => {
    const database = await createNeonDatabase({ max: 2 });
    try {
      expect(database.kind).toBe('neon');
      const before = database.proxy?.stats.roundTrips ?? 0;
      expect(await rows(database.db, sql`SELECT count(*)::int AS n FROM jobs`)).toEqual([{ n: 0 }]);
      expect(database.proxy?.stats.roundTrips).toBe(before + 1);
    } finally {
      await database.close();
    }
  });
});
