/**
 * A stub control plane for the drop-in commands' tests (node:http): canned answers by `METHOD /path?query`,
 * every request recorded. And a small cluster as the API lists it: two partitions, four workers in every
 * state sinfo distinguishes.
 */
import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import type { Io } from '../../cli/main.ts';
import type { OptionSpec } from '../../cli/slurm/getopt.ts';

export interface Recorded {
  method: string;
  url: string;
  body: unknown;
  authorization: string | undefined;
}

type Answer = { status?: number; body: unknown } | ((req: Recorded, res: ServerResponse) => void);

export async function stubServer(routes: Record<string, Answer>) {
  const requests: Recorded[] = [];
  const server = createServer((req: IncomingMessage, res) => {
    let text = '';
    req.on('data', (chunk: Buffer) => {
      text += chunk.toString();
    });
    req.on('end', () => {
      const recorded: Recorded = {
        method: req.method ?? 'GET',
        url: req.url ?? '/',
        body: text === '' ? undefined : JSON.parse(text),
        authorization: req.headers.authorization,
      };
      requests.push(recorded);
      const answer =
        routes[`${recorded.method} ${recorded.url}`] ??
        routes[`${recorded.method} ${recorded.url.split('?')[0]}`];
      if (typeof answer === 'function') {
        answer(recorded, res);
        return;
      }
      const status = answer?.status ?? (answer ? 200 : 404);
      const body = answer?.body ?? { error: { code: 'not_found', message: `no route ${recorded.url}` } };
      res.writeHead(status, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify(body));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url,
    requests,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

export function captureIo(): Io & { stdout: string; stderr: string } {
  const io = {
    stdout: '',
    stderr: '',
    out(text: string) {
      io.stdout += text;
    },
    err(text: string) {
      io.stderr += text;
    },
  };
  return io;
}

const base = {
  nodes: null,
  default_time: null,
  max_cpus_per_node: null,
  def_mem_per_cpu: null,
  max_mem_per_cpu: null,
  allow_accounts: null,
  priority_tier: 1,
  policy: 'pack',
  created_by: 'admin',
};

export const PARTITIONS = [
  {
    ...base,
    name: 'batch',
    default: true,
    state: 'UP',
    max_time: null,
    live_nodes: ['node01', 'node02', 'node03'],
    total_cpus: 24,
  },
  {
    ...base,
    name: 'gpu',
    default: false,
    state: 'UP',
    max_time: 120,
    nodes: 'gpu[01-02]',
    live_nodes: ['gpu01'],
    total_cpus: 16,
  },
];

const worker = (id: string, fields: Record<string, unknown>) => ({
  worker_id: id,
  hostname: id,
  cpus: 8,
  allocated_cpus: 0,
  status: 'ready',
  live: true,
  memory_mb: 32000,
  allocated_memory_mb: 0,
  gpu_devices: [],
  gres: {},
  features: [],
  declared_partitions: [],
  registered_at: '2026-12-01T10:00:00Z',
  last_heartbeat: '2026-12-06T10:00:00Z',
  down_at: null,
  down_reason: null,
  ...fields,
});

export const WORKERS = [
  worker('node01', { allocated_cpus: 8, allocated_memory_mb: 16000 }),
  worker('node02', { allocated_cpus: 2 }),
  worker('node03', { status: 'draining' }),
  worker('gpu01', {
    cpus: 16,
    declared_partitions: ['gpu'],
    features: ['a100', 'nvme'],
    gpu_devices: [
      { index: 0, model: 'a100', used: false },
      { index: 1, model: 'a100', used: false },
    ],
  }),
  worker('gpu02', {
    cpus: 16,
    live: false,
    status: 'down',
    declared_partitions: ['gpu'],
    down_at: '2026-12-06T09:00:00Z',
    down_reason: 'Not responding',
  }),
];

export const CLUSTER_ROUTES: Record<string, Answer> = {
  'GET /api/v1/partitions': { body: { partitions: PARTITIONS } },
  'GET /api/v1/workers?all=true': { body: { workers: WORKERS } },
};

/** The options of a Slurm 22.05 man page (test/fixtures/slurm-22.05/<command>-options.txt), as `-s, --long`. */
export function manPageOptions(command: string): string[] {
  const path = fileURLToPath(new URL(`../fixtures/slurm-22.05/${command}-options.txt`, import.meta.url));
  return readFileSync(path, 'utf8').split('\n').filter(Boolean).sort();
}

/** A table's options written as the fixture writes them. */
export function tableOptions(table: readonly OptionSpec[]): string[] {
  return table.map((s) => `${s.short ? `-${s.short}, ` : ''}--${s.long}`).sort();
}

/** One word that gives the option (an argument attached when it takes one). */
export function optionWord(spec: OptionSpec): string {
  return spec.arg === 'required' ? `--${spec.long}=1` : `--${spec.long}`;
}
