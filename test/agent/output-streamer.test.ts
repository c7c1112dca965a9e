import { appendFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { AgentClient } from '../../agent/src/client.ts';
import { DEFAULT_TIMING } from '../../agent/src/config.ts';
import { deliver, type JobRunnerDeps } from '../../agent/src/job-runner.ts';
import { silentLogger } from '../../agent/src/log.ts';
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
import { eventually } from '../support/agent-process.ts';
import { agentBackends, agentTestConfig, ControlPlane } from './control-plane.ts';

const { all } = await agentBackends();
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

function files(name: string) {
  const stdoutPath = join(root, `${name}.out`);
  const stderrPath = join(root, `${name}.err`);
  writeFileSync(stdoutPath, '');
  writeFileSync(stderrPath, '');
  return { stdoutPath, stderrPath };
}

describe.each(all)('OutputStreamer against the real control plane on $name', (factory) => {
  const workerId = 'streamer-node';
  let cp: ControlPlane;
  let client: AgentClient;
  let session: string;

  beforeAll(async () => {
    cp = await ControlPlane.start(factory, agentTestConfig({ workerTtlSeconds: 600 }));
    client = new AgentClient({ url: cp.directUrl });
    ({ session } = await client.register({ worker_id: workerId, hostname: 'streamer-host', cpus: 64 }));
  });
  afterEach(() => cp.checkInvariants());
  afterAll(async () => {
    await cp?.close();
  });

  /** A job placed on the worker, claimed and reported started through the agent protocol. */
  async function runningJob(): Promise<number> {
    const { id } = await cp.submit({ script: 'true', cpus: 1 });
    await eventually(async () => (await cp.job(id)).state === 'RUNNING', { what: `job ${id} placed` });
    const claim = await client.claim({ worker_id: workerId, session, wait_s: 0 });
    expect(claim.jobs.map((j) => j.job_id)).toContain(id);
    await client.started(id, { worker_id: workerId, attempt: 1 });
    return id;
  }

  /** Sends a job's chunks to the real server as the agent's JobRunner does (deliver, then its outcome). */
  function sender(jobId: number) {
    const calls: OutputChunk[] = [];
    const deps: JobRunnerDeps = {
      client,
      logger: silentLogger,
      timing: DEFAULT_TIMING,
      workerId: () => workerId,
      session: () => undefined,
      reportSignal: new AbortController().signal,
      onSessionLost: () => {},
    };
    const send = async (chunk: OutputChunk): Promise<SendOutcome> => {
      calls.push(chunk);
      const delivery = await deliver(deps, 'output', (signal) =>
        client.output(jobId, { worker_id: workerId, attempt: 1, ...chunk }, { signal }),
      );
      switch (delivery.kind) {
        case 'ok':
          return { kind: 'ok' };
        case 'mismatch':
          return { kind: 'mismatch', expected: delivery.expected };
        case 'stale':
        case 'aborted':
        case 'rejected':
          return { kind: delivery.kind };
      }
    };
    return { calls, send };
  }

  it('uploads a file written in pieces that split multi-byte characters', async () => {
    const id = await runningJob();
    const paths = files(`split-${factory.name}`);
    const server = sender(id);
    const streamer = new OutputStreamer({ ...paths, send: server.send });
    const bytes = enc(TEXT.repeat(3));
    // Write 5 bytes at a time (cutting characters) and flush in between, as the periodic timer would.
    for (let i = 0; i < bytes.length; i += 5) {
      appendFileSync(paths.stdoutPath, bytes.subarray(i, i + 5));
      await streamer.flush();
    }
    appendFileSync(paths.stderrPath, 'an error\n');
    await streamer.finish();
    const logs = await cp.logs(id);
    expect(logs.stdout).toMatchObject({ content: TEXT.repeat(3), bytes: bytes.length, truncated: false });
    expect(logs.stderr.content).toBe('an error\n');
    expect(server.calls.every((c) => !c.data.includes('\uFFFD'))).toBe(true);
    expect(server.calls.every((c) => enc(c.data).length === c.bytes)).toBe(true);
  });

  it('sends an incomplete trailing character in the final flush', async () => {
    const id = await runningJob();
    const paths = files(`final-${factory.name}`);
    appendFileSync(paths.stdoutPath, Buffer.concat([enc('ok '), enc('€').subarray(0, 2)]));
    const streamer = new OutputStreamer({ ...paths, send: sender(id).send });
    await streamer.flush();
    expect((await cp.logs(id)).stdout).toMatchObject({ content: 'ok ', bytes: 3 });
    await streamer.finish();
    expect((await cp.logs(id)).stdout).toMatchObject({ content: 'ok \uFFFD', bytes: 5 });
  });

  it('skips ahead to the last 1 MiB and sends chunks of at most 256 KiB', async () => {
    const id = await runningJob();
    const paths = files(`big-${factory.name}`);
    const line = `${'x'.repeat(63)}é\n`; // 66 bytes, multi-byte near every boundary
    const total = Math.ceil((3.5 * MAX_BACKLOG_BYTES) / 66);
    writeFileSync(paths.stdoutPath, line.repeat(total));
    const size = total * 66;
    const server = sender(id);
    const streamer = new OutputStreamer({ ...paths, send: server.send });
    await streamer.finish();
    expect(server.calls.every((c) => c.bytes <= MAX_CHUNK_BYTES)).toBe(true);
    const first = server.calls[0]!;
    expect(first.offset).toBeGreaterThanOrEqual(size - MAX_BACKLOG_BYTES);
    expect(first.offset).toBeLessThan(size - MAX_BACKLOG_BYTES + 4);
    const sent = server.calls.reduce((n, c) => n + c.bytes, 0);
    expect(sent).toBeLessThanOrEqual(MAX_BACKLOG_BYTES);
    // The server marks the one gap, counts every byte the job wrote, and keeps the tail.
    const { stdout } = (await cp.logs(id)) as {
      stdout: { content: string; bytes: number; truncated: boolean };
    };
    expect(stdout.bytes).toBe(size);
    expect(stdout.truncated).toBe(true);
    // The API says the head is gone (a first line), then comes the gap marker the agent's skip left.
    const marker = `\n[... ${first.offset} bytes of output skipped ...]\n`;
    expect(stdout.content).toMatch(/^\[\.\.\. output truncated: [^\n]*\]\n/);
    expect(stdout.content.slice(stdout.content.indexOf('\n') + 1).startsWith(marker)).toBe(true);
    expect(stdout.content.split('bytes of output skipped')).toHaveLength(2);
    expect(stdout.content.endsWith(line)).toBe(true);
    expect(stdout.content.includes('\uFFFD')).toBe(false);
  });

  it('continues from the offset the server expects after a mismatch', async () => {
    const id = await runningJob();
    const paths = files(`mismatch-${factory.name}`);
    writeFileSync(paths.stdoutPath, 'first part|second part\n');
    // The server got 'first part|' from a previous run of the agent.
    await client.output(id, {
      worker_id: workerId,
      attempt: 1,
      stream: 'stdout',
      offset: 0,
      data: 'first part|',
      bytes: 11,
    });
    const server = sender(id);
    const streamer = new OutputStreamer({ ...paths, send: server.send });
    await streamer.finish();
    expect(server.calls[0]?.offset).toBe(0);
    expect(server.calls[1]?.offset).toBe(11);
    expect((await cp.logs(id)).stdout).toMatchObject({ content: 'first part|second part\n', bytes: 23 });
  });

  it('uploads on its own timer while the file grows', async () => {
    const id = await runningJob();
    const paths = files(`timer-${factory.name}`);
    const streamer = new OutputStreamer({ ...paths, send: sender(id).send, intervalMs: 100, pollMs: 20 });
    streamer.start();
    appendFileSync(paths.stdoutPath, 'tick\n');
    await eventually(async () => (await cp.logs(id)).stdout.content === 'tick\n', {
      timeoutMs: 3000,
      what: 'the periodic upload',
    });
    // 64 KiB of new output goes out without waiting for the interval.
    const eagerId = await runningJob();
    const eager = sender(eagerId);
    const eagerPaths = files(`eager-${factory.name}`);
    const slow = new OutputStreamer({ ...eagerPaths, send: eager.send, intervalMs: 60_000, pollMs: 20 });
    slow.start();
    await new Promise((r) => setTimeout(r, 50));
    const before = eager.calls.length;
    appendFileSync(eagerPaths.stdoutPath, 'y'.repeat(70 * 1024));
    await eventually(async () => (await cp.logs(eagerId)).stdout.bytes === 70 * 1024, {
      timeoutMs: 3000,
      what: 'the eager upload',
    });
    expect(eager.calls.length).toBeGreaterThan(before);
    await streamer.finish();
    await slow.finish();
  });

  it('stops when the attempt is stale', async () => {
    const id = await runningJob();
    // The attempt already ended on the server: its output is refused with 409 stale_assignment.
    await client.finish(id, { worker_id: workerId, attempt: 1, exit_code: '0:0', outcome: 'exited' });
    const paths = files(`stale-${factory.name}`);
    writeFileSync(paths.stdoutPath, 'data\n');
    const server = sender(id);
    const streamer = new OutputStreamer({ ...paths, send: server.send });
    await streamer.finish();
    expect(streamer.stale).toBe(true);
    expect(server.calls).toHaveLength(1);
    expect((await cp.logs(id)).stdout.content).toBe('');
  });
});
