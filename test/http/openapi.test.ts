/**
 * The OpenAPI document covers the app: every route registered on the Hono app (walking `app.routes`) is
 * documented, nothing documented is missing from the app, every example validates against its schema, and
 * the document passes Redocly's recommended lint rules (the `@redocly/cli` devDependency, run offline).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp } from '../../functions/app.ts';
import { openApiDocument, ROUTES } from '../../functions/http/openapi.ts';
import { availableBackends, type Backend, testContext } from '../support/cluster.ts';

const [pglite] = (await availableBackends()).filter((b) => b.name === 'pglite+memory');
const REDOCLY = fileURLToPath(new URL('../../node_modules/.bin/redocly', import.meta.url));

describe.runIf(pglite)('OpenAPI', () => {
  let backend: Backend;
  let app: ReturnType<typeof createApp>;
  beforeAll(async () => {
    backend = await pglite!.create();
    app = createApp(testContext(backend).ctx);
  });
  afterAll(async () => {
    await backend?.close();
  });

  it('documents every route registered on the app, and only those', () => {
    const registered = new Set(
      app.routes.filter((r) => r.method !== 'ALL').map((r) => `${r.method} ${r.path}`),
    );
    const documented = new Set(ROUTES.map((r) => `${r.method} ${r.path}`));
    expect(
      [...registered].filter((r) => !documented.has(r)),
      'registered but not documented',
    ).toEqual([]);
    expect(
      [...documented].filter((r) => !registered.has(r)),
      'documented but not registered',
    ).toEqual([]);
    expect(ROUTES.length).toBe(documented.size); // no duplicates
  });

  it('every example validates against its schema', () => {
    let checked = 0;
    for (const route of ROUTES) {
      const where = `${route.method} ${route.path}`;
      if (route.bodyExample !== undefined) {
        expect(route.body, where).toBeDefined();
        const result = route.body!.safeParse(route.bodyExample);
        expect(result.success, `${where} body: ${result.error?.message}`).toBe(true);
        checked++;
      }
      if (route.queryExample !== undefined) {
        const result = route.query!.safeParse(route.queryExample);
        expect(result.success, `${where} query: ${result.error?.message}`).toBe(true);
        checked++;
      }
      for (const [status, response] of Object.entries(route.responses)) {
        if (response.example === undefined) continue;
        const result = response.schema!.safeParse(response.example);
        expect(result.success, `${where} ${status}: ${result.error?.message}`).toBe(true);
        checked++;
      }
    }
    expect(checked).toBeGreaterThan(20);
  });

  it("passes Redocly's recommended lint rules: not one error or warning", () => {
    expect(existsSync(REDOCLY), `no ${REDOCLY}: npm ci installs it (@redocly/cli, a devDependency)`).toBe(
      true,
    );
    // Its own folder: no redocly.yaml of the checkout's can change the rules.
    const dir = mkdtempSync(join(tmpdir(), 'conductor-openapi-'));
    writeFileSync(join(dir, 'openapi.json'), JSON.stringify(openApiDocument(), null, 2));
    // operation-4xx-response wants a 4XX answer on every operation; these three are public and take no
    // input, so nothing of the caller's can be refused: a made-up 4XX would describe the API wrongly.
    const noRefusal = ['/api/v1/health', '/api/v1/openapi.json', '/api/docs'];
    writeFileSync(
      join(dir, '.redocly.lint-ignore.yaml'),
      `openapi.json:\n  operation-4xx-response:\n${noRefusal
        .map((path) => `    - '#/paths/${path.replaceAll('/', '~1')}/get/responses'\n`)
        .join('')}`,
    );
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
      totals: { errors: number; warnings: number };
      problems: { ruleId: string; message: string; location: { pointer: string }[] }[];
    };
    const problems = report.problems.map((p) => `${p.ruleId} at ${p.location[0]?.pointer}: ${p.message}`);
    expect(problems).toEqual([]);
    expect(report.totals).toEqual({ errors: 0, warnings: 0, ignored: noRefusal.length });
    expect(lint.status, lint.stderr).toBe(0);
  }, 120_000);

  it('documents the refusals: 401 and 403 where a token is needed, 400 for input, 429 where rates apply', () => {
    const doc = openApiDocument() as unknown as {
      servers?: { url: string }[];
      paths: Record<string, Record<string, { responses: Record<string, { description: string }> }>>;
    };
    expect(doc.servers ?? []).not.toEqual([]);
    const missing: string[] = [];
    for (const route of ROUTES) {
      const path = route.path.replace(/:([A-Za-z_]+)/g, '{$1}');
      const statuses = Object.keys(doc.paths[path]?.[route.method.toLowerCase()]?.responses ?? {});
      const want = [
        ...(['public', 'signature'].includes(route.auth) ? [] : ['401', '403']),
        ...(route.params || route.query || route.body ? ['400'] : []),
        ...(route.body ? ['413'] : []),
        ...(['/api/v1/jobs/submit', '/api/v1/jobs/batch', '/api/v1/webhooks/:name'].includes(route.path) &&
        route.method === 'POST'
          ? ['429']
          : []),
      ];
      for (const status of want) {
        if (!statuses.includes(status)) missing.push(`${route.method} ${route.path} ${status}`);
      }
    }
    expect(missing).toEqual([]);
  });

  it('serves the document and a reference page that needs nothing from the internet', async () => {
    const res = await app.request('/api/v1/openapi.json');
    expect(res.status).toBe(200);
    const doc = (await res.json()) as ReturnType<typeof openApiDocument>;
    expect(doc.openapi).toBe('3.1.0');
    const submit = doc.paths['/api/v1/jobs/submit']?.post as {
      requestBody: { content: { 'application/json': { schema: { required: string[] } } } };
    };
    expect(submit.requestBody.content['application/json'].schema.required).toEqual(['script', 'cpus']);
    const logs = doc.paths['/api/v1/jobs/{id}/logs']?.get as { parameters: { name: string }[] };
    expect(logs.parameters.map((p) => p.name)).toEqual(['id', 'follow', 'encoding', 'tail']);
    const page = await app.request('/api/docs');
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toContain('text/html');
    const html = await page.text();
    expect(html).toContain('/api/v1/jobs/:id/logs');
    expect(html).not.toMatch(/<script|<link|https?:\/\/(?!json-schema)/);
  });
});
