/**
 * The API described for machines: a hand-kept route table whose request schemas are the very zod schemas
 * the routes validate with, turned into JSON Schema by `z.toJSONSchema()`. test/http/openapi.test.ts checks
 * that every route registered on the app is here and that every example validates against its schema.
 */
import { z } from 'zod';
import { JOB_STATES } from '../../db/schema.ts';
import { listAuditInput } from '../domain/audit.ts';
import { createTokenInput, listTokensInput, tokenIdParam } from '../domain/auth.ts';
import { uiJobsInput, utilizationInput } from '../domain/dashboard.ts';
import { logsQuery } from '../domain/job-logs.ts';
import { listJobsInput, submitBatchInput, submitJobInput } from '../domain/jobs.ts';
import { createWebhookInput, webhookNameParam } from '../domain/webhooks.ts';
import {
  claimRequest,
  finishRequest,
  heartbeatRequest,
  jobIdParam,
  outputRequest,
  registerRequest,
  startedRequest,
  unregisterRequest,
  workerIdParam,
  workersQuery,
} from './agent-schemas.ts';

/** Response shapes (what the routes return; the domain builds them). */
export const errorSchema = z.object({
  error: z.object({
    code: z.string(),
    message: z.string(),
    details: z.record(z.string(), z.unknown()).optional(),
    request_id: z.string().optional(),
  }),
});
export const jobSchema = z.object({
  id: z.number().int(),
  name: z.string(),
  state: z.enum(JOB_STATES),
  cpus: z.number().int(),
  exit_code: z.string().nullable(),
  node: z.string().nullable(),
  account: z.string().nullable(),
  partition: z.string().nullable(),
  time_limit: z.number().nullable(),
  work_dir: z.string().nullable(),
  priority: z.number().int(),
  requeue: z.boolean(),
  attempt: z.number().int(),
  reason: z.string().nullable(),
  cancel_requested: z.boolean(),
  owner: z.string().nullable(),
  submit_time: z.string().nullable(),
  start_time: z.string().nullable(),
  end_time: z.string().nullable(),
  script: z.string().optional(),
  environment: z.record(z.string(), z.string()).optional(),
});
const batchSchema = z.object({ jobs: z.array(jobSchema) });
const jobListSchema = z.object({ jobs: z.array(jobSchema), next_before: z.number().int().nullable() });
const streamSchema = z.object({ content: z.string(), bytes: z.number().int(), truncated: z.boolean() });
const logsSchema = z.object({
  job_id: z.number().int(),
  state: z.enum(JOB_STATES),
  stdout: streamSchema,
  stderr: streamSchema,
});
const workerSchema = z.looseObject({
  worker_id: z.string(),
  hostname: z.string(),
  cpus: z.number().int(),
  allocated_cpus: z.number().int(),
  status: z.enum(['ready', 'draining', 'down']),
  last_heartbeat: z.string(),
});
const objectSchema = z.looseObject({});

const EXAMPLE_JOB: z.infer<typeof jobSchema> = {
  id: 42,
  name: 'train',
  state: 'COMPLETED',
  cpus: 8,
  exit_code: '0:0',
  node: 'worker-node-01',
  account: 'ml',
  partition: 'batch',
  time_limit: 120,
  work_dir: null,
  priority: 0,
  requeue: false,
  attempt: 1,
  reason: null,
  cancel_requested: false,
  owner: 'team-a',
  submit_time: '2025-11-11T10:00:00.000Z',
  start_time: '2025-11-11T10:00:01.000Z',
  end_time: '2025-11-11T10:42:00.000Z',
};
const EXAMPLE_ERROR = {
  error: { code: 'job_not_found', message: 'Job 42 does not exist', request_id: 'b7c1...' },
};

export interface ResponseDoc {
  description: string;
  schema?: z.ZodType;
  /** Not JSON: the media type and what it is. */
  content?: string;
  example?: unknown;
}

export interface RouteDoc {
  method: 'GET' | 'POST' | 'DELETE';
  /** Hono's form: `/api/v1/jobs/:id`. */
  path: string;
  summary: string;
  tag: 'meta' | 'jobs' | 'cluster' | 'ui' | 'admin' | 'webhooks' | 'agents';
  /** What the route needs: `public`, a webhook `signature`, `any` token, or a scope. */
  auth: 'public' | 'signature' | 'any' | 'jobs:read' | 'jobs:write' | 'admin' | 'agent';
  params?: z.ZodType;
  query?: z.ZodType;
  body?: z.ZodType;
  bodyExample?: unknown;
  queryExample?: Record<string, string>;
  responses: Record<number, ResponseDoc>;
}

const notFound: ResponseDoc = { description: 'Not found', schema: errorSchema, example: EXAMPLE_ERROR };
const invalid: ResponseDoc = {
  description: 'Invalid request: the message names the field',
  schema: errorSchema,
  example: {
    error: {
      code: 'invalid_request',
      message: 'Invalid body: cpus: cpus must be at least 1',
      request_id: 'a1',
    },
  },
};

const refusal = (description: string, code: string, message: string): ResponseDoc => ({
  description,
  schema: errorSchema,
  example: { error: { code, message, request_id: 'd5e6...' } },
});
const unauthorized = refusal(
  'No token (missing_token), an unknown one (invalid_token) or a revoked one (token_revoked), once tokens exist; WWW-Authenticate: Bearer',
  'invalid_token',
  'Unknown API token (check CONDUCTOR_TOKEN / the Authorization header)',
);
const forbidden = refusal(
  'The token lacks the scope this needs',
  'insufficient_scope',
  'This token (scope jobs:read) cannot submit jobs: that needs scope jobs:write (or admin)',
);
const tooLarge = refusal(
  'The body is larger than 2 MiB',
  'payload_too_large',
  'The request body is larger than 2 MiB',
);
const rateLimited = refusal(
  'Over the rate limit: Retry-After says when to retry; nothing stored',
  'rate_limited',
  'Too many submissions: at most 50 per second (bursts of 500) per token; retry in 2 s',
);
/** The agent's worker is not (or no longer) registered under this session. */
const registerAgain = {
  404: refusal(
    'The worker is not registered (or expired): register again',
    'unknown_worker',
    'Worker w is not registered; register again',
  ),
  409: refusal(
    'The worker registered again elsewhere: register anew',
    'session_superseded',
    'Worker w registered again elsewhere; register anew',
  ),
};

/**
 * The refusals every route shares, added where a route does not describe them itself: 400 for bad input,
 * 413 for a body over the limit, 401 and 403 where a token is needed (see functions/http/auth.ts).
 */
function withRefusals(route: RouteDoc): RouteDoc {
  const needsToken = route.auth !== 'public' && route.auth !== 'signature';
  const takesInput = route.params !== undefined || route.query !== undefined || route.body !== undefined;
  const shared: [number, ResponseDoc, boolean][] = [
    [400, invalid, takesInput],
    [401, unauthorized, needsToken],
    [403, forbidden, needsToken],
    [413, tooLarge, route.body !== undefined],
  ];
  const responses = { ...route.responses };
  for (const [status, response, applies] of shared) {
    if (applies && !responses[status]) responses[status] = response;
  }
  return { ...route, responses };
}

const TABLE: RouteDoc[] = [
  {
    method: 'GET',
    path: '/',
    summary: 'Index (JSON), or the web dashboard for a browser (Accept: text/html)',
    tag: 'meta',
    auth: 'any',
    responses: {
      200: { description: 'Links to the API', schema: objectSchema, example: { api: '/api/v1' } },
    },
  },
  {
    method: 'POST',
    path: '/api/v1/jobs/submit',
    summary: 'Submit a job (Idempotency-Key header: retries return the first job)',
    tag: 'jobs',
    auth: 'jobs:write',
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
      201: { description: 'The job', schema: jobSchema, example: { ...EXAMPLE_JOB, state: 'PENDING' } },
      400: invalid,
      422: { description: 'Idempotency-Key reused with another body', schema: errorSchema },
      429: rateLimited,
    },
  },
  {
    method: 'POST',
    path: '/api/v1/jobs/batch',
    summary:
      'Submit 1 to 1000 jobs (each like a /submit body) in one request and one atomic statement: all are stored, ' +
      'in request order (ascending ids), or none. A bad job refuses the batch with a 400 naming jobs[k].field. ' +
      'Counts as N submissions against the rate limit (a batch larger than CONDUCTOR_SUBMIT_BURST is a 400 ' +
      '`batch_exceeds_burst`). Idempotency-Key header: a retry of the same batch returns the first one ' +
      '(Idempotent-Replayed: true); the same key with another body is a 422',
    tag: 'jobs',
    auth: 'jobs:write',
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
        schema: batchSchema,
        example: {
          jobs: [
            { ...EXAMPLE_JOB, id: 42, name: 'fold-1', state: 'PENDING' },
            { ...EXAMPLE_JOB, id: 43, name: 'fold-2', state: 'PENDING' },
          ],
        },
      },
      400: {
        description: 'Invalid request (nothing stored): the message names each offending jobs[k].field',
        schema: errorSchema,
        example: {
          error: {
            code: 'invalid_request',
            message: 'Invalid body: jobs[3].cpus: cpus must be at least 1 (nothing of the batch was stored)',
            details: { issues: [{ path: 'jobs[3].cpus', message: 'cpus must be at least 1', index: 3 }] },
            request_id: 'a1',
          },
        },
      },
      422: { description: 'Idempotency-Key reused with another body', schema: errorSchema },
      429: rateLimited,
    },
  },
  {
    method: 'GET',
    path: '/api/v1/jobs',
    summary: 'List jobs, newest first',
    tag: 'jobs',
    auth: 'jobs:read',
    query: listJobsInput,
    queryExample: { state: 'RUNNING,PENDING', limit: '20' },
    responses: {
      200: {
        description: 'A page of jobs',
        schema: jobListSchema,
        example: { jobs: [EXAMPLE_JOB], next_before: null },
      },
      400: invalid,
    },
  },
  {
    method: 'GET',
    path: '/api/v1/jobs/:id',
    summary: 'One job, with its script and environment',
    tag: 'jobs',
    auth: 'jobs:read',
    params: jobIdParam,
    responses: {
      200: {
        description: 'The job',
        schema: jobSchema,
        example: { ...EXAMPLE_JOB, script: 'echo hi', environment: {} },
      },
      404: notFound,
    },
  },
  {
    method: 'POST',
    path: '/api/v1/jobs/:id/cancel',
    summary: 'Cancel a job',
    tag: 'jobs',
    auth: 'jobs:write',
    params: jobIdParam,
    responses: {
      200: {
        description: 'The job after the cancel',
        schema: jobSchema,
        example: { ...EXAMPLE_JOB, state: 'CANCELLED' },
      },
      404: notFound,
      409: { description: 'The job already ended', schema: errorSchema },
    },
  },
  {
    method: 'GET',
    path: '/api/v1/jobs/:id/logs',
    summary:
      'Captured output (the last 1 MiB per stream; truncated ones begin with a marker line). tail=N: the last N bytes. ' +
      'follow=1: Server-Sent Events `stdout`/`stderr` (the new text) until the job ends, then `end` ({state, exit_code}); ' +
      "encoding=json: each stdout/stderr event's data is a JSON string, byte-exact (plain SSE text cannot carry a " +
      "carriage return: `\\r` and `\\r\\n` arrive as line breaks); every event has the id `<attempt>:<stdout bytes>-<stderr bytes>` (where the follower then is; a requeued job's next run sends `attempt` and starts anew), a reconnect with the " +
      'header `Last-Event-ID: <id>` resumes right after it (tail is then ignored), and a silent stream gets a ' +
      '`: keep-alive` comment line every 15 s. Output is kept CONDUCTOR_LOG_RETENTION_DAYS (default 30) days after ' +
      'the job ended; once deleted, 410 `logs_expired`',
    tag: 'jobs',
    auth: 'jobs:read',
    params: jobIdParam,
    query: logsQuery,
    queryExample: { tail: '4096' },
    responses: {
      200: {
        description: 'The output (JSON), or with follow=1 an event stream (text/event-stream)',
        schema: logsSchema,
        example: {
          job_id: 42,
          state: 'COMPLETED',
          stdout: { content: 'test\n', bytes: 5, truncated: false },
          stderr: { content: '', bytes: 0, truncated: false },
        },
      },
      400: invalid,
      404: notFound,
      410: {
        description:
          'The job ended more than CONDUCTOR_LOG_RETENTION_DAYS days ago and its output was deleted (the job itself remains)',
        schema: errorSchema,
        example: {
          error: {
            code: 'logs_expired',
            message:
              'The output of job 42 is no longer kept: the job ended at 2025-10-01T10:42:00.000Z, more than 30 days ago (CONDUCTOR_LOG_RETENTION_DAYS)',
            details: { end_time: '2025-10-01T10:42:00.000Z', retention_days: 30 },
            request_id: 'c3d4...',
          },
        },
      },
    },
  },
  {
    method: 'GET',
    path: '/api/v1/dashboard',
    summary: 'Cluster resources, live workers and job counts',
    tag: 'cluster',
    auth: 'jobs:read',
    responses: {
      200: {
        description: 'The dashboard',
        schema: z.looseObject({
          resources: z.object({
            total_cpus: z.number(),
            allocated_cpus: z.number(),
            available_cpus: z.number(),
            utilization: z.number(),
          }),
        }),
        example: { resources: { total_cpus: 96, allocated_cpus: 4, available_cpus: 92, utilization: 4.2 } },
      },
    },
  },
  {
    method: 'GET',
    path: '/api/v1/workers',
    summary: 'Live workers (all=true: every worker ever seen)',
    tag: 'cluster',
    auth: 'admin',
    query: workersQuery,
    queryExample: { all: 'true' },
    responses: {
      200: {
        description: 'Workers',
        schema: z.object({ workers: z.array(workerSchema) }),
        example: {
          workers: [
            {
              worker_id: 'worker-node-01',
              hostname: 'node-01',
              cpus: 96,
              allocated_cpus: 8,
              status: 'ready',
              last_heartbeat: '2025-11-11T10:05:30.000Z',
            },
          ],
        },
      },
    },
  },
  ...(['drain', 'undrain'] as const).map(
    (action): RouteDoc => ({
      method: 'POST',
      path: `/api/v1/workers/:id/${action}`,
      summary:
        action === 'drain' ? 'Stop placing jobs on a worker (its jobs finish)' : 'Put a drained worker back',
      tag: 'cluster',
      auth: 'admin',
      params: workerIdParam,
      responses: {
        200: { description: 'The worker', schema: objectSchema },
        404: notFound,
        409: { description: 'The worker is down', schema: errorSchema },
      },
    }),
  ),
  {
    method: 'GET',
    path: '/api/v1/audit',
    summary: 'The audit log, newest first',
    tag: 'admin',
    auth: 'admin',
    query: listAuditInput,
    queryExample: { limit: '20', action: 'job.submit' },
    responses: { 200: { description: 'Entries', schema: objectSchema }, 400: invalid },
  },
  {
    method: 'GET',
    path: '/api/v1/health',
    summary: 'Database and cache health (no token, ever)',
    tag: 'meta',
    auth: 'public',
    responses: {
      200: {
        description: 'ok or degraded',
        schema: z.looseObject({ status: z.enum(['ok', 'degraded', 'down']) }),
      },
      503: { description: 'The database is down', schema: objectSchema },
    },
  },
  {
    method: 'GET',
    path: '/api/v1/ui/jobs',
    summary: "The web dashboard's job list (GET /api/v1/jobs plus q: name or account search)",
    tag: 'ui',
    auth: 'jobs:read',
    query: uiJobsInput,
    queryExample: { q: 'train', limit: '50' },
    responses: { 200: { description: 'A page of jobs', schema: objectSchema }, 400: invalid },
  },
  {
    method: 'GET',
    path: '/api/v1/ui/workers',
    summary: "The web dashboard's worker list",
    tag: 'ui',
    auth: 'jobs:read',
    responses: { 200: { description: 'Workers', schema: objectSchema } },
  },
  {
    method: 'GET',
    path: '/api/v1/ui/utilization',
    summary: "The web dashboard's utilization samples",
    tag: 'ui',
    auth: 'jobs:read',
    query: utilizationInput,
    queryExample: { window: '24h' },
    responses: { 200: { description: 'Samples', schema: objectSchema }, 400: invalid },
  },
  {
    method: 'POST',
    path: '/api/v1/tokens',
    summary: 'Create a token (shown once in the answer)',
    tag: 'admin',
    auth: 'admin',
    body: createTokenInput,
    bodyExample: { name: 'ci', scopes: ['jobs:read', 'jobs:write'], owner: 'team-a' },
    responses: { 201: { description: 'The token', schema: objectSchema }, 400: invalid },
  },
  {
    method: 'GET',
    path: '/api/v1/tokens',
    summary: 'List tokens (never the tokens themselves)',
    tag: 'admin',
    auth: 'admin',
    query: listTokensInput,
    queryExample: { limit: '20' },
    responses: { 200: { description: 'Tokens', schema: objectSchema } },
  },
  {
    method: 'DELETE',
    path: '/api/v1/tokens/:id',
    summary: 'Revoke a token',
    tag: 'admin',
    auth: 'admin',
    params: tokenIdParam,
    responses: { 200: { description: 'The revoked token', schema: objectSchema }, 404: notFound },
  },
  {
    method: 'POST',
    path: '/api/v1/webhooks',
    summary: 'Create a webhook (its secret is shown once)',
    tag: 'admin',
    auth: 'admin',
    body: createWebhookInput,
    bodyExample: {
      name: 'deploy',
      template: { script: './deploy.sh', cpus: 2 },
      mapping: { ref: 'GIT_REF' },
      events: ['push'],
    },
    responses: {
      201: { description: 'The webhook', schema: objectSchema },
      400: invalid,
      409: { description: 'A webhook of that name exists', schema: errorSchema },
    },
  },
  {
    method: 'GET',
    path: '/api/v1/webhooks',
    summary: 'List webhooks (without secrets)',
    tag: 'admin',
    auth: 'admin',
    responses: { 200: { description: 'Webhooks', schema: objectSchema } },
  },
  {
    method: 'DELETE',
    path: '/api/v1/webhooks/:name',
    summary: 'Delete a webhook',
    tag: 'admin',
    auth: 'admin',
    params: webhookNameParam,
    responses: { 200: { description: 'Deleted', schema: objectSchema }, 404: notFound },
  },
  {
    method: 'POST',
    path: '/api/v1/webhooks/:name',
    summary:
      'A signed delivery (X-Hub-Signature-256 or X-Conductor-Signature): submits the template job; the body is the sender’s payload',
    tag: 'webhooks',
    auth: 'signature',
    params: webhookNameParam,
    responses: {
      201: { description: 'The job', schema: objectSchema },
      200: { description: 'A replay: the first job', schema: objectSchema },
      202: { description: 'ping or a filtered event: no job', schema: objectSchema },
      400: { description: 'A bad delivery id header or payload value', schema: errorSchema },
      401: { description: 'Bad signature', schema: errorSchema },
      404: { description: 'No webhook of that name', schema: errorSchema },
      413: tooLarge,
      422: { description: "The webhook's job is not valid with this payload", schema: errorSchema },
      429: rateLimited,
    },
  },
  ...(
    [
      ['register', registerRequest, { worker_id: 'worker-node-01', hostname: 'node-01', cpus: 96 }],
      ['heartbeat', heartbeatRequest, { worker_id: 'worker-node-01', session: 's-1' }],
      ['claim', claimRequest, { worker_id: 'worker-node-01', session: 's-1', wait_s: 10 }],
      ['unregister', unregisterRequest, { worker_id: 'worker-node-01', session: 's-1' }],
    ] as const
  ).map(
    ([name, body, example]): RouteDoc => ({
      method: 'POST',
      path: `/api/v1/agents/${name}`,
      summary: `Agent protocol: ${name} (agent/src/protocol.ts)`,
      tag: 'agents',
      auth: 'agent',
      body,
      bodyExample: example,
      responses: {
        200: { description: 'OK', schema: objectSchema },
        400: invalid,
        ...(name === 'register'
          ? {
              409: {
                description:
                  'Another live agent uses this name, or the node offers fewer CPUs than are allocated on it',
                schema: errorSchema,
              },
            }
          : registerAgain),
      },
    }),
  ),
  ...(
    [
      ['started', startedRequest, { worker_id: 'worker-node-01', attempt: 1 }],
      [
        'output',
        outputRequest,
        { worker_id: 'worker-node-01', attempt: 1, stream: 'stdout', offset: 0, data: 'hi\n', bytes: 3 },
      ],
      [
        'finish',
        finishRequest,
        { worker_id: 'worker-node-01', attempt: 1, exit_code: '0:0', outcome: 'exited' },
      ],
    ] as const
  ).map(
    ([name, body, example]): RouteDoc => ({
      method: 'POST',
      path: `/api/v1/agents/jobs/:id/${name}`,
      summary: `Agent protocol: report ${name} for a job (agent/src/protocol.ts)`,
      tag: 'agents',
      auth: 'agent',
      params: jobIdParam,
      body,
      bodyExample: example,
      responses: {
        200: { description: 'OK', schema: objectSchema },
        404: notFound,
        409: { description: 'A stale assignment (or, for output, another offset)', schema: errorSchema },
      },
    }),
  ),
  {
    method: 'GET',
    path: '/api/v1/openapi.json',
    summary: 'This document',
    tag: 'meta',
    auth: 'public',
    responses: { 200: { description: 'OpenAPI 3.1', schema: objectSchema } },
  },
  {
    method: 'GET',
    path: '/api/docs',
    summary: 'A reference page for people (HTML, rendered from this document)',
    tag: 'meta',
    auth: 'public',
    responses: { 200: { description: 'HTML', content: 'text/html' } },
  },
  {
    method: 'GET',
    path: '/metrics',
    summary: 'Prometheus metrics (text format 0.0.4)',
    tag: 'meta',
    auth: 'admin',
    responses: { 200: { description: 'Metrics', content: 'text/plain; version=0.0.4' } },
  },
];

export const ROUTES: RouteDoc[] = TABLE.map(withRefusals);

const TAGS: Record<RouteDoc['tag'], string> = {
  meta: 'The index, health, this description and metrics',
  jobs: 'Submit, list, inspect and cancel jobs; read their output',
  cluster: 'Resources and the workers (drain, undrain)',
  ui: "The web dashboard's own reads",
  admin: 'Tokens, webhooks and the audit log',
  webhooks: 'Signed deliveries that submit jobs',
  agents: 'The protocol agents speak (agent/src/protocol.ts)',
};

/** A zod schema as JSON Schema (without `$schema`: the document says which dialect). */
const json = (schema: z.ZodType, io: 'input' | 'output' = 'input') => {
  const { $schema: _, ...rest } = z.toJSONSchema(schema, { io, unrepresentable: 'any' }) as Record<
    string,
    unknown
  >;
  return rest;
};

/** Path and query schemas as OpenAPI parameters. */
function parameters(schema: z.ZodType | undefined, where: 'path' | 'query') {
  if (!schema) return [];
  const s = json(schema) as { properties?: Record<string, unknown>; required?: string[] };
  return Object.entries(s.properties ?? {}).map(([name, property]) => ({
    name,
    in: where,
    required: where === 'path' || (s.required ?? []).includes(name),
    schema: property,
  }));
}

const SECURITY: Record<RouteDoc['auth'], unknown[] | undefined> = {
  public: [],
  signature: [],
  any: [{ bearer: [] }],
  'jobs:read': [{ bearer: ['jobs:read'] }],
  'jobs:write': [{ bearer: ['jobs:write'] }],
  admin: [{ bearer: ['admin'] }],
  agent: [{ bearer: ['agent'] }],
};

export function openApiDocument() {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const route of ROUTES) {
    const path = route.path.replace(/:([A-Za-z_]+)/g, '{$1}');
    paths[path] ??= {};
    paths[path][route.method.toLowerCase()] = {
      summary: route.summary,
      tags: [route.tag],
      operationId: `${route.method.toLowerCase()}${path.replace(/[{}]/g, '').replace(/[^A-Za-z0-9]+(.)?/g, (_, c: string | undefined) => (c ?? '').toUpperCase())}`,
      security: SECURITY[route.auth],
      'x-conductor-auth': route.auth,
      parameters: [...parameters(route.params, 'path'), ...parameters(route.query, 'query')],
      ...(route.queryExample ? { 'x-query-example': route.queryExample } : {}),
      ...(route.body
        ? {
            requestBody: {
              required: true,
              content: {
                'application/json': {
                  schema: json(route.body),
                  ...(route.bodyExample === undefined ? {} : { example: route.bodyExample }),
                },
              },
            },
          }
        : {}),
      responses: Object.fromEntries(
        Object.entries(route.responses).map(([status, r]) => [
          status,
          {
            description: r.description,
            ...(r.schema
              ? {
                  content: {
                    'application/json': {
                      schema: json(r.schema, 'output'),
                      ...(r.example === undefined ? {} : { example: r.example }),
                    },
                  },
                }
              : r.content
                ? { content: { [r.content]: { schema: { type: 'string' } } } }
                : {}),
          },
        ]),
      ),
    };
  }
  return {
    openapi: '3.1.0',
    jsonSchemaDialect: 'https://json-schema.org/draft/2020-12/schema',
    info: {
      title: 'Conductor',
      version: '0.1.0',
      license: { name: 'MIT', identifier: 'MIT' },
      description:
        'A batch-job scheduler: Slurm’s job model, Nomad-style agents. Every error is ' +
        '{"error": {"code", "message", "details"?, "request_id"}}. Job states: PENDING, RUNNING, COMPLETED, FAILED, ' +
        'CANCELLED, TIMEOUT, NODE_FAIL; exit codes are code:signal.',
    },
    // The control plane serving this document: paths are relative to it.
    servers: [{ url: '/', description: 'This control plane' }],
    tags: Object.entries(TAGS).map(([name, description]) => ({ name, description })),
    components: {
      securitySchemes: { bearer: { type: 'http', scheme: 'bearer', description: 'An API token (cnd_...)' } },
    },
    paths,
  };
}

const html = (s: string) =>
  s.replace(
    /[&<>"']/g,
    (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c] ?? c,
  );

/** A plain reference page: no script, no CDN. */
export function docsPage(): string {
  const document = openApiDocument();
  const rows = ROUTES.map((r) => {
    const doc = document.paths[r.path.replace(/:([A-Za-z_]+)/g, '{$1}')]?.[r.method.toLowerCase()] as
      | { parameters: { name: string; in: string; required: boolean }[]; requestBody?: unknown }
      | undefined;
    const params = (doc?.parameters ?? [])
      .map((p) => `<code>${html(p.name)}</code> (${p.in}${p.required ? ', required' : ''})`)
      .join(', ');
    const example =
      r.bodyExample !== undefined
        ? `<pre>${html(JSON.stringify(r.bodyExample, null, 2))}</pre>`
        : r.queryExample
          ? `<pre>?${html(new URLSearchParams(r.queryExample).toString())}</pre>`
          : '';
    const statuses = Object.entries(r.responses)
      .map(([s, x]) => `<b>${s}</b> ${html(x.description)}`)
      .join('<br>');
    return `<tr id="${html(`${r.method} ${r.path}`)}"><td><b>${r.method}</b></td><td><code>${html(r.path)}</code></td><td>${html(r.auth)}</td><td>${html(r.summary)}${params ? `<br>Parameters: ${params}` : ''}${example}</td><td>${statuses}</td></tr>`;
  }).join('\n');
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Conductor API reference</title>
<style>body{font:14px/1.4 system-ui,sans-serif;margin:2em}table{border-collapse:collapse;width:100%}td,th{border:1px solid #ccc;padding:.4em;vertical-align:top;text-align:left}pre{background:#f5f5f5;padding:.4em;margin:.3em 0}</style>
</head><body>
<h1>Conductor API reference</h1>
<p>The machine-readable form is <a href="/api/v1/openapi.json">/api/v1/openapi.json</a> (OpenAPI 3.1). Send tokens as <code>Authorization: Bearer &lt;token&gt;</code>.</p>
<table><thead><tr><th>Method</th><th>Path</th><th>Needs</th><th>What</th><th>Responses</th></tr></thead>
<tbody>
${rows}
</tbody></table>
</body></html>
`;
}
