import { Hono } from 'hono';
import type { Context } from '../domain/context.ts';
import {
  cancelJob,
  getJob,
  getJobOutput,
  listJobs,
  listJobsInput,
  submitJob,
  submitJobInput,
} from '../domain/jobs.ts';
import { jobIdParam } from '../http/agent-schemas.ts';
import { parseBody, parseInput } from '../http/validate.ts';

export function jobRoutes(ctx: Context) {
  const jobId = (params: Record<string, string>) => parseInput(jobIdParam, params, 'path').id;
  return new Hono()
    .post('/submit', async (c) => {
      const input = await parseBody(c, submitJobInput);
      return c.json(await submitJob(ctx, input), 201);
    })
    .get('/', async (c) => c.json(await listJobs(ctx.db, parseInput(listJobsInput, c.req.query(), 'query'))))
    .get('/:id', async (c) => c.json(await getJob(ctx.db, jobId(c.req.param()))))
    .post('/:id/cancel', async (c) => c.json(await cancelJob(ctx, jobId(c.req.param()))))
    .get('/:id/logs', async (c) => c.json(await getJobOutput(ctx.db, jobId(c.req.param()))));
}
