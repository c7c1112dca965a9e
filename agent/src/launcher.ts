import { existsSync, readFileSync, readlinkSync, realpathSync } from 'node:fs';

/**
 * The process whose end must stop this one: the zero-setup server for its local agent (it passes its pid in
 * CONDUCTOR_LAUNCHER_PID), npm when npm launched us (`npm start`, `npm run agent`, `npx conductor-agent`),
 * else none (a shell, systemd). npm forwards SIGTERM only to its own child, which for `npx` is a `sh -c`
 * (the shell dies and leaves us running), and a SIGKILLed npm forwards nothing: so we watch npm itself.
 */
export function findLauncher(env: NodeJS.ProcessEnv): { pid: number; what: string } | undefined {
  const given = Number(env.CONDUCTOR_LAUNCHER_PID);
  if (Number.isInteger(given) && given > 1) return { pid: given, what: 'the server that started this agent' };
  const pid = npmLauncher(env);
  return pid === undefined ? undefined : { pid, what: 'npm' };
}

function npmLauncher(env: NodeJS.ProcessEnv): number | undefined {
  if (!env.npm_lifecycle_event) return undefined;
  const npmNode = resolvedPath(env.npm_node_execpath ?? process.execPath);
  // The parent, or for `npx` (npm → sh -c → us) the grandparent: the nearest ancestor that runs on Node.
  let pid = process.ppid;
  for (let hop = 0; hop < 3 && pid > 1; hop++) {
    const exe = processExecutable(pid);
    if (exe === undefined) break; // no /proc: only the parent can be watched
    if (exe === npmNode) return pid;
    pid = parentOf(pid) ?? 0;
  }
  return process.ppid;
}

/**
 * Calls `onGone` once, within about `intervalMs`, when `launcher` is no longer an ancestor of this process
 * (it died, or a shell between us and it did). Returns a function that stops watching. The timer does not
 * keep the process alive.
 */
export function watchLauncher(launcher: number, onGone: () => void, intervalMs = 1000): () => void {
  const firstParent = process.ppid;
  // Without /proc (macOS, BSD) only a change of our own parent can be seen.
  const stillThere = existsSync('/proc/self/stat')
    ? () => isAncestor(launcher)
    : () => process.ppid === firstParent;
  const timer = setInterval(() => {
    if (stillThere()) return;
    clearInterval(timer);
    onGone();
  }, intervalMs);
  timer.unref();
  return () => clearInterval(timer);
}

function isAncestor(pid: number): boolean {
  let current = process.ppid;
  for (let hop = 0; hop < 4 && current > 1; hop++) {
    if (current === pid) return true;
    const parent = parentOf(current);
    if (parent === undefined) return true; // it exited while we looked: look again at the next tick
    current = parent;
  }
  return false;
}

/** The parent of `pid` from /proc/<pid>/stat (its 4th field, after the command name in parentheses). */
function parentOf(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
  } catch {
    return undefined;
  }
}

function processExecutable(pid: number): string | undefined {
  try {
    return readlinkSync(`/proc/${pid}/exe`);
  } catch {
    return undefined;
  }
}

function resolvedPath(path: string): string {
  try {
    return realpathSync(path);
  } catch {
    return path;
  }
}
