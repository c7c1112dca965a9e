import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runSchedulingPass } from '../../functions/domain/scheduler.ts';
import { availableBackends, type Backend } from '../support/cluster.ts';
import { errorOf, type SecureApp, secureApp } from './support.ts';

const backends = await availableBackends();

/**
 * Agent enrollment: a worker's identity is bound at registration to the token that registered it. Another
 * agent token can neither take the name, nor heartbeat, claim, report or unregister as it, nor report on a
 * job assigned to another token's worker.
 */
describe.each(backends)('agent tokens on $name', (factory) => {
  let backend: Backend;
  let s: SecureApp;
  let a: { id: number; token: string };
  let b: { id: number; token: string };
  let admin: { id: number; token: string };
  const sessions: Record<string, string> = {};

  beforeAll(async () => {
    backend = await factory.create();
    s = secureApp(backend);
    admin = await s.token(['admin'], 'admin');
    a = await s.token(['agent'], 'agent-a');
    b = await s.token(['agent'], 'agent-b');
  });
  afterAll(async () => {
    await s?.harness.settle();
    await backend?.close();
  });

  const agentCall = (token: string, path: string, body: unknown) =>
    s.request('POST', `/api/v1/agents${path}`, { token, body });
  const register = async (token: string, worker: string, cpus = 2) => {
    // previous_session: the same node's agent restarting (with its state dir), which may take its name over.
    const previous = sessions[worker];
    const res = await agentCall(token, '/register', {
      worker_id: worker,
      hostname: worker,
      cpus,
      ...(previous ? { previous_session: previous } : {}),
    });
    if (res.status === 200) sessions[worker] = ((await res.json()) as { session: string }).session;
    return res;
  };

  it('registers a worker and binds it to the registering token', async () => {
    expect((await register(a.token, 'node-a')).status).toBe(200);
    expect((await register(b.token, 'node-b')).status).toBe(200);
    const heartbeat = await agentCall(a.token, '/heartbeat', {
      worker_id: 'node-a',
      session: sessions['node-a'],
    });
    expect(heartbeat.status).toBe(200);
  });

  it('another token cannot take the name, heartbeat, claim or unregister as it (403)', async () => {
    const taken = await register(b.token, 'node-a');
    expect(taken.status).toBe(403);
    expect(await errorOf(taken)).toMatchObject({ code: 'worker_not_yours' });
    const session = sessions['node-a'];
    for (const path of ['/heartbeat', '/claim', '/unregister']) {
      const res = await agentCall(b.token, path, { worker_id: 'node-a', session });
      expect(res.status, path).toBe(403);
      expect((await errorOf(res)).code).toBe('worker_not_yours');
    }
    // Not even the open-cluster anonymous caller (no token) gets in: tokens exist.
    expect((await agentCall('', '/heartbeat', { worker_id: 'node-a', session })).status).toBe(401);
    // The rightful token still can.
    expect((await agentCall(a.token, '/heartbeat', { worker_id: 'node-a', session })).status).toBe(200);
  });

  it('an agent can only claim and report its own assignments; reports about a job assigned elsewhere are 403', async () => {
    // A job that only node-b (4 CPUs, bigger than node-a) can take.
    expect((await register(b.token, 'node-b', 4)).status).toBe(200);
    const submitted = await s.request('POST', '/api/v1/jobs/submit', {
      token: admin.token,
      body: { script: 'echo secret-of-b', cpus: 3 },
    });
    const job = (await submitted.json()) as { id: number };
    await s.harness.settle();
    await runSchedulingPass(s.harness.ctx);
    const claimA = await agentCall(a.token, '/claim', { worker_id: 'node-a', session: sessions['node-a'] });
    expect(((await claimA.json()) as { jobs: unknown[] }).jobs).toEqual([]);
    const claimB = await agentCall(b.token, '/claim', { worker_id: 'node-b', session: sessions['node-b'] });
    const assigned = (
      (await claimB.json()) as { jobs: { job_id: number; attempt: number; script: string }[] }
    ).jobs;
    expect(assigned.map((j) => j.job_id)).toEqual([job.id]);
    const attempt = assigned[0]!.attempt;

    // A reports on B's job under its own worker name: the job's current attempt belongs to another token.
    for (const [path, extra] of [
      ['started', {}],
      ['output', { stream: 'stdout', offset: 0, data: 'forged', bytes: 6 }],
      ['finish', { exit_code: '0:0', outcome: 'exited' }],
    ] as const) {
      const res = await agentCall(a.token, `/jobs/${job.id}/${path}`, {
        worker_id: 'node-a',
        attempt,
        ...extra,
      });
      expect(res.status, path).toBe(403);
      expect((await errorOf(res)).code).toBe('assignment_not_yours');
      // ... or impersonating node-b.
      const as = await agentCall(a.token, `/jobs/${job.id}/${path}`, {
        worker_id: 'node-b',
        attempt,
        ...extra,
      });
      expect(as.status, `${path} as node-b`).toBe(403);
      expect((await errorOf(as)).code).toBe('worker_not_yours');
    }
    const state = (await (
      await s.request('GET', `/api/v1/jobs/${job.id}`, { token: admin.token })
    ).json()) as {
      state: string;
      start_time: string | null;
    };
    expect(state).toMatchObject({ state: 'RUNNING', start_time: null });
    expect(
      (
        (await (await s.request('GET', `/api/v1/jobs/${job.id}/logs`, { token: admin.token })).json()) as {
          stdout: { content: string };
        }
      ).stdout.content,
    ).toBe('');

    // B reports normally; a late report for an old attempt stays a 409 (the agent drops it), not a 403.
    expect(
      (await agentCall(b.token, `/jobs/${job.id}/started`, { worker_id: 'node-b', attempt })).status,
    ).toBe(200);
    const finished = await agentCall(b.token, `/jobs/${job.id}/finish`, {
      worker_id: 'node-b',
      attempt,
      exit_code: '0:0',
      outcome: 'exited',
    });
    expect(finished.status).toBe(200);
    const stale = await agentCall(b.token, `/jobs/${job.id}/started`, {
      worker_id: 'node-b',
      attempt: attempt + 5,
    });
    expect(stale.status).toBe(409);
  });

  it('an agent token cannot submit jobs or read them (403)', async () => {
    const res = await s.request('POST', '/api/v1/jobs/submit', {
      token: a.token,
      body: { script: 'true', cpus: 1 },
    });
    expect(res.status).toBe(403);
    expect((await s.request('GET', '/api/v1/jobs/1', { token: a.token })).status).toBe(403);
    expect((await s.request('GET', '/api/v1/jobs/1/logs', { token: a.token })).status).toBe(403);
  });

  it('revoking the bound token hands the name over to a new token', async () => {
    expect((await s.request('DELETE', `/api/v1/tokens/${a.id}`, { token: admin.token })).status).toBe(200);
    const gone = await agentCall(a.token, '/heartbeat', { worker_id: 'node-a', session: sessions['node-a'] });
    expect(gone.status).toBe(401);
    const replacement = await s.token(['agent'], 'agent-a2');
    expect((await register(replacement.token, 'node-a')).status).toBe(200);
    expect((await register(b.token, 'node-a')).status).toBe(403);
  });
});

/**
 * Agents of the open loopback cluster (no token yet): each gets an agent token of its own at registration,
 * which keeps working once the first API token closes the cluster.
 */
describe.each(backends)('agents registered on the open cluster, on $name', (factory) => {
  let backend: Backend;
  let s: SecureApp;
  beforeAll(async () => {
    backend = await factory.create();
    s = secureApp(backend);
  });
  afterAll(async () => {
    await s?.harness.settle();
    await backend?.close();
  });

  const register = (worker: string, options: { token?: string; previous?: string } = {}) =>
    s.request('POST', '/api/v1/agents/register', {
      token: options.token,
      body: {
        worker_id: worker,
        hostname: worker,
        cpus: 2,
        ...(options.previous ? { previous_session: options.previous } : {}),
      },
    });
  const answer = async (res: Response) => {
    expect(res.status).toBe(200);
    return (await res.json()) as { session: string; token?: string };
  };
  const heartbeat = (token: string | undefined, worker: string, session: string) =>
    s.request('POST', '/api/v1/agents/heartbeat', { token, body: { worker_id: worker, session } });

  it('gives an agent that sent no token one of its own; it does not close the cluster', async () => {
    const first = await answer(await register('open-1'));
    expect(first.token).toMatch(/^cnd_/);
    expect((await heartbeat(first.token, 'open-1', first.session)).status).toBe(200);
    // Registering again with it: the same token, none new.
    const again = await answer(await register('open-1', { token: first.token!, previous: first.session }));
    expect(again.token).toBeUndefined();
    expect((await s.request('GET', '/api/v1/dashboard')).status).toBe(200);
  });

  it('a second agent under a live name gets 409 and the first keeps its token; a restart takes the name over', async () => {
    const first = await answer(await register('open-2'));
    const rival = await register('open-2');
    expect(rival.status).toBe(409);
    expect((await errorOf(rival)).code).toBe('worker_name_in_use');
    expect((await heartbeat(first.token, 'open-2', first.session)).status).toBe(200);
    // The same node restarted (its saved session, no token in memory): a new token, the old one revoked.
    const restarted = await answer(await register('open-2', { previous: first.session }));
    expect(restarted.token).toMatch(/^cnd_/);
    expect(restarted.token).not.toBe(first.token);
    expect((await heartbeat(restarted.token, 'open-2', restarted.session)).status).toBe(200);
    const tokens = (await (await s.request('GET', '/api/v1/tokens')).json()) as {
      tokens: { name: string; internal: boolean; revoked_at: string | null; scopes: string[] }[];
    };
    const mine = tokens.tokens.filter((t) => t.name === 'agent:open-2');
    expect(mine.map((t) => [t.internal, t.scopes, t.revoked_at === null])).toEqual([
      [true, ['agent'], true],
      [true, ['agent'], false],
    ]);
  });

  it('after the first API token, the agent goes on with its own token; anonymous agents are refused', async () => {
    const agent = await answer(await register('open-3'));
    const created = await s.request('POST', '/api/v1/tokens', { body: { name: 'owner', scopes: ['admin'] } });
    expect(created.status).toBe(201);
    const admin = (await created.json()) as { token: string; notice: string };
    expect(admin.notice).toContain('open access on loopback has ended');
    expect((await heartbeat(agent.token, 'open-3', agent.session)).status).toBe(200);
    expect((await heartbeat(undefined, 'open-3', agent.session)).status).toBe(401);
    expect((await register('open-4')).status).toBe(401);
    // A token created once the cluster is closed says nothing of the kind.
    const second = await s.request('POST', '/api/v1/tokens', {
      token: admin.token,
      body: { name: 'second', scopes: ['jobs:read'] },
    });
    expect(second.status).toBe(201);
    expect(await second.json()).not.toHaveProperty('notice');
  });
});
