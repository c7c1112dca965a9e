#!/usr/bin/env node
/**
 * `conductor` as the `conductor-cli` package ships it (cli/package.json: `npm run build:cli` compiles this file
 * and what it imports, cli/main.ts, cli/api.ts, cli/io.ts and cli/slurm/, to plain JavaScript in cli/dist). Node
 * built-ins and fetch only, no dependencies. `conductor token|webhook` are not here: they need the control
 * plane's code and database, and say so (see databaseCommandsUnavailable in cli/main.ts).
 */
import { main } from './main.ts';

// Node 18 calls fetch experimental and would say so on every command; nothing else is silenced.
const emitWarning = process.emitWarning.bind(process) as (...args: unknown[]) => void;
process.emitWarning = ((warning: unknown, ...rest: unknown[]) => {
  if (String(warning).includes('The Fetch API is an experimental feature')) return;
  emitWarning(warning, ...rest);
}) as typeof process.emitWarning;

process.exitCode = await main(process.argv.slice(2), process.env, {
  out: (text) => process.stdout.write(text),
  err: (text) => process.stderr.write(text),
  isTTY: process.stdout.isTTY === true,
  errIsTTY: process.stderr.isTTY === true,
});
