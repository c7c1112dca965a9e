/**
 * Scenario 10 of bench/run.ts: what the Workers deployment costs, from counted events (issue 17, item 4).
 * `BENCH_ONLY=10 npx tsx bench/run.ts` (BENCH_SCALE=small: 20 agents idle for 2 minutes, a few minutes in all).
 *
 * The Worker, bundled by wrangler, runs in workerd (one Miniflare, two Workers "a" and "b" of the same script:
 * two isolates sharing one Durable Object namespace, as two Cloudflare isolates would) against the bench
 * Postgres through the Neon WebSocket proxy and the bench Redis through the Upstash REST bridge, with real
 * packaged agents (agent/dist). Two designs in the same run: "polling" (agents with CONDUCTOR_CHANNEL=off:
 * HTTP heartbeats and long-poll claims) and "channel" (agents' default: a WebSocket to the Durable Object).
 *
 * What is counted, and where:
 * - Worker requests: a counting HTTP front before each isolate (every request, WebSocket upgrades included),
 *   plus every cron invocation the bench fires.
 * - Worker CPU-ms: the workerd process's CPU time (/proc/<pid>/stat, utime + stime) over the window: an upper
 *   bound, since it includes the runtime's own work (Miniflare's loopback services, the HTTP stack, both
 *   isolates and the Durable Object).
 * - Incoming WebSocket messages: the front parses the client → server frames (data messages; protocol control
 *   frames apart). Billed 20:1 as Durable Object requests. The agents' `ping` text frames are among them even
 *   when the object answers them with its auto-response without waking: counted as billed (an upper bound).
 * - Durable Object requests, alarms, active time and wake-ups: the object's own counters
 *   (`GET /__channel/stats` with CONDUCTOR_COUNT_EVENTS=1; a 404 means no object: zeros).
 * - Upstash commands: the bridge's count (a pipeline or multi-exec of n commands counts n).
 * - Postgres: the instants at which wire traffic reached Postgres through the Neon proxy; from them the
 *   minutes in which Postgres received anything and Neon's compute time (awake from a query until 5 minutes
 *   after the last one, intervals merged).
 *
 * The price table is PRICES below (one place); docs/serverless-cost.md explains the model.
 */
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { Agent, createServer, request as httpRequest, type IncomingMessage } from 'node:http';
import { type AddressInfo, connect, type Socket } from 'node:net';
import type { Duplex, Readable } from 'node:stream';
import { Miniflare } from 'miniflare';
import { CRON_CACHE_SYNC } from '../functions/worker-env.ts';
import { AgentProcess } from '../test/support/agent-process.ts';
import { startNeonProxy } from '../test/support/neon-proxy.ts';
import { startUpstashBridge } from '../test/support/upstash-bridge.ts';
import { bundleWorker, workerModules } from '../test/support/worker-bundle.ts';
import { procSample, round, type Stats, sleep, stats } from './lib.ts';

// ---------------------------------------------------------------- prices (one place)
/**
 * List prices, checked 2026-12-07 (USD). Sources:
 * - Workers: https://developers.cloudflare.com/workers/platform/pricing/ (Workers Paid: $5/month minimum with
 *   10 M requests and 30 M CPU-ms included, then $0.30 per million requests and $0.02 per million CPU-ms; the
 *   same figures on https://developers.cloudflare.com/workflows/reference/pricing/, "identical to Workers
 *   Standard pricing").
 * - Durable Objects: https://developers.cloudflare.com/durable-objects/platform/pricing (1 M requests
 *   included, then $0.15 per million; requests include HTTP requests, RPC sessions, WebSocket messages and
 *   alarm invocations; 400,000 GB-s included, then $12.50 per million GB-s; billed for wall-clock time while
 *   active or idle but unable to hibernate), and
 *   https://developers.cloudflare.com/durable-objects/platform/changelog/ (2024-04-01: incoming WebSocket
 *   messages billed 20:1). Hibernation after 10 s in a hibernatable state:
 *   https://github.com/cloudflare/cloudflare-docs/issues/24138 quoting the pricing page.
 * - Upstash Redis pay-as-you-go: https://upstash.com/pricing/redis ($0.20 per 100K commands).
 * - Neon Launch plan: https://neon.com/docs/introduction/plans ($0.106 per CU-hour, no monthly minimum),
 *   https://neon.com/docs/introduction/scale-to-zero (suspends after 5 minutes without activity); 0.25 CU is
 *   the smallest compute.
 */
export const PRICES = {
  checked: '2026-12-07',
  sources: [
    'https://developers.cloudflare.com/workers/platform/pricing/',
    'https://developers.cloudflare.com/durable-objects/platform/pricing',
    'https://developers.cloudflare.com/durable-objects/platform/changelog/',
    'https://upstash.com/pricing/redis',
    'https://neon.com/docs/introduction/plans',
    'https://neon.com/docs/introduction/scale-to-zero',
  ],
  workers: {
    monthlyMinimum: 5,
    includedRequests: 10_000_000,
    perMillionRequests: 0.3,
    includedCpuMs: 30_000_000,
    perMillionCpuMs: 0.02,
  },
  durableObjects: {
    includedRequests: 1_000_000,
    perMillionRequests: 0.15,
    /** Incoming WebSocket messages per billed request. */
    webSocketMessagesPerRequest: 20,
    includedGbSeconds: 400_000,
    perMillionGbSeconds: 12.5,
    memoryGb: 0.125, // 128 MB
    /** Idle time in a hibernatable state before the object hibernates (its duration is modelled as wake-ups
     *  × this + active time). */
    idleSecondsBeforeHibernation: 10,
  },
  upstash: { per100kCommands: 0.2 },
  neon: { perCuHour: 0.106, minimumCu: 0.25, suspendAfterMinutes: 5 },
} as const;

const MONTH_MINUTES = 30 * 24 * 60;

export interface Usage {
  workerRequests: number;
  workerCpuMs: number;
  doRequests: number;
  doWebSocketMessages: number;
  doAlarms: number;
  doGbSeconds: number;
  upstashCommands: number;
  neonComputeHours: number;
}

export interface Dollars {
  workers: number;
  durableObjects: number;
  upstash: number;
  neon: number;
  total: number;
}

const over = (used: number, included: number, perMillion: number) =>
  (Math.max(0, used - included) / 1e6) * perMillion;

/** A month's bill for a month's usage: the Workers Paid minimum and the included amounts applied. */
export function monthlyBill(u: Usage): Dollars {
  const w = PRICES.workers;
  const d = PRICES.durableObjects;
  const workers =
    w.monthlyMinimum +
    over(u.workerRequests, w.includedRequests, w.perMillionRequests) +
    over(u.workerCpuMs, w.includedCpuMs, w.perMillionCpuMs);
  const doBilledRequests = u.doRequests + u.doAlarms + u.doWebSocketMessages / d.webSocketMessagesPerRequest;
  const durableObjects =
    over(doBilledRequests, d.includedRequests, d.perMillionRequests) +
    over(u.doGbSeconds, d.includedGbSeconds, d.perMillionGbSeconds);
  const upstash = (u.upstashCommands / 100_000) * PRICES.upstash.per100kCommands;
  const neon = u.neonComputeHours * PRICES.neon.minimumCu * PRICES.neon.perCuHour;
  return { workers, durableObjects, upstash, neon, total: workers + durableObjects + upstash + neon };
}

/** The marginal price of some usage (nothing included, no minimum): what one burst adds to a bill. */
export function marginalCost(u: Usage): Dollars {
  const w = PRICES.workers;
  const d = PRICES.durableObjects;
  const workers = (u.workerRequests / 1e6) * w.perMillionRequests + (u.workerCpuMs / 1e6) * w.perMillionCpuMs;
  const durableObjects =
    ((u.doRequests + u.doAlarms + u.doWebSocketMessages / d.webSocketMessagesPerRequest) / 1e6) *
      d.perMillionRequests +
    (u.doGbSeconds / 1e6) * d.perMillionGbSeconds;
  const upstash = (u.upstashCommands / 100_000) * PRICES.upstash.per100kCommands;
  const neon = u.neonComputeHours * PRICES.neon.minimumCu * PRICES.neon.perCuHour;
  return { workers, durableObjects, upstash, neon, total: workers + durableObjects + upstash + neon };
}

// ---------------------------------------------------------------- Postgres activity → Neon compute
/** Of the minutes of [t0, t1) (the window cut into its length in whole minutes, rounded: a window of 60.4 s
 *  is one minute), how many held any traffic to Postgres. */
export function activeMinutes(instants: number[], t0: number, t1: number): number {
  const n = Math.max(1, Math.round((t1 - t0) / 60_000));
  const minutes = new Set<number>();
  for (const at of instants) if (at >= t0 && at < t1) minutes.add(Math.floor(((at - t0) / (t1 - t0)) * n));
  return minutes.size;
}

/**
 * Neon compute time within [t0, t1): the compute is awake from each instant of traffic until
 * `suspendAfterMinutes` after it, intervals merged, clipped to the window (instants before t0 are ignored).
 */
export function neonAwakeMs(instants: number[], t0: number, t1: number): number {
  const tail = PRICES.neon.suspendAfterMinutes * 60_000;
  let awake = 0;
  let end = Number.NEGATIVE_INFINITY;
  for (const at of instants.filter((x) => x >= t0 && x < t1).sort((a, b) => a - b)) {
    const from = Math.max(at, end);
    const to = Math.min(at + tail, t1);
    if (to > from) awake += to - from;
    end = Math.max(end, at + tail);
  }
  return awake;
}

/**
 * The fraction of time a Neon compute is awake in a steady state observed over [t0, t1): the window's traffic
 * taken as repeating with the window's length (a circle), each instant keeping the compute awake for
 * `suspendAfterMinutes`. No traffic: 0; traffic at least every 5 minutes: 1. Neither the start-up before the
 * window nor where the window happens to cut a period biases it.
 */
export function neonAwakeFraction(instants: number[], t0: number, t1: number): number {
  const length = t1 - t0;
  const tail = PRICES.neon.suspendAfterMinutes * 60_000;
  const inside = instants.filter((x) => x >= t0 && x < t1).map((x) => x - t0);
  if (inside.length === 0 || length <= 0) return 0;
  if (tail >= length) return 1;
  const spans: [number, number][] = [];
  for (const x of inside) {
    spans.push([x, Math.min(x + tail, length)]);
    if (x + tail > length) spans.push([0, x + tail - length]);
  }
  spans.sort((a, b) => a[0] - b[0]);
  let awake = 0;
  let end = 0;
  for (const [from, to] of spans) {
    const start = Math.max(from, end);
    if (to > start) awake += to - start;
    end = Math.max(end, to);
  }
  return awake / length;
}

// ---------------------------------------------------------------- counting front (HTTP + WebSocket)
/** Counts client → server WebSocket frames (masked, as clients send them) across chunk boundaries. */
function wsFrameCounter(onFrame: (opcode: number, fin: boolean) => void): (chunk: Buffer) => void {
  let pending: Buffer = Buffer.alloc(0);
  let skip = 0;
  return (chunk) => {
    let data = pending.length > 0 ? Buffer.concat([pending, chunk]) : chunk;
    pending = Buffer.alloc(0);
    let off = 0;
    while (off < data.length) {
      if (skip > 0) {
        const n = Math.min(skip, data.length - off);
        skip -= n;
        off += n;
        continue;
      }
      const rest = data.length - off;
      if (rest < 2) break;
      const b0 = data[off] as number;
      const b1 = data[off + 1] as number;
      let length = b1 & 0x7f;
      let header = 2;
      if (length === 126) {
        if (rest < 4) break;
        length = data.readUInt16BE(off + 2);
        header = 4;
      } else if (length === 127) {
        if (rest < 10) break;
        length = Number(data.readBigUInt64BE(off + 2));
        header = 10;
      }
      if (b1 & 0x80) header += 4;
      if (rest < header) break;
      onFrame(b0 & 0x0f, (b0 & 0x80) !== 0);
      off += header;
      skip = length;
    }
    if (off < data.length) pending = Buffer.from(data.subarray(off));
    data = Buffer.alloc(0);
  };
}

interface Front {
  url: string;
  /** Requests by "METHOD /path" (ids folded), upgrades included. */
  requests: Map<string, number>;
  total(): number;
  /** Answers with a 5xx status: failures that inflate the counts (retries). */
  errors: number;
  upgrades: number;
  /** Upgrades the Worker answered with 101. */
  opened: number;
  /** Complete incoming data messages (text/binary), and control frames (ping/pong/close) apart. */
  wsMessages: number;
  wsControlFrames: number;
  close(): Promise<void>;
}

export async function countingFront(target: string): Promise<Front> {
  const t = new URL(target);
  const port = Number(t.port);
  const keepAlive = new Agent({ keepAlive: true, maxSockets: 256 });
  const sockets = new Set<Socket | Duplex>();
  const front: Front = {
    url: '',
    requests: new Map(),
    total: () => [...front.requests.values()].reduce((a, b) => a + b, 0),
    errors: 0,
    upgrades: 0,
    opened: 0,
    wsMessages: 0,
    wsControlFrames: 0,
    close: async () => {},
  };
  const count = (req: IncomingMessage) => {
    const key = `${req.method} ${(req.url ?? '').split('?')[0]?.replace(/\/\d+(?=\/|$)/g, '/:id')}`;
    front.requests.set(key, (front.requests.get(key) ?? 0) + 1);
  };
  const server = createServer((req, res) => {
    count(req);
    const upstream = httpRequest(
      { host: t.hostname, port, method: req.method, path: req.url, headers: req.headers, agent: keepAlive },
      (up) => {
        if ((up.statusCode ?? 502) >= 500) front.errors++;
        res.writeHead(up.statusCode ?? 502, up.headers);
        up.pipe(res);
      },
    );
    upstream.on('error', () => {
      front.errors++;
      if (!res.headersSent) res.writeHead(502);
      res.end();
    });
    req.pipe(upstream);
  });
  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    count(req);
    front.upgrades++;
    const frames = wsFrameCounter((opcode, fin) => {
      if (opcode >= 8) front.wsControlFrames++;
      else if (fin) front.wsMessages++;
    });
    const up = connect({ host: t.hostname, port });
    sockets.add(socket);
    sockets.add(up);
    let lines = `${req.method} ${req.url} HTTP/1.1\r\n`;
    for (let i = 0; i < req.rawHeaders.length; i += 2)
      lines += `${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}\r\n`;
    up.write(`${lines}\r\n`);
    let answered = false;
    let opened = false;
    if (head.length > 0) up.write(head);
    up.on('data', (chunk: Buffer) => {
      if (!answered) {
        answered = true;
        opened = / 101 /.test(chunk.subarray(0, 16).toString('latin1'));
        if (opened) front.opened++;
      }
      socket.write(chunk);
    });
    socket.on('data', (chunk: Buffer) => {
      if (opened) frames(chunk);
      up.write(chunk);
    });
    const end = () => {
      sockets.delete(socket);
      sockets.delete(up);
      socket.destroy();
      up.destroy();
    };
    socket.on('close', end);
    socket.on('error', end);
    up.on('close', end);
    up.on('error', end);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  front.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  front.close = async () => {
    for (const s of sockets) s.destroy();
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    keepAlive.destroy();
  };
  return front;
}

// ---------------------------------------------------------------- workerd CPU
/** The workerd processes this bench started (Miniflare spawns one). */
function workerdPids(): number[] {
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (comm.startsWith('workerd') && ppid === process.pid) out.push(Number(name));
    } catch {}
  }
  return out;
}

// ---------------------------------------------------------------- the scenario
export interface CostOptions {
  small: boolean;
  pgUrl: string;
  redisUrl: string;
  /** The bench's own (uncounted) Postgres access: node-postgres straight to the server, not via the proxy. */
  sql: (text: string, params?: unknown[]) => Promise<Record<string, unknown>[]>;
  /** Empties jobs, workers and Redis between designs. */
  reset: () => Promise<void>;
  agentEntry: string[];
  log: (m: string) => void;
  /** A row in bench/run.ts's table. */
  row: (scenario: string, measure: string, goal: string, met: string, value: string) => void;
}

type Design = 'polling' | 'channel';
// biome-ignore lint/suspicious/noExplicitAny: reading back the plain result objects for the tables
type Plain = any;

interface Counters {
  at: number;
  workerRequests: number;
  crons: number;
  cpuMs: number;
  wsMessages: number;
  wsControlFrames: number;
  upstash: number;
  pgRoundTrips: number;
  pgConnections: number;
  /** Worker answers with a 5xx status. */
  workerErrors: number;
  doRequests: number;
  doWebSocketMessages: number;
  doAlarms: number;
  doActiveMs: number;
  doWakeups: number;
}

const diff = (a: Counters, b: Counters): Counters =>
  Object.fromEntries(
    Object.keys(a).map((k) => [k, (b[k as keyof Counters] as number) - (a[k as keyof Counters] as number)]),
  ) as unknown as Counters;

/** A window's usage as billed: WebSocket messages as counted on the wire (≥ what the object itself sees). */
function usageOf(d: Counters, neonMs: number, scale = 1): Usage {
  const pd = PRICES.durableObjects;
  return {
    workerRequests: d.workerRequests * scale,
    workerCpuMs: d.cpuMs * scale,
    doRequests: d.doRequests * scale,
    doWebSocketMessages: Math.max(d.wsMessages, d.doWebSocketMessages) * scale,
    doAlarms: d.doAlarms * scale,
    doGbSeconds:
      ((d.doWakeups * pd.idleSecondsBeforeHibernation * 1000 + d.doActiveMs) / 1000) * pd.memoryGb * scale,
    upstashCommands: d.upstash * scale,
    neonComputeHours: (neonMs / 3_600_000) * scale,
  };
}

const money = (x: number) =>
  `$${x < 0.01 && x > 0 ? x.toFixed(5) : x < 1 && x > 0 ? x.toFixed(4) : x < 10 ? x.toFixed(2) : x.toFixed(0)}`;
const big = (x: number) =>
  x >= 1e6 ? `${round(x / 1e6, 2)} M` : x >= 1e4 ? `${round(x / 1e3, 1)} k` : `${round(x, 1)}`;

function wranglerVars(): Record<string, string> {
  const toml = readFileSync(new URL('../wrangler.toml', import.meta.url), 'utf8');
  const section = /^\[vars\]\s*$([\s\S]*?)(?=^\[)/m.exec(toml)?.[1] ?? '';
  return Object.fromEntries([...section.matchAll(/^(\w+)\s*=\s*"([^"]*)"/gm)].map((m) => [m[1], m[2]]));
}

export async function runServerlessCost(o: CostOptions): Promise<Record<string, unknown>> {
  const S = o.small;
  const AGENTS = Number(process.env.BENCH_COST_AGENTS ?? (S ? 20 : 100));
  const IDLE_MIN = Number(process.env.BENCH_COST_IDLE_MINUTES ?? (S ? 2 : 10));
  /** The steady idle window starts after this many minutes (registration, first crons). */
  const WARMUP_MIN = Math.min(2, IDLE_MIN / 2);
  /** The polling design's idle window may be shorter (its rates are steady from the first minute). */
  const POLLING_IDLE_MIN = Number(process.env.BENCH_COST_POLLING_IDLE_MINUTES ?? IDLE_MIN);
  const SPREAD_N = Number(process.env.BENCH_COST_SPREAD_JOBS ?? (S ? 50 : 200));
  const SPREAD_MS = S ? 500 : 1000;
  const BURST = Number(process.env.BENCH_COST_BURST ?? (S ? 1000 : 10_000));
  /** The polling design's burst may be smaller: 10,000 jobs through it take some 20 minutes. */
  const POLLING_BURST = Number(process.env.BENCH_COST_POLLING_BURST ?? BURST);
  const burstOf = (design: Design) => (design === 'polling' ? POLLING_BURST : BURST);
  const burstLabel =
    POLLING_BURST === BURST
      ? BURST.toLocaleString('en')
      : `${BURST.toLocaleString('en')} (polling: ${POLLING_BURST.toLocaleString('en')})`;
  const LATENCY_N = Number(process.env.BENCH_COST_LATENCY_JOBS ?? (S ? 15 : 40));
  /** One CPU an agent: every running job's reports and every waiting claim hold a Postgres connection
   *  (one per invocation, no pooler here), and 100 agents × 4 CPUs would pass max_connections. */
  const AGENT_CPUS = Number(process.env.BENCH_COST_AGENT_CPUS ?? 1);
  /** Postgres connections at once through the Neon proxy; more wait for one to end, as behind Neon's pooler
   *  (which would multiplex them; every Worker invocation opens its own). Leaves room under max_connections. */
  const PG_MAX = Number(process.env.BENCH_COST_PG_MAX ?? 200);
  const ADMIN = 'bench-cost-admin-token-0123456789abcdef';
  const bundle = bundleWorker();
  const source = readFileSync(bundle.script, 'utf8');
  // The object is bound in wrangler.toml ([[durable_objects.bindings]] AGENT_CHANNEL) and exported by the bundle.
  const toml = readFileSync(new URL('../wrangler.toml', import.meta.url), 'utf8');
  const hasChannelObject = /name\s*=\s*"AGENT_CHANNEL"/.test(toml) && /\bAgentChannel\b/.test(source);
  o.log(
    `10. serverless cost: ${AGENTS} agents, idle ${IDLE_MIN} min, ${SPREAD_N} spread jobs, a burst of ${BURST}` +
      ` (Durable Object AgentChannel in the bundle: ${hasChannelObject ? 'yes' : 'no'})`,
  );
  const out: Record<string, unknown> = {
    date: new Date().toISOString(),
    scale: S ? 'small' : 'full',
    prices: PRICES,
    agents: AGENTS,
    agent_cpus: AGENT_CPUS,
    postgres_max_connections_through_the_proxy: PG_MAX,
    idle_minutes: IDLE_MIN,
    polling_idle_minutes: POLLING_IDLE_MIN,
    burst_jobs: BURST,
    polling_burst_jobs: POLLING_BURST,
    steady_window_starts_after_minutes: WARMUP_MIN,
    durable_object_in_bundle: hasChannelObject,
    model: {
      worker_cpu_ms:
        'workerd process CPU time (utime+stime) over the window: an upper bound, incl. the runtime',
      durable_object_duration:
        'wake-ups × 10 s (idle time before hibernation) + active ms, at 128 MB; from the object’s counters',
      websocket_messages:
        'incoming data messages counted on the wire (the agents’ ping frames included even when auto-answered), billed 20:1',
      neon: 'awake from any Postgres traffic until 5 min after the last, intervals merged, at 0.25 CU',
      idle_month:
        'steady idle window (after the warm-up) rates × 43,200 minutes; Neon: the steady window’s traffic taken as periodic with the window’s length, each instant keeping the compute awake 5 min',
      day_of_10k_jobs:
        'idle day (steady idle rates × 1,440) + 10,000 × per-job usage (spread run minus the idle rate over its window); one job every 8.64 s keeps Neon awake all day; month = 30 days',
      burst:
        'counted from the batch submission to the last job finished; marginal price (no included amounts); Neon awake for the burst + 5 min',
    },
  };
  const designs: Record<string, Record<string, unknown>> = {};
  // BENCH_COST_DESIGNS=channel measures one design alone (its own figures; the comparison tables need both).
  const only = (process.env.BENCH_COST_DESIGNS ?? 'polling,channel').split(',') as Design[];
  for (const design of (['polling', 'channel'] as Design[]).filter((d) => only.includes(d))) {
    await o.reset();
    designs[design] = await runDesign(design);
  }
  out.designs = designs;
  if (designs.polling && designs.channel) printTables(designs);
  writeFileSync(new URL('./results-serverless.json', import.meta.url), `${JSON.stringify(out, null, 2)}\n`);
  o.log('10. wrote bench/results-serverless.json');
  return out;

  async function runDesign(design: Design): Promise<Record<string, unknown>> {
    o.log(`10. ${design}: starting workerd and ${AGENTS} agents`);
    const pgInstants: number[] = [];
    let lastSecond = 0;
    const neonProxy = await startNeonProxy({
      maxConnections: PG_MAX,
      onTraffic: (at) => {
        // One instant per 100 ms is plenty for minutes and 5-minute suspends.
        if (at - lastSecond >= 100) {
          pgInstants.push(at);
          lastSecond = at;
        }
      },
    });
    const bridge = await startUpstashBridge({ redisUrl: o.redisUrl, keepCommands: false });
    const runtimeTail: string[] = [];
    const keepTail = (stream: Readable) =>
      stream.on('data', (chunk: Buffer) => {
        for (const line of chunk.toString().split('\n')) {
          if (!line) continue;
          runtimeTail.push(line);
          if (runtimeTail.length > 40) runtimeTail.shift();
        }
      });
    const bindings = {
      ...wranglerVars(),
      DATABASE_URL: o.pgUrl,
      UPSTASH_REDIS_REST_URL: bridge.url,
      UPSTASH_REDIS_REST_TOKEN: bridge.token,
      NEON_WS_PROXY: neonProxy.url,
      ADMIN_TOKEN: ADMIN,
      CONDUCTOR_SUBMIT_RATE: '0',
      CONDUCTOR_COUNT_EVENTS: '1',
    };
    const modules = workerModules(bundle);
    const mf = new Miniflare({
      host: '127.0.0.1',
      port: 0,
      handleRuntimeStdio(stdout: Readable, stderr: Readable) {
        keepTail(stdout);
        keepTail(stderr);
      },
      workers: [
        {
          name: 'a',
          ...modules,
          bindings,
          unsafeDirectSockets: [{ host: '127.0.0.1', port: 0 }],
          ...(hasChannelObject
            ? { durableObjects: { AGENT_CHANNEL: { className: 'AgentChannel', useSQLite: true } } }
            : {}),
        },
        {
          name: 'b',
          ...modules,
          bindings,
          unsafeDirectSockets: [{ host: '127.0.0.1', port: 0 }],
          ...(hasChannelObject
            ? {
                durableObjects: {
                  AGENT_CHANNEL: { className: 'AgentChannel', scriptName: 'a', useSQLite: true },
                },
              }
            : {}),
        },
      ],
    });
    const agents: AgentProcess[] = [];
    let cronTimer: NodeJS.Timeout | undefined;
    // The most Postgres connections open at once (through the Neon proxy), sampled every 100 ms.
    let peakConnections = 0;
    const peakTimer = setInterval(() => {
      peakConnections = Math.max(peakConnections, neonProxy.stats.active);
    }, 100);
    let front: Front[] = [];
    try {
      await mf.ready;
      const direct = [
        (await mf.unsafeGetDirectURL('a')).toString().replace(/\/$/, ''),
        (await mf.unsafeGetDirectURL('b')).toString().replace(/\/$/, ''),
      ];
      front = [await countingFront(direct[0] as string), await countingFront(direct[1] as string)];
      const [A, B] = front as [Front, Front];
      const pids = workerdPids();
      const auth = { authorization: `Bearer ${ADMIN}` };
      const created = await fetch(`${B.url}/api/v1/tokens`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...auth },
        body: JSON.stringify({ name: `cost-${design}`, scopes: ['agent'] }),
      });
      if (created.status !== 201) throw new Error(`token ${created.status}: ${await created.text()}`);
      const { token } = (await created.json()) as { token: string };

      let crons = 0;
      const worker = (await mf.getWorker('a')) as unknown as {
        scheduled(options: { cron: string }): Promise<unknown>;
      };
      let minute = 0;
      const fireCrons = async () => {
        const k = minute++;
        try {
          crons++;
          await worker.scheduled({ cron: '* * * * *' });
          if (k % 5 === 0) {
            crons++;
            await worker.scheduled({ cron: CRON_CACHE_SYNC });
          }
        } catch (error) {
          o.log(`10. ${design}: cron failed: ${error instanceof Error ? error.message : String(error)}`);
        }
      };

      const doStats = async () => {
        try {
          const res = await fetch(`${direct[0]}/__channel/stats`, { headers: auth });
          if (res.status !== 200) {
            await res.arrayBuffer();
            return null;
          }
          // {requests, webSocketMessages | messages, closes?, alarms, activeMs, wakeups}: every shard summed.
          return (await res.json()) as {
            requests?: number;
            webSocketMessages?: number;
            messages?: number;
            closes?: number;
            alarms?: number;
            activeMs?: number;
            wakeups?: number;
          };
        } catch {
          return null;
        }
      };
      const snapshot = async (): Promise<Counters> => {
        const d = await doStats();
        return {
          at: Date.now(),
          workerRequests: A.total() + B.total() + crons,
          crons,
          cpuMs: pids.reduce((sum, pid) => sum + procSample(pid).cpuSeconds * 1000, 0),
          wsMessages: A.wsMessages + B.wsMessages,
          wsControlFrames: A.wsControlFrames + B.wsControlFrames,
          upstash: bridge.counts.commands,
          pgRoundTrips: neonProxy.stats.roundTrips,
          pgConnections: neonProxy.stats.connections,
          workerErrors: A.errors + B.errors,
          // A close reaches the object as an event too: billed here as a request (there are few).
          doRequests: (d?.requests ?? 0) + (d?.closes ?? 0),
          doWebSocketMessages: d?.webSocketMessages ?? d?.messages ?? 0,
          doAlarms: d?.alarms ?? 0,
          doActiveMs: d?.activeMs ?? 0,
          doWakeups: d?.wakeups ?? 0,
        };
      };

      // Agents, started ten at a time, all connected to isolate a (through its counting front).
      const prefix = design === 'polling' ? 'cost-poll-' : 'cost-chan-';
      for (let i = 0; i < AGENTS; i += 10) {
        const batch: AgentProcess[] = [];
        for (let j = i; j < Math.min(AGENTS, i + 10); j++) {
          batch.push(
            new AgentProcess(`${prefix}${String(j + 1).padStart(3, '0')}`, A.url, {
              cpus: AGENT_CPUS,
              entry: o.agentEntry,
              env: { CONDUCTOR_TOKEN: token, ...(design === 'polling' ? { CONDUCTOR_CHANNEL: 'off' } : {}) },
            }),
          );
        }
        agents.push(...batch);
        await Promise.all(batch.map((a) => a.registered()));
      }
      if (design === 'channel') {
        const deadline = Date.now() + 30_000;
        while (A.opened < AGENTS && Date.now() < deadline) {
          if (A.upgrades === 0 && Date.now() > deadline - 25_000) break; // no agent tries a channel
          await sleep(250);
        }
      }
      const channelsOpen = A.opened;
      o.log(
        `10. ${design}: ${AGENTS} agents registered, ${channelsOpen} channels open (${A.upgrades} upgrades)`,
      );

      // (a) idle. The crons fire every minute at half past (30 s into the window, then every 60 s), so a
      // window cut at whole minutes holds one minute cron per minute.
      const idle0 = await snapshot();
      cronTimer = setTimeout(() => {
        void fireCrons();
        cronTimer = setInterval(() => void fireCrons(), 60_000);
      }, 30_000);
      const idleMinutes = design === 'polling' ? POLLING_IDLE_MIN : IDLE_MIN;
      const warmupMinutes = Math.min(WARMUP_MIN, idleMinutes / 2);
      await sleep(warmupMinutes * 60_000);
      const steady0 = await snapshot();
      await sleep((idleMinutes - warmupMinutes) * 60_000);
      const idle1 = await snapshot();
      const steady = diff(steady0, idle1);
      const steadyMin = (idle1.at - steady0.at) / 60_000;
      const steadyNeonMs = neonAwakeFraction(pgInstants, steady0.at, idle1.at) * (idle1.at - steady0.at);
      const perMinute = (x: number) => x / steadyMin;
      const idleMonth = usageOf(steady, steadyNeonMs, MONTH_MINUTES / steadyMin);
      const idleBill = monthlyBill(idleMonth);
      const idle = {
        window_minutes: round((idle1.at - idle0.at) / 60_000, 2),
        steady_window_minutes: round(steadyMin, 2),
        counts_whole_window: diff(idle0, idle1),
        counts_steady_window: steady,
        worker_requests_by_route: Object.fromEntries(
          [...new Set([...A.requests.keys(), ...B.requests.keys()])].map((k) => [
            k,
            (A.requests.get(k) ?? 0) + (B.requests.get(k) ?? 0),
          ]),
        ),
        redis_commands_by_name: Object.fromEntries(bridge.counts.byName),
        redis_commands_per_idle_minute: round(perMinute(steady.upstash), 1),
        worker_requests_per_idle_minute: round(perMinute(steady.workerRequests), 1),
        postgres_round_trips_per_idle_minute: round(perMinute(steady.pgRoundTrips), 1),
        postgres_minutes_with_traffic_whole_window: activeMinutes(pgInstants, idle0.at, idle1.at),
        postgres_minutes_with_traffic_steady_window: activeMinutes(pgInstants, steady0.at, idle1.at),
        neon_awake_fraction_steady: round(steadyNeonMs / (idle1.at - steady0.at), 3),
        neon_awake_minutes_whole_window: round(neonAwakeMs(pgInstants, idle0.at, idle1.at) / 60_000, 2),
        month_usage: idleMonth,
        month_dollars: idleBill,
      };
      o.log(
        `10. ${design}: idle month ${money(idleBill.total)} (Redis ${idle.redis_commands_per_idle_minute}/min, ` +
          `Postgres minutes ${idle.postgres_minutes_with_traffic_steady_window} in the steady window)`,
      );

      // Submit→start on an idle agent, submitted through the other isolate (b).
      const latencies: number[] = [];
      {
        const submitted: { id: number; at: number }[] = [];
        for (let i = 0; i < LATENCY_N; i++) {
          const res = await fetch(`${B.url}/api/v1/jobs/submit`, {
            method: 'POST',
            headers: { 'content-type': 'application/json', ...auth },
            body: JSON.stringify({ script: 'date +%s.%N', cpus: 1, name: 'latency' }),
          });
          const at = performance.timeOrigin + performance.now();
          if (res.status !== 201) throw new Error(`submit ${res.status}: ${await res.text()}`);
          submitted.push({ id: ((await res.json()) as { id: number }).id, at });
          await sleep(1200);
        }
        await waitFinished(submitted.map((s) => s.id));
        for (const s of submitted) {
          const res = await fetch(`${direct[0]}/api/v1/jobs/${s.id}/logs`, { headers: auth });
          const body = (await res.json()) as { stdout: { content: string } };
          latencies.push(Number(body.stdout.content.split('\n')[0]) * 1000 - s.at);
        }
      }
      const latency = stats(latencies);
      o.log(
        `10. ${design}: submit→start via the other isolate p50 ${round(latency.median)} ms, p99 ${round(latency.p99)} ms`,
      );

      // (b) spread jobs: per-job usage over the idle rate.
      const spread0 = await snapshot();
      const spreadIds: number[] = [];
      for (let i = 0; i < SPREAD_N; i++) {
        const t = Date.now();
        const res = await fetch(`${B.url}/api/v1/jobs/submit`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', ...auth },
          body: JSON.stringify({ script: 'true', cpus: 1, name: 'spread' }),
        });
        if (res.status !== 201) throw new Error(`submit ${res.status}: ${await res.text()}`);
        spreadIds.push(((await res.json()) as { id: number }).id);
        await sleep(Math.max(0, SPREAD_MS - (Date.now() - t)));
      }
      await waitFinished(spreadIds);
      const spread1 = await snapshot();
      const spreadD = diff(spread0, spread1);
      const spreadMin = (spread1.at - spread0.at) / 60_000;
      const perJob = (key: keyof Counters) =>
        Math.max(0, (spreadD[key] as number) - ((steady[key] as number) / steadyMin) * spreadMin) / SPREAD_N;
      const perJobCounts = Object.fromEntries(
        (Object.keys(spreadD) as (keyof Counters)[]).filter((k) => k !== 'at').map((k) => [k, perJob(k)]),
      ) as unknown as Counters;
      const dayUsage = (k: number): Usage => {
        const idleDay = usageOf(steady, 0, (1440 / steadyMin) * k);
        const jobs = usageOf(perJobCounts, 0, 10_000 * k);
        const sum = Object.fromEntries(
          (Object.keys(idleDay) as (keyof Usage)[]).map((key) => [key, idleDay[key] + jobs[key]]),
        ) as unknown as Usage;
        // 10,000 jobs a day evenly: one every 8.64 s, far below Neon's 5-minute suspend: awake all day.
        sum.neonComputeHours = 24 * k;
        return sum;
      };
      const jobsMonth = dayUsage(30);
      const jobsBill = monthlyBill(jobsMonth);
      const spread = {
        jobs: SPREAD_N,
        spacing_ms: SPREAD_MS,
        window_minutes: round(spreadMin, 2),
        counts: spreadD,
        per_job: perJobCounts,
        month_usage_10k_jobs_a_day: jobsMonth,
        month_dollars_10k_jobs_a_day: jobsBill,
      };
      o.log(`10. ${design}: 10,000 jobs a day ≈ ${money(jobsBill.total)} a month`);

      // (c) a burst through the batch API, measured to completion.
      const burstN = burstOf(design);
      const burst0 = await snapshot();
      const batches: Promise<number[]>[] = [];
      for (let i = 0; i < burstN; i += 1000) {
        const jobs = Array.from({ length: Math.min(1000, burstN - i) }, () => ({
          script: 'true',
          cpus: 1,
          name: 'burst',
        }));
        batches.push(
          fetch(`${B.url}/api/v1/jobs/batch`, {
            method: 'POST',
            headers: { 'content-type': 'application/json', ...auth },
            body: JSON.stringify({ jobs }),
          }).then(async (res) => {
            if (res.status !== 201) throw new Error(`batch ${res.status}: ${await res.text()}`);
            return ((await res.json()) as { jobs: { id: number }[] }).jobs.map((j) => j.id);
          }),
        );
      }
      const burstIds = (await Promise.all(batches)).flat();
      const submittedMs = Date.now() - burst0.at;
      await waitFinished(burstIds, S ? 600_000 : 3_600_000);
      const burst1 = await snapshot();
      const burstD = diff(burst0, burst1);
      const burstPeakConnections = peakConnections;
      const burstMs = burst1.at - burst0.at;
      const burstNeonMs = burstMs + PRICES.neon.suspendAfterMinutes * 60_000;
      const burstUsage = usageOf(burstD, burstNeonMs);
      const burst = {
        jobs: burstN,
        submitted_ms: submittedMs,
        seconds_to_last_end: round(burstMs / 1000, 1),
        jobs_per_second: round(burstN / (burstMs / 1000), 1),
        postgres_peak_connections_so_far: burstPeakConnections,
        postgres_connections_that_waited_so_far: neonProxy.stats.queued,
        counts: burstD,
        usage: burstUsage,
        marginal_dollars: marginalCost(burstUsage),
      };
      o.log(`10. ${design}: burst of ${burstN} in ${burst.seconds_to_last_end} s`);

      return {
        agents_registered: agents.length,
        channels_open: channelsOpen,
        channel_upgrades_tried: A.upgrades,
        durable_object_stats_available: (await doStats()) !== null,
        idle,
        submit_to_start_other_isolate_ms: latency,
        spread,
        burst,
      };
    } catch (error) {
      o.log(`10. ${design}: workerd output before the failure:\n${runtimeTail.join('\n')}`);
      throw error;
    } finally {
      clearTimeout(cronTimer);
      clearInterval(cronTimer);
      clearInterval(peakTimer);
      await Promise.all(agents.map((a) => a.stop().catch(() => a.kill9())));
      await Promise.all(front.map((f) => f.close()));
      await mf.dispose();
      await neonProxy.close();
      await bridge.close();
      await o.sql('DELETE FROM api_tokens');
    }
  }

  async function waitFinished(ids: number[], timeoutMs = 180_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const [r] = await o.sql(
        `SELECT count(*) AS n FROM jobs WHERE id = ANY($1::bigint[]) AND end_time IS NOT NULL AND state <> 'RUNNING'`,
        [ids],
      );
      if (Number(r?.n) >= ids.length) return;
      if (Date.now() > deadline) throw new Error(`only ${r?.n} of ${ids.length} jobs finished`);
      await sleep(100);
    }
  }

  function printTables(designs: Record<string, Record<string, unknown>>) {
    const p = designs.polling as Plain;
    const c = designs.channel as Plain;
    const tables: [string, [string, string, string][]][] = [];
    const bill = (d: Dollars) =>
      `${money(d.total)} (W ${money(d.workers)}, DO ${money(d.durableObjects)}, U ${money(d.upstash)}, N ${money(d.neon)})`;
    const both = (f: (x: Plain) => string): [string, string] => [f(p), f(c)];
    tables.push([
      `(a) ${AGENTS} agents idle ${IDLE_MIN} min (steady window: after ${WARMUP_MIN} min), per month`,
      [
        ['channels open', ...both((x) => `${x.channels_open} of ${AGENTS}`)],
        ['Worker 5xx answers (idle window)', ...both((x) => `${x.idle.counts_whole_window.workerErrors}`)],
        ['Worker requests / idle min', ...both((x) => `${x.idle.worker_requests_per_idle_minute}`)],
        [
          'Worker CPU-ms / idle min (upper bound)',
          ...both((x) => `${round(x.idle.counts_steady_window.cpuMs / x.idle.steady_window_minutes, 0)}`),
        ],
        ['Redis commands / idle min', ...both((x) => `${x.idle.redis_commands_per_idle_minute}`)],
        ['Postgres round trips / idle min', ...both((x) => `${x.idle.postgres_round_trips_per_idle_minute}`)],
        [
          'Postgres minutes with traffic (steady window)',
          ...both(
            (x) =>
              `${x.idle.postgres_minutes_with_traffic_steady_window} of ${Math.max(1, Math.round(x.idle.steady_window_minutes))}`,
          ),
        ],
        [
          'incoming WebSocket messages / idle min',
          ...both(
            (x) => `${round(x.idle.counts_steady_window.wsMessages / x.idle.steady_window_minutes, 1)}`,
          ),
        ],
        [
          'DO requests / alarms / wake-ups (steady)',
          ...both((x) => {
            const s = x.idle.counts_steady_window;
            return `${s.doRequests} / ${s.doAlarms} / ${s.doWakeups}`;
          }),
        ],
        ['month: Worker requests', ...both((x) => big(x.idle.month_usage.workerRequests))],
        ['month: Worker CPU-ms', ...both((x) => big(x.idle.month_usage.workerCpuMs))],
        ['month: Upstash commands', ...both((x) => big(x.idle.month_usage.upstashCommands))],
        ['month: DO GB-s', ...both((x) => big(x.idle.month_usage.doGbSeconds))],
        [
          'month: Neon compute hours (0.25 CU)',
          ...both((x) => `${round(x.idle.month_usage.neonComputeHours, 1)}`),
        ],
        ['idle month at list prices', ...both((x) => bill(x.idle.month_dollars))],
        [
          'submit→start via other isolate p50 / p99',
          ...both(
            (x) =>
              `${round(x.submit_to_start_other_isolate_ms.median)} / ${round(x.submit_to_start_other_isolate_ms.p99)} ms`,
          ),
        ],
      ],
    ]);
    tables.push([
      `(b) 10,000 jobs a day (per-job from ${SPREAD_N} jobs ${SPREAD_MS} ms apart), per month`,
      [
        ['per job: Worker requests', ...both((x) => `${round(x.spread.per_job.workerRequests, 2)}`)],
        ['per job: Worker CPU-ms (upper bound)', ...both((x) => `${round(x.spread.per_job.cpuMs, 1)}`)],
        ['per job: Redis commands', ...both((x) => `${round(x.spread.per_job.upstash, 1)}`)],
        ['per job: Postgres round trips', ...both((x) => `${round(x.spread.per_job.pgRoundTrips, 1)}`)],
        [
          'per job: WebSocket messages in / DO requests',
          ...both(
            (x) => `${round(x.spread.per_job.wsMessages, 2)} / ${round(x.spread.per_job.doRequests, 2)}`,
          ),
        ],
        [
          'month: Worker requests / Upstash commands',
          ...both(
            (x) =>
              `${big(x.spread.month_usage_10k_jobs_a_day.workerRequests)} / ${big(x.spread.month_usage_10k_jobs_a_day.upstashCommands)}`,
          ),
        ],
        [
          'month at list prices (Neon awake all day)',
          ...both((x) => bill(x.spread.month_dollars_10k_jobs_a_day)),
        ],
      ],
    ]);
    tables.push([
      `(c) a burst of ${burstLabel} jobs (batch API), to the last end`,
      [
        [
          'seconds / jobs per second',
          ...both((x) => `${x.burst.seconds_to_last_end} s / ${x.burst.jobs_per_second}`),
        ],
        [
          'Worker requests / CPU-ms',
          ...both((x) => `${big(x.burst.counts.workerRequests)} / ${big(x.burst.counts.cpuMs)}`),
        ],
        [
          'Redis commands / Postgres round trips',
          ...both((x) => `${big(x.burst.counts.upstash)} / ${big(x.burst.counts.pgRoundTrips)}`),
        ],
        [
          'WebSocket messages in / DO requests',
          ...both((x) => `${big(x.burst.counts.wsMessages)} / ${big(x.burst.counts.doRequests)}`),
        ],
        ['marginal price of the burst', ...both((x) => bill(x.burst.marginal_dollars))],
        [
          'Worker 5xx answers / peak Postgres connections',
          ...both((x) => `${x.burst.counts.workerErrors} / ${x.burst.postgres_peak_connections_so_far}`),
        ],
      ],
    ]);
    for (const [title, rows] of tables) {
      const w = [
        Math.max(7, ...rows.map((r) => r[0].length)),
        Math.max(7, ...rows.map((r) => r[1].length)),
        Math.max(7, ...rows.map((r) => r[2].length)),
      ];
      const line = (cells: string[]) => `| ${cells.map((x, i) => x.padEnd(w[i] as number)).join(' | ')} |`;
      console.log(
        `\n${title}\n${line(['measure', 'polling', 'channel'])}\n${line(w.map((n) => '-'.repeat(n)))}`,
      );
      for (const r of rows) console.log(line(r));
    }
    console.log(
      `\nPrices checked ${PRICES.checked}: W = Workers (incl. the $5 minimum), DO = Durable Objects, U = Upstash, N = Neon. See docs/serverless-cost.md.`,
    );
    // Rows for bench/run.ts's table: the goals of issue 17 judged on the channel design.
    const ci = c.idle;
    o.row(
      '10 cost',
      `(a) idle month, ${AGENTS} agents: polling / channel`,
      '≤ $5.50 (channel)',
      ci.month_dollars.total <= 5.5 ? 'met' : 'not met',
      `${money(p.idle.month_dollars.total)} / ${money(ci.month_dollars.total)}`,
    );
    o.row(
      '10 cost',
      '  Redis commands per idle minute: polling / channel',
      '≤ 4 (channel)',
      ci.redis_commands_per_idle_minute <= 4 ? 'met' : 'not met',
      `${p.idle.redis_commands_per_idle_minute} / ${ci.redis_commands_per_idle_minute}`,
    );
    o.row(
      '10 cost',
      '  Postgres minutes with traffic after the warm-up: polling / channel',
      '0 (channel)',
      ci.postgres_minutes_with_traffic_steady_window === 0 ? 'met' : 'not met',
      `${p.idle.postgres_minutes_with_traffic_steady_window} / ${ci.postgres_minutes_with_traffic_steady_window} of ${Math.max(1, Math.round(ci.steady_window_minutes))}`,
    );
    const cl = c.submit_to_start_other_isolate_ms as Stats;
    const pl = p.submit_to_start_other_isolate_ms as Stats;
    o.row(
      '10 cost',
      '  submit→start via another isolate p50/p99: polling / channel',
      'p50 < 50, p99 < 250 ms (channel)',
      cl.median < 50 && cl.p99 < 250 ? 'met' : 'not met',
      `${round(pl.median)}/${round(pl.p99)} / ${round(cl.median)}/${round(cl.p99)} ms`,
    );
    o.row(
      '10 cost',
      '(b) 10,000 jobs a day, month: polling / channel',
      '',
      '',
      `${money(p.spread.month_dollars_10k_jobs_a_day.total)} / ${money(c.spread.month_dollars_10k_jobs_a_day.total)}`,
    );
    o.row(
      '10 cost',
      `(c) burst of ${burstLabel}: seconds, marginal $: polling / channel`,
      '',
      '',
      `${p.burst.seconds_to_last_end} s ${money(p.burst.marginal_dollars.total)} / ${c.burst.seconds_to_last_end} s ${money(c.burst.marginal_dollars.total)}`,
    );
  }
}
