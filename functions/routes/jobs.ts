import { Hono } from 'hono';
import type { Context } from '../domain/context.ts';
import { sha256Hex } from '../domain/crypto.ts';
import { ConductorError } from '../domain/errors.ts';
import {
  cancelJob,
  canonicalJson,
  getJob,
  getJobOutput,
  IDEMPOTENCY_KEY,
  IDEMPOTENCY_TTL_SECONDS,
  listJobs,
  listJobsInput,
  submitJobInput,
  submitJobOnce,
} from '../domain/jobs.ts';
import { limitSubmissions } from '../domain/rate-limit.ts';
import { jobIdParam } from '../http/agent-schemas.ts';
import type { AppEnv } from '../http/auth.ts';
import { parseBody, parseInput } from '../http/validate.ts';

export function jobRoutes(ctx: Context) {
  const jobId = (params: Record<string, string>) => parseInput(jobIdParam, params, 'path').id;
  return new Hono<AppEnv>()
    .post('/submit', async (c) => {
      const caller = c.get('principal');
      const idempotencyKey = c.req.header('idempotency-key');
      if (idempotencyKey !== undefined && !IDEMPOTENCY_KEY.test(idempotencyKey)) {
        throw new ConductorError(
          'invalid',
          'invalid_idempotency_key',
          'Idempotency-Key must be 1 to 255 printable ASCII characters (a UUID, say)',
        );
      }
      await limitSubmissions(ctx, caller.tokenId === null ? 'anonymous' : `token:${caller.tokenId}`);
      const input = await parseBody(c, submitJobInput);
      const scope = caller.tokenId === null ? 'anonymous' : `token:${caller.tokenId}`;
      const { job, duplicate } = await submitJobOnce(ctx, input, {
        caller,
        ...(idempotencyKey === undefined
          ? {}
          : {
              keys: [
                { scope, key: idempotencyKey, ttlSeconds: IDEMPOTENCY_TTL_SECONDS, label: 'Idempotency-Key' },
              ],
              requestHash: await sha256Hex(canonicalJson(input)),
              audit: { idempotency_key: idempotencyKey },
            }),
      });
      if (duplicate) c.header('Idempotent-Replayed', 'true');
      return c.json(job, 201);
    })
    .get('/', async (c) =>
      c.json(await listJobs(ctx.db, parseInput(listJobsInput, c.req.query(), 'query'), c.get('principal'))),
    )
    .get('/:id', async (c) => c.json(await getJob(ctx.db, jobId(c.req.param()), c.get('principal'))))
    .post('/:id/cancel', async (c) => c.json(await cancelJob(ctx, jobId(c.req.param()), c.get('principal'))))
    .get('/:id/logs', async (c) =>
      c.json(await getJobOutput(ctx.db, jobId(c.req.param()), c.get('principal'))),
    );
}
