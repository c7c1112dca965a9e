/**
 * runSbatch, the sbatch drop-in, against a stand-in control plane that records what it is sent: what it
 * prints, where, and its exit codes, as Slurm's sbatch.
 */
import { mkdtempSync, realpathSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { main } from '../../cli/main.ts';
import { runSbatch } from '../../cli/slurm/sbatch.ts';

interface Request {
  method: string;
  url: string;
  body: unknown;
}

const received: Request[] = [];
/** What the stand-in answers, by `METHOD path`; a list is answered in turn (its last item from then on). */
let answers: Record<string, [number, unknown] | [number, unknown][]> = {};
let url = '';
let close = () => {};
const dir = mkdtempSync(join(tmpdir(), 'sbatch-run-'));

beforeAll(async () => {
  const server = createServer((req, res) => {
    let text = '';
    req.on('data', (d: Buffer) => {
      text += d.toString();
    });
    req.on('end', () => {
      received.push({
        method: req.method ?? '',
        url: req.url ?? '',
        body: text ? JSON.parse(text) : undefined,
      });
      const key = `${req.method} ${req.url}`;
      let answer = answers[key];
      if (Array.isArray(answer?.[0])) {
        const list = answer as [number, unknown][];
        answer = list.length > 1 ? (list.shift() as [number, unknown]) : (list[0] as [number, unknown]);
      }
      const [status, body] = (answer as [number, unknown] | undefined) ?? [
        404,
        { error: { code: 'not_found', message: `no route ${key}` } },
      ];
      // As a control plane without an SMTP server answers a submission that asks for mail.
      const mail = text && (JSON.parse(text) as { mail_type?: string }).mail_type;
      res
        .writeHead(status, {
          'content-type': 'application/json',
          ...(mail ? { 'conductor-warning': 'mail_type accepted, but no mail is sent' } : {}),
        })
        .end(JSON.stringify(body));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  close = () => server.close();
});
afterAll(() => close());
beforeEach(() => {
  received.length = 0;
  answers = { 'POST /api/v1/jobs/submit': [201, { id: 12, state: 'PENDING' }] };
});

async function sbatch(args: string[], extraEnv: Record<string, string> = {}) {
  let out = '';
  let err = '';
  const env = { CONDUCTOR_URL: url, CONDUCTOR_TOKEN: 'secret', HOME: dir, ...extraEnv };
  const code = await runSbatch(
    args,
    {
      out: (text) => {
        out += text;
      },
      err: (text) => {
        err += text;
      },
    },
    env,
    { pollMs: 10 },
  );
  return { code, out, err };
}

function script(name: string, lines: string[]): string {
  const path = join(dir, name);
  writeFileSync(path, `${lines.join('\n')}\n`);
  return path;
}

describe('sbatch', () => {
  it('submits the body and prints Submitted batch job <id>', async () => {
    const path = script('job.sh', [
      '#!/bin/bash',
      '#SBATCH -J sim -c 2 --mem=1G',
      '#SBATCH -o out-%j.log',
      'echo hi',
    ]);
    const run = await sbatch(['-p', 'batch', path], { SBATCH_QOS: 'high' });
    expect(run).toEqual({ code: 0, out: 'Submitted batch job 12\n', err: '' });
    expect(received).toEqual([
      {
        method: 'POST',
        url: '/api/v1/jobs/submit',
        body: {
          script: `#!/bin/bash\n#SBATCH -J sim -c 2 --mem=1G\n#SBATCH -o out-%j.log\necho hi\n`,
          cpus: 2,
          cpus_per_task: 2,
          name: 'sim',
          partition: 'batch',
          memory_per_node: '1G',
          qos: 'high',
          stdout: 'out-%j.log',
          // --export=ALL by default: the environment, without the CLI's own CONDUCTOR_* settings.
          environment: { HOME: dir, SBATCH_QOS: 'high' },
          submit_dir: realpathSync(process.cwd()),
          submit_host: hostname(),
        },
      },
    ]);
  });

  it("--parsable prints the id alone; -Q prints nothing and no warnings (its own nor the server's)", async () => {
    const path = script('mail.sh', ['#!/bin/sh', '#SBATCH --mail-type=END --contiguous', 'true']);
    expect(await sbatch(['--parsable', path])).toEqual({
      code: 0,
      out: '12\n',
      err:
        'sbatch: warning: line 2: --contiguous is ignored: a job runs on one node\n' +
        'sbatch: warning: mail_type accepted, but no mail is sent\n',
    });
    expect(received.at(-1)?.body).toMatchObject({ mail_type: 'END' });
    expect(await sbatch(['-Q', path])).toEqual({ code: 0, out: '', err: '' });
  });

  it('reports every problem at once, with its line, and submits nothing', async () => {
    const path = script('bad.sh', [
      '#!/bin/bash',
      '#SBATCH --foo',
      '#SBATCH -t forever',
      '#SBATCH -N 2',
      '#SBATCH --uid=root',
      'echo',
    ]);
    const run = await sbatch([path]);
    expect(run.code).toBe(1);
    expect(run.out).toBe('');
    expect(run.err.split('\n')).toEqual([
      "sbatch: error: line 2: unrecognized option '--foo'",
      'sbatch: error: line 3: --time "forever" is not a Slurm time: minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS',
      'sbatch: error: line 4: conductor runs each job on one node: --nodes 2 is not supported yet (use --nodes=1)',
      "sbatch: error: line 5: --uid is not supported: the job runs as its token owner's user: another cannot be chosen",
      '',
    ]);
    expect(received).toEqual([]);
  });

  it("prints the server's refusal as one error line", async () => {
    answers['POST /api/v1/jobs/submit'] = [
      400,
      { error: { code: 'invalid_partition', message: 'invalid partition specified: nope' } },
    ];
    const run = await sbatch(['-p', 'nope', '--wrap', 'true']);
    expect(run).toEqual({ code: 1, out: '', err: 'sbatch: error: invalid partition specified: nope\n' });
    const down = await sbatch(['--wrap', 'true'], { CONDUCTOR_URL: 'http://127.0.0.1:9' });
    expect(down.code).toBe(1);
    expect(down.err).toMatch(/^sbatch: error: cannot reach http:\/\/127\.0\.0\.1:9: .*\n$/);
  });

  it('--test-only asks the test route and says where and when it would start', async () => {
    answers['POST /api/v1/jobs/test'] = [
      200,
      { ok: true, node: 'node07', partition: 'batch', cpus: 4, start: 'now', reason: null },
    ];
    const run = await sbatch(['--test-only', '-n', '4', '--wrap', 'true']);
    expect(run.code).toBe(0);
    expect(run.out).toBe('');
    expect(run.err).toMatch(
      /^sbatch: Job to start at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d using 4 processors on nodes node07 in partition batch\n$/,
    );
    expect(received.map((r) => `${r.method} ${r.url}`)).toEqual(['POST /api/v1/jobs/test']);
    answers['POST /api/v1/jobs/test'] = [
      200,
      { ok: true, node: null, partition: 'gpu', cpus: 1, start: null, reason: 'Resources' },
    ];
    expect((await sbatch(['--test-only', '--wrap', 'true'])).err).toBe(
      'sbatch: Job to start at a later time (Resources) using 1 processors on nodes (none yet) in partition gpu\n',
    );
  });

  it('-W waits for the job and exits with its exit code', async () => {
    answers['GET /api/v1/jobs/12'] = [
      [200, { id: 12, state: 'PENDING', exit_code: null }],
      [200, { id: 12, state: 'RUNNING', exit_code: null }],
      [200, { id: 12, state: 'FAILED', exit_code: '3:0' }],
    ];
    const run = await sbatch(['-W', '--wrap', 'exit 3']);
    expect(run).toEqual({ code: 3, out: 'Submitted batch job 12\n', err: '' });
    expect(received.filter((r) => r.method === 'GET')).toHaveLength(3);
  });

  it('--help, --usage and --version print and submit nothing', async () => {
    const help = await sbatch(['--help']);
    expect(help.code).toBe(0);
    expect(help.out).toMatch(/^Usage: sbatch /);
    expect(help.out).toContain('--mail-type=type\n        BEGIN, END, FAIL, REQUEUE');
    expect((await sbatch(['--usage'])).out).toMatch(/^Usage: sbatch \[-N nnodes\]/);
    expect((await sbatch(['-V'])).out).toMatch(/^slurm 22\.05/);
    expect(received).toEqual([]);
  });
});

describe('conductor submit, on the same engine', () => {
  async function submit(args: string[], extraEnv: Record<string, string> = {}) {
    let out = '';
    let err = '';
    const io = {
      out: (text: string) => {
        out += text;
      },
      err: (text: string) => {
        err += text;
      },
    };
    const code = await main(['submit', ...args], { CONDUCTOR_URL: url, HOME: dir, ...extraEnv }, io);
    return { code, out, err };
  }

  it('reports every problem with its line, exit 2, and submits nothing', async () => {
    const path = script('both.sh', ['#!/bin/bash', '#SBATCH --frobnicate', '#CONDUCTOR -c zero', 'echo']);
    const run = await submit([path, '--begin=whenever']);
    expect(run.code).toBe(2);
    expect(run.err.split('\n')).toEqual([
      "conductor submit: line 2: unrecognized option '--frobnicate'",
      'conductor submit: line 3: --cpus-per-task must be a positive whole number, got "zero"',
      expect.stringMatching(/^conductor submit: --begin "whenever" is not a Slurm time/),
      '(see conductor submit --help)',
      '',
    ]);
    expect(received).toEqual([]);
  });

  it('sends the new fields; options may follow the script; warns on stderr; --parsable', async () => {
    const path = script('new.sh', [
      '#!/bin/bash',
      '#SBATCH --hint=compute_bound',
      '#CONDUCTOR -q low',
      'echo',
    ]);
    const run = await submit([path, '-H', '--signal=USR2@30', '--parsable'], { SBATCH_OPEN_MODE: 'append' });
    expect(run).toEqual({
      code: 0,
      out: '12\n',
      err: 'conductor submit: warning: line 2: --hint is ignored: CPUs are counted per node, with no socket, core or thread layout\n',
    });
    expect(received[0]?.body).toMatchObject({
      qos: 'low',
      hold: true,
      open_mode: 'append',
      signal: { signal: 'USR2', before_s: 30, batch_only: false },
    });
    // conductor submit sends no environment unless asked.
    expect(received[0]?.body).not.toHaveProperty('environment');
  });

  it('--test-only asks and submits nothing', async () => {
    answers['POST /api/v1/jobs/test'] = [
      200,
      { ok: true, node: 'node01', partition: 'batch', cpus: 1, start: 'now', reason: null },
    ];
    const run = await submit(['--wrap', 'true', '--test-only']);
    expect(run.code).toBe(0);
    expect(run.err).toMatch(/^conductor submit: Job to start at .* on nodes node01 in partition batch\n$/);
    expect(received.map((r) => r.url)).toEqual(['/api/v1/jobs/test']);
  });
});
