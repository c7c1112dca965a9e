import { Hono } from 'hono';
import { listAudit, listAuditInput } from '../domain/audit.ts';
import type { Context } from '../domain/context.ts';
import { getDashboard, getHealth, listLiveWorkers, listWorkers } from '../domain/dashboard.ts';
import { setWorkerDraining } from '../domain/workers.ts';
import { workerIdParam, workersQuery } from '../http/agent-schemas.ts';
import type { AppEnv } from '../http/auth.ts';
import { parseInput } from '../http/validate.ts';

export function clusterRoutes(ctx: Context) {
  return new Hono<AppEnv>()
    .get('/dashboard', async (c) => c.json(await getDashboard(ctx)))
    .get('/workers', async (c) => {
      const query = parseInput(workersQuery, c.req.query(), 'query');
      return c.json({ workers: query.all ? await listWorkers(ctx) : await listLiveWorkers(ctx) });
    })
    .post('/workers/:id/drain', async (c) => {
      const { id } = parseInput(workerIdParam, c.req.param(), 'path');
      return c.json(await setWorkerDraining(ctx, id, true, c.get('principal')));
    })
    .post('/workers/:id/undrain', async (c) => {
      const { id } = parseInput(workerIdParam, c.req.param(), 'path');
      return c.json(await setWorkerDraining(ctx, id, false, c.get('principal')));
    })
    .get('/audit', async (c) =>
      c.json(await listAudit(ctx.db, parseInput(listAuditInput, c.req.query(), 'query'))),
    )
    .get('/health', async (c) => {
      const health = await getHealth(ctx);
      return c.json(health, health.status === 'down' ? 503 : 200);
    });
}
