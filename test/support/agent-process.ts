import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const CLI = fileURLToPath(new URL('../../agent/src/cli.ts', import.meta.url));

/** A real `conductor-agent` process, as an operator would start it. */
export class AgentProcess {
  readonly lines: string[] = [];
  readonly child: ChildProcess;
  readonly stateDir: string;
  private readonly exited: Promise<number | null>;
  private waiters: { pattern: RegExp; resolve: (line: string) => void }[] = [];

  constructor(
    readonly nodeName: string,
    url: string,
    options: {
      cpus?: number;
      env?: Record<string, string>;
      stateDir?: string;
      args?: string[];
      /** Node arguments that run the agent; default: its TypeScript sources through tsx. */
      entry?: string[];
    } = {},
  ) {
    this.stateDir = options.stateDir ?? mkdtempSync(join(tmpdir(), `agent-${nodeName}-`));
    this.child = spawn(
      process.execPath,
      [...(options.entry ?? ['--import', 'tsx', CLI]), ...(options.args ?? [])],
      {
        env: {
          PATH: process.env.PATH,
          HOME: process.env.HOME,
          CONDUCTOR_URL: url,
          NODE_NAME: nodeName,
          TOTAL_CPUS: String(options.cpus ?? 4),
          CONDUCTOR_STATE_DIR: this.stateDir,
          // Tests run as root here: jobs may run as root (tests of the refusal override this), and their
          // work_dirs live under the temp folder.
          CONDUCTOR_ALLOW_ROOT: '1',
          CONDUCTOR_JOB_ROOT: tmpdir(),
          ...options.env,
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    const onData = (chunk: Buffer) => {
      for (const line of chunk.toString().split('\n')) {
        if (!line) continue;
        this.lines.push(line);
        if (process.env.CONDUCTOR_TEST_LOGS === '1') console.log(`[${nodeName}] ${line}`);
        this.waiters = this.waiters.filter((w) => {
          if (!w.pattern.test(line)) return true;
          w.resolve(line);
          return false;
        });
      }
    };
    this.child.stdout?.on('data', onData);
    this.child.stderr?.on('data', onData);
    this.exited = new Promise((resolve) => this.child.once('exit', (code) => resolve(code)));
  }

  /** Resolves with the first log line (past or future) matching `pattern`. */
  waitForLine(pattern: RegExp, timeoutMs = 20_000): Promise<string> {
    const seen = this.lines.find((l) => pattern.test(l));
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () =>
          reject(
            new Error(
              `${this.nodeName}: no log line ${pattern} within ${timeoutMs} ms:\n${this.lines.join('\n')}`,
            ),
          ),
        timeoutMs,
      );
      this.waiters.push({
        pattern,
        resolve: (line) => {
          clearTimeout(timer);
          resolve(line);
        },
      });
    });
  }

  registered(): Promise<string> {
    return this.waitForLine(/Worker registered: /);
  }

  /** SIGTERM and wait for a clean exit. */
  async stop(timeoutMs = 15_000): Promise<number | null> {
    if (this.child.exitCode !== null) return this.child.exitCode;
    this.child.kill('SIGTERM');
    return Promise.race([
      this.exited,
      new Promise<never>((_, reject) =>
        setTimeout(() => reject(new Error(`${this.nodeName} did not stop`)), timeoutMs),
      ),
    ]);
  }

  /** kill -9: no unregistration, no goodbye. */
  async kill9(): Promise<void> {
    this.child.kill('SIGKILL');
    await this.exited;
  }

  waitForExit(): Promise<number | null> {
    return this.exited;
  }
}

export async function eventually<T>(
  check: () => Promise<T | undefined | false | null> | T | undefined | false | null,
  { timeoutMs = 20_000, intervalMs = 100, what = 'condition' } = {},
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value) return value;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) {
      throw new Error(
        `timed out waiting for ${what}${last ? `: ${last instanceof Error ? last.message : String(last)}` : ''}`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}
