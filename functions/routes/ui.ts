import { Hono } from 'hono';
import { z } from 'zod';
import { FINAL_STATES } from '../../db/schema.ts';
import { listAccounts } from '../domain/accounts.ts';
import { hasScope, type Principal } from '../domain/auth.ts';
import type { Context } from '../domain/context.ts';
import {
  getOverview,
  getUiWorker,
  listUiJobs,
  listUiWorkers,
  uiJobsInput,
  uiWorkersInput,
  utilizationInput,
  utilizationSeries,
} from '../domain/dashboard.ts';
import { forbidden } from '../domain/errors.ts';
import { explainJob, getJob, jobAttempts } from '../domain/jobs.ts';
import { liveFairShare } from '../domain/priority.ts';
import { reservationTimeline, reservationTimelineInput } from '../domain/reservation-timeline.ts';
import { usageCharts, usageChartsInput } from '../domain/usage-charts.ts';
import { workerIdParam } from '../http/agent-schemas.ts';
import type { AppEnv } from '../http/auth.ts';
import { parseInput } from '../http/validate.ts';
import {
  accountFormsFragment,
  accountsFragment,
  jobExplainFragment,
  jobFragment,
  jobsFragment,
  nodeFragment,
  nodesFragment,
  overviewFragment,
  reservationsFragment,
} from '../ui/fragments.tsx';

const jobIdParam = (id: string | undefined) => parseInput(uiJobIdInput, { id }, 'path').id;
const uiJobIdInput = z.strictObject({ id: z.coerce.number().int().positive().max(Number.MAX_SAFE_INTEGER) });

/** The query of a job list, without its page: what the link to older jobs keeps. */
function jobFilters(query: Record<string, string>) {
  const filters = new URLSearchParams();
  for (const key of ['state', 'q', 'array'] as const) if (query[key]) filters.set(key, query[key]);
  return filters;
}

/**
 * The web dashboard's reads (`/api/v1/ui/...`), scope `jobs:read` (or admin): JSON, and the views as HTML
 * fragments (`/fragments/...`) that the page's script swaps in. The auth middleware has already refused
 * requests without a (non-agent) token where tokens are required; this checks the scope.
 */
export function uiRoutes(ctx: Context) {
  const canDrain = (p: Principal) => hasScope(p, 'admin');
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
    .get('/workers', async (c) =>
      c.json(await listUiWorkers(ctx, parseInput(uiWorkersInput, c.req.query(), 'query'))),
    )
    .get('/utilization', async (c) =>
      c.json(await utilizationSeries(ctx, parseInput(utilizationInput, c.req.query(), 'query'))),
    )
    .get('/usage', async (c) =>
      c.json(await usageCharts(ctx, parseInput(usageChartsInput, c.req.query(), 'query'))),
    )
    .get('/fragments/overview', async (c) =>
      c.html(
        overviewFragment(await getOverview(ctx), new URL(c.req.url).origin, canDrain(c.get('principal'))),
      ),
    )
    .get('/fragments/jobs', async (c) => {
      const query = c.req.query();
      const page = await listUiJobs(ctx, parseInput(uiJobsInput, query, 'query'), c.get('principal'));
      return c.html(jobsFragment(page, jobFilters(query)));
    })
    .get('/fragments/jobs/:id', async (c) => {
      const principal = c.get('principal');
      const job = await getJob(ctx.db, jobIdParam(c.req.param('id')), principal);
      const canCancel = hasScope(principal, 'jobs:write') && !FINAL_STATES.includes(job.state);
      return c.html(jobFragment(job, canCancel, await jobAttempts(ctx.db, job)));
    })
    .get('/fragments/jobs/:id/explain', async (c) => {
      const principal = c.get('principal');
      const id = jobIdParam(c.req.param('id'));
      const job = await getJob(ctx.db, id, principal);
      return c.html(
        jobExplainFragment(job.state === 'PENDING' ? await explainJob(ctx, id, principal) : null),
      );
    })
    .get('/fragments/nodes', async (c) => {
      const page = await listUiWorkers(ctx, parseInput(uiWorkersInput, c.req.query(), 'query'));
      return c.html(nodesFragment(page, canDrain(c.get('principal'))));
    })
    .get('/fragments/nodes/:id', async (c) => {
      const { id } = parseInput(workerIdParam, c.req.param(), 'path');
      const principal = c.get('principal');
      return c.html(nodeFragment(await getUiWorker(ctx, id, principal), canDrain(principal)));
    })
    .get('/fragments/reservations', async (c) =>
      c.html(
        reservationsFragment(
          await reservationTimeline(ctx, parseInput(reservationTimelineInput, c.req.query(), 'query')),
        ),
      ),
    )
    .get('/fragments/accounts', async (c) => {
      const [accounts, fairshare] = await Promise.all([listAccounts(ctx), liveFairShare(ctx)]);
      return c.html(accountsFragment(accounts, fairshare, hasScope(c.get('principal'), 'admin')));
    })
    .get('/fragments/accounts/forms', async (c) =>
      c.html(accountFormsFragment(await listAccounts(ctx), hasScope(c.get('principal'), 'admin'))),
    );
}
