/**
 * /api/v1/accounts: admins manage accounts and users, readers list them; bad input is a 400 that changes
 * nothing; with AccountingStorageEnforce=associations a submission naming an account its owner is not in is a
 * 400 invalid_account in sbatch's words. Every answer is checked against its declared schema (secureApp).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { errorOf, type SecureApp, secureApp } from '../security/support.ts';
import { availableBackends, type Backend } from '../support/cluster.ts';

const [backendFactory] = await availableBackends();

describe.runIf(backendFactory)('accounts API', () => {
  let backend: Backend;
  let s: SecureApp;
  let admin: string;
  let alice: string;
  beforeAll(async () => {
    backend = await (backendFactory as NonNullable<typeof backendFactory>).create();
    s = secureApp(backend, { enforceAssociations: true });
    admin = (await s.token(['admin'], 'admin', 'ops')).token;
    alice = (await s.token(['jobs:read', 'jobs:write'], 'alice', 'alice')).token;
  });
  afterAll(async () => {
    await s?.harness.settle();
    await backend?.close();
  });

  const accounts = async (token = admin) =>
    (
      (await (await s.request('GET', '/api/v1/accounts', { token })).json()) as {
        accounts: { name: string }[];
      }
    ).accounts;

  it('lets admins create, change and delete accounts and users, and readers read them', async () => {
    let res = await s.request('POST', '/api/v1/accounts/physics', {
      token: admin,
      body: { description: 'faculty', fairshare: 10, max_jobs: 20, grp_cpus: 256, max_wall: '2-00:00:00' },
    });
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({
      name: 'physics',
      parent: null,
      fairshare: 10,
      max_jobs: 20,
      grp_cpus: 256,
      max_wall: 2880,
      users: [],
    });
    res = await s.request('POST', '/api/v1/accounts/qcd', { token: admin, body: { parent: 'physics' } });
    expect(res.status).toBe(200);
    res = await s.request('POST', '/api/v1/accounts/qcd/users/alice', {
      token: admin,
      body: { max_jobs: 2 },
    });
    expect(await res.json()).toMatchObject({ user: 'alice', default: true, max_jobs: 2 });
    res = await s.request('GET', '/api/v1/accounts/qcd/users', { token: alice });
    expect(await res.json()).toMatchObject({ users: [{ user: 'alice', default: true }] });
    expect((await accounts(alice)).map((a) => a.name)).toEqual(['physics', 'qcd']);
    // Not an admin: 403, nothing changes.
    res = await s.request('POST', '/api/v1/accounts/mine', { token: alice, body: {} });
    expect(res.status).toBe(403);
    res = await s.request('DELETE', '/api/v1/accounts/qcd/users/alice', { token: alice });
    expect(res.status).toBe(403);
    expect((await accounts()).map((a) => a.name)).toEqual(['physics', 'qcd']);
  });

  it('refuses bad input with a 400 that changes nothing', async () => {
    for (const [path, body] of [
      ['/api/v1/accounts/physics', { max_jobs: -1 }],
      ['/api/v1/accounts/physics', { max_jobs: 'many' }],
      ['/api/v1/accounts/physics', { parent: 'qcd' }],
      ['/api/v1/accounts/physics', { bogus: 1 }],
      ['/api/v1/accounts/bad%20name', {}],
      ['/api/v1/accounts/x', { parent: 'nowhere' }],
      ['/api/v1/accounts/physics', { max_wall: 'soon' }],
    ] as const) {
      const res = await s.request('POST', path, { token: admin, body });
      expect(res.status, `${path} ${JSON.stringify(body)}`).toBe(400);
    }
    const physics = await (await s.request('GET', '/api/v1/accounts/physics', { token: admin })).json();
    expect(physics).toMatchObject({ parent: null, max_jobs: 20, max_wall: 2880 });
    expect((await accounts()).map((a) => a.name)).toEqual(['physics', 'qcd']);
    expect(
      (await s.request('POST', '/api/v1/accounts/none/users/bob', { token: admin, body: {} })).status,
    ).toBe(404);
    expect((await s.request('DELETE', '/api/v1/accounts/physics', { token: admin })).status).toBe(409);
  });

  it('with enforcement on, charges the default account and refuses another one (400 invalid_account)', async () => {
    let res = await s.request('POST', '/api/v1/jobs/submit', {
      token: alice,
      body: { script: 'true', cpus: 1, hold: true },
    });
    expect(res.status).toBe(201);
    expect(((await res.json()) as { account: string }).account).toBe('qcd');
    res = await s.request('POST', '/api/v1/jobs/submit', {
      token: alice,
      body: { script: 'true', cpus: 1, account: 'physics' },
    });
    expect(res.status).toBe(400);
    const error = await errorOf(res);
    expect(error.code).toBe('invalid_account');
    expect(error.message).toContain('Invalid account or account/partition combination specified');
    // The account is in use now: it cannot go.
    res = await s.request('DELETE', '/api/v1/accounts/qcd', { token: admin });
    expect(res.status).toBe(409);
    expect((await errorOf(res)).code).toBe('account_in_use');
  });
});
