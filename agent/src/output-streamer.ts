/**
 * Uploads a running job's stdout/stderr files to the control plane in byte-offset chunks.
 *
 * - Upload every `intervalMs` (1 s) while there is new output, or as soon as a stream has 64 KiB waiting.
 * - At most 256 KiB per request; when more than 1 MiB is waiting, skip ahead to the last 1 MiB (the chunk's
 *   offset then lies past what the server has and the server marks the gap).
 * - Chunks end on a UTF-8 character boundary: an incomplete trailing multi-byte sequence waits for the next
 *   chunk (until the final flush). A chunk that starts after a skip drops leading continuation bytes.
 * - A 409 `output_offset_mismatch` carries the server's length: continue from there.
 * - While the job runs, nothing past `limitBytes` is read: the executor cuts the file back to that length
 *   (what lies beyond is about to be dropped) and ends it with a marker line once the job is over.
 * Memory use is one chunk buffer at a time, however much the job prints.
 */
import { type FileHandle, open, stat } from 'node:fs/promises';

export const MAX_CHUNK_BYTES = 256 * 1024;
export const MAX_BACKLOG_BYTES = 1024 * 1024;
export const EAGER_UPLOAD_BYTES = 64 * 1024;

export type StreamName = 'stdout' | 'stderr';

export interface OutputChunk {
  stream: StreamName;
  offset: number;
  data: string;
  bytes: number;
}

/** What became of one chunk (the sender does its own retrying). */
export type SendOutcome =
  | { kind: 'ok' }
  /** 409 output_offset_mismatch: the server holds `expected` bytes. */
  | { kind: 'mismatch'; expected: number }
  /** The attempt is no longer ours: stop uploading. */
  | { kind: 'stale' }
  /** Refused for good (e.g. 400): skip this chunk. */
  | { kind: 'rejected' }
  /** Gave up (agent stopping): stop uploading. */
  | { kind: 'aborted' };

/**
 * Length of the longest prefix of `buf` that does not end inside a multi-byte UTF-8 sequence. Invalid bytes
 * are not held back (they decode to U+FFFD), so at most 3 bytes are ever withheld.
 */
export function completeUtf8Length(buf: Uint8Array): number {
  const n = buf.length;
  for (let i = n - 1; i >= 0 && i >= n - 4; i--) {
    const b = buf[i]!;
    if ((b & 0xc0) === 0x80) continue; // continuation byte: look further back for the lead
    let need: number;
    if (b < 0x80) need = 1;
    else if ((b & 0xe0) === 0xc0) need = 2;
    else if ((b & 0xf0) === 0xe0) need = 3;
    else if ((b & 0xf8) === 0xf0) need = 4;
    else return n; // not a UTF-8 lead byte: nothing worth waiting for
    return n - i < need ? i : n;
  }
  return n;
}

/** Number of UTF-8 continuation bytes (at most 3) at the start of `buf`: the tail of a character cut off. */
export function leadingContinuationBytes(buf: Uint8Array): number {
  let i = 0;
  while (i < 3 && i < buf.length && (buf[i]! & 0xc0) === 0x80) i++;
  return i;
}

/** Where the next chunk starts and how many bytes to read, given what the server has and the file size. */
export function planChunk(sent: number, size: number): { start: number; length: number; skipped: boolean } {
  if (size <= sent) return { start: sent, length: 0, skipped: false };
  const skipped = size - sent > MAX_BACKLOG_BYTES;
  const start = skipped ? size - MAX_BACKLOG_BYTES : sent;
  return { start, length: Math.min(MAX_CHUNK_BYTES, size - start), skipped };
}

/**
 * Cuts bytes read at file offset `start` into an uploadable chunk: drops a cut-off character at the start
 * after a skip, holds back an incomplete character at the end unless this is the file's final tail.
 * Returns undefined when nothing complete is there yet.
 */
export function cutChunk(
  buf: Uint8Array,
  start: number,
  options: { skipped: boolean; final: boolean },
): { offset: number; bytes: number; data: string } | undefined {
  const from = options.skipped ? leadingContinuationBytes(buf) : 0;
  const body = buf.subarray(from);
  const end = options.final ? body.length : completeUtf8Length(body);
  if (end === 0) return undefined;
  const piece = body.subarray(0, end);
  return { offset: start + from, bytes: end, data: new TextDecoder('utf-8').decode(piece) };
}

/** Reads one chunk of `file` for a server that holds `sent` bytes; `final` when the file no longer grows. */
export async function readChunk(
  file: FileHandle,
  sent: number,
  final: boolean,
  limit = Number.POSITIVE_INFINITY,
): Promise<{ offset: number; bytes: number; data: string } | undefined> {
  const size = visibleSize((await file.stat()).size, final, limit);
  const plan = planChunk(sent, size);
  if (plan.length === 0) return undefined;
  const buf = Buffer.alloc(plan.length);
  const { bytesRead } = await file.read(buf, 0, plan.length, plan.start);
  if (bytesRead === 0) return undefined;
  const atEnd = plan.start + bytesRead >= size;
  return cutChunk(buf.subarray(0, bytesRead), plan.start, { skipped: plan.skipped, final: final && atEnd });
}

/** What may be read of a file of `size` bytes: all of it once final, else no more than `limit`. */
function visibleSize(size: number, final: boolean, limit: number): number {
  return final ? size : Math.min(size, limit);
}

class StreamState {
  /** Bytes the server holds (our next offset). */
  sent: number;
  file: FileHandle | undefined;
  constructor(
    readonly name: StreamName,
    readonly path: string,
    initialOffset: number,
  ) {
    this.sent = initialOffset;
  }

  async handle(): Promise<FileHandle | undefined> {
    if (this.file) return this.file;
    try {
      this.file = await open(this.path, 'r');
    } catch {
      return undefined; // not created yet, or gone
    }
    return this.file;
  }

  /** The file's size, by path: the timer's check opens no handle (a handle opened while the streamer closes would leak). */
  async size(): Promise<number> {
    try {
      return (await stat(this.path)).size;
    } catch {
      return 0;
    }
  }
}

export interface OutputStreamerOptions {
  stdoutPath: string;
  stderrPath: string;
  send: (chunk: OutputChunk) => Promise<SendOutcome>;
  /** Upload at least this often while output grows; 1000 ms. */
  intervalMs?: number;
  /** Check file sizes this often (64 KiB waiting triggers an upload); 200 ms. */
  pollMs?: number;
  /** Bytes of a stream the executor keeps on disk: nothing past them is read before the final flush. */
  limitBytes?: number;
  /** Offsets the server is believed to hold already (0 for a new attempt). */
  initialOffsets?: Partial<Record<StreamName, number>>;
  onError?: (err: unknown) => void;
}

export class OutputStreamer {
  private readonly streams: StreamState[];
  private timer: NodeJS.Timeout | undefined;
  private busy: Promise<void> | undefined;
  private lastUpload = Date.now();
  private halted = false;
  /** finish() or halt() was called: no more periodic flushes. */
  private done = false;
  /** Set when the server said the attempt is not ours any more. */
  stale = false;

  constructor(private readonly options: OutputStreamerOptions) {
    this.streams = [
      new StreamState('stdout', options.stdoutPath, options.initialOffsets?.stdout ?? 0),
      new StreamState('stderr', options.stderrPath, options.initialOffsets?.stderr ?? 0),
    ];
  }

  private get limit(): number {
    return this.options.limitBytes ?? Number.POSITIVE_INFINITY;
  }

  /** Bytes the server holds per stream, as far as the streamer knows. */
  get offsets(): Record<StreamName, number> {
    return { stdout: this.streams[0]!.sent, stderr: this.streams[1]!.sent };
  }

  /** Starts the periodic uploads. */
  start(): void {
    if (this.timer || this.halted) return;
    this.timer = setInterval(() => this.tick(), this.options.pollMs ?? 200);
  }

  /** Stops the periodic uploads, waits for the one in flight, then uploads everything left (to EOF). */
  async finish(): Promise<void> {
    if (this.done) return;
    this.done = true;
    this.stopTimer();
    await this.busy;
    if (!this.halted) await this.runFlush(true);
    await this.close();
  }

  /** Stops uploading for good (stale attempt, agent giving up); waits for the request in flight. */
  async halt(): Promise<void> {
    this.halted = true;
    this.done = true;
    this.stopTimer();
    await this.busy;
    await this.close();
  }

  /** Uploads what is waiting now (for tests and the periodic timer). */
  flush(): Promise<void> {
    return this.runFlush(false);
  }

  private tick(): void {
    if (this.busy || this.done) return;
    void (async () => {
      const due = Date.now() - this.lastUpload >= (this.options.intervalMs ?? 1000);
      let wanted = false;
      for (const s of this.streams) {
        const waiting = visibleSize(await s.size(), false, this.limit) - s.sent;
        if (waiting >= EAGER_UPLOAD_BYTES || (due && waiting > 0)) wanted = true;
      }
      if (wanted && !this.busy && !this.done) await this.runFlush(false);
    })().catch((err) => this.options.onError?.(err));
  }

  private runFlush(final: boolean): Promise<void> {
    const previous = this.busy ?? Promise.resolve();
    const run = previous
      .then(async () => {
        if (this.halted || (this.done && !final)) return;
        for (const s of this.streams) await this.drain(s, final);
        this.lastUpload = Date.now();
      })
      .catch((err) => this.options.onError?.(err))
      .finally(() => {
        if (this.busy === run) this.busy = undefined;
      });
    this.busy = run;
    return run;
  }

  /** Uploads stream `s` up to the size it has now (a final flush: to its end, whole characters or not). */
  private async drain(s: StreamState, final: boolean): Promise<void> {
    const file = await s.handle();
    if (!file) return;
    const target = visibleSize((await file.stat()).size, final, this.limit);
    let mismatches = 0;
    while (!this.halted && !this.stale && s.sent < target) {
      const chunk = await readChunk(file, s.sent, final, this.limit);
      if (!chunk) return;
      const outcome = await this.options.send({ stream: s.name, ...chunk });
      switch (outcome.kind) {
        case 'ok':
          s.sent = chunk.offset + chunk.bytes;
          mismatches = 0;
          break;
        case 'mismatch':
          // The server already holds up to `expected`; a mismatch that does not move us forward twice in a
          // row would loop, so then the chunk is skipped.
          if (outcome.expected > s.sent || ++mismatches < 2) s.sent = outcome.expected;
          else s.sent = chunk.offset + chunk.bytes;
          break;
        case 'rejected':
          s.sent = chunk.offset + chunk.bytes;
          break;
        case 'stale':
          this.stale = true;
          return;
        case 'aborted':
          this.halted = true;
          return;
      }
    }
  }

  private stopTimer(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  private async close(): Promise<void> {
    for (const s of this.streams) {
      const file = s.file;
      s.file = undefined;
      await file?.close().catch(() => {});
    }
  }
}
