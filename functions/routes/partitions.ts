import { OpenAPIHono } from '@hono/zod-openapi';
import type { Context } from '../domain/context.ts';
import {
  deletePartition,
  getPartition,
  listPartitions,
  partitionInput,
  partitionNameParam,
  putPartition,
} from '../domain/partitions.ts';
import type { AppEnv } from '../http/auth.ts';
import { partitionListSchema, partitionSchema } from '../http/responses.ts';
import { mount, type RouteSpec } from '../http/route.ts';

/** Partitions: anyone who may read jobs lists them; admins create, change and delete them. */
export function partitionRoutes(ctx: Context) {
  const app = new OpenAPIHono<AppEnv>();
  mount(app, listPartitionsRoute, async (c) => c.json({ partitions: await listPartitions(ctx) }));
  mount(app, getPartitionRoute, async (c, { params }) => c.json(await getPartition(ctx, params.name)));
  mount(app, putPartitionRoute, async (c, { params, body }) =>
    c.json(await putPartition(ctx, params.name, await body(), c.get('principal'))),
  );
  mount(app, deletePartitionRoute, async (c, { params }) =>
    c.json(await deletePartition(ctx, params.name, c.get('principal'))),
  );
  return app;
}

const listPartitionsRoute = {
  method: 'get',
  path: '/',
  operationId: 'listPartitions',
  summary: 'List partitions, the default first, with the live nodes in each',
  tag: 'cluster',
  access: 'jobs:read',
  responses: { 200: { description: 'Partitions', schema: partitionListSchema } },
} satisfies RouteSpec<undefined, undefined, undefined>;

const getPartitionRoute = {
  method: 'get',
  path: '/{name}',
  operationId: 'getPartition',
  summary: 'One partition',
  tag: 'cluster',
  access: 'jobs:read',
  params: partitionNameParam,
  responses: { 200: { description: 'The partition', schema: partitionSchema } },
  refusals: { 404: 'No partition of that name (partition_not_found)' },
} satisfies RouteSpec<typeof partitionNameParam, undefined, undefined>;

const putPartitionRoute = {
  method: 'post',
  path: '/{name}',
  operationId: 'putPartition',
  summary: 'Create a partition, or change the fields given',
  description:
    'Slurm’s partition settings: state (UP, DOWN: takes jobs but starts none, DRAIN: starts queued jobs but takes no new ones, INACTIVE), nodes (a hostlist), max_time and default_time (minutes or a Slurm time), max_cpus_per_node, def_mem_per_cpu and max_mem_per_cpu (MB or a size), allow_accounts, priority_tier, policy (pack or spread). The retry policy of its jobs that set none (null: the cluster’s): max_requeues (0 to 1000), retry_on_failure, retry_backoff_s (0 to 86400), crash_limit (0 to 1000, 0: none). default: true makes it the default partition.',
  tag: 'admin',
  access: 'admin',
  params: partitionNameParam,
  body: partitionInput,
  bodyExample: { nodes: 'gpu[01-04]', max_time: '2-00:00:00', def_mem_per_cpu: '4G', policy: 'spread' },
  responses: { 200: { description: 'The partition', schema: partitionSchema } },
} satisfies RouteSpec<typeof partitionNameParam, undefined, typeof partitionInput>;

const deletePartitionRoute = {
  method: 'delete',
  path: '/{name}',
  operationId: 'deletePartition',
  summary: 'Delete a partition no waiting or running job names',
  tag: 'admin',
  access: 'admin',
  params: partitionNameParam,
  responses: { 200: { description: 'The deleted partition', schema: partitionSchema } },
  refusals: {
    404: 'No partition of that name (partition_not_found)',
    409: 'The default partition, or jobs name it (partition_is_default, partition_in_use)',
  },
} satisfies RouteSpec<typeof partitionNameParam, undefined, undefined>;
