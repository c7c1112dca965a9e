/**
 * Every answer an HTTP test gets is checked against what its route declares (functions/routes/*, through the
 * app's OpenAPI registry): the status must be one the route declares, and a JSON body must parse with the
 * zod schema declared for that status, naming no field the schema does not. A mismatch throws from
 * `app.request()`/`app.fetch()`, failing the test that made the request. Answers of routes outside the API
 * description (the dashboard's HTML and its /api/v1/ui/* reads, the reference page's files) are not checked;
 * a path no route has must give the error envelope.
 */
import { isDeepStrictEqual } from 'node:util';
import type { OpenAPIHono } from '@hono/zod-openapi';
import type { z } from 'zod';
import type { AppEnv } from '../../functions/http/auth.ts';
import { errorSchema } from '../../functions/http/responses.ts';

interface DeclaredRoute {
  method: string;
  path: string;
  pattern: RegExp;
  /** Status → the JSON schema declared (null: declared, but not JSON). */
  responses: Map<string, z.ZodType | null>;
  /** Status → the other media types declared besides JSON (format=csv, say). */
  alternatives: Map<string, string[]>;
}

/** The routes an app declares, from its OpenAPI registry (full paths, the zod schemas themselves). */
export function declaredRoutes(app: OpenAPIHono<AppEnv>): DeclaredRoute[] {
  const routes: DeclaredRoute[] = [];
  for (const definition of app.openAPIRegistry.definitions) {
    if (definition.type !== 'route') continue;
    const { method, path, responses } = definition.route;
    const pattern = new RegExp(
      `^${path.replace(/[.*+?^$()|[\]\\]/g, '\\$&').replace(/\\?\{[^}]+\\?\}/g, '[^/]+')}$`,
    );
    const byStatus = new Map<string, z.ZodType | null>();
    const alternatives = new Map<string, string[]>();
    for (const [status, response] of Object.entries(responses)) {
      const content = (response as { content?: Record<string, { schema?: unknown }> }).content;
      byStatus.set(status, (content?.['application/json']?.schema as z.ZodType | undefined) ?? null);
      alternatives.set(
        status,
        Object.keys(content ?? {}).filter((type) => type !== 'application/json'),
      );
    }
    routes.push({ method: method.toUpperCase(), path, pattern, responses: byStatus, alternatives });
  }
  return routes;
}

/** Paths outside the API description (see test/http/openapi.test.ts). */
const UNDESCRIBED = [/^\/api\/v1\/ui\//, /^\/ui\//, /^\/api\/docs\/assets\//];

export interface ResponseChecks {
  /** How many answers were checked against a declared schema. */
  checked: number;
}

/**
 * Wraps `app.fetch` (which `app.request` calls) so that every answer is checked; returns a counter, for
 * tests that want to see the checks ran.
 */
export function checkResponses<A extends OpenAPIHono<AppEnv>>(app: A): ResponseChecks {
  const routes = declaredRoutes(app);
  const stats: ResponseChecks = { checked: 0 };
  const fetch = app.fetch;
  app.fetch = async (request, ...rest) => {
    const response = await fetch(request, ...rest);
    await checkResponse(routes, request, response, stats);
    return response;
  };
  return stats;
}

async function checkResponse(
  routes: DeclaredRoute[],
  request: Request,
  response: Response,
  stats: ResponseChecks,
): Promise<void> {
  const { pathname } = new URL(request.url);
  const method = request.method === 'HEAD' ? 'GET' : request.method;
  const where = `${request.method} ${pathname} → ${response.status}`;
  const json = /^application\/json\b/.test(response.headers.get('content-type') ?? '');
  // The dashboard (GET / for a browser) is HTML.
  if (pathname === '/' && !json && /\btext\/html\b/.test(request.headers.get('accept') ?? '')) return;
  if (UNDESCRIBED.some((p) => p.test(pathname))) return;
  const route = routes.find((r) => r.method === method && r.pattern.test(pathname));
  let schema: z.ZodType | null;
  const type = response.headers.get('content-type') ?? '';
  if (!json && route?.alternatives.get(String(response.status))?.some((t) => type.startsWith(t))) return;
  if (route) {
    const declared = route.responses.get(String(response.status));
    if (declared === undefined) {
      throw new Error(
        `${where}: status not declared by ${route.method} ${route.path} (declared: ${[...route.responses.keys()].join(', ')})`,
      );
    }
    schema = declared;
  } else {
    schema = errorSchema; // no route: the 404 envelope
  }
  if (schema === null || request.method === 'HEAD') return;
  // logs?follow=1 answers with an event stream; every other declared JSON answer is JSON.
  if (!json) {
    if (/^text\/event-stream\b/.test(response.headers.get('content-type') ?? '')) return;
    throw new Error(`${where}: declared JSON, got ${response.headers.get('content-type')}`);
  }
  const body = (await response.clone().json()) as unknown;
  const result = schema.safeParse(body);
  if (!result.success) {
    throw new Error(
      `${where}: the body does not match the declared schema: ${result.error.message}\n${JSON.stringify(body).slice(0, 2000)}`,
    );
  }
  // zod drops fields an object schema does not name: what is left out was answered but not declared.
  if (!isDeepStrictEqual(result.data, body)) {
    throw new Error(
      `${where}: fields not declared by the schema: ${JSON.stringify(body).slice(0, 1000)}\nparsed as ${JSON.stringify(result.data).slice(0, 1000)}`,
    );
  }
  stats.checked++;
}
