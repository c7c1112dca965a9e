/**
 * What an sbatch job finds on its node (issue 15): it runs in its --chdir or submit dir (else /tmp, with
 * slurmstepd's message), writes its output and error files there as slurmd does (filename patterns, open
 * modes, as its own user), reads its input file, sees sbatch(1)'s variables, gets its --signal before its
 * time limit and the signals pushed to it, and the agent reports its MaxRSS. Real bash jobs throughout.
 */
import {
  chmodSync,
  chownSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startJob } from '../../agent/src/executor.ts';
import { expandFilenamePattern, NO_ARRAY_INDEX } from '../../agent/src/job-files.ts';
import type { Assignment } from '../../agent/src/protocol.ts';
import { lookupUser } from '../../agent/src/safety.ts';
import { AgentProcess, eventually } from '../support/agent-process.ts';
import { ScriptedControlPlane } from './scripted-control-plane.ts';

const root = mkdtempSync(join(tmpdir(), 'conductor-job-files-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

let nextId = 7000;
function assignment(script: string, extra: Partial<Assignment> = {}): Assignment {
  return {
    job_id: nextId++,
    attempt: 1,
    name: 'files',
    script,
    cpus: 1,
    work_dir: null,
    environment: {},
    time_limit_s: null,
    ...extra,
  };
}

const NODE = 'node07.cluster.example';

function run(a: Assignment, extra: { outputLimitBytes?: number; jobRoot?: string } = {}) {
  return startJob(a, { jobsDir: join(root, 'jobs'), nodeName: NODE, timeoutGraceMs: 2000, ...extra });
}

/** A fresh submit directory. */
function submitDir(): string {
  return mkdtempSync(join(root, 'submit-'));
}

const me = process.env.USER ?? userInfo().username;

describe('filename patterns (sbatch(1) "filename pattern")', () => {
  const values = { jobId: 42, jobName: 'sim', user: 'alice', node: 'node07' };
  it.each([
    ['slurm-%j.out', 'slurm-42.out'],
    ['%%', '%'],
    ['100%%-%j', '100%-42'],
    ['%A', '42'],
    ['%a', String(NO_ARRAY_INDEX)],
    ['%J', '42.batch'],
    ['%j', '42'],
    ['%N', 'node07'],
    ['%n', '0'],
    ['%s', 'batch'],
    ['%t', '0'],
    ['%u', 'alice'],
    ['%x', 'sim'],
    ['%5j', '00042'],
    ['job%4j.out', 'job0042.out'],
    ['%2t-%3n', '00-000'],
    ['%8J', '00000042.batch'],
    ['%5N-%5u-%5x-%5s', 'node07-alice-sim-batch'],
    ['%12j', '0000000042'],
    ['%q%j', '%q42'],
    ['\\\\%j.out', '%j.out'],
    ['a\\b%x', 'ab%x'],
    ['%x/%u/%j-%a.out', 'sim/alice/42-4294967294.out'],
  ])('%s → %s', (pattern, expected) => {
    expect(expandFilenamePattern(pattern, values)).toBe(expected);
  });

  it('every pattern names the file the job writes, in its submit dir', async () => {
    const dir = submitDir();
    const patterns = ['o-%%', 'o-%A', 'o-%a', 'o-%J', 'o-%j', 'o-%N', 'o-%n', 'o-%s', 'o-%t', 'o-%u', 'o-%x'];
    const a = assignment('echo out', { name: 'sim' });
    const id = a.job_id;
    const expected = [
      'o-%',
      `o-${id}`,
      `o-${NO_ARRAY_INDEX}`,
      `o-${id}.batch`,
      `o-${id}`,
      'o-node07',
      'o-0',
      'o-batch',
      'o-0',
      `o-${me}`,
      'o-sim',
    ];
    for (const [i, pattern] of [...patterns, 'o-%5j'].entries()) {
      const job = run({ ...a, job_id: id, attempt: i + 1, submit_dir: dir, stdout: pattern });
      expect(await job.result).toMatchObject({ outcome: 'exited', exit_code: '0:0' });
    }
    for (const name of [...expected, `o-${String(id).padStart(5, '0')}`]) {
      expect(readFileSync(join(dir, name), 'utf8'), name).toBe('out\n');
    }
  });
});

describe('where the job runs and writes', () => {
  it('by default: in the submit dir, stdout and stderr interleaved in slurm-<id>.out', async () => {
    const dir = submitDir();
    const a = assignment('pwd; echo one; echo two >&2; echo three', { submit_dir: dir });
    const job = run(a);
    expect(await job.result).toMatchObject({ outcome: 'exited', exit_code: '0:0' });
    expect(readFileSync(join(dir, `slurm-${a.job_id}.out`), 'utf8')).toBe(`${dir}\none\ntwo\nthree\n`);
    // The captured stdout is what the file holds; stderr was the same open file.
    expect(readFileSync(job.stdoutPath, 'utf8')).toBe(`${dir}\none\ntwo\nthree\n`);
    expect(readFileSync(job.stderrPath, 'utf8')).toBe('');
  });

  it('--chdir relative to the submit dir; -o relative to the working directory; -e a file of its own', async () => {
    const dir = submitDir();
    mkdirSync(join(dir, 'run'));
    const a = assignment('pwd; echo err >&2', {
      submit_dir: dir,
      work_dir: 'run',
      stdout: 'out-%j.txt',
      stderr: `${dir}/err-%j.txt`,
    });
    const job = run(a);
    expect(await job.result).toMatchObject({ outcome: 'exited', exit_code: '0:0' });
    expect(readFileSync(join(dir, 'run', `out-${a.job_id}.txt`), 'utf8')).toBe(`${dir}/run\n`);
    expect(readFileSync(join(dir, `err-${a.job_id}.txt`), 'utf8')).toBe('err\n');
    expect(readFileSync(job.stderrPath, 'utf8')).toBe('err\n');
  });

  it('--open-mode=append adds to the files, truncate (the default) replaces them', async () => {
    const dir = submitDir();
    writeFileSync(join(dir, 'log.out'), 'before\n');
    writeFileSync(join(dir, 'fresh.out'), 'before\n');
    const appended = run(
      assignment('echo appended', { submit_dir: dir, stdout: 'log.out', open_mode: 'append' }),
    );
    const truncated = run(assignment('echo truncated', { submit_dir: dir, stdout: 'fresh.out' }));
    await Promise.all([appended.result, truncated.result]);
    expect(readFileSync(join(dir, 'log.out'), 'utf8')).toBe('before\nappended\n');
    expect(readFileSync(join(dir, 'fresh.out'), 'utf8')).toBe('truncated\n');
    // The captured stream holds this attempt's output only.
    expect(readFileSync(appended.stdoutPath, 'utf8')).toBe('appended\n');
  });

  it('-i: the job reads its input file', async () => {
    const dir = submitDir();
    writeFileSync(join(dir, 'in-7.txt'), 'line 1\nline 2\n');
    const job = run(assignment('wc -l; cat', { submit_dir: dir, stdin: 'in-7.txt' }));
    expect(await job.result).toMatchObject({ outcome: 'exited', exit_code: '0:0' });
    expect(readFileSync(job.stdoutPath, 'utf8')).toBe('2\n');
    // Without -i: /dev/null.
    const none = run(assignment('cat; echo eof', { submit_dir: dir }));
    await none.result;
    expect(readFileSync(none.stdoutPath, 'utf8')).toBe('eof\n');
  });

  it('an output, error or input file that cannot be opened: failed_to_start, naming the file and the error', async () => {
    const dir = submitDir();
    const cases: [Partial<Assignment>, string][] = [
      [
        { stdout: 'missing/out.txt' },
        `couldn't open output file ${dir}/missing/out.txt: No such file or directory`,
      ],
      [{ stderr: `${dir}` }, `couldn't open error file ${dir}: Is a directory`],
      [{ stdin: 'nope.txt' }, `couldn't open input file ${dir}/nope.txt: No such file or directory`],
    ];
    for (const [extra, message] of cases) {
      const job = run(assignment('touch ran', { submit_dir: dir, ...extra }));
      expect(await job.result).toEqual({ exit_code: '1:0', outcome: 'failed_to_start', message });
      expect(job.pid).toBeUndefined();
    }
    expect(() => statSync(join(dir, 'ran'))).toThrow();
  });

  it("a missing working directory: /tmp, with slurmstepd's message first in the output file", async () => {
    const missing = join(root, 'gone');
    const a = assignment('pwd', { submit_dir: missing });
    const job = run(a);
    expect(await job.result).toMatchObject({ outcome: 'exited', exit_code: '0:0' });
    const file = join('/tmp', `slurm-${a.job_id}.out`);
    try {
      expect(readFileSync(file, 'utf8')).toBe(
        `slurmstepd: error: couldn't chdir to \`${missing}': No such file or directory: going to /tmp instead\n/tmp\n`,
      );
    } finally {
      rmSync(file, { force: true });
    }
  });

  it('a directory outside CONDUCTOR_JOB_ROOT: /tmp too, saying why', async () => {
    const jobRoot = mkdtempSync(join(root, 'root-'));
    const outside = submitDir();
    const job = run(assignment('pwd', { work_dir: outside }), { jobRoot });
    await job.result;
    expect(readFileSync(job.stdoutPath, 'utf8')).toBe('/tmp\n');
    expect(readFileSync(job.stderrPath, 'utf8')).toBe(
      `slurmstepd: error: couldn't chdir to \`${outside}': outside the agent's job root (CONDUCTOR_JOB_ROOT=${jobRoot}): going to /tmp instead\n`,
    );
  });

  it('a job writing fast: its file gets every byte, in order', async () => {
    const dir = submitDir();
    const a = assignment('seq 1 3000000', { submit_dir: dir });
    const job = run(a);
    expect(await job.result).toMatchObject({ outcome: 'exited', exit_code: '0:0' });
    const lines = readFileSync(join(dir, `slurm-${a.job_id}.out`), 'utf8').split('\n');
    expect(lines).toHaveLength(3_000_001);
    expect(lines.every((line, i) => line === (i < 3_000_000 ? String(i + 1) : ''))).toBe(true);
  });

  it('the files get all the output; what is captured for the control plane stays held to the limit', async () => {
    const dir = submitDir();
    const a = assignment('head -c 300000 /dev/zero | tr "\\0" x; echo', { submit_dir: dir });
    const job = run(a, { outputLimitBytes: 100_000 });
    await job.result;
    expect(statSync(join(dir, `slurm-${a.job_id}.out`)).size).toBe(300_001);
    expect(readFileSync(job.stdoutPath, 'utf8')).toMatch(/^x{100000}\n\[\.\.\. output truncated/);
  });
});

const isRoot = process.getuid?.() === 0;
const nobody = lookupUser('nobody');
const noRunAs = !isRoot
  ? 'the tests do not run as root, so the agent cannot switch users'
  : !nobody
    ? 'this machine has no user nobody'
    : undefined;
if (noRunAs) console.warn(`[job-files] skipping the files of jobs run as another user: ${noRunAs}`);

describe.skipIf(noRunAs !== undefined)('run as another user (CONDUCTOR_RUN_AS)', () => {
  const user = nobody!;
  // The user must be able to pass through the test's folder to reach its submit dirs.
  beforeAll(() => chmodSync(root, 0o711));
  it("creates the job's files as its user, and fails where that user may not write", async () => {
    const dir = submitDir();
    chownSync(dir, user.uid, user.gid);
    const a = assignment('id -u; echo err >&2', { submit_dir: dir, stderr: 'err-%u.txt' });
    const job = startJob(a, { jobsDir: join(root, 'jobs-run-as'), runAs: user, nodeName: NODE });
    expect(await job.result).toMatchObject({ outcome: 'exited', exit_code: '0:0' });
    const out = join(dir, `slurm-${a.job_id}.out`);
    const err = join(dir, `err-${user.name}.txt`);
    expect(readFileSync(out, 'utf8')).toBe(`${user.uid}\n`);
    expect(readFileSync(err, 'utf8')).toBe('err\n');
    for (const file of [out, err]) expect(statSync(file)).toMatchObject({ uid: user.uid, gid: user.gid });

    // A folder its user may enter but only root may write to: the agent's root does not make the file.
    const rootOnly = mkdtempSync(join(root, 'root-only-'));
    chmodSync(rootOnly, 0o755);
    const refused = startJob(assignment('true', { submit_dir: rootOnly, stdout: 'x.out' }), {
      jobsDir: join(root, 'jobs-run-as'),
      runAs: user,
    });
    expect(await refused.result).toMatchObject({
      outcome: 'failed_to_start',
      message: `couldn't open output file ${rootOnly}/x.out: Permission denied`,
    });
    expect(() => statSync(join(rootOnly, 'x.out'))).toThrow();
  });

  it('a directory its user cannot enter: /tmp', async () => {
    const closed = mkdtempSync(join(root, 'closed-')); // 0700 root
    const job = startJob(assignment('pwd', { work_dir: closed }), {
      jobsDir: join(root, 'jobs-run-as'),
      runAs: user,
    });
    await job.result;
    expect(readFileSync(job.stdoutPath, 'utf8')).toBe('/tmp\n');
    expect(readFileSync(job.stderrPath, 'utf8')).toBe(
      `slurmstepd: error: couldn't chdir to \`${closed}': Permission denied: going to /tmp instead\n`,
    );
  });
});

describe('the environment, variable by variable against sbatch(1) OUTPUT ENVIRONMENT VARIABLES', () => {
  it('sets each one that applies to a one-node batch job, and none of the others', async () => {
    const dir = submitDir();
    const a = assignment('env', {
      name: 'sim',
      cpus: 4,
      owner: 'alice',
      account: 'physics',
      partition: 'batch',
      qos: 'high',
      submit_dir: dir,
      submit_host: 'login01',
      cluster_name: 'lab',
      memory_mb: 2048,
      time_limit_s: 600,
      start_time: '2026-03-01T10:00:00Z',
      export_env: 'NONE',
    });
    const job = run(a);
    await job.result;
    const env = Object.fromEntries(
      readFileSync(join(dir, `slurm-${a.job_id}.out`), 'utf8')
        .split('\n')
        .filter((l) => /^SLURMD?_/.test(l))
        .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
    );
    const start = Date.parse('2026-03-01T10:00:00Z') / 1000;
    expect(env).toEqual({
      // sbatch(1), in its order (those for arrays, GPUs, het jobs and options not given are not set)
      SLURM_CLUSTER_NAME: 'lab',
      SLURM_CPUS_ON_NODE: '4',
      SLURM_EXPORT_ENV: 'NONE',
      SLURM_GTIDS: '0',
      SLURM_JOB_ACCOUNT: 'physics',
      SLURM_JOB_ID: String(a.job_id),
      SLURM_JOB_CPUS_PER_NODE: '4',
      SLURM_JOB_NAME: 'sim',
      SLURM_JOB_NODELIST: NODE,
      SLURM_JOB_NUM_NODES: '1',
      SLURM_JOB_PARTITION: 'batch',
      SLURM_JOB_QOS: 'high',
      SLURM_JOBID: String(a.job_id),
      SLURM_LOCALID: '0',
      SLURM_MEM_PER_NODE: '2048',
      SLURM_NNODES: '1',
      SLURM_NODEID: '0',
      SLURM_NODELIST: NODE,
      SLURM_NPROCS: '1',
      SLURM_NTASKS: '1',
      SLURM_NTASKS_PER_NODE: '1',
      SLURM_PROCID: '0',
      SLURM_SUBMIT_DIR: dir,
      SLURM_SUBMIT_HOST: 'login01',
      SLURM_TASKS_PER_NODE: '1',
      SLURMD_NODENAME: NODE,
      // Not in 22.05's list, set by Slurm nonetheless (newer Slurm documents them)
      SLURM_JOB_USER: 'alice',
      SLURM_JOB_UID: String(process.getuid?.()),
      SLURM_JOB_GID: String(process.getgid?.()),
      SLURM_JOB_START_TIME: String(start),
      SLURM_JOB_END_TIME: String(start + 600),
    });
  });
});

describe('signals', () => {
  it('--signal: the batch shell gets it before_s before the time limit', async () => {
    const dir = submitDir();
    const a = assignment(
      'trap \'echo "got USR1 after $SECONDS s"; exit 0\' USR1\nfor i in $(seq 100); do sleep 0.1; done\necho no signal',
      { submit_dir: dir, time_limit_s: 4, signal: { signal: 'USR1', before_s: 3, batch_only: true } },
    );
    const job = run(a);
    expect(await job.result).toMatchObject({ outcome: 'exited', exit_code: '0:0' });
    expect(readFileSync(join(dir, `slurm-${a.job_id}.out`), 'utf8')).toMatch(/^got USR1 after [12] s\n$/);
  });

  it('without B: every process of the job gets it; a number works as a name', async () => {
    const dir = submitDir();
    const a = assignment(
      "(trap 'echo child got it; exit 0' USR2; sleep 10 & wait) &\ntrap 'echo shell got it' USR2\nwait; wait",
      { submit_dir: dir, time_limit_s: 3, signal: { signal: '12', before_s: 2, batch_only: false } },
    );
    const job = run(a);
    await job.result;
    expect(
      readFileSync(join(dir, `slurm-${a.job_id}.out`), 'utf8')
        .split('\n')
        .sort(),
    ).toEqual(['', 'child got it', 'shell got it']);
  });
});

describe('on an agent (scripted control plane)', () => {
  let cp: ScriptedControlPlane;
  let agent: AgentProcess;
  beforeAll(async () => {
    cp = await ScriptedControlPlane.start();
    agent = new AgentProcess('job-files', cp.url, { env: { CONDUCTOR_JOB_CONTAINMENT: 'sweep' } });
    await agent.registered();
  });
  afterAll(async () => {
    await agent.stop();
    await cp.close();
  });

  it('delivers a signal the control plane pushes (scancel --signal) to the running attempt', async () => {
    const a = assignment(
      "trap 'echo got HUP; exit 3' HUP\necho ready\nfor i in $(seq 200); do sleep 0.1; done",
    );
    cp.assign(a);
    await eventually(() => cp.output(a.job_id, 'stdout') === 'ready\n' || undefined, {
      what: 'the job to start',
    });
    cp.signal({ job_id: a.job_id, attempt: 2, signal: 'HUP', batch_only: true }); // another attempt: ignored
    cp.signal({ job_id: a.job_id, attempt: 1, signal: 'HUP', batch_only: true });
    expect(await cp.finish(a.job_id)).toMatchObject({ outcome: 'exited', exit_code: '3:0' });
    expect(cp.output(a.job_id, 'stdout')).toBe('ready\ngot HUP\n');
    expect(agent.lines.some((l) => l.includes(`Job ${a.job_id}.1: sent signal HUP to its batch shell`))).toBe(
      true,
    );
  });

  it('an output file that cannot be opened: finish failed_to_start with the reason, nothing started', async () => {
    const dir = submitDir();
    const a = assignment('true', { submit_dir: dir, stdout: 'no/such/dir/%j.out' });
    cp.assign(a);
    expect(await cp.finish(a.job_id)).toMatchObject({
      outcome: 'failed_to_start',
      exit_code: '1:0',
      message: `couldn't open output file ${dir}/no/such/dir/${a.job_id}.out: No such file or directory`,
    });
    expect(cp.requests.some((r) => r.path === `/jobs/${a.job_id}/started`)).toBe(false);
  });

  it('reports the MaxRSS of the job (about 50 MB held for 2 s) in max_rss_kb', async () => {
    const a = assignment('python3 -c "b=bytearray(50*1024*1024); import time; time.sleep(2)"');
    cp.assign(a);
    const finish = await cp.finish(a.job_id);
    expect(finish).toMatchObject({ outcome: 'exited', exit_code: '0:0' });
    expect(finish.max_rss_kb).toBeGreaterThan(50 * 1024);
    expect(finish.max_rss_kb).toBeLessThan(80 * 1024);
  });
});
