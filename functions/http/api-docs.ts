/**
 * The API reference for people: Swagger UI (swagger-ui-dist) over /api/v1/openapi.json, served entirely by
 * this control plane (no CDN). Its script and stylesheet come from the entry that runs the app, which knows
 * how to read them there: from node_modules on Node (functions/http/api-docs-node.ts), as text modules
 * bundled by wrangler on Workers (functions/http/api-docs-worker.ts).
 */
import { OpenAPIHono } from '@hono/zod-openapi';
import type { MiddlewareHandler } from 'hono';
import { getRuntimeKey } from 'hono/adapter';
import { compress } from 'hono/compress';
import type { AppEnv } from './auth.ts';
import { errorResponse } from './errors.ts';
import { mount, type RouteSpec } from './route.ts';

/** The swagger-ui-dist files the page loads. */
export const SWAGGER_UI_FILES = ['swagger-ui.css', 'swagger-ui-bundle.js'] as const;
export type SwaggerUiFile = (typeof SWAGGER_UI_FILES)[number];
/** Reads one of swagger-ui-dist's files (its text). */
export type SwaggerUiAssets = (file: SwaggerUiFile) => Promise<string>;

export const DOCS_PATH = '/api/docs';
const ASSETS = `${DOCS_PATH}/assets`;

// Started from a file, not inline: the page's CSP allows scripts from this server only.
const START_SCRIPT = `window.ui = SwaggerUIBundle({
  url: '/api/v1/openapi.json',
  dom_id: '#swagger-ui',
  deepLinking: true,
  validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis],
  layout: 'BaseLayout',
});
`;

const PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Conductor API reference</title>
<link rel="stylesheet" href="${ASSETS}/swagger-ui.css">
</head>
<body>
<noscript>The machine-readable API description is <a href="/api/v1/openapi.json">/api/v1/openapi.json</a> (OpenAPI 3.1).</noscript>
<div id="swagger-ui"></div>
<script src="${ASSETS}/swagger-ui-bundle.js"></script>
<script src="${ASSETS}/start.js"></script>
</body>
</html>
`;

/**
 * Scripts and styles from this server only (no inline ones: test/http/api-docs-browser.test.ts renders the page
 * under it in Chromium); Swagger UI's stylesheet holds data: images; it fetches the document, and the
 * requests of "Try it out", from this server.
 */
const PAGE_CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
  "connect-src 'self'; font-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const TYPES: Record<string, string> = {
  '.css': 'text/css; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
};

/** GET /api/docs (the page) and its assets under /api/docs/assets/. */
export function apiDocsRoutes(assets: SwaggerUiAssets | undefined) {
  const cache = new Map<string, Promise<string>>();
  const read = (file: string): Promise<string> | undefined => {
    if (file === 'start.js') return Promise.resolve(START_SCRIPT);
    if (!assets || !(SWAGGER_UI_FILES as readonly string[]).includes(file)) return undefined;
    let text = cache.get(file);
    if (!text) {
      text = assets(file as SwaggerUiFile);
      cache.set(file, text);
      text.catch(() => cache.delete(file));
    }
    return text;
  };
  const app = new OpenAPIHono<AppEnv>();
  mount(app, docsPage, (c) => {
    c.header('Content-Security-Policy', PAGE_CSP);
    c.header('X-Content-Type-Options', 'nosniff');
    c.header('Cache-Control', 'no-cache');
    return c.html(PAGE);
  });
  // Not in the API description: the page's own files.
  app.get(`${ASSETS}/:file`, compressOffWorkers(), async (c) => {
    const file = c.req.param('file');
    const text = read(file);
    if (!text) return errorResponse(c, 404, 'not_found', `No asset ${file.slice(0, 100)}`);
    c.header('Content-Type', TYPES[file.slice(file.lastIndexOf('.'))] ?? 'application/octet-stream');
    c.header('X-Content-Type-Options', 'nosniff');
    c.header('Cache-Control', 'public, max-age=3600');
    return c.body(await text);
  });
  return app;
}

/**
 * gzip where the server does not: Workers compress answers themselves (a body gzipped here would be gzipped
 * twice there).
 */
const compressOffWorkers = (): MiddlewareHandler =>
  getRuntimeKey() === 'workerd' ? (_c, next) => next() : compress();

const docsPage = {
  method: 'get',
  path: DOCS_PATH,
  operationId: 'getApiReference',
  summary: 'This description for people: Swagger UI (HTML)',
  tag: 'meta',
  access: 'public',
  responses: { 200: { description: 'HTML', mediaType: 'text/html' } },
  database: false,
} satisfies RouteSpec<undefined, undefined, undefined>;
