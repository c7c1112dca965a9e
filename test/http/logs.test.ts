/**
 * GET /api/v1/jobs/:id/logs: `tail=N`, head truncation with its marker line, and `follow=1` (Server-Sent
 * Events) against a real server and a real agent.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type SQL, sql } from 'drizzle-orm';
import { PgDialect } from 'drizzle-orm/pg-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Client } from '../../cli/api.ts';
import { pruneJobOutput } from '../../functions/domain/job-logs.ts';
import { runBackstop } from '../../functions/domain/maintenance.ts';
import { query } from '../../functions/domain/sql.ts';
import { configFromEnv, parseNodeEnv } from '../../functions/node/env.ts';
import { configFromWorkerEnv, parseWorkerEnv } from '../../functions/worker-env.ts';
import { errorOf, secureApp } from '../security/support.ts';
import { AgentProcess, eventually } from '../support/agent-process.ts';
import { availableBackends, type Backend, startTestServer, testConfig } from '../support/cluster.ts';

const backends = await availableBackends();
const [pglite] = backends.filter((b) => b.name === 'pglite+memory');

interface SseItem {
  /** `comment` for a block of comment lines only (`: keep-alive`). */
  kind: 'event' | 'comment';
  event: string;
  data: string;
  id: string | undefined;
}

/**
 * Reads an SSE response block by block (name, data, id; comment-only blocks as comments) until the server
 * ends it, or until `onItem` returns true (then the rest is not read).
 */
async function readSse(res: Response, onItem: (item: SseItem) => unknown = () => {}) {
  const items: SseItem[] = [];
  const decoder = new TextDecoder();
  let buffer = '';
  const reader = (res.body as ReadableStream<Uint8Array>).getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return items;
      buffer += decoder.decode(value, { stream: true });
      let end = buffer.indexOf('\n\n');
      while (end >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const item: SseItem = { kind: 'comment', event: 'message', data: '', id: undefined };
        const data: string[] = [];
        for (const line of block.split('\n')) {
          if (line.startsWith(':')) continue;
          item.kind = 'event';
          if (line.startsWith('event: ')) item.event = line.slice(7);
          else if (line.startsWith('id: ')) item.id = line.slice(4);
          else if (line.startsWith('data: ')) data.push(line.slice(6));
          else if (line.startsWith('data:')) data.push(line.slice(5));
        }
        item.data = data.join('\n');
        items.push(item);
        if (onItem(item) === true) return items;
        end = buffer.indexOf('\n\n');
      }
    }
  } finally {
    await reader.cancel().catch(() => {});
  }
}

/** Reads an SSE response into its events (name, data), comments left out. */
async function readEvents(res: Response, onEvent: (e: { event: string; data: string }) => void = () => {}) {
  const items = await readSse(res, (item) => {
    if (item.kind === 'event') onEvent({ event: item.event, data: item.data });
  });
  return items.filter((i) => i.kind === 'event').map(({ event, data }) => ({ event, data }));
}

/** Stores a stream's whole output as the agents' uploads would (replacing what it had), in one statement. */
async function storeOutput(backend: Backend, id: number, stream: string, attempt: number, text: string) {
  await backend.db.db.execute(
    sql`WITH head AS (
          INSERT INTO job_output AS o (job_id, stream, attempt, bytes)
          VALUES (${id}, ${stream}, ${attempt}, ${Buffer.byteLength(text)})
          ON CONFLICT (job_id, stream) DO UPDATE SET attempt = excluded.attempt, bytes = excluded.bytes
          RETURNING job_id
        ),
        old AS (DELETE FROM job_output_chunks WHERE job_id = ${id} AND stream = ${stream})
        INSERT INTO job_output_chunks (job_id, stream, attempt, chars, size, data)
        SELECT ${id}, ${stream}, ${attempt}, char_length(${text}::text), octet_length(${text}::text), ${text}::text
        FROM head`,
  );
}

const joined = (items: SseItem[], event: string) =>
  items
    .filter((i) => i.event === event)
    .map((i) => i.data)
    .join('');

describe.runIf(pglite)('job logs: tail, truncation, live follow', () => {
  let backend: Backend;
  let server: Awaited<ReturnType<typeof startTestServer>>;
  let agent: AgentProcess;
  const submit = async (script: string) => {
    const res = await fetch(`${server.url}/api/v1/jobs/submit`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ script, cpus: 1 }),
    });
    expect(res.status).toBe(201);
    return ((await res.json()) as { id: number }).id;
  };
  const job = async (id: number) =>
    (await (await fetch(`${server.url}/api/v1/jobs/${id}`)).json()) as { state: string; exit_code: string };

  beforeAll(async () => {
    backend = await pglite!.create();
    // Keep-alive comments every 200 ms instead of 15 s, so that a short silence shows them.
    server = await startTestServer(backend, testConfig({ logKeepAliveMs: 200 }));
    agent = new AgentProcess('logs-node', server.url, { cpus: 2 });
    await agent.registered();
  });
  afterAll(async () => {
    await agent?.stop();
    await server?.close();
    await backend?.close();
  });

  it('follow=1 streams stdout and stderr as they come, then an end event with state and exit code', async () => {
    // The job goes on only once the stream has delivered its first line: proof that it streams live.
    const go = join(mkdtempSync(join(tmpdir(), 'logs-')), 'go');
    const id = await submit(
      `echo one; while [ ! -e ${go} ]; do sleep 0.1; done; echo two >&2; sleep 0.5; printf "three\\nfour\\n"; exit 5`,
    );
    const res = await fetch(`${server.url}/api/v1/jobs/${id}/logs?follow=1`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toContain('text/event-stream');
    const events = await readEvents(res, (event) => {
      if (event.data.includes('one')) writeFileSync(go, '');
    });
    const stdout = events.filter((e) => e.event === 'stdout');
    expect(stdout.map((e) => e.data).join('')).toBe('one\nthree\nfour\n');
    expect(events.filter((e) => e.event === 'stderr').map((e) => e.data)).toEqual(['two\n']);
    const end = events.at(-1)!;
    expect(end.event).toBe('end');
    expect(JSON.parse(end.data)).toEqual({ state: 'FAILED', exit_code: '5:0' });
    // A finished job: everything at once, then end.
    const again = await readEvents(await fetch(`${server.url}/api/v1/jobs/${id}/logs?follow=1&tail=5`));
    expect(again.map((e) => e.event)).toEqual(['stdout', 'stderr', 'end']);
    expect(again[0]!.data).toBe('four\n');
  });

  it('keeps the last 1 MiB: truncated, with a marker line first; tail=N gives the last N bytes', async () => {
    const id = await submit("head -c 1500000 /dev/zero | tr '\\0' 'a'; echo; echo LAST-LINE; echo small >&2");
    await eventually(async () => (await job(id)).state === 'COMPLETED', { what: 'the job to complete' });
    const logs = (await (await fetch(`${server.url}/api/v1/jobs/${id}/logs`)).json()) as {
      stdout: { content: string; bytes: number; truncated: boolean };
      stderr: { content: string; bytes: number; truncated: boolean };
    };
    expect(logs.stdout.bytes).toBe(1_500_000 + 1 + 10);
    expect(logs.stdout.truncated).toBe(true);
    expect(logs.stdout.content).toMatch(
      /^\[\.\.\. output truncated: the first \d+ bytes were dropped, the last \d+ kept \.\.\.\]\n/,
    );
    expect(logs.stdout.content.endsWith('aaa\nLAST-LINE\n')).toBe(true);
    expect(logs.stderr).toEqual({ content: 'small\n', bytes: 6, truncated: false });
    const tail = (await (await fetch(`${server.url}/api/v1/jobs/${id}/logs?tail=10`)).json()) as typeof logs;
    expect(tail.stdout.truncated).toBe(true);
    expect(tail.stdout.content.split('\n').slice(1).join('\n')).toBe('LAST-LINE\n');
    expect(tail.stderr.content).toBe('small\n');
  });

  it('follow=1 sends `: keep-alive` comments while the job is silent, and an id on every event', async () => {
    // The job stays silent until the stream has shown three keep-alives after its first line.
    const go = join(mkdtempSync(join(tmpdir(), 'logs-')), 'go');
    const id = await submit(`echo start; while [ ! -e ${go} ]; do sleep 0.05; done; echo done`);
    const commentTimes: number[] = [];
    let started = false;
    const items = await readSse(await fetch(`${server.url}/api/v1/jobs/${id}/logs?follow=1`), (item) => {
      if (item.data === 'start\n') started = true;
      if (started && item.kind === 'comment' && commentTimes.push(Date.now()) === 3) writeFileSync(go, '');
    });
    const events = items.filter((i) => i.kind === 'event');
    expect(joined(events, 'stdout')).toBe('start\ndone\n');
    const start = items.findIndex((i) => i.data === 'start\n');
    const done = items.findIndex((i) => i.data.includes('done'));
    const silent = items.slice(start + 1, done);
    expect(silent.length).toBeGreaterThanOrEqual(3);
    expect(silent.every((i) => i.kind === 'comment')).toBe(true);
    // About 200 ms apart (the configured interval), not a burst.
    for (let i = 1; i < 3; i++) expect(commentTimes[i]! - commentTimes[i - 1]!).toBeGreaterThanOrEqual(120);
    for (const event of events) expect(event.id).toMatch(/^1:\d+-\d+$/);
    // The end event's id is where both streams ended: 11 bytes of stdout, none of stderr.
    expect(events.at(-1)).toMatchObject({ event: 'end', id: '1:11-0' });
  });

  it('a reconnect with Last-Event-ID gets exactly the rest: nothing twice, nothing lost', async () => {
    const go = join(mkdtempSync(join(tmpdir(), 'logs-')), 'go');
    const id = await submit(
      `echo one; echo e1 >&2; while [ ! -e ${go} ]; do sleep 0.1; done; echo two; echo e2 >&2; printf "three\\nfour\\n"; sleep 0.3; echo five`,
    );
    // The first connection drops once it has both first lines.
    const before: SseItem[] = [];
    await readSse(await fetch(`${server.url}/api/v1/jobs/${id}/logs?follow=1`), (item) => {
      before.push(item);
      return joined(before, 'stdout') === 'one\n' && joined(before, 'stderr') === 'e1\n';
    });
    const lastId = before.filter((i) => i.kind === 'event').at(-1)!.id!;
    expect(lastId).toBe('1:4-3');
    writeFileSync(go, '');
    // EventSource sends the id of the last event it got; tail is ignored then (a reconnect repeats the URL).
    const after = await readSse(
      await fetch(`${server.url}/api/v1/jobs/${id}/logs?follow=1&tail=1`, {
        headers: { 'Last-Event-ID': lastId },
      }),
    );
    expect(joined(before, 'stdout') + joined(after, 'stdout')).toBe('one\ntwo\nthree\nfour\nfive\n');
    expect(joined(after, 'stdout')).toBe('two\nthree\nfour\nfive\n');
    expect(joined(after, 'stderr')).toBe('e2\n');
    expect(after.filter((i) => i.kind === 'event').at(-1)).toMatchObject({ event: 'end', id: '1:24-6' });

    // Any event id resumes there, also once the job has ended: from byte 8 of stdout and 3 of stderr.
    const mid = await readSse(
      await fetch(`${server.url}/api/v1/jobs/${id}/logs?follow=1`, { headers: { 'Last-Event-ID': '8-3' } }),
    );
    expect(joined(mid, 'stdout')).toBe('three\nfour\nfive\n');
    expect(joined(mid, 'stderr')).toBe('e2\n');
    // At the end already: only the end event.
    const atEnd = await readSse(
      await fetch(`${server.url}/api/v1/jobs/${id}/logs?follow=1`, {
        headers: { 'Last-Event-ID': '1:24-6' },
      }),
    );
    expect(atEnd.filter((i) => i.kind === 'event').map((i) => i.event)).toEqual(['end']);
    // Not an id of ours: a 400 that says what it should be.
    const bad = await fetch(`${server.url}/api/v1/jobs/${id}/logs?follow=1`, {
      headers: { 'Last-Event-ID': 'x' },
    });
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { error: { code: string } }).error.code).toBe('invalid_last_event_id');
  });

  it('a job that runs again (requeued) starts its followed output anew, after an attempt event', async () => {
    // A job on a node that is not there (no agent touches it), written to as its agents would.
    const [row] = await query<{ id: string | number }>(
      backend.db.db,
      sql`INSERT INTO jobs (name, script, cpus, state, node, attempt, start_time)
          VALUES ('requeued', 'true', 1, 'RUNNING', 'ghost-node', 1, now()) RETURNING id`,
    );
    const id = Number(row!.id);
    await storeOutput(backend, id, 'stdout', 1, 'first run, a long line\n');
    const items: SseItem[] = [];
    const following = readSse(await fetch(`${server.url}/api/v1/jobs/${id}/logs?follow=1`), (item) => {
      items.push(item);
    });
    await eventually(() => joined(items, 'stdout') === 'first run, a long line\n', { what: 'the first run' });
    // Its node was lost and it runs again: attempt 2 writes from byte 0.
    await backend.db.db.execute(sql`UPDATE jobs SET attempt = 2 WHERE id = ${id}`);
    await storeOutput(backend, id, 'stdout', 2, 'again\n');
    await backend.db.db.execute(
      sql`UPDATE jobs SET state = 'COMPLETED', exit_code = '0:0', end_time = now() WHERE id = ${id}`,
    );
    await following;
    expect(joined(items, 'stdout')).toBe('first run, a long line\nagain\n');
    expect(items.find((i) => i.event === 'attempt')).toMatchObject({ data: '{"attempt":2}', id: '2:0-0' });
    expect(items.at(-1)).toMatchObject({ event: 'end', id: '2:6-0' });
    // A follower that had the first run's output, reconnecting, gets the second run from its start.
    const resumed = await readSse(
      await fetch(`${server.url}/api/v1/jobs/${id}/logs?follow=1`, {
        headers: { 'Last-Event-ID': '1:23-0' },
      }),
    );
    expect(resumed.filter((i) => i.kind === 'event').map((i) => i.event)).toEqual([
      'attempt',
      'stdout',
      'end',
    ]);
    expect(joined(resumed, 'stdout')).toBe('again\n');
  });

  it('encoding=json makes followed output byte-exact: carriage returns survive', async () => {
    const id = await submit(
      `printf 'a\\rb\\r\\nc\\n'; printf 'x\\ry\\r' >&2; sleep 0.7; printf '50%%\\r100%%\\n'`,
    );
    const items = await readSse(await fetch(`${server.url}/api/v1/jobs/${id}/logs?follow=1&encoding=json`));
    const decoded = (event: string) =>
      items
        .filter((i) => i.event === event)
        .map((i) => JSON.parse(i.data) as string)
        .join('');
    expect(decoded('stdout')).toBe('a\rb\r\nc\n50%\r100%\n');
    expect(decoded('stderr')).toBe('x\ry\r');
    // Ids count bytes as stored, whatever the encoding: 7 + 9 bytes of stdout, 4 of stderr.
    expect(items.filter((i) => i.kind === 'event').at(-1)).toMatchObject({ event: 'end', id: '1:16-4' });
    // Plain text (the default) cannot carry them: an SSE parser reads \r and \r\n as line breaks.
    const plain = await readSse(await fetch(`${server.url}/api/v1/jobs/${id}/logs?follow=1`));
    expect(joined(plain, 'stdout')).toBe('a\nb\nc\n50%\n100%\n');
  });

  it("the CLI's SSE reader (conductor logs -f) gets the same output through ids and keep-alives", async () => {
    const id = await submit('echo out1; echo err1 >&2; sleep 0.8; echo out2');
    const out: string[] = [];
    const err: string[] = [];
    const names: string[] = [];
    await new Client({ url: server.url }).events(`/api/v1/jobs/${id}/logs?follow=1`, (event, data) => {
      names.push(event);
      if (event === 'stdout') out.push(data);
      else if (event === 'stderr') err.push(data);
    });
    expect(out.join('')).toBe('out1\nout2\n');
    expect(err.join('')).toBe('err1\n');
    // Comments are no events to it: only stdout, stderr and end.
    expect(new Set(names)).toEqual(new Set(['stdout', 'stderr', 'end']));
    expect(names.at(-1)).toBe('end');
  });

  it('refuses bad queries and unknown jobs with JSON errors', async () => {
    expect((await fetch(`${server.url}/api/v1/jobs/999999/logs?follow=1`)).status).toBe(404);
    const bad = await fetch(`${server.url}/api/v1/jobs/1/logs?tail=-1`);
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { error: { message: string } }).error.message).toContain('tail');
    expect((await fetch(`${server.url}/api/v1/jobs/1/logs?follow=maybe`)).status).toBe(400);
  });
});

describe.runIf(pglite)(
  'live-log followers: polling cost and limits (review M7)',
  { timeout: 120_000 },
  () => {
    let backend: Backend;
    /** The SQL text of every statement the app's database ran. */
    const statements: string[] = [];
    let s: ReturnType<typeof secureApp>;
    beforeAll(async () => {
      backend = await pglite!.create();
      const dialect = new PgDialect();
      const recorded = new Proxy(backend.db.db, {
        get(target, property, receiver) {
          if (property !== 'execute') return Reflect.get(target, property, receiver);
          return (statement: SQL) => {
            statements.push(dialect.sqlToQuery(statement).sql);
            return target.execute(statement);
          };
        },
      });
      s = secureApp(
        { ...backend, db: { ...backend.db, db: recorded } },
        { logKeepAliveMs: 100, logFollowersPerJob: 2, logFollowersPerToken: 3 },
      );
    });
    afterAll(async () => {
      await s?.harness.settle();
      await backend?.close();
    });

    const runningJob = async () => {
      const [row] = await query<{ id: string | number }>(
        backend.db.db,
        sql`INSERT INTO jobs (name, script, cpus, state, node, attempt, start_time, owner)
          VALUES ('followed', 'true', 1, 'RUNNING', 'ghost-node', 1, now(), 'team') RETURNING id`,
      );
      return Number(row!.id);
    };

    it('a caught-up follower polls byte counts only: no poll reads the output text', async () => {
      const id = await runningJob();
      const text = `${'x'.repeat(300_000)}\n`;
      await storeOutput(backend, id, 'stdout', 1, text);
      await storeOutput(backend, id, 'stderr', 1, 'err\n');
      const from = statements.length;
      const polls = () => statements.slice(from).filter((q) => q.includes('job_output'));
      const res = await s.request('GET', `/api/v1/jobs/${id}/logs?follow=1`, {
        headers: { 'Last-Event-ID': `1:${text.length}-4` },
      });
      expect(res.status).toBe(200);
      // Keep-alive comments come every 100 ms: stop once the stream has polled a few times.
      const items = await readSse(res, () => polls().length >= 4);
      expect(items.filter((i) => i.kind === 'event')).toEqual([]);
      const reads = polls().filter((q) => /content|job_output_chunks|\bdata\b/.test(q));
      expect(reads).toEqual([]);
    });

    it('refuses followers over the per-job and per-token limits with a 429 that says why', async () => {
      const reader = (await s.token(['jobs:read'], 'follower', 'team')).token;
      const other = (await s.token(['jobs:read'], 'other-follower', 'team')).token;
      const [a, b, c] = [await runningJob(), await runningJob(), await runningJob()];
      const follow = (id: number, token: string) =>
        s.request('GET', `/api/v1/jobs/${id}/logs?follow=1`, { token });
      const open: Response[] = [];
      for (const [id, token] of [
        [a, reader],
        [a, other],
      ] as const) {
        const res = await follow(id, token);
        expect(res.status).toBe(200);
        open.push(res);
      }
      // A third follower of job a, whoever it is: refused.
      const third = await follow(a, other);
      expect(third.status).toBe(429);
      expect(third.headers.get('retry-after')).toBe('5');
      const perJob = await errorOf(third);
      expect(perJob.code).toBe('too_many_followers');
      expect(perJob.message).toContain(`Job ${a} already has 2 live-log followers`);
      // The reader follows two more jobs (3 in all), then a fourth is refused.
      for (const id of [b, c]) {
        const res = await follow(id, reader);
        expect(res.status).toBe(200);
        open.push(res);
      }
      const fourth = await follow(b, reader);
      expect(fourth.status).toBe(429);
      expect((await errorOf(fourth)).message).toContain('This token already follows 3 live logs');
      // Plain reads are not limited.
      expect((await s.request('GET', `/api/v1/jobs/${a}/logs`, { token: reader })).status).toBe(200);
      // Followers that leave free their places.
      await Promise.all(open.map((res) => res.body?.cancel()));
      await eventually(
        async () => {
          const res = await follow(a, reader);
          await res.body?.cancel();
          return res.status === 200;
        },
        { what: 'a follower after the others left' },
      );
    });
  },
);

describe.each(backends)('job output retention on $name', (factory) => {
  let backend: Backend;
  beforeAll(async () => {
    backend = await factory.create({ keyPrefix: `logs-retention-${Date.now()}:` });
  });
  afterAll(async () => {
    await backend?.close();
  });

  /** A finished job that ended `daysAgo` days ago (null: still running), with stdout and stderr stored. */
  const jobWithOutput = async (daysAgo: number | null, text = 'kept output\n') => {
    const [row] = await query<{ id: string | number }>(
      backend.db.db,
      daysAgo === null
        ? sql`INSERT INTO jobs (name, script, cpus, state, start_time)
              VALUES ('retention', 'true', 1, 'RUNNING', now()) RETURNING id`
        : sql`INSERT INTO jobs (name, script, cpus, state, exit_code, start_time, end_time)
              VALUES ('retention', 'true', 1, 'COMPLETED', '0:0',
                      now() - make_interval(days => ${daysAgo}::int, hours => 1),
                      now() - make_interval(days => ${daysAgo}::int)) RETURNING id`,
    );
    const id = Number(row!.id);
    await storeOutput(backend, id, 'stdout', 0, text);
    await storeOutput(backend, id, 'stderr', 0, 'err\n');
    return id;
  };
  const storedStreams = async (id: number) =>
    Number(
      (
        await query<{ n: string | number }>(
          backend.db.db,
          sql`SELECT count(*) AS n FROM job_output WHERE job_id = ${id}`,
        )
      )[0]?.n,
    );

  it('a backstop tick deletes the output of jobs that ended beyond retention; the logs route then says 410 logs_expired', async () => {
    const s = secureApp(backend, { logRetentionDays: 30 });
    const old = await jobWithOutput(31);
    const recent = await jobWithOutput(29);
    const running = await jobWithOutput(null);
    // Past retention but not yet swept: still served as it is.
    expect((await s.request('GET', `/api/v1/jobs/${old}/logs`)).status).toBe(200);

    await runBackstop(s.harness.ctx);
    expect(await storedStreams(old)).toBe(0);
    expect(await storedStreams(recent)).toBe(2);
    expect(await storedStreams(running)).toBe(2);
    expect(s.harness.logger.has(/Job output expired: \d+ streams/)).toBe(true);

    const gone = await s.request('GET', `/api/v1/jobs/${old}/logs`);
    expect(gone.status).toBe(410);
    const error = await errorOf(gone);
    expect(error.code).toBe('logs_expired');
    expect(error.message).toContain('more than 30 days ago');
    // Followed, it is the same 410 before any stream starts.
    const followed = await s.request('GET', `/api/v1/jobs/${old}/logs?follow=1`);
    expect(followed.status).toBe(410);
    expect(followed.headers.get('content-type')).toContain('application/json');
    expect((await errorOf(followed)).code).toBe('logs_expired');
    // The job itself is still there.
    expect((await s.request('GET', `/api/v1/jobs/${old}`)).status).toBe(200);

    const kept = await s.request('GET', `/api/v1/jobs/${recent}/logs`);
    expect(kept.status).toBe(200);
    expect(((await kept.json()) as { stdout: { content: string } }).stdout.content).toBe('kept output\n');
    expect((await s.request('GET', `/api/v1/jobs/${running}/logs`)).status).toBe(200);

    // The sweep reached the end: the next tick (seconds later) rests instead of scanning again.
    const later = await jobWithOutput(40);
    await runBackstop(s.harness.ctx);
    expect(await storedStreams(later)).toBe(2);
  });

  it('retention 0 keeps every job output forever', async () => {
    const s = secureApp(backend, { logRetentionDays: 0 });
    const ancient = await jobWithOutput(3650, 'from long ago\n');
    await runBackstop(s.harness.ctx);
    expect(await storedStreams(ancient)).toBe(2);
    const res = await s.request('GET', `/api/v1/jobs/${ancient}/logs`);
    expect(res.status).toBe(200);
    expect(((await res.json()) as { stdout: { content: string } }).stdout.content).toBe('from long ago\n');
  });

  it('deletes in bounded batches, one statement each, resuming where the last pass stopped', async () => {
    const olds = [];
    for (let i = 0; i < 5; i++) olds.push(await jobWithOutput(60 + i));
    const recent = await jobWithOutput(1);
    let after = 0;
    let passes = 0;
    let total = 0;
    for (;;) {
      const { deleted, next } = await pruneJobOutput(backend.db.db, 30, { after, scan: 4, batch: 3 });
      expect(deleted).toBeLessThanOrEqual(3);
      total += deleted;
      passes++;
      if (next === null) break;
      after = next;
      expect(passes).toBeLessThan(100);
    }
    expect(passes).toBeGreaterThan(3);
    expect(total).toBeGreaterThanOrEqual(10);
    for (const id of olds) expect(await storedStreams(id)).toBe(0);
    expect(await storedStreams(recent)).toBe(2);
    expect(await pruneJobOutput(backend.db.db, 0)).toEqual({ deleted: 0, next: null });
  });
});

describe('CONDUCTOR_LOG_RETENTION_DAYS', () => {
  const workerBindings = {
    DATABASE_URL: 'postgres://db.example/conductor',
    UPSTASH_REDIS_REST_URL: 'https://redis.example',
    UPSTASH_REDIS_REST_TOKEN: 'token',
  };

  it('defaults to 30 days on Node and Workers; 0 (keep forever) and whole days are accepted', () => {
    expect(configFromEnv(parseNodeEnv({})).logRetentionDays).toBe(30);
    expect(configFromEnv(parseNodeEnv({ CONDUCTOR_LOG_RETENTION_DAYS: '0' })).logRetentionDays).toBe(0);
    expect(configFromEnv(parseNodeEnv({ CONDUCTOR_LOG_RETENTION_DAYS: '7' })).logRetentionDays).toBe(7);
    expect(configFromWorkerEnv(parseWorkerEnv(workerBindings)).logRetentionDays).toBe(30);
    expect(
      configFromWorkerEnv(parseWorkerEnv({ ...workerBindings, CONDUCTOR_LOG_RETENTION_DAYS: '0' }))
        .logRetentionDays,
    ).toBe(0);
    expect(configFromEnv(parseNodeEnv({})).logKeepAliveMs).toBe(15_000);
  });

  it('refuses negative, fractional and non-numeric values, naming the variable', () => {
    for (const value of ['-1', '1.5', 'forever', '100000']) {
      expect(() => parseNodeEnv({ CONDUCTOR_LOG_RETENTION_DAYS: value }), value).toThrow(
        /CONDUCTOR_LOG_RETENTION_DAYS/,
      );
      expect(() => parseWorkerEnv({ ...workerBindings, CONDUCTOR_LOG_RETENTION_DAYS: value }), value).toThrow(
        /CONDUCTOR_LOG_RETENTION_DAYS/,
      );
    }
  });
});
