/**
 * The node agent's footprint: memory (RSS) and CPU time of the BUILT agent (`node agent/dist/cli.js`, as the
 * package runs it) while idle, and optionally while a job writes about 10 MB/s of output.
 *
 *   npx tsx bench/agent-footprint.ts                        # build the agent, 300 s idle, 60 s loaded
 *   FOOTPRINT_IDLE_S=600 FOOTPRINT_LOAD_S=0 npx tsx bench/agent-footprint.ts
 *   FOOTPRINT_NODE_OPTIONS='--max-semi-space-size=1' ...    # extra flags for the agent's node (experiments)
 *   FOOTPRINT_AGENT_DIR=/tmp/old-agent ...                   # another build (its package.json and dist/)
 *
 * It starts a control plane of its own in this process (the Node server over an in-memory PGlite and the
 * in-process registry, the default configuration: heartbeat 30 s, claim long poll 30 s; in this process
 * rather than as `functions/node.ts`, so that nothing else on the machine stopping stray servers can stop
 * it mid-run), starts the agent against it, waits
 * for `Worker registered` and a settle time, then samples the agent's /proc/<pid>/status VmRSS and
 * /proc/<pid>/stat utime+stime once a second. CPU-seconds per hour are the CPU time used during the window,
 * extrapolated. CPU time is the agent's own (not its jobs': they are other processes and are waited for only
 * when they end, so a running job's CPU is not in utime/stime), so other load on the machine changes it
 * little, but the load average is printed with the result anyway.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { connectPglite, migratePglite } from '../db/pglite.ts';
import { createLocalNotifier } from '../functions/domain/notifier.ts';
import { DEFAULT_CONFIG, type Logger } from '../functions/domain/ports.ts';
import { startServer } from '../functions/node/server.ts';
import { MemoryRegistryStore } from '../functions/registry/memory-store.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const IDLE_S = Number(process.env.FOOTPRINT_IDLE_S ?? 300);
const LOAD_S = Number(process.env.FOOTPRINT_LOAD_S ?? 60);
const SETTLE_S = Number(process.env.FOOTPRINT_SETTLE_S ?? 20);
/** Another build of the agent (a folder with its package.json and dist/), e.g. a copy of the previous one. */
const AGENT_DIR = process.env.FOOTPRINT_AGENT_DIR ?? join(ROOT, 'agent');
const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;

interface Sample {
  t: number;
  rssKb: number;
  cpuTicks: number;
}

function sample(pid: number): Sample {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const rssKb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? Number.NaN);
  // Fields after the command name (which may hold spaces) start at field 3: utime is 14, stime 15.
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const cpuTicks = Number(fields[11]) + Number(fields[12]);
  return { t: Date.now(), rssKb, cpuTicks };
}

function summarize(label: string, samples: Sample[]) {
  const rss = samples.map((s) => s.rssKb / 1024).sort((a, b) => a - b);
  const first = samples[0]!;
  const last = samples[samples.length - 1]!;
  const seconds = (last.t - first.t) / 1000;
  const cpuS = (last.cpuTicks - first.cpuTicks) / CLK_TCK;
  const result = {
    phase: label,
    seconds: Math.round(seconds),
    rss_median_mb: Number(rss[Math.floor(rss.length / 2)]!.toFixed(1)),
    rss_max_mb: Number(rss[rss.length - 1]!.toFixed(1)),
    cpu_s: Number(cpuS.toFixed(2)),
    cpu_s_per_hour: Number(((cpuS / seconds) * 3600).toFixed(2)),
    cpu_percent: Number(((cpuS / seconds) * 100).toFixed(2)),
    load_avg_1m: Number(loadavg()[0]!.toFixed(2)),
  };
  console.log(
    `${label}: ${result.seconds} s, RSS median ${result.rss_median_mb} MB, max ${result.rss_max_mb} MB, ` +
      `CPU ${result.cpu_s} s = ${result.cpu_s_per_hour} CPU-s/hour = ${result.cpu_percent} % of a core ` +
      `(load average ${result.load_avg_1m})`,
  );
  return result;
}

async function sampleFor(pid: number, seconds: number): Promise<Sample[]> {
  const samples = [sample(pid)];
  const end = Date.now() + seconds * 1000;
  while (Date.now() < end) {
    await new Promise((resolve) => setTimeout(resolve, 1000));
    samples.push(sample(pid));
  }
  return samples;
}

async function waitFor(what: string, check: () => boolean, timeoutMs = 60_000) {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

async function main() {
  if (process.env.FOOTPRINT_NO_BUILD !== '1' && !process.env.FOOTPRINT_AGENT_DIR) {
    execFileSync('npm', ['run', '--silent', 'build:agent'], { cwd: ROOT, stdio: 'inherit' });
  }
  const work = mkdtempSync(join(tmpdir(), 'agent-footprint-'));
  const lite = await connectPglite();
  await migratePglite(lite);
  const lines: string[] = [];
  const record = (level: string) => (message: string) => {
    lines.push(`${level} ${message}`);
  };
  const logger: Logger = {
    info: record('info'),
    warn: record('warn'),
    error: record('error'),
  };
  const server = await startServer(
    {
      db: lite.db,
      registry: new MemoryRegistryStore(),
      notifier: createLocalNotifier(),
      logger,
      config: DEFAULT_CONFIG,
    },
    { port: 0, host: '127.0.0.1' },
  );
  let agent: ChildProcess | undefined;
  try {
    let log = '';
    const extra = process.env.FOOTPRINT_NODE_OPTIONS?.split(/\s+/).filter(Boolean) ?? [];
    agent = spawn(process.execPath, [...extra, join(AGENT_DIR, 'dist', 'cli.js')], {
      env: {
        PATH: process.env.PATH,
        HOME: work,
        CONDUCTOR_URL: server.url,
        NODE_NAME: 'footprint-node',
        TOTAL_CPUS: '4',
        CONDUCTOR_STATE_DIR: join(work, 'agent-state'),
        CONDUCTOR_ALLOW_ROOT: '1',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    agent.stdout?.on('data', (d: Buffer) => {
      log += d.toString();
    });
    agent.stderr?.on('data', (d: Buffer) => {
      log += d.toString();
    });
    const pid = agent.pid!;
    await waitFor('the agent to register', () => log.includes('Worker registered'));
    console.log(
      `agent pid ${pid} (node ${process.version}${extra.length ? ` ${extra.join(' ')}` : ''}) registered; ` +
        `settling ${SETTLE_S} s, then ${IDLE_S} s idle${LOAD_S > 0 ? `, ${LOAD_S} s with a 10 MB/s job` : ''}`,
    );
    await new Promise((resolve) => setTimeout(resolve, SETTLE_S * 1000));
    const results = [summarize('idle', await sampleFor(pid, IDLE_S))];

    if (LOAD_S > 0) {
      // About 10 MB of output a second: ten 1 MB lines, then a pause.
      const script = `for i in $(seq ${LOAD_S}); do head -c 10000000 /dev/zero | tr '\\0' x | fold -w 1000000; sleep 1; done`;
      const res = await fetch(`${server.url}/api/v1/jobs/submit`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ script, cpus: 1, name: 'output-10mbs' }),
      });
      const { id } = (await res.json()) as { id: number };
      await waitFor('the job to start', () => log.includes(`${id}`), 30_000).catch(() => {});
      results.push(summarize('10 MB/s output', await sampleFor(pid, LOAD_S)));
      const job = (await (await fetch(`${server.url}/api/v1/jobs/${id}/logs?tail=0`)).json()) as {
        stdout: { bytes?: number; total_bytes?: number };
      };
      console.log(`job ${id} output as the server counts it: ${JSON.stringify(job.stdout)}`);
    }
    console.log(JSON.stringify({ date: new Date().toISOString(), node: process.version, results }));
  } catch (error) {
    console.error(`failed: ${(error as Error).message}; the server's last lines:`);
    console.error(lines.slice(-30).join('\n'));
    process.exitCode = 1;
  } finally {
    agent?.kill('SIGTERM');
    if (agent && agent.exitCode === null) await new Promise((resolve) => agent!.once('exit', resolve));
    await server.close();
    await lite.close();
    rmSync(work, { recursive: true, force: true });
  }
}

await main();
