/**
 * `conductor sacctmgr` (the sacctmgr drop-in) against a real control plane: Slurm's add/modify/delete/show
 * words, `show assoc` as sacctmgr prints it (right-justified columns, a dashes line; -P, -n), -1 clearing a
 * limit, and Slurm-style errors with exit code 1.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../../cli/main.ts';
import { availableBackends, type Backend, startTestServer, testConfig } from '../support/cluster.ts';

const [pglite] = (await availableBackends()).filter((b) => b.name === 'pglite+memory');

describe.runIf(pglite)('conductor sacctmgr', () => {
  let backend: Backend;
  let server: Awaited<ReturnType<typeof startTestServer>>;
  let env: NodeJS.ProcessEnv;
  beforeAll(async () => {
    backend = await (pglite as NonNullable<typeof pglite>).create();
    server = await startTestServer(backend, testConfig());
    env = { CONDUCTOR_URL: server.url, HOME: '/nonexistent' };
  });
  afterAll(async () => {
    await server?.close();
    await backend?.close();
  });

  async function sacctmgr(...args: string[]) {
    let out = '';
    let err = '';
    const code = await main(['sacctmgr', ...args], env, {
      out: (t) => {
        out += t;
      },
      err: (t) => {
        err += t;
      },
    });
    return { code, out, err };
  }

  it('adds accounts and users, modifies and shows them as sacctmgr does, and deletes them', async () => {
    expect(
      (await sacctmgr('-i', 'add', 'account', 'physics', 'Description=faculty', 'Fairshare=10')).code,
    ).toBe(0);
    expect(
      (
        await sacctmgr(
          '-i',
          'add',
          'account',
          'qcd,lattice',
          'parent=physics',
          'MaxJobs=2',
          'GrpTRES=cpu=64,gres/gpu=4',
        )
      ).code,
    ).toBe(0);
    const added = await sacctmgr(
      '-i',
      'add',
      'user',
      'alice',
      'Account=qcd,lattice',
      'DefaultAccount=lattice',
      'MaxSubmit=10',
    );
    expect(added).toMatchObject({ code: 0, err: '' });
    expect(added.out).toContain('U = alice');
    expect(
      (
        await sacctmgr(
          '-i',
          'modify',
          'account',
          'where',
          'name=qcd',
          'set',
          'MaxWall=1-00:00:00',
          'GrpTRESMins=cpu=6000',
        )
      ).code,
    ).toBe(0);
    expect(
      (await sacctmgr('-i', 'modify', 'user', 'alice', 'where', 'account=qcd', 'set', 'MaxJobs=1')).code,
    ).toBe(0);
    expect((await sacctmgr('-i', 'modify', 'account', 'name=lattice', 'set', 'MaxJobs=-1')).code).toBe(0);

    const shown = await sacctmgr('show', 'assoc');
    expect(shown.code).toBe(0);
    expect(shown.out).toBe(
      [
        '   Cluster    Account       User  Partition     Share       GrpTRES   GrpTRESMins MaxJobs MaxSubmit     MaxWall',
        '---------- ---------- ---------- ---------- --------- ------------- ------------- ------- --------- -----------',
        ' conductor    physics                              10                                                          ',
        ' conductor    lattice                               1 cpu=64,gres/+                                            ',
        ' conductor    lattice      alice                    1                                            10            ',
        ' conductor        qcd                               1 cpu=64,gres/+      cpu=6000       2            1-00:00:00',
        ' conductor        qcd      alice                    1                                   1        10            ',
        '',
      ].join('\n'),
    );
    const parsable = await sacctmgr(
      '-P',
      '-n',
      'show',
      'assoc',
      'format=account,user,maxjobs,grptres',
      'user=alice',
    );
    expect(parsable.out).toBe('lattice|alice||\nqcd|alice|1|\n');
    const users = await sacctmgr('-p', 'show', 'user', 'alice');
    expect(users.out).toBe('User|Def Acct|Account|\nalice|lattice|lattice|\nalice||qcd|\n');
    const tree = await sacctmgr('-P', 'show', 'account', 'format=account,parentname,descr');
    expect(tree.out).toBe('Account|Par Name|Descr\nphysics||faculty\nlattice|physics|\nqcd|physics|\n');

    expect((await sacctmgr('-i', 'delete', 'user', 'alice', 'account=qcd')).code).toBe(0);
    expect((await sacctmgr('-i', 'delete', 'account', 'qcd')).code).toBe(0);
    expect((await sacctmgr('-P', '-n', 'show', 'assoc', 'format=account,user')).out).toBe(
      'physics|\nlattice|\nlattice|alice\n',
    );
  });

  it("says what is wrong as sacctmgr does (exit 1), and the API's refusals too", async () => {
    const bad = await sacctmgr('add', 'account', 'x', 'MaxJobs=lots');
    expect(bad).toMatchObject({ code: 1 });
    expect(bad.err).toContain('sacctmgr: error: maxjobs=lots: a whole number, or -1 for no limit');
    const cycle = await sacctmgr('-i', 'modify', 'account', 'physics', 'set', 'parent=lattice');
    expect(cycle.code).toBe(1);
    expect(cycle.err).toMatch(/sacctmgr: error: .*lattice is physics or an account under it/);
    expect((await sacctmgr('show', 'thing')).code).toBe(1);
    expect((await sacctmgr('-P', '-n', 'show', 'account', 'format=account')).out).toBe('physics\nlattice\n');
  });
});
