import { OpenAPIHono } from '@hono/zod-openapi';
import type { Context } from '../domain/context.ts';
import { usageCsv, usageReport, usageReportInput } from '../domain/usage.ts';
import type { AppEnv } from '../http/auth.ts';
import { usageReportSchema } from '../http/responses.ts';
import { mount, type RouteSpec } from '../http/route.ts';

/** Usage accounting: sreport-like reports from the hourly and daily roll-ups. */
export function usageRoutes(ctx: Context) {
  const app = new OpenAPIHono<AppEnv>();
  mount(app, report, async (c, { query }) => {
    const answer = await usageReport(ctx.db, query);
    if (query.format === 'json') return c.json({ cluster: ctx.config.clusterName, ...answer });
    c.header('Content-Type', 'text/csv; charset=utf-8');
    return c.body(usageCsv(answer));
  });
  return app;
}

const report = {
  method: 'get',
  path: '/report',
  operationId: 'getUsageReport',
  summary: 'A usage report over a period (sreport): cluster utilization, top users, top accounts, trends',
  description:
    'Reads the hourly and daily roll-ups kept as attempts end (not the jobs). start and end (ISO 8601) go down to their UTC hour; by default the previous UTC day. accounts= and users= (comma lists) narrow the usage; top= is TopCount (10), group=true puts a user’s accounts together. format=csv answers the rows as CSV.',
  tag: 'jobs',
  access: 'jobs:read',
  query: usageReportInput,
  responses: {
    200: { description: 'The report', schema: usageReportSchema, mediaType: 'text/csv' },
  },
} satisfies RouteSpec<undefined, typeof usageReportInput, undefined>;
