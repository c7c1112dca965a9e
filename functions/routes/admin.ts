import { OpenAPIHono, z } from '@hono/zod-openapi';
import {
  createToken,
  createTokenInput,
  listTokens,
  listTokensInput,
  OPEN_ACCESS_ENDED,
  revokeToken,
  tokenIdParam,
} from '../domain/auth.ts';
import type { Context } from '../domain/context.ts';
import {
  createWebhook,
  createWebhookInput,
  deleteWebhook,
  deliverWebhook,
  listWebhooks,
  webhookNameParam,
} from '../domain/webhooks.ts';
import type { AppEnv } from '../http/auth.ts';
import {
  createdTokenSchema,
  createdWebhookSchema,
  deliverySchema,
  ignoredDeliverySchema,
  tokenListSchema,
  tokenSchema,
  webhookListSchema,
  webhookSchema,
} from '../http/responses.ts';
import { mount, type RouteSpec } from '../http/route.ts';

/** Tokens (admin): create (the token is in the answer, once), list, revoke. */
export function tokenRoutes(ctx: Context) {
  const app = new OpenAPIHono<AppEnv>();
  mount(app, createTokenRoute, async (c, { body }) => {
    const principal = c.get('principal');
    const created = await createToken(ctx.db, await body(), principal);
    // Only the open cluster has an anonymous caller: this token is its first, and closes it.
    if (principal.kind !== 'anonymous') return c.json(created, 201);
    return c.json({ ...created, notice: OPEN_ACCESS_ENDED }, 201);
  });
  mount(app, listTokensRoute, async (c, { query }) => c.json(await listTokens(ctx.db, query)));
  mount(app, revokeTokenRoute, async (c, { params }) =>
    c.json(await revokeToken(ctx.db, params.id, c.get('principal'))),
  );
  return app;
}

/** Webhooks: admin management, and deliveries (signed, no token) at POST /{name}. */
export function webhookRoutes(ctx: Context) {
  const app = new OpenAPIHono<AppEnv>();
  mount(app, createWebhookRoute, async (c, { body }) =>
    c.json(await createWebhook(ctx.db, await body(), c.get('principal')), 201),
  );
  mount(app, listWebhooksRoute, async (c) => c.json(await listWebhooks(ctx.db)));
  mount(app, deleteWebhookRoute, async (c, { params }) =>
    c.json(await deleteWebhook(ctx.db, params.name, c.get('principal'))),
  );
  mount(app, deliverWebhookRoute, async (c, { params: { name } }) => {
    const body = new Uint8Array(await c.req.arrayBuffer());
    const result = await deliverWebhook(ctx, {
      name,
      body,
      headers: (header) => c.req.header(header),
      requestId: c.get('requestId'),
    });
    if (result.kind === 'ignored') {
      return c.json({ webhook: name, ignored: true, event: result.event, reason: result.reason }, 202);
    }
    return c.json(
      { webhook: name, duplicate: result.duplicate, job: result.job },
      result.duplicate ? 200 : 201,
    );
  });
  return app;
}

const createTokenRoute = {
  method: 'post',
  path: '/',
  operationId: 'createToken',
  summary: 'Create a token (the token itself is in this answer only)',
  description:
    'On an open cluster (no token yet) anyone may create the first one, which closes the cluster: the answer then carries a notice.',
  tag: 'admin',
  access: 'admin',
  body: createTokenInput,
  bodyExample: { name: 'ci', scopes: ['jobs:read', 'jobs:write'], owner: 'team-a' },
  responses: { 201: { description: 'The token', schema: createdTokenSchema } },
} satisfies RouteSpec<undefined, undefined, typeof createTokenInput>;

const listTokensRoute = {
  method: 'get',
  path: '/',
  operationId: 'listTokens',
  summary: 'List tokens (never the tokens themselves), newest first',
  tag: 'admin',
  access: 'admin',
  query: listTokensInput,
  responses: { 200: { description: 'A page of tokens', schema: tokenListSchema } },
} satisfies RouteSpec<undefined, typeof listTokensInput, undefined>;

const revokeTokenRoute = {
  method: 'delete',
  path: '/{id}',
  operationId: 'revokeToken',
  summary: 'Revoke a token (its next request is a 401)',
  tag: 'admin',
  access: 'admin',
  params: tokenIdParam,
  responses: { 200: { description: 'The revoked token', schema: tokenSchema } },
  refusals: { 404: 'No such token (token_not_found)' },
} satisfies RouteSpec<typeof tokenIdParam, undefined, undefined>;

const createWebhookRoute = {
  method: 'post',
  path: '/',
  operationId: 'createWebhook',
  summary: 'Create a webhook (its secret is in this answer only)',
  tag: 'admin',
  access: 'admin',
  body: createWebhookInput,
  bodyExample: {
    name: 'deploy',
    template: { script: './deploy.sh', cpus: 2 },
    mapping: { ref: 'GIT_REF' },
    events: ['push'],
  },
  responses: { 201: { description: 'The webhook', schema: createdWebhookSchema } },
  refusals: { 409: 'A webhook of that name exists (webhook_exists)' },
} satisfies RouteSpec<undefined, undefined, typeof createWebhookInput>;

const listWebhooksRoute = {
  method: 'get',
  path: '/',
  operationId: 'listWebhooks',
  summary: 'List webhooks (without their secrets)',
  tag: 'admin',
  access: 'admin',
  responses: { 200: { description: 'Webhooks', schema: webhookListSchema } },
} satisfies RouteSpec<undefined, undefined, undefined>;

const deleteWebhookRoute = {
  method: 'delete',
  path: '/{name}',
  operationId: 'deleteWebhook',
  summary: 'Delete a webhook',
  tag: 'admin',
  access: 'admin',
  params: webhookNameParam,
  responses: { 200: { description: 'The deleted webhook', schema: webhookSchema } },
  refusals: { 404: 'No webhook of that name (webhook_not_found)' },
} satisfies RouteSpec<typeof webhookNameParam, undefined, undefined>;

const deliverWebhookRoute = {
  method: 'post',
  path: '/{name}',
  operationId: 'deliverWebhook',
  summary: 'A signed delivery: submits the webhook’s job',
  description:
    'Signed with X-Hub-Signature-256 (GitHub) or X-Conductor-Signature instead of a token. The body is the sender’s ' +
    'payload, in whatever Content-Type it uses; the mapping takes values from it into the job’s environment.',
  tag: 'webhooks',
  access: 'signed',
  params: webhookNameParam,
  headers: z.object({
    'x-hub-signature-256': z
      .string()
      .optional()
      .openapi({ description: 'GitHub’s: `sha256=<hex HMAC-SHA256 of the body>`' }),
    'x-conductor-signature': z
      .string()
      .optional()
      .openapi({ description: '`t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`' }),
    'x-github-event': z
      .string()
      .optional()
      .openapi({ description: 'Or X-Conductor-Event: the event (ping makes no job)' }),
    'x-github-delivery': z
      .string()
      .optional()
      .openapi({ description: 'Or X-Conductor-Delivery: a delivery id seen before returns the first job' }),
  }),
  responses: {
    201: { description: 'The job', schema: deliverySchema },
    200: { description: 'A replay of a delivery: the first job', schema: deliverySchema },
    202: {
      description: 'ping, or an event the webhook does not take: no job',
      schema: ignoredDeliverySchema,
    },
  },
  refusals: {
    400: 'A bad delivery id header, or a payload value the mapping cannot use',
    401: 'No or a bad signature',
    404: 'No webhook of that name',
    413: 'The request body is larger than 2 MiB (payload_too_large)',
    422: 'The webhook’s job is not valid with this payload (invalid_job)',
    429: 'Over the submission rate limit (rate_limited): Retry-After says when to retry',
  },
} satisfies RouteSpec<typeof webhookNameParam, undefined, undefined>;
