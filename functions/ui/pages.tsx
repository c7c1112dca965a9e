/** @jsxImportSource hono/jsx */
import { Hono, type MiddlewareHandler } from 'hono';
import { getRuntimeKey } from 'hono/adapter';
import { compress } from 'hono/compress';
import type { AppEnv } from '../http/auth.ts';
import { ASSETS } from './assets.ts';
import { AccountsPage } from './pages/accounts-page.tsx';
import { JobPage } from './pages/job-page.tsx';
import { NodePage } from './pages/node-page.tsx';
import { NodesPage } from './pages/nodes-page.tsx';
import { OverviewPage } from './pages/overview-page.tsx';
import { ReservationsPage } from './pages/reservations-page.tsx';
import { UsagePage } from './pages/usage-page.tsx';

/** No inline script or style anywhere: the page loads its own script and style sheet, nothing else. */
const CSP =
  "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
  "frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/**
 * The web dashboard's pages and assets: public (they hold no data; the client script reads the API with the
 * token the user gives it), mounted before authentication. `/` is the dashboard only for browsers (Accept:
 * text/html); every other client falls through to the JSON index.
 */
export function dashboardPages() {
  const headers: MiddlewareHandler = async (c, next) => {
    await next();
    if (c.res.headers.get('content-type')?.startsWith('text/html')) {
      c.header('Cache-Control', 'no-cache');
      c.header('Content-Security-Policy', CSP);
    }
    c.header('X-Content-Type-Options', 'nosniff');
  };
  // On Workers, Cloudflare compresses at its edge, and workerd would gzip a gzipped body again.
  const compression: MiddlewareHandler = getRuntimeKey() === 'workerd' ? (_c, next) => next() : compress();
  // Only these paths: a sub-app's `*` would reach every route of the app it is mounted in.
  return new Hono<AppEnv>()
    .use('/', compression, headers)
    .use('/ui/*', compression, headers)
    .get('/', async (c, next) => {
      if (!/\btext\/html\b/.test(c.req.header('accept') ?? '')) return next();
      return c.html(<OverviewPage query={new URL(c.req.url).searchParams} />);
    })
    .get('/ui/nodes', (c) => c.html(<NodesPage query={new URL(c.req.url).searchParams} />))
    .get('/ui/nodes/:id{[A-Za-z0-9][A-Za-z0-9._-]{0,254}}', (c) =>
      c.html(<NodePage id={c.req.param('id')} />),
    )
    .get('/ui/usage', (c) => c.html(<UsagePage />))
    .get('/ui/reservations', (c) => c.html(<ReservationsPage range={c.req.query('range')} />))
    .get('/ui/accounts', (c) => c.html(<AccountsPage />))
    .get('/ui/jobs/:id{[0-9]{1,15}}', (c) => c.html(<JobPage id={Number(c.req.param('id'))} />))
    .get('/ui/assets/:file', (c) => {
      const asset = ASSETS[c.req.path];
      if (!asset) return c.notFound();
      c.header('Content-Type', asset.type);
      c.header('Cache-Control', 'public, max-age=31536000, immutable');
      return c.body(asset.body);
    });
}
