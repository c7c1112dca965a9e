/** GET /api/v1/jobs's filters (squeue/sacct's -j, -n, -u, -A, -p, -w, -S, -E) and its ascending order. */
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { query } from '../../functions/domain/sql.ts';
import { errorOf, type SecureApp, secureApp } from '../security/support.ts';
import { availableBackends, type Backend } from '../support/cluster.ts';

const backends = await availableBackends();

interface Page {
  jobs: { id: number; name: string; owner: string | null }[];
  next_before: number | null;
  next_after: number | null;
}

describe.each(backends)('job filters on $name', (factory) => {
  let backend: Backend;
  let s: SecureApp;
  let admin: string;
  let alice: string;
  let bob: string;
  const ids: Record<string, number> = {};
  beforeAll(async () => {
    backend = await factory.create();
    s = secureApp(backend);
    admin = (await s.token(['admin'], 'admin')).token;
    alice = (await s.token(['jobs:read', 'jobs:write'], 'alice', 'alice')).token;
    bob = (await s.token(['jobs:read', 'jobs:write'], 'bob', 'bob')).token;
    expect(
      (await s.request('POST', '/api/v1/partitions/gpu', { token: admin, body: {} })).status,
    ).toBeLessThan(300);
    const jobs: [string, string, Record<string, unknown>][] = [
      ['a1', alice, { account: 'physics' }],
      ['a2', alice, { account: 'chemistry', partition: 'gpu' }],
      ['b1', bob, { account: 'physics', partition: 'gpu,default' }],
      ['b2', bob, {}],
    ];
    for (const [name, token, extra] of jobs) {
      const res = await s.request('POST', '/api/v1/jobs/submit', {
        token,
        body: { script: 'true', cpus: 1, name, hold: true, ...extra },
      });
      expect(res.status).toBe(201);
      ids[name] = ((await res.json()) as { id: number }).id;
    }
    // b2 ran on node-x and ended an hour ago; a1 was submitted two hours ago.
    await query(
      backend.db.db,
      sql`UPDATE jobs SET state = 'COMPLETED', node = 'node-x', held = NULL, exit_code = '0:0',
            start_time = now() - interval '70 minutes', end_time = now() - interval '1 hour'
          WHERE id = ${ids.b2}`,
    );
    await query(
      backend.db.db,
      sql`UPDATE jobs SET submit_time = now() - interval '2 hours' WHERE id = ${ids.a1}`,
    );
  });
  afterAll(async () => {
    await s?.harness.settle();
    await backend?.close();
  });

  const list = async (q: string, token = admin) => {
    const res = await s.request('GET', `/api/v1/jobs?${q}`, { token });
    expect(res.status, `${q}: ${JSON.stringify(await res.clone().json())}`).toBe(200);
    return (await res.json()) as Page;
  };
  const names = async (q: string, token = admin) => (await list(q, token)).jobs.map((j) => j.name);

  it('filters by ids, name, owner, account, partition and node, AND-ed', async () => {
    expect(await names(`ids=${ids.a1},${ids.b2}`)).toEqual(['b2', 'a1']);
    expect(await names('name=a2,b1')).toEqual(['b1', 'a2']);
    expect(await names('owner=bob')).toEqual(['b2', 'b1']);
    expect(await names('account=physics')).toEqual(['b1', 'a1']);
    expect(await names('partition=gpu')).toEqual(['b1', 'a2']);
    expect(await names('partition=default')).toEqual(['b2', 'b1', 'a1']);
    expect(await names('node=node-x')).toEqual(['b2']);
    expect(await names('account=physics&owner=alice')).toEqual(['a1']);
    expect(await names('name=nobody')).toEqual([]);
  });

  it('filters by time: active_since (not ended before), active_until (submitted before)', async () => {
    const ago = (minutes: number) =>
      encodeURIComponent(new Date(Date.now() - minutes * 60_000).toISOString());
    expect(await names(`active_since=${ago(30)}`)).toEqual(['b1', 'a2', 'a1']);
    expect(await names(`active_since=${ago(90)}`)).toEqual(['b2', 'b1', 'a2', 'a1']);
    expect(await names(`active_until=${ago(60)}`)).toEqual(['a1']);
  });

  it('pages oldest first with order=asc and after', async () => {
    const first = await list('order=asc&limit=3');
    expect(first.jobs.map((j) => j.name)).toEqual(['a1', 'a2', 'b1']);
    expect(first.next_before).toBeNull();
    expect(first.next_after).toBe(ids.b1);
    const second = await list(`order=asc&limit=3&after=${first.next_after}`);
    expect(second.jobs.map((j) => j.name)).toEqual(['b2']);
    expect(second.next_after).toBeNull();
    const desc = await list('limit=3');
    expect(desc.next_before).toBe(ids.a2);
    expect(desc.next_after).toBeNull();
  });

  it('keeps other owners’ jobs out of a non-admin’s list, whatever the filter', async () => {
    expect(await names('owner=bob', alice)).toEqual([]);
    expect(await names(`ids=${ids.b1},${ids.a1}`, alice)).toEqual(['a1']);
    expect(await names('', bob)).toEqual(['b2', 'b1']);
  });

  it('refuses bad filters with a 400 naming them', async () => {
    const cases: [string, string][] = [
      ['ids=1,x', 'ids is a comma list of job ids'],
      ['ids=0', 'ids is a comma list of job ids'],
      ['ids=1,,2', 'ids'],
      [`ids=${Array.from({ length: 1001 }, (_, i) => i + 1).join(',')}`, 'at most 1000 values'],
      ['name=', 'name must not be empty'],
      ['owner=a%0Ab', 'owner has control characters'],
      ['order=up', 'order is desc (newest first) or asc'],
      ['order=asc&before=5', 'with order=asc use after'],
      ['after=5', 'with order=desc use before'],
      ['active_since=yesterday', 'active_since is an ISO 8601 date and time'],
      ['active_until=2026-13-01', 'active_until is an ISO 8601 date and time'],
      ['colour=red', 'colour'],
    ];
    for (const [q, message] of cases) {
      const res = await s.request('GET', `/api/v1/jobs?${q}`, { token: admin });
      expect(res.status, q).toBe(400);
      expect((await errorOf(res)).message, q).toContain(message);
    }
  });
});
