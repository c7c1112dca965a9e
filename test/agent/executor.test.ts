import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';
import {
  buildJobEnv,
  exitCodeOf,
  type JobProcess,
  jobDirName,
  parseJobDirName,
  startJob,
} from '../../agent/src/executor.ts';
import type { Assignment } from '../../agent/src/protocol.ts';

const root = mkdtempSync(join(tmpdir(), 'conductor-executor-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

let nextId = 1;
function assignment(script: string, extra: Partial<Assignment> = {}): Assignment {
  return {
    job_id: nextId++,
    attempt: 1,
    name: 'test-job',
    script,
    cpus: 2,
    work_dir: null,
    environment: {},
    time_limit_s: null,
    ...extra,
  };
}

function run(
  script: string,
  extra: Partial<Assignment> = {},
  agentEnv: NodeJS.ProcessEnv = process.env,
): JobProcess {
  return startJob(assignment(script, extra), {
    jobsDir: join(root, 'jobs'),
    agentEnv,
    cancelGraceMs: 1000,
    timeoutGraceMs: 500,
  });
}

/**
 * process.kill(pid, 0), except that a zombie counts as dead: a killed orphan stays a zombie until its new
 * parent (PID 1) reaps it, which some container inits do only every second or so.
 */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return true; // no /proc: trust kill(pid, 0)
  }
}

async function waitFor(cond: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (cond()) return true;
    await new Promise((r) => setTimeout(r, 20));
  }
  return cond();
}

describe('exit codes', () => {
  it('exit 0 is 0:0', async () => {
    expect(await run('exit 0').result).toMatchObject({ exit_code: '0:0', outcome: 'exited' });
  });

  it('exit 3 is 3:0', async () => {
    expect(await run('echo hi; exit 3').result).toMatchObject({ exit_code: '3:0', outcome: 'exited' });
  });

  it('kill -9 $$ is 0:9', async () => {
    expect(await run('kill -9 $$').result).toMatchObject({ exit_code: '0:9', outcome: 'exited' });
  });

  it('formats code:signal', () => {
    expect(exitCodeOf(0, null)).toBe('0:0');
    expect(exitCodeOf(127, null)).toBe('127:0');
    expect(exitCodeOf(null, 'SIGTERM')).toBe('0:15');
    expect(exitCodeOf(null, 'SIGKILL')).toBe('0:9');
  });
});

describe('job folder', () => {
  it('names folders <job>.<attempt> and parses them back', () => {
    expect(jobDirName({ job_id: 12, attempt: 3 })).toBe('12.3');
    expect(parseJobDirName('12.3')).toEqual({ job_id: 12, attempt: 3 });
    expect(parseJobDirName('agent.lock')).toBeUndefined();
  });

  it('writes the script and captures stdout and stderr in files', async () => {
    const job = run('echo out-line; echo err-line >&2; printf "héllo €\\n"');
    expect((await job.result).exit_code).toBe('0:0');
    expect(readFileSync(join(job.dir, 'script.sh'), 'utf8')).toContain('echo out-line');
    expect(readFileSync(job.stdoutPath, 'utf8')).toBe('out-line\nhéllo €\n');
    expect(readFileSync(job.stderrPath, 'utf8')).toBe('err-line\n');
  });

  it('runs in the job folder when no work_dir is set', async () => {
    const job = run('pwd');
    await job.result;
    expect(readFileSync(job.stdoutPath, 'utf8').trim()).toBe(job.dir);
  });
});

describe('environment', () => {
  it('has the job variables and the declared ones, and not the agent token', async () => {
    const agentEnv = {
      ...process.env,
      CONDUCTOR_TOKEN: 'secret-token',
      CONDUCTOR_URL: 'http://control-plane',
      SOME_AGENT_VAR: 'agent-only',
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      HOME: '/home/somebody',
    };
    const job = run('env', { cpus: 4, name: 'env-job', environment: { FOO: 'bar', MULTI: 'a b' } }, agentEnv);
    expect((await job.result).exit_code).toBe('0:0');
    const lines = readFileSync(job.stdoutPath, 'utf8').split('\n');
    const env = Object.fromEntries(
      lines.filter(Boolean).map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
    );
    expect(env.CONDUCTOR_JOB_ID).toBe(String(job.ref.job_id));
    expect(env.CONDUCTOR_JOB_NAME).toBe('env-job');
    expect(env.CONDUCTOR_CPUS).toBe('4');
    expect(env.CONDUCTOR_ATTEMPT).toBe('1');
    expect(env.FOO).toBe('bar');
    expect(env.MULTI).toBe('a b');
    expect(env.HOME).toBe('/home/somebody');
    expect(env.PATH).toBe(agentEnv.PATH);
    expect(env.CONDUCTOR_TOKEN).toBeUndefined();
    expect(env.CONDUCTOR_URL).toBeUndefined();
    expect(env.SOME_AGENT_VAR).toBeUndefined();
  });

  it('does not leak CONDUCTOR_TOKEN from the real process environment', async () => {
    const previous = process.env.CONDUCTOR_TOKEN;
    process.env.CONDUCTOR_TOKEN = 'process-secret';
    try {
      // biome-ignore lint/suspicious/noTemplateCurlyInString: a bash parameter expansion, not a template
      const job = run('echo "token=${CONDUCTOR_TOKEN:-unset}"');
      await job.result;
      expect(readFileSync(job.stdoutPath, 'utf8')).toBe('token=unset\n');
    } finally {
      if (previous === undefined) delete process.env.CONDUCTOR_TOKEN;
      else process.env.CONDUCTOR_TOKEN = previous;
    }
  });

  it('builds a clean environment', () => {
    const env = buildJobEnv(assignment('true', { environment: { PATH: '/custom' } }), {
      PATH: '/usr/bin',
      USER: 'u',
      CONDUCTOR_TOKEN: 't',
      AWS_SECRET_ACCESS_KEY: 'x',
    });
    expect(env.PATH).toBe('/custom'); // the job's own declaration wins
    expect(env.USER).toBe('u');
    expect(env.CONDUCTOR_TOKEN).toBeUndefined();
    expect(env.AWS_SECRET_ACCESS_KEY).toBeUndefined();
  });
});

describe("the job's Slurm environment", () => {
  const slurmOf = (env: Record<string, string>) =>
    Object.fromEntries(Object.entries(env).filter(([name]) => name.startsWith('SLURM')));

  it('sets what sbatch(1) sets for a one-node job of 2 tasks of 3 CPUs with memory per CPU', () => {
    const job = assignment('true', {
      job_id: 41,
      name: 'sim',
      cpus: 6,
      owner: 'alice',
      account: 'physics',
      partition: 'batch',
      submit_dir: '/home/alice/runs',
      submit_host: 'login01',
      ntasks: 2,
      cpus_per_task: 3,
      memory_mb: 6144,
      memory_per_cpu: 1024,
      requeues: 2,
      cluster_name: 'lab',
      qos: 'high',
      export_env: 'ALL,EPOCHS=3',
      start_time: '2026-01-02T03:04:05.678Z',
      time_limit_s: 3600,
    });
    expect(slurmOf(buildJobEnv(job, { USER: 'agent' }, undefined, undefined, { name: 'node07' }))).toEqual({
      SLURM_JOB_ID: '41',
      SLURM_JOBID: '41',
      SLURM_JOB_NAME: 'sim',
      SLURM_JOB_USER: 'alice',
      SLURM_JOB_ACCOUNT: 'physics',
      SLURM_JOB_PARTITION: 'batch',
      SLURM_SUBMIT_DIR: '/home/alice/runs',
      SLURM_SUBMIT_HOST: 'login01',
      SLURM_CLUSTER_NAME: 'lab',
      SLURM_JOB_NODELIST: 'node07',
      SLURM_NODELIST: 'node07',
      SLURMD_NODENAME: 'node07',
      SLURM_JOB_NUM_NODES: '1',
      SLURM_NNODES: '1',
      SLURM_NTASKS: '2',
      SLURM_NPROCS: '2',
      SLURM_NTASKS_PER_NODE: '2',
      SLURM_TASKS_PER_NODE: '2',
      SLURM_CPUS_PER_TASK: '3',
      SLURM_CPUS_ON_NODE: '6',
      SLURM_JOB_CPUS_PER_NODE: '6',
      SLURM_MEM_PER_CPU: '1024',
      SLURM_RESTART_COUNT: '2',
      SLURM_JOB_QOS: 'high',
      SLURM_EXPORT_ENV: 'ALL,EPOCHS=3',
      SLURM_JOB_START_TIME: '1767323045',
      SLURM_JOB_END_TIME: '1767326645',
      SLURM_JOB_UID: String(process.getuid?.()),
      SLURM_JOB_GID: String(process.getgid?.()),
      SLURM_GTIDS: '0',
      SLURM_LOCALID: '0',
      SLURM_NODEID: '0',
      SLURM_PROCID: '0',
    });
  });

  it('leaves out what was not asked: no -c, no account, memory per node, one task', () => {
    const env = buildJobEnv(assignment('true', { cpus: 4, memory_mb: 2048 }), { USER: 'agent' });
    expect(env.SLURM_CPUS_PER_TASK).toBeUndefined();
    expect(env.SLURM_JOB_ACCOUNT).toBeUndefined();
    expect(env.SLURM_MEM_PER_CPU).toBeUndefined();
    expect(env.SLURM_MEM_PER_NODE).toBe('2048');
    expect(env.SLURM_NTASKS).toBe('1');
    expect(env.SLURM_CPUS_ON_NODE).toBe('4');
    // Slurm sets it only after a restart: "If the job has been restarted ... or explicitly requeued".
    expect(env.SLURM_RESTART_COUNT).toBeUndefined();
    // Without an owner (the open local cluster): the user the job runs as.
    expect(env.SLURM_JOB_USER).toBe('agent');
    const runAs = { name: 'bob', uid: 1001, gid: 1001, home: '/home/bob' };
    expect(buildJobEnv(assignment('true'), { USER: 'root' }, runAs).SLURM_JOB_USER).toBe('bob');
  });

  it("the agent's values win over submitted SLURM_ variables, and stale ones it owns are dropped", () => {
    const env = buildJobEnv(
      assignment('true', {
        job_id: 9,
        environment: {
          SLURM_JOB_ID: '1234',
          SLURM_CPUS_PER_TASK: '16',
          SLURM_MEM_PER_NODE: '999',
          SLURM_CONF: '/etc/slurm/slurm.conf',
        },
      }),
      {},
    );
    expect(env.SLURM_JOB_ID).toBe('9');
    expect(env.SLURM_CPUS_PER_TASK).toBeUndefined();
    expect(env.SLURM_MEM_PER_NODE).toBeUndefined();
    // A SLURM_ name the agent does not set is the job's own.
    expect(env.SLURM_CONF).toBe('/etc/slurm/slurm.conf');
    expect(env.CONDUCTOR_JOB_ID).toBe('9');
  });
});

describe('work_dir', () => {
  it('runs in the work_dir', async () => {
    const dir = mkdtempSync(join(root, 'wd-'));
    const job = run('pwd; touch made-here', { work_dir: dir });
    expect((await job.result).exit_code).toBe('0:0');
    expect(readFileSync(job.stdoutPath, 'utf8').trim()).toBe(dir);
    expect(readFileSync(join(dir, 'made-here'), 'utf8')).toBe('');
  });

  it('a missing work_dir runs the job in /tmp, saying so on its stderr as slurmstepd does', async () => {
    const missing = join(root, 'does-not-exist');
    const job = run('pwd', { work_dir: missing });
    expect(await job.result).toMatchObject({ exit_code: '0:0', outcome: 'exited' });
    expect(readFileSync(job.stdoutPath, 'utf8')).toBe('/tmp\n');
    expect(readFileSync(job.stderrPath, 'utf8')).toBe(
      `slurmstepd: error: couldn't chdir to \`${missing}': No such file or directory: going to /tmp instead\n`,
    );
  });
});

describe('cancel and time limit', () => {
  it('cancel kills the whole process group, background children included', async () => {
    const job = run('sleep 300 & echo $! >> pids; sleep 300 & echo $! >> pids; echo ready; wait');
    const pidsFile = join(job.dir, 'pids');
    expect(
      await waitFor(() => {
        try {
          return readFileSync(pidsFile, 'utf8').trim().split('\n').length === 2;
        } catch {
          return false;
        }
      }, 5000),
    ).toBe(true);
    const pids = readFileSync(pidsFile, 'utf8').trim().split('\n').map(Number);
    expect(pids.every(alive)).toBe(true);
    job.cancel('cancelled by test');
    const result = await job.result;
    expect(result.outcome).toBe('cancelled');
    expect(result.message).toBe('cancelled by test');
    expect(result.exit_code).toBe('0:15');
    // Not a timing test (the bench measures): generous for a loaded machine, far below the 300 s sleeps.
    expect(await waitFor(() => pids.every((p) => !alive(p)), 20_000)).toBe(true);
  });

  it('SIGKILLs a group that ignores SIGTERM after the grace', async () => {
    const job = run('trap "" TERM; sleep 300 & echo $! > pids; while true; do sleep 0.1; done');
    const pidsFile = join(job.dir, 'pids');
    const wrote = () => {
      try {
        return readFileSync(pidsFile, 'utf8').trim() !== '';
      } catch {
        return false;
      }
    };
    expect(await waitFor(wrote, 5000)).toBe(true);
    const child = Number(readFileSync(pidsFile, 'utf8').trim());
    const t0 = Date.now();
    job.cancel();
    const result = await job.result;
    expect(result.outcome).toBe('cancelled');
    expect(result.exit_code).toBe('0:9');
    expect(Date.now() - t0).toBeGreaterThanOrEqual(900);
    expect(await waitFor(() => !alive(child), 1000)).toBe(true);
  });

  it('a job over its time limit ends with outcome timeout', async () => {
    const t0 = Date.now();
    const job = run('sleep 30', { time_limit_s: 1 });
    const result = await job.result;
    expect(result.outcome).toBe('timeout');
    expect(result.exit_code).toBe('0:15');
    expect(result.message).toMatch(/time limit/);
    expect(Date.now() - t0).toBeLessThan(25_000); // ended by the limit, not by the 30 s sleep
  });

  it('kills background processes left behind by a job that exited', async () => {
    const job = run('sleep 300 & echo $! > pids; exit 0');
    expect(await job.result).toMatchObject({ exit_code: '0:0', outcome: 'exited' });
    const child = Number(readFileSync(join(job.dir, 'pids'), 'utf8').trim());
    expect(await waitFor(() => !alive(child), 1000)).toBe(true);
  });
});

describe('time limits longer than a timer can wait (2^31-1 ms, 24.8 days)', () => {
  it('a 30-day limit does not fire early and fires at 30 days', async () => {
    const day = 24 * 3600 * 1000;
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    try {
      const job = run('sleep 300', { time_limit_s: 30 * 24 * 3600 });
      expect(job.pid).toBeDefined();
      vi.advanceTimersByTime(1);
      expect(job.terminating).toBeUndefined();
      vi.advanceTimersByTime(25 * day);
      expect(job.terminating).toBeUndefined();
      vi.advanceTimersByTime(5 * day - 2);
      expect(job.terminating).toBeUndefined();
      vi.advanceTimersByTime(1);
      expect(job.terminating).toEqual({ outcome: 'timeout', message: 'time limit of 2592000 s exceeded' });
      vi.useRealTimers();
      expect(await job.result).toMatchObject({ outcome: 'timeout', exit_code: '0:15' });
    } finally {
      vi.useRealTimers();
    }
  });
});
