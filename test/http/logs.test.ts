/**
 * GET /api/v1/jobs/:id/logs: `tail=N`, head truncation with its marker line, and `follow=1` (Server-Sent
 * Events) against a real server and a real agent.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AgentProcess, eventually } from '../support/agent-process.ts';
import { availableBackends, type Backend, startTestServer } from '../support/cluster.ts';

const [pglite] = (await availableBackends()).filter((b) => b.name === 'pglite+memory');

/** Reads an SSE response into events (name, data), with when each arrived. */
async function readEvents(res: Response, onEvent: (e: { event: string; data: string }) => void = () => {}) {
  const events: { event: string; data: string }[] = [];
  const decoder = new TextDecoder();
  let buffer = '';
  for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
    buffer += decoder.decode(chunk, { stream: true });
    let end = buffer.indexOf('\n\n');
    while (end >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = 'message';
      const data: string[] = [];
      for (const line of block.split('\n')) {
        if (line.startsWith('event: ')) event = line.slice(7);
        else if (line.startsWith('data: ')) data.push(line.slice(6));
        else if (line.startsWith('data:')) data.push(line.slice(5));
      }
      events.push({ event, data: data.join('\n') });
      onEvent({ event, data: data.join('\n') });
      end = buffer.indexOf('\n\n');
    }
  }
  return events;
}

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
    server = await startTestServer(backend);
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

  it('refuses bad queries and unknown jobs with JSON errors', async () => {
    expect((await fetch(`${server.url}/api/v1/jobs/999999/logs?follow=1`)).status).toBe(404);
    const bad = await fetch(`${server.url}/api/v1/jobs/1/logs?tail=-1`);
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { error: { message: string } }).error.message).toContain('tail');
    expect((await fetch(`${server.url}/api/v1/jobs/1/logs?follow=maybe`)).status).toBe(400);
  });
});
