/**
 * Every option of Slurm 22.05's sbatch has a fate, and does what its fate says.
 *
 * test/fixtures/slurm-22.05/sbatch-options.txt is every option of sbatch(1)'s OPTIONS section, extracted once
 * from the installed man page by:
 *
 *   MANWIDTH=200 man -P cat sbatch | awk '/^OPTIONS/{f=1;next} /^[A-Z]/{if(f)exit} f' \
 *     | grep -E '^       -' | sed -E 's/^ +//; s/(--[a-z-]+).*\/\1/'
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { buildSubmission, type SubmitBody } from '../../cli/slurm/sbatch.ts';
import { SBATCH_OPTIONS } from '../../cli/slurm/sbatch-options.ts';

const FIXTURE = new URL('../fixtures/slurm-22.05/sbatch-options.txt', import.meta.url);
const manOptions = readFileSync(FIXTURE, 'utf8')
  .trim()
  .split('\n')
  .map((line) => {
    const match = /^(?:-(\w), )?--([a-z-]+)$/.exec(line);
    if (!match) throw new Error(`bad fixture line ${line}`);
    return { short: match[1], long: match[2] as string };
  });

const NOW = new Date(2026, 11, 6, 21, 0, 0);
const SCRIPT = '#!/bin/bash\necho hi\n';
const sbatch = (args: string[], env: NodeJS.ProcessEnv = {}) =>
  buildSubmission({
    command: 'sbatch',
    args: [...args, 'job.sh'],
    env,
    readScript: () => SCRIPT,
    origin: { dir: '/home/alice' },
    now: NOW,
  });
const plain = sbatch([]).body as SubmitBody;

/** A valid value for each honoured option that takes one, and what it changes. */
const HONOURED: Record<string, { args: string[]; body?: Partial<SubmitBody>; flag?: string }> = {
  account: { args: ['-A', 'physics'], body: { account: 'physics' } },
  dependency: { args: ['-d', 'afterok:12:13,singleton'], body: { dependency: 'afterok:12:13,singleton' } },
  'kill-on-invalid-dep': { args: ['--kill-on-invalid-dep=yes'], body: { kill_on_invalid_dep: true } },
  array: { args: ['-a', '0-99:2%4'], body: { array: '0-99:2%4' } },
  begin: {
    args: ['--begin=now+1hour'],
    body: { begin_time: new Date(NOW.getTime() + 3600_000).toISOString() },
  },
  chdir: { args: ['-D', 'runs'], body: { work_dir: 'runs' } },
  comment: { args: ['--comment=why not'], body: { comment: 'why not' } },
  reservation: { args: ['--reservation=maint'], body: { reservation: 'maint' } },
  constraint: { args: ['-C', 'avx512'], body: { constraint: 'avx512' } },
  'cpus-per-task': { args: ['-c', '3'], body: { cpus: 3, cpus_per_task: 3 } },
  error: { args: ['-e', 'err-%j'], body: { stderr: 'err-%j' } },
  exclude: { args: ['-x', 'n1'], body: { exclude: 'n1' } },
  exclusive: { args: ['--exclusive'], body: { exclusive: true } },
  export: { args: ['--export=NONE'], body: { export_env: 'NONE', environment: undefined } },
  gpus: { args: ['-G', '2'], body: { gpus: 2 } },
  'gpus-per-node': { args: ['--gpus-per-node=a100:1'], body: { gpus: 'a100:1' } },
  gres: { args: ['--gres=nvme:1'], body: { gres: 'nvme:1' } },
  help: { args: ['-h'], flag: 'help' },
  hold: { args: ['-H'], body: { hold: true } },
  'ignore-pbs': { args: ['--ignore-pbs'] },
  input: { args: ['-i', 'in.txt'], body: { stdin: 'in.txt' } },
  'job-name': { args: ['-J', 'sim'], body: { name: 'sim' } },
  'mail-type': { args: ['--mail-type=END,FAIL'], body: { mail_type: 'END,FAIL' } },
  'mail-user': { args: ['--mail-user=ada@example.org'], body: { mail_user: 'ada@example.org' } },
  mem: { args: ['--mem=4G'], body: { memory_per_node: '4G' } },
  'mem-per-cpu': { args: ['--mem-per-cpu=1G'], body: { memory_per_cpu: '1G' } },
  'no-requeue': { args: ['--no-requeue'], body: { requeue: false } },
  nodelist: { args: ['-w', 'gpu01'], body: { nodelist: 'gpu01' } },
  // One node is what every job gets: nothing to send.
  nodes: { args: ['-N', '1'] },
  ntasks: { args: ['-n', '4'], body: { cpus: 4, ntasks: 4 } },
  'ntasks-per-node': { args: ['--ntasks-per-node=2'], body: { cpus: 2, ntasks: 2 } },
  'open-mode': { args: ['--open-mode=append'], body: { open_mode: 'append' } },
  output: { args: ['-o', 'out-%j'], body: { stdout: 'out-%j' } },
  parsable: { args: ['--parsable'], flag: 'parsable' },
  partition: { args: ['-p', 'gpu'], body: { partition: 'gpu' } },
  priority: { args: ['--priority=5'], body: { priority: 5 } },
  qos: { args: ['-q', 'high'], body: { qos: 'high' } },
  quiet: { args: ['-Q'], flag: 'quiet' },
  requeue: { args: ['--requeue'], body: { requeue: true } },
  signal: {
    args: ['--signal=B:USR1@90'],
    body: { signal: { signal: 'USR1', before_s: 90, batch_only: true } },
  },
  'test-only': { args: ['--test-only'], flag: 'test-only' },
  time: { args: ['-t', '30'], body: { time_limit: '30' } },
  usage: { args: ['--usage'], flag: 'usage' },
  verbose: { args: ['-v'], flag: 'verbose' },
  version: { args: ['-V'], flag: 'version' },
  wait: { args: ['-W'], flag: 'wait' },
  wrap: {
    args: ['--wrap=hostname'],
    body: { script: '#!/bin/sh\n# This script was created by sbatch --wrap.\n\nhostname\n', name: 'wrap' },
  },
};

describe("sbatch's option table", () => {
  it('has every option of the man page once, with its short letter, and nothing else', () => {
    expect(SBATCH_OPTIONS.map((s) => s.long).sort()).toEqual(manOptions.map((o) => o.long).sort());
    for (const { long, short } of manOptions) {
      const spec = SBATCH_OPTIONS.find((s) => s.long === long);
      expect(spec?.short, long).toBe(short);
      expect(['honoured', 'warned', 'refused'], long).toContain(spec?.fate);
      expect(spec?.note.length, long).toBeGreaterThan(5);
    }
  });

  for (const spec of SBATCH_OPTIONS) {
    it(`--${spec.long}: ${spec.fate}`, () => {
      if (spec.fate === 'honoured') {
        const sample = HONOURED[spec.long];
        expect(sample, `a sample for --${spec.long}`).toBeDefined();
        const args = (sample as (typeof HONOURED)[string]).args;
        const wrap = spec.long === 'wrap';
        const result = wrap
          ? buildSubmission({
              command: 'sbatch',
              args,
              env: {},
              readScript: () => '',
              origin: { dir: '/home/alice' },
              now: NOW,
            })
          : sbatch(args);
        expect(result.problems).toEqual([]);
        expect(result.warnings).toEqual([]);
        if (sample?.flag) expect(result.flags.has(sample.flag)).toBe(true);
        else expect(result.body).toEqual(JSON.parse(JSON.stringify({ ...plain, ...sample?.body })));
        return;
      }
      const args = spec.arg === 'required' ? [`--${spec.long}=x`] : [`--${spec.long}`];
      const result = sbatch(args);
      if (spec.fate === 'warned') {
        expect(result.problems).toEqual([]);
        expect(result.warnings).toEqual([`--${spec.long} is ignored: ${spec.note}`]);
        expect(result.body).toEqual(plain);
      } else {
        expect(result.problems).toEqual([`--${spec.long} is not supported: ${spec.note}`]);
        expect(result.body).toBeUndefined();
      }
    });
  }

  it('--kill-on-invalid-dep takes yes or no', () => {
    expect(sbatch(['--kill-on-invalid-dep=No']).body?.kill_on_invalid_dep).toBe(false);
    expect(sbatch(['--kill-on-invalid-dep=maybe']).problems).toEqual([
      '--kill-on-invalid-dep "maybe": yes or no',
    ]);
  });

  it('--dependency is sent as given (the control plane parses it; an empty list asks for nothing)', () => {
    expect(sbatch(['--dependency=']).problems).toEqual([]);
    expect(sbatch(['-d', 'afterok:12?afternotok:13+5']).body?.dependency).toBe('afterok:12?afternotok:13+5');
  });
});
