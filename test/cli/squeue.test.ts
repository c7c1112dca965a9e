/**
 * squeue's drop-in: Slurm's text for jobs as the API shows them (every field code, widths, states,
 * reasons), its option table against the 22.05 man page, and the command against a stub API that records
 * what it was asked.
 */
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { userInfo } from 'node:os';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { getoptLong } from '../../cli/slurm/getopt.ts';
import {
  expandHostlist,
  foldArrayTasks,
  foldIndexes,
  parseFormat,
  parseLongFormat,
  renderSqueue,
  runSqueue,
  type SlurmJob,
  SQUEUE_OPTIONS,
  sortJobs,
} from '../../cli/slurm/squeue.ts';

process.env.TZ = 'UTC';
const NOW = Date.parse('2026-12-06T12:00:00Z');
const ME = { name: 'alice', uid: 1000 };

function job(fields: Partial<SlurmJob> & { id: number }): SlurmJob {
  return {
    name: 'train',
    state: 'RUNNING',
    cpus: 4,
    exit_code: null,
    node: 'n1',
    owner: 'alice',
    account: 'ml',
    partition: 'batch',
    time_limit: 60,
    reason: 'None',
    submit_time: '2026-12-06T11:00:00Z',
    start_time: '2026-12-06T11:49:30Z',
    end_time: null,
    priority: 100,
    ...fields,
  };
}

const RUNNING = job({ id: 101, work_dir: '/home/alice/run', memory_mb: 4096, qos: 'high', comment: 'try 3' });
const PENDING = job({
  id: 102,
  state: 'PENDING',
  node: null,
  start_time: null,
  reason: 'Resources',
  owner: 'bob',
  priority: 200,
});
const HELD = job({
  id: 103,
  state: 'PENDING',
  node: null,
  start_time: null,
  reason: 'JobHeldUser',
  held: true,
  partition: 'debug',
});
const FAILED = job({
  id: 104,
  state: 'FAILED',
  exit_code: '1:0',
  end_time: '2026-12-06T11:59:00Z',
  reason: 'failed_to_start: no such file',
});
const DONE_LONG_AGO = job({
  id: 105,
  state: 'COMPLETED',
  exit_code: '0:0',
  end_time: '2026-12-06T09:00:00Z',
});
const CANCELLING = job({ id: 106, cancel_requested: true });

const render = (jobs: SlurmJob[], format: string, header = true) => {
  const columns = parseFormat(format);
  if ('bad' in columns) throw new Error(columns.bad);
  return renderSqueue(jobs, columns, { header, now: NOW, me: ME });
};

describe("squeue's text", () => {
  it("%E prints the job's dependency as submitted, (null) without one", () => {
    expect(render([{ ...PENDING, dependency: 'afterok:101' }, RUNNING], '%i %E', false)).toBe(
      '102 afterok:101\n101 (null)\n',
    );
  });

  it('prints the default columns with Slurm widths: reasons in parentheses for pending jobs, nodes for running ones', () => {
    expect(render([RUNNING, PENDING, HELD, CANCELLING], '%.18i %.9P %.8j %.8u %.2t %.10M %.6D %R')).toBe(
      [
        '             JOBID PARTITION     NAME     USER ST       TIME  NODES NODELIST(REASON)',
        '               101     batch    train    alice  R      10:30      1 n1',
        '               102     batch    train      bob PD       0:00      1 (Resources)',
        '               103     debug    train    alice PD       0:00      1 (JobHeldUser)',
        '               106     batch    train    alice CG      10:30      1 n1',
        '',
      ].join('\n'),
    );
  });

  it('shows a failed job with its reason as a Slurm code, a long name cut to the width', () => {
    expect(render([job({ ...FAILED, name: 'a-very-long-name' })], '%.8j|%t|%R', false)).toBe(
      'a-very-l|F|(NonZeroExitCode)\n',
    );
    expect(render([job({ id: 1, state: 'TIMEOUT', reason: null })], '%T %R', false)).toBe(
      'TIMEOUT (TimeLimit)\n',
    );
  });

  it('prints every field code of squeue(1) for a running one-node job', () => {
    const expected: Record<string, string> = {
      a: 'ml',
      A: '101',
      B: 'n1',
      c: '1',
      C: '4',
      d: '0',
      D: '1',
      e: '2026-12-06T12:49:30',
      E: '(null)',
      f: '(null)',
      F: '101',
      g: 'N/A',
      G: 'N/A',
      h: 'OK',
      H: '*',
      i: '101',
      I: '*',
      j: 'train',
      J: '*',
      k: 'try 3',
      K: 'N/A',
      l: '1:00:00',
      L: '49:30',
      m: '4G',
      M: '10:30',
      n: '',
      N: 'n1',
      o: '(null)',
      O: '0',
      p: '0.00000002328306',
      P: 'batch',
      q: 'high',
      Q: '100',
      r: 'None',
      R: 'n1',
      s: 'N/A',
      S: '2026-12-06T11:49:30',
      t: 'R',
      T: 'RUNNING',
      u: 'alice',
      U: '1000',
      v: '(null)',
      V: '2026-12-06T11:00:00',
      w: '(null)',
      W: '(null)',
      x: '',
      X: 'N/A',
      y: '0',
      Y: '(null)',
      z: '*:*:*',
      Z: '/home/alice/run',
    };
    for (const [code, value] of Object.entries(expected)) {
      expect([code, render([RUNNING], `%${code}`, false)]).toEqual([code, `${value}\n`]);
    }
    expect(Object.keys(expected)).toHaveLength(51);
    expect(render([RUNNING], '%all', false).split('|')).toHaveLength(52);
  });

  it('pads left by default and right with a dot, keeps suffixes and a prefix, and never cuts node lists', () => {
    expect(render([RUNNING], '>%5i<%.5i<%2N', false)).toBe('>101  <  101<n1\n');
    expect(render([job({ id: 1, node: 'node-with-long-name' })], '%.4N|%.4R', false)).toBe(
      'node-with-long-name|node-with-long-name\n',
    );
    expect(parseFormat('%b')).toEqual({ bad: 'b' });
    expect(render([RUNNING], '%.3M|%U|%.4R')).toBe('TIM|USER|NODE\n10:30|1000|  n1\n');
    expect(render([PENDING], '%.4R', false)).toBe('(Res\n');
    expect(render([job({ id: 1, time_limit: null }), job({ id: 2, time_limit: 5 })], '%e|%L', false)).toBe(
      'NONE|UNLIMITED\n2026-12-06T11:54:30|INVALID\n',
    );
  });

  it('takes -O names with sizes and suffixes (default width 20, left)', () => {
    const columns = parseLongFormat('JobID:.6,Name:10|,State,STDOUT:40,tres-alloc:0');
    if ('bad' in columns) throw new Error(columns.bad);
    expect(renderSqueue([RUNNING], columns, { header: true, now: NOW, me: ME })).toBe(
      [
        ' JOBIDNAME      |STATE               STDOUT                                  TRES_ALLOC',
        '   101train     |RUNNING             /home/alice/run/slurm-101.out           cpu=4,mem=4G,node=1,billing=4',
        '',
      ].join('\n'),
    );
    expect(parseLongFormat('JobID,NoSuchField')).toEqual({ bad: 'NoSuchField' });
  });

  it('sorts by partition, state and falling priority by default, and by any -S keys', () => {
    const jobs = [RUNNING, HELD, PENDING, job({ id: 107, state: 'PENDING', priority: 50, node: null })];
    sortJobs(jobs, 'P,t,-p', NOW);
    expect(jobs.map((j) => j.id)).toEqual([102, 107, 101, 103]);
    expect(sortJobs(jobs, '-i,bogus', NOW)).toEqual(['bogus']);
    expect(jobs.map((j) => j.id)).toEqual([107, 103, 102, 101]);
  });

  it('expands hostlists', () => {
    expect(expandHostlist('n[1-3,07],gpu1')).toEqual(['n1', 'n2', 'n3', 'n07', 'gpu1']);
    expect(expandHostlist('a[08-10]b')).toEqual(['a08b', 'a09b', 'a10b']);
  });
});

describe("squeue's options", () => {
  it('covers exactly the options of the 22.05 man page', () => {
    const fixture = readFileSync(
      new URL('../fixtures/slurm-22.05/squeue-options.txt', import.meta.url),
      'utf8',
    )
      .trim()
      .split('\n');
    const table = SQUEUE_OPTIONS.map((s) => `${s.short ? `-${s.short}, ` : ''}--${s.long}`);
    expect([...table].sort()).toEqual([...fixture].sort());
  });

  it('takes -j with the list attached, or as the next word (its argument is optional)', () => {
    expect(getoptLong(['-j5,6'], SQUEUE_OPTIONS).options[0]?.value).toBe('5,6');
    expect(getoptLong(['-j', '5'], SQUEUE_OPTIONS).positionals).toEqual(['5']);
  });
});

interface Recorded {
  method: string;
  url: string;
  body: string;
}

/** A stub API serving `jobs` (pages of `pageSize`); `strict` refuses the issue-15 filters as old servers do. */
function stubApi(jobs: SlurmJob[], options: { pageSize?: number; strict?: boolean } = {}) {
  const requests: Recorded[] = [];
  const server: Server = createServer((req, res) => {
    let body = '';
    req.on('data', (d) => {
      body += d;
    });
    req.on('end', () => {
      requests.push({ method: req.method ?? '', url: req.url ?? '', body });
      const url = new URL(req.url ?? '/', 'http://stub');
      const send = (status: number, json: unknown) => {
        res.writeHead(status, { 'Content-Type': 'application/json' });
        res.end(JSON.stringify(json));
      };
      const one = /^\/api\/v1\/jobs\/(\d+)$/.exec(url.pathname);
      const found = jobs.find((j) => j.id === Number(one?.[1]));
      if (found) return send(200, found);
      if (url.pathname !== '/api/v1/jobs') return send(404, { error: { code: 'not_found', message: 'no' } });
      const extra = [...url.searchParams.keys()].find((k) => !['state', 'limit', 'before'].includes(k));
      if (options.strict && extra) {
        return send(400, {
          error: { code: 'invalid_request', message: `Invalid query: Unrecognized key: "${extra}"` },
        });
      }
      const before = Number(url.searchParams.get('before') ?? Number.MAX_SAFE_INTEGER);
      const states = url.searchParams.get('state')?.split(',');
      const all = [...jobs]
        .sort((a, b) => b.id - a.id)
        .filter((j) => j.id < before && (!states || states.includes(j.state)));
      const size = options.pageSize ?? 1000;
      const page = all.slice(0, size);
      send(200, { jobs: page, next_before: all.length > size ? (page.at(-1)?.id ?? null) : null });
    });
  });
  return {
    requests,
    start: () =>
      new Promise<string>((resolve) =>
        server.listen(0, '127.0.0.1', () =>
          resolve(`http://127.0.0.1:${(server.address() as AddressInfo).port}`),
        ),
      ),
    stop: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

function capture() {
  const out: string[] = [];
  const err: string[] = [];
  return { io: { out: (t: string) => out.push(t), err: (t: string) => err.push(t) }, out, err };
}

describe('squeue against the API', () => {
  const all = [RUNNING, PENDING, HELD, FAILED, DONE_LONG_AGO, job({ id: 108, owner: userInfo().username })];
  let api: ReturnType<typeof stubApi>;
  let env: NodeJS.ProcessEnv;
  beforeAll(async () => {
    api = stubApi(all, { pageSize: 2 });
    env = { CONDUCTOR_URL: await api.start(), CONDUCTOR_TOKEN: 't', CONDUCTOR_CONFIG: '/nonexistent' };
  });
  afterAll(() => api.stop());
  beforeEach(() => {
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(NOW);
    api.requests.length = 0;
  });
  afterEach(() => vi.useRealTimers());

  it('lists pending and running jobs over every page, asking the server for those states', async () => {
    const { io, out, err } = capture();
    expect(await runSqueue(['-h', '-o', '%i %t'], io, env)).toBe(0);
    expect(err).toEqual([]);
    expect(out.join('')).toBe('102 PD\n101 R\n108 R\n103 PD\n');
    expect(api.requests.map((r) => r.url)).toEqual([
      '/api/v1/jobs?limit=1000&state=PENDING%2CRUNNING',
      '/api/v1/jobs?limit=1000&state=PENDING%2CRUNNING&before=103',
    ]);
  });

  it('sends the filters to the server and applies them itself', async () => {
    const { io, out } = capture();
    expect(
      await runSqueue(
        [
          '--noheader',
          '--format=%i',
          '-p',
          'batch,debug',
          '-A',
          'ml',
          '-u',
          'alice',
          '-n',
          'train',
          '-w',
          'n[1-2]',
          '-t',
          'r,PD',
        ],
        io,
        env,
      ),
    ).toBe(0);
    expect(out.join('')).toBe('101\n');
    const query = new URL(api.requests[0]?.url ?? '', 'http://x').searchParams;
    expect(Object.fromEntries(query)).toEqual({
      limit: '1000',
      state: 'RUNNING,PENDING',
      name: 'train',
      owner: 'alice',
      account: 'ml',
      partition: 'batch,debug',
    });
  });

  it('matches a pending job naming several partitions by any of them', async () => {
    const multi = stubApi([job({ id: 1, state: 'PENDING', partition: 'a,b', node: null, start_time: null })]);
    const url = await multi.start();
    const { io, out } = capture();
    expect(await runSqueue(['-h', '-o', '%i %P', '-p', 'b'], io, { ...env, CONDUCTOR_URL: url })).toBe(0);
    expect(out.join('')).toBe('1 a,b\n');
    await multi.stop();
  });

  it('filters by --me and -t all', async () => {
    const { io, out } = capture();
    expect(await runSqueue(['-h', '-o', '%i', '--me', '-t', 'all'], io, env)).toBe(0);
    expect(out.join('')).toBe('108\n');
  });

  it('shows a job given by -j in any state for 300 s after it ended; an unknown or gone one is an error', async () => {
    let { io, out, err } = capture();
    expect(await runSqueue(['-h', '-o', '%i %t', '-j', '104'], io, env)).toBe(0);
    expect(out.join('')).toBe('104 F\n');
    ({ io, out, err } = capture());
    expect(await runSqueue(['-j999'], io, env)).toBe(1);
    expect(err.join('')).toBe('slurm_load_jobs error: Invalid job id specified\n');
    expect(out).toEqual([]);
    ({ io, out, err } = capture());
    expect(await runSqueue(['--jobs=105'], io, env)).toBe(1);
    expect(err.join('')).toBe('slurm_load_jobs error: Invalid job id specified\n');
    ({ io, out, err } = capture());
    expect(await runSqueue(['-j105,101', '-h', '-o%i'], io, env)).toBe(0);
    expect(out.join('')).toBe('101\n');
  });

  it('falls back to filtering itself when the server predates the new filters', async () => {
    const old = stubApi(all, { strict: true });
    const url = await old.start();
    const { io, out } = capture();
    expect(await runSqueue(['-h', '-o', '%i', '-p', 'debug'], io, { ...env, CONDUCTOR_URL: url })).toBe(0);
    expect(out.join('')).toBe('103\n');
    expect(old.requests.map((r) => r.url)).toEqual([
      '/api/v1/jobs?limit=1000&state=PENDING%2CRUNNING&partition=debug',
      '/api/v1/jobs?limit=1000&state=PENDING%2CRUNNING',
    ]);
    await old.stop();
  });

  it('asks an old server for each job given by -j rather than for every job', async () => {
    const old = stubApi(all, { strict: true });
    const url = await old.start();
    const { io, out } = capture();
    expect(
      await runSqueue(['-h', '-o', '%i', '-j', '103,999,101', '-p', 'debug'], io, {
        ...env,
        CONDUCTOR_URL: url,
      }),
    ).toBe(0);
    expect(out.join('')).toBe('103\n');
    expect(old.requests.map((r) => r.url)).toEqual([
      '/api/v1/jobs?limit=1000&ids=103%2C999%2C101&partition=debug',
      '/api/v1/jobs/103',
      '/api/v1/jobs/999',
      '/api/v1/jobs/101',
    ]);
    await old.stop();
  });

  it('takes SQUEUE_* variables for options the command line does not give', async () => {
    let { io, out } = capture();
    const vars = { SQUEUE_SORT: '-i', SQUEUE_FORMAT: '%i:%u', SQUEUE_PARTITION: 'batch' };
    expect(await runSqueue(['-h'], io, { ...env, ...vars })).toBe(0);
    expect(out.join('')).toBe(`108:${userInfo().username}\n102:bob\n101:alice\n`);
    ({ io, out } = capture());
    expect(await runSqueue(['-h', '-O', 'JobID:4', '-p', 'debug'], io, { ...env, ...vars })).toBe(0);
    expect(out.join('')).toBe('103 \n');
  });

  it("counts jobs without an owner as the caller's on an open cluster (no token)", async () => {
    const open = stubApi([job({ id: 1, owner: null }), job({ id: 2, owner: 'bob' })]);
    const url = await open.start();
    const { io, out } = capture();
    const openEnv = { CONDUCTOR_URL: url, CONDUCTOR_CONFIG: '/nonexistent', CONDUCTOR_OWNER: 'alice' };
    expect(await runSqueue(['-h', '-o', '%i %u', '--me'], io, openEnv)).toBe(0);
    // Shown as the caller's too: there are no owners on an open cluster.
    expect(out.join('')).toBe('1 alice\n');
    expect(open.requests[0]?.url).toBe('/api/v1/jobs?limit=1000&state=PENDING%2CRUNNING');
    await open.stop();
  });

  it('prints again every --iterate seconds under a time stamp', async () => {
    vi.useRealTimers();
    const out: string[] = [];
    const stop = new Error('enough');
    const io = {
      out: (t: string) => {
        out.push(t);
        if (out.length === 5) throw stop;
      },
      err: () => {},
    };
    await expect(runSqueue(['-i', '1', '-o', '%i', '-j', '101'], io, env)).rejects.toBe(stop);
    const stamp = expect.stringMatching(/^\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}\n$/);
    expect(out).toEqual([stamp, 'JOBID\n101\n', '\n', stamp, 'JOBID\n101\n']);
  });

  it('lists pending jobs by expected start with --start', async () => {
    const { io, out } = capture();
    expect(await runSqueue(['--start', '-h'], io, env)).toBe(0);
    expect(out.join('')).toBe(
      [
        '               102     batch    train      bob PD                  N/A      1 (null)               (Resources)',
        '               103     debug    train    alice PD                  N/A      1 (null)               (JobHeldUser)',
        '',
      ].join('\n'),
    );
  });

  it('uses the long format with -l', async () => {
    const { io, out } = capture();
    expect(await runSqueue(['-l', '-j', '101'], io, env)).toBe(0);
    expect(out.join('')).toBe(
      [
        'Sun Dec  6 12:00:00 2026',
        '             JOBID PARTITION     NAME     USER    STATE       TIME TIME_LIMI  NODES NODELIST(REASON)',
        '               101     batch    train    alice  RUNNING      10:30   1:00:00      1 n1',
        '',
      ].join('\n'),
    );
  });

  it('refuses bad states and formats, refused options with their reason, warns for ignored ones', async () => {
    let { io, err } = capture();
    expect(await runSqueue(['-t', 'bogus'], io, env)).toBe(1);
    expect(err[0]).toBe(
      'squeue: error: Invalid job state specified: bogus\nsqueue: error: Valid job states include: BOOT_FAIL,CANCELLED,COMPLETED,CONFIGURING,COMPLETING,DEADLINE,FAILED,NODE_FAIL,OUT_OF_MEMORY,PENDING,PREEMPTED,RUNNING,RESV_DEL_HOLD,REQUEUE_FED,REQUEUE_HOLD,REQUEUED,RESIZING,REVOKED,SIGNALING,SPECIAL_EXIT,STAGE_OUT,STOPPED,SUSPENDED,TIMEOUT\n',
    );
    ({ io, err } = capture());
    expect(await runSqueue(['--json'], io, env)).toBe(1);
    expect(err.join('')).toMatch(/^squeue: error: --json is not supported: Slurm's JSON/);
    ({ io, err } = capture());
    expect(await runSqueue(['--bogus'], io, env)).toBe(1);
    expect(err.join('')).toBe(
      'squeue: unrecognized option \'--bogus\'\nTry "squeue --help" for more information\n',
    );
    ({ io, err } = capture());
    const out: string[] = [];
    expect(
      await runSqueue(['-r', '-h', '-o', '%i', '-j', '101'], { ...io, out: (t) => out.push(t) }, env),
    ).toBe(0);
    expect(err.join('')).toBe('');
    expect(out.join('')).toBe('101\n');
    ({ io, err } = capture());
    expect(await runSqueue(['-o', '%b'], io, env)).toBe(1);
    expect(err.join('')).toBe('squeue: error: Invalid job format specification: b\n');
    ({ io, err } = capture());
    expect(await runSqueue(['-i', 'x'], io, env)).toBe(1);
  });

  it('says an unreachable control plane is an unreachable slurmctld', async () => {
    const { io, err } = capture();
    expect(await runSqueue([], io, { ...env, CONDUCTOR_URL: 'http://127.0.0.1:1' })).toBe(1);
    expect(err.join('')).toMatch(
      /^slurm_load_jobs error: Unable to contact slurm controller \(connect failure\): /,
    );
  });

  it('prints its version, usage and help', async () => {
    const { io, out } = capture();
    expect(await runSqueue(['-V'], io, env)).toBe(0);
    expect(await runSqueue(['--usage'], io, env)).toBe(0);
    expect(await runSqueue(['--help'], io, env)).toBe(0);
    expect(out[0]).toBe('slurm 22.05.0\n');
    expect(out[1]).toMatch(/^Usage: squeue /);
    expect(out[2]).toContain('--noheader');
    expect(api.requests).toEqual([]);
  });
});

describe('squeue folds an array’s pending tasks as Slurm does', () => {
  const task = (id: number, task: number, state: string) =>
    ({ id, array_job_id: 100, array_task_id: task, state, name: 'a', cpus: 1 }) as SlurmJob;
  it('one line 100_[5-9%2] for the pending tasks, in the place of the first; running tasks one line each', () => {
    const jobs = [
      task(100, 0, 'RUNNING'),
      task(105, 5, 'PENDING'),
      task(106, 6, 'PENDING'),
      task(109, 9, 'PENDING'),
    ];
    const folded = foldArrayTasks(jobs, new Map([[100, 2]]));
    expect(folded.map((j) => [j.id, j.folded_tasks])).toEqual([
      [100, undefined],
      [105, '5-6,9%2'],
    ]);
    expect(foldIndexes([9, 5, 6, 7, 8, 1, 3])).toBe('1,3,5-9');
  });
});
