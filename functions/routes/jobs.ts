import { OpenAPIHono, z } from '@hono/zod-openapi';
import type { Context as HonoContext } from 'hono';
import { type SSEStreamingApi, streamSSE } from 'hono/streaming';
import type { Context } from '../domain/context.ts';
import { sha256Hex } from '../domain/crypto.ts';
import { ConductorError, invalid } from '../domain/errors.ts';
import {
  logsQuery,
  newSince,
  readOutput,
  readOutputProgress,
  readOutputSince,
  type StreamName,
  streamView,
} from '../domain/job-logs.ts';
import {
  cancelJob,
  canonicalJson,
  explainJob,
  getJob,
  holdJob,
  IDEMPOTENCY_KEY,
  IDEMPOTENCY_TTL_SECONDS,
  jobAttempts,
  jobPrioritiesInput,
  listJobs,
  listJobsInput,
  releaseJob,
  requeueJob,
  requeueJobInput,
  type SubmitJobInput,
  signalJob,
  signalJobInput,
  submitBatchEnvelope,
  submitBatchInput,
  submitJobInput,
  submitJobOnce,
  submitJobsBatch,
  testSubmission,
  updateJob,
  updateJobInput,
} from '../domain/jobs.ts';
import { mailWarning } from '../domain/notifications.ts';
import { listJobPriorities } from '../domain/priority.ts';
import { limitSubmissions } from '../domain/rate-limit.ts';
import { jobIdParam } from '../http/agent-schemas.ts';
import type { AppEnv } from '../http/auth.ts';
import {
  jobBatchSchema,
  jobExplanationSchema,
  jobListSchema,
  jobPrioritiesSchema,
  jobSchema,
  jobTestSchema,
  logsSchema,
} from '../http/responses.ts';
import { mount, type RouteSpec } from '../http/route.ts';
import { issueMessage, parseBody } from '../http/validate.ts';

export function jobRoutes(ctx: Context) {
  const app = new OpenAPIHono<AppEnv>();
  mount(app, submitJob, async (c, { body }) => {
    const caller = c.get('principal');
    const idempotencyKey = idempotencyKeyHeader(c.req.header('idempotency-key'));
    const scope = submitterScope(caller);
    await limitSubmissions(ctx, scope);
    const input = await body();
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
    const warning = mailWarning(ctx, input.mail_type);
    if (warning) c.header('Conductor-Warning', warning);
    return c.json(job, 201);
  });
  mount(app, submitBatch, async (c) => {
    const caller = c.get('principal');
    const idempotencyKey = idempotencyKeyHeader(c.req.header('idempotency-key'));
    // The whole batch is checked before anything is counted or stored: one bad job refuses all of them.
    const envelope = await parseBatchBody(c);
    const inputs = parseBatchJobs(envelope.jobs);
    const scope = submitterScope(caller);
    await limitSubmissions(ctx, scope, inputs.length);
    const { jobs, duplicate } = await submitJobsBatch(ctx, inputs, {
      caller,
      ...(idempotencyKey === undefined
        ? {}
        : {
            idempotency: {
              scope,
              key: idempotencyKey,
              requestHash: await sha256Hex(canonicalJson({ batch: inputs })),
            },
          }),
    });
    if (duplicate) c.header('Idempotent-Replayed', 'true');
    const warning = inputs.map((i) => mailWarning(ctx, i.mail_type)).find((w) => w !== null);
    if (warning) c.header('Conductor-Warning', warning);
    return c.json({ jobs }, 201);
  });
  mount(app, testJobRoute, async (c, { body }) =>
    c.json(await testSubmission(ctx, await body(), c.get('principal'))),
  );
  mount(app, updateJobRoute, async (c, { params, body }) =>
    c.json(await updateJob(ctx, params.id, await body(), c.get('principal'))),
  );
  mount(app, requeueJobRoute, async (c, { params, body }) =>
    c.json(await requeueJob(ctx, params.id, await body(), c.get('principal'))),
  );
  mount(app, signalJobRoute, async (c, { params, body }) =>
    c.json(await signalJob(ctx, params.id, await body(), c.get('principal'))),
  );
  mount(app, listJobsRoute, async (c, { query }) =>
    c.json(await listJobs(ctx.db, query, c.get('principal'))),
  );
  // Before /{id}, which would take `priority` for a job id.
  mount(app, jobPrioritiesRoute, async (c, { query }) =>
    c.json(await listJobPriorities(ctx, query, c.get('principal'))),
  );
  mount(app, getJobRoute, async (c, { params }) => {
    const job = await getJob(ctx.db, params.id, c.get('principal'));
    return c.json({ ...job, attempts: await jobAttempts(ctx.db, job) });
  });
  mount(app, cancelJobRoute, async (c, { params }) =>
    c.json(await cancelJob(ctx, params.id, c.get('principal'))),
  );
  mount(app, holdJobRoute, async (c, { params }) =>
    c.json(await holdJob(ctx, params.id, c.get('principal'))),
  );
  mount(app, releaseJobRoute, async (c, { params }) =>
    c.json(await releaseJob(ctx, params.id, c.get('principal'))),
  );
  mount(app, explainJobRoute, async (c, { params }) =>
    c.json(await explainJob(ctx, params.id, c.get('principal'))),
  );
  mount(app, jobLogs, async (c, { params, query: options }) => {
    const { id } = params;
    const principal = c.get('principal');
    const retentionDays = ctx.config.logRetentionDays;
    if (!options.follow) {
      const output = await readOutput(ctx.db, id, principal, retentionDays);
      return c.json({
        job_id: id,
        state: output.state,
        stdout: streamView(output.streams.stdout, options.tail),
        stderr: streamView(output.streams.stderr, options.tail),
      });
    }
    // A reconnecting client (EventSource does it by itself) says where it got to: the id of the last event.
    const resumeFrom = parseLastEventId(c.req.header('last-event-id'));
    // Checked before the stream starts, so that a missing job is a plain 404 (and expired output a 410).
    const first = await readOutputProgress(ctx.db, id, principal, retentionDays);
    const releaseFollower = followers.enter(id, principal.tokenId, ctx.config);
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
        releaseFollower();
        streamDone();
      }
    });

    async function followOutput(
      stream: SSEStreamingApi,
      first: Awaited<ReturnType<typeof readOutputProgress>>,
    ) {
      let aborted = false;
      stream.onAbort(() => {
        aborted = true;
      });
      const gone = () => aborted || c.req.raw.signal.aborted;
      const keepAliveMs =
        ctx.config.logKeepAliveMs > 0 ? ctx.config.logKeepAliveMs : Number.POSITIVE_INFINITY;
      let lastSent = Date.now();
      const offsets: Record<StreamName, number> = { stdout: 0, stderr: 0 };
      // Output belongs to an attempt: a job run again (requeued) starts its streams from zero.
      let attempt = first.attempt;
      if (resumeFrom) {
        if (resumeFrom.attempt === undefined || resumeFrom.attempt === attempt) {
          offsets.stdout = resumeFrom.stdout;
          offsets.stderr = resumeFrom.stderr;
        } else {
          await stream.writeSSE({ event: 'attempt', data: JSON.stringify({ attempt }) });
        }
      } else if (options.tail !== undefined) {
        // With tail=N a follower starts N bytes before the end of what is stored.
        for (const name of ['stdout', 'stderr'] as const) {
          offsets[name] = Math.max(0, first.streams[name].bytes - options.tail);
        }
      }
      // Every event's id is where the follower then is: `<attempt>:<stdout bytes>-<stderr bytes>`.
      const eventId = () => `${attempt}:${offsets.stdout}-${offsets.stderr}`;
      let snapshot = first;
      for (;;) {
        if (snapshot.attempt !== attempt) {
          attempt = snapshot.attempt;
          offsets.stdout = 0;
          offsets.stderr = 0;
          await stream.writeSSE({ event: 'attempt', data: JSON.stringify({ attempt }), id: eventId() });
          lastSent = Date.now();
        }
        for (const name of ['stdout', 'stderr'] as const) {
          // Only a stream that grew is read, and only its newest chunks.
          if (snapshot.streams[name].bytes <= offsets[name]) continue;
          const since = await readOutputSince(ctx.db, id, attempt, name, offsets[name]);
          if (!since) continue;
          const text = newSince(since, offsets[name]);
          offsets[name] = Math.max(offsets[name], since.bytes);
          if (text !== '') {
            const data = options.encoding === 'json' ? JSON.stringify(text) : text;
            await stream.writeSSE({ event: name, data, id: eventId() });
            lastSent = Date.now();
          }
        }
        if (snapshot.finished) {
          await stream.writeSSE({
            event: 'end',
            data: JSON.stringify({ state: snapshot.state, exit_code: snapshot.exit_code }),
            id: eventId(),
          });
          return;
        }
        // Wait for the next poll; a silent stream gets a comment line now and then, so that proxies and
        // clients do not take it for a dead connection.
        const pollAt = Date.now() + LOG_POLL_MS;
        while (Date.now() < pollAt) {
          await stream.sleep(Math.max(1, Math.min(pollAt, lastSent + keepAliveMs) - Date.now()));
          if (gone()) return;
          if (Date.now() - lastSent >= keepAliveMs) {
            await stream.write(': keep-alive\n\n');
            lastSent = Date.now();
          }
        }
        snapshot = await readOutputProgress(ctx.db, id, principal);
      }
    }
  });
  return app;
}

const idempotencyKeyHeaderSchema = z.object({
  'idempotency-key': z.string().optional().openapi({
    description:
      '1 to 255 printable ASCII characters (a UUID, say): a retry with the same key returns the first answer (Idempotent-Replayed: true)',
  }),
});
const replayed = {
  'Idempotent-Replayed': '`true` when this answers a retry with the same Idempotency-Key',
  'Conductor-Warning': 'Set when mail_type was accepted but no mail will be sent (no SMTP server configured)',
};
const EXAMPLE_JOB: z.infer<typeof jobSchema> = {
  id: 42,
  name: 'train',
  state: 'PENDING',
  cpus: 8,
  exit_code: null,
  node: null,
  account: 'ml',
  partition: 'batch',
  time_limit: 120,
  work_dir: null,
  priority: 0,
  computed_priority: 11000,
  requeue: true,
  attempt: 0,
  reason: 'Resources',
  reason_detail: 'needs 8 CPUs, 1 a100 GPUs; gpu01 has 0 of 1 a100 GPUs free',
  cancel_requested: false,
  owner: 'team-a',
  memory_mb: 16384,
  memory_per_cpu: 2048,
  submit_dir: '/home/alice/runs',
  submit_host: 'login01',
  ntasks: 2,
  cpus_per_task: 4,
  gpus: 1,
  gpu_type: 'a100',
  gres: {},
  constraint: null,
  exclusive: false,
  nodelist: null,
  exclude: [],
  held: null,
  allocated_gpus: null,
  qos: null,
  begin_time: null,
  eligible_time: '2025-11-11T10:00:00.000Z',
  stdout: 'train-%j.out',
  stderr: null,
  stdin: null,
  open_mode: null,
  export_env: 'ALL',
  signal: { signal: 'USR1', before_s: 60, batch_only: true },
  comment: null,
  max_rss_kb: null,
  cancelled_by: null,
  requeues: 0,
  dependency: null,
  kill_on_invalid_dep: false,
  max_requeues: null,
  retry_on_failure: null,
  retry_backoff_s: null,
  crash_limit: null,
  crashes: 0,
  mail_type: null,
  mail_user: null,
  array_job_id: null,
  array_task_id: null,
  slurm_id: '42',
  reservation: null,
  planned_start_time: null,
  submit_time: '2025-11-11T10:00:00.000Z',
  start_time: null,
  end_time: null,
};
const rateLimited =
  'Over the submission rate limit (rate_limited): Retry-After says when to retry; nothing stored';
const idempotencyConflict = 'Idempotency-Key reused with another body (idempotency_key_reused)';

const submitJob = {
  method: 'post',
  path: '/submit',
  operationId: 'submitJob',
  summary: 'Submit a job',
  description:
    'The minimal body is a script and a CPU count. An Idempotency-Key header makes retries return the first job.',
  tag: 'jobs',
  access: 'jobs:write',
  headers: idempotencyKeyHeaderSchema,
  body: submitJobInput,
  bodyExample: {
    script: 'python3 train.py',
    cpus: 8,
    name: 'train',
    account: 'ml',
    partition: 'batch',
    time_limit: '2:00:00',
    environment: { EPOCHS: '10' },
    requeue: true,
  },
  responses: {
    201: { description: 'The job', schema: jobSchema, example: EXAMPLE_JOB, headers: replayed },
  },
  refusals: { 422: idempotencyConflict, 429: rateLimited },
} satisfies RouteSpec<undefined, undefined, typeof submitJobInput>;

const submitBatch = {
  method: 'post',
  path: '/batch',
  operationId: 'submitJobBatch',
  summary: 'Submit 1 to 1000 jobs at once: all or none',
  description:
    'Each job is like a /submit body. All are stored, in request order (ascending ids), in one atomic statement, or none: ' +
    'a bad job refuses the batch with a 400 naming jobs[k].field. Counts as N submissions against the rate limit ' +
    '(a batch larger than CONDUCTOR_SUBMIT_BURST is a 400 `batch_exceeds_burst`). With an Idempotency-Key, a retry of ' +
    'the same batch returns the first one; the same key with another body is a 422.',
  tag: 'jobs',
  access: 'jobs:write',
  headers: idempotencyKeyHeaderSchema,
  body: submitBatchInput,
  bodyExample: {
    jobs: [
      { script: 'python3 train.py --fold 1', cpus: 8, name: 'fold-1' },
      { script: 'python3 train.py --fold 2', cpus: 8, name: 'fold-2', time_limit: '2:00:00' },
    ],
  },
  responses: {
    201: {
      description: 'The jobs, in request order',
      schema: jobBatchSchema,
      example: {
        jobs: [
          { ...EXAMPLE_JOB, name: 'fold-1' },
          { ...EXAMPLE_JOB, id: 43, name: 'fold-2' },
        ],
      },
      headers: replayed,
    },
  },
  refusals: {
    400: 'Invalid request, nothing stored: the message names each offending jobs[k].field',
    422: idempotencyConflict,
    429: rateLimited,
  },
} satisfies RouteSpec<undefined, undefined, typeof submitBatchInput>;

const listJobsRoute = {
  method: 'get',
  path: '/',
  operationId: 'listJobs',
  summary:
    'List jobs, newest first (order=asc: oldest first), filtered by ids, name, owner, account, partition, node or time',
  tag: 'jobs',
  access: 'jobs:read',
  query: listJobsInput,
  responses: { 200: { description: 'A page of jobs', schema: jobListSchema } },
} satisfies RouteSpec<undefined, typeof listJobsInput, undefined>;

const jobPrioritiesRoute = {
  method: 'get',
  path: '/priority',
  operationId: 'listJobPriorities',
  summary: 'Pending jobs’ priorities and the factors they come from (Slurm’s sprio), highest first',
  description:
    'priority = Σ weight × factor (age, fairshare, jobsize, partition, qos; each factor from 0 to 1) + the submitter’s priority (shown as NICE, negated). Factors as the last computation left them (at submit, then every CONDUCTOR_PRIORITY_CALC_PERIOD). Filters: ids, owner, partition (comma lists).',
  tag: 'jobs',
  access: 'jobs:read',
  query: jobPrioritiesInput,
  responses: { 200: { description: 'The pending jobs’ priorities', schema: jobPrioritiesSchema } },
} satisfies RouteSpec<undefined, typeof jobPrioritiesInput, undefined>;

const getJobRoute = {
  method: 'get',
  path: '/{id}',
  operationId: 'getJob',
  summary: 'One job, with its script, environment and attempts',
  description:
    'attempts: every run of the job on a node, first to last (node, start and end, how it ended, exit code, reason, whether it was requeued after), as sacct --duplicates shows them; the current one while it runs.',
  tag: 'jobs',
  access: 'jobs:read',
  params: jobIdParam,
  responses: { 200: { description: 'The job', schema: jobSchema } },
  refusals: { 404: 'No such job, or not this token’s owner’s (job_not_found)' },
} satisfies RouteSpec<typeof jobIdParam, undefined, undefined>;

const cancelJobRoute = {
  method: 'post',
  path: '/{id}/cancel',
  operationId: 'cancelJob',
  summary: 'Cancel a job',
  tag: 'jobs',
  access: 'jobs:write',
  params: jobIdParam,
  responses: { 200: { description: 'The job after the cancel', schema: jobSchema } },
  refusals: {
    404: 'No such job, or not this token’s owner’s (job_not_found)',
    409: 'The job already ended (job_finished)',
  },
} satisfies RouteSpec<typeof jobIdParam, undefined, undefined>;

const holdJobRoute = {
  method: 'post',
  path: '/{id}/hold',
  operationId: 'holdJob',
  summary: 'Hold a pending job (Slurm’s scontrol hold): it is not placed until released',
  description:
    'The owner’s hold shows as JobHeldUser; an admin’s as JobHeldAdmin, which only an admin can release.',
  tag: 'jobs',
  access: 'jobs:write',
  params: jobIdParam,
  responses: { 200: { description: 'The held job', schema: jobSchema } },
  refusals: {
    404: 'No such job, or not this token’s owner’s (job_not_found)',
    409: 'The job is not pending (job_not_pending)',
  },
} satisfies RouteSpec<typeof jobIdParam, undefined, undefined>;

const testJobRoute = {
  method: 'post',
  path: '/test',
  operationId: 'testJob',
  summary: 'Check a submission without storing it (sbatch --test-only)',
  description:
    'The body is a /submit body, checked exactly as a submission (the same 400s and 403s); nothing is stored. ' +
    'The answer names a live node that could start it now, or why it would wait.',
  tag: 'jobs',
  access: 'jobs:write',
  body: submitJobInput,
  bodyExample: { script: 'python3 train.py', cpus: 8, partition: 'batch' },
  responses: {
    200: {
      description: 'It would be accepted',
      schema: jobTestSchema,
      example: { ok: true, node: 'node-01', partition: 'batch', cpus: 8, start: 'now', reason: null },
    },
  },
} satisfies RouteSpec<undefined, undefined, typeof submitJobInput>;

const updateJobRoute = {
  method: 'patch',
  path: '/{id}',
  operationId: 'updateJob',
  summary: 'Change a job (scontrol update): time limit, partition, name, comment, QOS',
  description:
    'As in Slurm, only an admin may raise a time limit (403 time_limit_not_allowed); the partition changes only ' +
    'while the job is pending, into partitions that admit it (400 invalid_partition, partition_refuses_job).',
  tag: 'jobs',
  access: 'jobs:write',
  params: jobIdParam,
  body: updateJobInput,
  bodyExample: { time_limit: 30, comment: 'rerun with fewer epochs' },
  responses: { 200: { description: 'The job after the change', schema: jobSchema } },
  refusals: {
    404: 'No such job, or not this token’s owner’s (job_not_found)',
    409: 'The job ended (job_finished), or a partition change for a job that is not pending (job_not_pending)',
  },
} satisfies RouteSpec<typeof jobIdParam, undefined, typeof updateJobInput>;

const requeueJobRoute = {
  method: 'post',
  path: '/{id}/requeue',
  operationId: 'requeueJob',
  summary: 'Put a job back in the queue (scontrol requeue; with hold: requeuehold)',
  description:
    'A running job is stopped on its node and pending again at once (its allocation released; the attempt it ran ' +
    'is fenced); an ended job is pending again. It runs again as the next attempt.',
  tag: 'jobs',
  access: 'jobs:write',
  params: jobIdParam,
  body: requeueJobInput,
  bodyExample: { hold: false },
  responses: { 200: { description: 'The requeued job', schema: jobSchema } },
  refusals: {
    404: 'No such job, or not this token’s owner’s (job_not_found)',
    409: 'The job is pending already (job_pending), or being cancelled (cancel_requested)',
  },
} satisfies RouteSpec<typeof jobIdParam, undefined, typeof requeueJobInput>;

const signalJobRoute = {
  method: 'post',
  path: '/{id}/signal',
  operationId: 'signalJob',
  summary: 'Send a signal to a running job (scancel --signal)',
  description:
    'The signal (USR1, SIGUSR1, TERM or a number 1 to 64) reaches its agent with its next heartbeat or claim, once; ' +
    'batch_only: the batch shell only, else every process of the job.',
  tag: 'jobs',
  access: 'jobs:write',
  params: jobIdParam,
  body: signalJobInput,
  bodyExample: { signal: 'USR1' },
  responses: { 200: { description: 'The job', schema: jobSchema } },
  refusals: {
    404: 'No such job, or not this token’s owner’s (job_not_found)',
    409: 'The job is not running (job_not_running), or too many signals wait (too_many_signals)',
  },
} satisfies RouteSpec<typeof jobIdParam, undefined, typeof signalJobInput>;

const releaseJobRoute = {
  method: 'post',
  path: '/{id}/release',
  operationId: 'releaseJob',
  summary: 'Release a held job (Slurm’s scontrol release)',
  tag: 'jobs',
  access: 'jobs:write',
  params: jobIdParam,
  responses: { 200: { description: 'The released job', schema: jobSchema } },
  refusals: {
    404: 'No such job, or not this token’s owner’s (job_not_found)',
    409: 'The job is not pending, or not held (job_not_pending, job_not_held)',
  },
} satisfies RouteSpec<typeof jobIdParam, undefined, undefined>;

const explainJobRoute = {
  method: 'get',
  path: '/{id}/explain',
  operationId: 'explainJob',
  summary: 'Why a job waits, node by node',
  description:
    'For every known node (live or not): whether the job could start there now, and what stops it (partition, node list, features, sizes, free resources, reservations).',
  tag: 'jobs',
  access: 'jobs:read',
  params: jobIdParam,
  responses: {
    200: { description: 'The job’s reason and a verdict per node', schema: jobExplanationSchema },
  },
  refusals: { 404: 'No such job, or not this token’s owner’s (job_not_found)' },
} satisfies RouteSpec<typeof jobIdParam, undefined, undefined>;

const jobLogs = {
  method: 'get',
  path: '/{id}/logs',
  operationId: 'getJobLogs',
  summary: 'A job’s captured output, or a live stream of it (follow=1)',
  description:
    'The last 1 MiB per stream (truncated ones begin with a marker line); tail=N: the last N bytes. ' +
    'follow=1: Server-Sent Events `stdout`/`stderr` (the new text) until the job ends, then `end` ({state, exit_code}); ' +
    "encoding=json: each stdout/stderr event's data is a JSON string, byte-exact (plain SSE text cannot carry a " +
    'carriage return: `\\r` and `\\r\\n` arrive as line breaks); every event has the id `<attempt>:<stdout bytes>-<stderr bytes>` ' +
    "(where the follower then is; a requeued job's next run sends `attempt` and starts anew), a reconnect with the " +
    'header `Last-Event-ID: <id>` resumes right after it (tail is then ignored), and a silent stream gets a ' +
    '`: keep-alive` comment line every 15 s. Output is kept CONDUCTOR_LOG_RETENTION_DAYS (default 30) days after ' +
    'the job ended; once deleted, 410 `logs_expired`.',
  tag: 'jobs',
  access: 'jobs:read',
  params: jobIdParam,
  query: logsQuery,
  headers: z.object({
    'last-event-id': z.string().optional().openapi({
      description:
        'With follow=1: the id of the last event received (`<attempt>:<stdout bytes>-<stderr bytes>`)',
    }),
  }),
  responses: {
    200: {
      description: 'The output (JSON), or with follow=1 an event stream (text/event-stream)',
      schema: logsSchema,
    },
  },
  refusals: {
    404: 'No such job, or not this token’s owner’s (job_not_found)',
    410: 'The job ended more than CONDUCTOR_LOG_RETENTION_DAYS days ago and its output was deleted (logs_expired)',
    429: 'Too many live-log followers of this job or of this token (too_many_followers); Retry-After: 5',
  },
} satisfies RouteSpec<typeof jobIdParam, typeof logsQuery, undefined>;

/**
 * A batch body's envelope (`{jobs: [...]}`). NUL characters and broken Unicode are refused wherever they are,
 * as for /submit, with the job named as `jobs[k]`.
 */
const parseBatchBody = (c: HonoContext) =>
  parseBody(c, submitBatchEnvelope, {
    path: (path) => path.replace(/^jobs\.(\d+)(?=\.|$)/, 'jobs[$1]'),
    note: ' (nothing of the batch was stored)',
  });

/** How many issues a refused batch lists (message and details alike). */
const MAX_BATCH_ISSUES = 20;

/**
 * Checks every job of a batch envelope with `submitJobInput`; throws ONE 400 whose message names each
 * offending `jobs[k].field` (the first MAX_BATCH_ISSUES of them), so that nothing of the batch is stored.
 */
function parseBatchJobs(jobs: readonly unknown[]): SubmitJobInput[] {
  const parsed: SubmitJobInput[] = [];
  const issues: { path: string; message: string; index: number }[] = [];
  let total = 0;
  jobs.forEach((job, index) => {
    const result = submitJobInput.safeParse(job);
    if (result.success) {
      parsed.push(result.data);
      return;
    }
    for (const issue of result.error.issues) {
      total++;
      if (issues.length >= MAX_BATCH_ISSUES) continue;
      const field = issue.path.map(String).join('.');
      const message = issueMessage(issue);
      issues.push({ path: field ? `jobs[${index}].${field}` : `jobs[${index}]`, message, index });
    }
  });
  if (total === 0) return parsed;
  const more = total > issues.length ? `; and ${total - issues.length} more` : '';
  throw new ConductorError(
    'invalid',
    'invalid_request',
    `Invalid body: ${issues.map((i) => `${i.path}: ${i.message}`).join('; ')}${more} (nothing of the batch was stored)`,
    { issues, invalid_jobs: new Set(issues.map((i) => i.index)).size },
  );
}

/** The Idempotency-Key header, checked; undefined when absent. */
function idempotencyKeyHeader(value: string | undefined): string | undefined {
  if (value !== undefined && !IDEMPOTENCY_KEY.test(value)) {
    throw new ConductorError(
      'invalid',
      'invalid_idempotency_key',
      'Idempotency-Key must be 1 to 255 printable ASCII characters (a UUID, say)',
    );
  }
  return value;
}

/** Whose submissions these are, for rate limits and idempotency keys. */
const submitterScope = (caller: { tokenId: number | null }) =>
  caller.tokenId === null ? 'anonymous' : `token:${caller.tokenId}`;

/**
 * `Last-Event-ID: <attempt>:<stdout bytes>-<stderr bytes>` (the id of the last event a follower got; the
 * attempt may be left out) as stream offsets; undefined when absent.
 */
function parseLastEventId(
  header: string | undefined,
): { attempt: number | undefined; stdout: number; stderr: number } | undefined {
  if (header === undefined || header.trim() === '') return undefined;
  const m = /^(?:(\d{1,9}):)?(\d{1,15})-(\d{1,15})$/.exec(header.trim());
  if (!m) {
    throw invalid(
      'invalid_last_event_id',
      'Last-Event-ID must be the id of an event of this stream: <attempt>:<stdout bytes>-<stderr bytes>, e.g. 1:1024-0',
    );
  }
  return {
    attempt: m[1] === undefined ? undefined : Number(m[1]),
    stdout: Number(m[2]),
    stderr: Number(m[3]),
  };
}

/** How often a followed job's stored output is looked at. */
const LOG_POLL_MS = 500;

/**
 * Live-log followers (open SSE streams) per job and per token, counted in this process (on Workers: in this
 * isolate, so the limits hold per isolate). Over a limit, a new follower is refused with a 429.
 */
class FollowerLimits {
  private readonly perJob = new Map<number, number>();
  private readonly perToken = new Map<string, number>();

  /** Counts a follower in, or throws a 429; the function returned counts it out (once). */
  enter(
    jobId: number,
    tokenId: number | null,
    limits: { logFollowersPerJob: number; logFollowersPerToken: number },
  ): () => void {
    const token = tokenId === null ? 'anonymous' : `token:${tokenId}`;
    const onJob = this.perJob.get(jobId) ?? 0;
    const ofToken = this.perToken.get(token) ?? 0;
    if (limits.logFollowersPerJob > 0 && onJob >= limits.logFollowersPerJob) {
      throw tooManyFollowers(
        `Job ${jobId} already has ${onJob} live-log followers, the most allowed (CONDUCTOR_LOG_FOLLOWERS_PER_JOB); read the logs without follow=1, or try again later`,
      );
    }
    if (limits.logFollowersPerToken > 0 && ofToken >= limits.logFollowersPerToken) {
      throw tooManyFollowers(
        `This token already follows ${ofToken} live logs, the most allowed (CONDUCTOR_LOG_FOLLOWERS_PER_TOKEN); close one, or try again later`,
      );
    }
    this.perJob.set(jobId, onJob + 1);
    this.perToken.set(token, ofToken + 1);
    let left = false;
    return () => {
      if (left) return;
      left = true;
      this.decrement(this.perJob, jobId);
      this.decrement(this.perToken, token);
    };
  }

  private decrement<K>(counts: Map<K, number>, key: K) {
    const n = (counts.get(key) ?? 1) - 1;
    if (n <= 0) counts.delete(key);
    else counts.set(key, n);
  }
}

function tooManyFollowers(message: string): ConductorError {
  const error = new ConductorError('rate_limited', 'too_many_followers', message);
  error.retryAfterSeconds = 5;
  return error;
}

/** One count for the whole process (isolate), whatever app instance serves the stream. */
const followers = new FollowerLimits();
