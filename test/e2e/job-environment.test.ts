/**
 * The job's Slurm environment, end to end: the Node server (real Postgres and Redis, or the zero-setup
 * backend), real agents, real scripts that print `env | grep ^SLURM | sort`. Each job's variables are compared,
 * one by one, with what sbatch(1) documents for the same request.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
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
  node: string | null;
  exit_code: string | null;
  attempt: number;
}

const PRINT_SLURM_ENV = 'env | grep ^SLURM | sort';

/** `NAME=value` lines as a record. */
function parseEnv(text: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const eq = line.indexOf('=');
    if (eq > 0) env[line.slice(0, eq)] = line.slice(eq + 1);
  }
  return env;
}

describe.runIf(factory)("a job's SLURM_* environment with real agents", () => {
  let backend: Backend;
  let server: RunningServer & { logger: RecordingLogger };
  const agents: AgentProcess[] = [];
  const tag = `${process.pid}`;
  const node = `env01-${tag}`;
  // On the open local cluster a job has no owner: it is the user the agent runs it as (the agent's own here).
  const user = userInfo().username;

  beforeAll(async () => {
    backend = await (factory as NonNullable<typeof factory>).create();
    server = await startTestServer(
      backend,
      testConfig({ heartbeatIntervalSeconds: 1, workerTtlSeconds: 3, clusterName: 'testlab' }),
    );
    agents.push(new AgentProcess(node, server.url, { cpus: 8, env: { TOTAL_MEMORY: '8G' } }));
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
  const ended = (id: number, timeoutMs = 30_000) =>
    eventually(
      async () => {
        const job = (await api('GET', `/api/v1/jobs/${id}`)).body as unknown as Job;
        return ['PENDING', 'RUNNING'].includes(job.state) ? undefined : job;
      },
      { timeoutMs, what: `job ${id} ended` },
    );
  const slurmEnvOf = async (id: number) =>
    parseEnv(((await api('GET', `/api/v1/jobs/${id}/logs`)).body.stdout as { content: string }).content);

  it('-J -A -n 2 -c 3 --mem-per-cpu: every variable as sbatch(1) documents it', async () => {
    // A real directory: the job runs there, and writes its slurm-<id>.out there.
    const submitDir = mkdtempSync(join(tmpdir(), 'conductor-env-submit-'));
    const job = await submit({
      script: PRINT_SLURM_ENV,
      name: 'envcheck',
      account: 'physics',
      cpus: 6,
      ntasks: 2,
      cpus_per_task: 3,
      memory_per_cpu: '512M',
      submit_dir: submitDir,
      submit_host: 'login01',
      // Submitted from inside another job: the agent's values win.
      environment: { SLURM_JOB_ID: '999999', SLURM_CPUS_ON_NODE: '64' },
    });
    expect(await ended(job.id)).toMatchObject({ state: 'COMPLETED', node });
    // sbatch(1), Slurm 22.05, "OUTPUT ENVIRONMENT VARIABLES", for `sbatch -J envcheck -A physics -n 2 -c 3
    // --mem-per-cpu=512M` placed on one node of the default partition, run from login01:<submitDir>.
    const expected: Record<string, string> = {
      SLURM_JOB_ID: String(job.id), // "The ID of the job allocation."
      SLURM_JOBID: String(job.id), // "The ID of the job allocation. See SLURM_JOB_ID. Included for backwards compatibility."
      SLURM_JOB_NAME: 'envcheck', // "Name of the job."
      SLURM_JOB_USER: user, // (srun's batch step) the user name of the job's owner
      SLURM_JOB_ACCOUNT: 'physics', // "Account name associated of the job allocation."
      SLURM_JOB_PARTITION: 'default', // "Name of the partition in which the job is running."
      SLURM_SUBMIT_DIR: submitDir, // "The directory from which sbatch was invoked."
      SLURM_SUBMIT_HOST: 'login01', // "The hostname of the computer from which sbatch was invoked."
      SLURM_CLUSTER_NAME: 'testlab', // "Name of the cluster on which the job is executing."
      SLURM_JOB_NODELIST: node, // "List of nodes allocated to the job."
      SLURM_NODELIST: node, // "Same as SLURM_JOB_NODELIST."
      SLURMD_NODENAME: node, // "Name of the node running the job script."
      SLURM_JOB_NUM_NODES: '1', // "Total number of nodes in the job's resource allocation."
      SLURM_NNODES: '1', // "Same as SLURM_JOB_NUM_NODES."
      SLURM_NTASKS: '2', // "Same as -n, --ntasks"
      SLURM_NPROCS: '2', // "Same as -n, --ntasks"
      SLURM_NTASKS_PER_NODE: '2', // "Number of tasks requested per node." (one node: all of them)
      SLURM_TASKS_PER_NODE: '2', // "Number of tasks to be initiated on each node."
      SLURM_CPUS_PER_TASK: '3', // "Number of cpus requested per task. Only set if the --cpus-per-task option is specified."
      SLURM_CPUS_ON_NODE: '6', // "Number of CPUs allocated to the batch step."
      SLURM_JOB_CPUS_PER_NODE: '6', // "Count of CPUs available to the job on the nodes in the allocation"
      SLURM_MEM_PER_CPU: '512', // "Same as --mem-per-cpu" (MB); SLURM_MEM_PER_NODE is not set with it
      SLURM_GTIDS: '0', // "Global task IDs running on this node." (the batch script is task 0)
      SLURM_LOCALID: '0', // "Node local task ID for the process within a job."
      SLURM_NODEID: '0', // "ID of the nodes allocated."
      SLURM_PROCID: '0', // "The MPI rank (or relative process ID) of the current process"
      SLURM_JOB_UID: String(userInfo().uid), // (slurmd) the uid the job runs as
      SLURM_JOB_GID: String(userInfo().gid), // (slurmd) its gid
    };
    const actual = await slurmEnvOf(job.id);
    rmSync(submitDir, { recursive: true, force: true });
    for (const [name, value] of Object.entries(expected)) expect(actual[name], name).toBe(value);
    // Newer Slurm: when the job started, in Unix seconds (no time limit here: no SLURM_JOB_END_TIME).
    expect(Math.abs(Number(actual.SLURM_JOB_START_TIME) - Date.now() / 1000)).toBeLessThan(60);
    expect(Object.keys(actual).sort()).toEqual([...Object.keys(expected), 'SLURM_JOB_START_TIME'].sort());
  });

  it('without -c: no SLURM_CPUS_PER_TASK, one task; --mem gives SLURM_MEM_PER_NODE; no account, none set', async () => {
    const job = await submit({ script: PRINT_SLURM_ENV, cpus: 2, memory_per_node: '1G' });
    expect(await ended(job.id)).toMatchObject({ state: 'COMPLETED' });
    const env = await slurmEnvOf(job.id);
    expect(env).not.toHaveProperty('SLURM_CPUS_PER_TASK');
    expect(env).not.toHaveProperty('SLURM_JOB_ACCOUNT');
    expect(env).not.toHaveProperty('SLURM_MEM_PER_CPU');
    // Submitted through the API, not by a command run somewhere: no submit directory or host to tell.
    expect(env).not.toHaveProperty('SLURM_SUBMIT_DIR');
    // A first run was never restarted: Slurm sets SLURM_RESTART_COUNT only after a requeue.
    expect(env).not.toHaveProperty('SLURM_RESTART_COUNT');
    expect(env).toMatchObject({
      SLURM_JOB_NAME: 'job',
      SLURM_NTASKS: '1',
      SLURM_TASKS_PER_NODE: '1',
      SLURM_CPUS_ON_NODE: '2',
      SLURM_JOB_CPUS_PER_NODE: '2',
      SLURM_MEM_PER_NODE: '1024',
    });
  });

  it('--exclusive: SLURM_CPUS_ON_NODE is all of the node', async () => {
    const job = await submit({ script: PRINT_SLURM_ENV, cpus: 1, exclusive: true });
    expect(await ended(job.id)).toMatchObject({ state: 'COMPLETED' });
    expect(await slurmEnvOf(job.id)).toMatchObject({ SLURM_CPUS_ON_NODE: '8', SLURM_JOB_CPUS_PER_NODE: '8' });
  });

  it('SLURM_RESTART_COUNT counts the requeues: 1 on the run after the node was lost', async () => {
    const flaky = new AgentProcess(`flaky01-${tag}`, server.url, { cpus: 2, env: { PARTITIONS: 'flaky' } });
    agents.push(flaky);
    await flaky.registered();
    const job = await submit({
      script: `${PRINT_SLURM_ENV}; [ -n "$SLURM_RESTART_COUNT" ] || sleep 300`,
      cpus: 1,
      partition: 'flaky',
      requeue: true,
    });
    await eventually(
      async () => ((await api('GET', `/api/v1/jobs/${job.id}`)).body as unknown as Job).state === 'RUNNING',
      { timeoutMs: 20_000, what: `job ${job.id} running` },
    );
    await flaky.kill9();
    const spare = new AgentProcess(`flaky02-${tag}`, server.url, { cpus: 2, env: { PARTITIONS: 'flaky' } });
    agents.push(spare);
    await spare.registered();
    expect(await ended(job.id, 45_000)).toMatchObject({ state: 'COMPLETED', node: `flaky02-${tag}` });
    expect(await slurmEnvOf(job.id)).toMatchObject({
      SLURM_RESTART_COUNT: '1',
      SLURM_JOB_PARTITION: 'flaky',
      SLURMD_NODENAME: `flaky02-${tag}`,
    });
  }, 60_000);
});
