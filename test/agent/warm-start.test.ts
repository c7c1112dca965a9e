/**
 * Warm starts (agent/src/warm-start.ts): with jobs contained in cgroups, the agent keeps a spare shell
 * already in a cgroup of its own, and a job becomes that shell instead of waiting at its gate for the
 * kernel to move it. The job must not be able to tell: the same environment, directory, open files, exit
 * status and containment as a job started cold; the spare is replaced after each use and leaves nothing
 * behind when the agent stops or dies.
 */
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  type Containment,
  type ContainmentKind,
  detectContainment,
  removeContainment,
} from '../../agent/src/containment.ts';
import { type JobProcess, startJob } from '../../agent/src/executor.ts';
import type { Assignment } from '../../agent/src/protocol.ts';
import {
  closeWarmStarts,
  openWarmStarts,
  warmShellReady,
  warmStartCommands,
} from '../../agent/src/warm-start.ts';
import { AgentProcess, eventually } from '../support/agent-process.ts';
import { agentBackends, processGone, useControlPlane } from './control-plane.ts';

const root = mkdtempSync(join(tmpdir(), 'conductor-warm-'));
const detected: Containment[] = [];
afterAll(() => {
  for (const containment of detected) removeContainment(containment);
  rmSync(root, { recursive: true, force: true });
});

const kinds = (['cgroup2', 'cgroup1'] as const).filter(
  (kind) => detectContainment(join(root, `probe-${kind}`), kind).kind === kind,
);
if (kinds.length === 0)
  console.warn('[warm-start] no cgroup here: warm starts are not used, nothing to test');

let nextId = 600_000 + Math.floor(Math.random() * 50_000);

/** What a job can see of how it was started, with the values that differ per job id and folder masked. */
const PROBE = `env -0 | sort -z | tr '\\0' '\\n' | sed -e "s#$PWD#<dir>#g" -e "s#\\b$SLURM_JOB_ID\\b#<id>#g" > "$CONDUCTOR_PROBE_ENV"
echo "cwd=$PWD"
echo "fds=$(ls /proc/$$/fd | sort -n | tr '\\n' ' ')"
echo "pgid=$(($(ps -o pgid= -p $$)))" "pid=$$" "sid=$(($(ps -o sid= -p $$)))"
echo "umask=$(umask)"
echo "cgroup=$(tr '\\n' ' ' < /proc/self/cgroup)"
echo "to stderr" >&2
exit 7`;

describe.each(kinds)('warm starts: %s', (kind) => {
  const dirs = { cold: join(root, `cold-${kind}`, 'jobs'), warm: join(root, `warm-${kind}`, 'jobs') };
  const containment = {
    cold: detectContainment(dirs.cold, kind as ContainmentKind),
    warm: detectContainment(dirs.warm, kind as ContainmentKind),
  };
  detected.push(containment.cold, containment.warm);
  openWarmStarts(dirs.warm, containment.warm);
  afterAll(() => closeWarmStarts(dirs.warm));

  const ready = () => eventually(() => warmShellReady(dirs.warm), { what: 'a spare shell' });

  function run(which: 'cold' | 'warm', script: string, extra: Partial<Assignment> = {}): JobProcess {
    return startJob(
      {
        job_id: nextId++,
        attempt: 1,
        name: 'warm',
        script,
        cpus: 1,
        work_dir: null,
        environment: {},
        time_limit_s: null,
        ...extra,
      },
      { jobsDir: dirs[which], containment: containment[which] },
    );
  }

  it('starts a job the job cannot tell from a cold start, in a cgroup of its own', async () => {
    await ready();
    const seen: Record<string, { out: string; env: string; err: string; result: unknown }> = {};
    for (const which of ['cold', 'warm'] as const) {
      const probeEnv = join(root, `${kind}-${which}.env`);
      const job = run(which, PROBE, {
        environment: {
          CONDUCTOR_PROBE_ENV: probeEnv,
          QUOTED: `it's "here" $HOME \`x\` \\ \n second line`,
          EMPTY: '',
        },
      });
      const result = await job.result;
      seen[which] = {
        out: readFileSync(job.stdoutPath, 'utf8'),
        env: readFileSync(probeEnv, 'utf8')
          .replaceAll(dirname(dirs[which]), '<state>')
          .replaceAll(probeEnv, '<env>')
          .replace(/^CONDUCTOR_JOB_MARKER=.*$/m, 'CONDUCTOR_JOB_MARKER=<marker>')
          // The second of its start: the two jobs may start in different ones.
          .replace(/^SLURM_JOB_START_TIME=\d+$/m, 'SLURM_JOB_START_TIME=<time>'),
        err: readFileSync(job.stderrPath, 'utf8'),
        result,
      };
    }
    const { cold, warm } = seen as Record<'cold' | 'warm', (typeof seen)[string]>;
    expect(warm.result).toEqual(cold.result);
    expect(warm.result).toMatchObject({ exit_code: '7:0', outcome: 'exited' });
    expect(warm.err).toBe('to stderr\n');
    expect(cold.err).toBe('to stderr\n');
    expect(warm.env).toBe(cold.env);
    expect(warm.env).toContain(`QUOTED=it's "here" $HOME \`x\` \\ \n second line\n`);
    expect(warm.env).toMatch(/^EMPTY=$/m);
    const fields = (out: string) =>
      Object.fromEntries(
        out
          .trim()
          .split('\n')
          .map((l) => l.split(/=(.*)/s)),
      );
    const [c, w] = [fields(cold.out), fields(warm.out)];
    expect(w.fds).toBe(c.fds);
    expect(w.umask).toBe(c.umask);
    expect(w.cwd).toMatch(new RegExp(`${dirs.warm}/\\d+\\.1$`));
    // Its own session and process group, as a spawned job.
    const [pgid, pid, sid] = (w.pgid as string).match(/\d+/g)!;
    expect(pgid).toBe(pid);
    expect(sid).toBe(pid);
    // The spare's cgroup, not the agent's: in it before its first line.
    expect(c.cgroup).toMatch(/\/\d+\.1( |$)/);
    expect(w.cgroup).toMatch(/\/spare-\d+-\d+( |$)/);
  });

  it('keeps a job in the spare contained: a setsid child dies with it; stderr follows stdout as sbatch does', async () => {
    await ready();
    const job = run('warm', `setsid sleep 300 & echo "child=$!"; echo err >&2; exit 0`, {
      stdout: join(root, `${kind}-sbatch-%j.out`),
    });
    const result = await job.result;
    expect(result).toMatchObject({ exit_code: '0:0', outcome: 'exited' });
    const out = readFileSync(job.stdoutPath, 'utf8');
    expect(out).toContain('err\n');
    const child = Number(/child=(\d+)/.exec(out)?.[1]);
    await eventually(() => processGone(child), { what: 'the setsid child killed with its job' });
  });

  it('is replaced after each use; a burst takes the gate when no spare is ready; no cgroup or start file is left', async () => {
    await ready();
    const jobs = Array.from({ length: 4 }, () => run('warm', 'tr "\\n" " " < /proc/self/cgroup'));
    const outs = await Promise.all(
      jobs.map(async (job) => {
        expect(await job.result).toMatchObject({ exit_code: '0:0' });
        return readFileSync(job.stdoutPath, 'utf8');
      }),
    );
    // One took the spare; the others, started in the same turn, their own cgroups.
    expect(outs.filter((o) => /spare-/.test(o))).toHaveLength(1);
    expect(outs.filter((o) => /\/\d+\.1 /.test(o))).toHaveLength(3);
    await ready();
    const parent = containment.warm.parent!;
    const spares = readdirSync(parent).filter((n) => n.startsWith('spare-'));
    expect(spares).toHaveLength(1);
    expect(readdirSync(parent).filter((n) => /^\d+\.\d+$/.test(n))).toEqual([]);
    expect(readdirSync(dirname(dirs.warm)).filter((n) => n.endsWith('.warm-start'))).toEqual([]);
  });

  it('writes every value as a single-quoted word, whatever it holds', () => {
    const commands = warmStartCommands({
      cwd: "/a b/it's",
      stdout: '/o',
      stderr: undefined,
      env: { A: "x'y" },
      script: '/s',
    });
    expect(commands).toContain(`cd -- '/a b/it'\\''s' || exit 1`);
    expect(commands).toContain(`exec >>'/o' 2>&1 || exit 1`);
    expect(commands).toContain(`-i -- 'A=x'\\''y' bash '/s'`);
  });
});

const { pglite } = await agentBackends();

describe.runIf(kinds.length > 0)('warm starts in the agent', () => {
  const { control, track, unique } = useControlPlane(pglite, root);

  it("runs a job in its spare; a killed agent's spare ends with it, and the next run removes its cgroup", async () => {
    const cp = control();
    const name = unique('warm');
    const agent = track(new AgentProcess(name, cp.url, { env: { CONDUCTOR_HEARTBEAT_INTERVAL: '1' } }));
    await agent.registered();
    const line = await agent.waitForLine(/Job containment: a cgroup/);
    const parent = /in (\/\S+), killed/.exec(line)?.[1];
    expect(parent).toBeDefined();
    const spares = () => readdirSync(parent!).filter((n) => n.startsWith('spare-'));
    await eventually(() => spares().length === 1, { what: 'a spare' });
    const job = await cp.submit({ script: 'tr "\\n" " " < /proc/self/cgroup', cpus: 1 });
    await cp.finished(job.id);
    expect((await cp.logs(job.id)).stdout.content).toMatch(/\/spare-\d+-\d+ /);

    await eventually(() => spares().length === 1, { what: 'the next spare' });
    const spare = spares()[0]!;
    const pid = Number(readFileSync(join(parent!, spare, 'cgroup.procs'), 'utf8').trim());
    await agent.kill9();
    await eventually(() => processGone(pid), { what: 'the spare to end with its agent' });
    const again = track(
      new AgentProcess(name, cp.url, {
        env: { CONDUCTOR_HEARTBEAT_INTERVAL: '1' },
        stateDir: agent.stateDir,
      }),
    );
    await eventually(() => !existsSync(join(parent!, spare)), { what: "the dead spare's cgroup removed" });
    await eventually(() => spares().length === 1, { what: "the new run's spare" });
    // A clean stop takes its spare and leaves no cgroup of the agent.
    await again.stop();
    expect(existsSync(parent!)).toBe(false);
  });
});
