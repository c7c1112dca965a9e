import { describe, expect, it } from 'vitest';
import { fatesOf, getoptLong, type OptionSpec, renderFateTable } from '../../cli/slurm/getopt.ts';

const table: OptionSpec[] = [
  { long: 'output', short: 'o', arg: 'required', fate: 'honoured', note: 'the output file' },
  { long: 'open-mode', arg: 'required', fate: 'honoured', note: 'append or truncate' },
  { long: 'parsable', arg: 'none', fate: 'honoured', note: 'prints the id only' },
  { long: 'exclusive', arg: 'optional', fate: 'honoured', note: 'the whole node' },
  { long: 'nodes', short: 'N', arg: 'required', fate: 'honoured', note: 'one node' },
  { long: 'verbose', short: 'v', arg: 'none', fate: 'honoured', note: 'more output' },
  { long: 'get-user-env', arg: 'optional', fate: 'warned', note: 'the job gets the exported environment' },
  { long: 'cluster-constraint', arg: 'required', fate: 'refused', note: 'one cluster' },
];

describe('getoptLong, as Slurm commands parse options', () => {
  it('takes unambiguous abbreviations, attached and separate arguments, and clustered short options', () => {
    const parsed = getoptLong(
      ['--out', 'x.log', '--pars', '-vvN1', '--exclusive', '--exclusive=user', 'job.sh', '-v'],
      table,
      {
        stopAtPositional: true,
      },
    );
    expect(parsed.problems).toEqual([]);
    expect(parsed.options.map((o) => [o.spec.long, o.value])).toEqual([
      ['output', 'x.log'],
      ['parsable', undefined],
      ['verbose', undefined],
      ['verbose', undefined],
      ['nodes', '1'],
      ['exclusive', undefined],
      ['exclusive', 'user'],
    ]);
    expect(parsed.positionals).toEqual(['job.sh', '-v']);
  });

  it('permutes options and positionals unless told to stop, and -- ends options', () => {
    const parsed = getoptLong(['a', '-v', 'b', '--', '-N'], table);
    expect(parsed.positionals).toEqual(['a', 'b', '-N']);
    expect(parsed.options).toHaveLength(1);
  });

  it('reports every problem with the index of its word, as getopt words them', () => {
    const parsed = getoptLong(['--o=x', '--bogus', '-z', '--parsable=1', '--nodes'], table);
    expect(parsed.problems).toEqual([
      { message: "option '--o' is ambiguous; possibilities: '--output' '--open-mode'", index: 0 },
      { message: "unrecognized option '--bogus'", index: 1 },
      { message: "invalid option -- 'z'", index: 2 },
      { message: "option '--parsable' doesn't allow an argument", index: 3 },
      { message: "option '--nodes' requires an argument", index: 4 },
    ]);
  });

  it('turns warned options into warnings and refused ones into problems, with the reason', () => {
    const { warnings, problems } = fatesOf(getoptLong(['--get-user-env', '--cluster-c=x'], table).options);
    expect(warnings).toEqual([
      { message: '--get-user-env is ignored: the job gets the exported environment', index: 0 },
    ]);
    expect(problems).toEqual([{ message: '--cluster-constraint is not supported: one cluster', index: 1 }]);
  });

  it('renders every option of the table in the docs table', () => {
    const text = renderFateTable('sbatch', table);
    for (const spec of table) expect(text).toContain(`--${spec.long}`);
    expect(text).toContain('| `-o`, `--output=value` | honoured | the output file |');
    expect(text).toContain('6 honoured, 1 accepted, warns, 1 refused');
  });
});
