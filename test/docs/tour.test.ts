/**
 * The tour's commands, run as they are written (README.md and docs/getting-started.md) with bash, curl, jq
 * and the `conductor` command, against a real control plane and a real agent. Only the address changes
 * (http://localhost:8000 becomes the test server's) and `npx conductor` runs the checkout's bin, as it does
 * from the repository's root. Each command must succeed (`set -e`, curl fails on an HTTP error).
 */
import { execFile } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningServer } from '../../functions/node/server.ts';
import { AgentProcess } from '../support/agent-process.ts';
import { availableBackends, type Backend, startTestServer, testConfig } from '../support/cluster.ts';
import { ROOT, type RunnableBlock, runnableBlock } from './runnable.ts';

const run = promisify(execFile);

const PRELUDE = `set -euo pipefail
curl() { command curl -fsS "$@"; }
npx() { if [ "$1" = conductor ]; then shift; node "${join(ROOT, 'cli', 'bin', 'conductor.js')}" "$@"; else command npx "$@"; fi; }
`;

describe('the tour, as written', () => {
  let backend: Backend;
  let server: RunningServer;
  let agent: AgentProcess;
  const cwd = mkdtempSync(join(tmpdir(), 'docs-tour-'));

  beforeAll(async () => {
    const local = (await availableBackends()).find((b) => b.name === 'pglite+memory')!;
    backend = await local.create();
    server = await startTestServer(backend, testConfig({ heartbeatIntervalSeconds: 2 }));
    agent = new AgentProcess('tour-node', server.url, { cpus: 4 });
    await agent.registered();
  });
  afterAll(async () => {
    await agent?.stop().catch(() => agent.kill9());
    await server?.close();
    await backend?.close();
  });

  /** Runs a block with bash in a scratch folder; its output (stdout and stderr). */
  const runBlock = async (block: RunnableBlock) => {
    const code = block.code.replaceAll('http://localhost:8000', server.url);
    const { stdout, stderr } = await run('bash', ['-c', PRELUDE + code], {
      cwd,
      env: { ...process.env, CONDUCTOR_URL: server.url, CONDUCTOR_TOKEN: '', NO_COLOR: '1' },
      timeout: 60_000,
    });
    return stdout + stderr;
  };

  it('README: submit a script (curl, then an #SBATCH script with conductor submit --wait)', async () => {
    const out = await runBlock(runnableBlock('readme-tour'));
    expect(out).toMatch(/"id":\s*1\b/);
    expect(out).toContain('Submitted batch job 2');
    expect(out).toContain('Job 2 COMPLETED (exit code 0:0)');
  }, 90_000);

  it('README: watch it (conductor jobs, conductor logs, the job and the resources over HTTP)', async () => {
    const out = await runBlock(runnableBlock('readme-watch'));
    expect(out).toMatch(/JOBID\s+NAME\s+STATE/);
    expect(out).toContain('hi from hello');
    expect(out).toMatch(/"id":\s*1\b/);
    expect(out).toContain('"total_cpus": 4');
  }, 90_000);

  it('docs/getting-started.md: the walk-through', async () => {
    const out = await runBlock(runnableBlock('tour-submit'));
    expect(out).toMatch(/"state":\s*"PENDING"/);
    expect(out).toContain('"stdout"');
    expect(out).toContain('"total_cpus": 4');
  }, 90_000);
});
