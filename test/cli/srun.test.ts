/**
 * srun inside a job runs real processes as a job step (tasks in parallel, their ids, labels, exit codes, the
 * allocation's limit); outside a job it submits the command to a stub control plane and streams the job's
 * output back. And its option table against the man page.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import type { ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runSrun, SRUN_OPTIONS, stepScript } from '../../cli/slurm/srun.ts';
import { captureIo, manPageOptions, optionWord, stubServer, tableOptions } from './slurm-stub.ts';

const BIN = fileURLToPath(new URL('../../cli/bin/conductor.js', import.meta.url));

let jobs = 0;
/** The environment of a job with `cpus` CPUs on node `n1` (a fresh job id: its steps count from 0). */
function jobEnv(cpus: number, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  jobs++;
  return {
    PATH: process.env.PATH,
    SLURM_JOB_ID: `${process.pid}${Date.now()}${jobs}`,
    SLURM_CPUS_ON_NODE: String(cpus),
    SLURMD_NODENAME: 'n1',
    ...extra,
  };
}

async function srun(args: string[], env: NodeJS.ProcessEnv) {
  const io = captureIo();
  const code = await runSrun(args, io, env);
  return { code, stdout: io.stdout, stderr: io.stderr };
}

const sorted = (text: string) => text.split('\n').filter(Boolean).sort();

describe('srun inside a job: a job step on its allocation', () => {
  it('-n3 -l runs three tasks in parallel, each line labelled with its task id', async () => {
    const { code, stdout, stderr } = await srun(['-n3', '-l', 'sh', '-c', 'echo $SLURM_PROCID'], jobEnv(4));
    expect(stderr).toBe('');
    expect(code).toBe(0);
    expect(sorted(stdout)).toEqual(['0: 0', '1: 1', '2: 2']);
  });

  it('gives each task its ids and the step its own number', async () => {
    const env = jobEnv(4);
    const script =
      'echo $SLURM_PROCID $SLURM_LOCALID $SLURM_NODEID $SLURM_STEP_ID $SLURM_STEPID $SLURM_STEP_NUM_TASKS $SLURM_NTASKS $SLURM_CPUS_PER_TASK $SLURM_STEP_NODELIST';
    const first = await srun(['-n2', '-c2', 'sh', '-c', script], env);
    expect(sorted(first.stdout)).toEqual(['0 0 0 0 0 2 2 2 n1', '1 1 0 0 0 2 2 2 n1']);
    const second = await srun(['sh', '-c', 'echo $SLURM_STEP_ID $SLURM_STEP_NUM_TASKS'], env);
    expect(second.stdout).toBe('1 1\n');
  });

  it("defaults to the job's task count (SLURM_NTASKS), as srun in a batch script does", async () => {
    const { stdout } = await srun(['sh', '-c', 'echo $SLURM_PROCID'], jobEnv(4, { SLURM_NTASKS: '2' }));
    expect(sorted(stdout)).toEqual(['0', '1']);
  });

  it("snakemake's step: srun -n1 --cpu-bind=q <cmd> runs it quietly", async () => {
    const { code, stdout, stderr } = await srun(['-n1', '--cpu-bind=q', 'sh', '-c', 'echo ran'], jobEnv(1));
    expect({ code, stdout, stderr }).toEqual({ code: 0, stdout: 'ran\n', stderr: '' });
    const bound = await srun(['--cpu-bind=cores', 'true'], jobEnv(1));
    expect(bound.stderr).toBe(
      'srun: warning: --cpu-bind=cores is not applied: Conductor does not pin tasks to CPUs, memory or devices\n',
    );
  });

  it('exits with the highest task exit code, naming each failed task', async () => {
    const { code, stderr } = await srun(['-n3', 'sh', '-c', 'exit $((SLURM_PROCID * 2))'], jobEnv(3));
    expect(code).toBe(4);
    expect(sorted(stderr)).toEqual([
      'srun: error: n1: task 1: Exited with exit code 2',
      'srun: error: n1: task 2: Exited with exit code 4',
    ]);
    const missing = await srun(['no-such-command-here'], jobEnv(1));
    expect(missing).toEqual({
      code: 2,
      stdout: '',
      stderr:
        'slurmstepd: error: execve(): no-such-command-here: No such file or directory\nsrun: error: n1: task 0: Exited with exit code 2\n',
    });
  });

  it('refuses more CPUs than the job has, as srun does', async () => {
    expect(await srun(['-n2', '-c2', 'true'], jobEnv(3, { SLURM_JOB_ID: '99' }))).toEqual({
      code: 1,
      stdout: '',
      stderr: 'srun: error: Unable to create step for job 99: More processors requested than permitted\n',
    });
    expect((await srun(['-O', '-n2', '-c2', 'true'], jobEnv(3))).code).toBe(0);
    expect((await srun(['-N2', 'true'], jobEnv(3))).stderr).toBe(
      'srun: error: --nodes=2: a Conductor job runs on one node\n',
    );
  });

  it('-K ends the other tasks when one fails', async () => {
    const started = Date.now();
    const { code } = await srun(
      ['-K', '-n2', 'sh', '-c', '[ $SLURM_PROCID = 0 ] && exit 3; sleep 20'],
      jobEnv(2),
    );
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(code).toBe(137);
  });

  it('-o with %t writes a file per task; --export=NONE,VAR=value gives only SLURM_* and VAR', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'srun-'));
    const env = jobEnv(2, { HOME_LIKE: 'x' });
    const { code } = await srun(
      [
        '-n2',
        '-o',
        join(dir, 'out-%t.txt'),
        '--export=NONE,FOO=bar',
        '/bin/sh',
        '-c',
        'echo "$FOO-$HOME_LIKE-$SLURM_PROCID"',
      ],
      env,
    );
    expect(code).toBe(0);
    expect(readFileSync(join(dir, 'out-0.txt'), 'utf8')).toBe('bar--0\n');
    expect(readFileSync(join(dir, 'out-1.txt'), 'utf8')).toBe('bar--1\n');
  });

  it('an output file that cannot be opened is an error before any task starts', async () => {
    const { code, stdout, stderr } = await srun(['-o', '/no/such/dir/out', 'echo', 'x'], jobEnv(1));
    expect({ code, stdout, stderr }).toEqual({
      code: 1,
      stdout: '',
      stderr: 'srun: error: Could not open output file /no/such/dir/out: No such file or directory\n',
    });
  });

  it('-i gives every task the file; a missing one is an error', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'srun-in-'));
    const path = join(dir, 'in.txt');
    writeFileSync(path, 'line\n');
    expect(sorted((await srun(['-n2', '-l', '-i', path, 'cat'], jobEnv(2))).stdout)).toEqual([
      '0: line',
      '1: line',
    ]);
    expect((await srun(['-i', join(dir, 'none.txt'), 'cat'], jobEnv(1))).stderr).toBe(
      `srun: error: Could not open input file ${join(dir, 'none.txt')}: No such file or directory\n`,
    );
  });

  it('--jobid must be the job srun runs in', async () => {
    const { code, stderr } = await srun(['--jobid=1', 'true'], jobEnv(1, { SLURM_JOB_ID: '2' }));
    expect(code).toBe(1);
    expect(stderr).toBe('srun: error: --jobid=1: srun runs steps only of the job it runs in (2)\n');
  });
});

describe('srun outside a job: the command as a job, followed', () => {
  let server: Awaited<ReturnType<typeof stubServer>>;
  beforeAll(async () => {
    server = await stubServer({
      'POST /api/v1/jobs/submit': { body: { id: 5, state: 'PENDING' } },
      'GET /api/v1/jobs/5/logs': (_req, res) => {
        res.writeHead(200, { 'Content-Type': 'text/event-stream' });
        res.end(
          `event: stdout\nid: 1\ndata: ${JSON.stringify('hello\n')}\n\nevent: stderr\nid: 2\ndata: ${JSON.stringify('oops\n')}\n\nevent: end\nid: 3\ndata: {"state":"FAILED","exit_code":"3:0"}\n\n`,
        );
      },
    });
  });
  afterAll(() => server.close());

  it("submits the command with srun's resources, streams its output and exits with its code", async () => {
    const env = { CONDUCTOR_URL: server.url, HOME: '/nonexistent', PATH: '/usr/bin', FOO: 'bar' };
    const { code, stdout, stderr } = await srun(
      [
        '-n2',
        '-c',
        '3',
        '-J',
        'probe',
        '-p',
        'gpu',
        '-t',
        '10',
        '--mem=4G',
        'python3',
        '-c',
        "print('hi there')",
      ],
      env,
    );
    expect(stdout).toBe('hello\n');
    expect(stderr).toBe(
      'srun: job 5 queued and waiting for resources\noops\nsrun: error: job 5 FAILED (exit code 3:0)\n',
    );
    expect(code).toBe(3);
    const submit = server.requests.find((r) => r.url === '/api/v1/jobs/submit');
    expect(submit?.body).toMatchObject({
      cpus: 6,
      ntasks: 2,
      cpus_per_task: 3,
      name: 'probe',
      partition: 'gpu',
      time_limit: '10',
      memory_per_node: '4G',
      work_dir: process.cwd(),
      submit_dir: process.cwd(),
      export_env: 'ALL',
      environment: { CONDUCTOR_URL: server.url, HOME: '/nonexistent', PATH: '/usr/bin', FOO: 'bar' },
    });
    expect((submit?.body as { script?: string } | undefined)?.script).toBe(
      stepScript(['python3', '-c', "print('hi there')"], 2, false),
    );
  });

  it('interrupted, it cancels its job and exits with how the job ended', async () => {
    let stream: ServerResponse | undefined;
    const stub = await stubServer({
      'POST /api/v1/jobs/submit': { body: { id: 6, state: 'RUNNING' } },
      'GET /api/v1/jobs/6/logs': (_req, res) => {
        res.writeHead(200, { 'Content-Type': 'text/event-stream' });
        res.write(`event: stdout\nid: 1\ndata: ${JSON.stringify('started\n')}\n\n`);
        stream = res;
      },
      'POST /api/v1/jobs/6/cancel': (_req, res) => {
        res.writeHead(200, { 'Content-Type': 'application/json' });
        res.end(JSON.stringify({ id: 6, state: 'CANCELLED' }));
        stream?.end('event: end\nid: 2\ndata: {"state":"CANCELLED","exit_code":"0:15"}\n\n');
      },
    });
    const child = spawn(process.execPath, [BIN, 'slurm', 'srun', 'sleep', '100'], {
      env: { PATH: process.env.PATH, HOME: tmpdir(), CONDUCTOR_URL: stub.url },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
      if (stdout === 'started\n') child.kill('SIGINT');
    });
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    const code = await new Promise((resolve) => child.on('close', resolve));
    await stub.close();
    expect(stub.requests.map((r) => `${r.method} ${r.url.split('?')[0]}`)).toEqual([
      'POST /api/v1/jobs/submit',
      'GET /api/v1/jobs/6/logs',
      'POST /api/v1/jobs/6/cancel',
    ]);
    expect(stderr).toBe('srun: forcing job termination\nsrun: error: job 6 CANCELLED (exit code 0:15)\n');
    expect(code).toBe(143);
  });

  it('the batch script execs one task, or runs n copies with their ids and exits with the highest code', () => {
    expect(stepScript(['echo', 'a b', "it's"], 1, false)).toBe(`#!/bin/bash\nexec echo 'a b' 'it'\\''s'\n`);
    const script = stepScript(['sh', '-c', 'exit $SLURM_PROCID'], 3, true);
    expect(script).toContain('export SLURM_PROCID=$i SLURM_LOCALID=$i');
    expect(script).toContain('exec > >(sed -u "s/^/$i: /")');
  });
});

describe('srun options', () => {
  it("cover exactly the options of Slurm 22.05's srun(1)", () => {
    expect(tableOptions(SRUN_OPTIONS)).toEqual(manPageOptions('srun'));
  });

  it('warn for the warned ones and refuse the refused ones, with the reason', async () => {
    for (const spec of SRUN_OPTIONS.filter((s) => s.fate !== 'honoured')) {
      const { code, stderr } = await srun([optionWord(spec), 'true'], jobEnv(1));
      if (spec.fate === 'warned') {
        expect(stderr).toBe(`srun: warning: --${spec.long} is ignored: ${spec.note}\n`);
        expect(code).toBe(0);
      } else {
        expect(stderr).toBe(`srun: error: --${spec.long} is not supported: ${spec.note}\n`);
        expect(code).toBe(1);
      }
    }
  });
});
