/**
 * Stored job output (review M6): uploads append to what is kept instead of rewriting the whole kept 1 MiB, and
 * what the logs route shows (content, bytes, truncated, the marker lines) is what it always was.
 */
import { randomBytes } from 'node:crypto';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { newSince, readOutput, readOutputSince, streamView } from '../../functions/domain/job-logs.ts';
import { query } from '../../functions/domain/sql.ts';
import { appendOutput } from '../../functions/domain/workers.ts';
import { availableBackends, type Backend, testContext } from '../support/cluster.ts';

const backends = await availableBackends();
const [pglite] = backends.filter((b) => b.name === 'pglite+memory');

const KEEP_CHARS = 1024 * 1024;
const UPLOAD = 256 * 1024;

/** What the control plane always kept: the last 1 MiB (characters) of the text and skip markers, by attempt. */
class KeptOutputModel {
  content = '';
  bytes = 0;
  attempt = 0;
  /** Applies an upload as the original appendOutput did; false when it was refused (offset behind). */
  append(attempt: number, offset: number, data: string, bytes: number): boolean {
    if (attempt !== this.attempt) {
      this.attempt = attempt;
      this.content = '';
      this.bytes = 0;
      const marker = offset > 0 ? `\n[... ${offset} bytes of output skipped ...]\n` : '';
      this.content = lastChars(marker + data);
      this.bytes = offset + bytes;
      return true;
    }
    if (offset < this.bytes) return false;
    const marker = offset > this.bytes ? `\n[... ${offset - this.bytes} bytes of output skipped ...]\n` : '';
    this.content = lastChars(this.content + marker + data);
    this.bytes = offset + bytes;
    return true;
  }
}
const lastChars = (text: string) => {
  const chars = Array.from(text);
  return chars.length <= KEEP_CHARS ? text : chars.slice(-KEEP_CHARS).join('');
};

/** Random printable text (base64 of random bytes: it does not compress, like the review's job). */
const noise = (chars: number) =>
  randomBytes(Math.ceil((chars * 3) / 4) + 3)
    .toString('base64')
    .slice(0, chars);

describe.runIf(pglite)('stored job output (review M6)', { timeout: 180_000 }, () => {
  let backend: Backend;
  let harness: ReturnType<typeof testContext>;
  beforeAll(async () => {
    backend = await pglite!.create();
    harness = testContext(backend);
    await backend.db.db.execute(
      sql`INSERT INTO workers (id, hostname, cpus, session) VALUES ('out-node', 'h', 8, 's1')`,
    );
  });
  afterAll(async () => {
    await harness?.settle();
    await backend?.close();
  });

  const runningJob = async (attempt = 1) => {
    const [row] = await query<{ id: string | number }>(
      backend.db.db,
      sql`INSERT INTO jobs (name, script, cpus, state, node, attempt, start_time)
          VALUES ('output', 'true', 1, 'RUNNING', 'out-node', ${attempt}, now()) RETURNING id`,
    );
    return Number(row!.id);
  };
  const upload = (
    id: number,
    stream: 'stdout' | 'stderr',
    attempt: number,
    offset: number,
    data: string,
    bytes = Buffer.byteLength(data),
  ) => appendOutput(harness.ctx, id, { worker_id: 'out-node', attempt, stream, offset, data, bytes });
  const walLsn = async () =>
    (await query<{ lsn: string }>(backend.db.db, sql`SELECT pg_current_wal_insert_lsn()::text AS lsn`))[0]!
      .lsn;
  const walBytes = async (from: string, to: string) =>
    Number(
      (
        await query<{ n: string | number }>(
          backend.db.db,
          sql`SELECT pg_wal_lsn_diff(${to}::pg_lsn, ${from}::pg_lsn) AS n`,
        )
      )[0]!.n,
    );

  it('an upload writes about its own size to the WAL, not the whole kept 1 MiB again', async () => {
    const id = await runningJob();
    let offset = 0;
    for (let i = 0; i < 4; i++) {
      await upload(id, 'stdout', 1, offset, noise(UPLOAD));
      offset += UPLOAD;
    }
    const uploads = 6;
    const before = await walLsn();
    for (let i = 0; i < uploads; i++) {
      await upload(id, 'stdout', 1, offset, noise(UPLOAD));
      offset += UPLOAD;
    }
    const perUpload = (await walBytes(before, await walLsn())) / uploads;
    // Measured: about 1.2 MB per 256 KiB upload before (the kept 1 MiB rewritten), about 270 kB after.
    expect(perUpload / UPLOAD).toBeLessThan(3);
    const output = await readOutput(backend.db.db, id);
    expect(output.streams.stdout.bytes).toBe(offset);
    expect(Array.from(output.streams.stdout.content).length).toBe(KEEP_CHARS);
  });

  it('shows what was always shown: the last 1 MiB, skip markers, re-sent offsets refused, attempts anew', async () => {
    const id = await runningJob();
    const models = { stdout: new KeptOutputModel(), stderr: new KeptOutputModel() };
    let jobAttempt = 1;
    const check = async () => {
      const output = await readOutput(backend.db.db, id);
      for (const name of ['stdout', 'stderr'] as const) {
        // A stream the current attempt has not written to yet is empty.
        const model = models[name].attempt === jobAttempt ? models[name] : { content: '', bytes: 0 };
        expect(output.streams[name].bytes, name).toBe(model.bytes);
        expect(output.streams[name].content === model.content, `${name} content`).toBe(true);
        for (const tail of [undefined, 10, 300_000]) {
          const view = streamView(output.streams[name], tail);
          const expected = streamView({ content: model.content, bytes: model.bytes }, tail);
          expect(view.truncated).toBe(expected.truncated);
          expect(view.content === expected.content, `${name} tail ${tail}`).toBe(true);
        }
        // A follower at any offset gets what it always got, from the newest chunks only.
        for (const back of [0, 1, 10, 70_000, 300_000, 2_000_000]) {
          const offset = Math.max(0, model.bytes - back);
          const since = (await readOutputSince(backend.db.db, id, jobAttempt, name, offset)) ?? {
            content: '',
            bytes: 0,
          };
          const expected = newSince({ content: model.content, bytes: model.bytes }, offset);
          expect(newSince(since, offset) === expected, `${name} since ${offset}`).toBe(true);
        }
      }
    };
    const send = async (
      name: 'stdout' | 'stderr',
      attempt: number,
      offset: number,
      data: string,
      bytes = Buffer.byteLength(data),
    ) => {
      const accepted = models[name].append(attempt, offset, data, bytes);
      const result = await upload(id, name, attempt, offset, data, bytes).then(
        (r) => r,
        (e: { code?: string }) => e,
      );
      if (accepted) expect(result).toEqual({ bytes: offset + bytes });
      else expect(result).toMatchObject({ code: 'output_offset_mismatch' });
      await check();
    };
    // Multi-byte characters: 1 MiB is counted in characters, bytes in bytes.
    const wide = 'é€😀x'.repeat(70_000);
    await send('stdout', 1, 0, 'hello\n');
    await send('stderr', 1, 100, 'after a gap\n');
    await send('stdout', 1, 6, wide);
    let out = 6 + Buffer.byteLength(wide);
    await send('stdout', 1, out, wide);
    out += Buffer.byteLength(wide);
    // The agent re-sends an upload whose answer it lost: refused, nothing changes.
    await send('stdout', 1, 6, wide);
    await send('stdout', 1, out + 50, 'x'.repeat(UPLOAD));
    out += 50 + UPLOAD;
    for (let i = 0; i < 5; i++) {
      const data = `${i}:${noise(200_000)}\n`;
      await send('stdout', 1, out, data);
      out += Buffer.byteLength(data);
    }
    // Data whose byte count differs from its UTF-8 length (replacement characters stand in for raw bytes).
    await send('stdout', 1, out, '\uFFFDab', 3);
    out += 3;
    await send('stdout', 1, out, '');
    // The job runs again: attempt 2 starts both streams anew, its first upload after a skip.
    await backend.db.db.execute(sql`UPDATE jobs SET attempt = 2 WHERE id = ${id}`);
    jobAttempt = 2;
    await send('stdout', 2, 0, 'second run\n');
    await send('stderr', 2, 5000, 'late\n');
    const old = await query<{ n: string | number }>(
      backend.db.db,
      sql`SELECT count(*) AS n FROM job_output_chunks WHERE job_id = ${id} AND attempt <> 2`,
    );
    expect(Number(old[0]!.n)).toBe(0);
  });

  it('appends small uploads to the newest small chunk: a quiet job does not pile up rows', async () => {
    const id = await runningJob();
    const model = new KeptOutputModel();
    let offset = 0;
    for (let i = 0; i < 300; i++) {
      // Lines of a job that prints a little every second, and now and then a skip.
      if (i % 97 === 96) offset += 10;
      const line = `line ${i}: ${'é'.repeat(i % 40)}\n`;
      model.append(1, offset, line, Buffer.byteLength(line));
      await upload(id, 'stdout', 1, offset, line);
      offset += Buffer.byteLength(line);
    }
    const [kept] = await query<{ chunks: string | number; largest: string | number }>(
      backend.db.db,
      sql`SELECT count(*) AS chunks, max(size) AS largest FROM job_output_chunks WHERE job_id = ${id}`,
    );
    const stored = model.content.length * 2;
    expect(Number(kept!.chunks)).toBeLessThanOrEqual(Math.ceil(stored / 4096) + 1);
    expect(Number(kept!.largest)).toBeLessThanOrEqual(8192);
    const output = await readOutput(backend.db.db, id);
    expect(output.streams.stdout.content === model.content).toBe(true);
    expect(output.streams.stdout.bytes).toBe(model.bytes);
    for (const back of [1, 100, 5000, 20_000]) {
      const since = await readOutputSince(backend.db.db, id, 1, 'stdout', model.bytes - back);
      expect(newSince(since!, model.bytes - back) === newSince(model, model.bytes - back)).toBe(true);
    }
  });

  it('keeps whole chunks only while they hold part of the last 1 MiB', async () => {
    const id = await runningJob();
    let offset = 0;
    for (let i = 0; i < 40; i++) {
      const data = noise(100_000);
      await upload(id, 'stdout', 1, offset, data);
      offset += data.length;
    }
    const [kept] = await query<{ chunks: string | number; chars: string | number; oldest: string | number }>(
      backend.db.db,
      sql`SELECT count(*) AS chunks, sum(char_length(data)) AS chars,
                 min(char_length(data)) AS oldest
          FROM job_output_chunks WHERE job_id = ${id} AND stream = 'stdout'`,
    );
    expect(Number(kept!.chars)).toBeGreaterThanOrEqual(KEEP_CHARS);
    expect(Number(kept!.chars)).toBeLessThan(KEEP_CHARS + 100_000);
    expect(Number(kept!.chunks)).toBe(11);
  });
});
