/**
 * The dashboard's reservations page in a real headless Chromium against a real control plane: the
 * reservations' windows drawn as a timeline where their times put them (to a pixel and a half), a DAILY one
 * repeated every day, a MAINT one hatched orange, the scale following the range switch, the table, a phone's
 * width, and the empty state.
 */
import { copyFileSync, mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { type Browser, chromium, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { registerWorker } from '../../functions/domain/workers.ts';
import type { RunningServer } from '../../functions/node/server.ts';
import {
  availableBackends,
  type Backend,
  type RecordingLogger,
  startTestServer,
  testConfig,
  testContext,
} from '../support/cluster.ts';

const ARTIFACTS = fileURLToPath(new URL('./artifacts/', import.meta.url));
const DOCS = fileURLToPath(new URL('../../docs/', import.meta.url));
const CHROMIUM = '/usr/bin/chromium';
const H = 3_600_000;
const D = 24 * H;

const factory = (await availableBackends()).at(-1);
if (!factory) throw new Error('no backend');

interface Reservation {
  name: string;
  start_time: string;
  end_time: string;
  flags: string[];
}

describe('dashboard reservations page in headless Chromium', () => {
  let backend: Backend;
  let server: RunningServer & { logger: RecordingLogger };
  let browser: Browser;
  let page: Page;
  const problems: string[] = [];

  beforeAll(async () => {
    mkdirSync(ARTIFACTS, { recursive: true });
    backend = await factory.create();
    server = await startTestServer(backend, testConfig());
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
    });
    page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
    page.on('console', (m) => {
      if (m.type() === 'error' && /Content Security Policy/i.test(m.text())) problems.push(m.text());
    });
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  });
  afterAll(async () => {
    await browser?.close();
    await server?.close();
    await backend?.close();
  });

  const api = async <T>(method: string, path: string, body?: unknown): Promise<T> => {
    const res = await fetch(`${server.url}${path}`, {
      method,
      headers: { 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${await res.text()}`);
    return (await res.json()) as T;
  };

  /** The timeline's span and box, and each bar's box with the window its data says it draws. */
  async function measure() {
    const svg = page.locator('#res-timeline');
    const box = await svg.boundingBox();
    if (!box) throw new Error('no timeline');
    const from = Date.parse((await svg.getAttribute('data-from')) ?? '');
    const to = Date.parse((await svg.getAttribute('data-to')) ?? '');
    const bars = [];
    for (const bar of await page.locator('#res-timeline svg.res-bar').all()) {
      const rect = await bar.locator('rect').boundingBox();
      if (!rect) throw new Error('a bar without a box');
      bars.push({
        name: (await bar.getAttribute('data-name')) ?? '',
        maint: ((await bar.getAttribute('class')) ?? '').includes('res-maint'),
        rect,
      });
    }
    const nowLine = await page.locator('#res-timeline .res-now line').boundingBox();
    return {
      box,
      from,
      to,
      bars,
      nowLine,
      xOf: (t: number) => box.x + ((t - from) / (to - from)) * box.width,
    };
  }

  it('says so when there are no reservations or none in the range, and refuses an unknown range with a 400', async () => {
    await page.goto(`${server.url}/ui/reservations?range=1y`);
    await expect
      .poll(async () => (await page.locator('#reservations .empty').textContent()) ?? '')
      .toContain('No reservations');
    expect(await page.locator('#res-timeline').count()).toBe(0);
    // An unknown range on the page falls back to 7 days; on the API it is refused.
    expect(await page.getByRole('button', { name: '7 days' }).getAttribute('aria-pressed')).toBe('true');
    expect(await page.getByRole('link', { name: 'Reservations' }).getAttribute('aria-current')).toBe('page');
    const res = await fetch(`${server.url}/api/v1/ui/fragments/reservations?range=1y`);
    expect(res.status).toBe(400);
    expect(((await res.json()) as { error: { message: string } }).error.message).toContain(
      'range is 1d, 7d or 30d',
    );

    // One reservation, 20 days out: none in the week's timeline, yet in the table.
    const { ctx } = testContext(backend);
    for (const id of ['n01', 'n02', 'n03', 'n04', 'g1', 'g2']) {
      await registerWorker(ctx, { worker_id: id, hostname: id, cpus: 16 });
    }
    await api('POST', '/api/v1/reservations', {
      name: 'late',
      start_time: 'now+20days',
      duration: '2-00:00:00',
      nodes: 'n[03-04]',
      users: ['alice'],
    });
    await page.reload();
    await expect
      .poll(async () => (await page.locator('#reservations .empty').textContent()) ?? '')
      .toBe('No reservation window in the next 7 days.');
    expect(await page.locator('#res-timeline').count()).toBe(0);
    expect(await page.locator('#res-table tbody tr').getAttribute('data-name')).toBe('late');
    expect(problems).toEqual([]);
  });

  it('draws each window where its times put it, repeats a DAILY one, hatches MAINT, and rescales with the range', async () => {
    const create = (body: Record<string, unknown>) => api<Reservation>('POST', '/api/v1/reservations', body);
    await create({
      name: 'physics',
      start_time: 'now+2hours',
      duration: '1-12:00:00',
      nodes: 'n[01-02]',
      accounts: ['physics'],
    });
    await create({
      name: 'kernel-upgrade',
      start_time: 'now+3days',
      duration: '6:00:00',
      nodes: 'ALL',
      users: ['root'],
      flags: ['MAINT'],
    });
    await create({
      name: 'nightly',
      start_time: 'now+5hours',
      duration: '3:00:00',
      nodes: 'g[1-2]',
      accounts: ['bio', 'chem'],
      flags: ['DAILY'],
    });
    const listed = (await api<{ reservations: Reservation[] }>('GET', '/api/v1/reservations')).reservations;
    const byName = new Map(listed.map((r) => [r.name, r]));
    const window = (name: string) => {
      const r = byName.get(name);
      if (!r) throw new Error(`no reservation ${name}`);
      return { start: Date.parse(r.start_time), end: Date.parse(r.end_time) };
    };

    await page.goto(`${server.url}/ui/reservations`);
    await page.locator('#res-timeline').waitFor();
    const week = await measure();
    // The next 7 days, from a twelfth of them before now; now's line at 1/13 of the width.
    expect(week.to - week.from).toBe((7 * D * 13) / 12);
    expect(Math.abs(week.to - (Date.now() + 7 * D))).toBeLessThan(60_000);
    expect(
      Math.abs((week.nowLine?.x ?? 0) + (week.nowLine?.width ?? 0) / 2 - week.xOf(week.from + (7 * D) / 12)),
    ).toBeLessThan(1.5);

    const physics = week.bars.filter((b) => b.name === 'physics');
    expect(physics).toHaveLength(1);
    const p = physics[0]?.rect;
    expect(Math.abs((p?.x ?? 0) - week.xOf(window('physics').start))).toBeLessThan(1.5);
    expect(Math.abs((p?.x ?? 0) + (p?.width ?? 0) - week.xOf(window('physics').end))).toBeLessThan(1.5);

    // The DAILY one: a bar a day, each 24 h to the right of the one before and 3 h wide (the last one clipped).
    const nightly = week.bars.filter((b) => b.name === 'nightly').map((b) => b.rect);
    expect(nightly.length).toBeGreaterThanOrEqual(7);
    const day = (D / (week.to - week.from)) * week.box.width;
    expect(Math.abs((nightly[0]?.x ?? 0) - week.xOf(window('nightly').start))).toBeLessThan(1.5);
    nightly.slice(1).forEach((bar, i) => {
      expect(Math.abs(bar.x - (nightly[0]?.x ?? 0) - (i + 1) * day)).toBeLessThan(1.5);
    });
    const threeHours = (3 * H * week.box.width) / (week.to - week.from);
    for (const bar of nightly.slice(0, -1)) expect(Math.abs(bar.width - threeHours)).toBeLessThan(1.5);

    // Beyond the week: no bar, yet in the table.
    expect(week.bars.some((b) => b.name === 'late')).toBe(false);
    const rows = await page
      .locator('#res-table tbody tr')
      .evaluateAll((trs) =>
        trs.map((tr) => [...tr.querySelectorAll('td')].map((td) => td.textContent?.trim()).join(' | ')),
      );
    expect(rows).toHaveLength(4);
    expect(rows[0]).toMatch(/^physics \| n\[01-02\] \(2\) \| accounts physics \| .+ \| .+ \| –$/);
    expect(rows.find((r) => r.startsWith('kernel-upgrade'))).toMatch(
      / \| g\[1-2\],n\[01-04\] \(6\) \| users root \| .+ \| MAINT$/,
    );
    expect(rows.find((r) => r.startsWith('nightly'))).toMatch(/ \| accounts bio, chem \| .+ \| DAILY$/);
    expect(rows.find((r) => r.startsWith('late'))).toBeDefined();

    // MAINT: its own lane (all nodes), hatched orange with the word MAINT; the others plain blue.
    const maint = page.locator('#res-timeline svg.res-maint');
    expect(await maint.count()).toBe(1);
    expect(await maint.getAttribute('data-name')).toBe('kernel-upgrade');
    expect(await maint.locator('rect').getAttribute('fill')).toBe('url(#res-hatch)');
    expect(await maint.locator('text').textContent()).toBe('MAINT kernel-upgrade');
    expect(await page.locator('#res-hatch rect').getAttribute('fill')).toBe('#fdba74');
    expect(await page.locator('svg.res-bar[data-name="physics"] rect').getAttribute('fill')).toBe('#2457c5');
    const m = week.bars.find((b) => b.maint)?.rect;
    expect(Math.abs((m?.x ?? 0) - week.xOf(window('kernel-upgrade').start))).toBeLessThan(1.5);

    // 30 days: the same window is drawn 7/30 as wide, and the one 20 days out appears.
    await page.getByRole('button', { name: '30 days' }).click();
    await page.locator('#res-timeline[data-range="30d"]').waitFor();
    expect(page.url()).toContain('range=30d');
    expect(await page.getByRole('button', { name: '30 days' }).getAttribute('aria-pressed')).toBe('true');
    expect(await page.getByRole('button', { name: '7 days' }).getAttribute('aria-pressed')).toBe('false');
    const month = await measure();
    const p30 = month.bars.find((b) => b.name === 'physics')?.rect;
    expect(Math.abs((p30?.width ?? 0) - ((p?.width ?? 0) * 7) / 30)).toBeLessThan(1.5);
    expect(Math.abs((p30?.x ?? 0) - month.xOf(window('physics').start))).toBeLessThan(1.5);
    const late = month.bars.find((b) => b.name === 'late')?.rect;
    expect(Math.abs((late?.x ?? 0) - month.xOf(window('late').start))).toBeLessThan(1.5);
    expect(Math.abs((late?.x ?? 0) + (late?.width ?? 0) - month.xOf(window('late').end))).toBeLessThan(1.5);
    expect(month.bars.filter((b) => b.name === 'nightly').length).toBeGreaterThanOrEqual(30);

    // 1 day: 12 times the week's scale.
    await page.getByRole('button', { name: '1 day' }).click();
    await page.locator('#res-timeline[data-range="1d"]').waitFor();
    const oneDay = await measure();
    const p1 = oneDay.bars.find((b) => b.name === 'physics')?.rect;
    expect(Math.abs((p1?.x ?? 0) - oneDay.xOf(window('physics').start))).toBeLessThan(1.5);
    // The window outlasts the day: drawn to the right edge.
    expect(Math.abs((p1?.x ?? 0) + (p1?.width ?? 0) - (oneDay.box.x + oneDay.box.width))).toBeLessThan(1.5);
    expect(oneDay.bars.some((b) => b.name === 'kernel-upgrade')).toBe(false);

    // A reload keeps the range the address says.
    await page.reload();
    await page.locator('#res-timeline[data-range="1d"]').waitFor();
    expect(problems).toEqual([]);
  });

  it('fits a phone: no sideways scrolling of the page, bars still in place', async () => {
    const phone = await browser.newPage({ viewport: { width: 375, height: 800 }, isMobile: true });
    const saved = page;
    page = phone;
    try {
      await phone.goto(`${server.url}/ui/reservations?range=7d`);
      await phone.locator('#res-timeline').waitFor();
      expect(await phone.evaluate<number>('document.documentElement.scrollWidth')).toBeLessThanOrEqual(375);
      const week = await measure();
      expect(week.box.width).toBeGreaterThan(250);
      expect(week.box.x + week.box.width).toBeLessThanOrEqual(375);
      for (const bar of week.bars) {
        expect(bar.rect.x).toBeGreaterThanOrEqual(week.box.x - 0.5);
        expect(bar.rect.x + bar.rect.width).toBeLessThanOrEqual(week.box.x + week.box.width + 0.5);
      }
      const physics = week.bars.find((b) => b.name === 'physics')?.rect;
      const listed = (await api<{ reservations: Reservation[] }>('GET', '/api/v1/reservations')).reservations;
      const start = Date.parse(listed.find((r) => r.name === 'physics')?.start_time ?? '');
      expect(Math.abs((physics?.x ?? 0) - week.xOf(start))).toBeLessThan(1.5);
      await phone.screenshot({ path: `${ARTIFACTS}reservations-phone.png`, fullPage: true });
      // The table scrolls in its own box.
      const table = await phone.locator('#res-table').boundingBox();
      expect(table).not.toBeNull();
      // On one day, every other hour label gives way.
      await phone.getByRole('button', { name: '1 day' }).click();
      await phone.locator('#res-timeline[data-range="1d"]').waitFor();
      const minor = phone.locator('#res-timeline .res-minor text').first();
      expect(await minor.isVisible()).toBe(false);
      expect(await phone.locator('#res-timeline .res-tick:not(.res-minor) text').first().isVisible()).toBe(
        true,
      );
    } finally {
      page = saved;
      await phone.close();
    }
  });

  it('takes the screenshot for docs/reservations.md', async () => {
    await page.goto(`${server.url}/ui/reservations?range=7d`);
    await page.locator('#res-timeline').waitFor();
    await page.screenshot({ path: `${ARTIFACTS}reservations.png`, fullPage: true });
    mkdirSync(DOCS, { recursive: true });
    if (process.env.CONDUCTOR_UPDATE_SCREENSHOTS === '1')
      copyFileSync(`${ARTIFACTS}reservations.png`, `${DOCS}reservations.png`);
    expect(problems).toEqual([]);
  });
});
