/**
 * A job shell started before its job, already inside a cgroup of its own.
 *
 * A job in a cgroup waits at its gate until the agent has moved it in, and that move waits for an RCU grace
 * period in the kernel: 7–36 ms measured on a 2-core VM (cgroup v1 and v2 alike), paid between a job's
 * assignment and its first line. A spare pays it ahead of time.
 *
 * The spare is `/bin/sh` reading its commands from a pipe (fd 4); it does nothing until the agent writes
 * them. A job that can use it gets it. Such a job runs as the agent's own user, has no input file and sets
 * no BASH_ENV of its own. The agent sends the job's start:
 * - open the job's output files, in append mode (the agent created and truncated them, as it does for
 *   every job);
 * - enter the job's directory;
 * - exec `env -i` with the job's environment, exactly, and `bash <script>`.
 *
 * The job then runs in the spare's process (same pid, its own session), as a spawned job would.
 *
 * One spare per agent. Another is made after each use, off the job's path. A spare whose agent died reads
 * end-of-file and exits; its empty cgroup is removed when the next agent run starts.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import type { Writable } from 'node:stream';
import { type Containment, JobCgroup } from './containment.ts';

const ENV = '/usr/bin/env';
/**
 * Runs the file whose path arrives on fd 4 (a socket: the path is read with `read`, which a shell cannot
 * do for a whole script); end-of-file (the agent died, or let it go) ends it.
 */
const SPARE_SCRIPT = 'IFS= read -r start <&4 || exit 0; exec 4<&-; . "$start"';
const START_SUFFIX = '.warm-start';
const SPARE_PREFIX = 'spare-';
/** After a spare is taken, the next one is made this much later: the job's own start goes first. */
const REFILL_DELAY_MS = 20;

/** A spare shell in its cgroup, ready to become a job. */
export interface WarmShell {
  child: ChildProcess;
  cgroup: JobCgroup;
  /**
   * Writes the job's start into `file` (in the agent's state, out of the job's sight; the caller removes it
   * once the job ended) and sends it: after this the spare is the job.
   */
  launch(job: WarmLaunch, file: string): void;
}

export interface WarmLaunch {
  cwd: string;
  stdout: string;
  /** The job's error file, or undefined for stderr into the output file (one open file, as slurmstepd). */
  stderr: string | undefined;
  env: Record<string, string>;
  script: string;
}

const quote = (value: string) => `'${value.replaceAll("'", `'\\''`)}'`;

/** The commands a spare runs to become the job (exported for tests). */
export function warmStartCommands(job: WarmLaunch): string {
  const assignments = Object.entries(job.env).map(([key, value]) => quote(`${key}=${value}`));
  return [
    `exec >>${quote(job.stdout)} ${job.stderr === undefined ? '2>&1' : `2>>${quote(job.stderr)}`} || exit 1`,
    `cd -- ${quote(job.cwd)} || exit 1`,
    `exec ${ENV} -i -- ${assignments.join(' ')} bash ${quote(job.script)}`,
    '',
  ].join('\n');
}

/** True when `job` can start in a spare: nothing in it that a shell word could not carry. */
export function warmStartable(env: Record<string, string>, ...paths: (string | undefined)[]): boolean {
  for (const [key, value] of Object.entries(env)) {
    if (key === '' || key.includes('=') || key.includes('\0') || value.includes('\0')) return false;
  }
  return paths.every((p) => p === undefined || !p.includes('\0'));
}

class WarmStarts {
  private ready: WarmShell | undefined;
  /** The spare being made, until it is kept or discarded. */
  private making: Promise<void> | undefined;
  private closed = false;
  private seq = 0;
  private refill: NodeJS.Timeout | undefined;
  /** The ready spare's exit listener (a spare killed while it waits is replaced). */
  private onSpareExit: (() => void) | undefined;

  constructor(
    private readonly parent: string,
    stateDir: string,
  ) {
    // Spares of an earlier run of this agent ended when it did: their cgroups are empty; and start files
    // left by jobs it ran.
    for (const [dir, matches, remove] of [
      [parent, (n: string) => n.startsWith(SPARE_PREFIX), rmdirIfEmpty],
      [stateDir, (n: string) => n.endsWith(START_SUFFIX), (p: string) => rmSync(p, { force: true })],
    ] as const) {
      try {
        for (const name of readdirSync(dir)) if (matches(name)) remove(join(dir, name));
      } catch {
        // nothing there
      }
    }
    this.make();
  }

  hasReady(): boolean {
    return this.ready !== undefined;
  }

  take(): WarmShell | undefined {
    const shell = this.ready;
    this.ready = undefined;
    if (shell && (shell.child.exitCode !== null || shell.child.signalCode !== null)) return undefined;
    if (shell) {
      if (this.onSpareExit) shell.child.removeListener('exit', this.onSpareExit);
      this.onSpareExit = undefined;
      this.refill ??= setTimeout(() => {
        this.refill = undefined;
        this.make();
      }, REFILL_DELAY_MS);
    }
    return shell;
  }

  /**
   * Ends the spare, and one being made; resolves once they exited and their cgroups are gone (at most a
   * couple of seconds).
   */
  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.refill);
    await this.making;
    const shell = this.ready;
    this.ready = undefined;
    if (shell) await discard(shell);
  }

  private make(): void {
    if (this.closed || this.making || this.ready) return;
    this.making = this.spawnSpare().then((shell) => {
      this.making = undefined;
      return shell ? this.keep(shell) : undefined;
    });
  }

  /** A new spare in its cgroup, or undefined: no shell, or no cgroup for it (jobs then take the gate). */
  private async spawnSpare(): Promise<WarmShell | undefined> {
    const cgroup = new JobCgroup(join(this.parent, `${SPARE_PREFIX}${process.pid}-${++this.seq}`));
    let child: ChildProcess;
    try {
      mkdirSync(cgroup.path);
      child = spawn('/bin/sh', ['-c', SPARE_SCRIPT], {
        cwd: '/',
        env: { PATH: process.env.PATH ?? '/usr/bin:/bin' },
        detached: true,
        stdio: ['ignore', 'ignore', 'ignore', 'ignore', 'pipe'],
      });
    } catch {
      rmdirIfEmpty(cgroup.path);
      return undefined;
    }
    const spawned = await new Promise<boolean>((done) => {
      child.once('spawn', () => done(true));
      child.once('error', () => done(false));
    });
    const pid = child.pid;
    if (!spawned || pid === undefined) {
      rmdirIfEmpty(cgroup.path);
      return undefined;
    }
    const gate = child.stdio[4] as Writable;
    gate.on('error', () => {});
    const shell: WarmShell = {
      child,
      cgroup,
      launch(job, file) {
        writeFileSync(file, warmStartCommands(job), { mode: 0o600 });
        gate.end(`${file}\n`);
      },
    };
    try {
      await cgroup.add(pid);
      return shell;
    } catch {
      await discard(shell);
      return undefined;
    }
  }

  /**
   * Keeps `shell` as the ready spare (one that ends while it waits, killed from outside, is replaced), or
   * discards it when the pool closed meanwhile.
   */
  private async keep(shell: WarmShell): Promise<void> {
    const { child, cgroup } = shell;
    if (this.closed || child.exitCode !== null || child.signalCode !== null) {
      await discard(shell);
      return;
    }
    this.ready = shell;
    this.onSpareExit = () => {
      if (this.ready !== shell) return;
      this.ready = undefined;
      this.onSpareExit = undefined;
      rmdirIfEmpty(cgroup.path);
      this.make();
    };
    child.once('exit', this.onSpareExit);
  }
}

function discard(shell: WarmShell): Promise<void> {
  const { child, cgroup } = shell;
  if (child.exitCode !== null || child.signalCode !== null) {
    rmdirIfEmpty(cgroup.path);
    return Promise.resolve();
  }
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      rmdirIfEmpty(cgroup.path);
      resolve();
    };
    const timer = setTimeout(done, 2000);
    child.once('exit', done);
    // End-of-file: the spare exits by itself.
    (child.stdio[4] as Writable | null)?.end();
  });
}

function rmdirIfEmpty(path: string): void {
  try {
    rmdirSync(path);
  } catch {
    // still holds a process, or gone already
  }
}

const pools = new Map<string, WarmStarts>();

/**
 * Keeps a spare for the agent of `jobsDir` while its jobs are contained in cgroups (and `env` is where this
 * module expects it); nothing otherwise.
 */
export function openWarmStarts(jobsDir: string, containment: Containment): void {
  const key = resolve(jobsDir);
  if (pools.has(key) || !containment.parent || !existsSync(ENV)) return;
  pools.set(key, new WarmStarts(containment.parent, dirname(key)));
}

/** Where a job's start is written: beside the jobs folder, like the gate file. */
export function warmStartFile(jobsDir: string, folder: string): string {
  return join(dirname(resolve(jobsDir)), `${folder}${START_SUFFIX}`);
}

/** A spare for a job of the agent of `jobsDir`, or undefined (none ready, or none kept). */
export function takeWarmShell(jobsDir: string): WarmShell | undefined {
  return pools.get(resolve(jobsDir))?.take();
}

/** Ends the spare of the agent of `jobsDir` (the agent stops); resolves once it is gone. */
export function closeWarmStarts(jobsDir: string): Promise<void> {
  const key = resolve(jobsDir);
  const pool = pools.get(key);
  pools.delete(key);
  return pool?.close() ?? Promise.resolve();
}

/** Whether the agent of `jobsDir` has a spare ready (tests, and the start-up log). */
export function warmShellReady(jobsDir: string): boolean {
  return pools.get(resolve(jobsDir))?.hasReady() ?? false;
}
