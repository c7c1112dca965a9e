/**
 * The dashboard served by the Worker (bundled by wrangler, run by workerd through Miniflare) in headless
 * Chromium: the JSX pages, the bundled client script and uPlot come from the Worker itself, and the views
 * read the local Postgres (Neon driver, WebSocket proxy) and Redis (@upstash/redis, REST bridge).
 */
import { Miniflare } from 'miniflare';
import { type Browser, chromium } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually } from '../support/agent-process.ts';
import { createPostgresDatabase, type TestDatabase } from '../support/databases.ts';
import { startNeonProxy } from '../support/neon-proxy.ts';
import { serviceAvailable } from '../support/services.ts';
import { startUpstashBridge, type UpstashBridge } from '../support/upstash-bridge.ts';
import { bundleWorker, workerModules } from '../support/worker-bundle.ts';

const available = (await serviceAvailable('postgres')) && (await serviceAvailable('redis'));
const REDIS_DB_URL = 'redis://127.0.0.1:6379/11';
const ADMIN_TOKEN = 'workers-dashboard-admin-token-0123456789';

describe.runIf(available)('dashboard on the Worker, in headless Chromium', () => {
  let database: TestDatabase;
  let bridge: UpstashBridge;
  let proxy: Awaited<ReturnType<typeof startNeonProxy>>;
  let mf: Miniflare;
  let url: string;
  let browser: Browser;

  beforeAll(async () => {
    const bundle = bundleWorker();
    database = await createPostgresDatabase();
    bridge = await startUpstashBridge({ redisUrl: REDIS_DB_URL });
    proxy = await startNeonProxy();
    mf = new Miniflare({
      ...workerModules(bundle),
      host: '127.0.0.1',
      port: 0,
      bindings: {
        DATABASE_URL: database.url!,
        UPSTASH_REDIS_REST_URL: bridge.url,
        UPSTASH_REDIS_REST_TOKEN: bridge.token,
        NEON_WS_PROXY: proxy.url,
        ADMIN_TOKEN,
      },
    });
    url = (await mf.ready).toString().replace(/\/$/, '');
    browser = await chromium.launch({
      executablePath: '/usr/bin/chromium',
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
    });
  }, 120_000);

  afterAll(async () => {
    await browser?.close();
    await mf?.dispose();
    await proxy?.close();
    await bridge?.close();
    await database?.close();
  });

  it('serves the pages and their script, asks for the token, then shows the cluster and the chart', async () => {
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    page.on('console', (m) => {
      if (m.type() === 'error' && /Content Security Policy/i.test(m.text())) errors.push(m.text());
    });
    const submitted = await fetch(`${url}/api/v1/jobs/submit`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${ADMIN_TOKEN}` },
      body: JSON.stringify({ script: 'true', cpus: 1, name: 'from-the-edge' }),
    });
    const job = (await submitted.json()) as { id: number };
    await page.goto(url);
    await page.locator('#token-box').waitFor({ state: 'visible', timeout: 15_000 });
    await page.locator('#token-input').fill(ADMIN_TOKEN);
    await page.locator('#token-input').press('Enter');
    await page.locator(`tr[data-job="${job.id}"]`).waitFor({ timeout: 15_000 });
    expect(await page.locator('#total').textContent()).toBe('0');
    expect(await page.locator('#no-workers').count()).toBe(1);
    await eventually(async () => (await page.locator('#chart canvas').count()) === 1, { what: 'uPlot' });
    await page.goto(`${url}/ui/jobs/${job.id}`);
    await eventually(async () => (await page.locator('#d-h').textContent())?.includes('from-the-edge'), {
      what: 'the job page',
    });
    expect(errors).toEqual([]);
    await page.close();
  });
});
