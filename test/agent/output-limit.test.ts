/**
 * CONDUCTOR_OUTPUT_LIMIT: the agent keeps at most that many bytes of each stream of a job on its disk (the
 * first ones), then a marker line saying that the rest was dropped; what it uploads is what it kept.
 */
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { DEFAULT_OUTPUT_LIMIT_BYTES, parseAgentArgs } from '../../agent/src/config.ts';
import { startJob } from '../../agent/src/executor.ts';
import type { Assignment } from '../../agent/src/protocol.ts';
import { agentBackends, useControlPlane } from './control-plane.ts';

const root = mkdtempSync(join(tmpdir(), 'conductor-output-limit-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const LIMIT = 10_000;
/** 3 MB on stdout in pieces, a last line, and a little on stderr (under the limit). */
const CHATTY = `for i in $(seq 30); do head -c 100000 /dev/zero | tr '\\0' x; done; echo; echo last-line; echo small >&2`;

describe('the output limit on the agent disk', () => {
  it('keeps the first CONDUCTOR_OUTPUT_LIMIT bytes of a stream and marks the cut', async () => {
    const assignment: Assignment = {
      job_id: 1,
      attempt: 1,
      name: 'chatty',
      script: CHATTY,
      cpus: 1,
      work_dir: null,
      environment: {},
      time_limit_s: null,
    };
    const job = startJob(assignment, { jobsDir: join(root, 'jobs'), outputLimitBytes: LIMIT });
    expect(await job.result).toMatchObject({ exit_code: '0:0', outcome: 'exited' });
    const stdout = readFileSync(job.stdoutPath, 'utf8');
    expect(stdout.slice(0, LIMIT)).toBe('x'.repeat(LIMIT));
    expect(stdout.slice(LIMIT)).toMatch(
      /^\n\[\.\.\. output truncated: this agent keeps the first 10000 bytes of a stream \(CONDUCTOR_OUTPUT_LIMIT\); at least \d+ more bytes were dropped \.\.\.\]\n$/,
    );
    expect(statSync(job.stdoutPath).size).toBeLessThan(LIMIT + 200);
    expect(readFileSync(job.stderrPath, 'utf8')).toBe('small\n');
  });

  it('reads CONDUCTOR_OUTPUT_LIMIT in bytes, KiB, MiB or GiB, 64 MiB by default', () => {
    expect(DEFAULT_OUTPUT_LIMIT_BYTES).toBe(64 * 1024 * 1024);
    expect(parseAgentArgs([], {})).toMatchObject({
      config: { outputLimitBytes: DEFAULT_OUTPUT_LIMIT_BYTES },
    });
    expect(parseAgentArgs([], { CONDUCTOR_OUTPUT_LIMIT: '20000' })).toMatchObject({
      config: { outputLimitBytes: 20_000 },
    });
    expect(parseAgentArgs([], { CONDUCTOR_OUTPUT_LIMIT: '512K' })).toMatchObject({
      config: { outputLimitBytes: 512 * 1024 },
    });
    expect(parseAgentArgs([], { CONDUCTOR_OUTPUT_LIMIT: '1G' })).toMatchObject({
      config: { outputLimitBytes: 1024 ** 3 },
    });
    for (const bad of ['0', '100', '-5', '1T', 'lots', '1.5M']) {
      expect(parseAgentArgs([], { CONDUCTOR_OUTPUT_LIMIT: bad })).toEqual({
        kind: 'error',
        message: `CONDUCTOR_OUTPUT_LIMIT must be a number of bytes of at least 1024, optionally with K, M or G (KiB, MiB, GiB), got ${JSON.stringify(bad)}`,
      });
    }
  });
});

const { pglite } = await agentBackends();

describe('the output limit through the control plane', () => {
  const { control, makeAgent } = useControlPlane(pglite, root);

  it('uploads what the agent kept, then the marker', async () => {
    const cp = control();
    const { agent } = makeAgent({ outputLimitBytes: LIMIT });
    await agent.start();
    const job = await cp.submit({ script: CHATTY, cpus: 1 });
    expect(await cp.finished(job.id)).toMatchObject({ state: 'COMPLETED', exit_code: '0:0' });
    const logs = await cp.logs(job.id);
    expect(logs.stdout.truncated).toBe(false);
    expect(logs.stdout.content.slice(0, LIMIT)).toBe('x'.repeat(LIMIT));
    expect(logs.stdout.content.slice(LIMIT)).toMatch(
      /^\n\[\.\.\. output truncated: this agent keeps the first 10000 bytes/,
    );
    expect(logs.stdout.bytes).toBe(Buffer.byteLength(logs.stdout.content));
    expect(logs.stderr.content).toBe('small\n');
  });
});
