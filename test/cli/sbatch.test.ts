import { describe, expect, it } from 'vitest';
import { jobExitStatus } from '../../cli/main.ts';
import {
  buildSubmitBody,
  expandPattern,
  parseExport,
  parseSubmitOptions,
  plainExclusive,
  type SubmitValues,
  UsageError,
} from '../../cli/sbatch.ts';

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
      ntasks: 4,
      cpus_per_task: 2,
      name: 'sim',
      time_limit: '1-12:00:00',
      partition: 'batch',
      account: 'physics',
      work_dir: '/srv/work',
      requeue: true,
      environment: { STEPS: '10', CONDUCTOR_ERROR: 'sim-%j.err' },
    });
  });

  it('says where it comes from and the tasks asked, for the job environment (SLURM_SUBMIT_DIR, SLURM_NTASKS, ...)', () => {
    const origin = { dir: '/home/alice/runs', host: 'login01' };
    expect(buildSubmitBody('#SBATCH -n 2 -c 3\necho', {}, {}, origin)).toMatchObject({
      cpus: 6,
      ntasks: 2,
      cpus_per_task: 3,
      submit_dir: '/home/alice/runs',
      submit_host: 'login01',
    });
    const plain = buildSubmitBody('#SBATCH --cpus 4\necho', {}, {}, origin);
    expect(plain).toMatchObject({ cpus: 4, submit_dir: '/home/alice/runs', submit_host: 'login01' });
    expect(plain).not.toHaveProperty('ntasks');
    expect(plain).not.toHaveProperty('cpus_per_task');
    expect(buildSubmitBody('echo', { 'cpus-per-task': '5' }, {}, { dir: '/tmp' })).toEqual({
      script: 'echo',
      cpus: 5,
      cpus_per_task: 5,
      submit_dir: '/tmp',
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

describe('resource requests', () => {
  const body = (script: string, flags: SubmitValues = {}) => buildSubmitBody(script, flags, {});

  it('maps every option, in #SBATCH lines, to the submit fields', () => {
    const script = [
      '#!/bin/bash',
      '#SBATCH --mem=4G',
      '#SBATCH --gres=gpu:a100:2,nvme:1,license_matlab',
      '#SBATCH -G a100:2',
      '#SBATCH -C "[rack1|rack2]&avx512"',
      '#SBATCH --exclusive',
      '#SBATCH -p gpu,batch',
      '#SBATCH -w gpu01 -x node[01-03],node07',
      '#SBATCH -N 1',
      'python3 train.py',
    ].join('\n');
    expect(body(script)).toEqual({
      script,
      cpus: 1,
      memory_per_node: '4G',
      gres: 'gpu:a100:2,nvme:1,license_matlab',
      gpus: 'a100:2',
      constraint: '[rack1|rack2]&avx512',
      exclusive: true,
      partition: 'gpu,batch',
      nodelist: 'gpu01',
      exclude: 'node[01-03],node07',
    });
  });

  it('takes the same options, long and short, on the command line and in #CONDUCTOR lines', () => {
    const long = parseSubmitOptions(
      [
        '--mem-per-cpu=512M',
        '--gres',
        'nvme:1',
        '--gpus=2',
        '--constraint=ssd',
        '--exclusive',
        '--partition=batch',
        '--nodelist=n1',
        '--exclude=n2',
        '--nodes=1',
      ],
      'test',
    );
    const short = parseSubmitOptions(
      ['-G', '2', '-C', 'ssd', '-p', 'batch', '-w', 'n1', '-x', 'n2', '-N', '1'],
      'test',
    );
    expect(body('echo\n', long)).toEqual({
      script: 'echo\n',
      cpus: 1,
      memory_per_cpu: '512M',
      gres: 'nvme:1',
      gpus: 2,
      constraint: 'ssd',
      exclusive: true,
      partition: 'batch',
      nodelist: 'n1',
      exclude: 'n2',
    });
    expect(body('echo\n', short)).toMatchObject({
      gpus: 2,
      constraint: 'ssd',
      nodelist: 'n1',
      exclude: 'n2',
    });
    expect(body('#CONDUCTOR --mem 100K -G v100:1 --exclusive\necho\n')).toMatchObject({
      memory_per_node: '100K',
      gpus: 'v100:1',
      exclusive: true,
    });
  });

  it('lets the command line win over #CONDUCTOR, and #CONDUCTOR over #SBATCH', () => {
    const script = [
      '#SBATCH --mem=1G -G 1 -C a -p p1 -w n1 -x n2 --gres=nvme:1',
      '#CONDUCTOR --mem=2G -C b',
      'echo',
    ].join('\n');
    expect(body(script)).toMatchObject({ memory_per_node: '2G', gpus: 1, constraint: 'b', partition: 'p1' });
    expect(
      body(script, { mem: '3G', gpus: 'a100:4', partition: 'p2', nodelist: 'n3', exclude: 'n4', gres: 'x' }),
    ).toMatchObject({
      memory_per_node: '3G',
      gpus: 'a100:4',
      constraint: 'b',
      partition: 'p2',
      nodelist: 'n3',
      exclude: 'n4',
      gres: 'x',
    });
  });

  it('sends nothing it was not asked for', () => {
    expect(body('echo\n')).toEqual({ script: 'echo\n', cpus: 1 });
    // A one-node request is what every job is: nothing to send.
    for (const nodes of ['1', '1-1'])
      expect(body(`#SBATCH -N ${nodes}\necho\n`)).toEqual({
        script: `#SBATCH -N ${nodes}\necho\n`,
        cpus: 1,
      });
  });

  it('passes memory sizes as written; refuses malformed ones naming the option', () => {
    for (const size of ['4096', '4G', '512M', '1T', '100K', '4g', '4GB', '0']) {
      expect(body(`#SBATCH --mem=${size}\n`).memory_per_node, size).toBe(size);
      expect(body('echo\n', { 'mem-per-cpu': size }).memory_per_cpu, size).toBe(size);
    }
    for (const size of ['4Q', '1.5G', '-1', 'G', '4 G', '', 'lots']) {
      expect(() => body('echo\n', { mem: size }), size).toThrow(UsageError);
    }
    expect(() => body('echo\n', { mem: '4Q' })).toThrow('--mem "4Q" is not a memory size');
    expect(() => body('#SBATCH --mem-per-cpu=2X\n')).toThrow(/^--mem-per-cpu "2X" is not a memory size/);
  });

  it('--mem and --mem-per-cpu exclude each other wherever each was given, as in Slurm', () => {
    expect(() => body('#SBATCH --mem=1G --mem-per-cpu=1G\n')).toThrow(
      '--mem (#SBATCH) and --mem-per-cpu (#SBATCH) are mutually exclusive',
    );
    expect(() => body('#SBATCH --mem-per-cpu=1G\n', { mem: '4G' })).toThrow(
      '--mem (the command line) and --mem-per-cpu (#SBATCH) are mutually exclusive',
    );
    expect(() => body('#CONDUCTOR --mem=1G\n', { 'mem-per-cpu': '1G' })).toThrow(UsageError);
  });

  it('--gpus and --gpus-per-node are one request here; GPU counts are checked', () => {
    expect(body('#SBATCH --gpus-per-node=2\n').gpus).toBe(2);
    expect(body('#SBATCH --gpus-per-node=a100:2\n').gpus).toBe('a100:2');
    expect(body('#SBATCH --gpus=2 --gpus-per-node=2\n').gpus).toBe(2);
    expect(body('#SBATCH --gpus=4\n', { 'gpus-per-node': '1' }).gpus).toBe(1);
    expect(body('#SBATCH --gpus-per-node=4\n', { gpus: 'v100:1' }).gpus).toBe('v100:1');
    expect(() => body('#SBATCH --gpus=2 --gpus-per-node=4\n')).toThrow(
      /^#SBATCH: --gpus 2 and --gpus-per-node 4 differ/,
    );
    for (const gpus of ['two', 'a100:', ':2', 'a100:2:1', '2.5', 'a100:2,v100:1']) {
      expect(() => body('echo\n', { gpus }), gpus).toThrow(/--gpus ".*" is not a GPU request/);
    }
    expect(() => body('#SBATCH --gpus-per-node=x\n')).toThrow(/^--gpus-per-node "x"/);
  });

  it('--nodes: one node, or a clear refusal', () => {
    for (const nodes of ['2', '1-4', '0', '2-2']) {
      expect(() => body('echo\n', { nodes }), nodes).toThrow(
        `conductor runs each job on one node: --nodes ${nodes} is not supported yet (use --nodes=1)`,
      );
    }
    expect(() => body('#SBATCH --nodes=many\n')).toThrow(/--nodes "many" is not a node count/);
  });

  it('--exclusive: bare, or =user / =mcs taken as the whole node; other values refused', () => {
    expect(body('#SBATCH --exclusive=user\n').exclusive).toBe(true);
    expect(body('#SBATCH --exclusive=MCS\n').exclusive).toBe(true);
    expect(plainExclusive(['--exclusive=user', 'job.sh'])).toEqual(['--exclusive', 'job.sh']);
    // After `--` an argument is a file name, not an option.
    expect(plainExclusive(['--', '--exclusive=odd'])).toEqual(['--', '--exclusive=odd']);
    expect(() => body('#SBATCH --exclusive=topo\n')).toThrow(
      /^#SBATCH: --exclusive takes no value, or =user or =mcs/,
    );
    expect(() => plainExclusive(['--exclusive='])).toThrow(UsageError);
  });

  it('--gres, --constraint, --nodelist, --exclude: checked for form only', () => {
    for (const gres of ['gpu', 'gpu:2', 'gpu:a100:2', 'gpu:a100:2,nvme:1,license_matlab', 'bandwidth:10G']) {
      expect(body('echo\n', { gres }).gres, gres).toBe(gres);
    }
    for (const gres of ['gpu::2', 'gpu,', ',gpu', 'gpu:a:b:c', 'a b', '']) {
      expect(() => body('echo\n', { gres }), gres).toThrow(UsageError);
    }
    expect(() => body('echo\n', { constraint: ' ' })).toThrow('--constraint needs a value');
    expect(() => body('echo\n', { nodelist: '' })).toThrow('--nodelist needs a value');
    expect(() => body('echo\n', { nodelist: './hosts.txt' })).toThrow(
      /--nodelist "\.\/hosts\.txt": a file of node names is not supported/,
    );
    expect(() => body('echo\n', { exclude: '/etc/bad-nodes' })).toThrow(/^--exclude/);
  });
});
