/**
 * Authentication and authorization: ONE middleware. It decides what a route needs from the table below,
 * asks the domain who the bearer token stands for (`authenticate`), and refuses with 401 (no or bad token)
 * or 403 (a token without the scope). Ownership (a token sees its owner's jobs; an agent acts only as the
 * workers it registered) is decided by the domain verbs, with the principal this middleware sets.
 */
import type { MiddlewareHandler } from 'hono';
import { authenticate, hasScope, type Principal, type TokenScope } from '../domain/auth.ts';
import type { Context } from '../domain/context.ts';
import { forbidden, unauthorized } from '../domain/errors.ts';

export type AppEnv = { Variables: { requestId: string; principal: Principal } };

/** `public`: no token (health); `signed`: the webhook's signature instead of a token; `any`: any non-agent token. */
export type Need = 'public' | 'signed' | 'any' | TokenScope;

const RULES: [method: string, path: RegExp, need: Need, what: string][] = [
  ['GET', /^\/api\/v1\/health$/, 'public', 'read health'],
  ['GET', /^\/api\/v1\/openapi\.json$/, 'public', 'read the API description'],
  ['GET', /^\/api\/docs$/, 'public', 'read the API reference'],
  ['GET', /^\/api\/docs\/assets\/[^/]+$/, 'public', 'read the API reference'],
  ['GET', /^\/metrics$/, 'admin', 'read metrics'],
  ['POST', /^\/api\/v1\/webhooks\/[^/]+$/, 'signed', 'deliver a webhook'],
  ['*', /^\/api\/v1\/agents(\/|$)/, 'agent', 'make agent calls'],
  ['POST', /^\/api\/v1\/jobs\/submit$/, 'jobs:write', 'submit jobs'],
  ['POST', /^\/api\/v1\/jobs\/batch$/, 'jobs:write', 'submit jobs'],
  ['POST', /^\/api\/v1\/jobs\/[^/]+\/cancel$/, 'jobs:write', 'cancel jobs'],
  ['POST', /^\/api\/v1\/jobs\/[^/]+\/(hold|release)$/, 'jobs:write', 'hold and release jobs'],
  ['POST', /^\/api\/v1\/jobs\/test$/, 'jobs:write', 'test submissions'],
  ['POST', /^\/api\/v1\/jobs\/[^/]+\/(requeue|signal)$/, 'jobs:write', 'requeue and signal jobs'],
  ['PATCH', /^\/api\/v1\/jobs\/[^/]+$/, 'jobs:write', 'update jobs'],
  ['GET', /^\/api\/v1\/jobs(\/|$)/, 'jobs:read', 'read jobs'],
  ['POST', /^\/api\/v1\/arrays\/[^/]+\/cancel$/, 'jobs:write', 'cancel jobs'],
  ['POST', /^\/api\/v1\/arrays\/[^/]+\/(hold|release)$/, 'jobs:write', 'hold and release jobs'],
  ['GET', /^\/api\/v1\/arrays(\/|$)/, 'jobs:read', 'read jobs'],
  ['GET', /^\/api\/v1\/dashboard$/, 'jobs:read', 'read the dashboard'],
  ['GET', /^\/api\/v1\/usage(\/|$)/, 'jobs:read', 'read usage reports'],
  ['GET', /^\/api\/v1\/fairshare$/, 'jobs:read', 'read fair-share'],
  ['*', /^\/api\/v1\/workers(\/|$)/, 'admin', 'see or drain workers'],
  ['GET', /^\/api\/v1\/partitions(\/|$)/, 'jobs:read', 'read partitions'],
  ['GET', /^\/api\/v1\/subscriptions(\/|$)/, 'jobs:read', 'read event subscriptions'],
  ['*', /^\/api\/v1\/subscriptions(\/|$)/, 'jobs:write', 'manage event subscriptions'],
  ['*', /^\/api\/v1\/partitions(\/|$)/, 'admin', 'manage partitions'],
  ['GET', /^\/api\/v1\/accounts(\/|$)/, 'jobs:read', 'read accounts'],
  ['*', /^\/api\/v1\/accounts(\/|$)/, 'admin', 'manage accounts'],
  ['GET', /^\/api\/v1\/reservations(\/|$)/, 'jobs:read', 'read reservations'],
  ['*', /^\/api\/v1\/reservations(\/|$)/, 'admin', 'manage reservations'],
  ['*', /^\/api\/v1\/tokens(\/|$)/, 'admin', 'manage tokens'],
  ['*', /^\/api\/v1\/webhooks(\/|$)/, 'admin', 'manage webhooks'],
  ['*', /^\/api\/v1\/audit(\/|$)/, 'admin', 'read the audit log'],
];

export function routeNeed(method: string, path: string): { need: Need; what: string } {
  for (const [m, pattern, need, what] of RULES) {
    if ((m === '*' || m === method || (m === 'GET' && method === 'HEAD')) && pattern.test(path)) {
      return { need, what };
    }
  }
  return { need: 'any', what: 'use this API' };
}

const BEARER = /^Bearer[ \t]+([A-Za-z0-9._~+/=-]{1,512})[ \t]*$/i;

/** The bearer token of a request; undefined when there is no Authorization header. */
export function bearerToken(header: string | undefined): string | undefined {
  if (header === undefined || header.trim() === '') return undefined;
  const match = BEARER.exec(header);
  if (!match) {
    throw unauthorized('invalid_authorization', 'The Authorization header must be "Bearer <token>"');
  }
  return match[1];
}

export function authMiddleware(ctx: Context): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    const { need, what } = routeNeed(c.req.method, c.req.path);
    if (need === 'public' || need === 'signed') return next();
    const principal = await authenticate({ ctx, token: bearerToken(c.req.header('authorization')) });
    c.set('principal', { ...principal, requestId: c.get('requestId') });
    if (need === 'any') {
      if (principal.scopes.every((s) => s === 'agent')) {
        throw forbidden('insufficient_scope', `An agent token can only make agent calls; it cannot ${what}`);
      }
    } else if (!hasScope(principal, need)) {
      const required =
        need === 'agent' ? 'an agent token' : `scope ${need}${need === 'admin' ? '' : ' (or admin)'}`;
      throw forbidden(
        'insufficient_scope',
        `This token (scope ${principal.scopes.join(', ')}) cannot ${what}: that needs ${required}`,
        { required: need, scopes: principal.scopes },
      );
    }
    return next();
  };
}
