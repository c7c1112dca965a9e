import { Hono } from 'hono';
import type { Context } from '../domain/context.ts';
import { getDashboard, getHealth, listLiveWorkers, listWorkers } from '../domain/dashboard.ts';
import { setWorkerDraining } from '../domain/workers.ts';
import { workerIdParam, workersQuery } from '../http/agent-schemas.ts';
import { parseInput } from '../http/validate.ts';

export function clusterRoutes(ctx: Context) {
  return new Hono()
    .get('/dashboard', async (c) => c.json(await getDashboard(ctx)))
    .get('/workers', async (c) => {
      const query = parseInput(workersQuery, c.req.query(), 'query');
      return c.json({ workers: query.all ? await listWorkers(ctx) : await listLiveWorkers(ctx) });
    })
    .post('/workers/:id/drain', async (c) => {
      const { id } = parseInput(workerIdParam, c.req.param(), 'path');
      return c.json(await setWorkerDraining(ctx, id, true));
    })
    .post('/workers/:id/undrain', async (c) => {
      const { id } = parseInput(workerIdParam, c.req.param(), 'path');
      return c.json(await setWorkerDraining(ctx, id, false));
    })
    .get('/health', async (c) => {
      const health = await getHealth(ctx);
      return c.json(health, health.status === 'down' ? 503 : 200);
    });
}
