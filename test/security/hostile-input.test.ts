import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runSchedulingPass } from '../../functions/domain/scheduler.ts';
import { availableBackends, type Backend } from '../support/cluster.ts';
import { errorOf, type SecureApp, secureApp } from './support.ts';

const backends = await availableBackends();
const MiB = 1024 * 1024;

describe.each(backends)('hostile input on $name', (factory) => {
  let backend: Backend;
  let s: SecureApp;
  let admin: string;
  let agent: string;
  beforeAll(async () => {
    backend = await factory.create();
    s = secureApp(backend);
    admin = (await s.token(['admin'], 'admin')).token;
    agent = (await s.token(['agent'], 'agent')).token;
  });
  afterAll(async () => {
    await s?.harness.settle();
    await backend?.close();
  });

  const submit = (body: unknown) => s.request('POST', '/api/v1/jobs/submit', { token: admin, body });
  const rejects = async (body: unknown, field: string, status = 400) => {
    const res = await submit(body);
    expect(res.status, JSON.stringify(body).slice(0, 100)).toBe(status);
    const error = await errorOf(res);
    expect(error.message).toContain(field);
    return error;
  };

  it('holds a job no live node can take PENDING with a reason, refuses one no known node could ever take, and places it when a node fits', async () => {
    const none = (await (await submit({ script: 'true', cpus: 8 })).json()) as {
      id: number;
      state: string;
      reason: string;
    };
    expect(none).toMatchObject({
      state: 'PENDING',
      reason: 'Resources',
      reason_detail: 'waiting for a node: no node is live',
    });
    await s.request('POST', '/api/v1/agents/register', {
      token: agent,
      body: { worker_id: 'small', hostname: 's', cpus: 4 },
    });
    // Slurm's "Requested node configuration is not available": no known node of the partition has 64 CPUs.
    const refused = await rejects(
      { script: 'true', cpus: 64 },
      'needs 64 CPUs, has 4 (largest known node: small)',
    );
    expect(refused.code).toBe('node_configuration_unavailable');
    const fits = (await (await submit({ script: 'true', cpus: 2 })).json()) as { reason: string | null };
    expect(fits.reason).toBe('None');
    await s.harness.settle();
    await runSchedulingPass(s.harness.ctx);
    const job = async (id: number) =>
      (await (await s.request('GET', `/api/v1/jobs/${id}`, { token: admin })).json()) as {
        state: string;
        reason: string | null;
        reason_detail: string | null;
      };
    // The scheduler keeps the reason current (the 8-CPU job now sees a live 4-CPU node).
    expect(await job(none.id)).toMatchObject({
      state: 'PENDING',
      reason: 'Resources',
      reason_detail: expect.stringMatching(/needs 8 CPUs, .*has 4/),
    });
    await s.request('POST', '/api/v1/agents/register', {
      token: agent,
      body: { worker_id: 'large', hostname: 'l', cpus: 64 },
    });
    await s.harness.settle();
    await runSchedulingPass(s.harness.ctx);
    // The 8-CPU job runs on the new node; a 64-CPU job is now admitted, holds that node while its CPUs free up.
    expect(await job(none.id)).toMatchObject({ state: 'RUNNING', reason: null });
    const big = (await (await submit({ script: 'true', cpus: 64 })).json()) as { id: number };
    await s.harness.settle();
    await runSchedulingPass(s.harness.ctx);
    expect(await job(big.id)).toMatchObject({
      state: 'PENDING',
      reason: 'Resources',
      reason_detail: expect.stringMatching(/^reserved large for this job; 56 of 64 CPUs free/),
    });
  });

  it('keeps the size limits: script 1 MiB, body 2 MiB, 1024 variables, names 255', async () => {
    await rejects({ script: 'x'.repeat(MiB + 1), cpus: 1 }, 'script is larger than 1 MiB');
    // Multi-byte characters count as bytes.
    await rejects({ script: 'é'.repeat(MiB / 2 + 1), cpus: 1 }, 'script is larger than 1 MiB');
    expect((await submit({ script: 'x'.repeat(MiB - 100), cpus: 1 })).status).toBe(201);
    const huge = await submit({ script: 'true', cpus: 1, environment: { A: 'x'.repeat(2 * MiB) } });
    expect(huge.status).toBe(413);
    expect((await errorOf(huge)).message).toContain('2 MiB');
    const env = Object.fromEntries(Array.from({ length: 1025 }, (_, i) => [`V${i}`, 'x']));
    await rejects({ script: 'true', cpus: 1, environment: env }, 'at most 1024 variables');
    await rejects(
      { script: 'true', cpus: 1, environment: { ['V'.repeat(256)]: 'x' } },
      'at most 255 characters',
    );
    await rejects({ script: 'true', cpus: 1, name: 'n'.repeat(256) }, 'name is at most 255 characters');
    await rejects({ script: 'true', cpus: 1, account: 'a'.repeat(256) }, 'account is at most 255 characters');
    await rejects({ script: 'true', cpus: 1, time_limit: '999999999-0' }, 'time_limit is at most 365 days');
    await rejects({ script: 'true', cpus: 65_537 }, 'cpus is at most 65536');
    await rejects({ script: 'true', cpus: 0 }, 'cpus must be at least 1');
  });

  it('refuses job-environment fields that are not what they say: submit_dir, submit_host, ntasks, cpus_per_task', async () => {
    await rejects({ script: 'true', cpus: 1, submit_dir: 'runs' }, 'submit_dir must be an absolute path');
    await rejects({ script: 'true', cpus: 1, submit_dir: '/a\nb' }, 'submit_dir has control characters');
    await rejects({ script: 'true', cpus: 1, submit_host: 'a b' }, 'submit_host is a host name');
    await rejects({ script: 'true', cpus: 1, submit_host: '' }, 'submit_host must not be empty');
    await rejects({ script: 'true', cpus: 1, ntasks: 0 }, 'ntasks must be at least 1');
    await rejects({ script: 'true', cpus: 1, ntasks: 1.5 }, 'ntasks must be a whole number');
    await rejects({ script: 'true', cpus: 1, cpus_per_task: 0 }, 'cpus_per_task must be at least 1');
    await rejects({ script: 'true', cpus: 1, cpus_per_task: '2' }, 'cpus_per_task is a whole number of CPUs');
    const ok = await submit({
      script: 'true',
      cpus: 6,
      ntasks: 2,
      cpus_per_task: 3,
      submit_dir: '/home/alice',
      submit_host: 'login01.example.org',
    });
    expect(ok.status).toBe(201);
    expect(await ok.json()).toMatchObject({
      ntasks: 2,
      cpus_per_task: 3,
      submit_dir: '/home/alice',
      submit_host: 'login01.example.org',
    });
    // A node with memory, so that a job asking memory per CPU is admitted.
    await s.request('POST', '/api/v1/agents/register', {
      token: agent,
      body: { worker_id: 'with-memory', hostname: 'wm', cpus: 8, memory_mb: 16_384 },
    });
    const batch = await s.request('POST', '/api/v1/jobs/batch', {
      token: admin,
      body: {
        jobs: [
          {
            script: 'true',
            cpus: 4,
            ntasks: 4,
            submit_dir: '/srv',
            submit_host: 'login02',
            memory_per_cpu: '1G',
          },
          { script: 'true', cpus: 1 },
        ],
      },
    });
    expect(batch.status, await batch.clone().text()).toBe(201);
    const { jobs } = (await batch.json()) as { jobs: Record<string, unknown>[] };
    expect(jobs[0]).toMatchObject({
      ntasks: 4,
      cpus_per_task: null,
      submit_dir: '/srv',
      submit_host: 'login02',
      memory_per_cpu: 1024,
      memory_mb: 4096,
    });
    expect(jobs[1]).toMatchObject({
      ntasks: null,
      cpus_per_task: null,
      submit_dir: null,
      memory_per_cpu: null,
    });
  });

  it('refuses control characters and NUL where they do not belong, and unknown fields', async () => {
    await rejects({ script: 'true', cpus: 1, name: 'tab\there' }, 'name has control characters');
    await rejects({ script: 'true', cpus: 1, name: 'line\nbreak' }, 'name has control characters');
    await rejects(
      { script: 'true', cpus: 1, partition: 'esc\u001b[31m' },
      'partition has control characters',
    );
    await rejects({ script: 'true', cpus: 1, work_dir: '/tmp/a\nb' }, 'work_dir has control characters');
    await rejects({ script: 'echo a\u0000b', cpus: 1 }, 'script: contains a NUL character');
    await rejects(
      { script: 'true', cpus: 1, environment: { A: 'x\u0000' } },
      'environment.A: contains a NUL character',
    );
    await rejects({ script: 'true', cpus: 1, environment: { A: '\ud800' } }, 'unpaired surrogate');
    await rejects({ script: 'true', cpus: 1, surprise: 1 }, 'unknown field(s): surprise');
    // Scripts may hold tabs and escape sequences; variable values may hold newlines.
    expect(
      (await submit({ script: 'printf "a\\tb\\n"\t# tab', cpus: 1, environment: { M: 'two\nlines' } }))
        .status,
    ).toBe(201);
    // Other bodies too.
    const token = await s.request('POST', '/api/v1/tokens', {
      token: admin,
      body: { name: 'x', scopes: ['jobs:read'], extra: 1 },
    });
    expect(token.status).toBe(400);
    expect((await errorOf(token)).message).toContain('unknown field(s): extra');
    const register = await s.request('POST', '/api/v1/agents/register', {
      token: agent,
      body: { worker_id: 'n1', hostname: 'h\u0000', cpus: 1 },
    });
    expect(register.status).toBe(400);
    expect((await errorOf(register)).message).toContain('hostname');
    const labels = await s.request('POST', '/api/v1/agents/register', {
      token: agent,
      body: { worker_id: 'n1', hostname: 'h', cpus: 1, labels: { rack: 'a\nb' } },
    });
    expect(labels.status).toBe(400);
    expect((await errorOf(labels)).message).toContain('labels');
  });

  it('refuses ids beyond what the database holds with a 400, not a crash', async () => {
    for (const path of ['/api/v1/jobs/99999999999999999999', '/api/v1/jobs/9007199254740993/logs']) {
      const res = await s.request('GET', path, { token: admin });
      expect(res.status, path).toBe(400);
      expect((await errorOf(res)).message).toContain('job id');
    }
    expect((await s.request('GET', '/api/v1/jobs?before=1e30', { token: admin })).status).toBe(400);
    expect((await s.request('DELETE', '/api/v1/tokens/1e30', { token: admin })).status).toBe(400);
  });
});
