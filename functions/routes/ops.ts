import { Hono } from 'hono';
import type { Context } from '../domain/context.ts';
import { renderMetrics } from '../domain/metrics.ts';
import type { AppEnv } from '../http/auth.ts';
import { docsPage, openApiDocument } from '../http/openapi.ts';

/** The API's description (OpenAPI and a reference page) and Prometheus metrics. */
export function opsRoutes(ctx: Context) {
  let document: ReturnType<typeof openApiDocument> | undefined;
  let page: string | undefined;
  return new Hono<AppEnv>()
    .get('/api/v1/openapi.json', (c) => {
      document ??= openApiDocument();
      return c.json(document);
    })
    .get('/api/docs', (c) => {
      page ??= docsPage();
      c.header('Content-Security-Policy', "default-src 'none'; style-src 'unsafe-inline'");
      return c.html(page);
    })
    .get('/metrics', async (c) => {
      c.header('Content-Type', 'text/plain; version=0.0.4; charset=utf-8');
      return c.body(await renderMetrics(ctx));
    });
}
