/**
 * What every drop-in command does the same way: options through getopt_long and their fates, errors as
 * Slurm prints them (`sinfo: error: ...`, never a stack trace), and the API client configured like
 * `conductor` (CONDUCTOR_URL / CONDUCTOR_TOKEN / the config file).
 */
import { ApiError, Client, resolveConfig } from '../api.ts';
import type { Io } from '../io.ts';
import { fatesOf, type GetoptSettings, getoptLong, type OptionSpec, type Parsed } from './getopt.ts';

export type SlurmCommand = (args: string[], io: Io, env: NodeJS.ProcessEnv) => Promise<number>;

/** A failure the command reports as `<cmd>: error: <message>` and exits 1 on. */
export class SlurmError extends Error {
  constructor(
    message: string,
    readonly exitCode = 1,
  ) {
    super(message);
  }
}

/** The release the drop-ins imitate: what `-V` prints and scripts compare against. */
export const SLURM_VERSION = '22.05.0';

/**
 * Parses `args`: getopt's complaints end the command as Slurm's do (the message, then the `--help` hint),
 * refused options too, each named; warned options print a warning and the command goes on.
 */
export function parseOptions(
  command: string,
  args: string[],
  table: readonly OptionSpec[],
  io: Io,
  settings: GetoptSettings = {},
): Parsed {
  const parsed = getoptLong(args, table, settings);
  if (parsed.problems.length > 0) {
    for (const problem of parsed.problems) io.err(`${command}: ${problem.message}\n`);
    io.err(`Try "${command} --help" for more information\n`);
    throw new SlurmError('', 1);
  }
  const { warnings, problems } = fatesOf(parsed.options);
  for (const warning of warnings) io.err(`${command}: warning: ${warning.message}\n`);
  if (problems.length > 0) throw new SlurmError(problems.map((p) => p.message).join('\n'));
  return parsed;
}

export const has = (parsed: Parsed, long: string) => parsed.options.some((o) => o.spec.long === long);

export const count = (parsed: Parsed, long: string) =>
  parsed.options.filter((o) => o.spec.long === long).length;

export function apiClient(env: NodeJS.ProcessEnv): Client {
  return new Client(resolveConfig({}, env));
}

/** Runs a command body, printing what goes wrong as Slurm's commands do. */
export async function guarded(command: string, io: Io, body: () => Promise<number>): Promise<number> {
  try {
    return await body();
  } catch (error) {
    if (error instanceof SlurmError) {
      for (const line of error.message.split('\n').filter(Boolean)) io.err(`${command}: error: ${line}\n`);
      return error.exitCode;
    }
    const message = error instanceof ApiError || error instanceof Error ? error.message : String(error);
    io.err(`${command}: error: ${message}\n`);
    return 1;
  }
}

/** The options' usage lines for `--help`, from the table itself. */
export function optionHelp(table: readonly OptionSpec[]): string {
  return [...table]
    .sort((a, b) => a.long.localeCompare(b.long))
    .map((s) => {
      const value =
        s.arg === 'none' ? '' : s.arg === 'optional' ? `[=${s.value ?? 'value'}]` : `=${s.value ?? 'value'}`;
      const names = `${s.short ? `-${s.short}, ` : '    '}--${s.long}${value}`;
      const fate = s.fate === 'honoured' ? '' : s.fate === 'warned' ? ' (ignored)' : ' (not supported)';
      return `  ${names.padEnd(32)} ${s.note}${fate}`;
    })
    .join('\n');
}
