import { OpenAPIHono } from '@hono/zod-openapi';
import { bodyLimit } from 'hono/body-limit';
import type { Context } from './domain/context.ts';
import { apiDocsRoutes, type SwaggerUiAssets } from './http/api-docs.ts';
import { mountApiDocument } from './http/api-document.ts';
import { type AppEnv, authMiddleware } from './http/auth.ts';
import { createErrorHandler, errorResponse } from './http/errors.ts';
import { sameOriginGuard } from './http/same-origin.ts';
import { accountRoutes } from './routes/accounts.ts';
import { tokenRoutes, webhookRoutes } from './routes/admin.ts';
import { agentRoutes } from './routes/agents.ts';
import { arrayRoutes } from './routes/arrays.ts';
import { clusterRoutes } from './routes/cluster.ts';
import { jobRoutes } from './routes/jobs.ts';
import { subscriptionRoutes } from './routes/notifications.ts';
import { opsRoutes } from './routes/ops.ts';
import { partitionRoutes } from './routes/partitions.ts';
import { reservationRoutes } from './routes/reservations.ts';
import { uiRoutes } from './routes/ui.ts';
import { usageRoutes } from './routes/usage.ts';
import { dashboardPages } from './ui/pages.tsx';

export type { AppEnv };

/** Writes that produce notification events: agent reports and registrations, cancels, requeues, drains. */
const NOTIFYING =
  /^\/api\/v1\/(agents\/(register|unregister|jobs\/[^/]+\/(started|finish))|jobs\/[^/]+\/(cancel|requeue)|workers\/[^/]+\/drain|subscriptions\/[^/]+\/deliveries\/[^/]+\/replay)$/;

/**
 * The control plane's HTTP surface: the same app on Node, on Workers and in tests (`app.request()`). The entry
 * gives it Swagger UI's files for /api/docs (without them the page's script and stylesheet are 404s).
 */
export function createApp(ctx: Context, options: { swaggerUi?: SwaggerUiAssets } = {}) {
  const app = new OpenAPIHono<AppEnv>();
  app.use(async (c, next) => {
    const given = c.req.header('x-request-id');
    c.set('requestId', given && /^[\x21-\x7e]{1,200}$/.test(given) ? given : crypto.randomUUID());
    await next();
    c.header('X-Request-Id', c.get('requestId'));
  });
  app.use(sameOriginGuard(ctx.config));
  app.use(
    '/api/*',
    bodyLimit({
      maxSize: 2 * 1024 * 1024,
      onError: (c) => errorResponse(c, 413, 'payload_too_large', 'The request body is larger than 2 MiB'),
    }),
  );
  // The web dashboard: public pages for browsers (they ask for a token themselves when the API wants one).
  app.route('/', dashboardPages());
  app.use(authMiddleware(ctx));
  // Right after a request that may have changed a job or a worker committed, send what it owes (the timer
  // on Node and the cron on Workers catch the rest).
  app.use('/api/v1/*', async (c, next) => {
    await next();
    if (c.req.method !== 'GET' && c.res.status < 400 && NOTIFYING.test(c.req.path)) ctx.kickNotifications();
  });
  app.route('/api/v1/jobs', jobRoutes(ctx));
  app.route('/api/v1/arrays', arrayRoutes(ctx));
  app.route('/api/v1/agents', agentRoutes(ctx));
  app.route('/api/v1/tokens', tokenRoutes(ctx));
  app.route('/api/v1/webhooks', webhookRoutes(ctx));
  app.route('/api/v1/partitions', partitionRoutes(ctx));
  app.route('/api/v1/accounts', accountRoutes(ctx));
  app.route('/api/v1/reservations', reservationRoutes(ctx));
  app.route('/api/v1/subscriptions', subscriptionRoutes(ctx));
  app.route('/api/v1/ui', uiRoutes(ctx));
  app.route('/api/v1/usage', usageRoutes(ctx));
  app.route('/api/v1', clusterRoutes(ctx));
  app.route('/', opsRoutes(ctx));
  app.route('/', apiDocsRoutes(options.swaggerUi));
  mountApiDocument(app);
  app.notFound((c) => errorResponse(c, 404, 'not_found', `No route for ${c.req.method} ${c.req.path}`));
  app.onError(createErrorHandler(ctx.logger));
  return app;
}
