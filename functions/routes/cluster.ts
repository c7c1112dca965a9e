import { OpenAPIHono } from '@hono/zod-openapi';
import { z } from 'zod';
import { listAudit, listAuditInput } from '../domain/audit.ts';
import type { Context } from '../domain/context.ts';
import { getDashboard, getHealth, listLiveWorkers, listWorkers } from '../domain/dashboard.ts';
import { listFairShare, liveFairShare } from '../domain/priority.ts';
import { setWorkerDraining } from '../domain/workers.ts';
import { workerIdParam, workersQuery } from '../http/agent-schemas.ts';
import type { AppEnv } from '../http/auth.ts';
import {
  auditListSchema,
  dashboardSchema,
  fairShareSchema,
  healthSchema,
  workerListSchema,
  workerStatusSchema,
} from '../http/responses.ts';
import { mount, type RouteSpec } from '../http/route.ts';

export function clusterRoutes(ctx: Context) {
  const app = new OpenAPIHono<AppEnv>();
  mount(app, dashboard, async (c) => c.json(await getDashboard(ctx)));
  mount(app, workers, async (c, { query }) =>
    c.json({ workers: query.all ? await listWorkers(ctx) : await listLiveWorkers(ctx) }),
  );
  mount(app, drain, async (c, { params }) =>
    c.json(await setWorkerDraining(ctx, params.id, true, c.get('principal'))),
  );
  mount(app, undrain, async (c, { params }) =>
    c.json(await setWorkerDraining(ctx, params.id, false, c.get('principal'))),
  );
  mount(app, fairShare, async (c, { query }) =>
    c.json({ accounts: query.live ? await liveFairShare(ctx) : await listFairShare(ctx) }),
  );
  mount(app, audit, async (c, { query }) => c.json(await listAudit(ctx.db, query)));
  mount(app, health, async (c) => {
    const answer = await getHealth(ctx);
    return c.json(answer, answer.status === 'down' ? 503 : 200);
  });
  return app;
}

const fairShareQuery = z.strictObject({
  live: z
    .enum(['true', 'false', '1', '0'], { error: 'live is true or false' })
    .transform((v) => v === 'true' || v === '1')
    .optional(),
});

const fairShare = {
  method: 'get',
  path: '/fairshare',
  operationId: 'getFairShare',
  summary: 'Each account’s fair-share (Slurm’s sshare): normalized shares and decayed usage, and 2^(-U/S)',
  description:
    'As the last priority computation left them (every CONDUCTOR_PRIORITY_CALC_PERIOD while jobs are pending); an account not listed has used nothing (factor 1). live=true: computed now for every account of the tree and every account with usage, each with its parent, raw_shares and users (sshare, the accounts page).',
  tag: 'cluster',
  access: 'jobs:read',
  query: fairShareQuery,
  responses: { 200: { description: 'The accounts’ fair-share', schema: fairShareSchema } },
} satisfies RouteSpec<undefined, typeof fairShareQuery, undefined>;

const dashboard = {
  method: 'get',
  path: '/dashboard',
  operationId: 'getDashboard',
  summary: 'Cluster resources, live workers and job counts',
  tag: 'cluster',
  access: 'jobs:read',
  responses: {
    200: {
      description: 'The dashboard',
      schema: dashboardSchema,
    },
  },
} satisfies RouteSpec<undefined, undefined, undefined>;

const workers = {
  method: 'get',
  path: '/workers',
  operationId: 'listWorkers',
  summary: 'Live workers (all=true: every worker ever seen, with when and why it went down)',
  tag: 'cluster',
  access: 'admin',
  query: workersQuery,
  responses: { 200: { description: 'Workers', schema: workerListSchema } },
} satisfies RouteSpec<undefined, typeof workersQuery, undefined>;

const drainRefusals = {
  404: 'No such worker (worker_not_found)',
  409: 'The worker is down (worker_down)',
};
const drain = {
  method: 'post',
  path: '/workers/{id}/drain',
  operationId: 'drainWorker',
  summary: 'Stop placing jobs on a worker (its jobs finish)',
  tag: 'cluster',
  access: 'admin',
  params: workerIdParam,
  responses: { 200: { description: 'The worker', schema: workerStatusSchema } },
  refusals: drainRefusals,
} satisfies RouteSpec<typeof workerIdParam, undefined, undefined>;

const undrain = {
  method: 'post',
  path: '/workers/{id}/undrain',
  operationId: 'undrainWorker',
  summary: 'Put a drained worker back',
  tag: 'cluster',
  access: 'admin',
  params: workerIdParam,
  responses: { 200: { description: 'The worker', schema: workerStatusSchema } },
  refusals: drainRefusals,
} satisfies RouteSpec<typeof workerIdParam, undefined, undefined>;

const audit = {
  method: 'get',
  path: '/audit',
  operationId: 'listAudit',
  summary: 'The audit log, newest first',
  tag: 'admin',
  access: 'admin',
  query: listAuditInput,
  responses: { 200: { description: 'A page of entries', schema: auditListSchema } },
} satisfies RouteSpec<undefined, typeof listAuditInput, undefined>;

const health = {
  method: 'get',
  path: '/health',
  operationId: 'getHealth',
  summary: 'Database and cache health (no token, ever)',
  tag: 'meta',
  access: 'public',
  responses: {
    200: {
      description: 'ok, or degraded (the cache is down: reads fall back to Postgres)',
      schema: healthSchema,
    },
    503: { description: 'The database is down', schema: healthSchema },
  },
} satisfies RouteSpec<undefined, undefined, undefined>;
