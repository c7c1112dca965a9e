import { Hono } from 'hono';
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
import { parseBody, parseInput } from '../http/validate.ts';

/** Tokens (admin): create (the token is in the answer, once), list, revoke. */
export function tokenRoutes(ctx: Context) {
  return new Hono<AppEnv>()
    .post('/', async (c) => {
      const principal = c.get('principal');
      const created = await createToken(ctx.db, await parseBody(c, createTokenInput), principal);
      // Only the open cluster has an anonymous caller: this token is its first, and closes it.
      if (principal.kind !== 'anonymous') return c.json(created, 201);
      return c.json({ ...created, notice: OPEN_ACCESS_ENDED }, 201);
    })
    .get('/', async (c) =>
      c.json(await listTokens(ctx.db, parseInput(listTokensInput, c.req.query(), 'query'))),
    )
    .delete('/:id', async (c) => {
      const { id } = parseInput(tokenIdParam, c.req.param(), 'path');
      return c.json(await revokeToken(ctx.db, id, c.get('principal')));
    });
}

/** Webhooks: admin management, and deliveries (signed, no token) at POST /:name. */
export function webhookRoutes(ctx: Context) {
  return new Hono<AppEnv>()
    .post('/', async (c) =>
      c.json(await createWebhook(ctx.db, await parseBody(c, createWebhookInput), c.get('principal')), 201),
    )
    .get('/', async (c) => c.json(await listWebhooks(ctx.db)))
    .delete('/:name', async (c) => {
      const { name } = parseInput(webhookNameParam, c.req.param(), 'path');
      return c.json(await deleteWebhook(ctx.db, name, c.get('principal')));
    })
    .post('/:name', async (c) => {
      const { name } = parseInput(webhookNameParam, c.req.param(), 'path');
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
}
