/**
 * Reading a job's output for people: whole (with a marker line when the head was cut), its tail, or what
 * arrived since a byte offset (live logs). job_output keeps each stream's total byte count (`bytes`, the
 * offset a follower keeps); job_output_chunks its text, of which the last 1 MiB is shown.
 */
import { type SQL, sql } from 'drizzle-orm';
import { z } from 'zod';
import { FINAL_STATES, type JobState } from '../../db/schema.ts';
import { ANONYMOUS, type Principal, seesJobOf } from './auth.ts';
import { ConductorError, notFound } from './errors.ts';
import { OUTPUT_KEEP_CHARS } from './jobs.ts';
import type { Database } from './ports.ts';
import { query, queryOne } from './sql.ts';

export type StreamName = 'stdout' | 'stderr';
const STREAMS: readonly StreamName[] = ['stdout', 'stderr'];

export interface OutputSnapshot {
  state: JobState;
  /** The attempt the output belongs to (a requeued job's next run starts its streams anew). */
  attempt: number;
  exit_code: string | null;
  finished: boolean;
  streams: Record<StreamName, { content: string; bytes: number }>;
}

/** A stream's kept text: its chunks in order, cut to the last OUTPUT_KEEP_CHARS characters. */
const keptText = (where: SQL) =>
  sql`(SELECT right(string_agg(c.data, '' ORDER BY c.seq), ${OUTPUT_KEEP_CHARS}::int)
       FROM job_output_chunks c WHERE ${where})`;

/**
 * The job's state and its output streams' byte counts (current attempt), with their stored text when
 * `withContent`; another owner's job is "not found". With `retentionDays` > 0, a job that ended longer ago
 * than that and whose output is gone (the backstop deleted it) is a 410 `logs_expired`, so that expired
 * output never reads as "the job printed nothing".
 */
async function readStreams(
  db: Database,
  id: number,
  viewer: Principal,
  retentionDays: number,
  withContent: boolean,
) {
  const content = withContent
    ? sql`${keptText(sql`c.job_id = o.job_id AND c.stream = o.stream AND c.attempt = o.attempt`)} AS content,`
    : sql``;
  const rows = await query<{
    stream: StreamName | null;
    content?: string | null;
    bytes: string | number | null;
    state: JobState;
    attempt: string | number;
    exit_code: string | null;
    owner: string | null;
    end_time: Date | string | null;
    past_retention: boolean | null;
  }>(
    db,
    sql`SELECT o.stream, ${content} o.bytes, j.state, j.attempt, j.exit_code, j.owner, j.end_time,
               (${retentionDays}::int > 0
                AND j.end_time < now() - make_interval(days => ${retentionDays}::int)) AS past_retention
        FROM jobs j
        LEFT JOIN job_output o ON o.job_id = j.id AND o.attempt = j.attempt
        WHERE j.id = ${id}`,
  );
  const first = rows[0];
  if (!first || !seesJobOf(viewer, first.owner)) {
    throw notFound('job_not_found', `Job ${id} does not exist`);
  }
  if (first.past_retention && rows.every((r) => r.stream === null)) {
    const ended = first.end_time === null ? null : new Date(first.end_time).toISOString();
    throw new ConductorError(
      'gone',
      'logs_expired',
      `The output of job ${id} is no longer kept: the job ended at ${ended}, more than ${retentionDays} days ago (CONDUCTOR_LOG_RETENTION_DAYS)`,
      { end_time: ended, retention_days: retentionDays },
    );
  }
  const streams = {} as OutputSnapshot['streams'];
  for (const name of STREAMS) {
    const row = rows.find((r) => r.stream === name);
    streams[name] = { content: row?.content ?? '', bytes: Number(row?.bytes ?? 0) };
  }
  return {
    state: first.state,
    attempt: Number(first.attempt),
    exit_code: first.exit_code,
    finished: FINAL_STATES.includes(first.state),
    streams,
  } satisfies OutputSnapshot;
}

/** The job's state and its stored output (current attempt); see readStreams for the 404 and 410. */
export function readOutput(db: Database, id: number, viewer: Principal = ANONYMOUS, retentionDays = 0) {
  return readStreams(db, id, viewer, retentionDays, true);
}

/**
 * The job's state and its streams' byte counts, without their text (`content` is empty): what a live-log
 * follower polls, so that a follower who has everything reads no output at all.
 */
export function readOutputProgress(
  db: Database,
  id: number,
  viewer: Principal = ANONYMOUS,
  retentionDays = 0,
) {
  return readStreams(db, id, viewer, retentionDays, false);
}

/**
 * What a follower at byte `offset` of a stream needs to see the rest: the stream's byte count and as much of
 * its kept text (from the end) as holds the bytes after `offset`, read from the newest chunks only; give it
 * to `newSince` with that byte count. Undefined when the stream is not (or no longer) of `attempt`.
 */
export async function readOutputSince(
  db: Database,
  id: number,
  attempt: number,
  stream: StreamName,
  offset: number,
): Promise<{ content: string; bytes: number } | undefined> {
  // The newest chunks whose bytes cover `bytes - offset` (all, when they do not), cut to the kept 1 MiB: a
  // suffix of the kept text that holds at least the wanted bytes, or all of it (see newSince).
  const row = await queryOne<{ bytes: string | number; content: string | null }>(
    db,
    sql`SELECT o.bytes,
               (SELECT right(string_agg(n.data, '' ORDER BY n.seq), ${OUTPUT_KEEP_CHARS}::int)
                FROM (SELECT c.seq, c.data,
                             sum(c.size) OVER (ORDER BY c.seq DESC ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
                               AS newer_size
                      FROM job_output_chunks c
                      WHERE c.job_id = o.job_id AND c.stream = o.stream AND c.attempt = o.attempt) n
                WHERE coalesce(n.newer_size, 0) < o.bytes - ${offset}::bigint) AS content
        FROM job_output o
        WHERE o.job_id = ${id} AND o.stream = ${stream} AND o.attempt = ${attempt}`,
  );
  if (!row) return undefined;
  return { content: row.content ?? '', bytes: Number(row.bytes) };
}

/** Most job_output rows one retention pass deletes (one statement, so one bounded transaction). */
export const OUTPUT_PRUNE_BATCH = 1000;
/** Most job_output rows one retention pass looks at (each with a primary-key probe into jobs). */
export const OUTPUT_PRUNE_SCAN = 10_000;

export interface PruneResult {
  /** Rows deleted by this pass. */
  deleted: number;
  /** Where the next pass goes on (`after` for it), or null: this pass reached the end of job_output. */
  next: number | null;
}

/**
 * One bounded retention pass in one statement: looks at the next `scan` job_output rows in job_id order
 * after job id `after` (the primary key's order), and deletes at most `batch` of them whose job ended more
 * than `retentionDays` ago. Each row costs one primary-key probe into jobs, so no index on jobs.end_time is
 * needed and the cost does not grow with the jobs table, only with `scan`. Call it again with `next` until
 * that is null to cover the whole table (old jobs have low ids: they come first).
 */
export async function pruneJobOutput(
  db: Database,
  retentionDays: number,
  options: { after?: number; scan?: number; batch?: number } = {},
): Promise<PruneResult> {
  if (!(retentionDays > 0)) return { deleted: 0, next: null };
  const after = options.after ?? 0;
  const scan = Math.max(3, options.scan ?? OUTPUT_PRUNE_SCAN);
  const batch = Math.max(1, options.batch ?? OUTPUT_PRUNE_BATCH);
  const rows = await query<{
    deleted: string | number;
    doomed: string | number;
    scanned: string | number;
    scan_end: string | number | null;
    doomed_end: string | number | null;
  }>(
    db,
    sql`WITH scan AS (
          SELECT o.ctid AS row_id, o.job_id,
                 (SELECT j.end_time FROM jobs j WHERE j.id = o.job_id)
                   < now() - make_interval(days => ${retentionDays}::int) AS expired
          FROM job_output o
          WHERE o.job_id > ${after}::bigint
          ORDER BY o.job_id
          LIMIT ${scan}::int
        ), doomed AS (
          SELECT row_id, job_id FROM scan WHERE expired ORDER BY job_id LIMIT ${batch}::int
        ), gone AS (
          DELETE FROM job_output WHERE ctid IN (SELECT row_id FROM doomed) RETURNING 1
        )
        SELECT (SELECT count(*) FROM gone) AS deleted,
               (SELECT count(*) FROM doomed) AS doomed,
               (SELECT count(*) FROM scan) AS scanned,
               (SELECT max(job_id) FROM scan) AS scan_end,
               (SELECT max(job_id) FROM doomed) AS doomed_end`,
  );
  const row = rows[0];
  const deleted = Number(row?.deleted ?? 0);
  // A job has up to two rows: the next pass starts at the last job touched, in case a limit split its pair.
  // (Counted from what this pass chose, not what it deleted: a concurrent pass may have deleted some first.)
  if (Number(row?.doomed ?? 0) >= batch && row?.doomed_end != null) {
    return { deleted, next: Number(row.doomed_end) - 1 };
  }
  if (Number(row?.scanned ?? 0) >= scan && row?.scan_end != null) {
    return { deleted, next: Number(row.scan_end) - 1 };
  }
  return { deleted, next: null };
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

/**
 * `GET /api/v1/jobs/:id/logs` query: `follow=1` streams (SSE) until the job ends; `tail=N` keeps N bytes;
 * `encoding=json` makes each followed event's data a JSON string (byte-exact: an SSE data line cannot carry
 * a carriage return, so plain text turns `\r` and `\r\n` into line breaks).
 */
export const logsQuery = z.strictObject({
  follow: flag.optional(),
  encoding: z.enum(['text', 'json'], { error: 'encoding is text or json' }).optional(),
  tail: z.coerce
    .number({ error: 'tail is a number of bytes' })
    .int('tail is a whole number of bytes')
    .min(0, 'tail is at least 0')
    .max(16 * 1024 * 1024, 'tail is at most 16777216')
    .optional(),
});
export type LogsQuery = z.infer<typeof logsQuery>;
