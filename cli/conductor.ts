/** `conductor`: see cli/commands.ts. */
import { runCli } from './commands.ts';

process.exitCode = await runCli(process.argv.slice(2), process.env, {
  out: (text) => process.stdout.write(text),
  err: (text) => process.stderr.write(text),
});
