import { describe, expect, it } from 'vitest';
import { jobExitStatus } from '../../cli/io.ts';
import {
  buildSubmission,
  directiveWords,
  exportedEnvironment,
  parseBegin,
  parseSignal,
  type SubmitCommand,
  scriptDirectives,
} from '../../cli/slurm/sbatch.ts';

const ORIGIN = { dir: '/home/alice/runs', host: 'login01' };
const NOW = new Date(2026, 11, 6, 21, 0, 0);

/** What `conductor submit <args> job.sh` (or `sbatch <args> job.sh`) makes of `script`. */
function submission(
  script: string,
  args: string[] = [],
  env: NodeJS.ProcessEnv = {},
  command: SubmitCommand = 'submit',
) {
  return buildSubmission({
    command,
    args: [...args, 'job.sh'],
    env,
    readScript: () => script,
    origin: ORIGIN,
    now: NOW,
  });
}

/** The body, or the problems as one error. */
function body(script: string, args: string[] = [], env: NodeJS.ProcessEnv = {}, command?: SubmitCommand) {
  const result = submission(script, args, env, command);
  if (result.problems.length > 0) throw new Error(result.problems.join('\n'));
  return result.body!;
}

// With no -J, a job is named after its script, as sbatch names it.
const at = { name: 'job.sh', submit_dir: ORIGIN.dir, submit_host: ORIGIN.host };

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
    expect(body(script)).toEqual({
      script,
      cpus: 8,
      ntasks: 4,
      cpus_per_task: 2,
      time_limit: '1-12:00:00',
      partition: 'batch',
      account: 'physics',
      work_dir: '/srv/work',
      requeue: true,
      stderr: 'sim-%j.err',
      export_env: 'NONE,STEPS=10',
      environment: { STEPS: '10' },
      ...at,
      name: 'sim',
    });
  });

  it('sends the new fields of every honoured option (a snapshot of the body)', () => {
    const full = [
      '#!/bin/bash',
      '#SBATCH -q high --comment "a long run"',
      '#SBATCH --begin=tomorrow -H',
      '#SBATCH -o logs/%x-%j.out -e logs/%x-%j.err -i data.in --open-mode=append',
      '#SBATCH --signal=B:USR1@120 --export=ALL,MODE=fast',
      'python3 run.py',
    ].join('\n');
    expect(
      body(full, [], { HOME: '/home/alice', CONDUCTOR_TOKEN: 'secret', CONDUCTOR_URL: 'http://x' }),
    ).toMatchInlineSnapshot(`
      {
        "begin_time": "2026-12-07T00:00:00.000Z",
        "comment": "a long run",
        "cpus": 1,
        "environment": {
          "HOME": "/home/alice",
          "MODE": "fast",
        },
        "export_env": "ALL,MODE=fast",
        "hold": true,
        "name": "job.sh",
        "open_mode": "append",
        "qos": "high",
        "script": "#!/bin/bash
      #SBATCH -q high --comment "a long run"
      #SBATCH --begin=tomorrow -H
      #SBATCH -o logs/%x-%j.out -e logs/%x-%j.err -i data.in --open-mode=append
      #SBATCH --signal=B:USR1@120 --export=ALL,MODE=fast
      python3 run.py",
        "signal": {
          "batch_only": true,
          "before_s": 120,
          "signal": "USR1",
        },
        "stderr": "logs/%x-%j.err",
        "stdin": "data.in",
        "stdout": "logs/%x-%j.out",
        "submit_dir": "/home/alice/runs",
        "submit_host": "login01",
      }
    `);
  });

  it('are read only before the first command: not after it, not in a heredoc after it', () => {
    const lines = [
      '#!/bin/bash',
      '',
      '#SBATCH -J first',
      '   # an indented comment',
      '#SBATCH -c 2',
      'cat > inner.sh <<EOF',
      '#!/bin/bash',
      '#SBATCH -J inner',
      'EOF',
      '#SBATCH -c 8',
    ];
    const script = lines.join('\n');
    expect(scriptDirectives(script, ['SBATCH']).map((d) => [d.line, d.words])).toEqual([
      [3, ['-J', 'first']],
      [5, ['-c', '2']],
    ]);
    expect(body(script)).toMatchObject({ name: 'first', cpus: 2 });
    // Only at the start of the line, as sbatch: an indented one is a comment.
    expect(body('  #SBATCH -J indented\necho\n').name).toBe('job.sh');
  });

  it('splits words as sbatch: quotes group, a word starting with # starts a comment', () => {
    expect(directiveWords(` -J "two words" --comment='a # b' -C a#b # -c 8`)).toEqual({
      words: ['-J', 'two words', '--comment=a # b', '-C', 'a#b'],
    });
    expect(directiveWords(' -J "open').problem).toMatch(/unmatched "/);
  });

  it('reports every problem at once, each directive problem with its line', () => {
    const script = [
      '#!/bin/bash',
      '#SBATCH -J fine',
      '#SBATCH --time=soon',
      '#SBATCH --foo',
      '#SBATCH --mem=lots',
      '# a comment',
      '#SBATCH --bb=stage',
      'echo',
    ].join('\n');
    const result = submission(script, [], {}, 'sbatch');
    expect(result.body).toBeUndefined();
    expect(result.problems).toEqual([
      // In the script's order, though options are parsed before their values are checked.
      'line 3: --time "soon" is not a Slurm time: minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS',
      "line 4: unrecognized option '--foo'",
      'line 5: --mem "lots" is not a memory size: a whole number with an optional unit K, M, G or T (default M), e.g. 4G or 512',
      'line 7: --bb is not supported: there are no burst buffers',
    ]);
    // And with the command line's and the environment's own.
    const more = submission(script, ['--bogus', '-c', '0'], { SBATCH_QOS: '' }, 'sbatch');
    // The script's by line, then the environment's and the command line's.
    expect(more.problems).toEqual([
      ...result.problems,
      "unrecognized option '--bogus'",
      'SBATCH_QOS: --qos needs a value',
      '--cpus-per-task must be a positive whole number, got "0"',
    ]);
  });

  it('warns about accepted options that mean nothing here, with their line', () => {
    const result = submission('#!/bin/sh\n#SBATCH --contiguous\necho\n', [], {}, 'sbatch');
    expect(result.problems).toEqual([]);
    expect(result.warnings).toEqual(['line 2: --contiguous is ignored: a job runs on one node']);
  });

  it('sends --mail-type and --mail-user as mail_type and mail_user (the control plane checks the names)', () => {
    const result = submission(
      '#!/bin/sh\n#SBATCH --mail-type=END,FAIL --mail-user=a@b\necho\n',
      [],
      {},
      'sbatch',
    );
    expect(result.problems).toEqual([]);
    expect(result.warnings).toEqual([]);
    expect(result.body).toMatchObject({ mail_type: 'END,FAIL', mail_user: 'a@b' });
  });

  it('takes abbreviations of long options, as getopt_long', () => {
    expect(body('#SBATCH --out=o.txt --part gpu\necho', ['--job=n'])).toMatchObject({
      stdout: 'o.txt',
      partition: 'gpu',
      name: 'n',
    });
    expect(submission('#SBATCH --ex=1\necho').problems[0]).toMatch(
      /^line 1: option '--ex' is ambiguous; possibilities: '--exclude' '--exclusive' '--export' '--export-file' '--extra-node-info'/,
    );
  });

  it('precedence: the command line, then SBATCH_* variables, then #CONDUCTOR, then #SBATCH', () => {
    const script = '#SBATCH -J a -p p1 -A acct1 -t 10\n#CONDUCTOR -J b -p p2\necho';
    expect(body(script)).toMatchObject({ name: 'b', partition: 'p2', account: 'acct1', time_limit: '10' });
    const env = { SBATCH_PARTITION: 'p3', SBATCH_ACCOUNT: 'acct2', SBATCH_TIMELIMIT: '20' };
    expect(body(script, [], env)).toMatchObject({
      name: 'b',
      partition: 'p3',
      account: 'acct2',
      time_limit: '20',
    });
    expect(body(script, ['-p', 'p4', '-t', '30'], env)).toMatchObject({
      partition: 'p4',
      account: 'acct2',
      time_limit: '30',
    });
    // sbatch reads #SBATCH only.
    expect(body(`#!/bin/sh\n${script}`, [], {}, 'sbatch')).toMatchObject({ name: 'a', partition: 'p1' });
    // Flags from the environment: any value turns them on.
    expect(body('echo', [], { SBATCH_REQUEUE: '1', SBATCH_EXCLUSIVE: '' })).toMatchObject({
      requeue: true,
      exclusive: true,
    });
    expect(body('#SBATCH --requeue\necho', [], { SBATCH_NO_REQUEUE: 'yes' }).requeue).toBe(false);
    expect(body('echo', [], { SBATCH_MEM_PER_CPU: '2G', SBATCH_QOS: 'low' })).toMatchObject({
      memory_per_cpu: '2G',
      qos: 'low',
    });
  });

  it('--export: ALL (without CONDUCTOR_* settings), NONE, lists, ALL,VAR=val; sbatch sends ALL by default', () => {
    const env = {
      PATH: '/bin',
      HOME: '/home/a',
      B: 'two',
      CONDUCTOR_TOKEN: 't',
      CONDUCTOR_URL: 'u',
      'BASH_FUNC_module%%': '() {  eval $($LMOD_CMD bash "$@")\n}',
    };
    expect(exportedEnvironment('ALL', env)).toEqual({ PATH: '/bin', HOME: '/home/a', B: 'two' });
    expect(exportedEnvironment('NONE', env)).toEqual({});
    expect(exportedEnvironment('B,A=1,MISSING', env)).toEqual({ B: 'two', A: '1' });
    expect(exportedEnvironment('ALL,A=1,PATH=/opt/bin', env)).toEqual({
      PATH: '/opt/bin',
      HOME: '/home/a',
      B: 'two',
      A: '1',
    });
    const sb = (args: string[], e: NodeJS.ProcessEnv = env) => body('#!/bin/sh\necho', args, e, 'sbatch');
    expect(sb([])).toMatchObject({ environment: { PATH: '/bin', HOME: '/home/a', B: 'two' } });
    expect(sb([])).not.toHaveProperty('export_env');
    expect(sb(['--export=NONE'])).toMatchObject({ export_env: 'NONE' });
    expect(sb(['--export=NONE'])).not.toHaveProperty('environment');
    expect(sb(['--export=B']).environment).toEqual({ B: 'two' });
    expect(sb([], { ...env, SBATCH_EXPORT: 'NONE' })).toMatchObject({ export_env: 'NONE' });
    // conductor submit sends only what it is told.
    expect(body('echo', [], env)).not.toHaveProperty('environment');
    expect(body('echo', ['--env', 'A=1', '--env', 'B'], env).environment).toEqual({ A: '1', B: 'two' });
    expect(submission('echo', ['--export=ALL,1BAD=x']).problems).toEqual([
      '--export: "1BAD" is not a variable name',
    ]);
  });

  it('--begin: Slurm time forms, in local time', () => {
    const iso = (...parts: number[]) => new Date(...(parts as [number, number])).toISOString();
    const cases: [string, string][] = [
      ['now', NOW.toISOString()],
      ['now+90', new Date(NOW.getTime() + 90_000).toISOString()],
      ['now+10minutes', new Date(NOW.getTime() + 600_000).toISOString()],
      ['now+1hour', new Date(NOW.getTime() + 3600_000).toISOString()],
      ['now+2days', new Date(NOW.getTime() + 2 * 86400_000).toISOString()],
      ['now+1week', new Date(NOW.getTime() + 7 * 86400_000).toISOString()],
      ['22:30', iso(2026, 11, 6, 22, 30)],
      ['20:15:30', iso(2026, 11, 7, 20, 15, 30)], // past today: tomorrow
      ['4:00pm', iso(2026, 11, 7, 16, 0)],
      ['2026-12-24', iso(2026, 11, 24)],
      ['2026-12-24T08:30', iso(2026, 11, 24, 8, 30)],
      ['2026-12-24T08:30:05', iso(2026, 11, 24, 8, 30, 5)],
      ['12/25', iso(2026, 11, 25)],
      ['12/25/27', iso(2027, 11, 25)],
      ['today', iso(2026, 11, 6)],
      ['tomorrow', iso(2026, 11, 7)],
      ['midnight', iso(2026, 11, 7)],
      ['noon', iso(2026, 11, 7, 12)],
      ['teatime', iso(2026, 11, 7, 16)],
    ];
    for (const [spec, expected] of cases) expect(parseBegin(spec, NOW), spec).toBe(expected);
    for (const bad of ['soon', 'now+1fortnight', '25:00', '2026-02-30', '13:00pm', '']) {
      expect(() => parseBegin(bad, NOW), bad).toThrow(/is not a Slurm time/);
    }
    expect(body('echo', ['-b', 'now+1hour']).begin_time).toBe(
      new Date(NOW.getTime() + 3600_000).toISOString(),
    );
  });

  it('--signal: [{R|B}:]sig[@time]', () => {
    expect(parseSignal('USR1')).toEqual({ signal: 'USR1', before_s: 60, batch_only: false });
    expect(parseSignal('B:SIGTERM@300')).toEqual({ signal: 'TERM', before_s: 300, batch_only: true });
    expect(parseSignal('R:10@5')).toEqual({ signal: '10', before_s: 5, batch_only: false });
    expect(parseSignal('RB:usr2')).toEqual({ signal: 'USR2', before_s: 60, batch_only: true });
    for (const bad of ['X:USR1', 'NOPE', '0', '65', 'USR1@70000', 'USR1@', '']) {
      expect(() => parseSignal(bad), bad).toThrow(/--signal/);
    }
  });

  it('reads the script, or --wrap; sbatch wants #! and no script arguments', () => {
    const wrap = buildSubmission({
      command: 'sbatch',
      args: ['--wrap', 'echo hi'],
      env: {},
      readScript: () => {
        throw new Error('no script to read');
      },
      origin: ORIGIN,
    });
    expect(wrap.body?.script).toBe('#!/bin/sh\n# This script was created by sbatch --wrap.\n\necho hi\n');
    expect(submission('echo', [], {}, 'sbatch').problems).toEqual([
      'This does not look like a batch script.  The first line must start with #! followed by the path to an interpreter.',
    ]);
    const args = buildSubmission({
      command: 'sbatch',
      // sbatch stops at the script: what follows is the script's.
      args: ['job.sh', '-J', 'x'],
      env: {},
      readScript: () => '#!/bin/sh\n',
      origin: ORIGIN,
    });
    expect(args.problems).toEqual(['arguments after the script are not supported yet: -J x']);
    const unreadable = buildSubmission({
      command: 'submit',
      args: ['nope.sh'],
      env: {},
      readScript: () => {
        throw new Error("ENOENT: no such file or directory, open 'nope.sh'");
      },
      origin: ORIGIN,
    });
    expect(unreadable.problems).toEqual(['unable to open file nope.sh: no such file or directory']);
  });

  it("conductor submit takes the retry policy (sbatch has no such options: Slurm's are cluster-wide)", () => {
    const built = buildSubmission({
      command: 'submit',
      args: [
        '--wrap',
        'true',
        '--requeue',
        '--max-requeues',
        '2',
        '--retry-on-failure',
        '--retry-backoff=30',
        '--crash-limit',
        '1',
      ],
      env: {},
      readScript: () => '',
      origin: ORIGIN,
    });
    expect(built.problems).toEqual([]);
    expect(built.body).toMatchObject({
      requeue: true,
      max_requeues: 2,
      retry_on_failure: true,
      retry_backoff_s: 30,
      crash_limit: 1,
    });
    const bad = buildSubmission({
      command: 'submit',
      args: ['--wrap', 'true', '--max-requeues', 'many'],
      env: {},
      readScript: () => '',
      origin: ORIGIN,
    });
    expect(bad.problems).toEqual(['--max-requeues must be a whole number, 0 or more, got "many"']);
    const sbatch = buildSubmission({
      command: 'sbatch',
      args: ['--wrap', 'true', '--max-requeues', '2'],
      env: {},
      readScript: () => '',
      origin: ORIGIN,
    });
    expect(sbatch.problems.join('\n')).toMatch(/max-requeues/);
  });

  it('maps exit codes like a shell', () => {
    expect(jobExitStatus({ state: 'COMPLETED', exit_code: '0:0' })).toBe(0);
    expect(jobExitStatus({ state: 'FAILED', exit_code: '3:0' })).toBe(3);
    expect(jobExitStatus({ state: 'FAILED', exit_code: '0:9' })).toBe(137);
    expect(jobExitStatus({ state: 'NODE_FAIL', exit_code: null })).toBe(1);
  });
});

describe('resource requests', () => {
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
      ...at,
    });
  });

  it('takes the same options, long and short, on the command line and in #CONDUCTOR lines', () => {
    const long = [
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
    ];
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
      ...at,
    });
    expect(
      body('echo\n', ['-G', '2', '-C', 'ssd', '-p', 'batch', '-w', 'n1', '-x', 'n2', '-N', '1']),
    ).toMatchObject({
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

  it('sends nothing it was not asked for', () => {
    expect(body('echo\n')).toEqual({ script: 'echo\n', cpus: 1, ...at });
    for (const nodes of ['1', '1-1']) {
      expect(body(`#SBATCH -N ${nodes}\necho\n`)).toEqual({
        script: `#SBATCH -N ${nodes}\necho\n`,
        cpus: 1,
        ...at,
      });
    }
    expect(body('#SBATCH --cpus 4\necho')).toEqual({ script: '#SBATCH --cpus 4\necho', cpus: 4, ...at });
  });

  it('passes memory sizes as written; refuses malformed ones naming the option', () => {
    for (const size of ['4096', '4G', '512M', '1T', '100K', '4g', '4GB', '0']) {
      expect(body(`#SBATCH --mem=${size}\n`).memory_per_node, size).toBe(size);
      expect(body('echo\n', ['--mem-per-cpu', size]).memory_per_cpu, size).toBe(size);
    }
    for (const size of ['4Q', '1.5G', '-1', 'G', '4 G', '', 'lots']) {
      expect(() => body('echo\n', [`--mem=${size}`]), size).toThrow(/--mem ".*" is not a memory size/);
    }
    expect(() => body('#SBATCH --mem-per-cpu=2X\n')).toThrow(
      /^line 1: --mem-per-cpu "2X" is not a memory size/,
    );
  });

  it('--mem and --mem-per-cpu exclude each other wherever each was given, as in Slurm', () => {
    expect(() => body('#SBATCH --mem=1G --mem-per-cpu=1G\n')).toThrow(
      '--mem (#SBATCH) and --mem-per-cpu (#SBATCH) are mutually exclusive',
    );
    expect(() => body('#SBATCH --mem-per-cpu=1G\n', ['--mem', '4G'])).toThrow(
      '--mem (the command line) and --mem-per-cpu (#SBATCH) are mutually exclusive',
    );
    expect(() => body('#CONDUCTOR --mem=1G\n', [], { SBATCH_MEM_PER_CPU: '1G' })).toThrow(
      '--mem (#CONDUCTOR) and --mem-per-cpu (the environment) are mutually exclusive',
    );
  });

  it('--gpus and --gpus-per-node are one request here; GPU counts are checked', () => {
    expect(body('#SBATCH --gpus-per-node=2\n').gpus).toBe(2);
    expect(body('#SBATCH --gpus-per-node=a100:2\n').gpus).toBe('a100:2');
    expect(body('#SBATCH --gpus=2 --gpus-per-node=2\n').gpus).toBe(2);
    expect(body('#SBATCH --gpus=4\n', ['--gpus-per-node', '1']).gpus).toBe(1);
    expect(body('#SBATCH --gpus-per-node=4\n', ['--gpus', 'v100:1']).gpus).toBe('v100:1');
    expect(() => body('#SBATCH --gpus=2 --gpus-per-node=4\n')).toThrow(
      /^#SBATCH: --gpus 2 and --gpus-per-node 4 differ/,
    );
    for (const gpus of ['two', 'a100:', ':2', 'a100:2:1', '2.5', 'a100:2,v100:1']) {
      expect(() => body('echo\n', ['--gpus', gpus]), gpus).toThrow(/--gpus ".*" is not a GPU request/);
    }
    expect(() => body('#SBATCH --gpus-per-node=x\n')).toThrow(/^line 1: --gpus-per-node "x"/);
  });

  it('--nodes: one node, or a clear refusal; --ntasks-per-node on the one node', () => {
    for (const nodes of ['2', '1-4', '0', '2-2']) {
      expect(() => body('echo\n', ['--nodes', nodes]), nodes).toThrow(
        `conductor runs each job on one node: --nodes ${nodes} is not supported yet (use --nodes=1)`,
      );
    }
    expect(() => body('#SBATCH --nodes=many\n')).toThrow(/--nodes "many" is not a node count/);
    expect(body('echo', ['--ntasks-per-node=3', '-c', '2'])).toMatchObject({ cpus: 6, ntasks: 3 });
    expect(() => body('echo', ['--ntasks-per-node=2', '-n', '4'])).toThrow(/needs more than one node/);
  });

  it('--exclusive: bare, or =user / =mcs taken as the whole node; other values refused', () => {
    expect(body('#SBATCH --exclusive=user\n').exclusive).toBe(true);
    expect(body('#SBATCH --exclusive=MCS\n').exclusive).toBe(true);
    expect(() => body('#SBATCH --exclusive=topo\n')).toThrow(
      /^line 1: --exclusive takes no value, or =user or =mcs/,
    );
    expect(() => body('echo', ['--exclusive='])).toThrow(/--exclusive takes no value/);
  });

  it('--gres, --constraint, --nodelist, --exclude: checked for form only', () => {
    for (const gres of ['gpu', 'gpu:2', 'gpu:a100:2', 'gpu:a100:2,nvme:1,license_matlab', 'bandwidth:10G']) {
      expect(body('echo\n', ['--gres', gres]).gres, gres).toBe(gres);
    }
    for (const gres of ['gpu::2', 'gpu,', ',gpu', 'gpu:a:b:c', 'a b', '']) {
      expect(() => body('echo\n', ['--gres', gres]), gres).toThrow(/--gres/);
    }
    expect(() => body('echo\n', ['--constraint', ' '])).toThrow('--constraint needs a value');
    expect(() => body('echo\n', ['--nodelist='])).toThrow('--nodelist needs a value');
    expect(() => body('echo\n', ['-w', './hosts.txt'])).toThrow(
      /--nodelist "\.\/hosts\.txt": a file of node names is not supported/,
    );
    expect(() => body('echo\n', ['-x', '/etc/bad-nodes'])).toThrow(/^--exclude/);
  });
});
