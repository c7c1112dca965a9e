import { appendFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  completeUtf8Length,
  cutChunk,
  leadingContinuationBytes,
  MAX_BACKLOG_BYTES,
  MAX_CHUNK_BYTES,
  type OutputChunk,
  OutputStreamer,
  planChunk,
  type SendOutcome,
} from '../../agent/src/output-streamer.ts';

const root = mkdtempSync(join(tmpdir(), 'conductor-output-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const enc = (s: string) => new TextEncoder().encode(s);
const TEXT = 'plain ascii, é (2 bytes), € (3 bytes), 𝄞 (4 bytes), 日本語テキスト, done\n';

describe('UTF-8 boundaries', () => {
  it('holds back only an incomplete trailing sequence', () => {
    expect(completeUtf8Length(enc('abc'))).toBe(3);
    expect(completeUtf8Length(enc('aé'))).toBe(3);
    expect(completeUtf8Length(enc('aé').subarray(0, 2))).toBe(1);
    const euro = enc('x€');
    expect(completeUtf8Length(euro.subarray(0, 2))).toBe(1);
    expect(completeUtf8Length(euro.subarray(0, 3))).toBe(1);
    expect(completeUtf8Length(euro)).toBe(4);
    const clef = enc('𝄞');
    for (let i = 1; i < 4; i++) expect(completeUtf8Length(clef.subarray(0, i))).toBe(0);
    expect(completeUtf8Length(clef)).toBe(4);
    expect(completeUtf8Length(new Uint8Array([]))).toBe(0);
  });

  it('does not hold back invalid bytes', () => {
    expect(completeUtf8Length(new Uint8Array([0x61, 0xff]))).toBe(2);
    expect(completeUtf8Length(new Uint8Array([0x80, 0x80, 0x80, 0x80]))).toBe(4);
  });

  it('skips a cut-off character at the start of a chunk after a gap', () => {
    const clef = enc('𝄞z');
    expect(leadingContinuationBytes(clef.subarray(1))).toBe(3);
    expect(leadingContinuationBytes(enc('z'))).toBe(0);
    const chunk = cutChunk(clef.subarray(2), 100, { skipped: true, final: false });
    expect(chunk).toEqual({ offset: 102, bytes: 1, data: 'z' }); // 2 continuation bytes dropped
  });

  it('reassembles text cut at every byte position', () => {
    const bytes = enc(TEXT);
    for (let cut = 1; cut < bytes.length; cut++) {
      // The first piece is what a chunk read up to `cut` would send; the rest follows from where it stopped.
      const first = cutChunk(bytes.subarray(0, cut), 0, { skipped: false, final: false });
      const sent = first?.bytes ?? 0;
      const second = cutChunk(bytes.subarray(sent), sent, { skipped: false, final: true });
      expect(second?.offset).toBe(sent);
      expect((first?.data ?? '') + (second?.data ?? '')).toBe(TEXT);
      expect(sent + (second?.bytes ?? 0)).toBe(bytes.length);
    }
  });

  it('plans at most 256 KiB per chunk and skips to the last 1 MiB', () => {
    expect(planChunk(0, 100)).toEqual({ start: 0, length: 100, skipped: false });
    expect(planChunk(0, MAX_CHUNK_BYTES * 2)).toEqual({ start: 0, length: MAX_CHUNK_BYTES, skipped: false });
    const size = 5 * MAX_BACKLOG_BYTES;
    expect(planChunk(10, size)).toEqual({
      start: size - MAX_BACKLOG_BYTES,
      length: MAX_CHUNK_BYTES,
      skipped: true,
    });
    expect(planChunk(size, size).length).toBe(0);
  });
});

/** A fake server for one job: stores each stream like the control plane does (byte offsets, gaps). */
function fakeServer() {
  const stored = { stdout: { bytes: 0, text: '', gaps: 0 }, stderr: { bytes: 0, text: '', gaps: 0 } };
  const calls: OutputChunk[] = [];
  const send = async (chunk: OutputChunk): Promise<SendOutcome> => {
    calls.push(chunk);
    const s = stored[chunk.stream];
    if (chunk.offset < s.bytes) return { kind: 'mismatch', expected: s.bytes };
    if (chunk.offset > s.bytes) s.gaps++;
    s.text += chunk.data;
    s.bytes = chunk.offset + chunk.bytes;
    return { kind: 'ok' };
  };
  return { stored, calls, send };
}

function files(name: string) {
  const stdoutPath = join(root, `${name}.out`);
  const stderrPath = join(root, `${name}.err`);
  writeFileSync(stdoutPath, '');
  writeFileSync(stderrPath, '');
  return { stdoutPath, stderrPath };
}

describe('OutputStreamer', () => {
  it('uploads a file written in pieces that split multi-byte characters', async () => {
    const paths = files('split');
    const server = fakeServer();
    const streamer = new OutputStreamer({ ...paths, send: server.send });
    const bytes = enc(TEXT.repeat(3));
    // Write 5 bytes at a time (cutting characters) and flush in between, as the periodic timer would.
    for (let i = 0; i < bytes.length; i += 5) {
      appendFileSync(paths.stdoutPath, bytes.subarray(i, i + 5));
      await streamer.flush();
    }
    appendFileSync(paths.stderrPath, 'an error\n');
    await streamer.finish();
    expect(server.stored.stdout.text).toBe(TEXT.repeat(3));
    expect(server.stored.stdout.bytes).toBe(bytes.length);
    expect(server.stored.stderr.text).toBe('an error\n');
    expect(server.calls.every((c) => !c.data.includes('\uFFFD'))).toBe(true);
    expect(server.calls.every((c) => enc(c.data).length === c.bytes)).toBe(true);
  });

  it('sends an incomplete trailing character in the final flush', async () => {
    const paths = files('final');
    const server = fakeServer();
    appendFileSync(paths.stdoutPath, Buffer.concat([enc('ok '), enc('€').subarray(0, 2)]));
    const streamer = new OutputStreamer({ ...paths, send: server.send });
    await streamer.flush();
    expect(server.stored.stdout.text).toBe('ok ');
    await streamer.finish();
    expect(server.stored.stdout.bytes).toBe(5);
    expect(server.stored.stdout.text).toBe('ok \uFFFD');
  });

  it('skips ahead to the last 1 MiB and sends chunks of at most 256 KiB', async () => {
    const paths = files('big');
    const line = `${'x'.repeat(63)}é\n`; // 66 bytes, multi-byte near every boundary
    const total = Math.ceil((3.5 * MAX_BACKLOG_BYTES) / 66);
    writeFileSync(paths.stdoutPath, line.repeat(total));
    const size = total * 66;
    const server = fakeServer();
    const streamer = new OutputStreamer({ ...paths, send: server.send });
    await streamer.finish();
    expect(server.calls.every((c) => c.bytes <= MAX_CHUNK_BYTES)).toBe(true);
    const first = server.calls[0]!;
    expect(first.offset).toBeGreaterThanOrEqual(size - MAX_BACKLOG_BYTES);
    expect(first.offset).toBeLessThan(size - MAX_BACKLOG_BYTES + 4);
    expect(server.stored.stdout.gaps).toBe(1);
    expect(server.stored.stdout.bytes).toBe(size);
    const sent = server.calls.reduce((n, c) => n + c.bytes, 0);
    expect(sent).toBeLessThanOrEqual(MAX_BACKLOG_BYTES);
    expect(server.stored.stdout.text.endsWith(line)).toBe(true);
    expect(server.stored.stdout.text.includes('\uFFFD')).toBe(false);
  });

  it('continues from the offset the server expects after a mismatch', async () => {
    const paths = files('mismatch');
    writeFileSync(paths.stdoutPath, 'first part|second part\n');
    const server = fakeServer();
    server.stored.stdout.bytes = 11; // the server got 'first part|' from a previous run
    server.stored.stdout.text = 'first part|';
    const streamer = new OutputStreamer({ ...paths, send: server.send });
    await streamer.finish();
    expect(server.calls[0]?.offset).toBe(0);
    expect(server.calls[1]?.offset).toBe(11);
    expect(server.stored.stdout.text).toBe('first part|second part\n');
  });

  it('uploads on its own timer while the file grows', async () => {
    const paths = files('timer');
    const server = fakeServer();
    const streamer = new OutputStreamer({ ...paths, send: server.send, intervalMs: 100, pollMs: 20 });
    streamer.start();
    appendFileSync(paths.stdoutPath, 'tick\n');
    await new Promise((r) => setTimeout(r, 300));
    expect(server.stored.stdout.text).toBe('tick\n');
    // 64 KiB of new output goes out without waiting for the interval.
    const slow = new OutputStreamer({ ...files('eager'), send: server.send, intervalMs: 60_000, pollMs: 20 });
    slow.start();
    await new Promise((r) => setTimeout(r, 50));
    const before = server.calls.length;
    appendFileSync(join(root, 'eager.out'), 'y'.repeat(70 * 1024));
    await new Promise((r) => setTimeout(r, 200));
    expect(server.calls.length).toBeGreaterThan(before);
    await streamer.finish();
    await slow.finish();
  });

  it('stops when the attempt is stale', async () => {
    const paths = files('stale');
    writeFileSync(paths.stdoutPath, 'data\n');
    let calls = 0;
    const streamer = new OutputStreamer({
      ...paths,
      send: async () => {
        calls++;
        return { kind: 'stale' };
      },
    });
    await streamer.finish();
    expect(streamer.stale).toBe(true);
    expect(calls).toBe(1);
  });
});
