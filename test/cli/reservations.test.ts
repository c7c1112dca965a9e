/**
 * scontrol create|update|show|delete reservation, sbatch --reservation and squeue --start against a real
 * control plane (HTTP, the API's auth and validation, Postgres).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runScontrol } from '../../cli/slurm/scontrol.ts';
import { runSqueue } from '../../cli/slurm/squeue.ts';
import { createToken, type Principal } from '../../functions/domain/auth.ts';
import { runSchedulingPass } from '../../functions/domain/scheduler.ts';
import { registerWorker } from '../../functions/domain/workers.ts';
import { availableBackends, type Backend, startTestServer } from '../support/cluster.ts';
import { captureIo } from './slurm-stub.ts';

const SYSTEM: Principal = { kind: 'system', tokenId: null, name: 'test', owner: null, scopes: ['admin'] };
const [postgres] = (await availableBackends()).filter((b) => b.name === 'postgres+redis');

describe.runIf(postgres)('reservations through the API and scontrol', () => {
  let backend: Backend;
  let server: Awaited<ReturnType<typeof startTestServer>>;
  let env: NodeJS.ProcessEnv;

  beforeAll(async () => {
    process.env.TZ = 'UTC';
    backend = await postgres!.create();
    server = await startTestServer(backend);
    env = { CONDUCTOR_URL: server.url, HOME: '/nonexistent' };
    for (const id of ['gpu01', 'gpu02', 'cpu01']) {
      await registerWorker(server.ctx, { worker_id: id, hostname: id, cpus: 16 });
    }
  });
  afterAll(async () => {
    await server?.close();
    await backend?.close();
  });

  const run = async (
    command: (args: string[], io: ReturnType<typeof captureIo>, env: NodeJS.ProcessEnv) => Promise<number>,
    args: string[],
    extra: NodeJS.ProcessEnv = {},
  ) => {
    const io = captureIo();
    const code = await command(args, io, { ...env, ...extra });
    return { code, stdout: io.stdout, stderr: io.stderr };
  };

  it('creates, shows, updates and deletes a reservation in Slurm’s words and layout', async () => {
    expect(await run(runScontrol, ['show', 'reservation'])).toMatchObject({
      code: 0,
      stdout: 'No reservations in the system\n',
    });
    expect(
      await run(runScontrol, [
        'create',
        'reservation',
        'ReservationName=maint',
        'StartTime=2030-01-02T06:00:00',
        'Duration=2:00:00',
        'Nodes=gpu[01-02]',
        'Users=root',
        'Flags=MAINT',
      ]),
    ).toEqual({ code: 0, stdout: 'Reservation created: maint\n', stderr: '' });
    const shown = await run(runScontrol, ['show', 'res', 'maint']);
    expect(shown.stdout).toBe(
      [
        'ReservationName=maint StartTime=2030-01-02T06:00:00 EndTime=2030-01-02T08:00:00 Duration=02:00:00',
        '   Nodes=gpu[01-02] NodeCnt=2 CoreCnt=32 Features=(null) PartitionName=(null) Flags=MAINT',
        '   TRES=cpu=32',
        '   Users=root Groups=(null) Accounts=(null) Licenses=(null) State=INACTIVE BurstBuffer=(null) Watts=n/a',
        '   MaxStartDelay=(null)',
        '',
        '',
      ].join('\n'),
    );
    expect(
      await run(runScontrol, ['update', 'ReservationName=maint', 'Duration=180', 'Accounts=ops']),
    ).toMatchObject({
      code: 0,
      stdout: 'Reservation updated.\n',
    });
    expect((await run(runScontrol, ['-o', 'show', 'reservation'])).stdout).toContain(
      'EndTime=2030-01-02T09:00:00 Duration=03:00:00 ',
    );
    // Bad input: the API's 400, in scontrol's words, and nothing changes.
    const bad = await run(runScontrol, [
      'create',
      'res',
      'ReservationName=x',
      'StartTime=soon',
      'Duration=10',
      'Nodes=cpu01',
      'Users=a',
    ]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain('Error creating the reservation: start_time "soon" is not a time');
    expect((await run(runScontrol, ['create', 'res', 'ReservationName=x', 'CoreCnt=4'])).stderr).toContain(
      'CoreCnt not supported on Conductor',
    );
    expect(await run(runScontrol, ['delete', 'ReservationName=maint'])).toEqual({
      code: 0,
      stdout: '',
      stderr: '',
    });
    expect((await run(runScontrol, ['show', 'reservation', 'maint'])).stderr).toBe(
      'Reservation maint not found\n',
    );
  });

  it('squeue --start shows the planned start of a job that holds a node', async () => {
    const submit = (body: Record<string, unknown>) =>
      fetch(`${server.url}/api/v1/jobs/submit`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ script: 'sleep 1000', ...body }),
      }).then((r) => r.json() as Promise<{ id: number }>);
    // Every node busy for an hour; a whole-node job then holds one until then.
    for (let i = 0; i < 3; i++) await submit({ cpus: 12, time_limit: 60 });
    const big = await submit({ cpus: 16, time_limit: 10, name: 'big' });
    await runSchedulingPass(server.ctx);
    const job = (await (await fetch(`${server.url}/api/v1/jobs/${big.id}`)).json()) as {
      state: string;
      planned_start_time: string | null;
    };
    expect(job.state).toBe('PENDING');
    expect(job.planned_start_time).not.toBeNull();
    const at = Date.parse(job.planned_start_time as string);
    expect(Math.abs(at - (Date.now() + 3600_000))).toBeLessThan(60_000);
    const out = await run(runSqueue, ['--start', '-h', '-o', '%i %S %r']);
    expect(out.stdout).toContain(`${big.id} ${new Date(at).toISOString().slice(0, 19)} Resources`);
  });
  it('only admins manage reservations; anyone who reads jobs sees them', async () => {
    // The first token closes the open cluster: this runs last.
    const admin = await createToken(server.ctx.db, { name: 'ops', scopes: ['admin'] }, SYSTEM);
    const reader = await createToken(
      server.ctx.db,
      { name: 'alice', scopes: ['jobs:read', 'jobs:write'] },
      SYSTEM,
    );
    const asReader = { CONDUCTOR_TOKEN: reader.token };
    const refused = await run(
      runScontrol,
      ['create', 'res', 'ReservationName=r1', 'StartTime=now', 'Duration=10', 'Nodes=cpu01', 'Users=alice'],
      asReader,
    );
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain('admin');
    expect(
      (
        await run(
          runScontrol,
          [
            'create',
            'res',
            'ReservationName=r1',
            'StartTime=now',
            'Duration=10',
            'Nodes=cpu01',
            'Users=alice',
          ],
          { CONDUCTOR_TOKEN: admin.token },
        )
      ).code,
    ).toBe(0);
    expect((await run(runScontrol, ['show', 'reservation', 'r1'], asReader)).stdout).toContain(
      'State=ACTIVE',
    );
    await run(runScontrol, ['delete', 'ReservationName=r1'], { CONDUCTOR_TOKEN: admin.token });
  });
});
