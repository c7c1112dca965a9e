/**
 * One declaration per route: its path, inputs (zod), answers (zod) and who may call it. `mount` puts the
 * declaration into the app's OpenAPI registry (the document at /api/v1/openapi.json is generated from it)
 * and registers the handler behind a check of the inputs with the very same schemas.
 *
 * The inputs are checked by `parseInput`/`parseBody` (functions/http/validate.ts), not by @hono/zod-openapi's
 * own validators: those read a repeated query parameter as an array (the API takes the first), check JSON
 * media types with another pattern than the same-origin guard's, and answer in their own shape; ours give
 * the API's 400 envelope that names the field, 415 for a body that is not JSON, and refuse NUL characters and
 * broken Unicode before any schema sees them. The body is parsed when the handler asks for it, so that a
 * route can check a header or a rate limit first, as it did before.
 */
import { createRoute, type OpenAPIHono, type RouteConfig, type z } from '@hono/zod-openapi';
import type { Context as HonoContext } from 'hono';
import type { AppEnv, Need } from './auth.ts';
import { errorSchema } from './responses.ts';
import { parseBody, parseInput, type refuseBadText } from './validate.ts';

export type Tag = 'meta' | 'jobs' | 'cluster' | 'admin' | 'webhooks' | 'agents';

export const TAGS: Record<Tag, string> = {
  meta: 'The index, health, this description and metrics',
  jobs: 'Submit, list, inspect and cancel jobs; read their output',
  cluster: 'Resources and the workers (drain, undrain)',
  admin: 'Tokens, webhooks and the audit log',
  webhooks: 'Signed deliveries that submit jobs',
  agents: 'The protocol agents speak (agent/src/protocol.ts)',
};

type Schema = z.ZodType;
type Out<S> = S extends Schema ? z.output<S> : undefined;

interface Answer {
  description: string;
  /** A JSON answer's schema. */
  schema?: Schema;
  /** An answer that is not JSON: its media type (the body is text); with `schema`, an alternative to JSON. */
  mediaType?: string;
  example?: unknown;
  headers?: Record<string, string>;
}

export interface RouteSpec<
  P extends Schema | undefined,
  Q extends Schema | undefined,
  B extends Schema | undefined,
> {
  method: 'get' | 'post' | 'patch' | 'delete';
  /** Relative to the group it is mounted in, OpenAPI's form: `/{id}/cancel`. */
  path: string;
  operationId: string;
  summary: string;
  description?: string;
  tag: Tag;
  /** Must agree with functions/http/auth.ts's rules (test/http/openapi.test.ts checks it). */
  access: Need;
  params?: P;
  query?: Q;
  /** Request headers the route reads (documented; the handler checks them). */
  headers?: Schema;
  body?: B;
  bodyExample?: unknown;
  /** How NUL characters and broken Unicode in the body are judged (parseBody's options). */
  bodyText?: Parameters<typeof refuseBadText>[2];
  /** The successful answers. */
  responses: Record<number, Answer>;
  /** Refusals particular to this route (status: description); the shared ones are added by `declare`. */
  refusals?: Partial<Record<400 | 401 | 404 | 409 | 410 | 413 | 422 | 429 | 503, string>>;
  /** False for routes that never touch the database (no 503 `database_unavailable`). */
  database?: boolean;
}

export interface Input<P, Q, B> {
  params: Out<P>;
  query: Out<Q>;
  /** The JSON body, checked (415, 400 as functions/http/validate.ts gives them). */
  body: () => Promise<Out<B>>;
}

const SECURITY = (access: Need): RouteConfig['security'] =>
  access === 'public' || access === 'signed' ? [] : [{ bearer: access === 'any' ? [] : [access] }];

const errorAnswer = (description: string) => ({
  description,
  content: { 'application/json': { schema: errorSchema } },
});

/** The refusals every route of its kind can give (functions/http/{auth,same-origin,errors}.ts, app.ts). */
function sharedRefusals(spec: RouteSpec<Schema | undefined, Schema | undefined, Schema | undefined>) {
  const write = spec.method !== 'get';
  const token = spec.access !== 'public' && spec.access !== 'signed';
  const refusals: Record<number, string> = {};
  if (spec.params || spec.query || spec.body || spec.headers) {
    refusals[400] = 'Invalid input (invalid_request, invalid_json, ...): the message names the field';
  }
  if (token) {
    refusals[401] =
      'No token (missing_token), an unknown one (invalid_token) or a revoked one (token_revoked), once tokens exist; WWW-Authenticate: Bearer';
  }
  if (spec.access !== 'signed') {
    refusals[403] = [
      ...(token
        ? ['The token lacks the scope this needs (insufficient_scope; an agent token makes agent calls only)']
        : []),
      ...(write ? ['a write from another site (cross_site_request)'] : []),
      'a Host that is not the server’s own on an open loopback server (host_not_allowed)',
    ].join('; or ');
  }
  if (write) {
    refusals[413] = 'The request body is larger than 2 MiB (payload_too_large)';
    if (spec.access !== 'signed') {
      refusals[415] =
        'A body that is not JSON: Content-Type must be application/json (unsupported_media_type)';
    }
  }
  if (spec.database !== false) {
    refusals[503] = 'The database is unavailable (database_unavailable); Retry-After says when to retry';
  }
  return refusals;
}

/** The declaration as @hono/zod-openapi's route config (what the OpenAPI document is generated from). */
export function declare<
  P extends Schema | undefined,
  Q extends Schema | undefined,
  B extends Schema | undefined,
>(spec: RouteSpec<P, Q, B>) {
  const responses: RouteConfig['responses'] = {};
  for (const [status, answer] of Object.entries(spec.responses)) {
    responses[status] = {
      description: answer.description,
      ...(answer.headers
        ? {
            headers: Object.fromEntries(
              Object.entries(answer.headers).map(([name, description]) => [
                name,
                { description, schema: { type: 'string' as const } },
              ]),
            ),
          }
        : {}),
      ...(answer.schema
        ? {
            content: {
              'application/json': {
                schema: answer.schema,
                ...(answer.example === undefined ? {} : { example: answer.example }),
              },
              ...(answer.mediaType ? { [answer.mediaType]: { schema: { type: 'string' as const } } } : {}),
            },
          }
        : answer.mediaType
          ? { content: { [answer.mediaType]: { schema: { type: 'string' as const } } } }
          : {}),
    };
  }
  const refusals = { ...sharedRefusals(spec), ...spec.refusals };
  for (const [status, description] of Object.entries(refusals)) {
    responses[status] ??= errorAnswer(description);
  }
  return createRoute({
    method: spec.method,
    path: spec.path,
    operationId: spec.operationId,
    summary: spec.summary,
    ...(spec.description ? { description: spec.description } : {}),
    tags: [spec.tag],
    security: SECURITY(spec.access),
    'x-conductor-access': spec.access,
    request: {
      ...(spec.params ? { params: spec.params as unknown as z.ZodObject } : {}),
      ...(spec.query ? { query: spec.query as unknown as z.ZodObject } : {}),
      ...(spec.headers ? { headers: spec.headers as unknown as z.ZodObject } : {}),
      ...(spec.body
        ? {
            body: {
              required: true,
              content: {
                'application/json': {
                  schema: spec.body,
                  ...(spec.bodyExample === undefined ? {} : { example: spec.bodyExample }),
                },
              },
            },
          }
        : {}),
    },
    responses,
  });
}

/** Declarations are module constants, and Workers build the app per request: each is turned into a route config once. */
const declarations = new WeakMap<object, ReturnType<typeof declare>>();

/** Declares the route on `app` (its OpenAPI registry) and registers `handler` behind the input checks. */
export function mount<
  P extends Schema | undefined,
  Q extends Schema | undefined,
  B extends Schema | undefined,
>(
  app: OpenAPIHono<AppEnv>,
  spec: RouteSpec<P, Q, B>,
  handler: (c: HonoContext<AppEnv>, input: Input<P, Q, B>) => Response | Promise<Response>,
): void {
  let declared = declarations.get(spec);
  if (!declared) {
    declared = declare(spec);
    declarations.set(spec, declared);
  }
  app.openAPIRegistry.registerPath(declared);
  const path = spec.path.replaceAll(/\{([^}]+)\}/g, ':$1');
  app.on(spec.method.toUpperCase(), path, (c) => {
    // Path before query, as the handlers always checked them; the body when the handler asks.
    const params = (spec.params ? parseInput(spec.params, c.req.param(), 'path') : undefined) as Out<P>;
    const query = (spec.query ? parseInput(spec.query, c.req.query(), 'query') : undefined) as Out<Q>;
    const body = async () => {
      if (!spec.body) throw new Error(`${spec.operationId} declares no body`);
      return (await parseBody(c, spec.body, spec.bodyText)) as Out<B>;
    };
    return handler(c, { params, query, body });
  });
}
