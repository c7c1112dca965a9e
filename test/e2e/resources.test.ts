/**
 * The whole node, end to end: the Node server over real Postgres and Redis (or the zero-setup backend when
 * those are not up), three real agents running real scripts, one of them with a fake `nvidia-smi` on its PATH
 * that reports two A100s. GPUs, memory, constraints, exclusive jobs, node lists and partitions place as
 * docs/submitting-jobs.md says; impossible requests are 400s that name the problem; every pending job has
 * its documented reason.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
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
import { checkInvariants } from '../support/invariants.ts';

const [factory] = await availableBackends();

interface Job {
  id: number;
  state: string;
  node: string | null;
  reason: string | null;
  reason_detail: string | null;
  allocated_gpus: number[] | null;
  partition: string | null;
  exit_code: string | null;
}

/** A folder with an `nvidia-smi` that prints what the real one prints for two A100s with the agent's flags. */
function fakeNvidiaSmi(): string {
  const dir = mkdtempSync(join(tmpdir(), 'fake-nvidia-'));
  writeFileSync(
    join(dir, 'nvidia-smi'),
    [
      '#!/bin/sh',
      '[ "$1 $2" = "--query-gpu=index,name --format=csv,noheader" ] || exit 6',
      "printf '0, NVIDIA A100-SXM4-40GB\\n1, NVIDIA A100-SXM4-40GB\\n'",
      '',
    ].join('\n'),
    { mode: 0o755 },
  );
  return dir;
}

describe.runIf(factory)('whole-node placement with real agents', () => {
  let backend: Backend;
  let server: RunningServer & { logger: RecordingLogger };
  const agents: AgentProcess[] = [];
  const tag = `${process.pid}`;
  const gpuNode = `gpu01-${tag}`;
  const cpuNode = `cpu01-${tag}`;
  const armNode = `arm01-${tag}`;

  beforeAll(async () => {
    backend = await (factory as NonNullable<typeof factory>).create();
    server = await startTestServer(backend, testConfig({ heartbeatIntervalSeconds: 1, workerTtlSeconds: 5 }));
    agents.push(
      new AgentProcess(gpuNode, server.url, {
        cpus: 8,
        env: {
          PATH: `${fakeNvidiaSmi()}:${process.env.PATH}`,
          TOTAL_MEMORY: '8G',
          FEATURES: 'avx512,ssd',
          PARTITIONS: 'gpu',
        },
      }),
      new AgentProcess(cpuNode, server.url, { cpus: 4, env: { TOTAL_MEMORY: '4G', FEATURES: 'avx512' } }),
      new AgentProcess(armNode, server.url, { cpus: 4, env: { TOTAL_MEMORY: '2G', FEATURES: 'arm64' } }),
    );
    await Promise.all(agents.map((a) => a.registered()));
  }, 60_000);

  afterAll(async () => {
    await Promise.all(agents.map((a) => a.stop().catch(() => a.kill9())));
    await server?.close();
    await backend?.close();
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
    const res = await api('POST', '/api/v1/jobs/submit', body);
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    return res.body as unknown as Job;
  };
  const get = async (id: number) => (await api('GET', `/api/v1/jobs/${id}`)).body as unknown as Job;
  const until = (id: number, check: (job: Job) => boolean, what: string) =>
    eventually(
      async () => {
        const job = await get(id);
        return check(job) ? job : undefined;
      },
      { timeoutMs: 30_000, what: `job ${id} ${what}` },
    );
  const ended = (id: number) => until(id, (j) => !['PENDING', 'RUNNING'].includes(j.state), 'ended');
  const stdout = async (id: number) =>
    ((await api('GET', `/api/v1/jobs/${id}/logs`)).body.stdout as { content: string }).content;

  it('registers each node with its memory, GPUs, features and partitions; the gpu partition exists', async () => {
    const { body } = await api('GET', '/api/v1/partitions');
    const partitions = body.partitions as { name: string; live_nodes: string[]; created_by: string }[];
    expect(partitions.find((p) => p.name === 'gpu')).toMatchObject({
      live_nodes: [gpuNode],
      created_by: 'agent',
    });
    expect(partitions.find((p) => p.name === 'default')?.live_nodes.sort()).toEqual(
      [armNode, cpuNode].sort(),
    );
    const workers = (await api('GET', '/api/v1/workers')).body.workers as Record<string, unknown>[];
    const gpu = workers.find((w) => w.worker_id === gpuNode);
    expect(gpu).toMatchObject({
      memory_mb: 8192,
      gpu_devices: [
        { index: 0, model: 'a100', used: false },
        { index: 1, model: 'a100', used: false },
      ],
      features: ['avx512', 'ssd'],
      declared_partitions: ['gpu'],
    });
    // How the agent holds jobs to their memory is visible on the worker (as its start-up log says).
    expect(['cgroup', 'rss']).toContain(gpu?.memory_enforcement);
    const logged = await (agents[0] as AgentProcess).waitForLine(/Memory enforcement: /);
    expect(logged).toContain(String(gpu?.memory_enforcement));
  });

  it('a GPU job lands only on the GPU node and sees exactly its device', async () => {
    const job = await submit({
      script: 'echo "gpus=$CUDA_VISIBLE_DEVICES slurm=$SLURM_JOB_GPUS ordinal=$GPU_DEVICE_ORDINAL"',
      cpus: 1,
      gpus: 1,
      partition: 'gpu',
    });
    const done = await ended(job.id);
    expect(done).toMatchObject({ state: 'COMPLETED', node: gpuNode, partition: 'gpu' });
    expect(done.allocated_gpus).toHaveLength(1);
    const index = done.allocated_gpus?.[0];
    expect(await stdout(job.id)).toContain(`gpus=${index} slurm=${index} ordinal=${index}`);
  });

  it('two one-GPU jobs on the two-GPU node get different GPUs; a third waits with reason Resources', async () => {
    const script = 'echo "gpu=$CUDA_VISIBLE_DEVICES"; sleep 3';
    const a = await submit({ script, cpus: 1, gres: 'gpu:a100:1', partition: 'gpu' });
    const b = await submit({ script, cpus: 1, gpus: 'a100:1', partition: 'gpu' });
    const [ra, rb] = await Promise.all([
      until(a.id, (j) => j.state === 'RUNNING', 'running'),
      until(b.id, (j) => j.state === 'RUNNING', 'running'),
    ]);
    expect(new Set([...(ra.allocated_gpus ?? []), ...(rb.allocated_gpus ?? [])])).toEqual(new Set([0, 1]));
    const c = await submit({ script: 'true', cpus: 1, gpus: 1, partition: 'gpu' });
    const waiting = await until(c.id, (j) => j.reason === 'Resources', 'waiting with Resources');
    expect(waiting.state).toBe('PENDING');
    expect(waiting.reason_detail).toMatch(/1 GPUs/);
    expect(waiting.reason_detail).toContain(gpuNode);
    await Promise.all([ended(a.id), ended(b.id)]);
    expect(await stdout(a.id)).not.toBe(await stdout(b.id));
    expect((await ended(c.id)).state).toBe('COMPLETED');
  });

  it('a job past its memory ends OUT_OF_MEMORY with its output kept', async () => {
    const job = await submit({
      script: [
        'echo before',
        'python3 -c "import time; b = bytearray(400 * 1024 * 1024); time.sleep(30)"',
        'echo after',
      ].join('\n'),
      cpus: 1,
      memory_per_node: '100M',
    });
    const done = await ended(job.id);
    expect(done.state).toBe('OUT_OF_MEMORY');
    expect(await stdout(job.id)).toContain('before');
  });

  it('--constraint places on a node with the features; an expression no node has is a 400', async () => {
    const arm = await submit({ script: 'true', cpus: 1, constraint: 'arm64' });
    expect((await ended(arm.id)).node).toBe(armNode);
    const both = await submit({ script: 'true', cpus: 1, constraint: 'avx512&ssd', partition: 'gpu' });
    expect((await ended(both.id)).node).toBe(gpuNode);
    const either = await submit({ script: 'true', cpus: 1, constraint: '[arm64|ssd]' });
    expect((await ended(either.id)).node).toBe(armNode);
    const none = await api('POST', '/api/v1/jobs/submit', { script: 'true', cpus: 1, constraint: 'power9' });
    expect(none.status).toBe(400);
    expect(JSON.stringify(none.body)).toMatch(/not available.*power9/);
  });

  it('-w runs on the named node, -x never on an excluded one', async () => {
    const named = await submit({ script: 'true', cpus: 1, nodelist: cpuNode });
    expect((await ended(named.id)).node).toBe(cpuNode);
    for (let i = 0; i < 3; i++) {
      const kept = await submit({ script: 'true', cpus: 1, exclude: [armNode] });
      expect((await ended(kept.id)).node).toBe(cpuNode);
    }
  });

  it('--exclusive takes a whole idle node: all its CPUs, nothing else lands there meanwhile', async () => {
    const whole = await submit({
      script: 'echo "cpus=$CONDUCTOR_CPUS"; sleep 2',
      cpus: 1,
      exclusive: true,
      nodelist: cpuNode,
    });
    await until(whole.id, (j) => j.state === 'RUNNING', 'running');
    const other = await submit({ script: 'true', cpus: 1, nodelist: cpuNode });
    const waiting = await until(other.id, (j) => j.reason === 'Resources', 'waiting');
    expect(waiting.state).toBe('PENDING');
    expect((await ended(whole.id)).state).toBe('COMPLETED');
    expect(await stdout(whole.id)).toContain('cpus=4');
    expect((await ended(other.id)).node).toBe(cpuNode);
  });

  it('refuses an unknown partition and an impossible request with a 400 that names the problem', async () => {
    const unknown = await api('POST', '/api/v1/jobs/submit', { script: 'true', cpus: 1, partition: 'nope' });
    expect(unknown.status).toBe(400);
    expect(unknown.body.error).toMatchObject({ code: 'invalid_partition' });
    expect(JSON.stringify(unknown.body)).toMatch(/no partition nope.*default.*gpu/);
    const gpus = await api('POST', '/api/v1/jobs/submit', {
      script: 'true',
      cpus: 1,
      gpus: 3,
      partition: 'gpu',
    });
    expect(gpus.status).toBe(400);
    expect(JSON.stringify(gpus.body)).toMatch(/not available.*needs 3 GPUs, has 2/);
    const cpus = await api('POST', '/api/v1/jobs/submit', { script: 'true', cpus: 64 });
    expect(cpus.status).toBe(400);
    expect(JSON.stringify(cpus.body)).toMatch(/needs 64 CPUs, has 4/);
    const memory = await api('POST', '/api/v1/jobs/submit', {
      script: 'true',
      cpus: 1,
      memory_per_node: '16G',
    });
    expect(memory.status).toBe(400);
    expect(JSON.stringify(memory.body)).toMatch(/needs 16384 MB of memory, has/);
    const nodes = await api('POST', '/api/v1/jobs/submit', { script: 'true', cpus: 1, nodes: 2 });
    expect(nodes.status).toBe(400);
    expect(JSON.stringify(nodes.body)).toMatch(/one node/);
  });

  it('held, partition-down and node-unavailable jobs wait with their reasons; explain says why per node', async () => {
    const held = await submit({ script: 'true', cpus: 1, partition: 'gpu' });
    const hold = await api('POST', `/api/v1/jobs/${held.id}/hold`);
    // The pass may have placed it first; then it ran and the hold is refused (409): submit while the
    // partition is down instead.
    const down = await api('POST', '/api/v1/partitions/gpu', { state: 'DOWN' });
    expect(down.status).toBe(200);
    const behindDown = await submit({ script: 'true', cpus: 1, partition: 'gpu' });
    expect(
      (await until(behindDown.id, (j) => j.reason === 'PartitionDown', 'PartitionDown')).reason_detail,
    ).toBe('partition gpu is DOWN');
    const heldJob = await submit({ script: 'true', cpus: 1, partition: 'gpu' });
    expect((await api('POST', `/api/v1/jobs/${heldJob.id}/hold`)).body).toMatchObject({
      reason: 'JobHeldUser',
      held: 'user',
    });
    const explained = await api('GET', `/api/v1/jobs/${behindDown.id}/explain`);
    const nodes = explained.body.nodes as { node: string; fits: boolean; why: string[] }[];
    expect(nodes.find((n) => n.node === gpuNode)?.why).toContain('partition gpu is DOWN');
    expect(nodes.find((n) => n.node === cpuNode)?.why.join()).toMatch(/not in partition gpu/);
    expect((await api('POST', '/api/v1/partitions/gpu', { state: 'UP' })).status).toBe(200);
    expect((await ended(behindDown.id)).state).toBe('COMPLETED');
    // Held until released, also with the partition up.
    expect((await get(heldJob.id)).state).toBe('PENDING');
    expect((await api('POST', `/api/v1/jobs/${heldJob.id}/release`)).status).toBe(200);
    expect((await ended(heldJob.id)).state).toBe('COMPLETED');
    if (hold.status === 200) expect((await api('POST', `/api/v1/jobs/${held.id}/release`)).status).toBe(200);
    await ended(held.id);

    // A node list naming a node that is known but gone: ReqNodeNotAvail.
    const arm = agents[2] as AgentProcess;
    await arm.stop();
    const gone = await submit({ script: 'true', cpus: 1, nodelist: armNode });
    const waiting = await until(gone.id, (j) => j.reason === 'ReqNodeNotAvail', 'ReqNodeNotAvail');
    expect(waiting.reason_detail).toContain(armNode);
    expect((await api('POST', `/api/v1/jobs/${gone.id}/cancel`)).status).toBe(200);
    await checkInvariants(backend.db.db, backend.registry);
  });
});
