/**
 * sacct's drop-in: Slurm's accounting text for jobs as the API shows them (every --helpformat field, widths,
 * `-p`/`-P`/`-n`, states, the batch step line), its time forms, its option table against the 22.05 man
 * page, and the command against a stub API that records what it was asked.
 */
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import {
  helpFormat,
  parseFields,
  parseSlurmTime,
  type Row,
  renderSacct,
  runSacct,
  SACCT_FIELDS,
  SACCT_OPTIONS,
} from '../../cli/slurm/sacct.ts';
import type { SlurmJob } from '../../cli/slurm/squeue.ts';

process.env.TZ = 'UTC';
const NOW = Date.parse('2026-12-06T12:00:00Z');
const ME = { name: 'alice', uid: 1000 };

function job(fields: Partial<SlurmJob> & { id: number }): SlurmJob {
  return {
    name: 'train',
    state: 'COMPLETED',
    cpus: 4,
    exit_code: '0:0',
    node: 'n1',
    owner: 'alice',
    account: 'ml',
    partition: 'batch',
    time_limit: 90,
    reason: 'None',
    submit_time: '2026-12-06T10:00:00Z',
    start_time: '2026-12-06T10:00:05Z',
    end_time: '2026-12-06T11:02:10Z',
    priority: 100,
    memory_mb: 4096,
    max_rss_kb: 51200,
    work_dir: '/home/alice/run',
    ...fields,
  };
}

const DONE = job({ id: 201 });
const CANCELLED = job({
  id: 202,
  name: 'a-rather-long-job-name',
  state: 'CANCELLED',
  cancelled_by: 'alice',
  exit_code: '0:15',
  memory_mb: 4000,
  max_rss_kb: 1234,
});
const PENDING = job({
  id: 203,
  state: 'PENDING',
  start_time: null,
  end_time: null,
  node: null,
  exit_code: null,
  reason: 'Priority',
  memory_mb: null,
  max_rss_kb: null,
});
const RUNNING = job({
  id: 204,
  state: 'RUNNING',
  end_time: null,
  exit_code: null,
  max_rss_kb: null,
  time_limit: null,
  owner: 'bob',
  cancelled_by: null,
});
const OLD = job({
  id: 200,
  submit_time: '2026-12-01T10:00:00Z',
  start_time: '2026-12-01T10:00:00Z',
  end_time: '2026-12-01T10:30:00Z',
});

const rows = (jobs: SlurmJob[], steps = true): Row[] =>
  jobs.flatMap((j) => [
    { job: j, step: false, now: NOW, me: ME, units: 'exact' as const },
    ...(steps && j.start_time ? [{ job: j, step: true, now: NOW, me: ME, units: 'exact' as const }] : []),
  ]);

const render = (
  jobs: SlurmJob[],
  fields: string,
  settings: Partial<Parameters<typeof renderSacct>[2]> = {},
) => {
  const columns = parseFields(fields);
  if ('bad' in columns) throw new Error(columns.bad);
  return renderSacct(rows(jobs), columns, { header: true, ...settings });
};

describe("sacct's text", () => {
  it('prints the default fields with the header, dashes and a batch step line under each job that started', () => {
    expect(
      render([DONE, CANCELLED, PENDING, RUNNING], 'jobid,jobname,partition,account,alloccpus,state,exitcode'),
    ).toBe(
      [
        'JobID           JobName  Partition    Account  AllocCPUS      State ExitCode ',
        '------------ ---------- ---------- ---------- ---------- ---------- -------- ',
        '201               train      batch         ml          4  COMPLETED      0:0 ',
        '201.batch         batch                    ml          4  COMPLETED      0:0 ',
        '202          a-rather-+      batch         ml          4 CANCELLED+     0:15 ',
        '202.batch         batch                    ml          4  CANCELLED     0:15 ',
        '203               train      batch         ml          0    PENDING      0:0 ',
        '204               train      batch         ml          4    RUNNING      0:0 ',
        '204.batch         batch                    ml          4    RUNNING      0:0 ',
        '',
      ].join('\n'),
    );
  });

  it('says who cancelled a job: your uid when it was you, else the name', () => {
    expect(render([CANCELLED], 'jobid,state%20', { parsable: 'between', header: false })).toBe(
      '202|CANCELLED by 1000\n202.batch|CANCELLED\n',
    );
    expect(
      render([job({ id: 9, state: 'CANCELLED', cancelled_by: 'admin' })], 'state%-22', { header: false }),
    ).toBe('CANCELLED by admin     \nCANCELLED              \n');
  });

  it('prints the accounting fields the issue names, on the job line and the step line as Slurm does', () => {
    const text = render(
      [DONE, CANCELLED, PENDING, RUNNING],
      'JobID,JobIDRaw,JobName,Partition,Account,User,AllocCPUS,ReqMem,State,ExitCode,Elapsed,Submit,Start,End,NodeList,MaxRSS,CPUTime,TimeLimit,Reason',
      { parsable: 'between' },
    );
    expect(text.split('\n')).toEqual([
      'JobID|JobIDRaw|JobName|Partition|Account|User|AllocCPUS|ReqMem|State|ExitCode|Elapsed|Submit|Start|End|NodeList|MaxRSS|CPUTime|Timelimit|Reason',
      '201|201|train|batch|ml|alice|4|4G|COMPLETED|0:0|01:02:05|2026-12-06T10:00:00|2026-12-06T10:00:05|2026-12-06T11:02:10|n1||04:08:20|01:30:00|None',
      '201.batch|201.batch|batch||ml||4||COMPLETED|0:0|01:02:05|2026-12-06T10:00:05|2026-12-06T10:00:05|2026-12-06T11:02:10|n1|50M|04:08:20||',
      '202|202|a-rather-long-job-name|batch|ml|alice|4|4000M|CANCELLED by 1000|0:15|01:02:05|2026-12-06T10:00:00|2026-12-06T10:00:05|2026-12-06T11:02:10|n1||04:08:20|01:30:00|None',
      '202.batch|202.batch|batch||ml||4||CANCELLED|0:15|01:02:05|2026-12-06T10:00:05|2026-12-06T10:00:05|2026-12-06T11:02:10|n1|1234K|04:08:20||',
      '203|203|train|batch|ml|alice|0|0|PENDING|0:0|00:00:00|2026-12-06T10:00:00|Unknown|Unknown|None assigned||00:00:00|01:30:00|Priority',
      '204|204|train|batch|ml|bob|4|4G|RUNNING|0:0|01:59:55|2026-12-06T10:00:00|2026-12-06T10:00:05|Unknown|n1||07:59:40|UNLIMITED|None',
      '204.batch|204.batch|batch||ml||4||RUNNING|0:0|01:59:55|2026-12-06T10:00:05|2026-12-06T10:00:05|Unknown|n1||07:59:40||',
      '',
    ]);
  });

  it('prints every --helpformat field, those without meaning here empty, with their widths', () => {
    expect(SACCT_FIELDS).toHaveLength(109);
    const all = render([DONE], 'ALL', { header: true });
    const [header, dashes, line] = all.split('\n');
    expect(header?.length).toBe(dashes?.length);
    expect(line?.length).toBe(dashes?.length);
    const parsable = render([DONE], 'ALL', { parsable: 'trailing', header: false })
      .split('\n')[0]
      ?.split('|');
    expect(parsable).toHaveLength(110);
    const byName = Object.fromEntries(SACCT_FIELDS.map((f, i) => [f.name, parsable?.[i]]));
    expect(byName).toMatchObject({
      AllocTRES: 'billing=4,cpu=4,mem=4G,node=1',
      AdminComment: '',
      CPUTimeRAW: '14900',
      ElapsedRaw: '3725',
      NNodes: '1',
      ReqCPUS: '4',
      Reserved: '00:00:05',
      TimelimitRaw: '90',
      UID: '1000',
      WorkDir: '/home/alice/run',
      TotalCPU: '',
    });
  });

  it('shows a job cancelled while pending as starting when it ended, with no step line', () => {
    const gone = job({ id: 5, state: 'CANCELLED', start_time: null, max_rss_kb: null, exit_code: null });
    expect(render([gone], 'jobid,start,end,elapsed,alloccpus', { parsable: 'between', header: false })).toBe(
      '5|2026-12-06T11:02:10|2026-12-06T11:02:10|00:00:00|0\n',
    );
  });

  it('takes any case and any prefix, %N widths (right; %-N left), and -p with its trailing |', () => {
    expect(render([DONE], 'jobid%-5,JOBNAME%3,elap%12', { header: false })).toBe(
      '201   tr+     01:02:05 \n201.+ ba+     01:02:05 \n',
    );
    expect(render([DONE], 'jobid,state', { parsable: 'trailing' })).toBe(
      'JobID|State|\n201|COMPLETED|\n201.batch|COMPLETED|\n',
    );
    expect(render([DONE], 'jobid,state', { parsable: 'between', delimiter: ',' })).toBe(
      'JobID,State\n201,COMPLETED\n201.batch,COMPLETED\n',
    );
    expect(parseFields('jobid,bogus')).toEqual({ bad: 'bogus' });
  });

  it('lists the fields four to a line for -e', () => {
    const lines = helpFormat().split('\n');
    expect(lines[0]).toBe('Account             AdminComment        AllocCPUS           AllocNodes         ');
    expect(lines.at(-2)).toBe('WorkDir            ');
  });

  it("reads Slurm's time forms, in the past when they leave the date or year out", () => {
    const now = new Date('2026-12-06T12:00:00Z');
    const at = (text: string) => parseSlurmTime(text, now)?.toISOString();
    expect(at('2026-12-01')).toBe('2026-12-01T00:00:00.000Z');
    expect(at('2026-12-01T08:30')).toBe('2026-12-01T08:30:00.000Z');
    expect(at('2026-12-01-08:30:15')).toBe('2026-12-01T08:30:15.000Z');
    expect(at('10:15')).toBe('2026-12-06T10:15:00.000Z');
    expect(at('13:00')).toBe('2026-12-05T13:00:00.000Z');
    expect(at('1:30pm')).toBe('2026-12-05T13:30:00.000Z');
    expect(at('1204')).toBe('2026-12-04T00:00:00.000Z');
    expect(at('1224')).toBe('2025-12-24T00:00:00.000Z');
    expect(at('12/04/25-06:00')).toBe('2025-12-04T06:00:00.000Z');
    expect(at('12.04')).toBe('2026-12-04T00:00:00.000Z');
    expect(at('midnight')).toBe('2026-12-06T00:00:00.000Z');
    expect(at('teatime')).toBe('2026-12-06T16:00:00.000Z');
    expect(at('now-2hours')).toBe('2026-12-06T10:00:00.000Z');
    expect(at('now+30')).toBe('2026-12-06T12:00:30.000Z');
    expect(at('yesterday-ish')).toBeUndefined();
    expect(at('2026-13-01')).toBeUndefined();
  });
});

describe("sacct's options", () => {
  it('covers exactly the options of the 22.05 man page', () => {
    const fixture = readFileSync(
      new URL('../fixtures/slurm-22.05/sacct-options.txt', import.meta.url),
      'utf8',
    )
      .trim()
      .split('\n');
    const table = SACCT_OPTIONS.map((s) => `${s.short ? `-${s.short}, ` : ''}--${s.long}`);
    expect([...table].sort()).toEqual([...fixture].sort());
  });
});

function stubApi(jobs: SlurmJob[]) {
  const requests: string[] = [];
  const server: Server = createServer((req, res) => {
    requests.push(req.url ?? '');
    const url = new URL(req.url ?? '/', 'http://stub');
    res.writeHead(200, { 'Content-Type': 'application/json' });
    const one = /^\/api\/v1\/jobs\/(\d+)$/.exec(url.pathname);
    if (one) {
      const found = jobs.find((j) => j.id === Number(one[1]));
      res.end(JSON.stringify({ ...found, script: '#!/bin/sh\necho hi\n', environment: { A: '1' } }));
      return;
    }
    res.end(JSON.stringify({ jobs: [...jobs].sort((a, b) => b.id - a.id), next_before: null }));
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

describe('sacct against the API', () => {
  let api: ReturnType<typeof stubApi>;
  let env: NodeJS.ProcessEnv;
  beforeAll(async () => {
    api = stubApi([OLD, DONE, CANCELLED, PENDING, RUNNING]);
    env = {
      CONDUCTOR_URL: await api.start(),
      CONDUCTOR_TOKEN: 't',
      CONDUCTOR_CONFIG: '/x',
      CONDUCTOR_OWNER: 'alice',
    };
  });
  afterAll(() => api.stop());
  beforeEach(() => {
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(NOW);
    api.requests.length = 0;
  });
  afterEach(() => vi.useRealTimers());

  it("shows today's jobs of the caller by default, asking the server for that window and owner", async () => {
    const { io, out, err } = capture();
    expect(await runSacct(['-P', '-n', '-o', 'jobid,state'], io, env)).toBe(0);
    expect(err).toEqual([]);
    expect(out.join('')).toBe(
      '201|COMPLETED\n201.batch|COMPLETED\n202|CANCELLED by alice\n202.batch|CANCELLED\n203|PENDING\n',
    );
    expect(Object.fromEntries(new URL(api.requests[0] ?? '', 'http://x').searchParams)).toEqual({
      limit: '1000',
      owner: 'alice',
      active_since: '2026-12-06T00:00:00.000Z',
      active_until: '2026-12-06T12:00:00.000Z',
    });
  });

  it('has no time window with -j, shows a step alone for id.batch, and -X drops the steps', async () => {
    let { io, out } = capture();
    expect(await runSacct(['-j', '200,204.batch', '-P', '-n', '-o', 'jobid,user'], io, env)).toBe(0);
    expect(out.join('')).toBe('200|alice\n200.batch|\n204.batch|\n');
    ({ io, out } = capture());
    expect(await runSacct(['-aX', '-p', '-n', '--format=JobID'], io, env)).toBe(0);
    expect(out.join('')).toBe('201|\n202|\n203|\n204|\n');
  });

  it('selects by state during the window (-s), with -S and -E in Slurm forms', async () => {
    let { io, out } = capture();
    expect(await runSacct(['-a', '-s', 'R', '-X', '-P', '-n', '-o', 'jobid'], io, env)).toBe(0);
    expect(out.join('')).toBe('204\n');
    ({ io, out } = capture());
    expect(
      await runSacct(
        ['-a', '-s', 'CD,ca', '-S', '2026-12-01', '-E', 'now', '-X', '-P', '-n', '-ojobid'],
        io,
        env,
      ),
    ).toBe(0);
    expect(out.join('')).toBe('200\n201\n202\n');
    ({ io, out } = capture());
    expect(
      await runSacct(['-a', '-S', '2026-12-01T10:00', '-E', '2026-12-01T11:00', '-XPn', '-ojobid'], io, env),
    ).toBe(0);
    expect(out.join('')).toBe('200\n');
  });

  it('filters by name, partition, nodes, CPUs and time limit', async () => {
    const { io, out } = capture();
    expect(
      await runSacct(
        ['-a', '--name=train', '-r', 'batch', '-N', 'n[1-2]', '-I', '2-8', '-k', '90', '-XPn', '-ojobid'],
        io,
        env,
      ),
    ).toBe(0);
    expect(out.join('')).toBe('201\n');
  });

  it('prints the brief and the long formats, and refuses -o with -l', async () => {
    let { io, out, err } = capture();
    expect(await runSacct(['-b', '-j', '201'], io, env)).toBe(0);
    expect(out.join('')).toBe(
      [
        'JobID             State ExitCode ',
        '------------ ---------- -------- ',
        '201           COMPLETED      0:0 ',
        '201.batch     COMPLETED      0:0 ',
        '',
      ].join('\n'),
    );
    ({ io, out, err } = capture());
    expect(await runSacct(['-l', '-j', '201', '-P', '-n'], io, env)).toBe(0);
    expect(out.join('').split('\n')[1]?.split('|')).toHaveLength(54);
    ({ io, out, err } = capture());
    expect(await runSacct(['-l', '-o', 'jobid'], io, env)).toBe(1);
    expect(err.join('')).toBe(
      'sacct: fatal: Options -o(--format) and -l(--long) are mutually exclusive. Please remove one and retry.\n',
    );
  });

  it('clips times to the window with -T, and converts sizes with --units and --noconvert', async () => {
    let { io, out } = capture();
    const window = ['-S', '2026-12-06T10:30', '-E', '2026-12-06T11:00'];
    expect(await runSacct(['-j', '201', ...window, '-T', '-XPn', '-o', 'start,end,elapsed'], io, env)).toBe(
      0,
    );
    expect(out.join('')).toBe('2026-12-06T10:30:00|2026-12-06T11:00:00|00:30:00\n');
    ({ io, out } = capture());
    expect(await runSacct(['-j', '201', '--units=K', '-Pn', '-o', 'reqmem,maxrss'], io, env)).toBe(0);
    expect(out.join('')).toBe('4194304K|\n|51200K\n');
    ({ io, out } = capture());
    expect(await runSacct(['-j', '201', '--noconvert', '-Pn', '-o', 'reqmem,maxrss'], io, env)).toBe(0);
    expect(out.join('')).toBe('4096M|\n|51200K\n');
  });

  it('prints a job script with -B -j', async () => {
    const { io, out } = capture();
    expect(await runSacct(['-B', '-j', '201'], io, env)).toBe(0);
    expect(out.join('')).toBe(`Batch Script for 201\n${'-'.repeat(80)}\n#!/bin/sh\necho hi\n\n`);
  });

  it("refuses bad fields, times and states in Slurm's words, and refused options with the reason", async () => {
    let { io, err } = capture();
    expect(await runSacct(['-o', 'jobid,nosuch'], io, env)).toBe(1);
    expect(err.join('')).toBe('sacct: error: Invalid field requested: "nosuch"\n');
    ({ io, err } = capture());
    expect(await runSacct(['-S', 'someday'], io, env)).toBe(1);
    expect(err.join('')).toBe('Invalid time specification (pos=0): someday\n');
    ({ io, err } = capture());
    expect(await runSacct(['-s', 'XX'], io, env)).toBe(1);
    expect(err.join('')).toBe('sacct: error: Invalid state: XX\n');
    ({ io, err } = capture());
    expect(await runSacct(['-M', 'other'], io, env)).toBe(1);
    expect(err.join('')).toMatch(/^sacct: error: --clusters is not supported: one Conductor control plane/);
    ({ io, err } = capture());
    expect(await runSacct(['-S', '12:00', '-E', '11:00'], io, env)).toBe(1);
    expect(err.join('')).toBe(
      'sacct: error: Start time (2026-12-06T12:00:00) requested is after end time (2026-12-06T11:00:00).\n',
    );
    expect(api.requests).toEqual([]);
  });

  it('says an unreachable control plane is an unreachable database', async () => {
    const { io, err } = capture();
    expect(await runSacct([], io, { ...env, CONDUCTOR_URL: 'http://127.0.0.1:1' })).toBe(1);
    expect(err.join('')).toMatch(/^sacct: error: Problem talking to the database: cannot reach /);
  });

  it('says the time window with -v', async () => {
    const { io, err } = capture();
    expect(await runSacct(['-v', '-n'], io, env)).toBe(0);
    expect(err.join('')).toBe(
      'sacct: Jobs Eligible in the time window from Sun Dec 06 00:00:00 2026 to Sun Dec 06 12:00:00 2026\n',
    );
  });

  it('warns for ignored options and still answers', async () => {
    const { io, out, err } = capture();
    expect(await runSacct(['--local', '-j', '201', '-X', '-Pn', '-ojobid'], io, env)).toBe(0);
    expect(err.join('')).toMatch(/^sacct: warning: --local is ignored: /);
    expect(out.join('')).toBe('201\n');
  });
});

describe('sacct --duplicates: the earlier runs of a requeued job', () => {
  const attempts = [
    {
      attempt: 1,
      node: 'n1',
      start_time: '2026-12-06T10:00:05Z',
      end_time: '2026-12-06T10:10:00Z',
      state: 'NODE_FAIL',
      exit_code: null,
      reason: 'node lost: its heartbeat lapsed',
      requeued: true,
    },
    {
      attempt: 2,
      node: 'n2',
      start_time: '2026-12-06T10:10:30Z',
      end_time: '2026-12-06T10:20:00Z',
      state: 'FAILED',
      exit_code: '3:0',
      reason: 'NonZeroExitCode',
      requeued: true,
      cpus: 8,
      partition: 'gpu',
      max_rss_kb: 2048,
    },
    {
      attempt: 3,
      node: 'n3',
      start_time: '2026-12-06T10:21:00Z',
      end_time: '2026-12-06T11:00:00Z',
      state: 'COMPLETED',
      exit_code: '0:0',
      reason: null,
      requeued: false,
    },
  ];
  const REQUEUED = job({
    id: 301,
    node: 'n3',
    start_time: '2026-12-06T10:21:00Z',
    end_time: '2026-12-06T11:00:00Z',
    requeues: 2,
    attempt: 3,
  });
  let api: ReturnType<typeof stubApi>;
  let env: NodeJS.ProcessEnv;
  beforeAll(async () => {
    api = stubApi([{ ...REQUEUED, attempts } as SlurmJob, job({ id: 302 })]);
    env = {
      CONDUCTOR_URL: await api.start(),
      CONDUCTOR_TOKEN: 't',
      CONDUCTOR_CONFIG: '/x',
      CONDUCTOR_OWNER: 'alice',
    };
  });
  afterAll(() => api.stop());
  beforeEach(() => {
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(NOW);
    api.requests.length = 0;
  });
  afterEach(() => vi.useRealTimers());

  it('-D shows each earlier run (node, start, end, state, exit code) before the job line; without it, the last run only', async () => {
    let { io, out, err } = capture();
    const format = '-ojobid,nodelist,start,end,state,exitcode';
    expect(await runSacct(['-D', '-j', '301,302', '-P', '-n', format], io, env)).toBe(0);
    expect(err).toEqual([]);
    expect(out.join('')).toBe(
      [
        '301|n1|2026-12-06T10:00:05|2026-12-06T10:10:00|NODE_FAIL|0:0',
        '301.batch|n1|2026-12-06T10:00:05|2026-12-06T10:10:00|NODE_FAIL|0:0',
        '301|n2|2026-12-06T10:10:30|2026-12-06T10:20:00|FAILED|3:0',
        '301.batch|n2|2026-12-06T10:10:30|2026-12-06T10:20:00|FAILED|3:0',
        '301|n3|2026-12-06T10:21:00|2026-12-06T11:00:00|COMPLETED|0:0',
        '301.batch|n3|2026-12-06T10:21:00|2026-12-06T11:00:00|COMPLETED|0:0',
        '302|n1|2026-12-06T10:00:05|2026-12-06T11:02:10|COMPLETED|0:0',
        '302.batch|n1|2026-12-06T10:00:05|2026-12-06T11:02:10|COMPLETED|0:0',
        '',
      ].join('\n'),
    );
    // Only the requeued job's attempts were asked for.
    expect(api.requests.filter((r) => r.startsWith('/api/v1/jobs/'))).toEqual(['/api/v1/jobs/301']);
    ({ io, out, err } = capture());
    expect(await runSacct(['-j', '301', '-X', '-P', '-n', format], io, env)).toBe(0);
    expect(out.join('')).toBe('301|n3|2026-12-06T10:21:00|2026-12-06T11:00:00|COMPLETED|0:0\n');
  });

  it('-D: each earlier run with the CPUs it held, its partition and MaxRSS (the job’s where the attempt kept none)', async () => {
    const { io, out, err } = capture();
    expect(
      await runSacct(['-D', '-j', '301', '-P', '-n', '-ojobid,alloccpus,partition,maxrss'], io, env),
    ).toBe(0);
    expect(err).toEqual([]);
    const lines = out.join('').split('\n');
    expect(lines.slice(0, 4)).toEqual(['301|4|batch|', '301.batch|4||', '301|8|gpu|', '301.batch|8||2M']);
  });
});
