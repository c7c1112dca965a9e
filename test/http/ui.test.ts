/**
 * The dashboard's server side: the page at `/` (public for browsers only), its read-only JSON
 * (`/api/v1/ui/jobs` with `q`, `/api/v1/ui/utilization`) and the utilization samples the backstop records.
 */
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { recordUtilizationSample } from '../../functions/domain/dashboard.ts';
import { runBackstop } from '../../functions/domain/maintenance.ts';
import { query } from '../../functions/domain/sql.ts';
import { errorOf, type SecureApp, secureApp } from '../security/support.ts';
import { availableBackends, type Backend } from '../support/cluster.ts';

const backends = await availableBackends();

describe.each(backends)('dashboard server side on $name', (factory) => {
  let backend: Backend;
  let s: SecureApp;
  const samples = () =>
    query<{ at: Date | string; total_cpus: number; live_workers: number }>(
      backend.db.db,
      sql`SELECT at, total_cpus, live_workers FROM utilization_samples ORDER BY at`,
    );

  beforeAll(async () => {
    backend = await factory.create({ keyPrefix: `ui-${Date.now()}:` });
    s = secureApp(backend);
    await backend.db.db.execute(sql`DELETE FROM utilization_samples`);
  });
  afterAll(async () => {
    await backend?.close();
  });

  it('records at most one sample a minute, from live workers, and drops samples older than 7 days', async () => {
    await backend.db.db.execute(
      sql`INSERT INTO workers (id, hostname, cpus, allocated_cpus, session) VALUES
            ('ui-live', 'h1', 8, 2, 's1'), ('ui-live2', 'h2', 4, 0, 's2')`,
    );
    await backend.db.db.execute(
      sql`INSERT INTO workers (id, hostname, cpus, session, status, down_at) VALUES ('ui-down', 'h3', 16, 's3', 'down', now())`,
    );
    await backend.db.db.execute(
      sql`INSERT INTO utilization_samples VALUES (now() - interval '8 days', 1, 1, 1), (now() - interval '6 days', 2, 2, 2)`,
    );
    const minute = async () =>
      (await query<{ m: string }>(backend.db.db, sql`SELECT date_trunc('minute', now())::text AS m`))[0]?.m;
    const firstMinute = await minute();
    await recordUtilizationSample(s.harness.ctx);
    await recordUtilizationSample(s.harness.ctx);
    await runBackstop(s.harness.ctx);
    // Once a minute: a second sample only if a minute began meanwhile.
    const minutes = firstMinute === (await minute()) ? 1 : 2;
    const rows = await samples();
    expect(rows).toHaveLength(1 + minutes); // the 6-day-old one and this minute's, once
    expect(rows[1]).toMatchObject({ total_cpus: 12, live_workers: 2 });
    const at = new Date(rows[1]?.at ?? 0);
    expect(at.getUTCSeconds()).toBe(0);
  });

  it('lists live workers, then those down (or silent) within the hour as down', async () => {
    const res = await s.request('GET', '/api/v1/ui/workers');
    expect(res.status).toBe(200);
    const { workers, next_after } = (await res.json()) as {
      workers: { worker_id: string; status: string }[];
      next_after: string | null;
    };
    // Live is a heartbeat within the TTL and not down (the row a heartbeat refreshes with the registry key).
    expect(workers.map((w) => [w.worker_id, w.status])).toEqual([
      ['ui-down', 'down'],
      ['ui-live', 'ready'],
      ['ui-live2', 'ready'],
    ]);
    expect(next_after).toBeNull();
    // Keyset pages: two, then the rest after the last id shown.
    const first = (await (await s.request('GET', '/api/v1/ui/workers?limit=2')).json()) as {
      workers: { worker_id: string }[];
      next_after: string | null;
    };
    expect(first.workers.map((w) => w.worker_id)).toEqual(['ui-down', 'ui-live']);
    expect(first.next_after).toBe('ui-live');
    const rest = (await (await s.request('GET', '/api/v1/ui/workers?limit=2&after=ui-live')).json()) as {
      workers: { worker_id: string }[];
      next_after: string | null;
    };
    expect(rest.workers.map((w) => w.worker_id)).toEqual(['ui-live2']);
    expect(rest.next_after).toBeNull();
    expect((await s.request('GET', '/api/v1/ui/workers?live=true')).status).toBe(200);
    for (const bad of [
      'limit=0',
      'limit=501',
      'live=maybe',
      'after=',
      'after=%00',
      'after=a%2Fb',
      `after=${'x'.repeat(256)}`,
      'nope=1',
    ]) {
      expect((await s.request('GET', `/api/v1/ui/workers?${bad}`)).status, bad).toBe(400);
    }
  });

  it('bounds /api/v1/dashboard to the first 50 live workers and says where the rest are', async () => {
    // The earlier tests' workers fell silent: no heartbeat for longer than the TTL.
    await backend.db.db.execute(
      sql`UPDATE workers SET last_heartbeat = now() - interval '10 minutes' WHERE id IN ('ui-live', 'ui-live2')`,
    );
    const now = new Date().toISOString();
    await backend.db.db.execute(
      sql`INSERT INTO workers (id, hostname, cpus, allocated_cpus, session, status)
          SELECT 'dash-' || lpad(g::text, 3, '0'), 'h', 2, 0, 's', CASE WHEN g = 1 THEN 'draining' ELSE 'ready' END
          FROM generate_series(1, 52) g`,
    );
    for (let g = 1; g <= 52; g++) {
      await s.harness.ctx.registry.putWorker(
        {
          worker_id: `dash-${String(g).padStart(3, '0')}`,
          cpus: 2,
          status: g === 1 ? 'draining' : 'ready',
          hostname: 'h',
          registered_at: now,
          last_heartbeat: now,
        },
        60,
      );
    }
    const dash = (await (await s.request('GET', '/api/v1/dashboard')).json()) as {
      resources: { total_cpus: number; available_cpus: number };
      workers: { worker_id: string }[];
      workers_page: { live_workers: number; limit: number; next: string | null };
    };
    // Capacity counts every live worker; the list holds the first 50.
    expect(dash.resources.total_cpus).toBe(104);
    expect(dash.resources.available_cpus).toBe(102); // the draining worker's 2 CPUs are not available
    expect(dash.workers).toHaveLength(50);
    expect(dash.workers.at(-1)?.worker_id).toBe('dash-050');
    expect(dash.workers_page).toEqual({
      live_workers: 52,
      limit: 50,
      next: '/api/v1/ui/workers?after=dash-050&live=true',
    });
    const rest = (await (await s.request('GET', dash.workers_page.next!)).json()) as {
      workers: { worker_id: string; status: string }[];
      next_after: string | null;
    };
    expect(rest.workers.map((w) => w.worker_id)).toEqual(['dash-051', 'dash-052']);
    expect(rest.next_after).toBeNull();
    const overview = await (await s.request('GET', '/api/v1/ui/fragments/overview')).text();
    expect(overview).toContain('<dd id="workers-live">52</dd>');
    expect(overview).toContain('<dd id="workers-draining">1</dd>');
    expect(overview).toContain('<dd id="total">104</dd>');
    for (let g = 1; g <= 52; g++)
      await s.harness.ctx.registry.removeWorker(`dash-${String(g).padStart(3, '0')}`);
    // Their registry keys are gone (a flushed or restarted Redis) but their heartbeats are fresh: still live.
    const afterFlush = (await (await s.request('GET', '/api/v1/dashboard')).json()) as {
      resources: { total_cpus: number };
      workers_page: { live_workers: number };
    };
    expect(afterFlush.resources.total_cpus).toBe(104);
    expect(afterFlush.workers_page.live_workers).toBe(52);
    await backend.db.db.execute(sql`DELETE FROM workers WHERE id LIKE 'dash-%'`);
  });

  it('serves utilization for the last hour and 24 h', async () => {
    await backend.db.db.execute(sql`DELETE FROM utilization_samples`);
    await backend.db.db.execute(
      sql`INSERT INTO utilization_samples VALUES (date_trunc('minute', now()) - interval '30 minutes', 10, 5, 1),
            (date_trunc('minute', now()) - interval '3 hours', 10, 10, 1), (date_trunc('minute', now()), 12, 2, 2)`,
    );
    const hour = (await (await s.request('GET', '/api/v1/ui/utilization')).json()) as {
      window: string;
      samples: { allocated_cpus: number }[];
    };
    expect(hour.window).toBe('1h');
    expect(hour.samples.map((x) => x.allocated_cpus)).toEqual([5, 2]);
    const day = (await (await s.request('GET', '/api/v1/ui/utilization?window=24h')).json()) as {
      samples: unknown[];
    };
    expect(day.samples).toHaveLength(3);
    expect((await s.request('GET', '/api/v1/ui/utilization?window=7d')).status).toBe(400);
  });

  it('lists jobs with q (name or account, case-insensitive, LIKE characters literal) and state', async () => {
    const submit = async (body: Record<string, unknown>) =>
      (await (
        await s.request('POST', '/api/v1/jobs/submit', { body: { script: 'true', cpus: 1, ...body } })
      ).json()) as {
        id: number;
      };
    const a = await submit({ name: 'Train-Model', account: 'ml' });
    const b = await submit({ name: 'etl', account: 'Data_Team' });
    const c = await submit({ name: '100%done' });
    const ids = async (qs: string) =>
      (
        (await (await s.request('GET', `/api/v1/ui/jobs?${qs}`)).json()) as { jobs: { id: number }[] }
      ).jobs.map((j) => j.id);
    expect(await ids('q=train')).toEqual([a.id]);
    expect(await ids('q=data_t')).toEqual([b.id]);
    expect(await ids('q=_')).toEqual([b.id]);
    expect(await ids('q=%25')).toEqual([c.id]);
    expect(await ids('q=ML&state=PENDING,RUNNING,COMPLETED')).toEqual([a.id]);
    expect(await ids('state=FAILED')).toEqual([]);
    expect((await s.request('GET', '/api/v1/ui/jobs?state=NOPE')).status).toBe(400);
    expect((await s.request('GET', '/api/v1/ui/jobs?nope=1')).status).toBe(400);
  });

  it('serves the page to browsers without a token; the API behind it keeps its tokens and scopes', async () => {
    const owner = await s.token(['jobs:read', 'jobs:write'], undefined, 'alice');
    const agent = await s.token(['agent']);
    const page = await s.request('GET', '/', { headers: { accept: 'text/html,application/xhtml+xml' } });
    expect(page.status).toBe(200);
    const html = await page.text();
    expect(html).toContain('<title>Conductor</title>');
    expect(html.startsWith('<!doctype html>')).toBe(true); // standards mode, not quirks
    expect(html).not.toContain('ui-live'); // the page holds no data: its script reads the API
    // No inline script or style: the page loads its own, from this server.
    const csp = page.headers.get('content-security-policy') ?? '';
    expect(csp).toContain("script-src 'self'");
    expect(csp).not.toContain('unsafe-inline');
    const script = /<script src="(\/ui\/assets\/dashboard-[0-9a-f]{12}\.js)"/.exec(html)?.[1];
    expect(script).toBeDefined();
    const asset = await s.request('GET', script!);
    expect(asset.status).toBe(200);
    expect(asset.headers.get('content-type')).toContain('text/javascript');
    expect(asset.headers.get('cache-control')).toContain('immutable');
    expect(await asset.text()).toContain('uplot');
    expect((await s.request('GET', '/ui/assets/dashboard-000000000000.js')).status).toBe(404);
    for (const path of ['/ui/nodes', '/ui/nodes/ui-live', '/ui/jobs/1']) {
      const shell = await s.request('GET', path, { headers: { accept: 'text/html' } });
      expect(shell.status, path).toBe(200);
      expect(shell.headers.get('content-security-policy'), path).toBe(csp);
    }
    expect((await s.request('GET', '/')).status).toBe(401); // the JSON index needs a token, as before
    for (const path of ['overview', 'jobs', 'jobs/1', 'nodes', 'nodes/ui-live']) {
      expect((await s.request('GET', `/api/v1/ui/fragments/${path}`)).status, path).toBe(401);
    }
    expect((await s.request('GET', '/api/v1/ui/jobs')).status).toBe(401);
    expect((await s.request('GET', '/api/v1/ui/utilization')).status).toBe(401);
    expect((await s.request('GET', '/api/v1/ui/workers')).status).toBe(401);
    const byAgent = await s.request('GET', '/api/v1/ui/jobs', { token: agent.token });
    expect(byAgent.status).toBe(403);
    expect((await errorOf(byAgent)).code).toBe('insufficient_scope');
    const writer = await s.token(['jobs:write']);
    expect((await s.request('GET', '/api/v1/ui/jobs', { token: writer.token })).status).toBe(403);
    // A non-admin sees only its owner's jobs.
    const mine = await s.request('POST', '/api/v1/jobs/submit', {
      token: owner.token,
      body: { script: 'true', cpus: 1, name: 'alices' },
    });
    const mineId = ((await mine.json()) as { id: number }).id;
    const seen = (await (await s.request('GET', '/api/v1/ui/jobs', { token: owner.token })).json()) as {
      jobs: { id: number }[];
    };
    expect(seen.jobs.map((j) => j.id)).toEqual([mineId]);
    // The views, as HTML fragments, with the same rules.
    const overview = await s.request('GET', '/api/v1/ui/fragments/overview', { token: owner.token });
    expect(overview.headers.get('content-type')).toContain('text/html');
    expect(await overview.text()).toContain('No active workers: start one with npx conductor-agent');
    const jobsHtml = await (
      await s.request('GET', '/api/v1/ui/fragments/jobs', { token: owner.token })
    ).text();
    expect(jobsHtml).toContain(`data-job="${mineId}"`);
    expect(jobsHtml).not.toContain('Train-Model'); // another owner's
    const jobHtml = await (
      await s.request('GET', `/api/v1/ui/fragments/jobs/${mineId}`, { token: owner.token })
    ).text();
    expect(jobHtml).toContain(`Job #${mineId} alices`);
    expect(jobHtml).toContain('Cancel job'); // jobs:write, and the job has not ended
    expect(jobHtml).not.toContain('Drain');
    const reader = await s.token(['jobs:read'], undefined, 'alice');
    const readOnly = await (
      await s.request('GET', `/api/v1/ui/fragments/jobs/${mineId}`, { token: reader.token })
    ).text();
    expect(readOnly).not.toContain('Cancel job');
    const others = await s.request('GET', `/api/v1/ui/fragments/jobs/1`, { token: owner.token });
    expect(others.status).toBe(404);
    const node = await s.request('GET', '/api/v1/ui/fragments/nodes/ui-live', { token: owner.token });
    expect(node.status).toBe(200);
    expect(await node.text()).toContain('Node ui-live');
    expect(
      await (await s.request('GET', '/api/v1/ui/fragments/nodes', { token: owner.token })).text(),
    ).not.toContain('>Actions<'); // drains need admin
    const admin = await s.token(['admin']);
    expect(
      await (await s.request('GET', '/api/v1/ui/fragments/nodes', { token: admin.token })).text(),
    ).toContain('>Actions<');
    for (const [path, status] of [
      ['nodes/no-such-node', 404],
      ['nodes/bad%20id', 400],
      ['jobs/0', 400],
      ['jobs/abc', 400],
      ['jobs/99999999999999999999', 400],
      ['jobs?state=NOPE', 400],
      ['nodes?limit=x', 400],
    ] as const) {
      expect(
        (await s.request('GET', `/api/v1/ui/fragments/${path}`, { token: admin.token })).status,
        path,
      ).toBe(status);
    }
  });

  it('keeps the page small: under 12 KiB gzipped', async () => {
    const res = await s.request('GET', '/', { headers: { accept: 'text/html', 'accept-encoding': 'gzip' } });
    expect(res.headers.get('content-encoding')).toBe('gzip');
    const gzipped = (await res.arrayBuffer()).byteLength;
    expect(gzipped).toBeLessThan(12 * 1024);
  });
});
