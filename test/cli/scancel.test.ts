/**
 * scancel's drop-in against a stub API that records what it was asked: ids and filters, signals, Slurm's
 * errors and exit codes; and its option table against the 22.05 man page.
 */
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { runScancel, SCANCEL_OPTIONS, signalName } from '../../cli/slurm/scancel.ts';
import type { SlurmJob } from '../../cli/slurm/squeue.ts';

function job(fields: Partial<SlurmJob> & { id: number }): SlurmJob {
  return {
    name: 'train',
    state: 'RUNNING',
    cpus: 1,
    exit_code: null,
    node: 'n1',
    owner: 'alice',
    account: 'ml',
    partition: 'batch',
    time_limit: null,
    reason: null,
    submit_time: '2026-12-06T10:00:00Z',
    start_time: '2026-12-06T10:00:01Z',
    end_time: null,
    ...fields,
  };
}

const JOBS = [
  job({ id: 301 }),
  job({ id: 302, state: 'PENDING', node: null, start_time: null, name: 'prep', owner: 'bob' }),
  job({ id: 303, partition: 'debug', node: 'n2' }),
  job({ id: 304, state: 'COMPLETED', end_time: '2026-12-06T11:00:00Z' }),
];

interface Recorded {
  method: string;
  url: string;
  body: string;
}

function stubApi() {
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
      if (url.pathname === '/api/v1/jobs') {
        const states = url.searchParams.get('state')?.split(',');
        return send(200, {
          jobs: JOBS.filter((j) => !states || states.includes(j.state)),
          next_before: null,
        });
      }
      const single = JOBS.find((j) => url.pathname === `/api/v1/jobs/${j.id}`);
      if (single) return send(200, single);
      if (/^\/api\/v1\/arrays\/12\/cancel$/.test(url.pathname)) return send(200, { affected: 1 });
      const m = /^\/api\/v1\/jobs\/(\d+)\/(cancel|signal)$/.exec(url.pathname);
      const found = JOBS.find((j) => j.id === Number(m?.[1]));
      if (!m || !found) return send(404, { error: { code: 'job_not_found', message: 'no such job' } });
      if (found.state === 'COMPLETED')
        return send(409, { error: { code: 'job_finished', message: 'ended' } });
      if (m[2] === 'signal' && found.state !== 'RUNNING') {
        return send(409, { error: { code: 'job_not_running', message: 'not running' } });
      }
      send(200, found);
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

describe('scancel', () => {
  let api: ReturnType<typeof stubApi>;
  let env: NodeJS.ProcessEnv;
  beforeAll(async () => {
    api = stubApi();
    env = {
      CONDUCTOR_URL: await api.start(),
      CONDUCTOR_TOKEN: 't',
      CONDUCTOR_CONFIG: '/x',
      CONDUCTOR_OWNER: 'alice',
    };
  });
  afterAll(() => api.stop());
  beforeEach(() => {
    api.requests.length = 0;
  });
  const calls = () => api.requests.map((r) => `${r.method} ${r.url}${r.body ? ` ${r.body}` : ''}`);

  it('cancels the jobs given by id (also comma separated), silently, exit 0', async () => {
    const { io, out, err } = capture();
    expect(await runScancel(['301,303', '302'], io, env)).toBe(0);
    expect([out, err]).toEqual([[], []]);
    expect(calls()).toEqual([
      'POST /api/v1/jobs/301/cancel',
      'POST /api/v1/jobs/303/cancel',
      'POST /api/v1/jobs/302/cancel',
    ]);
  });

  it("says Slurm's error for an unknown or finished job and exits 1; -Q keeps quiet and exits 0", async () => {
    let { io, err } = capture();
    expect(await runScancel(['999', '304', '301'], io, env)).toBe(1);
    expect(err.join('')).toBe(
      'scancel: error: Kill job error on job id 999: Invalid job id specified\n' +
        'scancel: error: Kill job error on job id 304: Job/step already completing or completed\n',
    );
    expect(calls()).toHaveLength(3);
    ({ io, err } = capture());
    expect(await runScancel(['-Q', '999', '304'], io, env)).toBe(0);
    expect(err).toEqual([]);
  });

  it('cancels the active jobs the filters select (AND-ed), and with ids only those among them', async () => {
    let { io, err } = capture();
    expect(await runScancel(['-v', '--partition=batch', '-u', 'alice', '-t', 'r'], io, env)).toBe(0);
    expect(err.join('')).toBe('scancel: Terminating job 301\n');
    expect(calls()).toEqual([
      'GET /api/v1/jobs?limit=1000&state=RUNNING&owner=alice&partition=batch',
      'POST /api/v1/jobs/301/cancel',
    ]);
    api.requests.length = 0;
    ({ io, err } = capture());
    expect(await runScancel(['--me', '-w', 'n[2-3]', '303', '301'], io, env)).toBe(0);
    expect(calls()).toEqual([
      'GET /api/v1/jobs?limit=1000&state=PENDING%2CRUNNING&ids=303%2C301&owner=alice',
      'POST /api/v1/jobs/303/cancel',
    ]);
    api.requests.length = 0;
    expect(await runScancel(['--name=prep', '-A', 'ml'], io, env)).toBe(0);
    expect(calls().at(-1)).toBe('POST /api/v1/jobs/302/cancel');
  });

  it('signals running jobs: the whole job by default, the batch shell with -b, pending ones refused', async () => {
    const { io, err } = capture();
    expect(await runScancel(['-s', 'usr1', '301'], io, env)).toBe(0);
    expect(await runScancel(['--signal=SIGTERM', '-b', '303'], io, env)).toBe(0);
    expect(await runScancel(['-s', '10', '-b', '-f', '301'], io, env)).toBe(0);
    expect(await runScancel(['-s', 'HUP', '302'], io, env)).toBe(1);
    expect(calls()).toEqual([
      'POST /api/v1/jobs/301/signal {"signal":"USR1","batch_only":false}',
      'POST /api/v1/jobs/303/signal {"signal":"TERM","batch_only":true}',
      'POST /api/v1/jobs/301/signal {"signal":"USR1","batch_only":false}',
      'POST /api/v1/jobs/302/signal {"signal":"HUP","batch_only":false}',
    ]);
    expect(err.join('')).toBe('scancel: error: Kill job error on job id 302: Job is pending execution\n');
  });

  it('cancels array tasks by Slurm id (12_3, 12_[1-2,5]) through the array route, with their task list', async () => {
    const { io, err } = capture();
    expect(await runScancel(['12_3', '12_[1-2,5]'], io, env)).toBe(0);
    expect(err.join('')).toBe('');
    expect(calls()).toEqual([
      'POST /api/v1/arrays/12/cancel?tasks=3',
      'POST /api/v1/arrays/12/cancel?tasks=1-2%2C5',
    ]);
  });

  it('refuses bad ids, bad signals and states, and no job at all, before asking anything', async () => {
    const cases: [string[], string][] = [
      [['12_x'], 'scancel: error: Invalid job id 12_x\n'],
      [
        ['-s', 'USR1', '12_3'],
        'scancel: error: array task ids (123_4, 123_[1-3]) are cancelled as they are: no filters, no --signal\n',
      ],
      [['abc'], 'scancel: error: Invalid job id abc\n'],
      [['-s', 'NOPE', '1'], 'Unknown job signal: NOPE\n'],
      [
        ['-t', 'DONE'],
        'Invalid job state specified: DONE\nValid job states are PENDING, RUNNING, and SUSPENDED\n',
      ],
      [[], 'scancel: error: No job identification provided\n'],
    ];
    for (const [args, message] of cases) {
      const { io, err } = capture();
      expect(await runScancel(args, io, env)).toBe(1);
      expect(err.join('')).toBe(message);
    }
    expect(calls()).toEqual([]);
  });

  it('warns for ignored options and refuses the impossible ones with the reason', async () => {
    let { io, err } = capture();
    expect(await runScancel(['-H', '301'], io, env)).toBe(0);
    expect(err.join('')).toBe(
      'scancel: warning: --hurry is ignored: Conductor has no burst buffers to stage out\n',
    );
    ({ io, err } = capture());
    expect(await runScancel(['--reservation=r', '301'], io, env)).toBe(1);
    expect(err.join('')).toBe(
      'scancel: error: --reservation is not supported: cancelling by reservation is not supported yet (cancel the jobs by id)\n',
    );
  });

  it('takes SCANCEL_* variables for options the command line does not give', async () => {
    const { io } = capture();
    expect(await runScancel(['--me'], io, { ...env, SCANCEL_PARTITION: 'debug', SCANCEL_BATCH: 'F' })).toBe(
      0,
    );
    expect(
      await runScancel(['--me', '-p', 'batch', '-t', 'R'], io, { ...env, SCANCEL_PARTITION: 'debug' }),
    ).toBe(0);
    expect(calls().filter((c) => c.startsWith('POST'))).toEqual([
      'POST /api/v1/jobs/303/cancel',
      'POST /api/v1/jobs/301/cancel',
    ]);
  });

  it('says an unreachable control plane is an unreachable slurmctld', async () => {
    const { io, err } = capture();
    expect(await runScancel(['301'], io, { ...env, CONDUCTOR_URL: 'http://127.0.0.1:1' })).toBe(1);
    expect(err.join('')).toMatch(
      /^scancel: error: Kill job error on job id 301: Unable to contact slurm controller \(connect failure\): cannot reach http:\/\/127\.0\.0\.1:1/,
    );
  });

  it('asks for each job with -i and cancels those answered yes', async () => {
    const stdin = Object.getOwnPropertyDescriptor(process, 'stdin') as PropertyDescriptor;
    Object.defineProperty(process, 'stdin', { value: Readable.from(['maybe\ny\nn\n']), configurable: true });
    try {
      const { io, out } = capture();
      expect(await runScancel(['-i', '301', '303'], io, env)).toBe(0);
      expect(out.join('')).toBe(
        'Cancel job_id=301 name=train partition=batch [y/n]? '.repeat(2) +
          'Cancel job_id=303 name=train partition=debug [y/n]? ',
      );
      expect(calls()).toEqual([
        'GET /api/v1/jobs/301',
        'POST /api/v1/jobs/301/cancel',
        'GET /api/v1/jobs/303',
      ]);
    } finally {
      Object.defineProperty(process, 'stdin', stdin);
    }
  });

  it('knows signals by name or number', () => {
    expect(signalName('SIGUSR2')).toBe('USR2');
    expect(signalName('9')).toBe('KILL');
    expect(signalName('40')).toBe('40');
    expect(signalName('65')).toBeNull();
    expect(signalName('bogus')).toBeNull();
  });
});

describe('scancel options', () => {
  it('covers exactly the options of the 22.05 man page', () => {
    const fixture = readFileSync(
      new URL('../fixtures/slurm-22.05/scancel-options.txt', import.meta.url),
      'utf8',
    )
      .trim()
      .split('\n');
    const table = SCANCEL_OPTIONS.map((s) => `${s.short ? `-${s.short}, ` : ''}--${s.long}`);
    expect([...table].sort()).toEqual([...fixture].sort());
  });
});
