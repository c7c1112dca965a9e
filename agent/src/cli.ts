#!/usr/bin/env node
/**
 * `conductor-agent`: a thin shell over Agent. Sets process.exitCode: 0 after a clean stop, 1 on a fatal
 * error, 2 on bad configuration; a second SIGINT/SIGTERM kills the jobs and exits at once with 130. Stops as
 * on SIGTERM when its launcher is gone (see launcher.ts).
 */
import { readFileSync, realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Agent, FatalAgentError } from './agent.ts';
import { AGENT_VERSION, type AgentConfig, ConfigError, parseAgentArgs } from './config.ts';
import { findLauncher, watchLauncher } from './launcher.ts';
import { createLogger, describeError } from './log.ts';
import { resolveSafety } from './safety.ts';

export async function main(
  argv: string[] = process.argv.slice(2),
  env: NodeJS.ProcessEnv = process.env,
): Promise<number> {
  if (argv[0] === 'print-systemd-unit') {
    process.stdout.write(readFileSync(SYSTEMD_UNIT, 'utf8'));
    return 0;
  }
  const check = argv.includes('--check');
  const parsed = parseAgentArgs(
    argv.filter((a) => a !== '--check'),
    env,
  );
  if (parsed.kind === 'help' || parsed.kind === 'version') {
    process.stdout.write(`${parsed.text}\n`);
    return 0;
  }
  if (parsed.kind === 'error') {
    process.stderr.write(
      `conductor-agent: invalid configuration:\n  ${parsed.message.split('\n').join('\n  ')}\n`,
    );
    return 2;
  }
  const safe = resolveSafety(parsed.config, parsed.safety, process.getuid?.());
  if ('error' in safe) {
    process.stderr.write(`conductor-agent: ${safe.error}\n`);
    return 2;
  }
  const config = safe.config;
  if (check) return checkConnection(config);
  const logger = createLogger({ debug: config.debug, format: env.LOG_FORMAT === 'json' ? 'json' : 'text' });
  logger.info(
    `conductor-agent ${AGENT_VERSION}: server ${config.url}, node ${config.nodeName}, ${config.cpus} CPUs, ` +
      `state ${config.stateDir}, heartbeat ${config.heartbeatIntervalS ? `every ${config.heartbeatIntervalS} s` : "at the server's interval"}` +
      `${config.drain ? ', drains on stop' : ''}${config.channel ? '' : ', no push channel'}`,
  );
  const agent = new Agent(config, { logger });

  let stopRequestedAt = 0;
  const stop = (why: string) => {
    stopRequestedAt = Date.now();
    logger.info(
      `${why}: stopping${config.drain ? ' (draining running jobs)' : ''}; send SIGINT or SIGTERM again to exit at once`,
    );
    void agent.stop({ drain: config.drain });
  };
  const onSignal = (signal: NodeJS.Signals) => {
    if (!stopRequestedAt) return stop(`${signal} received`);
    // Ctrl-C under npm arrives twice: from the terminal and forwarded by npm.
    if (signal === 'SIGINT' && Date.now() - stopRequestedAt < SAME_CTRL_C_MS) return;
    logger.warn(`${signal} received again: killing running jobs and exiting`);
    agent.killAllNow();
    process.exit(130);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  // Whoever launched us is gone (npm killed, or the zero-setup server that started us as its local agent
  // died): nobody is left to stop us, so stop as on SIGTERM.
  const launcher = findLauncher(env);
  const unwatch = launcher
    ? watchLauncher(launcher.pid, () => {
        if (!stopRequestedAt) stop(`${launcher.what} (pid ${launcher.pid}) is gone`);
      })
    : () => {};
  // A bug must not leave jobs running unsupervised (the next start would kill them anyway).
  process.on('uncaughtException', (err) => {
    logger.error(`Fatal: ${err.stack ?? err.message}`);
    agent.killAllNow();
    process.exit(1);
  });

  try {
    await agent.start();
    await agent.closed;
    return 0;
  } catch (err) {
    if (err instanceof ConfigError) {
      logger.error(describeError(err));
      return 2;
    }
    if (err instanceof FatalAgentError) {
      logger.error(`Fatal: ${describeError(err)}`);
      return 1;
    }
    logger.error(`Fatal: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    agent.killAllNow();
    return 1;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    unwatch();
  }
}

const SAME_CTRL_C_MS = 1000;

const SYSTEMD_UNIT = fileURLToPath(new URL('../systemd/conductor-agent.service', import.meta.url));

/**
 * `--check`: can this node reach the control plane, and does it accept our token? A heartbeat for a
 * session that does not exist answers 404/409 to an authenticated agent and 401/403 otherwise.
 */
async function checkConnection(config: AgentConfig): Promise<number> {
  const say = (ok: boolean, text: string) => {
    (ok ? process.stdout : process.stderr).write(`${ok ? '✓' : '✗'} ${text}\n`);
    return ok ? 0 : 1;
  };
  try {
    const health = await fetch(new URL('/api/v1/health', config.url), {
      signal: AbortSignal.timeout(10_000),
    });
    if (!health.ok) return say(false, `${config.url} answers ${health.status} on /api/v1/health`);
  } catch (err) {
    return say(false, `cannot reach ${config.url}: ${describeError(err)}`);
  }
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (config.token) headers.authorization = `Bearer ${config.token}`;
  const res = await fetch(new URL('/api/v1/agents/heartbeat', config.url), {
    method: 'POST',
    headers,
    body: JSON.stringify({ worker_id: config.nodeName, session: 'conductor-agent-check' }),
    signal: AbortSignal.timeout(10_000),
  }).catch((err: unknown) => (err instanceof Error ? err : new Error(String(err))));
  if (res instanceof Error) return say(false, `cannot reach ${config.url}: ${describeError(res)}`);
  if (res.status === 401) {
    return say(false, `${config.url} refuses the token (401): set CONDUCTOR_TOKEN to an agent token`);
  }
  if (res.status === 403) {
    return say(
      false,
      `${config.url} answers 403: the token is not an agent token, or ${config.nodeName} belongs to another token`,
    );
  }
  if (res.status >= 500)
    return say(false, `${config.url} answers ${res.status}: the control plane is unwell`);
  return say(true, `${config.url} is reachable and accepts this agent as ${config.nodeName}`);
}

// Run when executed (the bin, `npm run agent`), not when imported.
if (process.argv[1] && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url)) {
  process.exitCode = await main();
}
