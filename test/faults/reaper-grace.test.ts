/**
 * The reaper after an outage, made deterministic: the scenario of control-plane-outage.test.ts (Postgres away
 * for about a TTL: heartbeats failed all along, reaping failed all along) written straight into the clocks
 * the reaper reads (`maintenance_state.reaper_seen_at`, `workers.last_heartbeat`), then one reap pass.
 *
 * Before the fix the reaper counted an outage only when it was longer than TTL + two passes, so an outage of
 * about one TTL (default timings: 30 s to 70 s) ended with healthy workers reaped and their jobs NODE_FAIL.
 */
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_CONFIG } from '../../functions/domain/ports.ts';
import { reapLostWorkers } from '../../functions/domain/reaper.ts';
import { query } from '../../functions/domain/sql.ts';
import { registerWorker } from '../../functions/domain/workers.ts';
import { availableBackends, type Backend, testConfig, testContext } from '../support/cluster.ts';

const backends = (await availableBackends()).filter((b) => b.name !== 'neon+redis');

describe.each(backends)('reaper grace after an outage on $name', (factory) => {
  let backend: Backend;
  beforeAll(async () => {
    backend = await factory.create();
  });
  afterAll(async () => {
    await backend?.close();
  });

  /**
   * An outage of `outageS` that began `beforeS` seconds after the worker's last heartbeat: the last reaper pass
   * and the last heartbeat are set in the past accordingly, and the reaper runs as the first pass after it.
   */
  async function afterOutage(
    config: typeof DEFAULT_CONFIG,
    worker: string,
    { outageS, heartbeatAgeAtOutageS }: { outageS: number; heartbeatAgeAtOutageS: number },
  ) {
    const { ctx } = testContext(backend, config);
    await registerWorker(ctx, { worker_id: worker, hostname: worker, cpus: 4 });
    await reapLostWorkers(ctx); // an ordinary pass: the reaper is running
    await query(
      backend.db.db,
      // Before the outage the control plane had been reaping for an hour.
      sql`UPDATE maintenance_state SET reaper_seen_at = now() - make_interval(secs => ${outageS}),
            reaper_resumed_at = now() - interval '1 hour' WHERE id = 1`,
    );
    await query(
      backend.db.db,
      sql`UPDATE workers SET last_heartbeat = now() - make_interval(secs => ${outageS + heartbeatAgeAtOutageS})
          WHERE id = ${worker}`,
    );
    return reapLostWorkers(ctx);
  }

  it('test timings (TTL 4 s, heartbeat 1 s, pass 1 s): a 4 s outage reaps nobody', async () => {
    const config = testConfig({
      workerTtlSeconds: 4,
      heartbeatIntervalSeconds: 1,
      scheduleIntervalSeconds: 1,
    });
    const result = await afterOutage(config, 'grace-test', { outageS: 4, heartbeatAgeAtOutageS: 0.9 });
    expect(result).toMatchObject({ lostWorkers: [], inGrace: true });
  });

  it('default timings (TTL 60 s, heartbeat 30 s, pass 5 s): a 40 s outage reaps nobody', async () => {
    const result = await afterOutage({ ...DEFAULT_CONFIG }, 'grace-default', {
      outageS: 40,
      heartbeatAgeAtOutageS: 25,
    });
    expect(result).toMatchObject({ lostWorkers: [], inGrace: true });
  });

  it('without an outage a worker silent for a TTL is still reaped at once', async () => {
    const config = testConfig({
      workerTtlSeconds: 4,
      heartbeatIntervalSeconds: 1,
      scheduleIntervalSeconds: 1,
    });
    const { ctx } = testContext(backend, config);
    await registerWorker(ctx, { worker_id: 'silent', hostname: 'silent', cpus: 4 });
    await query(
      backend.db.db,
      sql`UPDATE maintenance_state SET reaper_seen_at = now() - interval '1 second', reaper_resumed_at = now() - interval '1 hour' WHERE id = 1`,
    );
    await query(
      backend.db.db,
      sql`UPDATE workers SET last_heartbeat = now() - interval '5 seconds' WHERE id = 'silent'`,
    );
    const result = await reapLostWorkers(ctx);
    expect(result.inGrace).toBe(false);
    expect(result.lostWorkers).toContain('silent');
  });
});
