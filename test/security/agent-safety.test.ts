/**
 * Agent-side safety with real agent processes against a control plane that requires tokens: jobs never see
 * the agent's token, run as CONDUCTOR_RUN_AS when set, cannot leave the job root, and the agent refuses to
 * run jobs as root unless told it may.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { agentConfig, type RunAsUser } from '../../agent/src/config.ts';
import { insideRoot, jobDirName } from '../../agent/src/executor.ts';
import { ROOT_REFUSAL, resolveSafety } from '../../agent/src/safety.ts';
import { createToken } from '../../functions/domain/auth.ts';
import type { RunningServer } from '../../functions/node/server.ts';
import { AgentProcess, eventually } from '../support/agent-process.ts';
import {
  availableBackends,
  type Backend,
  type RecordingLogger,
  startTestServer,
  testConfig,
} from '../support/cluster.ts';
import { CLI_PRINCIPAL } from './support.ts';

const [pglite] = (await availableBackends()).filter((b) => b.name === 'pglite+memory');
const isRoot = process.getuid?.() === 0;
const RUN_AS_USER = 'conductor-job';

/** Makes sure the unprivileged test user exists; why not, when it cannot. */
function ensureTestUser(): string | undefined {
  if (!isRoot) return 'the tests do not run as root, so the agent cannot switch users';
  try {
    execFileSync('id', ['-u', RUN_AS_USER], { stdio: 'ignore' });
    return undefined;
  } catch {
    // missing: create it below
  }
  try {
    execFileSync('useradd', ['--create-home', '--shell', '/bin/sh', RUN_AS_USER], { stdio: 'ignore' });
    return undefined;
  } catch (error) {
    return `useradd is not available or failed (${(error as Error).message.split('\n')[0]})`;
  }
}
const noRunAs = ensureTestUser();
if (noRunAs) console.warn(`[agent-safety] skipping the CONDUCTOR_RUN_AS test: ${noRunAs}`);

describe('resolveSafety', () => {
  const config = agentConfig({ nodeName: 'n', stateDir: '/var/lib/agent' });
  const user: RunAsUser = { name: 'batch', uid: 1001, gid: 1001, home: '/home/batch' };
  const lookup = (name: string) =>
    name === 'batch' ? user : name === 'root' ? { ...user, uid: 0, name: 'root' } : undefined;
  const base = { allowRoot: false, allowAnyWorkDir: false };

  it('refuses root without CONDUCTOR_RUN_AS or CONDUCTOR_ALLOW_ROOT, with a message saying what to set', () => {
    expect(resolveSafety(config, base, 0, lookup)).toEqual({ error: ROOT_REFUSAL });
    expect(ROOT_REFUSAL).toContain('CONDUCTOR_RUN_AS');
    expect(ROOT_REFUSAL).toContain('CONDUCTOR_ALLOW_ROOT=1');
    expect(resolveSafety(config, { ...base, runAs: 'root' }, 0, lookup)).toEqual({ error: ROOT_REFUSAL });
    const allowed = resolveSafety(config, { ...base, allowRoot: true }, 0, lookup);
    // Jobs run as the agent's own user, who may enter any directory anyway: no job root unless one is set.
    expect(allowed).toEqual({ config: expect.not.objectContaining({ jobRoot: expect.anything() }) });
  });

  it('runs jobs as the RUN_AS user, confined to its home by default', () => {
    const result = resolveSafety(config, { ...base, runAs: 'batch' }, 0, lookup);
    expect(result).toMatchObject({ config: { runAs: user, jobRoot: '/home/batch' } });
    expect(resolveSafety(config, { ...base, runAs: 'nobody-here' }, 0, lookup)).toMatchObject({
      error: expect.stringContaining('no user "nobody-here"'),
    });
    expect(resolveSafety(config, { ...base, runAs: 'batch' }, 1000, lookup)).toMatchObject({
      error: expect.stringContaining('needs the agent to run as root'),
    });
    expect(resolveSafety(config, { ...base, allowAnyWorkDir: true }, 1000, lookup)).toEqual({
      config: expect.not.objectContaining({ jobRoot: expect.anything() }),
    });
    expect(resolveSafety(config, { ...base, jobRoot: '/srv/work' }, 1000, lookup)).toMatchObject({
      config: { jobRoot: '/srv/work' },
    });
  });
});

describe('job folders and work dirs', () => {
  it('names job folders from numbers only, so an assignment cannot point its output elsewhere', () => {
    expect(jobDirName({ job_id: 12, attempt: 3 })).toBe('12.3');
    for (const ref of [
      { job_id: '../../etc' as unknown as number, attempt: 1 },
      { job_id: 1, attempt: '1/../x' as unknown as number },
      { job_id: -1, attempt: 1 },
      { job_id: 1.5, attempt: 1 },
    ]) {
      expect(() => jobDirName(ref)).toThrow(/invalid job reference/);
    }
  });

  it('resolves work_dir with symlinks before comparing it with the root', () => {
    const root = mkdtempSync(join(tmpdir(), 'conductor-root-'));
    mkdirSync(join(root, 'a', 'b'), { recursive: true });
    symlinkSync('/', join(root, 'to-slash'));
    expect(insideRoot(join(root, 'a', 'b'), root)).toBe(join(root, 'a', 'b'));
    expect(insideRoot(root, root)).toBe(root);
    expect(insideRoot(join(root, 'a', '..', '..'), root)).toMatchObject({
      problem: expect.stringContaining('outside'),
    });
    expect(insideRoot(join(root, 'to-slash', 'etc'), root)).toMatchObject({
      problem: expect.stringContaining('(/etc)'),
    });
    expect(insideRoot(`${root}-sibling`, root)).toMatchObject({ problem: expect.any(String) });
  });
});

describe.runIf(pglite)('agent safety with real agents (tokens required)', () => {
  let backend: Backend;
  let server: RunningServer & { logger: RecordingLogger };
  let admin: string;
  let agentToken: string;
  const agents: AgentProcess[] = [];
  const root = mkdtempSync(join(tmpdir(), 'conductor-jobroot-'));

  beforeAll(async () => {
    backend = await pglite!.create();
    const by = CLI_PRINCIPAL;
    admin = (await createToken(backend.db.db, { name: 'admin', scopes: ['admin'] }, by)).token;
    agentToken = (await createToken(backend.db.db, { name: 'agents', scopes: ['agent'] }, by)).token;
    server = await startTestServer(backend, testConfig({ heartbeatIntervalSeconds: 1, workerTtlSeconds: 5 }));
  });
  afterAll(async () => {
    await Promise.all(agents.map((a) => a.stop().catch(() => a.kill9())));
    await server?.close();
    await backend?.close();
  });

  const api = async <T>(path: string, init: { method?: string; body?: unknown } = {}): Promise<T> => {
    const res = await fetch(`${server.url}${path}`, {
      method: init.method ?? 'GET',
      headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' },
      ...(init.body ? { body: JSON.stringify(init.body) } : {}),
    });
    return (await res.json()) as T;
  };
  const run = async (body: Record<string, unknown>) => {
    const { id } = await api<{ id: number }>('/api/v1/jobs/submit', {
      method: 'POST',
      body: { cpus: 1, ...body },
    });
    const job = await eventually(
      async () => {
        const j = await api<{ state: string; reason: string | null; exit_code: string }>(
          `/api/v1/jobs/${id}`,
        );
        return ['COMPLETED', 'FAILED', 'CANCELLED'].includes(j.state) ? j : undefined;
      },
      { what: `job ${id}` },
    );
    const logs = await api<{ stdout: { content: string }; stderr: { content: string } }>(
      `/api/v1/jobs/${id}/logs`,
    );
    return { job, stdout: logs.stdout.content, stderr: logs.stderr.content };
  };
  const start = async (name: string, env: Record<string, string>) => {
    const agent = new AgentProcess(name, server.url, {
      cpus: 2,
      env: { CONDUCTOR_TOKEN: agentToken, ...env },
    });
    agents.push(agent);
    await agent.registered();
    return agent;
  };
  const stopAll = async () => {
    await Promise.all(agents.splice(0).map((a) => a.stop().catch(() => a.kill9())));
  };

  it('a job cannot print CONDUCTOR_TOKEN', async () => {
    await start('safe-token', { CONDUCTOR_JOB_ROOT: root });
    const { job, stdout } = await run({
      // biome-ignore lint/suspicious/noTemplateCurlyInString: shell syntax, not a template
      script: 'echo "token=${CONDUCTOR_TOKEN:-none}"; env | grep -c "cnd_" || true',
    });
    expect(job.state).toBe('COMPLETED');
    expect(stdout).toBe('token=none\n0\n');
    expect(stdout).not.toContain(agentToken);
    await stopAll();
  });

  it.runIf(isRoot)('refuses to start as root without CONDUCTOR_RUN_AS or CONDUCTOR_ALLOW_ROOT', async () => {
    const agent = new AgentProcess('root-refused', server.url, {
      env: { CONDUCTOR_TOKEN: agentToken, CONDUCTOR_ALLOW_ROOT: '' },
    });
    expect(await agent.waitForExit()).toBe(2);
    expect(agent.lines.join('\n')).toContain('refusing to start as root');
    expect(agent.lines.join('\n')).toContain('CONDUCTOR_RUN_AS=<unprivileged user>');
  });

  it('keeps work_dir inside the job root (symlinks followed) unless the agent allows any', async () => {
    const inside = join(root, 'inside');
    mkdirSync(inside, { recursive: true });
    symlinkSync('/etc', join(root, 'escape'));
    await start('confined', { CONDUCTOR_JOB_ROOT: root });
    expect(await run({ script: 'pwd', work_dir: inside })).toMatchObject({
      job: { state: 'COMPLETED' },
      stdout: `${inside}\n`,
    });
    // As slurmstepd with a directory it cannot enter: the job runs in /tmp, and its stderr says why.
    for (const workDir of ['/etc', join(root, 'escape'), `${root}/../`]) {
      const { job, stdout, stderr } = await run({ script: 'pwd', work_dir: workDir });
      expect(job, workDir).toMatchObject({ state: 'COMPLETED', exit_code: '0:0' });
      expect(stdout).toBe('/tmp\n');
      expect(stderr).toBe(
        `slurmstepd: error: couldn't chdir to \`${workDir}': outside the agent's job root (CONDUCTOR_JOB_ROOT=${root}): going to /tmp instead\n`,
      );
    }
    await stopAll();
    await start('unconfined', { CONDUCTOR_JOB_ROOT: root, CONDUCTOR_ALLOW_ANY_WORKDIR: '1' });
    expect(await run({ script: 'pwd', work_dir: '/etc' })).toMatchObject({
      job: { state: 'COMPLETED' },
      stdout: '/etc\n',
    });
    await stopAll();
  });

  it.skipIf(noRunAs !== undefined)(
    `runs jobs as CONDUCTOR_RUN_AS=${RUN_AS_USER}, away from the agent's secrets`,
    async () => {
      const agent = await start('run-as', {
        CONDUCTOR_RUN_AS: RUN_AS_USER,
        CONDUCTOR_ALLOW_ROOT: '',
        CONDUCTOR_JOB_ROOT: '',
      });
      const home = execFileSync('getent', ['passwd', RUN_AS_USER], { encoding: 'utf8' }).split(':')[5];
      const { job, stdout, stderr } = await run({
        script: [
          'id -un',
          'echo "home=$HOME user=$USER"',
          'touch made-here && echo "wrote $(basename "$PWD")"',
          `cat ${join(agent.stateDir, 'session')} 2>/dev/null || echo "session: denied"`,
          'cat /proc/$PPID/environ 2>/dev/null | tr "\\0" "\\n" | grep -c CONDUCTOR_TOKEN || echo "environ: denied"',
        ].join('\n'),
      });
      expect(job.state, stderr).toBe('COMPLETED');
      const lines = stdout.trim().split('\n');
      expect(lines[0]).toBe(RUN_AS_USER);
      expect(lines[1]).toBe(`home=${home} user=${RUN_AS_USER}`);
      expect(lines[2]).toBe('wrote work');
      expect(lines[3]).toBe('session: denied');
      // cat fails (the agent's /proc/<pid>/environ is not the job user's to read): grep counts 0, then says so.
      expect(lines.slice(4)).toEqual(['0', 'environ: denied']);
      expect(stdout).not.toContain(agentToken);
      await stopAll();
    },
  );
});
