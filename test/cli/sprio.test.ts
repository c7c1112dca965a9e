/**
 * The drop-in sprio over a stub control plane: Slurm 22.05's options, its columns weighted and normalized,
 * the weights line, sorting and filters as query parameters.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../../cli/main.ts';
import { runSprio, SPRIO_OPTIONS } from '../../cli/slurm/sprio.ts';
import { captureIo, manPageOptions, stubServer, tableOptions } from './slurm-stub.ts';

const WEIGHTS = { age: 1000, fairshare: 10_000, jobsize: 0, partition: 1000, qos: 0 };
const job = (id: number, user: string, fairshare: number, age: number, nice = 0) => {
  const factors = { age, fairshare, jobsize: 0, partition: 1, qos: 0 };
  const weighted = { age: age * 1000, fairshare: fairshare * 10_000, jobsize: 0, partition: 1000, qos: 0 };
  return {
    job_id: id,
    partition: 'batch',
    user,
    account: user,
    priority: Math.round(weighted.age + weighted.fairshare + 1000) - nice,
    nice,
    factors,
    weighted,
  };
};
const JOBS = [job(12, 'heavy', 0.25, 0.5), job(13, 'light', 1, 0.002, -5), job(11, 'heavy', 0.25, 0.75)];

let server: Awaited<ReturnType<typeof stubServer>>;
let env: NodeJS.ProcessEnv;

beforeAll(async () => {
  server = await stubServer({
    'GET /api/v1/jobs/priority': { body: { weights: WEIGHTS, jobs: JOBS } },
    'GET /api/v1/jobs/priority?ids=13': { body: { weights: WEIGHTS, jobs: [JOBS[1]] } },
  });
  env = { CONDUCTOR_URL: server.url, CONDUCTOR_TOKEN: 'admin-token', HOME: '/nonexistent' };
});
afterAll(() => server.close());

async function sprio(args: string[]) {
  const io = captureIo();
  const code = await runSprio(args, io, env);
  return { code, stdout: io.stdout, stderr: io.stderr };
}

describe('sprio', () => {
  it('covers exactly the options of the 22.05 man page', () => {
    expect(tableOptions(SPRIO_OPTIONS)).toEqual(manPageOptions('sprio'));
  });

  it("prints Slurm's default columns, weighted, by job id", async () => {
    const { code, stdout, stderr } = await sprio([]);
    expect(stderr).toBe('');
    expect(code).toBe(0);
    expect(stdout).toBe(
      [
        '          JOBID PARTITION   PRIORITY       SITE        AGE  FAIRSHARE    JOBSIZE  PARTITION        QOS',
        '             11 batch           4250          0        750       2500          0       1000          0',
        '             12 batch           4000          0        500       2500          0       1000          0',
        '             13 batch          11007          0          2      10000          0       1000          0',
        '',
      ].join('\n'),
    );
  });

  it('-l adds USER and NICE; -n prints the factors from 0 to 1; -h drops the header', async () => {
    const long = await sprio(['-l', '-h', '-S', '-y']);
    expect(long.stdout.split('\n')[0]).toBe(
      '             13 batch        light      11007          0          2      10000          0       1000          0          -5',
    );
    const norm = await sprio(['-n', '-h', '-j13']);
    expect(norm.stdout.trim().split(/\s+/)).toEqual([
      '13',
      'batch',
      '0.00000256',
      '0',
      '0.0020000',
      '1.0000000',
      '0.0000000',
      '1.0000000',
      '0.0000000',
    ]);
    expect(server.requests.at(-1)?.url).toBe('/api/v1/jobs/priority?ids=13');
  });

  it('-w prints the weights instead of jobs; -o picks columns; -u and -p filter on the server', async () => {
    const w = await sprio(['-w']);
    expect(w.stdout).toBe(
      [
        '          JOBID PARTITION   PRIORITY       SITE        AGE  FAIRSHARE    JOBSIZE  PARTITION        QOS',
        '        Weights                               0       1000      10000          0       1000          0',
        '',
      ].join('\n'),
    );
    const o = await sprio(['-o', '%i|%u|%Y|%F', '-h', '-u', 'light,heavy', '-p', 'batch']);
    expect(o.stdout.split('\n')[0]).toBe('11|heavy|4250|2500');
    expect(server.requests.at(-1)?.url).toBe('/api/v1/jobs/priority?owner=light%2Cheavy&partition=batch');
  });

  it('runs as conductor sprio, --url before the command included', async () => {
    const io = captureIo();
    const code = await main(['--url', server.url, 'sprio', '-w', '-h'], { HOME: '/nonexistent' }, io);
    expect(io.stderr).toBe('');
    expect(code).toBe(0);
    expect(io.stdout.trim().split(/\s+/)).toEqual(['Weights', '0', '1000', '10000', '0', '1000', '0']);
  });

  it("refuses what Slurm's sprio refuses, as it does", async () => {
    const bad = await sprio(['-o', '%Z']);
    expect(bad).toMatchObject({
      code: 1,
      stdout: '',
      stderr: 'sprio: error: Invalid job format specification: Z\n',
    });
    const cluster = await sprio(['-M', 'other']);
    expect(cluster.code).toBe(1);
    expect(cluster.stderr).toContain('--clusters');
  });
});
