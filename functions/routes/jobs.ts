import { Hono } from 'hono';
import { type SSEStreamingApi, streamSSE } from 'hono/streaming';
import type { Context } from '../domain/context.ts';
import { sha256Hex } from '../domain/crypto.ts';
import { ConductorError } from '../domain/errors.ts';
import { logsQuery, newSince, readOutput, type StreamName, streamView } from '../domain/job-logs.ts';
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
    .get('/:id/logs', async (c) => {
      const id = jobId(c.req.param());
      const options = parseInput(logsQuery, c.req.query(), 'query');
      const principal = c.get('principal');
      if (!options.follow) {
        const output = await getJobOutput(ctx.db, id, principal);
        return c.json({
          ...output,
          stdout: streamView(output.stdout, options.tail),
          stderr: streamView(output.stderr, options.tail),
        });
      }
      // Checked before the stream starts, so that a missing job is a plain 404.
      const first = await readOutput(ctx.db, id, principal);
      // The stream outlives the handler: as deferred work, so that the Workers entry keeps its database
      // connection open until the stream ends (and the Node server's close waits for it).
      let streamDone = () => {};
      ctx.defer(
        new Promise<void>((resolve) => {
          streamDone = resolve;
        }),
      );
      return streamSSE(c, async (stream) => {
        try {
          await followOutput(stream, first);
        } finally {
          streamDone();
        }
      });

      async function followOutput(stream: SSEStreamingApi, first: Awaited<ReturnType<typeof readOutput>>) {
        let aborted = false;
        stream.onAbort(() => {
          aborted = true;
        });
        const offsets: Record<StreamName, number> = { stdout: 0, stderr: 0 };
        // With tail=N a follower starts N bytes before the end of what is stored.
        if (options.tail !== undefined) {
          for (const name of ['stdout', 'stderr'] as const) {
            offsets[name] = Math.max(0, first.streams[name].bytes - options.tail);
          }
        }
        let snapshot = first;
        for (;;) {
          for (const name of ['stdout', 'stderr'] as const) {
            const text = newSince(snapshot.streams[name], offsets[name]);
            if (text !== '') await stream.writeSSE({ event: name, data: text });
            offsets[name] = Math.max(offsets[name], snapshot.streams[name].bytes);
          }
          if (snapshot.finished) {
            await stream.writeSSE({
              event: 'end',
              data: JSON.stringify({ state: snapshot.state, exit_code: snapshot.exit_code }),
            });
            return;
          }
          await stream.sleep(LOG_POLL_MS);
          if (aborted || c.req.raw.signal.aborted) return;
          snapshot = await readOutput(ctx.db, id, principal);
        }
      }
    });
}

/** How often a followed job's stored output is looked at. */
const LOG_POLL_MS = 500;
