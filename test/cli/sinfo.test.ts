import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fatesOf, getoptLong } from '../../cli/slurm/getopt.ts';
import { runSinfo, SINFO_OPTIONS } from '../../cli/slurm/sinfo.ts';
import {
  CLUSTER_ROUTES,
  captureIo,
  manPageOptions,
  optionWord,
  PARTITIONS,
  stubServer,
  tableOptions,
  WORKERS,
} from './slurm-stub.ts';

let server: Awaited<ReturnType<typeof stubServer>>;
let env: NodeJS.ProcessEnv;

beforeAll(async () => {
  process.env.TZ = 'UTC';
  server = await stubServer(CLUSTER_ROUTES);
  env = { CONDUCTOR_URL: server.url, CONDUCTOR_TOKEN: 'admin-token', HOME: '/nonexistent' };
});
afterAll(() => server.close());

async function sinfo(args: string[], environment = env) {
  const io = captureIo();
  const code = await runSinfo(args, io, environment);
  return { code, stdout: io.stdout, stderr: io.stderr };
}

describe('sinfo views', () => {
  it('prints a line per partition and node state, the default partition marked *, nodes as hostlists', async () => {
    const { code, stdout, stderr } = await sinfo([]);
    expect(stderr).toBe('');
    expect(code).toBe(0);
    expect(stdout).toBe(
      [
        'PARTITION AVAIL  TIMELIMIT  NODES  STATE NODELIST',
        'batch*       up   infinite      1    mix node02',
        'batch*       up   infinite      1  alloc node01',
        'batch*       up   infinite      1  drain node03',
        'gpu          up    2:00:00      1   idle gpu01',
        'gpu          up    2:00:00      1  down* gpu02',
        '',
      ].join('\n'),
    );
    expect(server.requests.at(-1)?.authorization).toBe('Bearer admin-token');
  });

  it('-o %P: one entry per partition, the default with * (what snakemake reads)', async () => {
    expect((await sinfo(['-o', '%P'])).stdout).toBe('PARTITION\nbatch*\ngpu\n');
    expect((await sinfo(['--format=%R', '--noheader'])).stdout).toBe('batch\ngpu\n');
    expect((await sinfo(['-h', '-o', '%R 100%% %D', '-p', 'gpu'])).stdout).toBe('gpu 100% 2\n');
  });

  it('groups nodes of the same state and compresses them', async () => {
    const idle = { ...WORKERS[1], worker_id: 'node04', allocated_cpus: 0 };
    const stub = await stubServer({
      'GET /api/v1/partitions': {
        body: { partitions: [{ ...PARTITIONS[0], live_nodes: ['node01', 'node04', 'node05'] }] },
      },
      'GET /api/v1/workers?all=true': {
        body: { workers: [WORKERS[0], idle, { ...idle, worker_id: 'node05' }] },
      },
    });
    const { stdout } = await sinfo(['-h'], { ...env, CONDUCTOR_URL: stub.url });
    await stub.close();
    expect(stdout).toBe(
      'batch*       up   infinite      1  alloc node01\nbatch*       up   infinite      2   idle node[04-05]\n',
    );
  });

  it('a partition without nodes has its line (0 nodes, state n/a)', async () => {
    const stub = await stubServer({
      'GET /api/v1/partitions': {
        body: {
          partitions: [
            ...PARTITIONS,
            { ...PARTITIONS[1], name: 'empty', state: 'DOWN', live_nodes: [], nodes: null },
          ],
        },
      },
      'GET /api/v1/workers?all=true': { body: { workers: WORKERS } },
    });
    const { stdout } = await sinfo(['-h', '-p', 'empty'], { ...env, CONDUCTOR_URL: stub.url });
    const nodes = await sinfo(['-h', '-N', '-p', 'empty'], { ...env, CONDUCTOR_URL: stub.url });
    await stub.close();
    expect(stdout).toBe('empty      down    2:00:00      0    n/a \n');
    expect(nodes.stdout).toBe('');
  });

  it('-s summarizes each partition as NODES(A/I/O/T)', async () => {
    expect((await sinfo(['-s'])).stdout).toBe(
      [
        'PARTITION AVAIL  TIMELIMIT   NODES(A/I/O/T)  NODELIST',
        'batch*       up   infinite          2/0/1/3  node[01-03]',
        'gpu          up    2:00:00          0/1/1/2  gpu[01-02]',
        '',
      ].join('\n'),
    );
  });

  it('-N prints a line per node', async () => {
    expect((await sinfo(['-N'])).stdout).toBe(
      [
        'NODELIST   NODES PARTITION STATE ',
        'gpu01          1 gpu       idle  ',
        'gpu02          1 gpu       down* ',
        'node01         1 batch*    alloc ',
        'node02         1 batch*    mix   ',
        'node03         1 batch*    drain ',
        '',
      ].join('\n'),
    );
  });

  it('-R lists the unavailable nodes with why', async () => {
    expect((await sinfo(['-R'])).stdout).toBe(
      [
        'REASON               USER      TIMESTAMP           NODELIST',
        'none                 Unknown   Unknown             node03',
        'Not responding       root      2026-12-06T09:00:00 gpu02',
        '',
      ].join('\n'),
    );
  });

  it('-l prints the long states', async () => {
    const { stdout } = await sinfo(['-l', '-p', 'batch']);
    expect(stdout.split('\n')[0]).toBe(
      'PARTITION AVAIL  TIMELIMIT   JOB_SIZE ROOT OVERSUBS     GROUPS  NODES       STATE NODELIST',
    );
    expect(stdout).toContain('      1   allocated node01');
    expect(stdout).toContain('      1     drained node03');
  });

  it('-o takes widths, right alignment, CPUs by state, GRES, features and memory', async () => {
    const { stdout } = await sinfo(['-o', '%10P|%.5D|%C|%G|%f|%m|%c', '-p', 'gpu', '-t', 'idle']);
    expect(stdout).toBe(
      'PARTITION |NODES|CPUS(A/I/O/T)|GRES|AVAIL_FEATURES|MEMORY|CPUS\ngpu       |    1|0/16/0/16|gpu:a100:2|a100,nvme|32000|16\n',
    );
  });

  it('-O names fields, 20 wide unless told', async () => {
    const { stdout } = await sinfo(['-O', 'Partition:8,NodeList:12,StateLong', '-p', 'batch']);
    expect(stdout.split('\n').slice(0, 2)).toEqual([
      `PARTITIONODELIST    ${'STATE'.padEnd(20)}`,
      `batch*  node02      ${'mixed'.padEnd(20)}`,
    ]);
  });

  it('-t, -n, -r and -d filter nodes; partitions left without any are not printed', async () => {
    expect((await sinfo(['-h', '-t', 'drain,down'])).stdout).toBe(
      'batch*       up   infinite      1  drain node03\ngpu          up    2:00:00      1  down* gpu02\n',
    );
    expect((await sinfo(['-h', '-n', 'node[02-03]', '-o', '%N'])).stdout).toBe('node[02-03]\n');
    expect((await sinfo(['-h', '-d', '-o', '%N %t'])).stdout).toBe('gpu02 down*\n');
    expect((await sinfo(['-h', '-r', '-o', '%N'])).stdout).toBe('gpu01,node[01-03]\n');
    const bad = await sinfo(['-t', 'sleepy']);
    expect(bad).toMatchObject({ code: 1, stderr: 'sinfo: error: Invalid node state specified: sleepy\n' });
  });

  it('without an admin token, the live workers come from the dashboard', async () => {
    const stub = await stubServer({
      'GET /api/v1/partitions': { body: { partitions: PARTITIONS } },
      'GET /api/v1/workers': { status: 403, body: { error: { code: 'forbidden', message: 'admin only' } } },
      'GET /api/v1/dashboard': {
        body: {
          workers: [
            { ...WORKERS[3], partitions: ['gpu'] },
            { ...WORKERS[1], partitions: ['batch'] },
          ],
        },
      },
    });
    const { code, stdout } = await sinfo(['-o', '%P %t %N'], { ...env, CONDUCTOR_URL: stub.url });
    await stub.close();
    expect(code).toBe(0);
    expect(stdout).toBe('PARTITION STATE NODELIST\nbatch* mix node02\ngpu idle gpu01\n');
  });

  it("reports errors as Slurm's sinfo does, never a stack trace", async () => {
    expect(await sinfo(['-o', '%Q'])).toMatchObject({
      code: 1,
      stderr: 'sinfo: error: Invalid node format specification: Q\n',
    });
    const down = await sinfo([], { ...env, CONDUCTOR_URL: 'http://127.0.0.1:9' });
    expect(down.code).toBe(1);
    expect(down.stderr).toMatch(/^sinfo: error: cannot reach http:\/\/127\.0\.0\.1:9: .*\n$/);
    expect(await sinfo(['--bogus'])).toMatchObject({
      code: 1,
      stderr: `sinfo: unrecognized option '--bogus'\nTry "sinfo --help" for more information\n`,
    });
    expect((await sinfo(['-V'])).stdout).toBe('slurm 22.05.0\n');
  });
});

describe('sinfo options', () => {
  it("cover exactly the options of Slurm 22.05's sinfo(1)", () => {
    expect(tableOptions(SINFO_OPTIONS)).toEqual(manPageOptions('sinfo'));
  });

  it('warn for the warned ones and refuse the refused ones, with the reason', async () => {
    for (const spec of SINFO_OPTIONS.filter((s) => s.fate !== 'honoured')) {
      const { options } = getoptLong([optionWord(spec)], SINFO_OPTIONS);
      const fates = fatesOf(options);
      if (spec.fate === 'warned') {
        expect(fates.warnings[0]?.message).toBe(`--${spec.long} is ignored: ${spec.note}`);
        const { code, stderr } = await sinfo([optionWord(spec), '-h', '-o', '%P']);
        expect(code).toBe(0);
        expect(stderr).toBe(`sinfo: warning: --${spec.long} is ignored: ${spec.note}\n`);
      } else {
        const { code, stderr, stdout } = await sinfo([optionWord(spec)]);
        expect(code).toBe(1);
        expect(stdout).toBe('');
        expect(stderr).toBe(`sinfo: error: --${spec.long} is not supported: ${spec.note}\n`);
      }
    }
  });
});
