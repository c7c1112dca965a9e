import { type ChildProcess, spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import net from 'node:net';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const ENTRY = fileURLToPath(new URL('../../functions/node.ts', import.meta.url));

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
    server.on('error', reject);
  });
}

/**
 * The Node server in its own process: from its TypeScript sources through tsx, or with `npmStart` exactly as
 * a user starts it (`npm start` from the repository's root: npm, then the built dist/server.mjs; `stop()`
 * then signals npm).
 */
export class ServerProcess {
  readonly lines: string[] = [];
  readonly child: ChildProcess;
  readonly url: string;
  private readonly exited: Promise<number | null>;

  constructor(
    port: number,
    env: Record<string, string>,
    options: { npmStart?: boolean; nodeArgs?: string[] } = {},
  ) {
    this.url = `http://127.0.0.1:${port}`;
    const [command, args] = options.npmStart
      ? ['npm', ['start']]
      : [process.execPath, options.nodeArgs ?? ['--import', 'tsx', ENTRY]];
    this.child = spawn(command, args, {
      cwd: ROOT,
      // CONDUCTOR_ALLOW_ROOT: tests run as root here, and the embedded agent refuses root without it.
      env: {
        PATH: process.env.PATH,
        HOME: process.env.HOME,
        PORT: String(port),
        CONDUCTOR_ALLOW_ROOT: '1',
        ...env,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const onData = (chunk: Buffer) => {
      for (const line of chunk.toString().split('\n')) {
        if (!line) continue;
        this.lines.push(line);
        if (process.env.CONDUCTOR_TEST_LOGS === '1') console.log(`[server] ${line}`);
      }
    };
    this.child.stdout?.on('data', onData);
    this.child.stderr?.on('data', onData);
    this.exited = new Promise((resolve) => this.child.once('exit', (code) => resolve(code)));
  }

  has(pattern: RegExp | string): boolean {
    return this.lines.some((l) => (typeof pattern === 'string' ? l.includes(pattern) : pattern.test(l)));
  }

  async ready(timeoutMs = 60_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (this.child.exitCode !== null) throw new Error(`server exited:\n${this.lines.join('\n')}`);
      try {
        const res = await fetch(`${this.url}/api/v1/health`);
        if (res.ok) return;
      } catch {}
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    throw new Error(`server not ready in ${timeoutMs} ms:\n${this.lines.join('\n')}`);
  }

  async stop(): Promise<number | null> {
    if (this.child.exitCode !== null) return this.child.exitCode;
    this.child.kill('SIGTERM');
    return this.exited;
  }
}

/** A process as /proc shows it; `started` (clock ticks since boot) tells it from a later one with its pid. */
export interface ProcessEntry {
  pid: number;
  ppid: number;
  started: string;
  command: string;
}

function processTable(): ProcessEntry[] {
  const table: ProcessEntry[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      // After the parenthesised command name: state, ppid, ..., starttime (the 22nd field).
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (fields[0] === 'Z') continue; // exited, waiting to be reaped
      const command = readFileSync(`/proc/${name}/cmdline`, 'utf8').split('\0').join(' ').trim();
      table.push({ pid: Number(name), ppid: Number(fields[1]), started: fields[19]!, command });
    } catch {} // gone meanwhile
  }
  return table;
}

/** Every live descendant of `pid` (children, their children, ...). */
export function descendantsOf(pid: number): ProcessEntry[] {
  const table = processTable();
  const found: ProcessEntry[] = [];
  const parents = new Set([pid]);
  for (let grew = true; grew; ) {
    grew = false;
    for (const entry of table) {
      if (parents.has(entry.ppid) && !parents.has(entry.pid)) {
        parents.add(entry.pid);
        found.push(entry);
        grew = true;
      }
    }
  }
  return found;
}

/** Those of `entries` still running (the same processes: same pid and start time). */
export function stillRunning(entries: ProcessEntry[]): ProcessEntry[] {
  const live = new Map(processTable().map((e) => [e.pid, e.started]));
  return entries.filter((e) => live.get(e.pid) === e.started);
}

/**
 * A command run exactly as a user types it (`npm start` from the repository's root, `npx conductor-agent`
 * where the agent package is installed), with its output collected. `pid` is the process the user started: npm.
 */
export class LaunchedCommand {
  readonly lines: string[] = [];
  readonly child: ChildProcess;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /**
   * Every process that held its stdout or stderr has closed them, and all they wrote has been read: what a
   * test checks in the output after the processes are gone must wait for this, not for their exit.
   */
  readonly drained: Promise<void>;

  constructor(command: string, args: string[], env: Record<string, string>, cwd = ROOT) {
    this.child = spawn(command, args, {
      cwd,
      env: { PATH: process.env.PATH, HOME: process.env.HOME, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const onData = (chunk: Buffer) => {
      for (const line of chunk.toString().split('\n')) {
        if (!line) continue;
        this.lines.push(line);
        if (process.env.CONDUCTOR_TEST_LOGS === '1') console.log(`[${command} ${args[0]}] ${line}`);
      }
    };
    this.child.stdout?.on('data', onData);
    this.child.stderr?.on('data', onData);
    this.exited = new Promise((resolve) =>
      this.child.once('exit', (code, signal) => resolve({ code, signal })),
    );
    this.drained = new Promise((resolve) => this.child.once('close', () => resolve()));
  }

  get pid(): number {
    return this.child.pid!;
  }

  has(text: string): boolean {
    return this.lines.some((l) => l.includes(text));
  }

  output(): string {
    return this.lines.join('\n');
  }
}
