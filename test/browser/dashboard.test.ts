/**
 * The web dashboard in a real headless Chromium (Debian's /usr/bin/chromium driven by playwright-core)
 * against a real control plane with real agents: every page (overview, nodes, a node, a job), the token
 * prompt, and the actions (cancel, drain, undrain), in a browser set to another time zone than the server's.
 */
import { copyFileSync, mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { sql } from 'drizzle-orm';
import { type Browser, chromium, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { query } from '../../functions/domain/sql.ts';
import type { RunningServer } from '../../functions/node/server.ts';
import { AgentProcess, eventually } from '../support/agent-process.ts';
import {
  availableBackends,
  type Backend,
  type RecordingLogger,
  startTestServer,
  testConfig,
} from '../support/cluster.ts';

const ARTIFACTS = fileURLToPath(new URL('./artifacts/', import.meta.url));
const DOCS = fileURLToPath(new URL('../../docs/', import.meta.url));
const CHROMIUM = '/usr/bin/chromium';

// The local default backend: the page is the same whatever the store.
const factory = (await availableBackends()).at(-1);
if (!factory) throw new Error('no backend');

interface Job {
  id: number;
  state: string;
}

describe('web dashboard in headless Chromium', () => {
  let backend: Backend;
  let server: RunningServer & { logger: RecordingLogger };
  let browser: Browser;
  let page: Page;
  const agents: AgentProcess[] = [];

  beforeAll(async () => {
    mkdirSync(ARTIFACTS, { recursive: true });
    backend = await factory.create();
    server = await startTestServer(
      backend,
      testConfig({ heartbeatIntervalSeconds: 1, workerTtlSeconds: 5, scheduleIntervalSeconds: 1 }),
    );
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
    });
    page = await browser.newPage({ viewport: { width: 1200, height: 900 }, timezoneId: 'Asia/Tokyo' });
    watchCsp(page);
  });
  afterAll(async () => {
    await browser?.close();
    await Promise.allSettled(agents.map((a) => a.stop().catch(() => a.kill9())));
    await server?.close();
    await backend?.close();
  });

  const api = async <T>(method: string, path: string, body?: unknown, token?: string): Promise<T> => {
    const res = await fetch(`${server.url}${path}`, {
      method,
      headers: {
        'content-type': 'application/json',
        ...(token ? { authorization: `Bearer ${token}` } : {}),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${await res.text()}`);
    return (await res.json()) as T;
  };
  const text = async (selector: string) => (await page.locator(selector).textContent()) ?? '';
  /** Every page must run under its CSP without a violation (no inline script or style). */
  const cspViolations: string[] = [];
  function watchCsp(p: Page) {
    p.on('console', (m) => {
      if (m.type() === 'error' && /Content Security Policy/i.test(m.text())) cspViolations.push(m.text());
    });
    p.on('pageerror', (e) => cspViolations.push(`page error: ${e.message}`));
  }
  const chartCaption = async () => text('#chart-caption');
  const captionCount = async () => Number(/: (\d+) samples/.exec(await chartCaption())?.[1]);

  it('serves the pages as public HTML to browsers and the JSON index to everyone else', async () => {
    const html = await fetch(`${server.url}/`, {
      headers: { accept: 'text/html', 'accept-encoding': 'gzip' },
    });
    expect(html.status).toBe(200);
    expect(html.headers.get('content-type')).toContain('text/html');
    expect(await html.text()).toContain('<title>Conductor</title>');
    const json = await fetch(`${server.url}/`);
    expect(await json.json()).toMatchObject({ name: 'conductor', api: '/api/v1' });
  });

  it('shows the empty state with no workers, with landmarks and a skip link', async () => {
    await page.goto(server.url);
    const empty = page.locator('#no-workers');
    await empty.waitFor({ timeout: 10_000 });
    expect(await empty.textContent()).toContain('No active workers: start one with npx conductor-agent');
    expect(await empty.textContent()).toContain(`export CONDUCTOR_URL=${server.url}`);
    expect(await empty.textContent()).toContain('export TOTAL_CPUS=96');
    expect(await text('#total')).toBe('0');
    expect(await page.evaluate<string>('document.compatMode')).toBe('CSS1Compat'); // <!doctype html>
    expect(await page.getByRole('banner').count()).toBe(1);
    expect(await page.getByRole('navigation', { name: 'Main' }).count()).toBe(1);
    expect(await page.getByRole('main').count()).toBe(1);
    expect(await page.getByRole('link', { name: 'Overview' }).getAttribute('aria-current')).toBe('page');
    await page.keyboard.press('Tab');
    expect(await page.evaluate<string | null>('document.activeElement.textContent')).toBe('Skip to content');
    await page.screenshot({ path: `${ARTIFACTS}empty.png`, fullPage: true });
  });

  it('shows two live agents: totals on the overview, rows on the nodes page', async () => {
    agents.push(
      new AgentProcess('ui-a', server.url, { cpus: 2 }),
      new AgentProcess('ui-b', server.url, { cpus: 3 }),
    );
    await Promise.all(agents.map((a) => a.registered()));
    await eventually(async () => (await text('#total')) === '5', { what: 'total 5 CPUs on the page' });
    expect(await text('#available')).toBe('5');
    expect(await text('#utilization')).toBe('0%');
    expect(await text('#workers-live')).toBe('2');
    expect(await page.locator('#no-workers').count()).toBe(0);
    await page.getByRole('link', { name: 'All workers →' }).click();
    await page.waitForURL(`${server.url}/ui/nodes`);
    expect(await page.getByRole('link', { name: 'Nodes' }).getAttribute('aria-current')).toBe('page');
    await page.locator('tr[data-worker="ui-b"]').waitFor({ timeout: 10_000 });
    const row = await text('tr[data-worker="ui-b"]');
    expect(row).toContain('3');
    expect(row).toContain('ready');
    expect(row).toMatch(/\d+ s ago/);
    await page.goto(server.url);
  });

  it('shows a submitted job appear, run and finish, with the allocation while it runs', async () => {
    const job = await api<Job>('POST', '/api/v1/jobs/submit', {
      script: 'echo started; sleep 4; echo finished',
      cpus: 2,
      name: 'ui-run',
      account: 'dash',
    });
    const row = page.locator(`tr[data-job="${job.id}"]`);
    await row.waitFor({ timeout: 10_000 });
    await eventually(async () => ((await row.textContent()) ?? '').includes('RUNNING'), {
      what: 'RUNNING on the page',
    });
    await eventually(async () => (await text('#allocated')) === '2', { what: 'allocated 2 on the page' });
    expect(await text('#utilization')).toBe('40%');
    expect(await text('#count-RUNNING')).toBe('1');
    // The submit time in the browser's time zone (Tokyo), not the server's UTC.
    expect(await row.locator('time').textContent()).toMatch(/GMT\+9|JST/);
    expect(await row.locator('time').getAttribute('datetime')).toMatch(/^\d{4}-\d\d-\d\dT.*Z$/);
    // The backstop has recorded this minute's sample; uPlot draws it.
    await eventually(async () => (await captionCount()) >= 1, { what: 'a sample on the chart' });
    expect(await page.locator('#chart canvas').count()).toBe(1);
    // An hour of earlier samples (as an hour of backstop ticks would have left): the chart draws them all.
    await backend.db.db.execute(
      sql`INSERT INTO utilization_samples (at, total_cpus, allocated_cpus, live_workers)
          SELECT (SELECT max(at) FROM utilization_samples) - make_interval(mins => m), 5,
                 greatest(0, least(5, round(2.5 + 2 * sin(m / 9.0) + sin(m * 1.7) * 0.6)))::int, 2
          FROM generate_series(1, 58) AS m ON CONFLICT DO NOTHING`,
    );
    await page.reload();
    // Counted back from the recorded sample, not from now: a minute turning meanwhile costs none of them.
    await eventually(async () => (await captionCount()) >= 59, { what: 'an hour of samples on the chart' });
    await row.waitFor();
    await page.screenshot({ path: `${ARTIFACTS}dashboard.png`, fullPage: true });
    mkdirSync(DOCS, { recursive: true });
    // The README's screenshot: refreshed on request, so that a test run leaves the committed tree alone.
    if (process.env.CONDUCTOR_UPDATE_SCREENSHOTS === '1')
      copyFileSync(`${ARTIFACTS}dashboard.png`, `${DOCS}dashboard.png`);
    await eventually(async () => ((await row.textContent()) ?? '').includes('COMPLETED'), {
      what: 'COMPLETED on the page',
      timeoutMs: 20_000,
    });
  });

  it('switches the utilization chart to 24 h and back to the hour', async () => {
    // Samples from earlier in the day, beyond the hour: only the 24 h chart shows them.
    await backend.db.db.execute(
      sql`INSERT INTO utilization_samples (at, total_cpus, allocated_cpus, live_workers)
          SELECT date_trunc('minute', now()) - make_interval(hours => h), 5, 4, 2
          FROM unnest(ARRAY[3, 9, 20]) AS h ON CONFLICT DO NOTHING`,
    );
    const hour = page.locator('button[data-window="1h"]');
    const day = page.locator('button[data-window="24h"]');
    // The page redraws the chart every 30 s: a sample recorded meanwhile may add one.
    const about = (actual: number, expected: number) =>
      expect(Math.abs(actual - expected)).toBeLessThanOrEqual(1);
    expect(await hour.getAttribute('aria-pressed')).toBe('true');
    expect(await day.getAttribute('aria-pressed')).toBe('false');
    expect(await chartCaption()).toMatch(/^Utilization over the last hour: \d+ samples/);

    const [dayResponse] = await Promise.all([
      page.waitForResponse((r) => r.url().includes('/api/v1/ui/utilization?window=24h')),
      day.click(),
    ]);
    const daySamples = ((await dayResponse.json()) as { samples: unknown[] }).samples;
    expect(daySamples.length).toBeGreaterThanOrEqual(4); // the hour's 10-minute buckets and the 3 earlier ones
    await eventually(async () => (await chartCaption()).includes('24 hours'), { what: 'the 24 h chart' });
    expect(await day.getAttribute('aria-pressed')).toBe('true');
    expect(await hour.getAttribute('aria-pressed')).toBe('false');
    about(await captionCount(), daySamples.length);
    expect(await page.locator('#chart canvas').count()).toBe(1);
    await page.screenshot({ path: `${ARTIFACTS}dashboard-24h.png` });

    const [hourResponse] = await Promise.all([
      page.waitForResponse((r) => r.url().includes('/api/v1/ui/utilization?window=1h')),
      hour.click(),
    ]);
    const hourSamples = ((await hourResponse.json()) as { samples: unknown[] }).samples;
    await eventually(async () => (await chartCaption()).includes('hour:'), { what: 'the hour chart again' });
    expect(await hour.getAttribute('aria-pressed')).toBe('true');
    about(await captionCount(), hourSamples.length);
    expect(hourSamples.length).toBeGreaterThan(daySamples.length); // one a minute against one per 10 minutes
  });

  it('opens a job and shows its output live while it runs, then its exit code', async () => {
    const job = await api<Job>('POST', '/api/v1/jobs/submit', {
      script: 'echo "line one from $CONDUCTOR_JOB_ID"; sleep 5; echo line two',
      cpus: 1,
      name: 'ui-detail',
    });
    await page.locator(`a[href="/ui/jobs/${job.id}"]`).click({ timeout: 10_000 });
    await page.waitForURL(`${server.url}/ui/jobs/${job.id}`);
    await page.locator('#d-h').waitFor();
    expect(await page.title()).toBe(`Job ${job.id} · Conductor`);
    expect(await text('#d-h')).toContain(`Job #${job.id} ui-detail`);
    expect(await text('#script')).toContain('line one');
    await eventually(async () => (await text('#stdout')).includes(`line one from ${job.id}`), {
      what: 'live output',
      timeoutMs: 15_000,
    });
    expect(await text('#stdout')).not.toContain('line two'); // still running: the output is live
    expect(await text('[data-field="State"]')).toBe('RUNNING');
    expect(await text('#attempts')).toContain('Placed 1 time');
    const node = await text('[data-field="Node"]');
    expect(['ui-a', 'ui-b']).toContain(node);
    await page.screenshot({ path: `${ARTIFACTS}job.png`, fullPage: true });
    await eventually(async () => (await text('#stdout')).includes('line two'), {
      what: 'the rest of the output',
    });
    await eventually(async () => (await text('[data-field="Exit code"]')) === '0:0', {
      what: 'exit code 0:0',
    });
    expect(await text('[data-field="State"]')).toBe('COMPLETED');
    expect(await page.locator('#cancel').count()).toBe(0);
    expect(await text('[data-field="Ended"]')).toMatch(/GMT\+9|JST/);
  });

  it("leads the old single page's job links (/#job/<id>) to the job's page", async () => {
    const [latest] = (await api<{ jobs: Job[] }>('GET', '/api/v1/jobs?limit=1')).jobs;
    await page.goto(`${server.url}/#job/${latest!.id}`);
    await page.waitForURL(`${server.url}/ui/jobs/${latest!.id}`);
    await page.locator('#d-h').waitFor();
  });

  it('says so on a job page when the output is past retention (410 logs_expired)', async () => {
    const [row] = await query<{ id: string | number }>(
      backend.db.db,
      sql`INSERT INTO jobs (name, script, cpus, state, exit_code, start_time, end_time)
          VALUES ('ui-expired', 'echo old', 1, 'COMPLETED', '0:0', now() - interval '41 days',
                  now() - interval '40 days') RETURNING id`,
    );
    await page.goto(`${server.url}/ui/jobs/${row!.id}`);
    await eventually(async () => (await text('#stdout')).includes('no longer kept'), {
      what: 'the expired-output note',
    });
    expect(await text('[data-field="State"]')).toBe('COMPLETED');
    expect(await text('#error')).toBe('');
  });

  it('says a job that does not exist is not found', async () => {
    await page.goto(`${server.url}/ui/jobs/987654321`);
    await eventually(async () => (await text('#error')).includes('Job 987654321 does not exist'), {
      what: 'the not-found message',
    });
  });

  it('cancels a running job from its page', async () => {
    const job = await api<Job>('POST', '/api/v1/jobs/submit', {
      script: 'sleep 60',
      cpus: 1,
      name: 'ui-cancel',
    });
    await page.goto(`${server.url}/ui/jobs/${job.id}`);
    await eventually(async () => (await text('[data-field="State"]')) === 'RUNNING', { what: 'RUNNING' });
    await page.locator('#cancel').click();
    await eventually(async () => (await text('[data-field="State"]')) === 'CANCELLED', { what: 'CANCELLED' });
    expect((await api<Job>('GET', `/api/v1/jobs/${job.id}`)).state).toBe('CANCELLED');
  });

  it('shows a node: its resources, its running jobs, then the job in its recent history', async () => {
    const job = await api<Job>('POST', '/api/v1/jobs/submit', {
      script: 'sleep 3',
      cpus: 2,
      name: 'ui-on-node',
    });
    const running = await eventually(async () => {
      const j = await api<Job & { node: string | null }>('GET', `/api/v1/jobs/${job.id}`);
      return j.state === 'RUNNING' && j.node ? j : null;
    });
    await page.goto(`${server.url}/ui/nodes/${running.node}`);
    await page.locator('#n-h').waitFor({ timeout: 10_000 });
    expect(await text('#n-h')).toContain(`Node ${running.node}`);
    expect(await text('#node-cpus')).toBe(running.node === 'ui-a' ? '2' : '3');
    await page.locator(`#node-running-jobs tr[data-job="${job.id}"]`).waitFor({ timeout: 10_000 });
    expect(await text('#node-allocated')).toBe('2');
    await page.locator(`#node-history tr[data-job="${job.id}"]`).waitFor({ timeout: 15_000 });
    expect(await text(`#node-history tr[data-job="${job.id}"]`)).toContain('COMPLETED');
    expect(await page.locator(`#node-running-jobs tr[data-job="${job.id}"]`).count()).toBe(0);
    await page.screenshot({ path: `${ARTIFACTS}node.png`, fullPage: true });
  });

  it('filters jobs by state and searches by name or account', async () => {
    await api('POST', '/api/v1/jobs/submit', {
      script: 'true',
      cpus: 1,
      name: 'needle-job',
      account: 'haystack',
    });
    await page.goto(server.url);
    await page.locator('#q').fill('needle');
    const onlyRow = async (name: string) => {
      const rows = await page.locator('tr[data-job]').allTextContents();
      return rows.length === 1 && rows[0]?.includes(name);
    };
    await eventually(() => onlyRow('needle-job'), { what: 'search by name' });
    expect(page.url()).toBe(`${server.url}/?q=needle`); // a reload keeps the filter
    await page.locator('#q').fill('haysta');
    await eventually(() => onlyRow('needle-job'), { what: 'search by account' });
    await page.locator('#q').fill('');
    await page.locator('#state').selectOption('CANCELLED');
    await eventually(() => onlyRow('ui-cancel'), { what: 'state filter' });
    await page.reload();
    await eventually(() => onlyRow('ui-cancel'), { what: 'state filter after a reload' });
    expect(await page.locator('#state').inputValue()).toBe('CANCELLED');
    await page.locator('#state').selectOption('');
  });

  it('drains a worker from the nodes page and puts it back, with the keyboard', async () => {
    await page.goto(`${server.url}/ui/nodes`);
    const drain = page.getByRole('button', { name: 'Drain ui-a' });
    await drain.waitFor({ timeout: 10_000 });
    await drain.focus();
    await new Promise((resolve) => setTimeout(resolve, 3500)); // a refresh re-renders the table: focus stays
    expect(await page.evaluate<string | null>("document.activeElement.getAttribute('aria-label')")).toBe(
      'Drain ui-a',
    );
    await page.keyboard.press('Enter');
    await eventually(async () => (await text('tr[data-worker="ui-a"]')).includes('draining'), {
      what: 'draining on the page',
    });
    const workers = await api<{ workers: { worker_id: string; status: string }[] }>('GET', '/api/v1/workers');
    expect(workers.workers.find((w) => w.worker_id === 'ui-a')?.status).toBe('draining');
    await page.goto(server.url);
    await eventually(async () => (await text('#available')) === '3', {
      what: 'available without the drained node',
    });
    expect(await text('#workers-draining')).toBe('1');
    await page.goto(`${server.url}/ui/nodes/ui-a`);
    await page.getByRole('button', { name: 'Undrain ui-a' }).click({ timeout: 10_000 });
    await eventually(async () => (await text('[data-field="Status"]')) === 'ready', { what: 'ready again' });
  });

  it('pages through many workers, 50 at a time in id order', async () => {
    await backend.db.db.execute(
      sql`INSERT INTO workers (id, hostname, cpus, session, status, down_at)
          SELECT 'zz-' || lpad(g::text, 3, '0'), 'h', 4, 's', 'down', now() FROM generate_series(1, 60) g`,
    );
    await page.goto(`${server.url}/ui/nodes`);
    await page.locator('tr[data-worker]').first().waitFor({ timeout: 10_000 });
    const first = await page
      .locator('tr[data-worker]')
      .evaluateAll((rows) => rows.map((r) => r.getAttribute('data-worker')));
    expect(first).toHaveLength(50);
    expect(first.slice(0, 2)).toEqual(['ui-a', 'ui-b']);
    expect(first.at(-1)).toBe('zz-048');
    await page.getByRole('link', { name: 'More workers →' }).click();
    await page.waitForURL(`${server.url}/ui/nodes?after=zz-048`);
    await page.locator('tr[data-worker="zz-049"]').waitFor({ timeout: 10_000 });
    expect(await page.locator('tr[data-worker]').count()).toBe(12);
    expect(await page.getByRole('link', { name: 'More workers →' }).count()).toBe(0);
    await backend.db.db.execute(sql`DELETE FROM workers WHERE id LIKE 'zz-%'`);
  });

  it('is usable on a phone: no horizontal page scroll on any page', async () => {
    const phone = await browser.newPage({ viewport: { width: 375, height: 740 }, isMobile: true });
    watchCsp(phone);
    const [latest] = (await api<{ jobs: Job[] }>('GET', '/api/v1/jobs?limit=1')).jobs;
    for (const [path, ready] of [
      ['/', '#total'],
      ['/ui/nodes', 'tr[data-worker="ui-a"]'],
      ['/ui/nodes/ui-a', '#n-h'],
      [`/ui/jobs/${latest!.id}`, '#d-h'],
    ] as const) {
      await phone.goto(`${server.url}${path}`);
      await phone.locator(ready).waitFor({ timeout: 10_000 });
      const overflow = await phone.evaluate<number>(
        'document.documentElement.scrollWidth - window.innerWidth',
      );
      expect(overflow, path).toBeLessThanOrEqual(0);
    }
    await phone.goto(server.url);
    await phone.locator('#total').waitFor();
    await phone.screenshot({ path: `${ARTIFACTS}phone.png`, fullPage: true });
    await phone.close();
  });

  it('shows a stopped agent as down and the capacity shrinking', async () => {
    await agents[1]?.stop();
    await page.goto(`${server.url}/ui/nodes`);
    await eventually(async () => (await text('tr[data-worker="ui-b"]')).includes('down'), {
      what: 'ui-b down on the page',
    });
    expect(await page.getByRole('button', { name: 'Drain ui-b' }).count()).toBe(0);
    await page.goto(server.url);
    await eventually(async () => (await text('#total')) === '2', { what: 'total 2 CPUs' });
    expect(await text('#workers-down')).toBe('1');
  });

  it('asks for a token once the API requires one, and uses the pasted token', async () => {
    const created = await api<{ token: string }>('POST', '/api/v1/tokens', {
      name: 'ui-admin',
      scopes: ['admin'],
    });
    await page.goto(server.url);
    await page.locator('#token-box').waitFor({ state: 'visible', timeout: 10_000 });
    expect(await text('#error')).toContain('A token is needed');
    await page.locator('#token-input').fill(created.token);
    await page.locator('#token-input').press('Enter');
    await page.locator('#token-box').waitFor({ state: 'hidden', timeout: 10_000 });
    await eventually(async () => (await page.locator('tr[data-job]').count()) > 0, {
      what: 'jobs with the token',
    });
    expect(await text('#total')).toBe('2');
    expect(await page.evaluate<string | null>("localStorage.getItem('conductor-token')")).toBe(created.token);
    // The other pages use it too.
    await page.goto(`${server.url}/ui/nodes`);
    await page.getByRole('button', { name: 'Drain ui-a' }).waitFor({ timeout: 10_000 });
    expect(await page.locator('#token-box').isHidden()).toBe(true);
    // A token that reads but does not administer: no drain buttons.
    const reader = await api<{ token: string }>(
      'POST',
      '/api/v1/tokens',
      { name: 'ui-reader', scopes: ['jobs:read'] },
      created.token,
    );
    await page.evaluate(`localStorage.setItem('conductor-token', ${JSON.stringify(reader.token)})`);
    await page.reload();
    await page.locator('tr[data-worker="ui-a"]').waitFor({ timeout: 10_000 });
    expect(await page.getByRole('button', { name: 'Drain ui-a' }).count()).toBe(0);
    // Nor partition buttons on the overview.
    await page.goto(server.url);
    await page.locator('tr[data-partition="default"]').waitFor({ timeout: 10_000 });
    expect(await page.getByRole('button', { name: /^Set partition / }).count()).toBe(0);
  });

  it('ran every page without a Content Security Policy violation or a script error', () => {
    expect(cspViolations).toEqual([]);
  });
});
