/**
 * CONDUCTOR_RUN_AS as an owner → user map (`alice:nobody,bob:daemon,*:batch`): each owner's jobs run as
 * that owner's user, and a job whose owner has no user (and no `*`) fails to start, saying why. The single
 * form (`CONDUCTOR_RUN_AS=batch`) keeps working (test/security/agent-safety.test.ts).
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { agentConfig, parseAgentArgs, type RunAsUser } from '../../agent/src/config.ts';
import { startJob } from '../../agent/src/executor.ts';
import type { Assignment } from '../../agent/src/protocol.ts';
import { lookupUser, resolveSafety } from '../../agent/src/safety.ts';
import { createToken } from '../../functions/domain/auth.ts';
import type { RunningServer } from '../../functions/node/server.ts';
import { CLI_PRINCIPAL } from '../security/support.ts';
import { AgentProcess, eventually } from '../support/agent-process.ts';
import {
  availableBackends,
  type Backend,
  type RecordingLogger,
  startTestServer,
  testConfig,
} from '../support/cluster.ts';

const root = mkdtempSync(join(tmpdir(), 'conductor-run-as-owners-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const isRoot = process.getuid?.() === 0;
/** Two users every Debian has. */
const nobody = lookupUser('nobody');
const daemon = lookupUser('daemon');
const why = !isRoot
  ? 'the tests do not run as root, so the agent cannot switch users'
  : !nobody || !daemon
    ? 'this machine lacks the users nobody and daemon'
    : undefined;
if (why) console.warn(`[run-as-owners] skipping the jobs run as mapped users: ${why}`);

describe('CONDUCTOR_RUN_AS=<owner>:<user>,...', () => {
  const batch: RunAsUser = { name: 'batch', uid: 1001, gid: 1001, home: '/home/batch' };
  const jobs: RunAsUser = { name: 'bob-jobs', uid: 1002, gid: 1002, home: '/home/bob-jobs' };
  const lookup = (name: string) => (name === 'batch' ? batch : name === 'bob-jobs' ? jobs : undefined);
  const config = agentConfig({ nodeName: 'n', stateDir: '/var/lib/agent' });
  const base = { allowRoot: false, allowAnyWorkDir: false };

  it('maps owners to users, * for every other owner and for jobs without one', () => {
    const parsed = parseAgentArgs([], { CONDUCTOR_RUN_AS: 'alice:batch, bob:bob-jobs ,*:batch' });
    expect(parsed).toMatchObject({ kind: 'run', safety: { runAs: 'alice:batch, bob:bob-jobs ,*:batch' } });
    const resolved = resolveSafety(config, { ...base, runAs: 'alice:batch,bob:bob-jobs,*:batch' }, 0, lookup);
    expect(resolved).toEqual({
      config: {
        ...config,
        runAsByOwner: { alice: batch, bob: jobs, '*': batch },
        jobRootIsHome: true,
      },
    });
  });

  it('refuses a malformed map, unknown users and root', () => {
    for (const bad of ['alice:', ':batch', 'alice:batch,alice:bob-jobs', 'alice:bad user', 'alice:batch,,']) {
      expect(parseAgentArgs([], { CONDUCTOR_RUN_AS: bad }), bad).toMatchObject({
        kind: 'error',
        message: expect.stringContaining('CONDUCTOR_RUN_AS'),
      });
    }
    expect(resolveSafety(config, { ...base, runAs: 'alice:batch,bob:nobody-here' }, 0, lookup)).toEqual({
      error: 'CONDUCTOR_RUN_AS: no user "nobody-here" on this machine (for owner bob)',
    });
    const withRoot = (name: string) => (name === 'root' ? { ...batch, uid: 0, name: 'root' } : lookup(name));
    expect(resolveSafety(config, { ...base, runAs: 'alice:root' }, 0, withRoot)).toMatchObject({
      error: expect.stringContaining('refusing to start as root'),
    });
    expect(resolveSafety(config, { ...base, runAs: 'alice:batch' }, 1000, lookup)).toMatchObject({
      error: expect.stringContaining('needs the agent to run as root'),
    });
  });
});

describe.skipIf(why !== undefined)('jobs of two owners on one node', () => {
  const jobsDir = join(root, 'jobs');
  let nextId = 1;
  const run = (owner: string | null, script: string) => {
    const assignment: Assignment = {
      job_id: nextId++,
      attempt: 1,
      name: 'owned',
      script,
      cpus: 1,
      work_dir: null,
      environment: {},
      time_limit_s: null,
      owner,
    };
    return startJob(assignment, {
      jobsDir,
      runAsByOwner: { alice: nobody!, bob: daemon! },
      jobRootIsHome: true,
    });
  };

  it('run under their own users, and an unmapped owner gets a clear refusal', async () => {
    const alice = run('alice', 'id -u');
    const bob = run('bob', 'id -u');
    expect(await alice.result).toMatchObject({ exit_code: '0:0', outcome: 'exited' });
    expect(await bob.result).toMatchObject({ exit_code: '0:0', outcome: 'exited' });
    expect(readFileSync(alice.stdoutPath, 'utf8')).toBe(`${nobody!.uid}\n`);
    expect(readFileSync(bob.stdoutPath, 'utf8')).toBe(`${daemon!.uid}\n`);

    for (const owner of ['carol', null]) {
      const refused = run(owner, 'id -u');
      expect(await refused.result).toEqual({
        exit_code: '1:0',
        outcome: 'failed_to_start',
        message: `no run-as user for ${owner === null ? 'jobs without an owner' : 'owner "carol"'} on this node (CONDUCTOR_RUN_AS maps alice, bob)`,
      });
      expect(refused.pid).toBeUndefined();
    }
  });
});

const [pglite] = (await availableBackends()).filter((b) => b.name === 'pglite+memory');

describe.skipIf(why !== undefined || !pglite)('owners through the control plane (tokens required)', () => {
  let backend: Backend;
  let server: RunningServer & { logger: RecordingLogger };
  const tokens: Record<string, string> = {};
  let agent: AgentProcess | undefined;

  beforeAll(async () => {
    backend = await pglite!.create();
    const db = backend.db.db;
    tokens.admin = (await createToken(db, { name: 'admin', scopes: ['admin'] }, CLI_PRINCIPAL)).token;
    tokens.agent = (await createToken(db, { name: 'agents', scopes: ['agent'] }, CLI_PRINCIPAL)).token;
    for (const owner of ['alice', 'bob', 'carol']) {
      tokens[owner] = (
        await createToken(db, { name: owner, owner, scopes: ['jobs:write', 'jobs:read'] }, CLI_PRINCIPAL)
      ).token;
    }
    server = await startTestServer(backend, testConfig({ heartbeatIntervalSeconds: 1, workerTtlSeconds: 5 }));
  });
  afterAll(async () => {
    await agent?.stop().catch(() => agent?.kill9());
    await server?.close();
    await backend?.close();
  });

  const api = async <T>(token: string, path: string, body?: unknown): Promise<T> => {
    const res = await fetch(`${server.url}/api/v1${path}`, {
      method: body ? 'POST' : 'GET',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      ...(body ? { body: JSON.stringify(body) } : {}),
    });
    return (await res.json()) as T;
  };
  const runAs = async (owner: string) => {
    const { id } = await api<{ id: number }>(tokens[owner]!, '/jobs/submit', { script: 'id -u', cpus: 1 });
    const job = await eventually(
      async () => {
        const j = await api<{ state: string; reason: string | null }>(tokens.admin!, `/jobs/${id}`);
        return ['COMPLETED', 'FAILED'].includes(j.state) ? j : undefined;
      },
      { what: `job ${id}` },
    );
    const logs = await api<{ stdout: { content: string } }>(tokens.admin!, `/jobs/${id}/logs`);
    return { job, stdout: logs.stdout.content };
  };

  it("each owner's job runs as its mapped user; an unmapped owner's fails to start", async () => {
    agent = new AgentProcess('owners', server.url, {
      cpus: 2,
      env: {
        CONDUCTOR_TOKEN: tokens.agent!,
        CONDUCTOR_RUN_AS: 'alice:nobody,bob:daemon',
        CONDUCTOR_ALLOW_ROOT: '',
        CONDUCTOR_JOB_ROOT: '',
      },
    });
    await agent.registered();
    expect(await runAs('alice')).toMatchObject({ job: { state: 'COMPLETED' }, stdout: `${nobody!.uid}\n` });
    expect(await runAs('bob')).toMatchObject({ job: { state: 'COMPLETED' }, stdout: `${daemon!.uid}\n` });
    expect(await runAs('carol')).toMatchObject({
      job: {
        state: 'FAILED',
        reason: expect.stringContaining('no run-as user for owner "carol" on this node'),
      },
      stdout: '',
    });
  });
});
