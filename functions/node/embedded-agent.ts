import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { sql } from 'drizzle-orm';
import { createToken } from '../domain/auth.ts';
import type { Database } from '../domain/ports.ts';
import { query } from '../domain/sql.ts';

/**
 * The agent's CLI: its bundle beside ours when this runs from the build (dist/server.mjs, what `npm start`
 * runs), its TypeScript through tsx when this runs from the sources (tests).
 */
const AGENT_COMMAND = import.meta.url.endsWith('.ts')
  ? ['--import', 'tsx', fileURLToPath(new URL('../../agent/src/cli.ts', import.meta.url))]
  : [fileURLToPath(new URL('./agent.mjs', import.meta.url))];

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
  'CONDUCTOR_RUN_AS',
  'CONDUCTOR_ALLOW_ROOT',
  'CONDUCTOR_JOB_ROOT',
  'CONDUCTOR_ALLOW_ANY_WORKDIR',
  'CONDUCTOR_OUTPUT_LIMIT',
  'CONDUCTOR_JOB_CONTAINMENT',
  'CONDUCTOR_CHANNEL',
  'CONDUCTOR_CHANNEL_RECONNECT_WINDOW',
  // One log format for the whole local cluster: LOG_FORMAT=json makes the agent's lines JSON too.
  'LOG_FORMAT',
];

/**
 * The zero-setup cluster started by root: its one local agent runs jobs as root too (they are the jobs of the
 * user who started it, on this machine only), with a warning, rather than refusing to run anything. A
 * standalone `conductor-agent` still refuses root without CONDUCTOR_RUN_AS or CONDUCTOR_ALLOW_ROOT.
 */
export function embeddedAgentRunsJobsAsRoot(env: NodeJS.ProcessEnv): boolean {
  return process.getuid?.() === 0 && !env.CONDUCTOR_RUN_AS && !env.CONDUCTOR_ALLOW_ROOT;
}

/**
 * Starts the local cluster's agent as its own process (the same code as `npx conductor-agent`), pointed
 * at this server, with the agent token the server minted for it (see mintEmbeddedAgentToken). It gets no
 * database or Redis credentials.
 */
export function startEmbeddedAgent(
  url: string,
  env: NodeJS.ProcessEnv,
  stateDir: string,
  token?: string,
): ChildProcess {
  // The agent stops by itself if this server dies without stopping it (agent/src/launcher.ts).
  const childEnv: NodeJS.ProcessEnv = {
    CONDUCTOR_URL: url,
    CONDUCTOR_STATE_DIR: stateDir,
    CONDUCTOR_LAUNCHER_PID: String(process.pid),
  };
  // On a pipe, not in the environment: jobs running as the same user could read that in /proc.
  if (token) childEnv.CONDUCTOR_TOKEN_FILE = '/dev/stdin';
  for (const name of [...PASSED, ...AGENT_SETTINGS]) {
    if (env[name] !== undefined && env[name] !== '') childEnv[name] = env[name];
  }
  if (embeddedAgentRunsJobsAsRoot(env)) childEnv.CONDUCTOR_ALLOW_ROOT = '1';
  const child = spawn(process.execPath, AGENT_COMMAND, {
    env: childEnv,
    stdio: [token ? 'pipe' : 'ignore', 'inherit', 'inherit'],
    // Its own process group: Ctrl-C in the terminal reaches the server only, which stops the agent once
    // (a second signal would make the agent kill its jobs and exit at once).
    detached: true,
  });
  child.stdin?.on('error', () => {});
  child.stdin?.end(token);
  return child;
}

/**
 * An agent token for the embedded agent, minted at every start (stored hashed, marked internal) after
 * revoking the one the previous start minted for the same node. Internal tokens do not close the open
 * loopback API, but they let the embedded agent keep working once someone creates the first real token.
 */
export async function mintEmbeddedAgentToken(db: Database, nodeName: string): Promise<string> {
  const name = `embedded-agent:${nodeName}`;
  await query(
    db,
    sql`UPDATE api_tokens SET revoked_at = now() WHERE internal AND name = ${name} AND revoked_at IS NULL`,
  );
  const created = await createToken(
    db,
    { name, scopes: ['agent'], owner: 'system' },
    { kind: 'system', tokenId: null, name: 'node-entry', owner: null, scopes: [] },
    { internal: true },
  );
  return created.token;
}
