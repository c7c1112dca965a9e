import { sql } from 'drizzle-orm';
import { expect } from 'vitest';
import { readAllocationSnapshot } from '../../functions/domain/cache.ts';
import type { Database, RegistryStore } from '../../functions/domain/ports.ts';
import { query, queryOne } from '../../functions/domain/sql.ts';

/**
 * What must hold after any scenario: no RUNNING job without a live allocation and no live allocation
 * without a RUNNING job; each worker's allocated CPUs equal its live allocations and fit its CPUs; the
 * cluster counter equals the contract's SUM; every ended attempt is in job_attempts; jobs per state from
 * job_state_deltas equal a full count; and
 * (when asked) every allocation key of the cache equals Postgres: CPUs, memory, GPUs and generic resources.
 */
export async function checkInvariants(db: Database, registry?: RegistryStore): Promise<void> {
  const orphans = await query<{ id: number; state: string }>(
    db,
    sql`SELECT j.id, j.state FROM jobs j LEFT JOIN resource_allocations a ON a.job_id = j.id AND a.released = false
        WHERE (j.state = 'RUNNING') <> (a.id IS NOT NULL)`,
  );
  expect(orphans, 'jobs whose RUNNING state and live allocation disagree').toEqual([]);
  const workers = await query<{ id: string; cpus: number; allocated_cpus: number; live: string | number }>(
    db,
    sql`SELECT w.id, w.cpus, w.allocated_cpus,
               coalesce((SELECT sum(allocated_cpus) FROM resource_allocations a WHERE a.node_name = w.id AND NOT a.released), 0) AS live
        FROM workers w`,
  );
  for (const w of workers) {
    expect(Number(w.allocated_cpus), `worker ${w.id} allocated_cpus`).toBe(Number(w.live));
    expect(Number(w.allocated_cpus)).toBeLessThanOrEqual(Number(w.cpus));
  }
  // Memory, GPUs and generic resources: each worker's counts are its live allocations', within its capacity,
  // and no GPU is held by two live allocations.
  const resources = await query<{ id: string; problem: string }>(
    db,
    sql`WITH live AS (SELECT * FROM resource_allocations WHERE NOT released)
        SELECT w.id, 'memory ' || w.allocated_memory_mb || ' <> ' || coalesce(sum(l.memory_mb), 0) AS problem
        FROM workers w LEFT JOIN live l ON l.node_name = w.id
        GROUP BY w.id HAVING w.allocated_memory_mb <> coalesce(sum(l.memory_mb), 0)
                            OR w.allocated_memory_mb > w.memory_mb
        UNION ALL
        SELECT w.id, 'gpus ' || w.gpus_used || ' <> ' || coalesce(bit_or(l.gpu_mask), 0)
        FROM workers w LEFT JOIN live l ON l.node_name = w.id
        GROUP BY w.id
        HAVING w.gpus_used <> coalesce(bit_or(l.gpu_mask), 0)
            OR coalesce(sum(bit_count(l.gpu_mask::bit(64))), 0) <> bit_count(coalesce(bit_or(l.gpu_mask), 0)::bit(64))
            OR w.gpus_used & ~w.gpu_mask <> 0
        UNION ALL
        SELECT g.worker_id, 'gres ' || g.name || ' ' || g.allocated || ' <> ' || coalesce((
                 SELECT sum((l.gres ->> g.name)::int) FROM live l WHERE l.node_name = g.worker_id), 0)
        FROM worker_gres g
        WHERE g.allocated <> coalesce((SELECT sum((l.gres ->> g.name)::int) FROM live l WHERE l.node_name = g.worker_id), 0)
           OR g.allocated > g.total`,
  );
  expect(resources, 'workers whose memory, GPUs or gres disagree with their live allocations').toEqual([]);
  // Every attempt that ended is recorded (job_attempts, by the transition that ended it): a job placed at least
  // once and not running now has a row for its last attempt, and none for an attempt it never had.
  const unrecorded = await query<{ id: number; attempt: number; state: string }>(
    db,
    sql`SELECT j.id, j.attempt, j.state FROM jobs j
        WHERE j.attempt > 0 AND j.state <> 'RUNNING'
          AND NOT EXISTS (SELECT 1 FROM job_attempts a WHERE a.job_id = j.id AND a.attempt = j.attempt)
        UNION ALL
        SELECT a.job_id, a.attempt, 'recorded beyond the job''s attempts' FROM job_attempts a JOIN jobs j ON j.id = a.job_id
        WHERE a.attempt > j.attempt OR a.attempt < 1
        LIMIT 20`,
  );
  expect(unrecorded, 'ended attempts missing from job_attempts').toEqual([]);
  const sum = await queryOne<{ total: string | number | null }>(
    db,
    sql`SELECT SUM(allocated_cpus) AS total FROM resource_allocations WHERE released = false`,
  );
  const counter = await queryOne<{ allocated_cpus: string | number }>(
    db,
    sql`SELECT allocated_cpus FROM cluster_state WHERE id = 1`,
  );
  expect(Number(counter?.allocated_cpus)).toBe(Number(sum?.total ?? 0));
  const counters = await queryOne<{ memory: string; live_memory: string; gpus: string; live_gpus: string }>(
    db,
    sql`SELECT allocated_memory_mb AS memory, allocated_gpus AS gpus,
               (SELECT coalesce(sum(memory_mb), 0) FROM resource_allocations WHERE NOT released) AS live_memory,
               (SELECT coalesce(sum(bit_count(gpu_mask::bit(64))), 0) FROM resource_allocations WHERE NOT released) AS live_gpus
        FROM cluster_state WHERE id = 1`,
  );
  expect(Number(counters?.memory), 'cluster_state.allocated_memory_mb').toBe(Number(counters?.live_memory));
  expect(Number(counters?.gpus), 'cluster_state.allocated_gpus').toBe(Number(counters?.live_gpus));
  // Jobs per state from the trigger-kept deltas equal a full count.
  const drift = await query<{ state: string; counted: string | number; kept: string | number }>(
    db,
    sql`SELECT coalesce(c.state, d.state) AS state, coalesce(c.n, 0) AS counted, coalesce(d.n, 0) AS kept
        FROM (SELECT state, count(*) AS n FROM jobs GROUP BY state) c
        FULL JOIN (SELECT state, sum(n) AS n FROM job_state_deltas GROUP BY state) d ON d.state = c.state
        WHERE coalesce(c.n, 0) <> coalesce(d.n, 0)`,
  );
  expect(drift, 'job_state_deltas sums that differ from count(*) per state').toEqual([]);
  if (registry) {
    // Each cache key that holds a value equals Postgres (a missing one is refilled by the next read).
    const snapshot = await readAllocationSnapshot(db);
    const cached = await registry.getAllocation();
    expect(await registry.getAllocatedCpus()).toBe(cached.cpus);
    if (cached.cpus !== null) expect(cached.cpus, 'CPU cache equals Postgres').toBe(snapshot.allocation.cpus);
    if (cached.memoryMb !== null) {
      expect(cached.memoryMb, 'memory cache equals Postgres').toBe(snapshot.allocation.memoryMb);
    }
    if (cached.gpus !== null) expect(cached.gpus, 'GPU cache equals Postgres').toBe(snapshot.allocation.gpus);
    if (cached.gres !== null) {
      expect(cached.gres, 'gres cache equals Postgres').toEqual(snapshot.allocation.gres);
    }
  }
}
