/**
 * The dashboard's resources in a real headless Chromium against a real control plane with real agents (one
 * with GPUs, memory, gres, a feature and a partition of its own): memory and GPUs beside the CPUs, the
 * partitions table, the per-node bars, a node's GPUs by index, and a pending job's resources, reason and
 * per-node explanation until it starts.
 */
import { mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { type Browser, chromium, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
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
const CHROMIUM = '/usr/bin/chromium';

const factory = (await availableBackends()).at(-1);
if (!factory) throw new Error('no backend');

interface Job {
  id: number;
  state: string;
  node: string | null;
}

describe('dashboard resources and partitions in headless Chromium', () => {
  let backend: Backend;
  let server: RunningServer & { logger: RecordingLogger };
  let browser: Browser;
  let page: Page;
  const agents: AgentProcess[] = [];
  const problems: string[] = [];

  beforeAll(async () => {
    mkdirSync(ARTIFACTS, { recursive: true });
    backend = await factory.create();
    server = await startTestServer(
      backend,
      testConfig({ heartbeatIntervalSeconds: 1, workerTtlSeconds: 5, scheduleIntervalSeconds: 1 }),
    );
    agents.push(
      new AgentProcess('res-gpu', server.url, {
        cpus: 4,
        env: {
          GPUS: 'a100:2',
          TOTAL_MEMORY: '8G',
          MEMORY_RESERVE: '0',
          PARTITIONS: 'gpu',
          FEATURES: 'ssd',
          GRES: 'nvme:1',
        },
      }),
      new AgentProcess('res-cpu', server.url, {
        cpus: 2,
        env: { TOTAL_MEMORY: '4G', MEMORY_RESERVE: '0' },
      }),
    );
    await Promise.all(agents.map((a) => a.registered()));
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
    await Promise.allSettled(agents.map((a) => a.stop().catch(() => a.kill9())));
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
  const text = async (selector: string) => (await page.locator(selector).first().textContent()) ?? '';
  let running: Job;

  it('shows memory and GPUs beside the CPUs, and the partitions with their nodes, CPUs and GPUs', async () => {
    await page.goto(server.url);
    await eventually(async () => (await text('#total')) === '6', { what: '6 CPUs on the page' });
    expect(await text('#memory-total')).toBe('12 GB');
    expect(await text('#gpus-total')).toBe('2');
    expect(await text('#gpus-available')).toBe('2');
    expect(await text('#gpu-models')).toContain('a100 0/2');
    expect(await text('#gres')).toContain('nvme 0/1');
    const gpuRow = page.locator('tr[data-partition="gpu"]');
    const cells = async (row: typeof gpuRow) =>
      (await row.locator('td').allTextContents()).map((c) => c.trim());
    // The open local cluster's viewer may do everything: the last cell is the partition's admin button.
    expect(await cells(gpuRow)).toEqual(['gpu', 'UP', '1', '0/4', '0/2', '0', '0', 'Set DOWN']);
    expect(await cells(page.locator('tr[data-partition="default"]'))).toEqual([
      'default (default)',
      'UP',
      '1',
      '0/2',
      '–',
      '0',
      '0',
      'Set DOWN',
    ]);
  });

  it('an admin takes a partition DOWN and back UP from the partitions table', async () => {
    await page.goto(server.url);
    const down = page.getByRole('button', { name: 'Set partition default DOWN' });
    await down.waitFor({ timeout: 10_000 });
    await down.click();
    await eventually(
      async () => (await api<{ state: string }>('GET', '/api/v1/partitions/default')).state === 'DOWN',
      { what: 'partition default DOWN' },
    );
    const up = page.getByRole('button', { name: 'Set partition default UP' });
    await up.waitFor({ timeout: 10_000 });
    expect(await text('tr[data-partition="default"] td:nth-child(2)')).toBe('DOWN');
    await up.click();
    await eventually(
      async () => (await api<{ state: string }>('GET', '/api/v1/partitions/default')).state === 'UP',
      { what: 'partition default UP again' },
    );
    await page.getByRole('button', { name: 'Set partition default DOWN' }).waitFor({ timeout: 10_000 });
  });

  it('counts a running job’s memory and GPU on the overview, the partition and the node’s bars', async () => {
    running = await api<Job>('POST', '/api/v1/jobs/submit', {
      script: 'sleep 60',
      cpus: 2,
      gpus: 'a100:1',
      memory_per_node: '2G',
      partition: 'gpu',
      name: 'res-running',
    });
    await eventually(async () => (await text('#gpus-allocated')) === '1', { what: '1 GPU allocated' });
    await eventually(async () => (await text('#memory-allocated')) === '2 GB', { what: '2 GB allocated' });
    expect(await text('#gpu-models')).toContain('a100 1/2');
    const gpuRow = (await page.locator('tr[data-partition="gpu"] td').allTextContents()).map((c) => c.trim());
    expect(gpuRow).toEqual(['gpu', 'UP', '1', '2/4', '1/2', '0', '1', 'Set DOWN']);
    await page.screenshot({ path: `${ARTIFACTS}resources-overview.png`, fullPage: true });

    await page.goto(`${server.url}/ui/nodes`);
    const gpus = page.getByRole('meter', { name: 'res-gpu GPUs used' });
    await gpus.waitFor({ timeout: 10_000 });
    expect(await gpus.getAttribute('value')).toBe('1');
    expect(await gpus.getAttribute('max')).toBe('2');
    const memory = page.getByRole('meter', { name: 'res-gpu memory used' });
    expect(await memory.getAttribute('value')).toBe('2048');
    expect(await text('tr[data-worker="res-gpu"]')).toContain('2 GB/8 GB');
    expect(await text('tr[data-worker="res-cpu"]')).toContain('default');
    // No GPUs: a dash, not an empty bar.
    expect(await page.getByRole('meter', { name: 'res-cpu GPUs used' }).count()).toBe(0);
    await page.screenshot({ path: `${ARTIFACTS}resources-nodes.png`, fullPage: true });

    await page.goto(`${server.url}/ui/nodes/res-gpu`);
    await page.locator('#node-gpus').waitFor({ timeout: 10_000 });
    const job = await api<Job & { allocated_gpus: number[] }>('GET', `/api/v1/jobs/${running.id}`);
    const held = job.allocated_gpus[0];
    expect(await text('#node-gpus')).toContain(`${held}: a100 (in use)`);
    expect(await text('#node-gpus')).toContain('1/2');
    expect(await text('#node-memory')).toContain('2 GB/8 GB');
    expect(await text('[data-gres="nvme"]')).toContain('0/1');
    expect(await text('[data-field="Features"]')).toBe('ssd');
    expect(await text('[data-field="Partitions"]')).toBe('gpu');
    await page.screenshot({ path: `${ARTIFACTS}resources-node.png`, fullPage: true });
  });

  it('shows a pending job’s resources, reason and why it waits on each node, until it starts', async () => {
    const waiting = await api<Job>('POST', '/api/v1/jobs/submit', {
      script: 'true',
      cpus: 1,
      gpus: 'a100:2',
      gres: 'nvme:1',
      constraint: 'ssd',
      partition: 'gpu',
      name: 'res-waiting',
    });
    await page.goto(`${server.url}/ui/jobs/${waiting.id}`);
    await page.locator('#d-h').waitFor({ timeout: 10_000 });
    expect(await text('[data-field="GPUs"]')).toBe('2 (a100)');
    expect(await text('[data-field="Generic resources"]')).toBe('nvme:1');
    expect(await text('[data-field="Constraint"]')).toBe('ssd');
    expect(await text('[data-field="Memory"]')).toBe('no limit');
    await eventually(async () => (await text('[data-field="Reason"]')) === 'Resources', {
      what: 'reason Resources',
    });
    expect(await text('[data-field="Reason detail"]')).not.toBe('–');
    const explained = page.locator('tr[data-explain-node="res-gpu"]');
    await explained.waitFor({ timeout: 10_000 });
    expect(await text('#explain-reason')).toMatch(/^Resources: /);
    expect((await explained.locator('td').nth(1).textContent())?.trim()).toBe('no');
    expect(await explained.locator('td').nth(2).textContent()).toMatch(/GPU/);
    // res-cpu is not in partition gpu.
    expect(await text('tr[data-explain-node="res-cpu"]')).toContain('partition gpu');
    await page.screenshot({ path: `${ARTIFACTS}resources-pending-job.png`, fullPage: true });

    await api('POST', `/api/v1/jobs/${running.id}/cancel`, {});
    await eventually(async () => (await text('[data-field="State"]')) === 'COMPLETED', {
      what: 'the waiting job ran',
      timeoutMs: 20_000,
    });
    await eventually(async () => (await page.locator('#x-h').count()) === 0, {
      what: 'no explanation once it no longer waits',
      timeoutMs: 10_000,
    });
    expect(await text('[data-field="GPUs"]')).toMatch(/^2 \(a100\), indexes 0, 1$/);
  });

  it('ran without a Content Security Policy violation or a script error', () => {
    expect(problems).toEqual([]);
  });
});
