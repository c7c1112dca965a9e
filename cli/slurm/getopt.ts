/**
 * Slurm's commands parse their options with getopt_long, and scripts rely on its habits: a long option may be
 * abbreviated to any unambiguous prefix (`--out` for `--output`), short options cluster (`-vvN1`), a required
 * argument is either attached or the next word, and an optional one only attached (`--exclusive=user`).
 *
 * Every option of every drop-in command is declared once, in that command's table, with its fate here:
 * honoured (with what it does), warned (accepted, but it has no meaning on Conductor), or refused (honouring it
 * is impossible here), each with the reason. The parser, the warnings and the docs tables all read that table.
 */

export type Fate = 'honoured' | 'warned' | 'refused';

export interface OptionSpec {
  /** The long name without `--`. */
  long: string;
  /** The one-letter name without `-`. */
  short?: string;
  arg: 'none' | 'required' | 'optional';
  fate: Fate;
  /** Honoured: what it does here. Warned: why it changes nothing. Refused: why it cannot be honoured. */
  note: string;
  /** The argument's name in the docs (`<time>`). */
  value?: string;
}

export interface ParsedOption {
  spec: OptionSpec;
  /** As written: `--out`, `-o`. */
  written: string;
  /** The argument; undefined for `arg: 'none'` and an optional argument not given. */
  value?: string;
  /** Index in the argument list where the option started (for directive line numbers). */
  index: number;
}

export interface Parsed {
  options: ParsedOption[];
  positionals: string[];
  /** getopt's complaints (unknown, ambiguous, missing argument), each with the index of the word. */
  problems: { message: string; index: number }[];
}

export interface GetoptSettings {
  /** sbatch and srun stop at the first non-option (the script or command); the others take options anywhere. */
  stopAtPositional?: boolean;
}

/** Parses `args` against `table` as getopt_long would. Never throws: problems are returned, all of them. */
export function getoptLong(
  args: string[],
  table: readonly OptionSpec[],
  settings: GetoptSettings = {},
): Parsed {
  const parsed: Parsed = { options: [], positionals: [], problems: [] };
  for (let i = 0; i < args.length; i++) {
    const word = args[i] as string;
    if (word === '--') {
      parsed.positionals.push(...args.slice(i + 1));
      break;
    }
    if (word.startsWith('--')) {
      const eq = word.indexOf('=');
      const name = eq < 0 ? word.slice(2) : word.slice(2, eq);
      const found = lookupLong(name, table);
      if (typeof found === 'string') {
        parsed.problems.push({ message: found, index: i });
        continue;
      }
      const option: ParsedOption = { spec: found, written: `--${name}`, index: i };
      if (found.arg === 'none') {
        if (eq >= 0) {
          parsed.problems.push({ message: `option '--${found.long}' doesn't allow an argument`, index: i });
          continue;
        }
      } else if (eq >= 0) {
        option.value = word.slice(eq + 1);
      } else if (found.arg === 'required') {
        if (i + 1 >= args.length) {
          parsed.problems.push({ message: `option '--${found.long}' requires an argument`, index: i });
          continue;
        }
        option.value = args[++i];
      }
      parsed.options.push(option);
      continue;
    }
    if (word.startsWith('-') && word.length > 1) {
      for (let at = 1; at < word.length; at++) {
        const letter = word[at] as string;
        const spec = table.find((s) => s.short === letter);
        if (!spec) {
          parsed.problems.push({ message: `invalid option -- '${letter}'`, index: i });
          continue;
        }
        const option: ParsedOption = { spec, written: `-${letter}`, index: i };
        if (spec.arg !== 'none') {
          const rest = word.slice(at + 1);
          if (rest !== '') option.value = rest;
          else if (spec.arg === 'required') {
            if (i + 1 >= args.length) {
              parsed.problems.push({ message: `option requires an argument -- '${letter}'`, index: i });
              break;
            }
            option.value = args[++i];
          }
          parsed.options.push(option);
          break;
        }
        parsed.options.push(option);
      }
      continue;
    }
    if (settings.stopAtPositional) {
      parsed.positionals.push(...args.slice(i));
      break;
    }
    parsed.positionals.push(word);
  }
  return parsed;
}

/** The option a long name means: exact, else the only one it abbreviates; or getopt's complaint. */
function lookupLong(name: string, table: readonly OptionSpec[]): OptionSpec | string {
  const exact = table.find((s) => s.long === name);
  if (exact) return exact;
  const candidates = name === '' ? [] : table.filter((s) => s.long.startsWith(name));
  if (candidates.length === 1) return candidates[0] as OptionSpec;
  if (candidates.length === 0) return `unrecognized option '--${name}'`;
  return `option '--${name}' is ambiguous; possibilities: ${candidates.map((s) => `'--${s.long}'`).join(' ')}`;
}

/** Warnings for the warned options given, problems for the refused ones (each once per occurrence). */
export function fatesOf(options: readonly ParsedOption[]): {
  warnings: { message: string; index: number }[];
  problems: { message: string; index: number }[];
} {
  const warnings: { message: string; index: number }[] = [];
  const problems: { message: string; index: number }[] = [];
  for (const option of options) {
    const name = `--${option.spec.long}`;
    if (option.spec.fate === 'warned') {
      warnings.push({ message: `${name} is ignored: ${option.spec.note}`, index: option.index });
    } else if (option.spec.fate === 'refused') {
      problems.push({ message: `${name} is not supported: ${option.spec.note}`, index: option.index });
    }
  }
  return { warnings, problems };
}

/** The last value given for an option (later words win, as in Slurm), by long name. */
export function lastValue(options: readonly ParsedOption[], long: string): ParsedOption | undefined {
  for (let i = options.length - 1; i >= 0; i--) if (options[i]?.spec.long === long) return options[i];
  return undefined;
}

const FATE_LABEL: Record<Fate, string> = {
  honoured: 'honoured',
  warned: 'accepted, warns',
  refused: 'refused',
};

/** The docs table of a command's options: every option, its fate and what it does (or why not). */
export function renderFateTable(command: string, table: readonly OptionSpec[]): string {
  const cell = (text: string) => text.replace(/\|/g, '\\|').replace(/\n/g, ' ');
  const rows = [...table]
    .sort((a, b) => a.long.localeCompare(b.long))
    .map((s) => {
      const value =
        s.arg === 'none' ? '' : s.arg === 'optional' ? `[=${s.value ?? 'value'}]` : `=${s.value ?? 'value'}`;
      const names = `${s.short ? `\`-${s.short}\`, ` : ''}\`--${s.long}${value}\``;
      return `| ${cell(names)} | ${FATE_LABEL[s.fate]} | ${cell(s.note)} |`;
    });
  const counts = (['honoured', 'warned', 'refused'] as const)
    .map((fate) => `${table.filter((s) => s.fate === fate).length} ${FATE_LABEL[fate]}`)
    .join(', ');
  return [
    `## ${command}`,
    '',
    `${table.length} options of Slurm 22.05's ${command}(1): ${counts}. Long options may be abbreviated to any unambiguous prefix.`,
    '',
    '| Option | Fate | On Conductor |',
    '| --- | --- | --- |',
    ...rows,
    '',
  ].join('\n');
}
