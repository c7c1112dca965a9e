/**
 * /api/docs in a real headless Chromium, from the real Node server: Swagger UI renders every operation of
 * /api/v1/openapi.json under the page's Content-Security-Policy, and the page asks nothing of any other host.
 */
import { existsSync } from 'node:fs';
import { type Browser, chromium } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningServer } from '../../functions/node/server.ts';
import { availableBackends, type Backend, startTestServer } from '../support/cluster.ts';

const CHROMIUM = '/usr/bin/chromium';
const [pglite] = (await availableBackends()).filter((b) => b.name === 'pglite+memory');

describe.runIf(pglite && existsSync(CHROMIUM))('/api/docs in Chromium', () => {
  let backend: Backend;
  let server: RunningServer;
  let browser: Browser;
  beforeAll(async () => {
    backend = await pglite!.create();
    server = await startTestServer(backend);
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--headless', '--no-sandbox', '--disable-gpu'],
    });
  }, 60_000);
  afterAll(async () => {
    await browser?.close();
    await server?.close();
    await backend?.close();
  });

  it('renders every operation offline, with no CSP violation', async () => {
    const page = await browser.newPage();
    const foreign: string[] = [];
    const problems: string[] = [];
    const origin = new URL(server.url).origin;
    await page.route('**/*', (route) => {
      const url = route.request().url();
      if (url.startsWith(origin) || url.startsWith('data:')) return route.continue();
      foreign.push(url);
      return route.abort();
    });
    page.on('console', (message) => {
      if (message.type() === 'error') problems.push(message.text());
    });
    page.on('pageerror', (error) => problems.push(error.message));
    await page.goto(`${server.url}/api/docs`);
    await page.waitForSelector('.opblock', { timeout: 20_000 });
    const doc = (await (await fetch(`${server.url}/api/v1/openapi.json`)).json()) as {
      paths: Record<string, Record<string, unknown>>;
    };
    const operations = Object.values(doc.paths).reduce((n, methods) => n + Object.keys(methods).length, 0);
    expect(await page.locator('.opblock').count()).toBe(operations);
    expect(await page.locator('.opblock-summary-path').allTextContents()).toContain('/api/v1/jobs/submit');
    // Opening an operation renders its schemas and examples (highlighted code, models): still no violation.
    await page.locator('#operations-jobs-submitJob .opblock-summary').click();
    await page.waitForSelector('#operations-jobs-submitJob .opblock-body .highlight-code', {
      timeout: 10_000,
    });
    await page.locator('#operations-jobs-submitJob .try-out__btn').click();
    await page.waitForSelector('#operations-jobs-submitJob textarea.body-param__text', { timeout: 10_000 });
    expect(foreign).toEqual([]);
    expect(problems).toEqual([]);
    await page.close();
  }, 60_000);
});
