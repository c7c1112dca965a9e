import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseSlurmTime, runSreport, usageText } from '../../cli/slurm/sreport.ts';
import { captureIo, stubServer } from './slurm-stub.ts';

const D = '2026-03-10T00:00:00.000Z';
const D1 = '2026-03-11T00:00:00.000Z';
const UTILIZATION = {
  cluster: 'lab',
  report: 'cluster-utilization',
  start: D,
  end: D1,
  reported_cpu_seconds: 864000,
  rows: [
    {
      allocated: 37800,
      down: 0,
      planned_down: 0,
      idle: 826200,
      planned: 0,
      reported: 864000,
      gpu_seconds: 0,
      jobs: 2,
      attempts: 2,
    },
  ],
};
const USERS = {
  ...UTILIZATION,
  report: 'user-topusage',
  rows: [
    {
      user: 'ana',
      account: 'physics',
      cpu_seconds: 28800,
      gpu_seconds: 0,
      mem_mb_seconds: 0,
      wall_seconds: 7200,
      jobs: 1,
    },
    {
      user: 'bo',
      account: 'chem',
      cpu_seconds: 7200,
      gpu_seconds: 0,
      mem_mb_seconds: 0,
      wall_seconds: 3600,
      jobs: 0,
    },
  ],
};

let server: Awaited<ReturnType<typeof stubServer>>;
let env: NodeJS.ProcessEnv;

beforeAll(async () => {
  process.env.TZ = 'UTC';
  server = await stubServer({
    'GET /api/v1/usage/report': (req, res) => {
      const report = new URL(req.url, 'http://x').searchParams.get('report');
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify(report === 'cluster-utilization' ? UTILIZATION : USERS));
    },
  });
  env = { CONDUCTOR_URL: server.url, CONDUCTOR_TOKEN: 'reader', HOME: '/nonexistent' };
});
afterAll(() => server.close());

async function sreport(args: string[]) {
  const io = captureIo();
  const code = await runSreport(args, io, env);
  return {
    code,
    stdout: io.stdout,
    stderr: io.stderr,
    query: new URL(server.requests.at(-1)?.url ?? '/', 'http://x').searchParams,
  };
}

describe('sreport', () => {
  it('cluster utilization: the banner with the period and unit, then the columns, in CPU minutes', async () => {
    const r = await sreport(['cluster', 'utilization', 'start=2026-03-10', 'end=2026-03-11']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(Object.fromEntries(r.query)).toEqual({ report: 'cluster-utilization', start: D, end: D1 });
    expect(r.stdout).toBe(
      [
        '-'.repeat(80),
        'Cluster Utilization 2026-03-10T00:00:00 - 2026-03-10T23:59:59',
        'Usage reported in CPU Minutes',
        '-'.repeat(80),
        '  Cluster     Allocated       Down PLND Down          Idle   Planned      Reported ',
        '--------- ------------- ---------- --------- ------------- --------- ------------- ',
        '      lab           630          0         0         13770         0         14400 ',
        '',
      ].join('\n'),
    );
  });

  it('-P -n: parsable, no banner and no header; -p ends each line with |; -t takes abbreviated units', async () => {
    expect(
      (await sreport(['-P', '-n', 'cluster', 'Util', 'start=2026-03-10', 'end=2026-03-11'])).stdout,
    ).toBe('lab|630|0|0|13770|0|14400\n');
    expect(
      (await sreport(['--parsable2', '--noheader', '-t', 'hours', 'cluster', 'utilization'])).stdout,
    ).toBe('lab|10|0|0|229|0|240\n');
    expect((await sreport(['-p', '-n', '-t', 'percent', 'cluster', 'utilization'])).stdout).toBe(
      'lab|4.38%|0.00%|0.00%|95.63%|0.00%|100.00%|\n',
    );
  });

  it('user topusage: Slurm’s columns, most used first, with options passed on', async () => {
    const r = await sreport([
      '-P',
      'user',
      'top',
      'start=03/10/26',
      'end=03/11/26',
      'TopCount=2',
      'accounts=physics,chem',
      'group',
    ]);
    expect(Object.fromEntries(r.query)).toEqual({
      report: 'user-topusage',
      start: D,
      end: D1,
      top: '2',
      accounts: 'physics,chem',
      group: 'true',
    });
    expect(r.stdout).toBe(
      [
        '-'.repeat(80),
        'Top 2 Users 2026-03-10T00:00:00 - 2026-03-10T23:59:59 (86400 secs)',
        'Usage reported in CPU Minutes',
        '-'.repeat(80),
        'Cluster|Login|Proper Name|Account|Used|Energy',
        'lab|ana|ana|physics|480|0',
        'lab|bo|bo|chem|120|0',
        '',
      ].join('\n'),
    );
    expect((await sreport(['-P', '-n', '-t', 'MinPer', 'account', 'topusage'])).query.get('report')).toBe(
      'account-topusage',
    );
  });

  it('defaults to yesterday, as sreport does', async () => {
    const r = await sreport(['-n', 'user', 'topusage']);
    const today = new Date();
    today.setHours(0, 0, 0, 0);
    expect(r.query.get('end')).toBe(today.toISOString());
    expect(Date.parse(r.query.get('start') ?? '')).toBe(today.getTime() - 86_400_000);
  });

  it.each([
    [['bogus', 'x'], /Not valid report bogus/],
    [['cluster', 'nothing'], /Not valid report nothing for cluster/],
    [['cluster', 'AccountUtilizationByUser'], /not available on Conductor/],
    [['user', 'top', 'start=soon'], /Invalid time specification \(pos=0\): soon/],
    [['user', 'top', 'colour=red'], /Unknown condition: colour=red/],
    [['-t', 'fortnights', 'user', 'top'], /unknown time format fortnights/],
    [['-T', 'gres/gpu', 'user', 'top'], /tres/],
  ])('refuses %j with Slurm’s wording and exit 1', async (args, message) => {
    const before = server.requests.length;
    const r = await sreport(args);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(message);
    expect(server.requests.length).toBe(before);
  });

  it('reads Slurm’s time forms in local time', () => {
    const now = new Date('2026-03-10T15:30:00Z');
    expect(parseSlurmTime('2026-03-09T08:00', now)?.toISOString()).toBe('2026-03-09T08:00:00.000Z');
    expect(parseSlurmTime('03/09-08:00:30', now)?.toISOString()).toBe('2026-03-09T08:00:30.000Z');
    expect(parseSlurmTime('030926', now)?.toISOString()).toBe('2026-03-09T00:00:00.000Z');
    expect(parseSlurmTime('08:00', now)?.toISOString()).toBe('2026-03-10T08:00:00.000Z');
    expect(parseSlurmTime('now-2days', now)?.toISOString()).toBe('2026-03-08T15:30:00.000Z');
    expect(parseSlurmTime('now+90', now)?.toISOString()).toBe('2026-03-10T15:31:30.000Z');
    expect(parseSlurmTime('yesterday', now)?.toISOString()).toBe('2026-03-09T00:00:00.000Z');
    expect(parseSlurmTime('13/45', now)).toBeUndefined();
    expect(usageText(5400, 86400, 'HourPer')).toBe('1(6.25%)');
  });
});
