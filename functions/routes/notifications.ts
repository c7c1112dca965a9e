import { OpenAPIHono, z } from '@hono/zod-openapi';
import { DELIVERY_STATES, NOTIFICATION_FORMATS } from '../../db/schema.ts';
import type { Context } from '../domain/context.ts';
import {
  createSubscription,
  createSubscriptionInput,
  deleteSubscription,
  deliveryParams,
  getSubscription,
  listDeliveries,
  listDeliveriesInput,
  listSubscriptions,
  replayDelivery,
  subscriptionIdParam,
} from '../domain/notifications.ts';
import type { AppEnv } from '../http/auth.ts';
import { mount, type RouteSpec } from '../http/route.ts';

const isoTime = z.string().openapi({ format: 'date-time' });

const subscriptionSchema = z
  .object({
    id: z.number().int(),
    scope: z.enum(['cluster', 'own']).openapi({
      description: 'cluster: every job and the worker events (admins); own: the jobs of `owner`',
    }),
    owner: z.string().nullable(),
    url: z.string(),
    events: z.array(z.string()),
    format: z.enum(NOTIFICATION_FORMATS),
    description: z.string().nullable(),
    created_by: z.string(),
    created_at: isoTime,
    secret: z
      .string()
      .optional()
      .openapi({ description: 'The whsec_ signing secret: in the answer to the creation only' }),
  })
  .openapi('Subscription');

const deliverySchema = z
  .object({
    id: z.number().int(),
    event_id: z.number().int(),
    webhook_id: z
      .string()
      .openapi({ description: 'The webhook-id header: the same on every retry and replay' }),
    type: z.string().openapi({ description: 'BEGIN, END, FAIL, REQUEUE, TIME_LIMIT_50/80/90, WORKER_*' }),
    job_id: z.number().int().nullable(),
    worker_id: z.string().nullable(),
    state: z.enum(DELIVERY_STATES),
    attempts: z.number().int(),
    next_attempt_at: isoTime.nullable().openapi({ description: 'When it is tried next (pending only)' }),
    last_attempt_at: isoTime.nullable(),
    last_status: z.number().int().nullable().openapi({ description: "The receiver's last HTTP status" }),
    last_error: z.string().nullable(),
    delivered_at: isoTime.nullable(),
    created_at: isoTime,
  })
  .openapi('NotificationDelivery');

/**
 * Event notification subscriptions (functions/domain/notifications.ts): signed webhooks for job and worker
 * events, their delivery log, and replays.
 */
export function subscriptionRoutes(ctx: Context) {
  const app = new OpenAPIHono<AppEnv>();
  mount(app, createSubscriptionRoute, async (c, { body }) =>
    c.json(await createSubscription(ctx, await body(), c.get('principal')), 201),
  );
  mount(app, listSubscriptionsRoute, async (c) =>
    c.json({ subscriptions: await listSubscriptions(ctx, c.get('principal')) }),
  );
  mount(app, getSubscriptionRoute, async (c, { params }) =>
    c.json(await getSubscription(ctx, params.id, c.get('principal'))),
  );
  mount(app, deleteSubscriptionRoute, async (c, { params }) =>
    c.json(await deleteSubscription(ctx, params.id, c.get('principal'))),
  );
  mount(app, listDeliveriesRoute, async (c, { params, query }) =>
    c.json(await listDeliveries(ctx, params.id, query, c.get('principal'))),
  );
  mount(app, replayDeliveryRoute, async (c, { params }) =>
    c.json(await replayDelivery(ctx, params.id, params.delivery, c.get('principal'))),
  );
  return app;
}

const notFoundSubscription = 'No such subscription, or not yours (subscription_not_found)';

const createSubscriptionRoute = {
  method: 'post',
  path: '/',
  operationId: 'createSubscription',
  summary: 'Subscribe a webhook URL to job or worker events',
  description:
    'Events: BEGIN, END, FAIL, REQUEUE, TIME_LIMIT_50, TIME_LIMIT_80, TIME_LIMIT_90, ARRAY_TASKS (and ALL, TIME_LIMIT as sbatch --mail-type has them), and for cluster-wide subscriptions WORKER_REGISTERED, WORKER_LOST, WORKER_DRAINED. A FAIL also goes to subscriptions of END. Deliveries are Standard Webhooks (webhook-id, webhook-timestamp, webhook-signature under the whsec_ secret, shown in this answer only), retried with exponential back-off until a 2xx. Asking for scope cluster without the admin scope is a 403 cluster_scope_forbidden.',
  tag: 'jobs',
  access: 'jobs:write',
  body: createSubscriptionInput,
  bodyExample: { url: 'https://example.com/hooks/conductor', events: ['END', 'FAIL'], format: 'standard' },
  responses: { 201: { description: 'The subscription, with its secret', schema: subscriptionSchema } },
} satisfies RouteSpec<undefined, undefined, typeof createSubscriptionInput>;

const listSubscriptionsRoute = {
  method: 'get',
  path: '/',
  operationId: 'listSubscriptions',
  summary: "The caller's event subscriptions (an admin's: all)",
  tag: 'jobs',
  access: 'jobs:read',
  responses: {
    200: { description: 'Subscriptions', schema: z.object({ subscriptions: z.array(subscriptionSchema) }) },
  },
} satisfies RouteSpec<undefined, undefined, undefined>;

const getSubscriptionRoute = {
  method: 'get',
  path: '/{id}',
  operationId: 'getSubscription',
  summary: 'One event subscription',
  tag: 'jobs',
  access: 'jobs:read',
  params: subscriptionIdParam,
  responses: { 200: { description: 'The subscription', schema: subscriptionSchema } },
  refusals: { 404: notFoundSubscription },
} satisfies RouteSpec<typeof subscriptionIdParam, undefined, undefined>;

const deleteSubscriptionRoute = {
  method: 'delete',
  path: '/{id}',
  operationId: 'deleteSubscription',
  summary: 'Delete an event subscription and its delivery log',
  tag: 'jobs',
  access: 'jobs:write',
  params: subscriptionIdParam,
  responses: { 200: { description: 'The deleted subscription', schema: subscriptionSchema } },
  refusals: { 404: notFoundSubscription },
} satisfies RouteSpec<typeof subscriptionIdParam, undefined, undefined>;

const listDeliveriesRoute = {
  method: 'get',
  path: '/{id}/deliveries',
  operationId: 'listSubscriptionDeliveries',
  summary: "A subscription's delivery log, newest first",
  tag: 'jobs',
  access: 'jobs:read',
  params: subscriptionIdParam,
  query: listDeliveriesInput,
  responses: {
    200: { description: 'Deliveries', schema: z.object({ deliveries: z.array(deliverySchema) }) },
  },
  refusals: { 404: notFoundSubscription },
} satisfies RouteSpec<typeof subscriptionIdParam, typeof listDeliveriesInput, undefined>;

const replayDeliveryRoute = {
  method: 'post',
  path: '/{id}/deliveries/{delivery}/replay',
  operationId: 'replaySubscriptionDelivery',
  summary: 'Send a delivery again (same webhook-id), whatever its state',
  tag: 'jobs',
  access: 'jobs:write',
  params: deliveryParams,
  responses: { 200: { description: 'The delivery, due now', schema: deliverySchema } },
  refusals: { 404: 'No such subscription or delivery (subscription_not_found, delivery_not_found)' },
} satisfies RouteSpec<typeof deliveryParams, undefined, undefined>;
