/**
 * /api/docs on Cloudflare Workers: the Worker as wrangler bundles it (Swagger UI's files as text modules,
 * wrangler.toml [[rules]]) in workerd through Miniflare, as test/workers does. The page and the document
 * touch neither Postgres nor Redis, so the bindings name addresses nothing listens on.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { Miniflare } from 'miniflare';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bundleWorker, workerModules } from '../support/worker-bundle.ts';

const require = createRequire(import.meta.url);

describe('/api/docs on Workers (workerd)', () => {
  let mf: Miniflare;
  let url: string;
  beforeAll(async () => {
    const bundle = bundleWorker();
    mf = new Miniflare({
      ...workerModules(bundle),
      host: '127.0.0.1',
      port: 0,
      bindings: {
        DATABASE_URL: 'postgres://nobody@127.0.0.1:9/none',
        UPSTASH_REDIS_REST_URL: 'http://127.0.0.1:9',
        UPSTASH_REDIS_REST_TOKEN: 'unused',
      },
    });
    url = (await mf.ready).toString().replace(/\/$/, '');
  }, 120_000);
  afterAll(async () => {
    await mf?.dispose();
  });

  it('serves the page, its script and stylesheet from the Worker itself, and the document', async () => {
    const page = await fetch(`${url}/api/docs`);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-security-policy')).toContain("script-src 'self'");
    const html = await page.text();
    expect(html).not.toMatch(/https?:\/\//);
    const assets = [...html.matchAll(/<(?:script|link)\b[^>]*\b(?:src|href)="([^"]+)"/g)].map((m) => m[1]!);
    expect(assets).toHaveLength(3);
    for (const asset of assets) {
      const res = await fetch(`${url}${asset}`);
      expect(res.status, asset).toBe(200);
      expect(res.headers.get('content-type'), asset).toMatch(/^text\/(css|javascript); charset=utf-8$/);
      const text = await res.text();
      const file = asset.split('/').at(-1)!;
      if (file !== 'start.js') {
        // Byte for byte the file of swagger-ui-dist.
        expect(text, asset).toBe(readFileSync(require.resolve(`swagger-ui-dist/${file}`), 'utf8'));
      }
    }
    const doc = await fetch(`${url}/api/v1/openapi.json`);
    expect(doc.status).toBe(200);
    const json = (await doc.json()) as { openapi: string; paths: Record<string, unknown> };
    expect(json.openapi).toBe('3.1.0');
    expect(Object.keys(json.paths)).toContain('/api/v1/jobs/submit');
  });
});
