/**
 * The OpenAPI document covers the app: every route registered on the Hono app (walking `app.routes`) is
 * documented, nothing documented is missing from the app, and every example validates against its schema.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp } from '../../functions/app.ts';
import { type openApiDocument, ROUTES } from '../../functions/http/openapi.ts';
import { availableBackends, type Backend, testContext } from '../support/cluster.ts';

const [pglite] = (await availableBackends()).filter((b) => b.name === 'pglite+memory');

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
