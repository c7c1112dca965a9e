/**
 * `conductor partitions`, `partition`, `hold`, `release` and `explain` as people run them (the binary,
 * cli/bin/conductor.js), against a real control plane with a real agent that has GPUs, memory and a
 * partition of its own. CONDUCTOR_CLI_TRANSCRIPT=1 prints every command and its output.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AgentProcess, eventually } from '../support/agent-process.ts';
import { availableBackends, type Backend, startTestServer, testConfig } from '../support/cluster.ts';

const BIN = fileURLToPath(new URL('../../cli/bin/conductor.js', import.meta.url));
const [pglite] = (await availableBackends()).filter((b) => b.name === 'pglite+memory');

const SUBMIT_DIR = mkdtempSync(join(tmpdir(), 'conductor-cli-submit-'));

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function conductor(args: string[], env: Record<string, string>, input = ''): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], {
      // As a user submits: from a directory of theirs, which the agent's job root (the temp folder) holds.
      cwd: SUBMIT_DIR,
      env: { PATH: process.env.PATH, HOME: env.HOME ?? tmpdir(), ...env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
    });
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    child.stdin.end(input);
    child.on('error', reject);
    child.on('close', (code) => {
      if (process.env.CONDUCTOR_CLI_TRANSCRIPT === '1') {
        console.log(`$ conductor ${args.join(' ')}\n${stdout}${stderr}[exit ${code}]`);
      }
      resolve({ code, stdout, stderr });
    });
  });
}

describe.runIf(pglite)('conductor partitions, partition, hold, release, explain', () => {
  let backend: Backend;
  let server: Awaited<ReturnType<typeof startTestServer>>;
  let agent: AgentProcess;
  let env: Record<string, string>;

  beforeAll(async () => {
    backend = await pglite!.create();
    server = await startTestServer(backend, testConfig({ scheduleIntervalSeconds: 1 }));
    agent = new AgentProcess('cli-gpu-1', server.url, {
      cpus: 4,
      env: {
        GPUS: 'a100:2',
        TOTAL_MEMORY: '8G',
        MEMORY_RESERVE: '0',
        PARTITIONS: 'gpu',
        FEATURES: 'ssd',
        GRES: 'nvme:1',
      },
    });
    await agent.registered();
    env = { CONDUCTOR_URL: server.url, HOME: mkdtempSync(join(tmpdir(), 'conductor-cli-part-')) };
  });
  afterAll(async () => {
    await agent?.stop();
    await server?.close();
    await backend?.close();
  });

  it('lists the partitions like sinfo -s: the default first, live nodes, CPUs and GPUs allocated/total', async () => {
    const run = await conductor(['partitions'], env);
    expect(run.code, run.stderr).toBe(0);
    const lines = run.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^NAME\s+STATE\s+DEFAULT\s+NODES\s+CPUS\s+GPUS$/);
    expect(lines[1]).toMatch(/^default\s+UP\s+yes\s+0\s+0\/0\s+0\/0$/);
    expect(lines[2]).toMatch(/^gpu\s+UP\s+no\s+1\s+0\/4\s+0\/2$/);
    const json = JSON.parse((await conductor(['partitions', '--json'], env)).stdout);
    expect(json.partitions.map((p: { name: string }) => p.name)).toEqual(['default', 'gpu']);
    expect(json.partitions[1]).toMatchObject({ name: 'gpu', created_by: 'agent', live_nodes: ['cli-gpu-1'] });
  });

  it('creates a partition, changes only what is given, shows it, makes it the default and deletes it', async () => {
    const created = await conductor(
      [
        'partition',
        'batch',
        '--state',
        'down',
        '--nodes',
        'cli-gpu-[1-2]',
        '--max-time',
        '1:00:00',
        '--def-mem-per-cpu',
        '1G',
        '--allow-accounts',
        'physics,chem',
        '--policy',
        'spread',
        '--max-cpus-per-node',
        '2',
      ],
      env,
    );
    expect(created.code, created.stderr).toBe(0);
    expect(created.stdout).toMatch(/^state +DOWN$/m);
    expect(created.stdout).toMatch(/^max_time +60$/m);
    expect(created.stdout).toMatch(/^allow_accounts +physics, chem$/m);
    const changed = await conductor(
      ['partition', 'batch', '--state', 'UP', '--max-time', 'UNLIMITED', '--json'],
      env,
    );
    expect(changed.code, changed.stderr).toBe(0);
    expect(JSON.parse(changed.stdout)).toMatchObject({
      name: 'batch',
      state: 'UP',
      max_time: null,
      def_mem_per_cpu: 1024,
      max_cpus_per_node: 2,
      policy: 'spread',
      nodes: 'cli-gpu-[1-2]',
      allow_accounts: ['physics', 'chem'],
      live_nodes: ['cli-gpu-1'],
      created_by: 'admin',
    });
    // The retry policy of its jobs; none: back to the cluster's.
    const retries = await conductor(
      [
        'partition',
        'batch',
        '--max-requeues',
        '4',
        '--retry-on-failure',
        'yes',
        '--retry-backoff',
        '30',
        '--crash-limit',
        '2',
        '--json',
      ],
      env,
    );
    expect(retries.code, retries.stderr).toBe(0);
    expect(JSON.parse(retries.stdout)).toMatchObject({
      max_requeues: 4,
      retry_on_failure: true,
      retry_backoff_s: 30,
      crash_limit: 2,
      policy: 'spread',
    });
    const cleared = await conductor(
      ['partition', 'batch', '--max-requeues', 'none', '--retry-on-failure', 'none', '--json'],
      env,
    );
    expect(JSON.parse(cleared.stdout)).toMatchObject({
      max_requeues: null,
      retry_on_failure: null,
      crash_limit: 2,
    });
    const shown = await conductor(['partition', 'batch'], env);
    expect(shown.code, shown.stderr).toBe(0);
    expect(shown.stdout).toMatch(/^name +batch$/m);
    expect(shown.stdout).toMatch(/^policy +spread$/m);
    const missing = await conductor(['partition', 'nosuch'], env);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain('create it with an option');

    expect((await conductor(['partition', 'batch', '--default'], env)).code).toBe(0);
    expect((await conductor(['partitions'], env)).stdout).toMatch(/^batch\s+UP\s+yes\s+1\s+0\/4\s+0\/2$/m);
    const refused = await conductor(['partition', 'batch', '--delete'], env);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain('default partition');
    expect((await conductor(['partition', 'default', '--default'], env)).code).toBe(0);
    const deleted = await conductor(['partition', 'batch', '--delete'], env);
    expect(deleted.code, deleted.stderr).toBe(0);
    expect(deleted.stdout).toBe('Partition batch deleted\n');
    expect((await conductor(['partitions'], env)).stdout).not.toMatch(/^batch/m);
  });

  it('refuses bad partition options with exit code 2, before asking the server', async () => {
    for (const args of [
      ['partition', 'x', '--state', 'sleepy'],
      ['partition', 'x', '--policy', 'random'],
      ['partition', 'x', '--max-cpus-per-node', 'many'],
      ['partition', 'x', '--max-requeues', '-1'],
      ['partition', 'x', '--retry-on-failure', 'sometimes'],
      ['partition', 'x', '--delete', '--state', 'UP'],
      ['partition'],
      ['partitions', 'extra'],
    ]) {
      const run = await conductor(args, env);
      expect(run.code, args.join(' ')).toBe(2);
    }
  });

  it('holds a waiting job, explains why it waits node by node, releases it', async () => {
    const busy = JSON.parse(
      (await conductor(['submit', '-', '-c', '4', '-p', 'gpu', '--json'], env, 'sleep 30\n')).stdout,
    ) as { id: number };
    await eventually(async () => {
      const job = JSON.parse((await conductor(['show', String(busy.id), '--json'], env)).stdout);
      return job.state === 'RUNNING';
    });
    const waiting = JSON.parse(
      (await conductor(['submit', '-', '-c', '2', '-G', 'a100:1', '-p', 'gpu', '--json'], env, 'true\n'))
        .stdout,
    ) as { id: number };
    const id = String(waiting.id);
    await eventually(async () => {
      const job = JSON.parse((await conductor(['show', id, '--json'], env)).stdout);
      return job.reason === 'Resources';
    });
    const explained = await conductor(['explain', id], env);
    expect(explained.code, explained.stderr).toBe(0);
    const lines = explained.stdout.trimEnd().split('\n');
    expect(lines[0]).toBe(`Job ${id} PENDING: Resources`);
    expect(lines).toContainEqual(expect.stringMatching(/^NODE\s+FITS\s+WHY$/));
    expect(lines).toContainEqual(expect.stringMatching(/^cli-gpu-1\s+no\s+.*CPU/));
    const json = JSON.parse((await conductor(['explain', id, '--json'], env)).stdout);
    expect(json).toMatchObject({ job_id: waiting.id, state: 'PENDING', reason: 'Resources' });
    expect(json.nodes[0]).toMatchObject({ node: 'cli-gpu-1', fits: false });

    const held = await conductor(['hold', id], env);
    expect(held.code, held.stderr).toBe(0);
    expect(held.stdout).toBe(`Job ${id}: held (JobHeldUser)\n`);
    expect((await conductor(['jobs', '--state', 'PENDING'], env)).stdout).toMatch(
      new RegExp(`^${id}\\s+.*\\(JobHeldUser\\)$`, 'm'),
    );
    expect((await conductor(['explain', id], env)).stdout.split('\n')[0]).toBe(
      `Job ${id} PENDING: JobHeldUser`,
    );
    const again = await conductor(['release', id, '999999'], env);
    expect(again.code).toBe(1); // 999999 does not exist
    expect(again.stdout).toBe(`Job ${id}: released\n`);
    expect(again.stderr).toContain('Job 999999 does not exist');
    const notHeld = await conductor(['release', id], env);
    expect(notHeld.code).toBe(1);
    expect(notHeld.stderr).toContain('is not held');

    await conductor(['cancel', String(busy.id)], env);
    await eventually(async () => {
      const job = JSON.parse((await conductor(['show', id, '--json'], env)).stdout);
      return job.state === 'COMPLETED';
    });
    const done = await conductor(['explain', id], env);
    expect(done.code).toBe(0);
    expect(done.stdout.split('\n')[0]).toMatch(new RegExp(`^Job ${id} COMPLETED`));
  }, 90_000);

  it('submits memory, GPUs, gres, constraint, exclusive, nodelist and exclude; the job runs with them', async () => {
    const run = await conductor(
      [
        'submit',
        '-',
        '--wait',
        '--mem',
        '1G',
        '-G',
        'a100:1',
        '--gres',
        'nvme:1',
        '-C',
        'ssd',
        '--exclusive',
        '-w',
        'cli-gpu-1',
        '-x',
        'cli-gpu-9',
        '-p',
        'gpu',
      ],
      env,
      '#SBATCH -N 1\necho "gpus=$CUDA_VISIBLE_DEVICES mem=$SLURM_MEM_PER_NODE"\n',
    );
    expect(run.code, run.stderr).toBe(0);
    const id = /Submitted batch job (\d+)/.exec(run.stderr)?.[1] as string;
    const job = JSON.parse((await conductor(['show', id, '--json'], env)).stdout);
    expect(job).toMatchObject({
      state: 'COMPLETED',
      node: 'cli-gpu-1',
      partition: 'gpu',
      memory_mb: 1024,
      gpus: 1,
      gpu_type: 'a100',
      gres: { nvme: 1 },
      constraint: 'ssd',
      exclusive: true,
      nodelist: ['cli-gpu-1'],
      exclude: ['cli-gpu-9'],
    });
    // --exclusive: the whole node, so both its GPUs.
    expect(job.allocated_gpus).toEqual([0, 1]);
    expect((await conductor(['logs', id], env)).stdout).toBe('gpus=0,1 mem=1024\n');
  }, 60_000);

  it('has --help with examples for every new command', async () => {
    for (const command of ['partitions', 'partition', 'hold', 'release', 'explain']) {
      const help = await conductor([command, '--help'], env);
      expect(help.code, command).toBe(0);
      expect(help.stdout, command).toMatch(new RegExp(`^Usage: conductor ${command}`));
      expect(help.stdout, command).toMatch(/Examples?:\n/);
    }
    const all = (await conductor(['--help'], env)).stdout;
    for (const command of ['partitions', 'partition <name>', 'hold <id>', 'release <id>', 'explain <id>'])
      expect(all).toContain(command);
  });
});
