/**
 * The real parts the fault suites break, with no test-runner dependency (the bench scripts use them too): a
 * private `redis-server` process, a TCP proxy in front of Postgres that can be cut, and process-group probes.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import net from 'node:net';
import { eventually } from '../support/agent-process.ts';
import { freePort } from '../support/server-process.ts';

const echo = process.env.CONDUCTOR_TEST_LOGS === '1';

// ---- a private Redis ---------------------------------------------------------------------------------------

/** `redis-server` on a free port of its own, no persistence: kill it and it comes back empty. */
export class RedisServer {
  child: ChildProcess | undefined;
  readonly url: string;
  private exited: Promise<void> = Promise.resolve();

  private constructor(readonly port: number) {
    this.url = `redis://127.0.0.1:${port}`;
  }

  static async start(): Promise<RedisServer> {
    const redis = new RedisServer(await freePort());
    await redis.start();
    return redis;
  }

  get running(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Starts (or restarts) the server on its port and waits until it answers PING. */
  async start(): Promise<void> {
    if (this.running) return;
    const child = spawn(
      'redis-server',
      ['--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    const lines: string[] = [];
    const onData = (chunk: Buffer) => {
      lines.push(chunk.toString());
      if (echo) process.stdout.write(`[redis:${this.port}] ${chunk}`);
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    this.child = child;
    this.exited = new Promise((resolve) => child.once('exit', () => resolve()));
    await eventually(
      () => {
        if (child.exitCode !== null) throw new Error(`redis-server exited: ${lines.join('')}`);
        return this.cli('PING') === 'PONG';
      },
      { timeoutMs: 10_000, intervalMs: 50, what: `redis-server on ${this.port}` },
    );
  }

  /** Stops it the hard way (SIGKILL by default) and waits for the process to be gone. */
  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    if (!this.running) return;
    this.child?.kill(signal);
    await this.exited;
  }

  /** redis-cli against this server; trimmed output (errors come back as text, never thrown). */
  cli(...args: string[]): string {
    try {
      return execFileSync('redis-cli', ['-h', '127.0.0.1', '-p', String(this.port), ...args], {
        encoding: 'utf8',
        timeout: 5_000,
        stdio: ['ignore', 'pipe', 'pipe'],
      }).trim();
    } catch (error) {
      return `ERR ${(error as Error).message}`;
    }
  }

  /** The fields of a hash, as redis-cli HGETALL lists them. */
  hash(key: string): Record<string, string> {
    const flat = this.cli('HGETALL', key).split('\n').filter(Boolean);
    const out: Record<string, string> = {};
    for (let i = 0; i + 1 < flat.length; i += 2) out[flat[i]!] = flat[i + 1]!;
    return out;
  }

  close(): Promise<void> {
    return this.kill('SIGKILL');
  }
}

// ---- a Postgres that can become unreachable ----------------------------------------------------------------

/**
 * A TCP proxy in front of the real Postgres. `cut()` destroys every open connection and stops listening (new
 * connections are refused: Postgres looks down), `restore()` listens again on the same port.
 */
export class PgProxy {
  private server: net.Server | undefined;
  private readonly sockets = new Set<net.Socket>();
  private frozen = false;
  connections = 0;

  private constructor(
    readonly port: number,
    private readonly target: { host: string; port: number },
  ) {}

  static async start(targetUrl: string): Promise<PgProxy> {
    const url = new URL(targetUrl);
    const proxy = new PgProxy(await freePort(), { host: url.hostname, port: Number(url.port || 5432) });
    await proxy.restore();
    return proxy;
  }

  /** `url` (a database URL on the real Postgres) rewritten to go through the proxy. */
  through(url: string): string {
    const u = new URL(url);
    u.hostname = '127.0.0.1';
    u.port = String(this.port);
    return u.toString();
  }

  get isCut(): boolean {
    return this.server === undefined;
  }

  async restore(): Promise<void> {
    if (this.server) return;
    const server = net.createServer((client) => {
      this.connections++;
      if (this.frozen) {
        this.sockets.add(client.pause());
        return;
      }
      const upstream = net.connect(this.target);
      this.sockets.add(client);
      this.sockets.add(upstream);
      const drop = () => {
        client.destroy();
        upstream.destroy();
        this.sockets.delete(client);
        this.sockets.delete(upstream);
      };
      client.on('error', drop).on('close', drop);
      upstream.on('error', drop).on('close', drop);
      client.pipe(upstream);
      upstream.pipe(client);
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.port, '127.0.0.1', () => resolve());
    });
    this.server = server;
  }

  /**
   * A partition that drops packets instead of refusing them: open connections stay open but nothing goes
   * through any more, and new connections are accepted and then hear nothing. `cut()` ends it.
   */
  freeze(): void {
    this.frozen = true;
    for (const socket of this.sockets) {
      socket.unpipe();
      socket.pause();
    }
  }

  cut(): void {
    this.frozen = false;
    this.server?.close();
    this.server = undefined;
    for (const socket of this.sockets) socket.destroy();
    this.sockets.clear();
  }

  async close(): Promise<void> {
    this.cut();
  }
}

// ---- processes -----------------------------------------------------------------------------------------

export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Live (not zombie) processes of a process group, from /proc. */
export function groupMembers(pgid: number): number[] {
  const members: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${name}/stat`, 'utf8');
    } catch {
      continue; // gone meanwhile
    }
    // After the parenthesised command name: state, ppid, pgrp, ...
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (Number(fields[2]) === pgid && fields[0] !== 'Z') members.push(Number(name));
  }
  return members;
}

/** True while any process of the group runs (zombies waiting to be reaped do not count). */
export function groupAlive(pgid: number): boolean {
  return groupMembers(pgid).length > 0;
}

export function signalGroup(pgid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pgid, signal);
  } catch {}
}
