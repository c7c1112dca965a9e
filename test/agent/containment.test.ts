/**
 * A job's processes do not outlive it: `setsid` children are found (a cgroup per job where the agent may
 * create one, else a /proc sweep for the job's marker) and killed when the job ends, is cancelled or runs
 * over its time limit, and when the agent itself is killed with `kill -9`.
 */
import { spawn } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parseAgentArgs } from '../../agent/src/config.ts';
import {
  type Containment,
  type ContainmentKind,
  detectContainment,
  JobCgroup,
  removeContainment,
} from '../../agent/src/containment.ts';
import { type JobProcess, killOrphanGroup, startJob } from '../../agent/src/executor.ts';
import type { Assignment } from '../../agent/src/protocol.ts';
import { AgentProcess, eventually } from '../support/agent-process.ts';
import { agentBackends, processGone, useControlPlane } from './control-plane.ts';

const root = mkdtempSync(join(tmpdir(), 'conductor-containment-'));
const detected: Containment[] = [];
afterAll(() => {
  for (const containment of detected) removeContainment(containment);
  rmSync(root, { recursive: true, force: true });
});

function detect(jobsDir: string, choice: ContainmentKind): Containment {
  const containment = detectContainment(jobsDir, choice);
  detected.push(containment);
  return containment;
}

/** Job ids far from other suites' (escapees are found by name across the machine). */
let nextId = 700_000 + Math.floor(Math.random() * 200_000);

/** Pids of live (non-zombie) processes whose command line starts with `name`. */
function processesNamed(name: string): number[] {
  const found: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const argv0 = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0')[0];
      if (argv0 === name && !processGone(Number(entry))) found.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return found;
}

const ESCAPE = `setsid bash -c 'exec -a escapee-$CONDUCTOR_JOB_ID sleep 300' &`;

/** The mechanisms this machine offers, the /proc sweep always. */
const probes = (['cgroup2', 'cgroup1', 'sweep'] as const).map((kind) => ({
  kind,
  found: detect(join(root, `probe-${kind}`), kind),
}));
const kinds = probes.filter((p) => p.found.kind === p.kind).map((p) => p.kind);
for (const probe of probes.filter((p) => p.found.kind !== p.kind)) {
  console.warn(`[containment] not testing ${probe.kind}: ${probe.found.description}`);
}

describe.each(kinds)('job containment: %s', (kind) => {
  const jobsDir = join(root, `jobs-${kind}`);
  const containment = detect(jobsDir, kind);

  function run(script: string, extra: Partial<Assignment> = {}): JobProcess {
    const assignment: Assignment = {
      job_id: nextId++,
      attempt: 1,
      name: 'contained',
      script,
      cpus: 1,
      work_dir: null,
      environment: {},
      time_limit_s: null,
      ...extra,
    };
    return startJob(assignment, {
      jobsDir,
      containment,
      cancelGraceMs: 1000,
      timeoutGraceMs: 500,
    });
  }

  const escapee = (job: JobProcess) => `escapee-${job.ref.job_id}`;

  it('kills a setsid child when the job ends', async () => {
    const job = run(`${ESCAPE} sleep 1`);
    await eventually(() => processesNamed(escapee(job)).length === 1, { what: 'the escapee to start' });
    expect(await job.result).toMatchObject({ exit_code: '0:0', outcome: 'exited' });
    expect(processesNamed(escapee(job))).toEqual([]);
  });

  it('kills a setsid child when the job is cancelled', async () => {
    const job = run(`${ESCAPE} sleep 300`);
    await eventually(() => processesNamed(escapee(job)).length === 1, { what: 'the escapee to start' });
    job.cancel('cancelled by test');
    expect(await job.result).toMatchObject({ outcome: 'cancelled' });
    expect(processesNamed(escapee(job))).toEqual([]);
  });

  it('kills a setsid child when the job runs over its time limit', async () => {
    const job = run(`${ESCAPE} sleep 300`, { time_limit_s: 2 });
    await eventually(() => processesNamed(escapee(job)).length === 1, { what: 'the escapee to start' });
    expect(await job.result).toMatchObject({ outcome: 'timeout' });
    expect(processesNamed(escapee(job))).toEqual([]);
  });

  it('the script runs as `bash script.sh` does, in its cgroup from its first line, the gate leaving no trace', async () => {
    const job = run(
      [
        // biome-ignore lint/suspicious/noTemplateCurlyInString: bash parameter expansions, not a template
        'echo "0=$0 BASH_ENV=${BASH_ENV-unset} GATE=${CONDUCTOR_GATE-unset} source=${BASH_SOURCE[*]} funcs=${FUNCNAME[*]-none}"',
        'if [ -e /proc/self/fd/4 ]; then echo fd4=open; else echo fd4=closed; fi',
        'grep -c "/conductor-[0-9a-f]*/$CONDUCTOR_JOB_ID.1$" /proc/self/cgroup || true',
        'return 3 2>/dev/null; echo "after return: $?"',
      ].join('\n'),
    );
    expect(await job.result).toMatchObject({ exit_code: '0:0', outcome: 'exited' });
    const [first, fd4, inCgroup, after] = readFileSync(job.stdoutPath, 'utf8').trim().split('\n');
    const scriptPath = join(job.dir, 'script.sh');
    expect(first).toBe(`0=${scriptPath} BASH_ENV=unset GATE=unset source=${scriptPath} funcs=none`);
    expect(fd4).toBe('fd4=closed');
    expect(Number(inCgroup)).toBe(kind === 'sweep' ? 0 : 1);
    expect(after).toBe('after return: 2');
  });

  it("a job's own BASH_ENV is still read before its script", async () => {
    const rc = join(root, `bash-env-${kind}.sh`);
    writeFileSync(rc, 'FROM_BASH_ENV=yes\n');
    // biome-ignore lint/suspicious/noTemplateCurlyInString: a bash parameter expansion, not a template
    const job = run('echo "from=${FROM_BASH_ENV-no} BASH_ENV=$BASH_ENV"', { environment: { BASH_ENV: rc } });
    expect(await job.result).toMatchObject({ exit_code: '0:0', outcome: 'exited' });
    expect(readFileSync(job.stdoutPath, 'utf8')).toBe(`from=yes BASH_ENV=${rc}\n`);
  });
});

describe.runIf(kinds.includes('cgroup2'))('after an agent crash', () => {
  it("kills what is left in a job's cgroup and removes it (the pid file names it)", async () => {
    const jobsDir = join(root, 'crashed-jobs');
    const containment = detect(jobsDir, 'cgroup2');
    const ref = { job_id: nextId++, attempt: 1 };
    const dir = join(jobsDir, `${ref.job_id}.${ref.attempt}`);
    mkdirSync(dir, { recursive: true });
    const cgroup = JobCgroup.create(containment, ref)!;
    // A leftover the previous agent did not get to kill: its own session, no marker, in the cgroup.
    const leftover = spawn('sleep', ['300'], { stdio: 'ignore', detached: true });
    await cgroup.add(leftover.pid!);
    writeFileSync(join(dir, 'pid'), JSON.stringify({ pid: 999_999, start_time: null, cgroup: cgroup.path }));
    expect(killOrphanGroup(dir)).toBe(true);
    await eventually(() => processGone(leftover.pid!), { timeoutMs: 5000, what: 'the leftover to die' });
    expect(existsSync(cgroup.path)).toBe(false);
  });
});

describe('CONDUCTOR_JOB_CONTAINMENT', () => {
  it('takes auto, cgroup2, cgroup1 or sweep and refuses anything else', () => {
    expect(parseAgentArgs([], {})).toMatchObject({ kind: 'run', config: { containment: 'auto' } });
    expect(parseAgentArgs([], { CONDUCTOR_JOB_CONTAINMENT: 'sweep' })).toMatchObject({
      config: { containment: 'sweep' },
    });
    expect(parseAgentArgs(['--job-containment', 'cgroup1'], {})).toMatchObject({
      config: { containment: 'cgroup1' },
    });
    expect(parseAgentArgs([], { CONDUCTOR_JOB_CONTAINMENT: 'systemd' })).toEqual({
      kind: 'error',
      message: 'CONDUCTOR_JOB_CONTAINMENT must be one of auto, cgroup2, cgroup1, sweep, got "systemd"',
    });
  });
});

const { pglite } = await agentBackends();

describe('a job does not outlive its agent', () => {
  const { control, track, unique } = useControlPlane(pglite, root);

  it.each(['auto', 'sweep'])(
    'kill -9 of the agent kills its running job, setsid children included (containment %s)',
    async (containment) => {
      const cp = control();
      const name = unique('victim');
      const agent = track(
        new AgentProcess(name, cp.url, {
          env: { CONDUCTOR_HEARTBEAT_INTERVAL: '1', CONDUCTOR_JOB_CONTAINMENT: containment },
        }),
      );
      await agent.registered();
      await agent.waitForLine(/Job containment: /);
      const tag = `${name}-${process.pid}`;
      const pidFile = join(root, `${tag}.pid`);
      const job = await cp.submit({
        script: `echo $$ > "$PIDFILE"; setsid bash -c 'exec -a escapee-$TAG sleep 300' & sleep 300`,
        cpus: 1,
        environment: { TAG: tag, PIDFILE: pidFile },
      });
      await cp.started(job.id);
      await eventually(() => processesNamed(`escapee-${tag}`).length === 1, { what: 'the escapee to start' });
      const leader = Number(readFileSync(pidFile, 'utf8'));
      expect(processGone(leader)).toBe(false);

      await agent.kill9();
      await eventually(() => processGone(leader) && processesNamed(`escapee-${tag}`).length === 0, {
        timeoutMs: 5000,
        what: "the job's processes to die with their agent",
      });
    },
  );

  it('one supervisor per agent, not one per job: it kills all its jobs on kill -9 and is replaced if killed itself', async () => {
    const cp = control();
    const name = unique('supervised');
    const agent = track(new AgentProcess(name, cp.url, { env: { CONDUCTOR_HEARTBEAT_INTERVAL: '1' } }));
    await agent.registered();
    const agentPid = agent.child.pid!;
    const tag = `${name}-${process.pid}`;
    const leaderOf = async (k: number) => {
      const pidFile = join(root, `${tag}-${k}.pid`);
      const job = await cp.submit({ script: `echo $$ > "${pidFile}"; sleep 300`, cpus: 1 });
      await cp.started(job.id);
      await eventually(() => existsSync(pidFile) && readFileSync(pidFile, 'utf8').trim() !== '', {
        what: `job ${k} to write its pid`,
      });
      return Number(readFileSync(pidFile, 'utf8'));
    };
    const leaders = [await leaderOf(1), await leaderOf(2), await leaderOf(3)];
    const first = supervisorsOf(agentPid);
    expect(first).toHaveLength(1);

    // Killed itself (by a stray kill, say): the next job starts a new one, which watches every job.
    process.kill(first[0]!, 'SIGKILL');
    await eventually(() => processGone(first[0]!), { what: 'the supervisor to die' });
    leaders.push(await leaderOf(4));
    const second = supervisorsOf(agentPid);
    expect(second).toHaveLength(1);
    expect(second[0]).not.toBe(first[0]);

    await agent.kill9();
    await eventually(() => leaders.every(processGone), {
      timeoutMs: 5000,
      what: 'all four jobs to die with their agent',
    });
  });
});

/** Supervisor shells the agent `agentPid` started (their $0 names them). */
function supervisorsOf(agentPid: number): number[] {
  const found: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      const argv = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
      if (
        ppid === agentPid &&
        argv.some((arg) => /^conductor-.*supervisor$/.test(arg)) &&
        !processGone(Number(entry))
      )
        found.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return found;
}
