import { describe, expect, it } from 'vitest';
import { jobExitStatus } from '../../cli/main.ts';
import { buildSubmitBody, expandPattern, parseExport, UsageError } from '../../cli/sbatch.ts';

describe('#SBATCH directives', () => {
  const script = [
    '#!/bin/bash',
    '#SBATCH --job-name=sim',
    '#SBATCH -n 4 -c 2 # four tasks of two CPUs',
    '#SBATCH --time=1-12:00:00',
    '#SBATCH -p batch -A physics',
    '#SBATCH --chdir=/srv/work',
    '#SBATCH --export=NONE,STEPS=10',
    '#SBATCH --requeue',
    '#SBATCH --error=sim-%j.err',
    '# an ordinary comment',
    'srun ./sim',
    '#SBATCH --job-name=ignored-after-the-first-command',
  ].join('\n');

  it('turns directives into a submit body', () => {
    expect(buildSubmitBody(script, {}, {})).toEqual({
      script,
      cpus: 8,
      name: 'sim',
      time_limit: '1-12:00:00',
      partition: 'batch',
      account: 'physics',
      work_dir: '/srv/work',
      requeue: true,
      environment: { STEPS: '10', CONDUCTOR_ERROR: 'sim-%j.err' },
    });
  });

  it('lets the command line win, and #CONDUCTOR over #SBATCH', () => {
    const body = buildSubmitBody(
      `#SBATCH -c 2 -J a\n#CONDUCTOR -J b --priority 3\necho`,
      { 'job-name': 'c' },
      {},
    );
    expect(body).toMatchObject({ name: 'c', cpus: 2, priority: 3 });
    expect(buildSubmitBody('#SBATCH -c 2\n', { cpus: '5' }, {}).cpus).toBe(5);
  });

  it('accepts Slurm times and refuses others', () => {
    for (const t of ['30', '5:00', '1:30:00', '2-0', '2-12:30', '2-12:30:15', 'UNLIMITED']) {
      expect(() => buildSubmitBody(`#SBATCH -t ${t}\n`, {}, {}), t).not.toThrow();
    }
    expect(() => buildSubmitBody('#SBATCH -t tomorrow\n', {}, {})).toThrow(UsageError);
    expect(() => buildSubmitBody('#SBATCH --bogus\n', {}, {})).toThrow(/#SBATCH/);
    expect(() => buildSubmitBody('#SBATCH -c 0\n', {}, {})).toThrow(/positive/);
  });

  it('--export: ALL/NONE, values, bare names from the environment', () => {
    expect(parseExport('ALL,A=1,B', { B: 'two' })).toEqual({ A: '1', B: 'two' });
    expect(parseExport('NONE', {})).toEqual({});
  });

  it('expands %j and %x; maps exit codes like a shell', () => {
    expect(expandPattern('out-%x-%j-%%.txt', { id: 7, name: 'sim' })).toBe('out-sim-7-%.txt');
    expect(jobExitStatus({ state: 'COMPLETED', exit_code: '0:0' })).toBe(0);
    expect(jobExitStatus({ state: 'FAILED', exit_code: '3:0' })).toBe(3);
    expect(jobExitStatus({ state: 'FAILED', exit_code: '0:9' })).toBe(137);
    expect(jobExitStatus({ state: 'NODE_FAIL', exit_code: null })).toBe(1);
  });
});
