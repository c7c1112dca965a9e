import { Hono } from 'hono';
import type { Context } from '../domain/context.ts';
import { getDashboard, getHealth, listLiveWorkers } from '../domain/dashboard.ts';

export function clusterRoutes(ctx: Context) {
  return new Hono()
    .get('/dashboard', async (c) => c.json(await getDashboard(ctx)))
    .get('/workers', async (c) => c.json({ workers: await listLiveWorkers(ctx) }))
    .get('/health', async (c) => {
      const health = await getHealth(ctx);
      return c.json(health, health.status === 'down' ? 503 : 200);
    });
}
