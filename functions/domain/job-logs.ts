/**
 * Reading a job's output for people: whole (with a marker line when the head was cut), its tail, or what
 * arrived since a byte offset (live logs). job_output keeps the last 1 MiB of each stream and the total byte
 * count (`bytes`), which is the offset a follower keeps.
 */
import { sql } from 'drizzle-orm';
import { z } from 'zod';
import { FINAL_STATES, type JobState } from '../../db/schema.ts';
import { ANONYMOUS, type Principal, seesAllJobs } from './auth.ts';
import { notFound } from './errors.ts';
import type { Database } from './ports.ts';
import { query } from './sql.ts';

export type StreamName = 'stdout' | 'stderr';
const STREAMS: readonly StreamName[] = ['stdout', 'stderr'];

export interface OutputSnapshot {
  state: JobState;
  exit_code: string | null;
  finished: boolean;
  streams: Record<StreamName, { content: string; bytes: number }>;
}

/** The job's state and its stored output (current attempt); another owner's job is "not found". */
export async function readOutput(db: Database, id: number, viewer: Principal = ANONYMOUS) {
  const rows = await query<{
    stream: StreamName | null;
    content: string | null;
    bytes: string | number | null;
    state: JobState;
    exit_code: string | null;
    owner: string | null;
  }>(
    db,
    sql`SELECT o.stream, o.content, o.bytes, j.state, j.exit_code, j.owner FROM jobs j
        LEFT JOIN job_output o ON o.job_id = j.id AND o.attempt = j.attempt
        WHERE j.id = ${id}`,
  );
  const first = rows[0];
  if (!first || !(seesAllJobs(viewer) || (first.owner !== null && first.owner === viewer.owner))) {
    throw notFound('job_not_found', `Job ${id} does not exist`);
  }
  const streams = {} as OutputSnapshot['streams'];
  for (const name of STREAMS) {
    const row = rows.find((r) => r.stream === name);
    streams[name] = { content: row?.content ?? '', bytes: Number(row?.bytes ?? 0) };
  }
  return {
    state: first.state,
    exit_code: first.exit_code,
    finished: FINAL_STATES.includes(first.state),
    streams,
  } satisfies OutputSnapshot;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** The last `n` bytes of `text` (UTF-8), never starting inside a character. */
export function lastBytes(text: string, n: number): string {
  const bytes = encoder.encode(text);
  if (n >= bytes.length) return text;
  let start = bytes.length - n;
  while (start < bytes.length && ((bytes[start] ?? 0) & 0xc0) === 0x80) start++;
  return decoder.decode(bytes.subarray(start));
}

export const truncationMarker = (kept: number, total: number) =>
  `[... output truncated: the first ${total - kept} bytes were dropped, the last ${kept} kept ...]\n`;

/**
 * One stream as the logs route shows it. `truncated`: the head is gone (the server keeps the last 1 MiB, or
 * `tail` asked for less); the content then begins with a marker line saying so.
 */
export function streamView(stream: { content: string; bytes: number }, tail?: number) {
  let content = stream.content;
  if (tail !== undefined) content = lastBytes(content, tail);
  const kept = encoder.encode(content).length;
  const truncated = kept < stream.bytes;
  return {
    content: truncated ? truncationMarker(kept, stream.bytes) + content : content,
    bytes: stream.bytes,
    truncated,
  };
}

/**
 * What a follower at `offset` (bytes of the stream it has seen) has not seen yet. When more is new than the
 * server kept, a marker says how much was skipped.
 */
export function newSince(stream: { content: string; bytes: number }, offset: number): string {
  if (stream.bytes <= offset) return '';
  const wanted = stream.bytes - offset;
  const kept = encoder.encode(stream.content).length;
  if (wanted <= kept) return lastBytes(stream.content, wanted);
  return `[... ${wanted - kept} bytes of output skipped ...]\n${stream.content}`;
}

const flag = z
  .enum(['1', '0', 'true', 'false'], { error: 'follow is 1 or 0 (true or false)' })
  .transform((v) => v === '1' || v === 'true');

/** `GET /api/v1/jobs/:id/logs` query: `follow=1` streams (SSE) until the job ends; `tail=N` keeps N bytes. */
export const logsQuery = z.strictObject({
  follow: flag.optional(),
  tail: z.coerce
    .number({ error: 'tail is a number of bytes' })
    .int('tail is a whole number of bytes')
    .min(0, 'tail is at least 0')
    .max(16 * 1024 * 1024, 'tail is at most 16777216')
    .optional(),
});
export type LogsQuery = z.infer<typeof logsQuery>;
