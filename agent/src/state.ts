/**
 * The agent's state directory: a lock so two agents never share one (one would kill the other's jobs as
 * orphans), and the scan of job folders a previous run left behind.
 */
import { readdirSync, readFileSync, renameSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError } from './config.ts';
import { killOrphanGroup, parseJobDirName, processStartTime, processStat } from './executor.ts';
import { readResultFile, type StoredResult } from './job-runner.ts';
import type { JobRef } from './protocol.ts';

export const LOCK_FILE = 'agent.lock';
export const SESSION_FILE = 'session';

/** The session the last run of the agent registered with, if it saved one. */
export function readSavedSession(stateDir: string): string | undefined {
  try {
    const session = readFileSync(join(stateDir, SESSION_FILE), 'utf8').trim();
    return session.length > 0 && session.length <= 100 ? session : undefined;
  } catch {
    return undefined;
  }
}

/** Remembers the current session, so that a restarted agent can take its worker name over at once. */
export function saveSession(stateDir: string, session: string): void {
  const path = join(stateDir, SESSION_FILE);
  writeFileSync(`${path}.tmp`, `${session}\n`, { mode: 0o600 });
  renameSync(`${path}.tmp`, path);
}

export class StateDirLockedError extends ConfigError {
  override readonly name = 'StateDirLockedError';
}

/**
 * Takes `<stateDir>/agent.lock` (pid and start time of the holder). A lock whose holder is gone, or whose pid
 * now belongs to another process, is taken over. Returns the release function.
 */
export function acquireStateLock(stateDir: string): () => void {
  const path = join(stateDir, LOCK_FILE);
  const mine = JSON.stringify({ pid: process.pid, start_time: processStartTime(process.pid) ?? null });
  for (let tries = 0; tries < 3; tries++) {
    try {
      writeFileSync(path, `${mine}\n`, { flag: 'wx', mode: 0o600 });
      return () => {
        try {
          if (readFileSync(path, 'utf8').trim() === mine) unlinkSync(path);
        } catch {
          // already gone
        }
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const holder = readLockHolder(path);
    if (holder && holderAlive(holder)) {
      throw new StateDirLockedError(
        `another conductor-agent (pid ${holder.pid}) is using the state dir ${stateDir}; ` +
          'give each agent its own NODE_NAME or CONDUCTOR_STATE_DIR',
      );
    }
    try {
      unlinkSync(path); // stale lock
    } catch {
      // someone else removed it; try again
    }
  }
  throw new StateDirLockedError(`cannot take the lock ${path}`);
}

function readLockHolder(path: string): { pid: number; start_time: string | null } | undefined {
  try {
    const parsed = JSON.parse(readFileSync(path, 'utf8')) as { pid?: unknown; start_time?: unknown };
    if (typeof parsed.pid !== 'number') return undefined;
    return { pid: parsed.pid, start_time: typeof parsed.start_time === 'string' ? parsed.start_time : null };
  } catch {
    return undefined;
  }
}

function holderAlive(holder: { pid: number; start_time: string | null }): boolean {
  try {
    process.kill(holder.pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  const now = processStat(holder.pid);
  if (now?.state === 'Z') return false; // dead, waiting to be reaped
  return holder.start_time === null || now === undefined || now.startTime === holder.start_time;
}

export interface LeftoverScan {
  /** Results that were never acknowledged: to be delivered. */
  results: { result: StoredResult; dir: string }[];
  /** Attempts that were running when the previous agent died (their folders are removed). */
  orphans: { ref: JobRef; killed: boolean }[];
}

/**
 * Looks at the job folders a previous agent run left: folders with a `result.json` hold undelivered
 * results; the others belong to jobs whose agent died under them: their process group is killed (when it
 * can be verified to be theirs) and the folder removed, since no result can be known for them.
 */
export function scanLeftovers(jobsDir: string): LeftoverScan {
  const scan: LeftoverScan = { results: [], orphans: [] };
  let names: string[];
  try {
    names = readdirSync(jobsDir);
  } catch {
    return scan;
  }
  for (const name of names.sort()) {
    const ref = parseJobDirName(name);
    if (!ref) continue;
    const dir = join(jobsDir, name);
    const result = readResultFile(dir, ref);
    if (result) {
      scan.results.push({ result, dir });
      continue;
    }
    const killed = killOrphanGroup(dir);
    rmSync(dir, { recursive: true, force: true });
    scan.orphans.push({ ref, killed });
  }
  return scan;
}
