/**
 * The OpenAPI document is generated from the routes' declarations (functions/http/route.ts): every route
 * registered on the Hono app is in it and nothing else, each declaration agrees with the auth rules, the
 * document passes Redocly's recommended lint rules (the `@redocly/cli` devDependency, run offline), and
 * /api/docs is Swagger UI served entirely by this server.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { OpenAPIHono, z } from '@hono/zod-openapi';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp } from '../../functions/app.ts';
import { nodeSwaggerUiAssets } from '../../functions/http/api-docs-node.ts';
import { type AppEnv, routeNeed } from '../../functions/http/auth.ts';
import { mount } from '../../functions/http/route.ts';
import { availableBackends, type Backend, testContext } from '../support/cluster.ts';
import { checkResponses, declaredRoutes } from './response-checks.ts';

const [pglite] = (await availableBackends()).filter((b) => b.name === 'pglite+memory');
const REDOCLY = fileURLToPath(new URL('../../node_modules/.bin/redocly', import.meta.url));

/**
 * Routes registered on the app that the document leaves out, on purpose:
 * - the dashboard's private reads (functions/routes/ui.ts: JSON and HTML fragments): its pages' own API, free
 *   to change with them; its HTML pages and their assets (functions/ui/pages.tsx);
 * - the reference page's script and stylesheet;
 * - the agents' push channel, a WebSocket.
 * The dashboard's HTML (GET / for a browser) shares its path with the JSON index, which is documented.
 */
const UNDOCUMENTED = new Set([
  'GET /api/v1/ui/jobs',
  'GET /api/v1/ui/workers',
  'GET /api/v1/ui/utilization',
  'GET /api/v1/ui/usage',
  'GET /api/v1/ui/fragments/overview',
  'GET /api/v1/ui/fragments/jobs',
  'GET /api/v1/ui/fragments/jobs/:id',
  'GET /api/v1/ui/fragments/jobs/:id/explain',
  'GET /api/v1/ui/fragments/nodes',
  'GET /api/v1/ui/fragments/nodes/:id',
  'GET /api/v1/ui/fragments/reservations',
  'GET /api/v1/ui/fragments/accounts',
  'GET /api/v1/ui/fragments/accounts/forms',
  // The dashboard's HTML pages and their script and stylesheet.
  'GET /ui/nodes',
  'GET /ui/usage',
  'GET /ui/reservations',
  'GET /ui/accounts',
  'GET /ui/nodes/:id{[A-Za-z0-9][A-Za-z0-9._-]{0,254}}',
  'GET /ui/jobs/:id{[0-9]{1,15}}',
  'GET /ui/assets/:file',
  'GET /api/docs/assets/:file',
  // The agents' push channel: a WebSocket, which OpenAPI cannot describe (docs/agents.md).
  'GET /api/v1/agents/channel',
]);

interface Operation {
  operationId: string;
  tags: string[];
  security: Record<string, string[]>[];
  'x-conductor-access': string;
  parameters?: { name: string; in: string }[];
  requestBody?: { content: Record<string, { schema: { required?: string[] } }> };
  responses: Record<string, { description: string }>;
}
interface Document {
  openapi: string;
  servers: { url: string }[];
  tags: { name: string }[];
  components: { securitySchemes: Record<string, { type: string; scheme: string }> };
  paths: Record<string, Record<string, Operation>>;
}

describe.runIf(pglite)('OpenAPI', () => {
  let backend: Backend;
  let app: ReturnType<typeof createApp>;
  let doc: Document;
  beforeAll(async () => {
    backend = await pglite!.create();
    app = createApp(testContext(backend).ctx, { swaggerUi: nodeSwaggerUiAssets });
    checkResponses(app);
    const res = await app.request('/api/v1/openapi.json');
    expect(res.status).toBe(200);
    doc = (await res.json()) as Document;
  });
  afterAll(async () => {
    await backend?.close();
  });

  const operations = () =>
    Object.entries(doc.paths).flatMap(([path, methods]) =>
      Object.entries(methods).map(([method, operation]) => ({
        method: method.toUpperCase(),
        path,
        operation,
      })),
    );

  it('documents every route registered on the app, and only those', () => {
    const registered = new Set(
      app.routes
        .filter((r) => r.method !== 'ALL')
        .map((r) => `${r.method} ${r.path}`)
        .filter((r) => !UNDOCUMENTED.has(r)),
    );
    const documented = operations().map(
      ({ method, path }) => `${method} ${path.replace(/\{([^}]+)\}/g, ':$1')}`,
    );
    expect(
      [...registered].filter((r) => !documented.includes(r)),
      'registered but not documented',
    ).toEqual([]);
    expect(
      documented.filter((r) => !registered.has(r)),
      'documented but not registered',
    ).toEqual([]);
    expect(new Set(documented).size).toBe(documented.length);
    expect(documented.length).toBeGreaterThanOrEqual(30);
    // The exclusions are real routes (a renamed one must leave the list too).
    const all = new Set(app.routes.map((r) => `${r.method} ${r.path}`));
    expect([...UNDOCUMENTED].filter((r) => !all.has(r))).toEqual([]);
  });

  it('declares each route with the access the auth middleware gives it, and the refusals that follow', () => {
    const wrong: string[] = [];
    for (const { method, path, operation } of operations()) {
      const concrete = path.replace(/\{[^}]+\}/g, 'x1');
      const access = operation['x-conductor-access'];
      if (routeNeed(method, concrete).need !== access) {
        wrong.push(`${method} ${path}: declared ${access}, auth.ts says ${routeNeed(method, concrete).need}`);
      }
      const statuses = Object.keys(operation.responses);
      const want = [
        ...(access === 'public' || access === 'signed' ? [] : ['401', '403']),
        ...(operation.parameters?.length || operation.requestBody ? ['400'] : []),
        ...(method === 'GET' ? [] : ['413']),
        ...(method === 'GET' || access === 'signed' ? [] : ['415']),
      ];
      for (const status of want) {
        if (!statuses.includes(status)) wrong.push(`${method} ${path}: no ${status}`);
      }
      const scheme =
        access === 'public' || access === 'signed' ? [] : [{ bearer: access === 'any' ? [] : [access] }];
      if (JSON.stringify(operation.security) !== JSON.stringify(scheme))
        wrong.push(`${method} ${path}: security`);
    }
    expect(wrong).toEqual([]);
    const rateLimited = operations()
      .filter(({ operation }) => operation.responses['429'])
      .map(({ method, path }) => `${method} ${path}`);
    expect(rateLimited.sort()).toEqual([
      'GET /api/v1/jobs/{id}/logs',
      'POST /api/v1/jobs/batch',
      'POST /api/v1/jobs/submit',
      'POST /api/v1/webhooks/{name}',
    ]);
  });

  it('has servers, a bearer security scheme, tags for every operation, unique operationIds', () => {
    expect(doc.openapi).toBe('3.1.0');
    expect(doc.servers).toEqual([{ url: '/', description: 'This control plane' }]);
    expect(doc.components.securitySchemes.bearer).toMatchObject({ type: 'http', scheme: 'bearer' });
    const tags = new Set(doc.tags.map((t) => t.name));
    const ids = operations().map(({ operation }) => operation.operationId);
    expect(new Set(ids).size).toBe(ids.length);
    for (const { operation } of operations()) {
      expect(operation.operationId).toMatch(/^[a-z][A-Za-z]+$/);
      expect(operation.tags.every((t) => tags.has(t))).toBe(true);
    }
  });

  it('carries the schemas the routes validate with', () => {
    const submit = doc.paths['/api/v1/jobs/submit']?.post;
    expect(submit?.requestBody?.content['application/json']?.schema.required).toEqual(['script', 'cpus']);
    const logs = doc.paths['/api/v1/jobs/{id}/logs']?.get;
    expect(logs?.parameters?.map((p) => `${p.in}:${p.name}`)).toEqual([
      'path:id',
      'query:follow',
      'query:encoding',
      'query:tail',
      'header:last-event-id',
    ]);
  });

  it('every body example validates against its schema', () => {
    let checked = 0;
    for (const definition of app.openAPIRegistry.definitions) {
      if (definition.type !== 'route') continue;
      const json = definition.route.request?.body?.content['application/json'] as
        | { schema: z.ZodType; example?: unknown }
        | undefined;
      if (json?.example === undefined) continue;
      const result = json.schema.safeParse(json.example);
      expect(result.success, `${definition.route.path}: ${result.error?.message}`).toBe(true);
      checked++;
    }
    expect(checked).toBeGreaterThanOrEqual(10);
    expect(declaredRoutes(app).length).toBe(operations().length);
  });

  it('the response checks fail a test whose answer does not match its declaration', async () => {
    const wrong = new OpenAPIHono<AppEnv>();
    mount(
      wrong,
      {
        method: 'get',
        path: '/thing',
        operationId: 'getThing',
        summary: 'A thing',
        tag: 'meta',
        access: 'public',
        database: false,
        responses: { 200: { description: 'A thing', schema: z.object({ count: z.number() }) } },
      },
      (c) => c.json({ count: 'three' }),
    );
    mount(
      wrong,
      {
        method: 'get',
        path: '/other',
        operationId: 'getOther',
        summary: 'Another',
        tag: 'meta',
        access: 'public',
        database: false,
        responses: { 200: { description: 'Another', schema: z.object({ count: z.number() }) } },
      },
      (c) => c.json({ count: 3 }, 201),
    );
    checkResponses(wrong);
    await expect(wrong.request('/thing')).rejects.toThrow(/does not match the declared schema/);
    await expect(wrong.request('/other')).rejects.toThrow(/status not declared/);
  });

  it("passes Redocly's recommended lint rules: not one error or warning", () => {
    expect(existsSync(REDOCLY), `no ${REDOCLY}: npm ci installs it (@redocly/cli, a devDependency)`).toBe(
      true,
    );
    // Its own folder: no redocly.yaml of the checkout's can change the rules.
    const dir = mkdtempSync(join(tmpdir(), 'conductor-openapi-'));
    writeFileSync(join(dir, 'openapi.json'), JSON.stringify(doc, null, 2));
    const lint = spawnSync(
      process.execPath,
      [REDOCLY, 'lint', 'openapi.json', '--extends=recommended', '--format=json'],
      {
        cwd: dir,
        encoding: 'utf8',
        env: {
          PATH: process.env.PATH,
          HOME: dir,
          REDOCLY_TELEMETRY: 'off',
          REDOCLY_SUPPRESS_UPDATE_NOTICE: 'true',
        },
        timeout: 120_000,
      },
    );
    expect(lint.error).toBeUndefined();
    const report = JSON.parse(lint.stdout) as {
      totals: { errors: number; warnings: number; ignored: number };
      problems: { ruleId: string; message: string; location: { pointer: string }[] }[];
    };
    const problems = report.problems.map((p) => `${p.ruleId} at ${p.location[0]?.pointer}: ${p.message}`);
    expect(problems).toEqual([]);
    expect(report.totals).toEqual({ errors: 0, warnings: 0, ignored: 0 });
    expect(lint.status, lint.stderr).toBe(0);
  }, 120_000);

  it('serves /api/docs: Swagger UI whose script and stylesheet come from this server', async () => {
    const page = await app.request('/api/docs');
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toContain('text/html');
    const csp = page.headers.get('content-security-policy') ?? '';
    expect(csp).toContain("script-src 'self'; style-src 'self';");
    expect(csp).toContain("default-src 'none'");
    const html = await page.text();
    expect(html).not.toMatch(/https?:\/\//);
    expect(html).not.toMatch(/<script>|<script [^>]*>[^<]/); // no inline script: the CSP would block it
    const urls = [...html.matchAll(/<(?:script|link)\b[^>]*\b(?:src|href)="([^"]+)"/g)].map((m) => m[1]!);
    expect(urls.sort()).toEqual([
      '/api/docs/assets/start.js',
      '/api/docs/assets/swagger-ui-bundle.js',
      '/api/docs/assets/swagger-ui.css',
    ]);
    for (const url of urls) {
      const asset = await app.request(url, { headers: { 'accept-encoding': 'gzip' } });
      expect(asset.status, url).toBe(200);
      expect(asset.headers.get('content-type'), url).toBe(
        url.endsWith('.css') ? 'text/css; charset=utf-8' : 'text/javascript; charset=utf-8',
      );
      expect(asset.headers.get('content-encoding'), url).toBe('gzip');
      expect((await asset.arrayBuffer()).byteLength, url).toBeGreaterThan(100);
    }
    const start = await (await app.request('/api/docs/assets/start.js')).text();
    expect(start).toContain("url: '/api/v1/openapi.json'");
    expect(start).toContain('validatorUrl: null'); // no calls to validator.swagger.io
    expect((await app.request('/api/docs/assets/swagger-ui.js')).status).toBe(404);
    expect((await app.request('/api/docs/assets/..%2Fpackage.json')).status).toBe(404);
  });
});
