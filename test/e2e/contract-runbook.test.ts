import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { commandsOf } from '../docs/runnable.ts';
import { AgentProcess, eventually } from '../support/agent-process.ts';
import { createPostgresDatabase, type TestDatabase } from '../support/databases.ts';
import { freePort, ServerProcess } from '../support/server-process.ts';
import { serviceAvailable } from '../support/services.ts';

/**
 * The contract's runbook, line by line, against a real server process with DATABASE_URL and REDIS_URL, real
 * agents, and the real redis-cli and psql. The redis-cli lines and the SQL are read from docs/operating.md's
 * runbook blocks (`runbook-redis`, `runbook-sql`). Redis database 9 is this file's own, so `KEYS worker:*` sees
 * exactly its workers.
 */
const available = (await serviceAvailable('postgres')) && (await serviceAvailable('redis'));
const REDIS_DB = '9';
const redisCli = (...args: string[]) =>
  execFileSync('redis-cli', ['-h', '127.0.0.1', '-p', '6379', '-n', REDIS_DB, ...args], {
    encoding: 'utf8',
  }).trim();

/** docs/operating.md's redis-cli lines as arguments, by command: RUNBOOK.KEYS = ['KEYS', 'worker:*']. */
const RUNBOOK: Record<string, string[]> = Object.fromEntries(
  commandsOf('runbook-redis').map((line) => {
    const args = line
      .split('|')[0]!
      .trim()
      .split(/\s+/)
      .slice(1)
      .map((a) => a.replace(/^"(.*)"$/, '$1'));
    return [args[0]!, args];
  }),
);
/** docs/operating.md's SQL: the live allocation. */
const [LIVE_ALLOCATION_SQL] = commandsOf('runbook-sql');

interface Dashboard {
  resources: { total_cpus: number; allocated_cpus: number; available_cpus: number; utilization: number };
  workers: { worker_id: string }[];
}

describe.runIf(available)('contract runbook (Postgres + Redis, real processes)', () => {
  let database: TestDatabase;
  let server: ServerProcess;
  const agents: AgentProcess[] = [];
  const psql = (statement: string) =>
    execFileSync('psql', [database.url!, '-Atc', statement], { encoding: 'utf8' }).trim();
  const dashboard = async (): Promise<Dashboard> =>
    (await (await fetch(`${server.url}/api/v1/dashboard`)).json()) as Dashboard;

  beforeAll(async () => {
    database = await createPostgresDatabase();
    redisCli('FLUSHDB');
    server = new ServerProcess(await freePort(), {
      DATABASE_URL: database.url!,
      REDIS_URL: `redis://127.0.0.1:6379/${REDIS_DB}`,
      CONDUCTOR_EMBEDDED_AGENT: '0',
      CONDUCTOR_WORKER_TTL: '4',
      CONDUCTOR_SCHEDULE_INTERVAL: '1',
      CONDUCTOR_STATS_INTERVAL: '1',
    });
    await server.ready();
  });
  afterAll(async () => {
    await Promise.all(agents.map((a) => a.stop().catch(() => a.kill9())));
    await server?.stop();
    redisCli('FLUSHDB');
    await database?.close();
  });

  it('has the runbook lines of docs/operating.md', () => {
    expect(Object.values(RUNBOOK)).toEqual([
      ['KEYS', 'worker:*'],
      ['HGETALL', 'worker:kunpeng-compute-01'],
      ['TTL', 'worker:kunpeng-compute-01'],
      ['GET', 'resource:allocated_cpus'],
      ['DEL', 'resource:allocated_cpus'],
    ]);
    expect(LIVE_ALLOCATION_SQL).toBe(
      'SELECT SUM(allocated_cpus) FROM resource_allocations WHERE released = false;',
    );
  });

  it('scales 96 → 192 → 96 as agents start and stop, with one worker:<id> hash each', async () => {
    const first = new AgentProcess('kunpeng-compute-01', server.url, {
      cpus: 96,
      env: { CONDUCTOR_HEARTBEAT_INTERVAL: '1' },
    });
    agents.push(first);
    expect(await first.registered()).toContain('✓ Worker registered: kunpeng-compute-01 (96 CPUs)');
    expect((await dashboard()).resources.total_cpus).toBe(96);
    expect(redisCli(...RUNBOOK.KEYS!).split('\n')).toEqual(['worker:kunpeng-compute-01']);

    const hash = redisCli(...RUNBOOK.HGETALL!).split('\n');
    const fields = Object.fromEntries(hash.flatMap((_, i) => (i % 2 === 0 ? [[hash[i], hash[i + 1]]] : [])));
    // The contract's six fields first, then the node's other resources.
    expect(Object.keys(fields)).toEqual([
      'worker_id',
      'cpus',
      'status',
      'hostname',
      'registered_at',
      'last_heartbeat',
      'memory_mb',
      'gpus',
      'gres',
      'features',
      'partitions',
    ]);
    expect(fields).toMatchObject({ worker_id: 'kunpeng-compute-01', cpus: '96', status: 'ready' });
    expect(fields.last_heartbeat).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d$/);
    await first.waitForLine(/Heartbeat sent: kunpeng-compute-01/);
    const ttl = Number(redisCli(...RUNBOOK.TTL!));
    expect(ttl).toBeGreaterThan(0);
    expect(ttl).toBeLessThanOrEqual(4);

    const second = new AgentProcess('worker-02', server.url, {
      cpus: 96,
      env: { CONDUCTOR_HEARTBEAT_INTERVAL: '1' },
    });
    agents.push(second);
    await second.registered();
    expect((await dashboard()).resources.total_cpus).toBe(192);
    expect(redisCli(...RUNBOOK.KEYS!).split('\n').length).toBe(2);
    await eventually(() => server.has('Active workers: 2, Total CPUs: 192'), { what: 'the statistics line' });

    expect(await second.stop()).toBe(0);
    expect((await dashboard()).resources.total_cpus).toBe(96);
    expect(redisCli(...RUNBOOK.KEYS!).split('\n')).toEqual(['worker:kunpeng-compute-01']);
  });

  it('keeps resource:allocated_cpus equal to the SQL sum, and refills it after DEL', async () => {
    const submit = await fetch(`${server.url}/api/v1/jobs/submit`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ script: 'sleep 60', cpus: 4 }),
    });
    expect(submit.status).toBe(201);
    await eventually(async () => (await dashboard()).resources.allocated_cpus === 4, { what: 'allocation' });
    expect((await dashboard()).resources).toEqual({
      total_cpus: 96,
      allocated_cpus: 4,
      available_cpus: 92,
      utilization: 4.2,
    });
    expect(redisCli(...RUNBOOK.GET!)).toBe('4');
    expect(psql(LIVE_ALLOCATION_SQL!)).toBe('4');
    expect(
      psql(`SELECT COUNT(*) AS total_allocations, SUM(allocated_cpus) AS total_cpus,
                   SUM(CASE WHEN released = false THEN allocated_cpus ELSE 0 END) AS active_cpus
            FROM resource_allocations;`),
    ).toBe('1|4|4');

    expect(redisCli(...RUNBOOK.DEL!)).toBe('1');
    expect((await dashboard()).resources.allocated_cpus).toBe(4);
    expect(server.has('Cache miss, querying database')).toBe(true);
    expect(redisCli(...RUNBOOK.GET!)).toBe('4');
  });

  it('re-registers by itself when its key is gone (expired or flushed), keeping its running job', async () => {
    const [first] = agents;
    const registrations = () => first!.lines.filter((l) => l.includes('✓ Worker registered')).length;
    expect(registrations()).toBe(1);
    expect(redisCli('DEL', 'worker:kunpeng-compute-01')).toBe('1');
    await eventually(() => registrations() === 2, { timeoutMs: 10_000, what: 're-registration' });
    expect(redisCli('EXISTS', 'worker:kunpeng-compute-01')).toBe('1');
    expect(psql(`SELECT state FROM jobs WHERE cpus = 4`)).toBe('RUNNING');
    expect((await dashboard()).resources).toMatchObject({ total_cpus: 96, allocated_cpus: 4 });
  });

  it('kill -9: the key expires after its TTL, the job ends as NODE_FAIL, the CPUs come back', async () => {
    const [first] = agents;
    await first!.kill9();
    await eventually(() => redisCli(...RUNBOOK.TTL!) === '-2', {
      timeoutMs: 10_000,
      what: 'key expiry',
    });
    expect(redisCli(...RUNBOOK.KEYS!)).toBe('');
    expect((await dashboard()).resources.total_cpus).toBe(0);
    await eventually(() => psql(`SELECT state FROM jobs WHERE cpus = 4`) === 'NODE_FAIL', {
      timeoutMs: 15_000,
      what: 'NODE_FAIL',
    });
    expect(
      psql(`SELECT status || ' ' || (down_reason IS NOT NULL) FROM workers WHERE id = 'kunpeng-compute-01'`),
    ).toBe('down true');
    expect(
      psql('SELECT coalesce(SUM(allocated_cpus), 0) FROM resource_allocations WHERE released = false;'),
    ).toBe('0');
    expect(redisCli(...RUNBOOK.GET!)).toBe('0');
  });
});
