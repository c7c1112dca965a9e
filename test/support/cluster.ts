import { type Context, createContext } from '../../functions/domain/context.ts';
import { createLocalNotifier } from '../../functions/domain/notifier.ts';
import {
  type ConductorConfig,
  DEFAULT_CONFIG,
  type Logger,
  type Ports,
  type RegistryStore,
} from '../../functions/domain/ports.ts';
import { createIoredisScripts } from '../../functions/node/ioredis.ts';
import { type RunningServer, startServer } from '../../functions/node/server.ts';
import { MemoryRegistryStore } from '../../functions/registry/memory-store.ts';
import { RedisRegistryStore } from '../../functions/registry/redis-store.ts';
import {
  createNeonDatabase,
  createPgliteDatabase,
  createPostgresDatabase,
  type TestDatabase,
} from './databases.ts';
import { REDIS_URL, serviceAvailable } from './services.ts';

/** A log that tests can read back. */
export class RecordingLogger implements Logger {
  readonly lines: string[] = [];
  constructor(private readonly echo = process.env.CONDUCTOR_TEST_LOGS === '1') {}
  private write(level: string, message: string, fields?: Record<string, unknown>) {
    const line = `${level} ${message}${fields ? ` ${JSON.stringify(fields)}` : ''}`;
    this.lines.push(line);
    if (this.echo) console.log(line);
  }
  info(m: string, f?: Record<string, unknown>) {
    this.write('info', m, f);
  }
  warn(m: string, f?: Record<string, unknown>) {
    this.write('warn', m, f);
  }
  error(m: string, f?: Record<string, unknown>) {
    this.write('error', m, f);
  }
  has(pattern: RegExp | string): boolean {
    return this.lines.some((l) => (typeof pattern === 'string' ? l.includes(pattern) : pattern.test(l)));
  }
}

export interface Backend {
  /**
   * `postgres+redis` (the production pair on Node), `neon+redis` (the same Postgres through the Neon driver
   * the Workers build uses, over the local WebSocket proxy) or `pglite+memory` (the zero-setup default).
   */
  name: string;
  db: TestDatabase;
  registry: RegistryStore;
  /** The key prefix isolating this backend's Redis keys ('' for memory). */
  keyPrefix: string;
  close(): Promise<void>;
}

export interface BackendFactory {
  name: string;
  create(options?: { keyPrefix?: string }): Promise<Backend>;
}

/** The backends the store-level suites run on: always the local default, plus real Postgres+Redis when up. */
/** A Redis registry under its own key prefix over a database: the production pairs. */
async function redisBackend(
  name: string,
  createDb: () => Promise<TestDatabase>,
  options: { keyPrefix?: string },
): Promise<Backend> {
  const db = await createDb();
  const keyPrefix = options.keyPrefix ?? `test:${process.pid}:${Math.random().toString(36).slice(2, 8)}:`;
  const redis = createIoredisScripts(REDIS_URL, { onError: () => {} });
  const registry = new RedisRegistryStore(redis.scripts, { keyPrefix });
  return {
    name,
    db,
    registry,
    keyPrefix,
    async close() {
      await redis.close();
      await db.close();
    },
  };
}

/**
 * The backends the store-level suites run on: always the local default, plus real Postgres+Redis and the
 * Neon driver over the same Postgres (+Redis) when the services are up.
 */
export async function availableBackends(): Promise<BackendFactory[]> {
  const list: BackendFactory[] = [];
  if ((await serviceAvailable('postgres')) && (await serviceAvailable('redis'))) {
    list.push({
      name: 'postgres+redis',
      create: (options = {}) => redisBackend('postgres+redis', createPostgresDatabase, options),
    });
    list.push({
      name: 'neon+redis',
      create: (options = {}) => redisBackend('neon+redis', () => createNeonDatabase(), options),
    });
  }
  list.push({
    name: 'pglite+memory',
    async create() {
      const db = await createPgliteDatabase();
      return {
        name: 'pglite+memory',
        db,
        registry: new MemoryRegistryStore(),
        keyPrefix: '',
        close: db.close,
      };
    },
  });
  return list;
}

export function testConfig(overrides: Partial<ConductorConfig> = {}): ConductorConfig {
  return { ...DEFAULT_CONFIG, claimWaitSeconds: 2, ...overrides };
}

/**
 * Domain context over a backend, for store-level tests (no HTTP). Deferred work is awaited by `settle()`.
 * `ports` replaces the backend's database or registry (a hooked or failing one), or the notifier.
 */
export function testContext(
  backend: Backend,
  config = testConfig(),
  ports_: Partial<Pick<Ports, 'db' | 'registry' | 'notifier'>> = {},
) {
  const logger = new RecordingLogger();
  const pending = new Set<Promise<unknown>>();
  const ports: Ports = {
    db: ports_.db ?? backend.db.db,
    registry: ports_.registry ?? backend.registry,
    notifier: ports_.notifier ?? createLocalNotifier(),
    logger,
    config,
    defer(work) {
      const p = work.catch(() => {}).finally(() => pending.delete(p));
      pending.add(p);
    },
  };
  const ctx: Context = createContext(ports);
  return {
    ctx,
    logger,
    async settle() {
      while (pending.size > 0) await Promise.all([...pending]);
    },
  };
}

/**
 * A real HTTP control plane (the Node server, timers on) over a backend. `port` (default: any free one) lets
 * a test stop a server and start another one where its agents expect it, as a restart would.
 */
export async function startTestServer(
  backend: Backend,
  config = testConfig(),
  options: { port?: number } = {},
): Promise<RunningServer & { logger: RecordingLogger }> {
  const logger = new RecordingLogger();
  const server = await startServer(
    { db: backend.db.db, registry: backend.registry, notifier: createLocalNotifier(), logger, config },
    { port: options.port ?? 0, host: '127.0.0.1' },
  );
  return Object.assign(server, { logger });
}
