import { OpenAPIHono } from '@hono/zod-openapi';
import {
  arrayTasksQuery,
  cancelArray,
  getArray,
  holdArray,
  listArrays,
  listArraysInput,
  releaseArray,
} from '../domain/array-ops.ts';
import type { Context } from '../domain/context.ts';
import { jobIdParam } from '../http/agent-schemas.ts';
import type { AppEnv } from '../http/auth.ts';
import { arrayActionSchema, arrayListSchema, arraySchema } from '../http/responses.ts';
import { mount, type RouteSpec } from '../http/route.ts';

/**
 * Job arrays (sbatch `--array`) as one row each with their progress; their tasks are jobs (GET
 * /api/v1/jobs?array=<id>). Cancel, hold and release act on all tasks, or on those `?tasks=` names (`4`,
 * `1-3`): Slurm's `123`, `123_4`, `123_[1-3]`.
 */
export function arrayRoutes(ctx: Context) {
  const app = new OpenAPIHono<AppEnv>();
  mount(app, listArraysRoute, async (c, { query }) =>
    c.json(await listArrays(ctx.db, query, c.get('principal'))),
  );
  mount(app, getArrayRoute, async (c, { params }) =>
    c.json(await getArray(ctx.db, params.id, c.get('principal'))),
  );
  mount(app, cancelArrayRoute, async (c, { params, query }) =>
    c.json(await cancelArray(ctx, params.id, query, c.get('principal'))),
  );
  mount(app, holdArrayRoute, async (c, { params, query }) =>
    c.json(await holdArray(ctx, params.id, query, c.get('principal'))),
  );
  mount(app, releaseArrayRoute, async (c, { params, query }) =>
    c.json(await releaseArray(ctx, params.id, query, c.get('principal'))),
  );
  return app;
}

const listArraysRoute = {
  method: 'get',
  path: '/',
  operationId: 'listArrays',
  summary: 'List job arrays, newest first, each as one row with its tasks per state',
  tag: 'jobs',
  access: 'jobs:read',
  query: listArraysInput,
  responses: { 200: { description: 'A page of arrays', schema: arrayListSchema } },
} satisfies RouteSpec<undefined, typeof listArraysInput, undefined>;

const getArrayRoute = {
  method: 'get',
  path: '/{id}',
  operationId: 'getArray',
  summary:
    'One job array: its specification and its tasks per state (its tasks: GET /api/v1/jobs?array=<id>)',
  tag: 'jobs',
  access: 'jobs:read',
  params: jobIdParam,
  responses: { 200: { description: 'The array', schema: arraySchema } },
  refusals: { 404: 'No such array, or not this token’s owner’s (array_not_found)' },
} satisfies RouteSpec<typeof jobIdParam, undefined, undefined>;

const refusals = {
  400: 'tasks is no task list (invalid_tasks)',
  404: 'No such array, or not this token’s owner’s (array_not_found)',
};

const cancelArrayRoute = {
  method: 'post',
  path: '/{id}/cancel',
  operationId: 'cancelArray',
  summary: 'Cancel an array’s tasks (scancel 123, 123_4, 123_[1-3]): all, or those ?tasks= names',
  tag: 'jobs',
  access: 'jobs:write',
  params: jobIdParam,
  query: arrayTasksQuery,
  responses: { 200: { description: 'The array after the cancel', schema: arrayActionSchema } },
  refusals,
} satisfies RouteSpec<typeof jobIdParam, typeof arrayTasksQuery, undefined>;

const holdArrayRoute = {
  method: 'post',
  path: '/{id}/hold',
  operationId: 'holdArray',
  summary: 'Hold an array’s pending tasks (scontrol hold): all, or those ?tasks= names',
  tag: 'jobs',
  access: 'jobs:write',
  params: jobIdParam,
  query: arrayTasksQuery,
  responses: { 200: { description: 'The array after the hold', schema: arrayActionSchema } },
  refusals,
} satisfies RouteSpec<typeof jobIdParam, typeof arrayTasksQuery, undefined>;

const releaseArrayRoute = {
  method: 'post',
  path: '/{id}/release',
  operationId: 'releaseArray',
  summary: 'Release an array’s held tasks (scontrol release): all, or those ?tasks= names',
  tag: 'jobs',
  access: 'jobs:write',
  params: jobIdParam,
  query: arrayTasksQuery,
  responses: { 200: { description: 'The array after the release', schema: arrayActionSchema } },
  description:
    'Tasks held by an admin (JobHeldAdmin) are released by an admin only: 403 held_by_admin when no other is.',
  refusals,
} satisfies RouteSpec<typeof jobIdParam, typeof arrayTasksQuery, undefined>;
