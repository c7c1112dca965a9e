import { Hono } from 'hono';
import { hasScope } from '../domain/auth.ts';
import type { Context } from '../domain/context.ts';
import {
  listUiJobs,
  listUiWorkers,
  uiJobsInput,
  utilizationInput,
  utilizationSeries,
} from '../domain/dashboard.ts';
import { forbidden } from '../domain/errors.ts';
import type { AppEnv } from '../http/auth.ts';
import { parseInput } from '../http/validate.ts';

/**
 * Read-only JSON for the web dashboard (`/api/v1/ui/...`), scope `jobs:read` (or admin). The auth middleware
 * has already refused requests without a (non-agent) token where tokens are required; this checks the scope.
 */
export function uiRoutes(ctx: Context) {
  return new Hono<AppEnv>()
    .use(async (c, next) => {
      const principal = c.get('principal');
      if (!hasScope(principal, 'jobs:read')) {
        throw forbidden(
          'insufficient_scope',
          `This token (scope ${principal.scopes.join(', ')}) cannot read the dashboard: that needs scope jobs:read (or admin)`,
          { required: 'jobs:read', scopes: principal.scopes },
        );
      }
      await next();
    })
    .get('/jobs', async (c) =>
      c.json(await listUiJobs(ctx, parseInput(uiJobsInput, c.req.query(), 'query'), c.get('principal'))),
    )
    .get('/workers', async (c) => c.json(await listUiWorkers(ctx)))
    .get('/utilization', async (c) =>
      c.json(await utilizationSeries(ctx, parseInput(utilizationInput, c.req.query(), 'query'))),
    );
}
