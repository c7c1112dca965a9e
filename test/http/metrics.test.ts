/**
 * GET /metrics (Prometheus text) against a real server with a real agent, and LOG_FORMAT=json on the Node
 * server as `npm start` runs it.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createToken } from '../../functions/domain/auth.ts';
import { syncAllocationCache } from '../../functions/domain/cache.ts';
import { AgentProcess, eventually } from '../support/agent-process.ts';
import { availableBackends, type Backend, startTestServer } from '../support/cluster.ts';
import { freePort, ServerProcess } from '../support/server-process.ts';
import { REQUIRE_SERVICES } from '../support/services.ts';

const [pglite] = (await availableBackends()).filter((b) => b.name === 'pglite+memory');

/** The samples of a Prometheus text page: `name{labels}` → value. */
function samples(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const at = line.lastIndexOf(' ');
    out.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return out;
}

/** Prometheus's own linter (Debian's `prometheus` package; .ci/run installs it): required in CI. */
const promtool = spawnSync('promtool', ['--version']).error === undefined;
if (!promtool) {
  if (REQUIRE_SERVICES)
    throw new Error('promtool is required (CONDUCTOR_REQUIRE_SERVICES=1) but not installed');
  console.warn(
    '[conductor tests] promtool not installed: the /metrics lint is skipped (apt-get install prometheus)',
  );
}

describe.runIf(pglite)('GET /metrics', () => {
  let backend: Backend;
  let server: Awaited<ReturnType<typeof startTestServer>>;
  let agent: AgentProcess;
  beforeAll(async () => {
    backend = await pglite!.create();
    server = await startTestServer(backend);
    agent = new AgentProcess('metrics-node', server.url, {
      cpus: 3,
      env: { CONDUCTOR_HEARTBEAT_INTERVAL: '1' },
    });
    await agent.registered();
  });
  afterAll(async () => {
    // Tokens exist by then and the agent has none: it could not unregister, so no goodbye.
    await agent?.kill9();
    await server?.close();
    await backend?.close();
  });

  it('reports workers, CPUs, jobs, queue wait, passes, cache and heartbeats', async () => {
    const res = await fetch(`${server.url}/api/v1/jobs/submit`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ script: 'sleep 120', cpus: 2 }),
    });
    const { id } = (await res.json()) as { id: number };
    await eventually(async () => {
      const job = (await (await fetch(`${server.url}/api/v1/jobs/${id}`)).json()) as {
        state: string;
        start_time: string | null;
      };
      // Started, not only placed: the queue wait counts from the agent's start report.
      return job.state === 'RUNNING' && job.start_time !== null;
    });
    await fetch(`${server.url}/api/v1/dashboard`); // a cache read
    await syncAllocationCache(server.ctx);
    await agent.waitForLine(/Heartbeat sent/);
    const page = await fetch(`${server.url}/metrics`);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toContain('text/plain; version=0.0.4');
    const text = await page.text();
    expect(text).toContain('# TYPE conductor_queue_wait_seconds histogram');
    expect(text).toContain('computed from Postgres at scrape time');
    expect(text).toContain('(per process)');
    const m = samples(text);
    expect(m.get('conductor_workers{status="ready"}')).toBe(1);
    expect(m.get('conductor_workers{status="draining"}')).toBe(0);
    expect(m.get('conductor_cpus_capacity')).toBe(3);
    expect(m.get('conductor_cpus_allocated')).toBe(2);
    expect(m.get('conductor_jobs{state="RUNNING"}')).toBe(1);
    expect(m.get('conductor_jobs{state="PENDING"}')).toBe(0);
    expect(m.get('conductor_queue_wait_seconds_count')).toBe(1);
    expect(m.get('conductor_queue_wait_seconds_bucket{le="+Inf"}')).toBe(1);
    expect(m.get('conductor_queue_wait_seconds_bucket{le="60"}')).toBe(1);
    expect(m.get('conductor_scheduling_pass_duration_seconds_count')).toBeGreaterThan(0);
    expect(m.get('conductor_scheduling_pass_duration_seconds_sum')).toBeGreaterThan(0);
    expect(
      (m.get('conductor_cache_hits_total') ?? 0) + (m.get('conductor_cache_misses_total') ?? 0),
    ).toBeGreaterThan(0);
    expect(m.get('conductor_cache_drift_cpus')).toBe(0);
    expect(m.get('conductor_cache_last_sync_timestamp_seconds')).toBeGreaterThan(Date.now() / 1000 - 60);
    expect(m.get('conductor_heartbeats_received_total')).toBeGreaterThan(0);
    // Histogram buckets are cumulative.
    const buckets = [...m].filter(([k]) => k.startsWith('conductor_scheduling_pass_duration_seconds_bucket'));
    for (let i = 1; i < buckets.length; i++)
      expect(buckets[i]![1]).toBeGreaterThanOrEqual(buckets[i - 1]![1]);
  });

  it.runIf(promtool)(
    'passes promtool check metrics, with jobs in several states and a draining worker',
    async () => {
      const submit = async (script: string, cpus = 1) => {
        const res = await fetch(`${server.url}/api/v1/jobs/submit`, {
          method: 'POST',
          headers: { 'Content-Type': 'application/json' },
          body: JSON.stringify({ script, cpus }),
        });
        return ((await res.json()) as { id: number }).id;
      };
      const state = async (id: number) =>
        ((await (await fetch(`${server.url}/api/v1/jobs/${id}`)).json()) as { state: string }).state;
      const done = await submit('echo done');
      const failed = await submit('exit 3');
      await eventually(async () => (await state(done)) === 'COMPLETED' && (await state(failed)) === 'FAILED');
      const waiting = await submit('true', 3); // more CPUs than are free while `sleep 120` runs
      const cancelled = await submit('true', 3);
      await fetch(`${server.url}/api/v1/jobs/${cancelled}/cancel`, { method: 'POST' });
      const second = new AgentProcess('metrics-node-2', server.url, { cpus: 1 });
      try {
        await second.registered();
        const drained = await fetch(`${server.url}/api/v1/workers/metrics-node-2/drain`, { method: 'POST' });
        expect(drained.status).toBe(200);
        const text = await (await fetch(`${server.url}/metrics`)).text();
        const m = samples(text);
        expect(m.get('conductor_jobs{state="PENDING"}'), text).toBe(1);
        expect(await state(waiting)).toBe('PENDING');
        for (const s of ['RUNNING', 'COMPLETED', 'FAILED', 'CANCELLED']) {
          expect(m.get(`conductor_jobs{state="${s}"}`), s).toBeGreaterThan(0);
        }
        expect(m.get('conductor_workers{status="draining"}')).toBe(1);
        const lint = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
        // Problems: a non-zero exit (3 for lint findings, 1 for a page it cannot parse) and a line each.
        expect(`${lint.stdout}${lint.stderr}`).toBe('');
        expect(lint.status).toBe(0);
      } finally {
        await second.stop();
      }
    },
    90_000,
  );

  it('needs the admin scope once tokens exist', async () => {
    const admin = await createToken(
      backend.db.db,
      { name: 'ops', scopes: ['admin'] } as never,
      {
        kind: 'cli',
        tokenId: null,
        name: 'test',
        owner: null,
        scopes: ['admin'],
      } as never,
    );
    const reader = await createToken(
      backend.db.db,
      { name: 'reader', scopes: ['jobs:read'] } as never,
      {
        kind: 'cli',
        tokenId: null,
        name: 'test',
        owner: null,
        scopes: ['admin'],
      } as never,
    );
    expect((await fetch(`${server.url}/metrics`)).status).toBe(401);
    const asReader = await fetch(`${server.url}/metrics`, {
      headers: { Authorization: `Bearer ${reader.token}` },
    });
    expect(asReader.status).toBe(403);
    const asAdmin = await fetch(`${server.url}/metrics`, {
      headers: { Authorization: `Bearer ${admin.token}` },
    });
    expect(asAdmin.status).toBe(200);
    // The API description stays public.
    expect((await fetch(`${server.url}/api/v1/openapi.json`)).status).toBe(200);
    expect((await fetch(`${server.url}/api/docs`)).status).toBe(200);
    expect((await fetch(`${server.url}/api/docs/assets/swagger-ui.css`)).status).toBe(200);
  });
});

describe('LOG_FORMAT=json (npm start)', () => {
  let server: ServerProcess | undefined;
  afterAll(async () => {
    await server?.stop();
  });

  it('writes one JSON object per line, the embedded agent included', { timeout: 120_000 }, async () => {
    const port = await freePort();
    server = new ServerProcess(port, {
      CONDUCTOR_DATA_DIR: mkdtempSync(join(tmpdir(), 'conductor-json-')),
      NODE_NAME: 'json-node',
      TOTAL_CPUS: '1',
      LOG_FORMAT: 'json',
    });
    await server.ready(90_000);
    await eventually(() => server!.has('Worker registered: json-node'), {
      timeoutMs: 30_000,
      what: 'the agent',
    });
    const res = await fetch(`${server.url}/api/v1/jobs/nope`);
    expect(res.status).toBe(400);
    // The bundle npm start runs (dist/server.mjs) finds Swagger UI's files in node_modules.
    const script = await fetch(`${server.url}/api/docs/assets/swagger-ui-bundle.js`);
    expect(script.status).toBe(200);
    expect(script.headers.get('content-type')).toBe('text/javascript; charset=utf-8');
    expect((await script.text()).length).toBeGreaterThan(1_000_000);
    expect(await server.stop()).toBe(0);
    expect(server.lines.length).toBeGreaterThan(3);
    for (const line of server.lines) {
      let parsed: { time?: string; level?: string; message?: string } | undefined;
      try {
        parsed = JSON.parse(line);
      } catch {
        parsed = undefined;
      }
      expect(parsed, `not JSON: ${line}`).toBeTypeOf('object');
      expect(parsed?.message ?? (parsed as { msg?: string })?.msg, line).toBeTypeOf('string');
    }
    const registered = server.lines
      .map((l) => JSON.parse(l))
      .find((l) => /Worker registered: json-node/.test(l.message ?? l.msg));
    expect(registered).toBeDefined();
  });
});
