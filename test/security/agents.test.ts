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
