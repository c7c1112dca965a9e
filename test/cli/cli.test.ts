/**
 * The `conductor` binary (cli/bin/conductor.js) as people run it, against a real control plane (the Node
 * server) with a real agent running the jobs. CONDUCTOR_CLI_TRANSCRIPT=1 prints every command and its output.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SHOWN_WHEN_SET } from '../../cli/main.ts';
import { AgentProcess } from '../support/agent-process.ts';
import { availableBackends, type Backend, startTestServer } from '../support/cluster.ts';

const BIN = fileURLToPath(new URL('../../cli/bin/conductor.js', import.meta.url));
const [pglite] = (await availableBackends()).filter((b) => b.name === 'pglite+memory');

const SUBMIT_DIR = mkdtempSync(join(tmpdir(), 'conductor-cli-submit-'));

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the binary; `onStdout` sees output as it arrives. */
function conductor(
  args: string[],
  env: Record<string, string>,
  options: { input?: string; onStdout?: (text: string) => void } = {},
): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], {
      // As a user submits: from a directory of theirs, which the agent's job root (the temp folder) holds.
      cwd: SUBMIT_DIR,
      env: { PATH: process.env.PATH, HOME: env.HOME ?? tmpdir(), ...env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
      options.onStdout?.(d.toString());
    });
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    child.stdin.end(options.input ?? '');
    child.on('error', reject);
    child.on('close', (code) => {
      if (process.env.CONDUCTOR_CLI_TRANSCRIPT === '1') {
        console.log(`$ conductor ${args.join(' ')}\n${stdout}${stderr}[exit ${code}]`);
      }
      resolve({ code, stdout, stderr });
    });
  });
}

describe.runIf(pglite)('conductor CLI against a running control plane', () => {
  let backend: Backend;
  let server: Awaited<ReturnType<typeof startTestServer>>;
  let agent: AgentProcess;
  let env: Record<string, string>;
  const dir = mkdtempSync(join(tmpdir(), 'conductor-cli-'));

  beforeAll(async () => {
    backend = await pglite!.create();
    server = await startTestServer(backend);
    agent = new AgentProcess('cli-node-1', server.url, { cpus: 4 });
    await agent.registered();
    // HOME without a config file: the URL comes from the environment.
    env = { CONDUCTOR_URL: server.url, HOME: dir };
  });
  afterAll(async () => {
    await agent?.stop();
    await server?.close();
    await backend?.close();
  });

  it('submits a Slurm-style script with #SBATCH lines and waits for it', async () => {
    const script = join(dir, 'hello.sh');
    writeFileSync(
      script,
      [
        '#!/bin/bash',
        '#SBATCH --job-name=hello',
        '#SBATCH --ntasks=2',
        '#SBATCH -c 1',
        '#SBATCH --time=0:30',
        '#SBATCH --export=ALL,GREETING=hi,TARGET=world',
        '',
        'echo "$GREETING $TARGET from $CONDUCTOR_JOB_NAME with $CONDUCTOR_CPUS CPUs"',
        '',
      ].join('\n'),
    );
    const run = await conductor(['submit', script, '--wait'], env);
    expect(run.stderr).toMatch(/Submitted batch job \d+/);
    expect(run.code, run.stderr).toBe(0);
    const id = Number(/Submitted batch job (\d+)/.exec(run.stderr)?.[1]);
    const show = await conductor(['show', String(id), '--json'], env);
    expect(show.code).toBe(0);
    const job = JSON.parse(show.stdout);
    expect(job).toMatchObject({
      id,
      name: 'hello',
      cpus: 2,
      state: 'COMPLETED',
      exit_code: '0:0',
      time_limit: 0.5,
      environment: { GREETING: 'hi', TARGET: 'world' },
      export_env: 'ALL,GREETING=hi,TARGET=world',
    });
    // ALL: this shell's variables, but never the CLI's own settings (CONDUCTOR_URL, CONDUCTOR_TOKEN...).
    expect(job.environment).not.toHaveProperty('CONDUCTOR_URL');
    const logs = await conductor(['logs', String(id)], env);
    expect(logs.stdout).toBe('hi world from hello with 2 CPUs\n');
    const human = await conductor(['show', String(id)], env);
    expect(human.stdout).toMatch(/state\s+COMPLETED/);
    expect(human.stdout).not.toContain('\x1b['); // not a terminal: no colours
  });

  it('global options go before the command as well as after it', async () => {
    // No URL in the environment or a config file: only the flag says where the control plane is.
    const bare = { HOME: mkdtempSync(join(tmpdir(), 'conductor-global-')) };
    const before = await conductor(['--url', server.url, 'submit', '-', '--json'], bare, { input: 'true\n' });
    expect(before.code, before.stderr).toBe(0);
    const id = String(JSON.parse(before.stdout).id);
    const equals = await conductor([`--url=${server.url}`, '--token', '', 'show', id, '--json'], bare);
    expect(equals.code, equals.stderr).toBe(0);
    const after = await conductor(['show', id, '--json', '--url', server.url], bare);
    expect(after.code, after.stderr).toBe(0);
    // After the command wins over before it, as later flags do.
    const both = await conductor(['--url', 'http://127.0.0.1:9', 'jobs', '--url', server.url], bare);
    expect(both.code, both.stderr).toBe(0);
    expect((await conductor(['--url', server.url, 'jobs', '--url', 'http://127.0.0.1:9'], bare)).code).toBe(
      1,
    );
    const help = await conductor(['--url', server.url, 'show', '--help'], bare);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/^Usage: conductor show/);
    const noValue = await conductor(['--url'], bare);
    expect(noValue.code).toBe(2);
    expect(noValue.stderr).toMatch(/--url/);
    // token/webhook work in the database: a URL or token for the API would be silently ignored.
    const database = await conductor(['--url', server.url, 'token', 'list'], bare);
    expect(database.code).toBe(2);
    expect(database.stderr).toContain('--url and --token do not apply');
    const unknown = await conductor(['--frobnicate', 'jobs'], bare);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/--frobnicate/);
  }, 60_000);

  it('show prints every field as an aligned key and value, the environment and script below', async () => {
    const run = await conductor(
      ['submit', '-', '--wait', '-J', 'shown', '--env', 'ALPHA=1', '--env', 'B=two words'],
      env,
      {
        input: 'echo shown\n',
      },
    );
    const id = /Submitted batch job (\d+)/.exec(run.stderr)?.[1] as string;
    const json = JSON.parse((await conductor(['show', id, '--json'], env)).stdout) as Record<string, unknown>;
    const human = (await conductor(['show', id], env)).stdout;
    const lines = human.split('\n');
    // The resource requests (memory, GPUs...) are shown only when set: this job asks for none.
    const scalars = Object.keys(json).filter(
      (k) => k !== 'script' && k !== 'environment' && k !== 'attempts' && !SHOWN_WHEN_SET.has(k),
    );
    for (const key of SHOWN_WHEN_SET) expect(human).not.toMatch(new RegExp(`^${key}\\b`, 'm'));
    const column = lines[0]!.search(/\s\S/) + 1;
    for (const key of scalars) {
      const line = lines.find((l) => l.startsWith(`${key} `));
      expect(line, `${key} in:\n${human}`).toBeDefined();
      // Every value starts in the same column, at least two spaces after the longest key.
      expect(line!.slice(0, column).trim(), line).toBe(key);
      expect(line![column], line).not.toBe(' ');
      const value = json[key];
      expect(line!.slice(column), key).toBe(value === null ? '-' : String(value));
    }
    expect(column).toBeGreaterThanOrEqual(Math.max(...scalars.map((k) => k.length)) + 2);
    expect(human).toMatch(/^cancel_requested +false$/m);
    expect(human).toContain('\nenvironment\n  ALPHA  1\n  B      two words\n');
    expect(human).toMatch(/\nscript\n {2}echo shown\n$/);
    // Its one run: number, node, start - end, how it ended, exit code.
    const [run1] = json.attempts as { node: string; start_time: string; end_time: string }[];
    expect(human).toContain(
      `\nattempts\n  1  ${run1!.node}  ${run1!.start_time} - ${run1!.end_time}  COMPLETED  0:0\nscript\n`,
    );
  }, 60_000);

  it('command-line flags win over directives; #CONDUCTOR lines are read too', async () => {
    const script = join(dir, 'flags.sh');
    writeFileSync(script, '#SBATCH -J from-sbatch -c 2\n#CONDUCTOR --priority 5\nexit 0\n');
    const run = await conductor(['submit', script, '-J', 'from-flag', '--json'], env);
    expect(run.code, run.stderr).toBe(0);
    expect(JSON.parse(run.stdout)).toMatchObject({ name: 'from-flag', cpus: 2, priority: 5 });
  });

  it('--wait exits with the job exit code', async () => {
    const run = await conductor(['submit', '-', '--wait'], env, { input: 'echo failing; exit 3\n' });
    expect(run.code, run.stderr).toBe(3);
    expect(run.stderr).toMatch(/Job \d+ FAILED \(exit code 3:0\)/);
    const killed = await conductor(['submit', '-', '--wait'], env, { input: 'kill -9 $$\n' });
    expect(killed.code, killed.stderr).toBe(137);
  });

  it('an output file that cannot be created fails the job, and --wait, --follow and show say why', async () => {
    const missing = join(dir, 'no-such-folder', 'out.log');
    const why = `couldn't open output file ${missing}: No such file or directory`;
    for (const mode of ['--wait', '--follow']) {
      const run = await conductor(['submit', '-', '-o', missing, mode], env, { input: 'echo never\n' });
      expect(run.code, run.stderr).toBe(1);
      expect(run.stderr).toContain(` FAILED (exit code 1:0): ${why}\n`);
      const id = /Job (\d+) FAILED/.exec(run.stderr)?.[1] as string;
      expect((await conductor(['show', id], env)).stdout).toContain(why);
    }
  }, 60_000);

  it('logs -f streams output while the job runs, then exits with its code', async () => {
    // The job goes on only once the test has seen its first line through `logs -f`: proof that it streams.
    const go = join(dir, 'go-logs');
    // With -e, stderr has its own file and stream; without it, both go to slurm-<id>.out (as in Slurm).
    const submitted = await conductor(['submit', '-', '-e', 'slurm-%j.err'], env, {
      input: `echo first; while [ ! -e ${go} ]; do sleep 0.1; done; echo second >&2; sleep 0.5; echo third; exit 4\n`,
    });
    expect(submitted.stdout).toMatch(/^Submitted batch job \d+\n$/);
    const id = /(\d+)/.exec(submitted.stdout)?.[1] as string;
    const run = await conductor(['logs', id, '-f'], env, {
      onStdout: (text) => {
        if (text.includes('first')) writeFileSync(go, '');
      },
    });
    expect(run.code).toBe(4);
    expect(run.stdout).toBe('first\nthird\n');
    expect(run.stderr).toBe('second\n');
    // The agent wrote the same into the files, in the directory the job was submitted from.
    expect(readFileSync(join(SUBMIT_DIR, `slurm-${id}.out`), 'utf8')).toBe('first\nthird\n');
    expect(readFileSync(join(SUBMIT_DIR, `slurm-${id}.err`), 'utf8')).toBe('second\n');
  }, 60_000);

  it('submit --follow streams and exits with the code', async () => {
    const run = await conductor(['submit', '-', '--follow'], env, { input: 'echo live; exit 2\n' });
    expect(run.stdout).toBe('live\n');
    expect(run.code).toBe(2);
  });

  it('lists jobs (table and --json) and filters by state', async () => {
    const table = await conductor(['jobs'], env);
    expect(table.code).toBe(0);
    expect(table.stdout.split('\n')[0]).toMatch(/^JOBID\s+NAME\s+STATE\s+CPUS\s+TIME\s+NODELIST\(REASON\)$/);
    expect(table.stdout).toMatch(/hello\s+COMPLETED\s+2\s+\d+:\d\d\s+cli-node-1/);
    const json = JSON.parse((await conductor(['jobs', '--json', '--state', 'failed'], env)).stdout);
    expect(json.jobs.length).toBeGreaterThan(0);
    expect(json.jobs.every((j: { state: string }) => j.state === 'FAILED')).toBe(true);
  });

  it('shows nodes, drains and undrains one', async () => {
    const nodes = await conductor(['nodes'], env);
    expect(nodes.code).toBe(0);
    expect(nodes.stdout).toMatch(/^NODE\s+STATUS\s+CPUS\s+ALLOC\s+FREE\s+HEARTBEAT/);
    expect(nodes.stdout).toMatch(/cli-node-1\s+ready\s+4\s+0\s+4\s+\d+:\d\d ago/);
    const drained = await conductor(['drain', 'cli-node-1'], env);
    expect(drained.code, drained.stderr).toBe(0);
    expect((await conductor(['nodes'], env)).stdout).toMatch(/cli-node-1\s+draining/);
    // A job submitted now waits: nothing is placed on a draining node.
    const pending = await conductor(['submit', '-', '--json'], env, { input: 'echo later\n' });
    const id = JSON.parse(pending.stdout).id as number;
    await new Promise((r) => setTimeout(r, 1000));
    expect(JSON.parse((await conductor(['show', String(id), '--json'], env)).stdout).state).toBe('PENDING');
    expect((await conductor(['undrain', 'cli-node-1'], env)).code).toBe(0);
    expect((await conductor(['nodes'], env)).stdout).toMatch(/cli-node-1\s+ready/);
    const cancel = await conductor(['cancel', String(id), '999999'], env);
    expect(cancel.code).toBe(1); // 999999 does not exist
    expect(cancel.stderr).toContain('Job 999999 does not exist');
  }, 90_000);

  it('usage errors exit 2; every command has --help with examples; API errors exit 1', async () => {
    const commands = ['submit', 'jobs', 'show', 'cancel', 'logs', 'nodes', 'drain', 'undrain'];
    const helps = await Promise.all(commands.map((command) => conductor([command, '--help'], env)));
    for (const [i, help] of helps.entries()) {
      expect(help.code, commands[i]).toBe(0);
      expect(help.stdout, commands[i]).toMatch(/Usage: conductor/);
      expect(help.stdout, commands[i]).toMatch(/Examples?:\n/);
    }
    expect((await conductor(['--help'], env)).stdout).toContain('submit <script>');
    expect((await conductor(['frobnicate'], env)).code).toBe(2);
    expect((await conductor(['show'], env)).code).toBe(2);
    expect((await conductor(['show', 'abc'], env)).code).toBe(2);
    expect((await conductor(['jobs', '--nope'], env)).code).toBe(2);
    expect((await conductor(['submit', '-', '-t', 'soon'], env, { input: 'true' })).stderr).toContain(
      'is not a Slurm time',
    );
    const missing = await conductor(['show', '999999'], env);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain('Job 999999 does not exist');
    const down = await conductor(['jobs', '--url', 'http://127.0.0.1:9'], env);
    expect(down.code).toBe(1);
    expect(down.stderr).toContain('cannot reach http://127.0.0.1:9');
  }, 120_000);

  it('reads the URL and token from the config file; flags and environment win', async () => {
    const home = mkdtempSync(join(tmpdir(), 'conductor-home-'));
    const { mkdirSync } = await import('node:fs');
    mkdirSync(join(home, '.config', 'conductor'), { recursive: true });
    writeFileSync(join(home, '.config', 'conductor', 'config.json'), JSON.stringify({ url: server.url }));
    expect((await conductor(['jobs'], { HOME: home })).code).toBe(0);
    expect((await conductor(['jobs'], { HOME: home, CONDUCTOR_URL: 'http://127.0.0.1:9' })).code).toBe(1);
  });
});

describe('conductor logs -f over a stream that is cut', () => {
  it('resumes with Last-Event-ID: nothing twice, nothing lost, carriage returns kept', async () => {
    const { createServer } = await import('node:http');
    const seen: (string | undefined)[] = [];
    const server = createServer((req, res) => {
      if (!req.url?.startsWith('/api/v1/jobs/7/logs?')) {
        res.writeHead(404, { 'content-type': 'application/json' }).end('{"error":{"code":"nope"}}');
        return;
      }
      const resumeFrom = req.headers['last-event-id'] as string | undefined;
      seen.push(resumeFrom);
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      if (resumeFrom === undefined) {
        res.write(': keep-alive\n\nid: 4-0\nevent: stdout\ndata: "a\\rb\\n"\n\n');
        setTimeout(() => res.socket?.destroy(), 50); // the connection drops mid-job
      } else {
        res.write('id: 9-0\nevent: stdout\ndata: "more\\n"\n\n');
        res.end('id: 9-0\nevent: end\ndata: {"state":"FAILED","exit_code":"5:0"}\n\n');
      }
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as { port: number };
    try {
      const run = await conductor(['logs', '7', '-f'], {
        CONDUCTOR_URL: `http://127.0.0.1:${port}`,
        HOME: mkdtempSync(join(tmpdir(), 'conductor-cli-cut-')),
      });
      expect(run.stdout).toBe('a\rb\nmore\n');
      expect(seen).toEqual([undefined, '4-0']);
      expect(run.code).toBe(5);
    } finally {
      server.close();
    }
  }, 30_000);
});

describe('conductor against a stand-in control plane: the resource requests and the new job fields', () => {
  // A stand-in records exactly what the binary sends and answers with jobs as the shared design describes
  // them (test/cli/partitions.test.ts submits the same requests to a real control plane and agent).
  const received: unknown[] = [];
  const pending = {
    id: 12,
    name: 'train',
    state: 'PENDING',
    cpus: 8,
    exit_code: null,
    node: null,
    owner: null,
    account: null,
    partition: 'gpu',
    time_limit: null,
    reason: 'Resources',
    reason_detail: 'waiting for 2 a100 GPUs: gpu01 has 1 free',
    submit_time: '2026-12-06T18:00:00Z',
    start_time: null,
    end_time: null,
    memory_mb: 32768,
    memory_per_cpu: null,
    ntasks: 2,
    cpus_per_task: 4,
    submit_dir: '/home/alice/ml',
    submit_host: 'login01',
    gpus: 2,
    gpu_type: 'a100',
    gres: { nvme: 1 },
    constraint: 'avx512&ssd',
    exclusive: true,
    nodelist: null,
    exclude: ['node01', 'node02'],
    allocated_gpus: [],
    script: 'python3 train.py\n',
    environment: {},
  };
  const plain = {
    ...pending,
    id: 11,
    name: 'plain',
    state: 'COMPLETED',
    node: 'node07',
    reason: null,
    reason_detail: null,
    partition: null,
    memory_mb: null,
    ntasks: null,
    cpus_per_task: null,
    submit_dir: null,
    submit_host: null,
    gpus: 0,
    gpu_type: null,
    gres: {},
    constraint: null,
    exclusive: false,
    exclude: [],
    start_time: '2026-12-06T18:00:00Z',
    end_time: '2026-12-06T18:00:05Z',
    exit_code: '0:0',
  };
  const queued = { ...pending, id: 13, name: 'waits', reason: 'Priority' };
  let url = '';
  let close = () => {};
  let home = '';

  beforeAll(async () => {
    const { createServer } = await import('node:http');
    const server = createServer((req, res) => {
      let text = '';
      req.on('data', (d: Buffer) => {
        text += d.toString();
      });
      req.on('end', () => {
        const json = (status: number, body: unknown) =>
          res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
        if (req.method === 'POST' && req.url === '/api/v1/jobs/submit') {
          received.push(JSON.parse(text));
          json(201, pending);
        } else if (req.url?.startsWith('/api/v1/jobs?'))
          json(200, { jobs: [queued, pending, plain], next_before: null });
        else if (req.url === '/api/v1/jobs/12') json(200, pending);
        else if (req.url === '/api/v1/jobs/11') json(200, plain);
        else json(404, { error: { code: 'not_found', message: 'no such route' } });
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
    close = () => server.close();
    home = mkdtempSync(join(tmpdir(), 'conductor-cli-stand-in-'));
  });
  afterAll(() => close());

  it('submit sends the requests of #SBATCH lines and the command line as the API fields', async () => {
    const script = join(home, 'train.sh');
    writeFileSync(
      script,
      [
        '#!/bin/bash',
        '#SBATCH --mem=16G',
        '#SBATCH --gres=nvme:1',
        '#SBATCH --gpus-per-node=1',
        '#SBATCH -C avx512&ssd',
        '#SBATCH --exclusive=user',
        '#SBATCH -N 1',
        'python3 train.py',
        '',
      ].join('\n'),
    );
    received.length = 0;
    const run = await conductor(
      [
        'submit',
        script,
        '-c',
        '8',
        '--mem',
        '32G',
        '-G',
        'a100:2',
        '-p',
        'gpu',
        '-x',
        'node[01-02]',
        '-w',
        'gpu01',
      ],
      { CONDUCTOR_URL: url, HOME: home },
    );
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toBe('Submitted batch job 12\n');
    expect(received).toEqual([
      {
        script: readFileSync(script, 'utf8'),
        cpus: 8,
        cpus_per_task: 8,
        name: 'train.sh',
        // The command's directory and host, for the job's SLURM_SUBMIT_DIR and SLURM_SUBMIT_HOST.
        submit_dir: SUBMIT_DIR,
        submit_host: hostname(),
        partition: 'gpu',
        memory_per_node: '32G',
        gres: 'nvme:1',
        gpus: 'a100:2',
        constraint: 'avx512&ssd',
        exclusive: true,
        nodelist: 'gpu01',
        exclude: 'node[01-02]',
      },
    ]);
    const refused = await conductor(['submit', script, '--mem-per-cpu', '2G'], {
      CONDUCTOR_URL: url,
      HOME: home,
    });
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain(
      '--mem (#SBATCH) and --mem-per-cpu (the command line) are mutually exclusive',
    );
    const multi = await conductor(
      ['submit', '-', '-N', '2'],
      { CONDUCTOR_URL: url, HOME: home },
      { input: 'true\n' },
    );
    expect(multi.code).toBe(2);
    expect(multi.stderr).toContain(
      'conductor runs each job on one node: --nodes 2 is not supported yet (use --nodes=1)',
    );
    expect(received).toHaveLength(1);
  });

  it("jobs shows NODELIST(REASON): the node, or a pending job's reason code", async () => {
    const run = await conductor(['jobs'], { CONDUCTOR_URL: url, HOME: home });
    expect(run.code, run.stderr).toBe(0);
    const lines = run.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^JOBID\s+NAME\s+STATE\s+CPUS\s+TIME\s+NODELIST\(REASON\)$/);
    expect(lines[1]).toMatch(/^13\s+waits\s+PENDING\s+8\s+0:00\s+\(Priority\)$/);
    expect(lines[2]).toMatch(/^12\s+train\s+PENDING\s+8\s+0:00\s+\(Resources\)$/);
    expect(lines[3]).toMatch(/^11\s+plain\s+COMPLETED\s+8\s+0:05\s+node07$/);
  });

  it('show prints the requests and reason_detail when set, and leaves out the ones not set', async () => {
    const shown = (await conductor(['show', '12'], { CONDUCTOR_URL: url, HOME: home })).stdout;
    expect(shown).toMatch(/^reason +Resources$/m);
    expect(shown).toMatch(/^reason_detail +waiting for 2 a100 GPUs: gpu01 has 1 free$/m);
    expect(shown).toMatch(/^memory_mb +32768$/m);
    expect(shown).toMatch(/^ntasks +2$/m);
    expect(shown).toMatch(/^cpus_per_task +4$/m);
    expect(shown).toMatch(/^submit_dir +\/home\/alice\/ml$/m);
    expect(shown).toMatch(/^submit_host +login01$/m);
    expect(shown).not.toMatch(/^memory_per_cpu\b/m);
    expect(shown).toMatch(/^gpus +2$/m);
    expect(shown).toMatch(/^gpu_type +a100$/m);
    expect(shown).toMatch(/^constraint +avx512&ssd$/m);
    expect(shown).toMatch(/^exclusive +true$/m);
    expect(shown).toMatch(/^partition +gpu$/m);
    expect(shown).toMatch(/^exclude +node01, node02$/m);
    expect(shown).toContain('\ngres\n  nvme  1\n');
    expect(shown).not.toMatch(/^(nodelist|allocated_gpus)\b/m);
    const bare = (await conductor(['show', '11'], { CONDUCTOR_URL: url, HOME: home })).stdout;
    expect(bare).not.toMatch(
      /^(memory_mb|memory_per_cpu|ntasks|cpus_per_task|gpus|gpu_type|gres|constraint|exclusive|nodelist|exclude|allocated_gpus|reason_detail)\b/m,
    );
    expect(bare).toMatch(/^node +node07$/m);
    expect(bare).toMatch(/^partition +-$/m);
    expect(bare).toMatch(/^submit_dir +-$/m);
  });
});
