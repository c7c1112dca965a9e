import { OpenAPIHono } from '@hono/zod-openapi';
import type { Context } from '../domain/context.ts';
import { renderMetrics } from '../domain/metrics.ts';
import type { AppEnv } from '../http/auth.ts';
import { indexSchema } from '../http/responses.ts';
import { mount, type RouteSpec } from '../http/route.ts';

/** The JSON index and Prometheus metrics. */
export function opsRoutes(ctx: Context) {
  const app = new OpenAPIHono<AppEnv>();
  mount(app, metrics, async (c) => {
    c.header('Content-Type', 'text/plain; version=0.0.4; charset=utf-8');
    return c.body(await renderMetrics(ctx));
  });
  mount(app, index, (c) =>
    c.json({
      name: 'conductor' as const,
      api: '/api/v1',
      dashboard: '/api/v1/dashboard',
      health: '/api/v1/health',
    }),
  );
  return app;
}

const metrics = {
  method: 'get',
  path: '/metrics',
  operationId: 'getMetrics',
  summary: 'Prometheus metrics (text format 0.0.4)',
  tag: 'meta',
  access: 'admin',
  responses: { 200: { description: 'Metrics', mediaType: 'text/plain; version=0.0.4' } },
} satisfies RouteSpec<undefined, undefined, undefined>;

const index = {
  method: 'get',
  path: '/',
  operationId: 'getIndex',
  summary: 'Links to the API (a browser asking for text/html gets the web dashboard instead)',
  tag: 'meta',
  access: 'any',
  responses: { 200: { description: 'Links to the API', schema: indexSchema } },
  database: true,
} satisfies RouteSpec<undefined, undefined, undefined>;
