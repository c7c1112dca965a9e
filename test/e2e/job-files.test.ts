/**
 * Where an sbatch job runs and what it leaves on the shared filesystem, end to end: the Node server (real
 * Postgres and Redis, or the zero-setup backend), a real agent, real scripts. A job submitted with a submit
 * dir runs there (or in its --chdir, relative to it) and the agent writes its slurm-<id>.out there; a
 * directory missing on the node gives /tmp and slurmstepd's message. The captured output the API serves is
 * what the file holds. (-o/-e/-i and --open-mode reach the agent once the server takes them: the agent side
 * is proven in test/agent/job-files.test.ts.)
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
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

const [factory] = await availableBackends();

interface Job {
  id: number;
  state: string;
  exit_code: string | null;
  reason: string | null;
}

describe.runIf(factory)("an sbatch job's working directory and output file with a real agent", () => {
  let backend: Backend;
  let server: RunningServer & { logger: RecordingLogger };
  let agent: AgentProcess;
  const root = mkdtempSync(join(tmpdir(), 'conductor-e2e-files-'));

  beforeAll(async () => {
    backend = await (factory as NonNullable<typeof factory>).create();
    server = await startTestServer(backend, testConfig({ heartbeatIntervalSeconds: 1, workerTtlSeconds: 3 }));
    agent = new AgentProcess(`files01-${process.pid}`, server.url, { cpus: 4 });
    await agent.registered();
  }, 60_000);

  afterAll(async () => {
    await agent?.stop().catch(() => agent.kill9());
    await server?.close();
    await backend?.close();
    rmSync(root, { recursive: true, force: true });
  });

  const api = async (method: string, path: string, body?: unknown) => {
    const res = await fetch(`${server.url}${path}`, {
      method,
      headers: body === undefined ? {} : { 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  };
  const submit = async (body: Record<string, unknown>): Promise<Job> => {
    const res = await api('POST', '/api/v1/jobs/submit', { cpus: 1, ...body });
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    return res.body as unknown as Job;
  };
  const ended = (id: number) =>
    eventually(
      async () => {
        const job = (await api('GET', `/api/v1/jobs/${id}`)).body as unknown as Job;
        return ['PENDING', 'RUNNING'].includes(job.state) ? undefined : job;
      },
      { timeoutMs: 30_000, what: `job ${id} ended` },
    );
  const logs = async (id: number) => {
    const body = (await api('GET', `/api/v1/jobs/${id}/logs`)).body as Record<string, { content: string }>;
    return { stdout: body.stdout!.content, stderr: body.stderr!.content };
  };

  it('runs in the submit dir and writes slurm-<id>.out there, stdout and stderr as they came', async () => {
    const dir = mkdtempSync(join(root, 'submit-'));
    const job = await submit({
      script: 'pwd; echo "$SLURM_SUBMIT_DIR"; echo to-stderr >&2; echo last',
      submit_dir: dir,
      submit_host: 'login01',
    });
    expect(await ended(job.id)).toMatchObject({ state: 'COMPLETED', exit_code: '0:0' });
    const expected = `${dir}\n${dir}\nto-stderr\nlast\n`;
    expect(readFileSync(join(dir, `slurm-${job.id}.out`), 'utf8')).toBe(expected);
    expect(await logs(job.id)).toEqual({ stdout: expected, stderr: '' });
  });

  it('--chdir: runs and writes there, not in the submit dir', async () => {
    const dir = mkdtempSync(join(root, 'submit-'));
    mkdirSync(join(dir, 'work'));
    const job = await submit({
      script: 'pwd; touch made-here',
      submit_dir: dir,
      work_dir: join(dir, 'work'),
    });
    expect(await ended(job.id)).toMatchObject({ state: 'COMPLETED' });
    expect(readFileSync(join(dir, 'work', `slurm-${job.id}.out`), 'utf8')).toBe(`${dir}/work\n`);
    expect(existsSync(join(dir, 'work', 'made-here'))).toBe(true);
    expect(existsSync(join(dir, `slurm-${job.id}.out`))).toBe(false);
  });

  it('a working directory missing on the node: the job runs in /tmp, and its output says so first', async () => {
    const missing = join(root, 'not-on-this-node');
    const job = await submit({ script: 'pwd', submit_dir: missing });
    expect(await ended(job.id)).toMatchObject({ state: 'COMPLETED', exit_code: '0:0' });
    const expected = `slurmstepd: error: couldn't chdir to \`${missing}': No such file or directory: going to /tmp instead\n/tmp\n`;
    const file = join('/tmp', `slurm-${job.id}.out`);
    try {
      expect(readFileSync(file, 'utf8')).toBe(expected);
    } finally {
      rmSync(file, { force: true });
    }
    expect((await logs(job.id)).stdout).toBe(expected);
  });

  it('an API job with neither a submit dir nor files runs in its own folder and writes no file, as before', async () => {
    const job = await submit({ script: 'pwd; ls' });
    expect(await ended(job.id)).toMatchObject({ state: 'COMPLETED' });
    const { stdout } = await logs(job.id);
    expect(stdout).toMatch(new RegExp(`/jobs/${job.id}\\.1\\n`));
    expect(stdout).not.toContain('slurm-');
  });
});
