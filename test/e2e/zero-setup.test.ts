import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { eventually } from '../support/agent-process.ts';
import { freePort, ServerProcess } from '../support/server-process.ts';

/**
 * `npm start` with nothing configured, run as a user runs it (npm from the repository's root, stopped with
 * SIGTERM to npm): embedded PGlite, in-process registry, one local agent. The contract's curl submit runs to
 * COMPLETED with its output readable; the data survives a restart.
 */
describe('zero-setup local cluster (npm start)', () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'conductor-local-'));
  let server: ServerProcess | undefined;
  afterAll(async () => {
    await server?.stop();
  });

  it('runs the contract submit to COMPLETED and keeps it across a restart', {
    timeout: 300_000, // a loaded 2-core machine
  }, async () => {
    const port = await freePort();
    // Nothing set but where and as what: as root (this machine) the local agent runs jobs anyway, with a warning.
    const env = {
      CONDUCTOR_DATA_DIR: dataDir,
      NODE_NAME: 'local-node',
      TOTAL_CPUS: '2',
      CONDUCTOR_ALLOW_ROOT: '',
    };
    server = new ServerProcess(port, env, { npmStart: true });
    await server.ready(120_000);
    await eventually(
      async () => {
        const dash = (await (await fetch(`${server!.url}/api/v1/dashboard`)).json()) as {
          resources: { total_cpus: number };
        };
        return dash.resources.total_cpus === 2;
      },
      { timeoutMs: 30_000, what: 'the embedded agent' },
    );
    expect(server.has('✓ Worker registered: local-node (2 CPUs)')).toBe(true);
    expect(server.has('embedded PGlite')).toBe(true);
    if (process.getuid?.() === 0)
      expect(server.has('Running as root: the local agent runs jobs as root')).toBe(true);

    const res = await fetch(`${server.url}/api/v1/jobs/submit`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ script: 'echo test', cpus: 1 }),
    });
    expect(res.status).toBe(201);
    const { id } = (await res.json()) as { id: number };
    await eventually(async () => {
      const job = (await (await fetch(`${server!.url}/api/v1/jobs/${id}`)).json()) as { state: string };
      return job.state === 'COMPLETED';
    });
    const logs = (await (await fetch(`${server.url}/api/v1/jobs/${id}/logs`)).json()) as {
      stdout: { content: string };
    };
    expect(logs.stdout.content).toBe('test\n');

    expect(await server.stop()).toBe(0);
    expect(server.has('Worker unregistered: local-node')).toBe(true);
    server = new ServerProcess(port, { ...env, CONDUCTOR_EMBEDDED_AGENT: '0' }, { npmStart: true });
    await server.ready(120_000);
    const again = (await (await fetch(`${server.url}/api/v1/jobs/${id}`)).json()) as {
      state: string;
      exit_code: string;
    };
    expect(again).toMatchObject({ state: 'COMPLETED', exit_code: '0:0' });
  });
});
