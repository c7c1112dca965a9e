/**
 * GET /api/v1/dashboard beyond CPUs: memory, GPUs (by model), generic resources and the partitions, summed
 * over live workers only; the per-worker entries with their resources; the overview fragment and the pages'
 * JSON reads with the same. The answers are checked against dashboardSchema by the harness.
 */
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PARTITION_PENDING_COUNT_LIMIT } from '../../functions/domain/dashboard.ts';
import { type SecureApp, secureApp } from '../security/support.ts';
import { availableBackends, type Backend } from '../support/cluster.ts';

const backends = await availableBackends();

interface Dashboard {
  resources: { total_cpus: number; allocated_cpus: number; available_cpus: number; utilization: number };
  memory: { total_mb: number; allocated_mb: number; available_mb: number };
  gpus: {
    total: number;
    allocated: number;
    available: number;
    by_model: Record<string, { total: number; allocated: number }>;
  };
  gres: Record<string, { total: number; allocated: number }>;
  partitions: {
    name: string;
    state: string;
    default: boolean;
    live_nodes: number;
    total_cpus: number;
    allocated_cpus: number;
    total_gpus: number;
    allocated_gpus: number;
    pending_jobs: number | null;
    running_jobs: number;
  }[];
  workers: {
    worker_id: string;
    memory_mb: number;
    allocated_memory_mb: number;
    gpus: number;
    allocated_gpus: number;
    gres: Record<string, { total: number; allocated: number }>;
    features: string[];
    partitions: string[];
  }[];
}

describe.each(backends)('dashboard resources and partitions on $name', (factory) => {
  let backend: Backend;
  let s: SecureApp;
  const exec = (statement: ReturnType<typeof sql>) => backend.db.db.execute(statement);
  const dashboard = async () => {
    const res = await s.request('GET', '/api/v1/dashboard');
    expect(res.status).toBe(200);
    return (await res.json()) as Dashboard;
  };

  beforeAll(async () => {
    backend = await factory.create({ keyPrefix: `dash-res-${Date.now()}:` });
    s = secureApp(backend);
    await exec(sql`DELETE FROM workers`);
    await exec(sql`INSERT INTO partitions (name, created_by) VALUES ('gpu', 'agent') ON CONFLICT DO NOTHING`);
    // An admin's partition naming nodes by a hostlist, and one that is down.
    await exec(
      sql`INSERT INTO partitions (name, created_by, nodes, state) VALUES ('big', 'admin', 'cpu[01-02]', 'UP'),
            ('old', 'admin', NULL, 'DOWN') ON CONFLICT DO NOTHING`,
    );
    // gpu01: 4 GPUs (2 a100 held: indexes 0 and 2, 2 v100), 256 GB, declares partition gpu;
    // cpu01, cpu02: no GPUs, declare nothing (the default), named by big's list; cpu02 drains.
    // gone01: down, counted nowhere.
    await exec(
      sql`INSERT INTO workers (id, hostname, cpus, allocated_cpus, session, status, drained, memory_mb,
                               allocated_memory_mb, gpus, gpu_mask, gpus_used, allocated_gpus, features, partitions)
          VALUES
            ('gpu01', 'g', 64, 16, 's', 'ready', false, 262144, 65536,
             '[{"index":0,"model":"a100"},{"index":1,"model":"a100"},{"index":2,"model":"v100"},{"index":3,"model":"v100"}]',
             15, 5, 2, '{avx512,ssd}', '{gpu}'),
            ('cpu01', 'c1', 32, 8, 's', 'ready', false, 65536, 16384, '[]', 0, 0, 0, '{avx512}', '{}'),
            ('cpu02', 'c2', 32, 0, 's', 'draining', true, 65536, 0, '[]', 0, 0, 0, '{}', '{}'),
            ('gone01', 'x', 128, 0, 's', 'down', false, 999999, 0,
             '[{"index":0,"model":"h100"}]', 1, 0, 0, '{}', '{gpu}')`,
    );
    await exec(
      sql`INSERT INTO worker_gres (worker_id, name, total, allocated) VALUES
            ('gpu01', 'nvme', 2, 1), ('cpu01', 'nvme', 1, 0), ('cpu01', 'license_matlab', 4, 3),
            ('gone01', 'nvme', 8, 0)`,
    );
    // Running: two on gpu01, one on cpu01, one on the down node. Pending: one names gpu, one gpu and big,
    // two name none (the default), one a partition that does not exist.
    await exec(
      sql`INSERT INTO jobs (name, script, cpus, state, node, partition) VALUES
            ('r1', 'true', 8, 'RUNNING', 'gpu01', 'gpu'), ('r2', 'true', 8, 'RUNNING', 'gpu01', 'gpu'),
            ('r3', 'true', 8, 'RUNNING', 'cpu01', 'default'), ('r4', 'true', 8, 'RUNNING', 'gone01', 'gpu'),
            ('p1', 'true', 1, 'PENDING', NULL, 'gpu'), ('p2', 'true', 1, 'PENDING', NULL, 'gpu, big'),
            ('p3', 'true', 1, 'PENDING', NULL, NULL), ('p4', 'true', 1, 'PENDING', NULL, NULL),
            ('p5', 'true', 1, 'PENDING', NULL, 'nowhere')`,
    );
  });
  afterAll(async () => {
    await backend?.close();
  });

  it('sums memory, GPUs by model and generic resources over live workers; a draining one’s free part is not available', async () => {
    const dash = await dashboard();
    expect(dash.resources.total_cpus).toBe(128);
    expect(dash.memory).toEqual({
      total_mb: 393216,
      allocated_mb: 81920,
      available_mb: 393216 - 81920 - 65536, // cpu02 drains: its 64 GB are not available
    });
    expect(dash.gpus).toEqual({
      total: 4,
      allocated: 2,
      available: 2,
      by_model: { a100: { total: 2, allocated: 1 }, v100: { total: 2, allocated: 1 } },
    });
    expect(dash.gres).toEqual({
      license_matlab: { total: 4, allocated: 3 },
      nvme: { total: 3, allocated: 1 },
    });
  });

  it('lists the partitions, the default first: nodes by the scheduler’s rule, CPUs, GPUs, pending and running jobs', async () => {
    const dash = await dashboard();
    const byName = Object.fromEntries(dash.partitions.map((p) => [p.name, p]));
    expect(dash.partitions[0]?.name).toBe('default');
    expect(dash.partitions.map((p) => p.name).slice(1)).toEqual(['big', 'gpu', 'old']);
    // cpu01 and cpu02 declare nothing, but big's node list names them: they are not the default's.
    expect(byName.default).toEqual({
      name: 'default',
      state: 'UP',
      default: true,
      live_nodes: 0,
      total_cpus: 0,
      allocated_cpus: 0,
      total_gpus: 0,
      allocated_gpus: 0,
      pending_jobs: 2,
      running_jobs: 0,
    });
    expect(byName.big).toMatchObject({
      live_nodes: 2,
      total_cpus: 64,
      allocated_cpus: 8,
      total_gpus: 0,
      pending_jobs: 1,
      running_jobs: 1,
    });
    expect(byName.gpu).toMatchObject({
      live_nodes: 1,
      total_cpus: 64,
      allocated_cpus: 16,
      total_gpus: 4,
      allocated_gpus: 2,
      pending_jobs: 2,
      running_jobs: 2,
    });
    expect(byName.old).toMatchObject({ state: 'DOWN', live_nodes: 0, pending_jobs: 0, running_jobs: 0 });
    // Without big's node list, the two nodes that declare nothing are the default partition's.
    await exec(sql`UPDATE partitions SET nodes = NULL WHERE name = 'big'`);
    const after = Object.fromEntries((await dashboard()).partitions.map((p) => [p.name, p]));
    expect(after.default).toMatchObject({ live_nodes: 2, total_cpus: 64, running_jobs: 1 });
    expect(after.big).toMatchObject({ live_nodes: 0, total_cpus: 0 });
    await exec(sql`UPDATE partitions SET nodes = 'cpu[01-02]' WHERE name = 'big'`);
  });

  it('gives each listed worker its memory, GPUs, generic resources, features and partitions', async () => {
    const dash = await dashboard();
    expect(dash.workers.map((w) => w.worker_id)).toEqual(['cpu01', 'cpu02', 'gpu01']);
    const gpu01 = dash.workers.find((w) => w.worker_id === 'gpu01');
    expect(gpu01).toMatchObject({
      memory_mb: 262144,
      allocated_memory_mb: 65536,
      gpus: 4,
      allocated_gpus: 2,
      gres: { nvme: { total: 2, allocated: 1 } },
      features: ['avx512', 'ssd'],
      partitions: ['gpu'],
    });
    expect(dash.workers.find((w) => w.worker_id === 'cpu01')?.partitions).toEqual(['big']);
    const page = (await (await s.request('GET', '/api/v1/ui/workers')).json()) as {
      workers: Dashboard['workers'];
    };
    expect(page.workers.find((w) => w.worker_id === 'gone01')).toMatchObject({
      gpus: 1,
      partitions: ['gpu'],
    });
  });

  it('shows memory, GPUs and the partitions on the overview, and per node bars', async () => {
    const overview = await (await s.request('GET', '/api/v1/ui/fragments/overview')).text();
    expect(overview).toContain('<dd id="memory-total">384 GB</dd>');
    expect(overview).toContain('<dd id="gpus-total">4</dd>');
    expect(overview).toContain('<dd id="gpus-allocated">2</dd>');
    expect(overview).toMatch(/<tr data-partition="gpu">/);
    const nodes = await (await s.request('GET', '/api/v1/ui/fragments/nodes')).text();
    expect(nodes).toMatch(/<meter[^>]*aria-label="gpu01 GPUs used"[^>]*>/);
    const node = await (await s.request('GET', '/api/v1/ui/fragments/nodes/gpu01')).text();
    expect(node).toContain('id="node-gpus"');
    expect(node).toContain('a100');
  });

  it(`stops counting pending jobs per partition beyond ${PARTITION_PENDING_COUNT_LIMIT.toLocaleString('en')} in the queue`, async () => {
    await exec(
      sql`INSERT INTO jobs (name, script, cpus, state)
          SELECT 'many', 'true', 1, 'PENDING' FROM generate_series(1, ${PARTITION_PENDING_COUNT_LIMIT}) g`,
    );
    const dash = await dashboard();
    expect(dash.partitions.every((p) => p.pending_jobs === null)).toBe(true);
    expect(dash.partitions.find((p) => p.name === 'gpu')?.running_jobs).toBe(2);
    await exec(sql`DELETE FROM jobs WHERE name = 'many'`);
  });
});
