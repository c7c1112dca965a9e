/**
 * `conductor-agent`: a thin shell over Agent. Sets process.exitCode: 0 after a clean stop, 1 on a fatal
 * error, 2 on bad configuration; a second SIGINT/SIGTERM kills the jobs and exits at once with 130.
 */
import { Agent, FatalAgentError } from './agent.ts';
import { ConfigError, parseAgentArgs } from './config.ts';
import { createLogger, describeError } from './log.ts';
import { resolveSafety } from './safety.ts';

export async function main(
  argv: string[] = process.argv.slice(2),
  env: NodeJS.ProcessEnv = process.env,
): Promise<number> {
  const parsed = parseAgentArgs(argv, env);
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
  const safe = resolveSafety(parsed.config, parsed.safety, env, process.getuid?.());
  if ('error' in safe) {
    process.stderr.write(`conductor-agent: ${safe.error}\n`);
    return 2;
  }
  const config = safe.config;
  const logger = createLogger({ debug: config.debug });
  const agent = new Agent(config, { logger });

  let signals = 0;
  const onSignal = (signal: NodeJS.Signals) => {
    signals++;
    if (signals === 1) {
      logger.info(
        `${signal} received: stopping${config.drain ? ' (draining running jobs)' : ''}; send it again to exit at once`,
      );
      void agent.stop({ drain: config.drain });
      return;
    }
    logger.warn(`${signal} received again: killing running jobs and exiting`);
    agent.killAllNow();
    process.exit(130);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
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
  }
}

process.exitCode = await main();
