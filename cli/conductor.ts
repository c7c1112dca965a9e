/**
 * `conductor` in the repository (cli/bin/conductor.js, `npm run conductor`): the HTTP commands of cli/main.ts,
 * plus `token` and `webhook`, which work on the database (cli/commands.ts, loaded only when they run). The
 * packaged CLI (cli/standalone.ts) is the same without them.
 */
import { main } from './main.ts';

process.exitCode = await main(
  process.argv.slice(2),
  process.env,
  {
    out: (text) => process.stdout.write(text),
    err: (text) => process.stderr.write(text),
    isTTY: process.stdout.isTTY === true,
    errIsTTY: process.stderr.isTTY === true,
  },
  {
    databaseCommands: async (argv, env, io) => (await import('./commands.ts')).runCli(argv, env, io),
  },
);
