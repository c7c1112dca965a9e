/**
 * The zero-setup server's start-up, measured on the real `npm start` (run from the repository's root as a user
 * runs it): the time from spawning npm to the first 200 on GET /api/v1/health, to the local agent's
 * registration, and the memory (RSS, from /proc) of the server and of its agent once settled. A first start
 * (empty data directory) and a second start (the same directory again) are measured separately.
 *
 *   npx tsx bench/startup.ts                 # 3 rounds; STARTUP_ROUNDS=5 for more
 *
 * `npm run bench` runs it as scenario 7. The machine's load average is printed with the result: on a busy
 * machine the times grow.
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { descendantsOf, freePort, stillRunning } from '../test/support/server-process.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

export interface StartupSample {
  /** Spawning `npm start` → the first 200 on /api/v1/health. */
  healthMs: number;
  /** Spawning `npm start` → the local agent registered. */
  agentMs: number;
  /**
   * CPU time (user + system) that everything `npm start` ran had used at the first 200: unlike the wall time,
   * it barely moves with the machine's load.
   */
  cpuSecondsToHealth: number;
  serverRssMb: number;
  agentRssMb: number;
  /** Everything `npm start` runs, npm itself included. */
  treeRssMb: number;
}

const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;

/** utime + stime + cutime + cstime (waited-for children that exited count in their parent's). */
function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return [11, 12, 13, 14].reduce((sum, i) => sum + Number(fields[i]), 0) / CLK_TCK;
  } catch {
    return 0;
  }
}

const rssMb = (pid: number) => {
  try {
    return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) / 1024;
  } catch {
    return 0;
  }
};

/** One `npm start` on `dataDir`: started, measured, stopped with SIGTERM (as a user stops it). */
export async function measureOneStart(dataDir: string, settleMs = 5_000): Promise<StartupSample> {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const started = performance.now();
  const npm = spawn('npm', ['start'], {
    cwd: ROOT,
    env: {
      PATH: process.env.PATH,
      HOME: process.env.HOME,
      PORT: String(port),
      CONDUCTOR_DATA_DIR: dataDir,
      CONDUCTOR_ALLOW_ROOT: '1',
      NODE_NAME: 'startup-bench',
      TOTAL_CPUS: '2',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  let agentMs = 0;
  const onData = (chunk: Buffer) => {
    output += chunk.toString();
    if (!agentMs && output.includes('✓ Worker registered: startup-bench'))
      agentMs = performance.now() - started;
  };
  npm.stdout.on('data', onData);
  npm.stderr.on('data', onData);
  const exited = new Promise((resolve) => npm.once('exit', resolve));
  try {
    let healthMs = 0;
    let cpuSecondsToHealth = 0;
    while (!healthMs) {
      if (npm.exitCode !== null) throw new Error(`npm start exited:\n${output}`);
      if (performance.now() - started > 180_000) throw new Error(`no answer in 180 s:\n${output}`);
      const ok = await fetch(`${url}/api/v1/health`).then(
        (res) => res.ok,
        () => false,
      );
      if (ok) {
        healthMs = performance.now() - started;
        const tree = [npm.pid!, ...descendantsOf(npm.pid!).map((p) => p.pid)];
        cpuSecondsToHealth = tree.reduce((sum, pid) => sum + cpuSeconds(pid), 0);
      } else await new Promise((resolve) => setTimeout(resolve, 20));
    }
    while (!agentMs) {
      if (performance.now() - started > 180_000) throw new Error(`the agent never registered:\n${output}`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    await new Promise((resolve) => setTimeout(resolve, settleMs));
    const tree = descendantsOf(npm.pid!);
    const server = tree.find(
      (p) => /dist\/server\.mjs|functions\/node\.ts/.test(p.command) && !/tsx /.test(p.command),
    );
    const agent = tree.find(
      (p) => /dist\/agent\.mjs|agent\/src\/cli\.ts/.test(p.command) && !/tsx /.test(p.command),
    );
    return {
      healthMs,
      agentMs,
      cpuSecondsToHealth,
      serverRssMb: server ? rssMb(server.pid) : 0,
      agentRssMb: agent ? rssMb(agent.pid) : 0,
      treeRssMb: rssMb(npm.pid!) + tree.reduce((sum, p) => sum + rssMb(p.pid), 0),
    };
  } finally {
    const tree = descendantsOf(npm.pid!);
    npm.kill('SIGTERM');
    await exited;
    // A launcher that leaves its server running (the tsx `npm start` before the fix) must not skew the next start.
    for (const left of stillRunning(tree)) {
      try {
        process.kill(left.pid, 'SIGTERM');
      } catch {}
    }
    for (let waited = 0; stillRunning(tree).length > 0 && waited < 30_000; waited += 100) {
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
}

const median = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor((sorted.length - 1) / 2)]!;
};

/** `rounds` × (a first start on an empty data directory, then a second start on the same directory). */
export async function measureStartup(rounds = 3, log: (line: string) => void = console.log) {
  const first: StartupSample[] = [];
  const second: StartupSample[] = [];
  for (let round = 0; round < rounds; round++) {
    const dataDir = mkdtempSync(join(tmpdir(), 'conductor-startup-'));
    try {
      first.push(await measureOneStart(dataDir));
      second.push(await measureOneStart(dataDir));
      log(
        `round ${round + 1}: first start ${JSON.stringify(first.at(-1))}, second ${JSON.stringify(second.at(-1))} (load average ${loadavg()
          .map((x) => x.toFixed(2))
          .join(' ')})`,
      );
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  }
  const summary = (samples: StartupSample[]) => ({
    health_ms: Math.round(median(samples.map((s) => s.healthMs))),
    agent_registered_ms: Math.round(median(samples.map((s) => s.agentMs))),
    cpu_seconds_to_health: Number(median(samples.map((s) => s.cpuSecondsToHealth)).toFixed(2)),
    server_rss_mb: Math.round(median(samples.map((s) => s.serverRssMb))),
    agent_rss_mb: Math.round(median(samples.map((s) => s.agentRssMb))),
    tree_rss_mb: Math.round(median(samples.map((s) => s.treeRssMb))),
  });
  return { rounds, first_start: summary(first), second_start: summary(second) };
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const result = await measureStartup(Number(process.env.STARTUP_ROUNDS ?? 3));
  console.log(
    JSON.stringify({ ...result, load_average: loadavg().map((x) => Number(x.toFixed(2))) }, null, 2),
  );
}
