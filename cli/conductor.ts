/** `conductor`: see cli/main.ts (HTTP commands) and cli/commands.ts (token and webhook, on the database). */
import { main } from './main.ts';

process.exitCode = await main(process.argv.slice(2), process.env, {
  out: (text) => process.stdout.write(text),
  err: (text) => process.stderr.write(text),
  isTTY: process.stdout.isTTY === true,
  errIsTTY: process.stderr.isTTY === true,
});
