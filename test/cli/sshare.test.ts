/**
 * The sshare drop-in (`conductor sshare`, `conductor slurm sshare`) against a real control plane: the account
 * tree from root with shares configured through the API and usage rolled up for two users, in Slurm 22.05's
 * classic columns, the options that pick rows (-a, -A, -u, -U) and columns (-l, -m, -o), and -n, -p, -P.
 */
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../../cli/main.ts';
import { SSHARE_OPTIONS } from '../../cli/slurm/sshare.ts';
import { query } from '../../functions/domain/sql.ts';
import { availableBackends, type Backend, startTestServer, testConfig } from '../support/cluster.ts';
import { manPageOptions, tableOptions } from './slurm-stub.ts';

const [pglite] = (await availableBackends()).filter((b) => b.name === 'pglite+memory');

describe.runIf(pglite)('sshare', () => {
  let backend: Backend;
  let server: Awaited<ReturnType<typeof startTestServer>>;
  let env: NodeJS.ProcessEnv;

  beforeAll(async () => {
    backend = await (pglite as NonNullable<typeof pglite>).create();
    server = await startTestServer(backend, testConfig());
    env = { CONDUCTOR_URL: server.url, HOME: '/nonexistent', CONDUCTOR_OWNER: 'alice' };
    const post = async (path: string, body: unknown) => {
      const res = await fetch(`${server.url}${path}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
      expect(res.status, path).toBe(200);
    };
    await post('/api/v1/accounts/physics', { fairshare: 3 });
    await post('/api/v1/accounts/qcd', { parent: 'physics', fairshare: 1 });
    await post('/api/v1/accounts/lattice', { parent: 'physics', fairshare: 1 });
    await post('/api/v1/accounts/chemistry', { fairshare: 1, grp_cpu_mins: 600 });
    await post('/api/v1/accounts/qcd/users/alice', {});
    await post('/api/v1/accounts/qcd/users/bob', {});
    await post('/api/v1/accounts/chemistry/users/carol', { fairshare: 2 });
    // Usage as the roll-up trigger records it: in the same hour, so the same decay, 3:1.
    await query(
      backend.db.db,
      sql`INSERT INTO usage_hourly (bucket, account, owner, partition, node, cpu_seconds)
          VALUES (date_trunc('hour', now(), 'UTC') - interval '1 hour', 'qcd', 'alice', 'default', 'n1', 3600),
                 (date_trunc('hour', now(), 'UTC') - interval '1 hour', 'chemistry', 'carol', 'default', 'n1', 1200)`,
    );
  });
  afterAll(async () => {
    await server?.close();
    await backend?.close();
  });

  async function run(...args: string[]) {
    let out = '';
    let err = '';
    const code = await main(args, env, {
      out: (t) => {
        out += t;
      },
      err: (t) => {
        err += t;
      },
    });
    return { code, out, err };
  }
  /** The decayed CPU-seconds change with the clock: they are checked apart, and replaced by N here. */
  const usage = (text: string) => text.replace(/ {2,}\d{3,4} /g, (m) => `${' '.repeat(m.length - 2)}N `);

  it('covers exactly the options of the 22.05 man page', () => {
    expect(tableOptions(SSHARE_OPTIONS)).toEqual(manPageOptions('sshare'));
  });

  it('prints the tree from root in the classic columns, with the rows of whoever runs it', async () => {
    const { code, out, err } = await run('sshare');
    expect(err).toBe('');
    expect(code).toBe(0);
    expect(usage(out)).toBe(
      [
        'Account                    User  RawShares  NormShares    RawUsage  EffectvUsage  FairShare',
        '-------------------- ---------- ---------- ----------- ----------- ------------- ----------',
        'root                                          1.000000           N      1.000000',
        ' chemistry                               1    0.250000           N      0.250000   0.500000',
        ' physics                                 3    0.750000           0      0.000000   1.000000',
        '  lattice                                1    0.375000           0      0.000000   1.000000',
        '  qcd                                    1    0.375000           N      0.750000   0.250000',
        '   qcd                    alice          1    0.187500           N      0.750000   0.062500',
        '',
      ].join('\n'),
    );
    // Decayed over at most an hour and a half of a week's half-life.
    const raw = out.split('\n').map((l) => Number(l.slice(55, 66)));
    expect(raw[2]).toBeGreaterThan(4700);
    expect(raw[2]).toBeLessThan(4800);
    expect(raw[6]).toBeCloseTo((raw[2] ?? 0) * 0.75, -1);
  });

  it('-a adds every user; -A keeps an account with its users; -u picks users; -U only their rows', async () => {
    const all = await run('slurm', 'sshare', '-a', '-n', '-o', 'Account,User,NormShares,FairShare');
    expect(all.code).toBe(0);
    expect(all.out.split('\n').map((l) => l.trimEnd())).toEqual([
      'root                               1.000000',
      ' chemistry                         0.250000   0.500000',
      '  chemistry               carol    0.250000   0.500000',
      ' physics                           0.750000   1.000000',
      '  lattice                          0.375000   1.000000',
      '  qcd                              0.375000   0.250000',
      '   qcd                    alice    0.187500   0.062500',
      '   qcd                      bob    0.187500   1.000000',
      '',
    ]);
    const one = await run('sshare', '-A', 'chemistry', '-P', '-o', 'Account,User,RawShares');
    expect(one.out).toBe('Account|User|RawShares\n chemistry||1\n  chemistry|carol|2\n');
    const users = await run('sshare', '-U', '-u', 'bob,carol', '-p', '-n', '-o', 'Acc,User,Fair');
    expect(users.out).toBe('chemistry|carol|0.500000|\nqcd|bob|1.000000|\n');
  });

  it('-l adds NormUsage, LevelFS, GrpTRESMins and TRESRunMins; -m the Partition column', async () => {
    const long = await run('sshare', '-l', '-A', 'chemistry', '-P');
    const [header, account] = long.out.split('\n');
    expect(header).toBe(
      'Account|User|RawShares|NormShares|RawUsage|NormUsage|EffectvUsage|FairShare|LevelFS|GrpTRESMins|TRESRunMins',
    );
    expect(account?.split('|')).toEqual([
      ' chemistry',
      '',
      '1',
      '0.250000',
      expect.stringMatching(/^\d+$/),
      '0.250000',
      '0.250000',
      '0.500000',
      '1.000000',
      'cpu=600',
      '',
    ]);
    const partition = await run('sshare', '-m', '-P', '-n', '-U', '-u', 'alice');
    expect(partition.out.split('|')).toHaveLength(8);
    expect(partition.out).toMatch(/^qcd\|alice\|\|1\|0\.187500\|/);
  });

  it('-o takes widths; a cut cell ends with +; an unknown field is an error with exit 1', async () => {
    const narrow = await run('sshare', '-n', '-A', 'physics', '-o', 'Account%5,FairShare%-9');
    expect(narrow.out.split('\n')[0]).toBe(' phy+ 1.000000');
    const bad = await run('sshare', '-o', 'Account,Bogus');
    expect(bad).toMatchObject({ code: 1, out: '' });
    expect(bad.err).toBe('sshare: error: Invalid field requested: "Bogus"\n');
    const cluster = await run('sshare', '-M', 'other');
    expect(cluster.code).toBe(1);
    expect(cluster.err).toContain('one Conductor control plane is one cluster');
    expect((await run('sshare', '-V')).out).toBe('slurm 22.05.0\n');
    let err = '';
    const down = await main(
      ['sshare'],
      { ...env, CONDUCTOR_URL: 'http://127.0.0.1:9' },
      {
        out: () => {},
        err: (t) => {
          err += t;
        },
      },
    );
    expect(down).toBe(1);
    expect(err).toMatch(/^sshare: error: Unable to contact slurm controller \(connect failure\)/);
  });

  it('GET /api/v1/fairshare?live= takes true or false only (400 otherwise)', async () => {
    const bad = await fetch(`${server.url}/api/v1/fairshare?live=maybe`);
    expect(bad.status).toBe(400);
    expect(JSON.stringify(await bad.json())).toContain('live is true or false');
    const saved = (await (await fetch(`${server.url}/api/v1/fairshare?live=false`)).json()) as {
      accounts: unknown[];
    };
    // Without live: the figures the last recalculation saved (none here: nothing was pending), no users.
    expect(saved.accounts).toEqual([]);
  });
});
