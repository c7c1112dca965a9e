import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  formatJob,
  runScontrol,
  SCONTROL_COMMANDS,
  SCONTROL_OPTIONS,
  type ScontrolJob,
} from '../../cli/slurm/scontrol.ts';
import {
  CLUSTER_ROUTES,
  captureIo,
  manPageOptions,
  optionWord,
  stubServer,
  tableOptions,
} from './slurm-stub.ts';

const JOB: ScontrolJob = {
  id: 42,
  name: 'train',
  state: 'RUNNING',
  cpus: 8,
  exit_code: null,
  node: 'gpu01',
  account: 'ml',
  partition: 'gpu',
  time_limit: 120,
  work_dir: '/home/alice/runs',
  priority: 100,
  requeue: true,
  attempt: 1,
  reason: 'None',
  owner: 'alice',
  memory_mb: 16384,
  memory_per_cpu: 2048,
  submit_dir: '/home/alice/runs',
  ntasks: 2,
  cpus_per_task: 4,
  gpus: 2,
  gpu_type: 'a100',
  gres: {},
  constraint: 'a100',
  exclusive: false,
  nodelist: null,
  exclude: [],
  submit_time: '2026-12-06T10:00:00Z',
  start_time: '2026-12-06T10:00:05Z',
  end_time: null,
  allocated_gpus: [0, 1],
  qos: null,
  stdout: 'logs/%x-%j.out',
  stderr: null,
};

let server: Awaited<ReturnType<typeof stubServer>>;
let env: NodeJS.ProcessEnv;

beforeAll(async () => {
  process.env.TZ = 'UTC';
  server = await stubServer({
    ...CLUSTER_ROUTES,
    'GET /api/v1/jobs/42': { body: JOB },
    'GET /api/v1/jobs/44': { body: { ...JOB, id: 44, owner: null } },
    'POST /api/v1/jobs/42/hold': { body: { ...JOB, state: 'PENDING', reason: 'JobHeldUser' } },
    'POST /api/v1/jobs/43/hold': {
      status: 409,
      body: { error: { code: 'job_not_pending', message: 'job 43 is not pending' } },
    },
    'POST /api/v1/jobs/42/release': { body: JOB },
    'POST /api/v1/jobs/42/requeue': { body: { ...JOB, state: 'PENDING' } },
    'PATCH /api/v1/jobs/42': { body: JOB },
    'POST /api/v1/workers/node02/drain': { body: { worker_id: 'node02', status: 'draining' } },
    'GET /api/v1/health': { body: { status: 'ok' } },
  });
  env = { CONDUCTOR_URL: server.url, HOME: '/nonexistent' };
});
afterAll(() => server.close());

async function scontrol(args: string[]) {
  const io = captureIo();
  const code = await runScontrol(args, io, env);
  return { code, stdout: io.stdout, stderr: io.stderr };
}

describe('scontrol show', () => {
  it('show job names an array task by its array job id and index, as Slurm does', () => {
    const [first] = formatJob({ ...JOB, id: 45, array_job_id: 42, array_task_id: 3 }, { now: 0 });
    expect(first).toBe('JobId=45 ArrayJobId=42 ArrayTaskId=3 JobName=train');
  });
  it("show job prints Slurm's key=value layout with the job's fields", async () => {
    const now = Date.parse('2026-12-06T10:01:10Z');
    expect(formatJob(JOB, { now })).toEqual([
      'JobId=42 JobName=train',
      'UserId=alice GroupId=alice MCS_label=N/A',
      'Priority=100 Nice=0 Account=ml QOS=normal',
      'JobState=RUNNING Reason=None Dependency=(null)',
      'Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=0:0',
      'RunTime=00:01:05 TimeLimit=02:00:00 TimeMin=N/A',
      'SubmitTime=2026-12-06T10:00:00 EligibleTime=2026-12-06T10:00:00',
      'AccrueTime=2026-12-06T10:00:00',
      'StartTime=2026-12-06T10:00:05 EndTime=2026-12-06T12:00:05 Deadline=N/A',
      'Partition=gpu AllocNode:Sid=submit:0',
      'ReqNodeList=(null) ExcNodeList=(null)',
      'NodeList=gpu01',
      'BatchHost=gpu01',
      'NumNodes=1 NumCPUs=8 NumTasks=2 CPUs/Task=4 ReqB:S:C:T=0:0:*:*',
      'TRES=cpu=8,mem=16G,node=1,billing=8,gres/gpu=2',
      'Socks/Node=* NtasksPerN:B:S:C=0:0:*:* CoreSpec=*',
      'MinCPUsNode=4 MinMemoryCPU=2G MinTmpDiskNode=0',
      'Features=a100 DelayBoot=00:00:00',
      'OverSubscribe=OK Contiguous=0 Licenses=(null) Network=(null)',
      'Command=(null)',
      'WorkDir=/home/alice/runs',
      'StdErr=/home/alice/runs/logs/train-42.out',
      'StdIn=/dev/null',
      'StdOut=/home/alice/runs/logs/train-42.out',
      'TresPerNode=gres:gpu:a100:2',
    ]);
  });

  it("shows a job without an owner as the caller's on an open cluster (no token), and as (null) with one", async () => {
    const io = captureIo();
    expect(await runScontrol(['show', 'job', '44'], io, { ...env, CONDUCTOR_OWNER: 'bob' })).toBe(0);
    expect(io.stdout).toMatch(/^ {3}UserId=bob GroupId=bob /m);
    const withToken = captureIo();
    await runScontrol(['show', 'job', '44'], withToken, {
      ...env,
      CONDUCTOR_OWNER: 'bob',
      CONDUCTOR_TOKEN: 'cnd_x',
    });
    expect(withToken.stdout).toMatch(/^ {3}UserId=\(null\) /m);
  });

  it("show job prints the job's dependency as submitted", () => {
    const lines = formatJob({
      ...JOB,
      state: 'PENDING',
      reason: 'Dependency',
      dependency: 'afterok:41?singleton',
    });
    expect(lines).toContain('JobState=PENDING Reason=Dependency Dependency=afterok:41?singleton');
  });

  it('show jobid -dd: indented lines, the allocation line, a blank line after; JobState= as snakemake reads it', async () => {
    const { code, stdout } = await scontrol(['show', 'jobid', '-dd', '42']);
    expect(code).toBe(0);
    expect(stdout).toMatch(/^JobId=42 JobName=train\n {3}UserId=alice /);
    expect(/JobState=(\w+)/.exec(stdout)?.[1]).toBe('RUNNING');
    expect(stdout).toContain('\n     Nodes=gpu01 Mem=16384 GRES=gpu:a100:2(IDX:0,1)\n');
    expect(stdout.endsWith('gres:gpu:a100:2\n\n')).toBe(true);
    const one = await scontrol(['-o', 'show', 'job=42']);
    expect(one.stdout.split('\n')).toHaveLength(2);
    expect(one.stdout).toMatch(
      /^JobId=42 JobName=train UserId=alice .* StdOut=\S+ TresPerNode=gres:gpu:a100:2\n$/,
    );
  });

  it('an unknown job: slurm_load_jobs error, exit 1 (-Q: quietly)', async () => {
    expect(await scontrol(['show', 'job', '7'])).toEqual({
      code: 1,
      stdout: '',
      stderr: 'slurm_load_jobs error: Invalid job id specified\n',
    });
    expect(await scontrol(['-Q', 'show', 'job', '7'])).toEqual({ code: 1, stdout: '', stderr: '' });
  });

  it('show node and show partition', async () => {
    const node = await scontrol(['show', 'node', 'node02']);
    expect(node.stdout).toContain('NodeName=node02 ');
    expect(node.stdout).toContain('   CPUAlloc=2 CPUEfctv=8 CPUTot=8 CPULoad=N/A\n');
    expect(node.stdout).toContain('   State=MIXED ');
    expect(node.stdout).toContain('   Partitions=batch\n');
    const down = await scontrol(['show', 'node', 'gpu02']);
    expect(down.stdout).toContain('   State=DOWN+NOT_RESPONDING ');
    expect(down.stdout).toContain('   Reason=Not responding [root@2026-12-06T09:00:00]\n');
    expect((await scontrol(['show', 'node', 'node03'])).stdout).toContain('   State=IDLE+DRAIN ');
    expect(await scontrol(['show', 'node', 'nope'])).toMatchObject({
      code: 1,
      stderr: 'Node nope not found\n',
    });
    const partition = await scontrol(['show', 'partition', 'gpu']);
    expect(partition.stdout).toContain('PartitionName=gpu\n');
    expect(partition.stdout).toContain('   AllocNodes=ALL Default=NO QoS=N/A\n');
    expect(partition.stdout).toContain(' MaxTime=02:00:00 ');
    expect(partition.stdout).toContain('   Nodes=gpu[01-02]\n');
    expect(partition.stdout).toContain('   State=UP TotalCPUs=32 TotalNodes=2 ');
    expect((await scontrol(['show', 'partitions'])).stdout.match(/^PartitionName=/gm)).toHaveLength(2);
  });
});

describe('scontrol job and node commands', () => {
  it('hold, uhold, release, requeue, requeuehold call the job routes, each job in turn', async () => {
    const before = server.requests.length;
    expect((await scontrol(['hold', '42'])).code).toBe(0);
    expect((await scontrol(['uhold', '42'])).code).toBe(0);
    expect((await scontrol(['release', '42'])).code).toBe(0);
    expect((await scontrol(['requeue', '42'])).code).toBe(0);
    expect((await scontrol(['requeuehold', '42'])).code).toBe(0);
    expect(server.requests.slice(before).map((r) => [r.method, r.url, r.body])).toEqual([
      ['POST', '/api/v1/jobs/42/hold', undefined],
      ['POST', '/api/v1/jobs/42/hold', undefined],
      ['POST', '/api/v1/jobs/42/release', undefined],
      ['POST', '/api/v1/jobs/42/requeue', { hold: false }],
      ['POST', '/api/v1/jobs/42/requeue', { hold: true }],
    ]);
    expect(await scontrol(['hold', '42,43'])).toEqual({
      code: 1,
      stdout: '',
      stderr: 'Job 43: job 43 is not pending\n',
    });
  });

  it('update JobId= patches the job; other fields are refused by name', async () => {
    const before = server.requests.length;
    const ok = await scontrol([
      'update',
      'JobId=42',
      'TimeLimit=30',
      'Partition=gpu',
      'JobName=x',
      'Comment=hi',
      'QOS=high',
    ]);
    expect(ok.code).toBe(0);
    expect(server.requests.slice(before).map((r) => [r.method, r.url, r.body])).toEqual([
      [
        'PATCH',
        '/api/v1/jobs/42',
        { time_limit: '30', partition: 'gpu', name: 'x', comment: 'hi', qos: 'high' },
      ],
    ]);
    expect(await scontrol(['update', 'jobid=42', 'NumCPUs=4', 'Dependency=afterok:1'])).toEqual({
      code: 1,
      stdout: '',
      stderr:
        'scontrol: error: Update of NumCPUs, Dependency is not supported on Conductor (TimeLimit, Partition, Name, Comment, QOS)\n',
    });
  });

  it('update NodeName= State=DRAIN drains the node', async () => {
    expect((await scontrol(['update', 'NodeName=node02', 'State=DRAIN', 'Reason=disk'])).code).toBe(0);
    expect(server.requests.at(-1)).toMatchObject({ method: 'POST', url: '/api/v1/workers/node02/drain' });
  });

  it('refused commands say so, with why; version, ping, abbreviations', async () => {
    expect(await scontrol(['shutdown'])).toEqual({
      code: 1,
      stdout: '',
      stderr: `scontrol: error: shutdown is not supported: ${SCONTROL_COMMANDS.find((c) => c.name === 'shutdown')?.note}\n`,
    });
    expect(await scontrol(['show', 'config'])).toMatchObject({ code: 1 });
    expect((await scontrol(['version'])).stdout).toBe('slurm 22.05.0\n');
    expect((await scontrol(['ping'])).stdout).toBe(`Slurmctld(primary) at ${server.url} is UP\n`);
    expect((await scontrol(['sho', 'job', '42'])).stdout).toMatch(/^JobId=42 /);
    expect((await scontrol([])).stderr).toMatch(/^scontrol: error: interactive mode is not supported/);
  });
});

describe('scontrol options and commands', () => {
  it("cover exactly the options of Slurm 22.05's scontrol(1)", () => {
    expect(tableOptions(SCONTROL_OPTIONS)).toEqual(manPageOptions('scontrol'));
  });

  it("list every command of scontrol(1)'s COMMANDS", () => {
    expect(SCONTROL_COMMANDS.map((c) => c.name)).toEqual(
      'abort cancel_reboot cluster completing create delete errnumstr fsdampeningfactor help hold listpids notify pidinfo ping reboot reconfigure release requeue requeuehold resume schedloglevel setdebug setdebugflags show shutdown suspend takeover top token uhold update version wait_job write'.split(
        ' ',
      ),
    );
  });

  it('warn for the warned options and refuse the refused ones, with the reason', async () => {
    for (const spec of SCONTROL_OPTIONS.filter((s) => s.fate !== 'honoured')) {
      const { code, stderr } = await scontrol([optionWord(spec), 'version']);
      if (spec.fate === 'warned') {
        expect(code).toBe(0);
        expect(stderr).toBe(`scontrol: warning: --${spec.long} is ignored: ${spec.note}\n`);
      } else {
        expect(code).toBe(1);
        expect(stderr).toBe(`scontrol: error: --${spec.long} is not supported: ${spec.note}\n`);
      }
    }
  });
});
