import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const AGENT_CLI = fileURLToPath(new URL('../../agent/src/cli.ts', import.meta.url));

/** Variables the embedded agent may see: its own settings and the basics, never the server's secrets. */
const PASSED = [
  'PATH',
  'HOME',
  'USER',
  'LOGNAME',
  'LANG',
  'LC_ALL',
  'TZ',
  'TMPDIR',
  'SHELL',
  'XDG_STATE_HOME',
];
const AGENT_SETTINGS = [
  'NODE_NAME',
  'TOTAL_CPUS',
  'CONDUCTOR_STATE_DIR',
  'CONDUCTOR_HEARTBEAT_INTERVAL',
  'CONDUCTOR_DRAIN',
];

/**
 * Starts the local cluster's agent as its own process (the same code as `npx conductor-agent`), pointed
 * at this server. It gets no database or Redis credentials.
 */
export function startEmbeddedAgent(url: string, env: NodeJS.ProcessEnv, stateDir: string): ChildProcess {
  const childEnv: NodeJS.ProcessEnv = { CONDUCTOR_URL: url, CONDUCTOR_STATE_DIR: stateDir };
  for (const name of [...PASSED, ...AGENT_SETTINGS]) {
    if (env[name] !== undefined) childEnv[name] = env[name];
  }
  return spawn(process.execPath, ['--import', 'tsx', AGENT_CLI], {
    env: childEnv,
    stdio: ['ignore', 'inherit', 'inherit'],
  });
}
