/**
 * Tools that drive Slurm through its commands run unchanged against Conductor: the Node server (real Postgres
 * and Redis), a real agent, and the drop-in commands written by `conductor slurm-commands DIR` first on PATH.
 * A shell pipeline parses `sbatch --parsable` and `sacct -P -n -o JobIdRaw,State -j`, and Snakemake 7.21's
 * `--slurm` mode (sinfo, sacct, sbatch --wrap, srun inside the job) runs a workflow whose steps depend on each
 * other. Slurm's own binaries may be installed too: they are never reached (no slurmctld runs here).
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { delimiter, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningServer } from '../../functions/node/server.ts';
import { AgentProcess } from '../support/agent-process.ts';
import { availableBackends, type Backend, startTestServer, testConfig } from '../support/cluster.ts';

const ROOT = join(import.meta.dirname, '..', '..');
const [factory] = await availableBackends();
const snakemake = ['/usr/bin/snakemake', '/usr/local/bin/snakemake'].find((p) => existsSync(p));
// CI installs Snakemake (.ci/run): there, its absence is a failure, not a skip.
const required = process.env.CONDUCTOR_REQUIRE_SERVICES === '1';

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a command to its end with `env`, collecting its output. */
function run(command: string, args: string[], env: NodeJS.ProcessEnv, cwd: string, timeoutMs = 240_000) {
  return new Promise<Run>((resolve, reject) => {
    const child = spawn(command, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => {
      stdout += c.toString();
    });
    child.stderr.on('data', (c: Buffer) => {
      stderr += c.toString();
    });
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(
        new Error(`${command} ${args.join(' ')} did not finish in ${timeoutMs} ms:\n${stdout}\n${stderr}`),
      );
    }, timeoutMs);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

describe.runIf(factory)('Slurm workflows through the drop-in commands, with a real agent', () => {
  let backend: Backend;
  let server: RunningServer;
  let agent: AgentProcess;
  const tag = `${process.pid}`;
  const node = `slurm01-${tag}`;
  const root = mkdtempSync(join(tmpdir(), 'slurm-workflow-'));
  const bin = join(root, 'bin');
  let env: NodeJS.ProcessEnv;

  beforeAll(async () => {
    backend = await (factory as NonNullable<typeof factory>).create();
    server = await startTestServer(backend, testConfig({ heartbeatIntervalSeconds: 1, workerTtlSeconds: 3 }));
    agent = new AgentProcess(node, server.url, { cpus: 4, env: { TOTAL_MEMORY: '4G' } });
    await agent.registered();
    // As a user does it: the CLI of this checkout writes the commands, and DIR goes first on PATH.
    execFileSync('npm', ['run', '--silent', 'conductor', '--', 'slurm-commands', bin], {
      cwd: ROOT,
      env: { ...process.env, CONDUCTOR_URL: server.url },
      stdio: 'pipe',
    });
    env = {
      PATH: `${bin}${delimiter}${process.env.PATH}`,
      HOME: process.env.HOME,
      USER: userInfo().username,
      LANG: 'C.UTF-8',
      CONDUCTOR_URL: server.url,
    };
  }, 120_000);

  afterAll(async () => {
    await agent?.stop().catch(() => agent.kill9());
    await server?.close();
    await backend?.close();
  });

  it('a shell pipeline: sbatch --parsable, polling sacct -P -n -o JobIdRaw,State, a step that reads the one before', {
    timeout: 180_000,
  }, async () => {
    const work = join(root, 'pipeline');
    mkdirSync(work);
    writeFileSync(
      join(work, 'pipeline.sh'),
      `#!/bin/bash
set -euo pipefail
wait_for() { # job id: polls sacct until the job ends; fails unless COMPLETED
  while :; do
    state=$(sacct -P -n -o JobIdRaw,State -j "$1" | awk -F'|' -v id="$1" '$1 == id { print $2 }')
    case "$state" in
      COMPLETED) return 0 ;;
      FAILED|CANCELLED*|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY|BOOT_FAIL|DEADLINE|PREEMPTED) echo "job $1 ended $state" >&2; return 1 ;;
    esac
    sleep 0.5
  done
}
first=$(sbatch --parsable -J first --wrap 'echo 21 > first.txt')
wait_for "$first"
second=$(sbatch --parsable <<'EOF'
#!/bin/bash
#SBATCH --job-name=double
#SBATCH --cpus-per-task=2
echo $(( $(cat first.txt) * 2 )) > second.txt
echo "ran as $SLURM_JOB_ID with $SLURM_CPUS_PER_TASK cpus in $PWD"
EOF
)
wait_for "$second"
echo "first=$first second=$second"
`,
    );
    const result = await run('bash', ['pipeline.sh'], env, work);
    expect(result.code, `${result.stdout}\n${result.stderr}`).toBe(0);
    const [, first, second] = /first=(\d+) second=(\d+)/.exec(result.stdout) ?? [];
    expect(readFileSync(join(work, 'second.txt'), 'utf8')).toBe('42\n');
    // Written by the agent, in the submit directory, under sbatch's default name.
    expect(readFileSync(join(work, `slurm-${second}.out`), 'utf8')).toBe(
      `ran as ${second} with 2 cpus in ${work}\n`,
    );
    expect(existsSync(join(work, `slurm-${first}.out`))).toBe(true);
    const sacct = await run(
      'sacct',
      ['-P', '-n', '-o', 'JobIdRaw,JobName,State,ExitCode', '-j', `${first},${second}`],
      env,
      work,
    );
    expect(sacct.stdout).toContain(`${second}|double|COMPLETED|0:0`);
  });

  it.runIf(snakemake || required)(
    'Snakemake --slurm runs a workflow of dependent rules to completion',
    {
      timeout: 300_000,
    },
    async () => {
      const work = join(root, 'snakemake');
      mkdirSync(work);
      writeFileSync(
        join(work, 'Snakefile'),
        `rule all:
    input: "report.txt"

rule count:
    output: "count.txt"
    shell: "seq 1 10 | wc -l > {output}; echo job $SLURM_JOB_ID >> {output}"

rule report:
    input: "count.txt"
    output: "report.txt"
    threads: 2
    shell: "head -n1 {input} > {output}; echo cpus $SLURM_CPUS_PER_TASK >> {output}"
`,
      );
      const result = await run(
        snakemake ?? 'snakemake',
        [
          '--slurm',
          '--jobs',
          '2',
          '--latency-wait',
          '10',
          '--max-status-checks-per-second',
          '1',
          '--default-resources',
          'runtime=10',
        ],
        { ...env, CI: 'true' },
        work,
      );
      expect(result.code, `${result.stdout}\n${result.stderr}`).toBe(0);
      expect(readFileSync(join(work, 'report.txt'), 'utf8')).toBe('10\ncpus 2\n');
      expect(readFileSync(join(work, 'count.txt'), 'utf8')).toMatch(/^10\njob \d+\n$/);
      expect(`${result.stdout}${result.stderr}`).toMatch(/3 of 3 steps \(100%\) done/);
    },
  );
});
