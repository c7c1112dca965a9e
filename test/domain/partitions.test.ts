import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Principal } from '../../functions/domain/auth.ts';
import { ConductorError } from '../../functions/domain/errors.ts';
import { getJob, holdJob, releaseJob, submitJob } from '../../functions/domain/jobs.ts';
import { deletePartition, listPartitions, putPartition } from '../../functions/domain/partitions.ts';
import { runSchedulingPass } from '../../functions/domain/scheduler.ts';
import { registerWorker } from '../../functions/domain/workers.ts';
import { availableBackends, type Backend, testContext } from '../support/cluster.ts';
import { checkInvariants } from '../support/invariants.ts';

const backends = await availableBackends();

const refusal = async (work: Promise<unknown>) => {
  const error = await work.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(ConductorError);
  return error as ConductorError;
};

const user: Principal = {
  kind: 'token',
  tokenId: 7,
  name: 'alice',
  owner: 'alice',
  scopes: ['jobs:write', 'jobs:read'],
};
const admin: Principal = { kind: 'token', tokenId: 8, name: 'ops', owner: 'ops', scopes: ['admin'] };

describe.each(backends)('partitions and their limits on $name', (factory) => {
  let backend: Backend;
  beforeAll(async () => {
    backend = await factory.create();
  });
  afterAll(async () => backend?.close());

  it('agents create the partitions they name; nodes that name none serve the default one', async () => {
    const { ctx } = testContext(backend);
    await registerWorker(ctx, { worker_id: 'p-gpu', hostname: 'g', cpus: 8, partitions: ['gpu', 'batch'] });
    await registerWorker(ctx, { worker_id: 'p-cpu', hostname: 'c', cpus: 8 });
    const partitions = await listPartitions(ctx);
    expect(partitions.map((p) => [p.name, p.default, p.created_by, p.state])).toEqual(
      expect.arrayContaining([
        ['default', true, 'admin', 'UP'],
        ['gpu', false, 'agent', 'UP'],
        ['batch', false, 'agent', 'UP'],
      ]),
    );
    expect(partitions.find((p) => p.name === 'gpu')?.live_nodes).toEqual(['p-gpu']);
    expect(partitions.find((p) => p.name === 'default')?.live_nodes).toContain('p-cpu');
    expect(partitions.find((p) => p.name === 'default')?.live_nodes).not.toContain('p-gpu');
  });

  it('an admin node list puts nodes in a partition; the default can move; the default cannot be deleted', async () => {
    const { ctx } = testContext(backend);
    await registerWorker(ctx, { worker_id: 'rack-01', hostname: 'r', cpus: 4 });
    const rack = await putPartition(ctx, 'rack', { nodes: 'rack-[01-09]', policy: 'spread' }, admin);
    expect(rack).toMatchObject({ live_nodes: ['rack-01'], policy: 'spread', created_by: 'admin' });
    expect((await refusal(deletePartition(ctx, 'default', admin))).code).toBe('partition_is_default');
    await putPartition(ctx, 'rack', { default: true }, admin);
    expect((await listPartitions(ctx)).filter((p) => p.default).map((p) => p.name)).toEqual(['rack']);
    await putPartition(ctx, 'default', { default: true }, admin);
    expect((await refusal(putPartition(ctx, 'bad', { nodes: 'n[5-3]' }, admin))).message).toMatch(
      /nodes: hostlist: reversed range/,
    );
    await deletePartition(ctx, 'rack', admin);
    expect((await listPartitions(ctx)).some((p) => p.name === 'rack')).toBe(false);
  });

  it('applies DefaultTime and DefMemPerCPU; refuses MaxTime, MaxCPUsPerNode, MaxMemPerCPU, AllowAccounts, DRAIN', async () => {
    const { ctx } = testContext(backend);
    await registerWorker(ctx, {
      worker_id: 'lim-1',
      hostname: 'l',
      cpus: 16,
      memory_mb: 64_000,
      partitions: ['lim'],
    });
    await putPartition(
      ctx,
      'lim',
      {
        max_time: 60,
        default_time: '0:30:00',
        max_cpus_per_node: 8,
        def_mem_per_cpu: '2G',
        max_mem_per_cpu: '4G',
      },
      admin,
    );
    const job = await submitJob(ctx, { script: 'true', cpus: 2, partition: 'lim' });
    expect(job).toMatchObject({ time_limit: 30, memory_mb: 4096, partition: 'lim' });
    const over = (body: Record<string, unknown>) =>
      refusal(submitJob(ctx, { script: 'true', cpus: 1, partition: 'lim', ...body }));
    expect((await over({ time_limit: 61 })).message).toMatch(/over partition lim's MaxTime of 60 min/);
    expect((await over({ cpus: 9 })).message).toMatch(/MaxCPUsPerNode of 8/);
    expect((await over({ memory_per_cpu: '5G' })).message).toMatch(/MaxMemPerCPU of 4096 MB/);
    await putPartition(ctx, 'lim', { allow_accounts: ['physics'] }, admin);
    expect((await over({})).message).toMatch(/allows accounts physics only/);
    expect(
      (await submitJob(ctx, { script: 'true', cpus: 1, partition: 'lim', account: 'physics' })).state,
    ).toBe('PENDING');
    await putPartition(ctx, 'lim', { state: 'DRAIN', allow_accounts: null }, admin);
    expect((await over({})).code).toBe('partition_refuses_job');
    // A second partition that can take it: the job is admitted to the list, runs in the one that can.
    const either = await submitJob(ctx, { script: 'true', cpus: 1, partition: 'lim,default' });
    expect(either.partition).toBe('lim,default');
    await putPartition(ctx, 'lim', { state: 'UP' }, admin);
  });

  it('a job waits with PartitionTimeLimit when MaxTime drops below its limit after submit', async () => {
    const { ctx, settle } = testContext(backend);
    await registerWorker(ctx, { worker_id: 'tl-1', hostname: 't', cpus: 2, partitions: ['short'] });
    // DOWN while the job is submitted, so that no pass starts it before MaxTime drops.
    await putPartition(ctx, 'short', { state: 'DOWN' }, admin);
    const job = await submitJob(ctx, { script: 'true', cpus: 1, partition: 'short', time_limit: 120 });
    await putPartition(ctx, 'short', { max_time: 60, state: 'UP' }, admin);
    await settle();
    await runSchedulingPass(ctx);
    expect(await getJob(ctx.db, job.id)).toMatchObject({
      state: 'PENDING',
      reason: 'PartitionTimeLimit',
      reason_detail: "time limit 120 min is over partition short's MaxTime of 60 min",
    });
    await putPartition(ctx, 'short', { max_time: null }, admin);
    await settle();
    await runSchedulingPass(ctx);
    expect((await getJob(ctx.db, job.id)).state).toBe('RUNNING');
    await checkInvariants(backend.db.db, backend.registry);
  });

  it("holds: the owner's is JobHeldUser, an admin's JobHeldAdmin which the owner cannot release", async () => {
    const { ctx } = testContext(backend);
    // A partition no node serves yet: the job stays PENDING.
    await putPartition(ctx, 'empty', {}, admin);
    const job = await submitJob(ctx, { script: 'true', cpus: 1, partition: 'empty' }, { caller: user });
    expect(await holdJob(ctx, job.id, user)).toMatchObject({ held: 'user', reason: 'JobHeldUser' });
    expect(await holdJob(ctx, job.id, admin)).toMatchObject({ held: 'admin', reason: 'JobHeldAdmin' });
    expect((await refusal(releaseJob(ctx, job.id, user))).code).toBe('held_by_admin');
    expect(await releaseJob(ctx, job.id, admin)).toMatchObject({ held: null, reason: 'None' });
    expect((await refusal(releaseJob(ctx, job.id, user))).code).toBe('job_not_held');
  });

  it('deleting a partition that jobs name is refused', async () => {
    const { ctx } = testContext(backend);
    await putPartition(ctx, 'busy', {}, admin);
    // No node serves it: the job waits there. (A job placed elsewhere names only the partition it runs in.)
    await submitJob(ctx, { script: 'true', cpus: 1, partition: 'busy' });
    expect((await refusal(deletePartition(ctx, 'busy', admin))).code).toBe('partition_in_use');
  });
});
