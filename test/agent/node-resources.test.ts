/**
 * Whole node resources on the agent's side: what it reads from TOTAL_MEMORY, MEMORY_RESERVE, GPUS, GRES,
 * FEATURES and PARTITIONS (and their flags) or detects (memory, `nvidia-smi`), what it registers with, what
 * jobs see of their GPUs and memory, and how a job past its memory_mb ends (`out_of_memory`, output kept).
 *
 * Registration runs against the real control plane. Jobs with GPU indexes and memory limits come from a
 * scripted control plane (scripted-control-plane.ts): the server does not place such jobs yet, and the agent's
 * finish report is checked as it is sent.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseAgentArgs } from '../../agent/src/config.ts';
import { detectMemoryEnforcement, JobCgroup } from '../../agent/src/containment.ts';
import { startJob } from '../../agent/src/executor.ts';
import type { Assignment, RegisterRequest } from '../../agent/src/protocol.ts';
import {
  defaultMemoryReserveMb,
  gpuModelName,
  parseMemoryMb,
  parseNvidiaSmi,
} from '../../agent/src/resources.ts';
import { AgentProcess } from '../support/agent-process.ts';
import { agentBackends, sentBy, useControlPlane } from './control-plane.ts';
import { ScriptedControlPlane } from './scripted-control-plane.ts';

const root = mkdtempSync(join(tmpdir(), 'conductor-resources-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

/** A folder holding an `nvidia-smi` that prints what the real one prints for two GPUs with these flags. */
function fakeNvidiaSmi(): string {
  const dir = mkdtempSync(join(root, 'bin-'));
  writeFileSync(
    join(dir, 'nvidia-smi'),
    [
      '#!/bin/sh',
      '[ "$1 $2" = "--query-gpu=index,name --format=csv,noheader" ] || { echo "unexpected: $*" >&2; exit 6; }',
      "printf '0, NVIDIA A100-SXM4-40GB\\n1, Tesla V100-SXM2-16GB\\n'",
      '',
    ].join('\n'),
    { mode: 0o755 },
  );
  return dir;
}

const machineMb = Math.floor(totalmem() / 1024 / 1024);

describe('configuration', () => {
  it('reads TOTAL_MEMORY, MEMORY_RESERVE, GPUS, GRES, FEATURES, PARTITIONS, flags taking precedence', () => {
    const parsed = parseAgentArgs(['--gpus', 'v100:2', '--partitions', 'gpu,batch'], {
      TOTAL_MEMORY: '64G',
      MEMORY_RESERVE: '2048',
      GPUS: 'a100:4',
      GRES: 'nvme:1, license_matlab:2,scratch',
      FEATURES: 'avx512,ssd,arm64',
      PARTITIONS: 'ignored',
    });
    expect(parsed.kind).toBe('run');
    if (parsed.kind !== 'run') return;
    expect(parsed.config).toMatchObject({
      memoryMb: 65536,
      memoryReserveMb: 2048,
      gpus: [
        { index: 0, model: 'v100' },
        { index: 1, model: 'v100' },
      ],
      gres: { nvme: 1, license_matlab: 2, scratch: 1 },
      features: ['avx512', 'ssd', 'arm64'],
      partitions: ['gpu', 'batch'],
    });
  });

  it('GPUS=4 is four GPUs of model gpu, GPUS=0 none; sizes take K, M, G, T', () => {
    const four = parseAgentArgs([], { GPUS: '4' });
    expect(four.kind === 'run' && four.config.gpus?.map((g) => `${g.model}:${g.index}`)).toEqual([
      'gpu:0',
      'gpu:1',
      'gpu:2',
      'gpu:3',
    ]);
    const none = parseAgentArgs(['--gpus', '0'], {});
    expect(none.kind === 'run' && none.config.gpus).toEqual([]);
    expect(['512K', '100', '100M', '1.5G', '2g', '1T', '4GB'].map(parseMemoryMb)).toEqual([
      0, 100, 100, 1536, 2048, 1048576, 4096,
    ]);
  });

  it('refuses bad values, naming the variable or flag and the value', () => {
    const bad = parseAgentArgs(['--memory-reserve=-1'], {
      TOTAL_MEMORY: '12Q',
      GPUS: 'a100:x',
      GRES: 'nvme:1,gpu:2',
      FEATURES: 'avx512,bad feature',
      PARTITIONS: 'gpu,/etc',
    });
    expect(bad.kind).toBe('error');
    const message = bad.kind === 'error' ? bad.message : '';
    expect(message.split('\n')).toEqual([
      'TOTAL_MEMORY must be MB, or a size with K, M, G or T (KiB to TiB) such as 64G, got "12Q"',
      '--memory-reserve must be MB, or a size with K, M, G or T (KiB to TiB) such as 64G, got "-1"',
      'GPUS must be a GPU count (0 to 63) or <model>:<count> such as a100:4, got "a100:x"',
      'GRES must not name gpu (GPUs are set with GPUS)',
      `FEATURES must be names (letters, digits, '.', '_' and '-') separated by commas, got "bad feature"`,
      `PARTITIONS must be names (letters, digits, '.', '_' and '-') separated by commas, got "/etc"`,
    ]);
    const tooMany = parseAgentArgs([], { GPUS: '64', GRES: 'nvme:x' });
    expect(tooMany.kind === 'error' && tooMany.message.split('\n')).toEqual([
      'GPUS must be a GPU count (0 to 63) or <model>:<count> such as a100:4, got "64"',
      'GRES must be <name>[:<count>] items separated by commas, such as nvme:1,license_matlab:2, got "nvme:x"',
    ]);
  });

  it('names GPU models as the spec says', () => {
    expect(
      [
        'NVIDIA A100-SXM4-40GB',
        'Tesla V100-SXM2-16GB',
        'NVIDIA GeForce RTX 3090',
        'Quadro RTX 6000',
        'NVIDIA H100 PCIe',
      ].map(gpuModelName),
    ).toEqual(['a100', 'v100', 'rtx3090', 'rtx6000', 'h100pcie']);
    expect(parseNvidiaSmi('0, NVIDIA A100-SXM4-40GB\n1, NVIDIA A100-SXM4-40GB\n\n')).toEqual([
      { index: 0, model: 'a100' },
      { index: 1, model: 'a100' },
    ]);
  });
});

describe('memory enforcement mechanisms', () => {
  it('the cgroup mechanism writes memory.max and memory.swap.max, and reads OOM kills from memory.events', () => {
    // A stand-in for a job's cgroup v2 directory: this VM's cgroup v2 hierarchy has no memory controller
    // (cgroup v1 holds it), so the kernel side cannot run here.
    const dir = mkdtempSync(join(root, 'cgroup-'));
    writeFileSync(join(dir, 'memory.swap.max'), 'max\n');
    const cgroup = new JobCgroup(dir);
    expect(cgroup.oomKills()).toBe(0);
    cgroup.limitMemory(100);
    expect(readFileSync(join(dir, 'memory.max'), 'utf8')).toBe(String(100 * 1024 * 1024));
    expect(readFileSync(join(dir, 'memory.swap.max'), 'utf8')).toBe('0');
    writeFileSync(join(dir, 'memory.events'), 'low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 0\n');
    expect(cgroup.oomKills()).toBe(1);
  });

  it('a job whose cgroup recorded an OOM kill ends out_of_memory with its exit code as observed', async () => {
    // The executor's side of `cgroup` with the kernel's played by the job: its "cgroup" is a plain folder,
    // where the job finds the memory.max written before it ran, records an OOM kill in memory.events and
    // empties cgroup.procs (which the agent wrote its pid to) as the kernel would once it is gone.
    const parent = mkdtempSync(join(root, 'fake-cgroup-parent-'));
    const ref = { job_id: 9001, attempt: 1 };
    const job = startJob(
      {
        ...ref,
        name: 'oom',
        script: [
          'cg="$FAKE_CGROUPS/9001.1"',
          'echo "memory.max $(cat "$cg/memory.max")"',
          'printf "oom 1\\noom_kill 1\\n" > "$cg/memory.events"',
          ': > "$cg/cgroup.procs"',
          'exit 137',
        ].join('\n'),
        cpus: 1,
        work_dir: null,
        environment: { FAKE_CGROUPS: parent },
        time_limit_s: null,
        memory_mb: 100,
      },
      {
        jobsDir: join(root, 'fake-cgroup-jobs'),
        containment: { kind: 'cgroup2', description: 'fake', parent },
        memoryEnforcement: 'cgroup',
        supervise: false,
      },
    );
    expect(await job.result).toEqual({
      exit_code: '137:0',
      outcome: 'out_of_memory',
      message: 'exceeded its memory limit of 100 MB (the kernel killed 1 of its processes)',
    });
    expect(readFileSync(job.stdoutPath, 'utf8')).toBe(`memory.max ${100 * 1024 * 1024}\n`);
  });

  it('without a cgroup the agent samples RSS; with cgroup v1 too', () => {
    expect(detectMemoryEnforcement({ kind: 'sweep', description: '' }, 500)).toEqual({
      kind: 'rss',
      description:
        'rss (sampling every 500 ms, killing a job past its limit; job containment is the /proc sweep)',
    });
    expect(detectMemoryEnforcement({ kind: 'cgroup1', description: '', parent: root }, 250).kind).toBe('rss');
  });
});

const { pglite } = await agentBackends();

describe('registration on the real control plane', () => {
  const { control, track, unique } = useControlPlane(pglite, root);

  it('sends the GPUs nvidia-smi lists, the memory less the reserve, and how memory is enforced; logs them', async () => {
    const cp = control();
    const name = unique('gpu-node');
    const agent = track(
      new AgentProcess(name, cp.url, {
        env: {
          PATH: `${fakeNvidiaSmi()}:${process.env.PATH}`,
          GRES: 'nvme:1',
          FEATURES: 'avx512,ssd',
          PARTITIONS: 'gpu',
        },
      }),
    );
    await agent.registered();
    const reg = sentBy(cp, '/agents/register', name)[0]!;
    expect(reg.status).toBe(200);
    const body = reg.body as RegisterRequest;
    const memory = machineMb - defaultMemoryReserveMb(machineMb);
    expect(body).toMatchObject({
      cpus: 4,
      memory_mb: memory,
      gpus: [
        { index: 0, model: 'a100' },
        { index: 1, model: 'v100' },
      ],
      gres: { nvme: 1 },
      features: ['avx512', 'ssd'],
      partitions: ['gpu'],
    });
    expect(['cgroup', 'rss']).toContain(body.memory_enforcement);
    expect(agent.lines.some((l) => l.endsWith(`✓ Worker registered: ${name} (4 CPUs)`))).toBe(true);
    expect(
      agent.lines.some((l) =>
        l.endsWith(
          `Resources: 4 CPUs, ${memory} MB memory, 2 GPUs (a100:0 v100:1), gres nvme:1, features avx512,ssd, partitions gpu`,
        ),
      ),
    ).toBe(true);
    const enforcement = agent.lines.find((l) => l.includes('Memory enforcement: '))!;
    expect(enforcement).toMatch(
      body.memory_enforcement === 'cgroup'
        ? /Memory enforcement: cgroup \(memory\.max/
        : /Memory enforcement: rss \(sampling every 500 ms/,
    );
    expect(await agent.stop()).toBe(0);
  });

  it('GPUS, TOTAL_MEMORY and MEMORY_RESERVE override detection; sweep containment enforces by RSS', async () => {
    const cp = control();
    const name = unique('plain-node');
    const agent = track(
      new AgentProcess(name, cp.url, {
        env: {
          PATH: `${fakeNvidiaSmi()}:${process.env.PATH}`,
          GPUS: 'h100:3',
          TOTAL_MEMORY: '64G',
          MEMORY_RESERVE: '1G',
          CONDUCTOR_JOB_CONTAINMENT: 'sweep',
        },
      }),
    );
    await agent.registered();
    const body = sentBy(cp, '/agents/register', name)[0]!.body as RegisterRequest;
    expect(body).toMatchObject({
      memory_mb: 64 * 1024 - 1024,
      gpus: [0, 1, 2].map((index) => ({ index, model: 'h100' })),
      gres: {},
      features: [],
      partitions: [],
      memory_enforcement: 'rss',
    });
    expect(
      agent.lines.some((l) =>
        l.endsWith('Resources: 4 CPUs, 64512 MB memory, 3 GPUs (h100:0,1,2), partitions (the default)'),
      ),
    ).toBe(true);
    expect(
      agent.lines.some((l) =>
        /Memory enforcement: rss \(sampling every 500 ms, .*the \/proc sweep\)$/.test(l),
      ),
    ).toBe(true);
    expect(await agent.stop()).toBe(0);
  });

  it('GPUS=0 means none even with nvidia-smi on PATH; TOTAL_MEMORY alone is taken as given', async () => {
    const cp = control();
    const name = unique('no-gpu-node');
    const agent = track(
      new AgentProcess(name, cp.url, {
        env: { PATH: `${fakeNvidiaSmi()}:${process.env.PATH}` },
        args: ['--gpus', '0', '--memory', '2048'],
      }),
    );
    await agent.registered();
    expect(sentBy(cp, '/agents/register', name)[0]!.body).toMatchObject({ memory_mb: 2048, gpus: [] });
    expect(agent.lines.some((l) => l.includes('Resources: 4 CPUs, 2048 MB memory, no GPUs'))).toBe(true);
    expect(await agent.stop()).toBe(0);
  });

  it('a bad value stops the agent before it registers: exit code 2 and the reason', async () => {
    const agent = track(
      new AgentProcess(unique('bad-node'), 'http://127.0.0.1:9', {
        env: { GPUS: 'a100:many', TOTAL_MEMORY: 'lots' },
      }),
    );
    expect(await agent.waitForExit()).toBe(2);
    expect(agent.lines).toContain(
      '  TOTAL_MEMORY must be MB, or a size with K, M, G or T (KiB to TiB) such as 64G, got "lots"',
    );
    expect(agent.lines).toContain(
      '  GPUS must be a GPU count (0 to 63) or <model>:<count> such as a100:4, got "a100:many"',
    );
  });
});

let nextJob = 1;
function assignment(script: string, extra: Partial<Assignment> = {}): Assignment {
  return {
    job_id: nextJob++,
    attempt: 1,
    name: 'resources',
    script,
    cpus: 1,
    work_dir: null,
    environment: {},
    time_limit_s: null,
    ...extra,
  };
}

const SHOW_ENV = [
  'CUDA_VISIBLE_DEVICES',
  'SLURM_JOB_GPUS',
  'GPU_DEVICE_ORDINAL',
  'SLURM_GPUS_ON_NODE',
  'SLURM_MEM_PER_NODE',
  'SLURM_JOB_GRES',
]
  .map((v) => `echo "${v}=\${${v}-unset}"`)
  .join('\n');

/** Allocates 300 MB (b'x' * n writes every page: it is resident) and holds it. */
const ALLOCATE_300MB = `python3 -c "b = b'x' * (300 * 1024 * 1024); import time; time.sleep(5)"`;

describe.each([
  { containment: 'auto', why: 'the cgroup when it has the memory controller, else RSS of the cgroup' },
  { containment: 'sweep', why: 'RSS of what the /proc sweep finds' },
])('jobs on an agent with GPUs, containment $containment ($why)', ({ containment }) => {
  let cp: ScriptedControlPlane;
  let agent: AgentProcess;
  beforeAll(async () => {
    cp = await ScriptedControlPlane.start();
    agent = new AgentProcess(`jobs-${containment}`, cp.url, {
      env: { GPUS: 'a100:2', CONDUCTOR_JOB_CONTAINMENT: containment, CUDA_VISIBLE_DEVICES: '0,1' },
    });
    await agent.registered();
  });
  afterAll(async () => {
    await agent.stop();
    await cp.close();
  });

  it('a job assigned GPU 1 sees it in CUDA_VISIBLE_DEVICES, SLURM_JOB_GPUS and GPU_DEVICE_ORDINAL', async () => {
    const job = assignment(SHOW_ENV, { gpus: [1], memory_mb: 2048, gres: { nvme: 1 } });
    cp.assign(job);
    expect(await cp.finish(job.job_id)).toMatchObject({ outcome: 'exited', exit_code: '0:0' });
    expect(cp.output(job.job_id, 'stdout').split('\n')).toEqual([
      'CUDA_VISIBLE_DEVICES=1',
      'SLURM_JOB_GPUS=1',
      'GPU_DEVICE_ORDINAL=1',
      'SLURM_GPUS_ON_NODE=1',
      'SLURM_MEM_PER_NODE=2048',
      'SLURM_JOB_GRES=gpu:1,nvme:1',
      '',
    ]);
  });

  it("a job without GPUs sees none: neither the agent's nor the submitted CUDA_VISIBLE_DEVICES", async () => {
    const job = assignment(SHOW_ENV, { environment: { CUDA_VISIBLE_DEVICES: '0', SLURM_MEM_PER_NODE: '9' } });
    cp.assign(job);
    expect(await cp.finish(job.job_id)).toMatchObject({ outcome: 'exited', exit_code: '0:0' });
    expect(cp.output(job.job_id, 'stdout').split('\n')).toEqual([
      'CUDA_VISIBLE_DEVICES=',
      'SLURM_JOB_GPUS=unset',
      'GPU_DEVICE_ORDINAL=unset',
      'SLURM_GPUS_ON_NODE=unset',
      'SLURM_MEM_PER_NODE=unset',
      'SLURM_JOB_GRES=unset',
      '',
    ]);
  });

  it('a job allocating past its memory_mb is killed: out_of_memory, its output kept', async () => {
    const mechanism = cp.registrations()[0]!.memory_enforcement;
    expect(mechanism).toBe(containment === 'sweep' ? 'rss' : mechanism);
    const job = assignment(`echo before; echo warn >&2\n${ALLOCATE_300MB}\necho after`, { memory_mb: 100 });
    const began = Date.now();
    cp.assign(job);
    const finish = await cp.finish(job.job_id);
    if (mechanism === 'cgroup') {
      // The kernel kills python; the script goes on, and the job still ran out of memory.
      expect(finish).toMatchObject({ outcome: 'out_of_memory', exit_code: '0:0' });
      expect(finish.message).toMatch(
        /^exceeded its memory limit of 100 MB \(the kernel killed 1 of its processes\)$/,
      );
      expect(cp.output(job.job_id, 'stdout')).toBe('before\nafter\n');
    } else {
      expect(finish).toMatchObject({ outcome: 'out_of_memory', exit_code: '0:9' });
      expect(finish.message).toMatch(/^exceeded its memory limit of 100 MB \(resident memory \d+ MB\)$/);
      expect(cp.output(job.job_id, 'stdout')).toBe('before\n');
      expect(Date.now() - began).toBeLessThan(5000);
    }
    expect(cp.output(job.job_id, 'stderr')).toBe('warn\n');
    expect(agent.lines.some((l) => l.includes(`Job ${job.job_id}.1 ended: out_of_memory`))).toBe(true);
  });

  it('a job without memory_mb, or within it, is not limited', async () => {
    const unlimited = assignment(`${ALLOCATE_300MB.replace('sleep(5)', 'sleep(1.5)')} && echo done`);
    const within = assignment(`${ALLOCATE_300MB.replace('sleep(5)', 'sleep(1.5)')} && echo done`, {
      memory_mb: 1024,
    });
    cp.assign(unlimited);
    cp.assign(within);
    for (const job of [unlimited, within]) {
      expect(await cp.finish(job.job_id)).toMatchObject({ outcome: 'exited', exit_code: '0:0' });
      expect(cp.output(job.job_id, 'stdout')).toBe('done\n');
    }
  });
});
