/**
 * The dashboard's accounts page in a real headless Chromium against a real control plane: the account tree with
 * shares, limits, users (default marked) and live fair-share; an admin's token adds an account and a user,
 * changes a limit and a default, removes a user, and sees the API's 409 when deleting an account with children;
 * a reader's token gets the same tree and no controls. No inline script or style (the CSP) anywhere.
 */
import { copyFileSync, mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { sql } from 'drizzle-orm';
import { type Browser, chromium, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { query } from '../../functions/domain/sql.ts';
import type { RunningServer } from '../../functions/node/server.ts';
import { eventually } from '../support/agent-process.ts';
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

const factory = (await availableBackends()).at(-1);
if (!factory) throw new Error('no backend');

interface Account {
  name: string;
  parent: string | null;
  max_jobs: number | null;
  max_wall: number | null;
  users: { user: string; default: boolean }[];
}

describe('dashboard accounts page in headless Chromium', () => {
  let backend: Backend;
  let server: RunningServer & { logger: RecordingLogger };
  let browser: Browser;
  let page: Page;
  let admin = '';
  let reader = '';
  const problems: string[] = [];

  const api = async <T>(method: string, path: string, body?: unknown, token = admin): Promise<T> => {
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
  const account = async (name: string) => api<Account>('GET', `/api/v1/accounts/${name}`);

  beforeAll(async () => {
    mkdirSync(ARTIFACTS, { recursive: true });
    backend = await factory.create();
    server = await startTestServer(backend, testConfig());
    // Set up on the open loopback cluster, before the first token makes the API require one.
    for (const [name, body] of [
      ['physics', { fairshare: 3, description: 'the faculty', grp_cpus: 64, grp_gpus: 4 }],
      ['qcd', { parent: 'physics', max_jobs: 2, max_submit_jobs: 10, max_wall: '1-00:00:00' }],
      ['lattice', { parent: 'physics' }],
      ['chemistry', { grp_cpu_mins: 600 }],
    ] as const)
      await api('POST', `/api/v1/accounts/${name}`, body);
    await api('POST', '/api/v1/accounts/qcd/users/alice', {});
    await api('POST', '/api/v1/accounts/qcd/users/bob', {});
    await api('POST', '/api/v1/accounts/chemistry/users/carol', {});
    // Usage as the roll-up trigger records it, in one hour (the same decay): qcd 3 to chemistry's 1.
    await query(
      backend.db.db,
      sql`INSERT INTO usage_hourly (bucket, account, owner, partition, node, cpu_seconds)
          VALUES (date_trunc('hour', now(), 'UTC') - interval '1 hour', 'qcd', 'alice', 'default', 'n1', 3600),
                 (date_trunc('hour', now(), 'UTC') - interval '1 hour', 'chemistry', 'carol', 'default', 'n1', 1200)`,
    );
    admin = (
      await api<{ token: string }>('POST', '/api/v1/tokens', { name: 'acct-admin', scopes: ['admin'] })
    ).token;
    reader = (
      await api<{ token: string }>('POST', '/api/v1/tokens', { name: 'acct-reader', scopes: ['jobs:read'] })
    ).token;
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
    });
    page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
    page.on('console', (m) => {
      if (m.type() === 'error' && /Content Security Policy/i.test(m.text())) problems.push(m.text());
    });
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    page.on('dialog', (d) => d.accept());
  });
  afterAll(async () => {
    await browser?.close();
    await server?.close();
    await backend?.close();
  });

  const useToken = async (token: string) => {
    await page.goto(`${server.url}/ui/accounts`);
    await page.evaluate(`localStorage.setItem('conductor-token', ${JSON.stringify(token)})`);
    await page.reload();
    await page.locator('#accounts-table').waitFor({ timeout: 10_000 });
  };
  const row = (account: string, user?: string) =>
    page.locator(
      user === undefined
        ? `tr.account-row[data-account="${account}"]`
        : `tr.user-row[data-account="${account}"][data-user="${user}"]`,
    );
  const cell = async (account: string, column: string, user?: string) =>
    ((await row(account, user).locator(`td[data-col="${column}"]`).textContent()) ?? '').trim();
  /** A limit as the row shows it (`MaxJobs=2`), '' when none is set. */
  const limit = async (account: string, field: string) => {
    const span = row(account).locator(`[data-limit="${field}"]`);
    return (await span.count()) === 0 ? '' : ((await span.textContent()) ?? '').trim();
  };
  /** The rows as `depth:name` (the user's name on a user's row), top to bottom. */
  const order = async () =>
    page
      .locator('#accounts-table tbody tr')
      .evaluateAll((rows) =>
        rows.map(
          (r) =>
            `${r.querySelector('th')?.getAttribute('data-depth')}:${r.getAttribute('data-user') ?? r.getAttribute('data-account')}`,
        ),
      );

  it('shows the tree with shares, limits, users with their default, and the fair-share computed now', async () => {
    await useToken(reader);
    expect(await order()).toEqual([
      '0:chemistry',
      '1:carol',
      '0:physics',
      '1:lattice',
      '1:qcd',
      '2:alice',
      '2:bob',
    ]);
    expect(await cell('physics', 'shares')).toBe('3');
    expect(await limit('physics', 'grp_tres')).toBe('GrpTRES=cpu=64,gres/gpu=4');
    expect(await row('physics').textContent()).toContain('the faculty');
    expect(await limit('qcd', 'max_jobs')).toBe('MaxJobs=2');
    expect(await limit('qcd', 'max_submit_jobs')).toBe('MaxSubmit=10');
    expect(await limit('qcd', 'max_wall')).toBe('MaxWall=1-00:00:00');
    expect(await limit('chemistry', 'grp_cpu_mins')).toBe('GrpTRESMins=cpu=600');
    expect(await limit('lattice', 'max_jobs')).toBe('');
    expect(await row('qcd', 'alice').locator('.badge').textContent()).toBe('default');
    expect(await row('qcd', 'bob').locator('.badge').count()).toBe(1);
    // physics 3 : chemistry 1 at the top, qcd half of physics; qcd used 3/4 of the cluster, chemistry 1/4.
    expect(await cell('physics', 'norm_shares')).toBe('0.7500');
    expect(await cell('qcd', 'norm_shares')).toBe('0.3750');
    expect(await cell('qcd', 'norm_usage')).toBe('0.7500');
    expect(await cell('qcd', 'fairshare')).toBe('0.2500');
    expect(await cell('chemistry', 'fairshare')).toBe('0.5000');
    expect(await cell('lattice', 'fairshare')).toBe('1.0000');
    expect(await cell('qcd', 'fairshare', 'alice')).toBe('0.0625');
    expect(await cell('qcd', 'fairshare', 'bob')).toBe('1.0000');
    expect(Number((await cell('qcd', 'raw_usage')).replace(/,/g, ''))).toBeGreaterThan(3500);
    // The same figures as the API's.
    const live = await api<{ accounts: { account: string; fairshare: number }[] }>(
      'GET',
      '/api/v1/fairshare?live=true',
      undefined,
      reader,
    );
    expect(live.accounts.find((a) => a.account === 'qcd')?.fairshare).toBeCloseTo(0.25, 6);
    // A reader: no buttons, no forms.
    expect(await page.locator('#accounts button').count()).toBe(0);
    await eventually(async () => (await page.locator('#account-forms').getAttribute('aria-busy')) === null, {
      what: 'the forms region loaded',
    });
    expect(await page.locator('#account-forms form').count()).toBe(0);
    expect(problems).toEqual([]);
  });

  it('lets an admin add an account and a user, change a limit and a default, and remove a user', async () => {
    await useToken(admin);
    const form = page.locator('#account-form');
    await form.waitFor({ timeout: 10_000 });
    await page.fill('#account-form-name', 'astro');
    await page.selectOption('#account-form-parent', 'physics');
    await page.fill('#account-form-fairshare', '2');
    await page.fill('#account-form-max_jobs', '5');
    await page.click('#account-form button[type="submit"]');
    await row('astro').waitFor({ timeout: 10_000 });
    expect(await page.locator('#account-status').textContent()).toBe('Saved account astro');
    expect(await order()).toContain('1:astro');
    expect(await limit('astro', 'max_jobs')).toBe('MaxJobs=5');
    expect(await account('astro')).toMatchObject({ parent: 'physics', max_jobs: 5 });

    // Change a limit: qcd's MaxJobs, and its MaxWall removed.
    await page.fill('#account-form-name', 'qcd');
    await page.fill('#account-form-max_jobs', '4');
    await page.fill('#account-form-max_wall', 'none');
    await page.click('#account-form button[type="submit"]');
    await eventually(async () => (await limit('qcd', 'max_jobs')) === 'MaxJobs=4', { what: 'qcd MaxJobs 4' });
    expect(await limit('qcd', 'max_wall')).toBe('');
    expect(await limit('qcd', 'max_submit_jobs')).toBe('MaxSubmit=10');
    expect(await account('qcd')).toMatchObject({ parent: 'physics', max_jobs: 4, max_wall: null });

    // Add users: dave (astro is his first account, so his default) and bob (not his default).
    for (const user of ['dave', 'bob']) {
      await page.locator('#user-form').waitFor();
      await page.selectOption('#user-form-account', 'astro');
      await page.fill('#user-form-user', user);
      await page.click('#user-form button[type="submit"]');
      await row('astro', user).waitFor({ timeout: 10_000 });
    }
    expect(await row('astro', 'dave').locator('.badge').count()).toBe(1);
    expect(await row('astro', 'bob').locator('.badge').count()).toBe(0);

    // Change bob's default to astro.
    await page.getByRole('button', { name: 'Make astro the default account of bob' }).click();
    await eventually(async () => (await row('astro', 'bob').locator('.badge').count()) === 1, {
      what: 'astro bob’s default',
    });
    expect(await row('qcd', 'bob').locator('.badge').count()).toBe(0);
    expect((await account('qcd')).users.find((u) => u.user === 'bob')?.default).toBe(false);
    expect((await account('astro')).users.find((u) => u.user === 'bob')?.default).toBe(true);

    // Remove dave from astro.
    await page.getByRole('button', { name: 'Remove dave from astro' }).click();
    await eventually(async () => (await row('astro', 'dave').count()) === 0, { what: 'dave gone' });
    expect((await account('astro')).users.map((u) => u.user)).toEqual(['bob']);
    expect(problems).toEqual([]);
  });

  it('shows the API’s refusal: a 409 for an account with accounts under it, a 400 for a bad limit', async () => {
    await useToken(admin);
    await page.getByRole('button', { name: 'Delete account physics' }).click();
    await eventually(
      async () => (await page.locator('#error').textContent())?.includes('accounts are under'),
      {
        what: 'the 409 message',
      },
    );
    expect(await page.locator('#error').textContent()).toBe(
      'accounts are under physics: delete or move them first',
    );
    expect(await row('physics').count()).toBe(1);
    expect((await account('physics')).name).toBe('physics');

    await page.fill('#account-form-name', 'lattice');
    await page.fill('#account-form-max_jobs', '-5');
    await page.click('#account-form button[type="submit"]');
    await eventually(async () => (await page.locator('#error').textContent())?.includes('max_jobs'), {
      what: 'the 400 message',
    });
    // The form keeps what was typed, and nothing changed.
    expect(await page.inputValue('#account-form-max_jobs')).toBe('-5');
    expect((await account('lattice')).max_jobs).toBeNull();

    // A deletion that is allowed: lattice has no children and no jobs.
    await page.getByRole('button', { name: 'Delete account lattice' }).click();
    await eventually(async () => (await row('lattice').count()) === 0, { what: 'lattice deleted' });
    expect(await page.locator('#error').textContent()).toBe('');
    expect(problems).toEqual([]);
  });

  it('takes the screenshot of the page (docs/accounts.png)', async () => {
    await useToken(admin);
    await page.locator('#account-form').waitFor({ timeout: 10_000 });
    await page.screenshot({ path: `${ARTIFACTS}accounts.png`, fullPage: true });
    // Refreshed on request, so that a test run leaves the committed tree alone.
    if (process.env.CONDUCTOR_UPDATE_SCREENSHOTS === '1')
      copyFileSync(`${ARTIFACTS}accounts.png`, `${DOCS}accounts.png`);
    expect(problems).toEqual([]);
  });
});
