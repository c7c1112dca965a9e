/** Helpers for bench/run.ts: timing statistics, Postgres/Redis counters, process sampling, a counting HTTP proxy. */
import { readFileSync } from 'node:fs';
import { createServer, request as httpRequest } from 'node:http';
import type { AddressInfo } from 'node:net';
import pg from 'pg';
import type { LuaScript, RedisScripts } from '../functions/registry/redis-store.ts';

export interface Stats {
  n: number;
  median: number;
  p99: number;
  min: number;
  max: number;
}

export function stats(samples: number[]): Stats {
  if (samples.length === 0)
    return { n: 0, median: Number.NaN, p99: Number.NaN, min: Number.NaN, max: Number.NaN };
  const s = [...samples].sort((a, b) => a - b);
  const at = (q: number) => s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))] as number;
  return { n: s.length, median: at(0.5), p99: at(0.99), min: s[0] as number, max: s[s.length - 1] as number };
}

export async function timeMany(runs: number, work: () => Promise<unknown>, warmup = 3): Promise<Stats> {
  for (let i = 0; i < warmup; i++) await work();
  const samples: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t = performance.now();
    await work();
    samples.push(performance.now() - t);
  }
  return stats(samples);
}

/**
 * Counts every statement node-postgres sends (BEGIN and COMMIT included): Postgres round trips; and `ms`, the
 * wall time from sending each statement to its answer (summed: while one pass runs alone its statements do
 * not overlap, so the pass's time minus this is the time spent in JavaScript).
 */
export const pgCounter = {
  statements: 0,
  ms: 0,
  /** When set, time per statement, keyed by the start of its text (whitespace folded). */
  trace: null as Map<string, { n: number; ms: number }> | null,
};
const originalQuery = pg.Client.prototype.query;
// biome-ignore lint/suspicious/noExplicitAny: wrapping an overloaded method
(pg.Client.prototype as any).query = function (this: pg.Client, ...args: any[]) {
  pgCounter.statements++;
  const started = performance.now();
  const trace = pgCounter.trace;
  const text = trace ? String(typeof args[0] === 'string' ? args[0] : (args[0]?.text ?? '')) : '';
  const done = () => {
    const ms = performance.now() - started;
    pgCounter.ms += ms;
    if (trace) {
      const key = text.replace(/\s+/g, ' ').trim().slice(0, 90);
      const entry = trace.get(key) ?? { n: 0, ms: 0 };
      entry.n++;
      entry.ms += ms;
      trace.set(key, entry);
    }
  };
  const last = args.length - 1;
  if (typeof args[last] === 'function') {
    const callback = args[last];
    // biome-ignore lint/suspicious/noExplicitAny: see above
    args[last] = (...out: any[]) => {
      done();
      return callback(...out);
    };
  } else if (args[0] && typeof args[0].callback === 'function') {
    const submittable = args[0];
    const callback = submittable.callback;
    // biome-ignore lint/suspicious/noExplicitAny: see above
    submittable.callback = (...out: any[]) => {
      done();
      return callback.apply(submittable, out);
    };
  }
  // biome-ignore lint/suspicious/noExplicitAny: see above
  const result = (originalQuery as any).apply(this, args);
  if (result && typeof result.then === 'function') {
    result.then(done, done);
  }
  return result;
};

/** RedisScripts that count calls (each call is one EVALSHA: one Redis command). */
export function countingScripts(
  inner: RedisScripts,
): RedisScripts & { calls: Map<string, number>; total(): number; reset(): void } {
  const calls = new Map<string, number>();
  return {
    calls,
    total: () => [...calls.values()].reduce((a, b) => a + b, 0),
    reset: () => calls.clear(),
    run(script: LuaScript, keys: string[], args: (string | number)[]) {
      calls.set(script.name, (calls.get(script.name) ?? 0) + 1);
      return inner.run(script, keys, args);
    },
    ping: () => {
      calls.set('PING', (calls.get('PING') ?? 0) + 1);
      return inner.ping();
    },
  };
}

/** CPU ticks (utime+stime, seconds) and RSS (MiB) of a process, from /proc. */
export function procSample(pid: number): { cpuSeconds: number; rssMiB: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(fields[11]) + Number(fields[12]);
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const rssKb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
  return { cpuSeconds: ticks / 100, rssMiB: rssKb / 1024 };
}

/** A plain HTTP forwarder that counts requests by path: what agents cost the control plane. */
export async function countingProxy(target: string) {
  const counts = new Map<string, number>();
  const t = new URL(target);
  const server = createServer((req, res) => {
    const key = `${req.method} ${(req.url ?? '').replace(/\/\d+\//, '/:id/').split('?')[0]}`;
    counts.set(key, (counts.get(key) ?? 0) + 1);
    const upstream = httpRequest(
      { host: t.hostname, port: t.port, method: req.method, path: req.url, headers: req.headers },
      (up) => {
        res.writeHead(up.statusCode ?? 502, up.headers);
        up.pipe(res);
      },
    );
    upstream.on('error', () => {
      res.writeHead(502);
      res.end();
    });
    req.pipe(upstream);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    counts,
    total: () => [...counts.values()].reduce((a, b) => a + b, 0),
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export const round = (x: number, digits = 2) => Math.round(x * 10 ** digits) / 10 ** digits;
