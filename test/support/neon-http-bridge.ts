/**
 * A local stand-in for Neon's HTTP SQL endpoint (what `neon()` talks to with `neonConfig.fetchEndpoint`),
 * in front of a real Postgres via `pg`. See /work/shared/TOOLCHAIN.md: `POST /sql`, the database in the
 * `Neon-Connection-String` header, body `{query, params}` or `{queries: [...]}` (a transaction, configured
 * by the `Neon-Batch-*` headers); reply `{fields: [{name, dataTypeID}], rows: [[text, ...]], command,
 * rowCount}` or `{results: [...]}`, values as Postgres text (the driver parses them); a Postgres error is a
 * 400 with its fields. Only allow-listed database addresses are served. Listens on 127.0.0.1 only.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import pg from 'pg';
import { DEFAULT_NEON_TARGETS } from './neon-proxy.ts';

export interface NeonHttpBridgeStats {
  /** HTTP requests: each is one round trip for the driver. */
  requests: number;
  /** Statements run, those inside transactions included. */
  queries: number;
  /** `{queries: [...]}` requests. */
  transactions: number;
  /** Requests refused (target outside the allow-list, bad request). */
  refused: number;
}

export interface NeonHttpBridge {
  port: number;
  /** For `neonConfig.fetchEndpoint`. */
  url: string;
  stats: NeonHttpBridgeStats;
  close(): Promise<void>;
}

interface Query {
  query: string;
  params?: (string | null)[];
}

const ISOLATION: Record<string, string> = {
  ReadUncommitted: 'READ UNCOMMITTED',
  ReadCommitted: 'READ COMMITTED',
  RepeatableRead: 'REPEATABLE READ',
  Serializable: 'SERIALIZABLE',
};
/** Every value as the text Postgres sent: the driver applies its own type parsers. */
const RAW_TEXT = { getTypeParser: () => (value: string) => value } as unknown as pg.CustomTypesConfig;
/** The fields of a Postgres error that Neon's endpoint returns and the driver copies onto its NeonDbError. */
const ERROR_FIELDS = (
  'severity code detail hint position internalPosition internalQuery where schema table column ' +
  'dataType constraint file line routine'
).split(' ');

export async function startNeonHttpBridge(
  options: {
    port?: number;
    allow?: readonly string[];
    /** Called with Date.now() for every request served (each reaches Postgres): see startNeonProxy. */
    onTraffic?: (atMs: number) => void;
  } = {},
): Promise<NeonHttpBridge> {
  const allow = new Set(options.allow ?? DEFAULT_NEON_TARGETS);
  const stats: NeonHttpBridgeStats = { requests: 0, queries: 0, transactions: 0, refused: 0 };
  const pools = new Map<string, pg.Pool>();
  const poolFor = (connectionString: string) => {
    let pool = pools.get(connectionString);
    if (!pool) {
      pool = new pg.Pool({ connectionString, max: 10, idleTimeoutMillis: 5_000 });
      pool.on('error', () => {}); // an idle client of a dropped test database
      pools.set(connectionString, pool);
    }
    return pool;
  };
  const run = async (client: pg.PoolClient, { query, params = [] }: Query) => {
    stats.queries++;
    // queryMode 'extended' (pg >= 8.12, not in @types/pg): one statement per query, as Neon's endpoint.
    const config: pg.QueryArrayConfig & { queryMode: 'extended' } = {
      text: query,
      values: params,
      rowMode: 'array',
      types: RAW_TEXT,
      queryMode: 'extended',
    };
    const r = await client.query(config);
    const fields = r.fields.map((f) => ({ name: f.name, dataTypeID: f.dataTypeID }));
    return { fields, rows: r.rows, command: r.command, rowCount: r.rowCount };
  };

  const server = createServer(async (req, res) => {
    stats.requests++;
    const send = (status: number, body: unknown) =>
      res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
    const target = new URL(String(req.headers['neon-connection-string'] ?? 'postgres://-'));
    const address = `${target.hostname}:${target.port || '5432'}`;
    if (req.method !== 'POST' || req.url !== '/sql' || !allow.has(address)) {
      stats.refused++;
      return send(403, { message: `not served: ${req.method} ${req.url} for ${address}` });
    }
    if (target.hostname === 'localhost') target.hostname = '127.0.0.1';
    options.onTraffic?.(Date.now());
    let client: pg.PoolClient | undefined;
    let inTransaction = false;
    let broken: Error | undefined;
    try {
      const chunks: Buffer[] = [];
      for await (const chunk of req) chunks.push(chunk as Buffer);
      const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Query | { queries: Query[] };
      client = await poolFor(target.toString()).connect();
      if (!('queries' in body)) return send(200, await run(client, body));
      stats.transactions++;
      const h = (name: string) => req.headers[`neon-batch-${name}`] as string | undefined;
      const level = ISOLATION[h('isolation-level') ?? ''];
      await client.query(
        `BEGIN${level ? ` ISOLATION LEVEL ${level}` : ''}${h('read-only') === 'true' ? ' READ ONLY' : ''}` +
          (h('deferrable') === 'true' ? ' DEFERRABLE' : ''),
      );
      inTransaction = true;
      const results = [];
      for (const query of body.queries) results.push(await run(client, query));
      await client.query('COMMIT');
      inTransaction = false;
      return send(200, { results });
    } catch (error) {
      const e = error as Error & Record<string, unknown>;
      if (!(error instanceof pg.DatabaseError)) broken = e;
      if (inTransaction) await client?.query('ROLLBACK').catch((rollback: Error) => (broken = rollback));
      const fields = Object.fromEntries(
        ERROR_FIELDS.map((k) => [k, e[k]]).filter(([, v]) => v !== undefined),
      );
      // A Postgres error is a 400 the driver turns into a NeonDbError with these fields; anything else a 500.
      return send(error instanceof pg.DatabaseError ? 400 : 500, { message: e.message, ...fields });
    } finally {
      client?.release(broken); // a client in an unknown state is discarded, not reused
    }
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, '127.0.0.1', resolve);
  });
  const port = (server.address() as AddressInfo).port;
  return {
    port,
    url: `http://127.0.0.1:${port}/sql`,
    stats,
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await Promise.all([...pools.values()].map((p) => p.end()));
    },
  };
}
