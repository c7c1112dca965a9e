import { type OpenAPIHono, z } from '@hono/zod-openapi';
import type { AppEnv } from './auth.ts';
import { mount, type RouteSpec, TAGS } from './route.ts';

/**
 * Declares GET /api/v1/openapi.json on `app`, the app every other route is mounted on: the
 * document is generated (once) from the routes' declarations in its registry.
 */
export function mountApiDocument(app: OpenAPIHono<AppEnv>) {
  app.openAPIRegistry.registerComponent('securitySchemes', 'bearer', {
    type: 'http',
    scheme: 'bearer',
    description: 'An API token (cnd_...): Authorization: Bearer <token>',
  });
  mount(app, openApiRoute, (c) => {
    document ??= app.getOpenAPI31Document({
      openapi: '3.1.0',
      info: {
        title: 'Conductor',
        version: '0.1.0',
        // OpenAPI 3.1's SPDX identifier (the generator's types know only 3.0's name and url).
        license: { name: 'MIT', identifier: 'MIT' } as { name: string },
        description:
          'A batch-job scheduler: Slurm’s job model, Nomad-style agents. Every error is ' +
          '{"error": {"code", "message", "details"?, "request_id"}}. Job states: PENDING, RUNNING, COMPLETED, FAILED, ' +
          'CANCELLED, TIMEOUT, NODE_FAIL; exit codes are code:signal.',
      },
      // The control plane serving this document: paths are relative to it.
      servers: [{ url: '/', description: 'This control plane' }],
      tags: Object.entries(TAGS).map(([name, description]) => ({ name, description })),
    });
    return c.json(document);
  });
}

/**
 * Generated once per process (isolate): every app has the same routes, and Workers build an app per request
 * (generating takes about 100 ms of CPU).
 */
let document: ReturnType<OpenAPIHono['getOpenAPI31Document']> | undefined;

const openApiRoute = {
  method: 'get',
  path: '/api/v1/openapi.json',
  operationId: 'getOpenApiDocument',
  summary: 'This document (OpenAPI 3.1)',
  tag: 'meta',
  access: 'public',
  responses: { 200: { description: 'OpenAPI 3.1', schema: z.looseObject({ openapi: z.string() }) } },
  database: false,
} satisfies RouteSpec<undefined, undefined, undefined>;
