/**
 * What every command shares, without importing cli/main.ts (which imports the commands): where it prints, its
 * usage errors, and the exit code a finished job gives.
 */

export interface Io {
  out(text: string): void;
  err(text: string): void;
  /** Whether stdout / stderr are terminals (colours, spinner). */
  isTTY?: boolean;
  errIsTTY?: boolean;
}

export class UsageError extends Error {}

/** The exit code a shell would show for a job: its code, 128+signal for a signal, 1 when it has none. */
export function jobExitStatus(job: { state: string; exit_code: string | null }): number {
  const match = /^(\d+):(\d+)$/.exec(job.exit_code ?? '');
  if (match) {
    const code = Number(match[1]);
    const signal = Number(match[2]);
    if (signal > 0) return 128 + signal;
    if (code > 0) return code > 255 ? 1 : code;
    return job.state === 'COMPLETED' ? 0 : 1;
  }
  return job.state === 'COMPLETED' ? 0 : 1;
}
