/**
 * The agent's push channel (agent/src/agent.ts, spec: /api/v1/agents/channel) against a scripted control
 * plane that serves it with the `ws` package: while it is open no HTTP heartbeats and no long polls, pongs
 * count as heartbeats, a wake is one claim, a drop falls back to HTTP and reconnects within the window, a
 * refusal keeps HTTP, `register` re-registers and reconnects, `--no-channel` never opens one; and a thousand
 * channel clients dropped at once come back spread over the window.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { WebSocketServer } from 'ws';
import { Agent } from '../../agent/src/agent.ts';
import {
  CHANNEL_MAX_BACKOFF_MS,
  channelAbsentDelayMs,
  channelReconnectDelayMs,
  channelRefusal,
  parseChannelMessage,
} from '../../agent/src/channel.ts';
import { AgentApiError, AgentClient } from '../../agent/src/client.ts';
import { type AgentConfigInput, agentConfig, parseAgentArgs } from '../../agent/src/config.ts';
import { memoryLogger } from '../../agent/src/log.ts';
import type { Assignment, FinishRequest } from '../../agent/src/protocol.ts';
import type { WebSocket } from '../../agent/src/websocket.ts';
import { eventually } from '../support/agent-process.ts';
import { ScriptedControlPlane } from './scripted-control-plane.ts';

const root = mkdtempSync(join(tmpdir(), 'conductor-channel-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const OPEN_LINE = 'info Channel open: pushed assignments, heartbeats as pings';

const planes: ScriptedControlPlane[] = [];
const agents: Agent[] = [];
afterEach(async () => {
  await Promise.all(agents.splice(0).map((a) => a.stop()));
  await Promise.all(planes.splice(0).map((cp) => cp.close()));
});

async function plane(channel = true): Promise<ScriptedControlPlane> {
  const cp = await ScriptedControlPlane.start({ channel });
  planes.push(cp);
  return cp;
}

let n = 0;
function makeAgent(cp: ScriptedControlPlane, input: AgentConfigInput = {}) {
  const logger = memoryLogger();
  const id = ++n;
  const config = agentConfig({
    url: cp.url,
    nodeName: `chan-${id}`,
    cpus: 2,
    stateDir: join(root, `state-${id}`),
    heartbeatIntervalS: 1,
    claimWaitS: 2,
    channelReconnectWindowS: 1,
    ...input,
    timing: {
      registerBackoff: { initialMs: 50, maxMs: 200 },
      claimBackoff: { initialMs: 50, maxMs: 200 },
      reportBackoff: { initialMs: 50, maxMs: 200 },
      outputIntervalMs: 100,
      outputPollMs: 20,
      shutdownReportTimeoutMs: 2000,
      ...input.timing,
    },
  });
  const agent = new Agent(config, { logger });
  agents.push(agent);
  return { agent, logger };
}

let jobIds = 1000;
function job(script: string, extra: Partial<Assignment> = {}): Assignment {
  return {
    job_id: ++jobIds,
    attempt: 1,
    name: `job-${jobIds}`,
    script,
    cpus: 1,
    work_dir: null,
    environment: {},
    time_limit_s: null,
    ...extra,
  };
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Starts `agent` and waits for its channel and the claim it makes when the channel opens. */
async function startOnChannel(cp: ScriptedControlPlane, agent: Agent, logger: { lines: string[] }) {
  await agent.start();
  await eventually(() => logger.lines.includes(OPEN_LINE), { what: 'the channel to open' });
  await eventually(() => cp.claims().length >= 1, { what: 'the catch-up claim' });
  // Settled: the catch-up claim answered (the scripted claim answers at once with wait_s 0).
  await sleep(200);
}

describe('Agent on the push channel', () => {
  it('sends no HTTP heartbeat and makes no long poll while connected; pongs keep it alive', async () => {
    const cp = await plane();
    const { agent, logger } = makeAgent(cp);
    await startOnChannel(cp, agent, logger);
    expect(cp.channels).toHaveLength(1);
    expect(cp.channels[0]).toMatchObject({ workerId: agent.workerId, session: 'scripted' });
    const mark = Date.now();
    const pingsBefore = cp.channels[0]!.pings;
    const beatsBefore = logger.lines.filter((l) => l === `info Heartbeat sent: ${agent.workerId}`).length;
    await sleep(3_500); // three and a half heartbeat intervals

    expect(cp.since('/heartbeat', mark)).toEqual([]);
    expect(cp.since('/claim', mark)).toEqual([]);
    // Every claim it made was one answered at once (the catch-up), none a long poll.
    expect(cp.claims().map((c) => c.wait_s)).toEqual([0]);
    expect(cp.channels[0]!.pings - pingsBefore).toBeGreaterThanOrEqual(3);
    // Each pong is an accepted heartbeat (the contract's log line).
    const beats = logger.lines.filter((l) => l === `info Heartbeat sent: ${agent.workerId}`).length;
    expect(beats - beatsBefore).toBeGreaterThanOrEqual(3);
    // Still the same connection, and nothing went wrong.
    expect(cp.channels).toHaveLength(1);
    expect(cp.channels[0]!.closed).toBeUndefined();
    expect(logger.lines.filter((l) => l.startsWith('warn') || l.startsWith('error'))).toEqual([]);
  });

  it('counts pongs as contact: a requeue job outlives the disconnect limit with no HTTP heartbeat', async () => {
    const cp = await plane();
    const { agent, logger } = makeAgent(cp, { stopAfterDisconnectS: 2 });
    await startOnChannel(cp, agent, logger);
    const j = job('sleep 3.5; echo done', { requeue: true });
    cp.assign(j);
    cp.push({ type: 'wake' });
    const finish = await cp.finish(j.job_id);
    expect(finish).toMatchObject({ outcome: 'exited', exit_code: '0:0' });
    expect(cp.requests.filter((r) => r.path === '/heartbeat')).toEqual([]);
  });

  it('drops a channel whose pongs stopped after 2 intervals, and heartbeats over HTTP at once', async () => {
    const cp = await plane();
    const { agent, logger } = makeAgent(cp, { channelReconnectWindowS: 30 });
    await startOnChannel(cp, agent, logger);
    cp.answerPings = false;
    const mark = Date.now();
    await eventually(() => cp.channels[0]!.closed, {
      what: 'the agent to close the channel',
      timeoutMs: 10_000,
    });
    expect(cp.channels[0]!.closed!.at - mark).toBeGreaterThanOrEqual(1_500);
    const dropped = logger.lines.find((l) => l.startsWith('warn Channel dropped'));
    expect(dropped).toMatch(
      /^warn Channel dropped \(no pong for 2 s\): HTTP heartbeats and long polls until it reconnects in \d+\.\d s$/,
    );
    await eventually(() => cp.since('/heartbeat', mark).length > 0, { what: 'an HTTP heartbeat' });
    await eventually(() => cp.since('/claim', mark).some((r) => (r.body as { wait_s: number }).wait_s > 0), {
      what: 'a long poll',
    });
  });

  it('claims once on a wake, and coalesces wakes that come during a claim into one more', async () => {
    const cp = await plane();
    const { agent, logger } = makeAgent(cp);
    await startOnChannel(cp, agent, logger);
    const before = cp.claims().length;

    const j = job('echo pushed');
    cp.assign(j);
    cp.push({ type: 'wake' });
    const finish = await cp.finish(j.job_id);
    expect(finish).toMatchObject({ outcome: 'exited', exit_code: '0:0' });
    expect(cp.output(j.job_id, 'stdout')).toBe('pushed\n');
    await sleep(1_000);
    expect(cp.claims().length).toBe(before + 1);
    expect(cp.claims().at(-1)!.wait_s).toBe(0);

    // Three wakes while a claim is held: one more claim after it, not three.
    const release = cp.holdClaims();
    cp.push({ type: 'wake' });
    await eventually(() => cp.claims().length === before + 2, { what: 'the held claim' });
    cp.push({ type: 'wake' });
    cp.push({ type: 'wake' });
    cp.push({ type: 'wake' });
    await sleep(300);
    expect(cp.claims().length).toBe(before + 2);
    release();
    await eventually(() => cp.claims().length === before + 3, { what: 'the coalesced claim' });
    await sleep(1_000);
    expect(cp.claims().length).toBe(before + 3);
  });

  it('starts the assignments a wake carries without a claim, once each however often they come, and reports them started with its session', async () => {
    const cp = await plane();
    const { agent, logger } = makeAgent(cp);
    await startOnChannel(cp, agent, logger);
    const claimsBefore = cp.claims().length;
    const a = job('echo pushed-a');
    const b = job('sleep 1; echo pushed-b');
    cp.push({ type: 'wake', jobs: [a, b] });
    expect(await cp.finish(a.job_id)).toMatchObject({ outcome: 'exited', exit_code: '0:0' });
    expect(cp.output(a.job_id, 'stdout')).toBe('pushed-a\n');
    // b runs: pushed again, and handed to a claim too (a bare wake): neither starts it a second time.
    cp.push({ type: 'wake', jobs: [b] });
    cp.assign(b);
    cp.push({ type: 'wake' });
    expect(await cp.finish(b.job_id)).toMatchObject({ outcome: 'exited', exit_code: '0:0' });
    expect(cp.output(b.job_id, 'stdout')).toBe('pushed-b\n');
    await sleep(500);
    // One claim: the bare wake's; the pushed jobs asked none.
    expect(cp.claims().length).toBe(claimsBefore + 1);
    for (const j of [a, b]) {
      const started = cp.requests.filter((r) => r.path === `/jobs/${j.job_id}/started`);
      expect(started.map((r) => r.body)).toEqual([
        { worker_id: agent.workerId, attempt: 1, session: 'scripted' },
      ]);
      expect(cp.requests.filter((r) => r.path === `/jobs/${j.job_id}/finish`)).toHaveLength(1);
    }
    // A claimed assignment's report carries no session (older servers refuse unknown fields).
    const c = job('true');
    cp.assign(c);
    cp.push({ type: 'wake' });
    await cp.finish(c.job_id);
    expect(cp.requests.find((r) => r.path === `/jobs/${c.job_id}/started`)?.body).toEqual({
      worker_id: agent.workerId,
      attempt: 1,
    });
  });

  it('stops a pushed job whose started report is answered with another state than RUNNING (cancelled before it started)', async () => {
    const cp = await plane();
    const { agent, logger } = makeAgent(cp);
    await startOnChannel(cp, agent, logger);
    cp.startedState = 'CANCELLED';
    const j = job('sleep 30');
    cp.push({ type: 'wake', jobs: [j] });
    expect(await cp.finish(j.job_id)).toMatchObject({ outcome: 'cancelled' });
    expect(logger.lines).toContain(
      `info Cancelling job ${j.job_id}.1: job is CANCELLED on the control plane`,
    );
    expect(agent.runningJobs()).toEqual([]);
  });

  it('takes a drain from the claim answer status', async () => {
    const cp = await plane();
    const { agent, logger } = makeAgent(cp);
    await startOnChannel(cp, agent, logger);
    cp.claimStatus = 'draining';
    cp.push({ type: 'wake' });
    await eventually(() => logger.lines.includes('info Worker status: draining'), {
      what: 'the status line',
    });
  });

  it('reconnects within the window when the server closes a channel that worked, sending nothing over HTTP meanwhile; HTTP when reconnecting fails', {
    timeout: 60_000,
  }, async () => {
    const cp = await plane();
    const { agent, logger } = makeAgent(cp, { channelReconnectWindowS: 1 });
    await startOnChannel(cp, agent, logger);
    const mark = Date.now();
    cp.dropChannels(1012, 'restarting');
    await eventually(() => logger.lines.some((l) => l.startsWith('warn Channel dropped')), {
      what: 'the drop',
    });
    const dropped = logger.lines.find((l) => l.startsWith('warn Channel dropped'))!;
    expect(dropped).toMatch(
      /^warn Channel dropped \(closed, code 1012 restarting\): reconnecting in (0\.\d|1\.0) s \(HTTP heartbeats and long polls if that fails\)$/,
    );
    await eventually(() => cp.channels.length === 2, { what: 'the reconnection', timeoutMs: 10_000 });
    expect(cp.channels[1]!.session).toBe('scripted');
    expect(cp.channels[1]!.openedAt - mark).toBeLessThan(5_000); // the window is 1 s
    // Nothing over HTTP between the drop and the reconnection (a deploy's thousand agents would all send at
    // once); the reconnection catches up with one claim.
    expect(cp.since('/heartbeat', mark)).toEqual([]);
    expect(cp.since('/claim', mark).every((r) => (r.body as { wait_s: number }).wait_s === 0)).toBe(true);

    // The long polls resume during an outage that lasts: the next reconnection is refused for a while.
    cp.refuseChannel = () => ({
      status: 503,
      body: { error: { code: 'unavailable', message: 'restarting' } },
    });
    const mark2 = Date.now();
    cp.dropChannels(1001, 'going away');
    await eventually(() => cp.since('/claim', mark2).some((r) => (r.body as { wait_s: number }).wait_s > 0), {
      what: 'a long poll',
    });
    await eventually(() => cp.since('/heartbeat', mark2).length >= 2, { what: 'HTTP heartbeats' });
    const j = job('echo over http');
    cp.assign(j);
    expect(await cp.finish(j.job_id)).toMatchObject({ outcome: 'exited' });
    // Back: it reconnects (back-off after the refusal), and HTTP stops.
    cp.refuseChannel = undefined;
    await eventually(() => cp.openChannels().length === 1, { what: 'the third channel', timeoutMs: 30_000 });
    await sleep(2_500); // a long poll in flight when it opened ends (the scripted wait is 2 s)
    const quiet = Date.now();
    await sleep(2_500);
    expect(cp.since('/heartbeat', quiet)).toEqual([]);
    expect(cp.since('/claim', quiet)).toEqual([]);
  });

  it('stays on HTTP when the server has no channel (404 not_found), quietly, and still runs jobs', async () => {
    const cp = await plane(false);
    const { agent, logger } = makeAgent(cp);
    await agent.start();
    const j = job('echo http only');
    cp.assign(j);
    expect(await cp.finish(j.job_id)).toMatchObject({ outcome: 'exited', exit_code: '0:0' });
    await eventually(() => cp.requests.filter((r) => r.path === '/heartbeat').length >= 2, {
      what: 'HTTP heartbeats',
    });
    expect(cp.claims().some((c) => (c.wait_s ?? 0) > 0)).toBe(true);
    // Asked once; the next try is minutes away.
    expect(cp.requests.filter((r) => r.path.startsWith('/channel'))).toHaveLength(1);
    expect(
      logger.lines.some((l) =>
        l.startsWith('debug No channel at the control plane (/channel: 404 not_found'),
      ),
    ).toBe(true);
    expect(logger.lines.filter((l) => l.startsWith('warn') || l.startsWith('error'))).toEqual([]);
    expect(logger.lines).not.toContain(OPEN_LINE);
  });

  it('re-registers when the channel refuses the session (404 unknown_worker), then connects with the new one', async () => {
    const cp = await plane();
    cp.refuseChannel = ({ session }) =>
      session === 'scripted'
        ? { status: 404, body: { error: { code: 'unknown_worker', message: 'Unknown worker' } } }
        : undefined;
    const { agent, logger } = makeAgent(cp);
    await agent.start();
    await eventually(() => logger.lines.includes(OPEN_LINE), { what: 'the channel to open' });
    expect(cp.registrations()).toHaveLength(2);
    expect(cp.registrations()[1]).toMatchObject({ previous_session: 'scripted' });
    expect(cp.channels.map((c) => c.session)).toEqual(['scripted-2']);
    expect(agent.session).toBe('scripted-2');
  });

  it('re-registers on {"type":"register"} and reconnects with the new session', async () => {
    const cp = await plane();
    const { agent, logger } = makeAgent(cp);
    await startOnChannel(cp, agent, logger);
    cp.push({ type: 'register' });
    await eventually(() => cp.channels.length === 2 && cp.openChannels().length === 1, {
      what: 'the channel of the new session',
    });
    expect(cp.registrations()).toHaveLength(2);
    expect(cp.registrations()[1]).toMatchObject({ worker_id: agent.workerId, previous_session: 'scripted' });
    expect(cp.channels[1]!.session).toBe('scripted-2');
    expect(agent.session).toBe('scripted-2');
    // The agent closed the old one itself, cleanly.
    await eventually(() => cp.channels[0]!.closed, { what: 'the old channel closed' });
    expect(cp.channels[0]!.closed).toMatchObject({ code: 1000 });
    // No drop, no HTTP heartbeats meanwhile.
    expect(logger.lines.some((l) => l.startsWith('warn Channel dropped'))).toBe(false);
    expect(cp.requests.filter((r) => r.path === '/heartbeat')).toEqual([]);
    expect(logger.lines.filter((l) => l === OPEN_LINE)).toHaveLength(2);
  });

  it('with --no-channel (channel: false) never opens one', async () => {
    const cp = await plane();
    const { agent, logger } = makeAgent(cp, { channel: false });
    await agent.start();
    const j = job('echo no channel');
    cp.assign(j);
    expect(await cp.finish(j.job_id)).toMatchObject({ outcome: 'exited' });
    await eventually(() => cp.requests.filter((r) => r.path === '/heartbeat').length >= 2, {
      what: 'HTTP heartbeats',
    });
    expect(cp.requests.filter((r) => r.path.startsWith('/channel'))).toEqual([]);
    expect(cp.channels).toEqual([]);
    expect(logger.lines).not.toContain(OPEN_LINE);
  });

  it('closes the channel cleanly on stop, unregisters, and tries no more', async () => {
    const cp = await plane();
    const { agent, logger } = makeAgent(cp);
    await startOnChannel(cp, agent, logger);
    await agent.stop();
    expect(agent.state).toBe('stopped');
    expect(cp.channels[0]!.closed).toMatchObject({ code: 1000, reason: 'agent stopping' });
    expect(cp.requests.at(-1)!.path).toBe('/unregister');
    const count = cp.requests.length;
    await sleep(1_500); // past the reconnect window
    expect(cp.requests.length).toBe(count);
    expect(cp.channels).toHaveLength(1);
  });

  it('stopping with a drain tells the server over HTTP (the channel has no such message)', async () => {
    const cp = await plane();
    const { agent, logger } = makeAgent(cp);
    await startOnChannel(cp, agent, logger);
    const j = job('sleep 1; echo drained');
    cp.assign(j);
    cp.push({ type: 'wake' });
    await eventually(() => agent.runningJobs().length === 1, { what: 'the job to run' });
    await agent.stop({ drain: true });
    const draining = cp.requests.filter(
      (r) => r.path === '/heartbeat' && (r.body as { status?: string }).status === 'draining',
    );
    expect(draining.length).toBeGreaterThanOrEqual(1);
    expect(((await cp.finish(j.job_id)) as FinishRequest).outcome).toBe('exited');
  });
});

describe('channel options', () => {
  it('--no-channel and CONDUCTOR_CHANNEL=off turn it off; the reconnect window is read in seconds', () => {
    const on = parseAgentArgs([], {});
    expect(on.kind === 'run' && on.config).toMatchObject({ channel: true, channelReconnectWindowS: 10 });
    const flag = parseAgentArgs(['--no-channel', '--channel-reconnect-window', '2.5'], {});
    expect(flag.kind === 'run' && flag.config).toMatchObject({
      channel: false,
      channelReconnectWindowS: 2.5,
    });
    const env = parseAgentArgs([], { CONDUCTOR_CHANNEL: 'off', CONDUCTOR_CHANNEL_RECONNECT_WINDOW: '30' });
    expect(env.kind === 'run' && env.config).toMatchObject({ channel: false, channelReconnectWindowS: 30 });
    expect(parseAgentArgs([], { CONDUCTOR_CHANNEL: 'maybe' })).toMatchObject({
      kind: 'error',
      message: expect.stringContaining('CONDUCTOR_CHANNEL must be 1 or 0'),
    });
    expect(parseAgentArgs([], { CONDUCTOR_CHANNEL_RECONNECT_WINDOW: '-1' })).toMatchObject({
      kind: 'error',
      message: expect.stringContaining('CONDUCTOR_CHANNEL_RECONNECT_WINDOW must be a number of seconds'),
    });
  });

  it('reconnect delays: uniform in the window first, then full-jitter back-off up to 5 minutes', () => {
    expect(channelReconnectDelayMs(0, 10, () => 0)).toBe(0);
    expect(channelReconnectDelayMs(0, 10, () => 0.999)).toBe(9_990);
    expect(channelReconnectDelayMs(1, 10, () => 0.999)).toBe(19_980);
    expect(channelReconnectDelayMs(3, 10, () => 0.5)).toBe(40_000);
    expect(channelReconnectDelayMs(30, 10, () => 1)).toBe(CHANNEL_MAX_BACKOFF_MS);
    expect(channelReconnectDelayMs(2, 0, () => 1)).toBe(4_000); // a zero window still backs off
    expect(channelAbsentDelayMs(() => 0)).toBe(240_000);
    expect(channelAbsentDelayMs(() => 1)).toBe(360_000);
  });

  it('reads a wake with assignments, and takes one whose jobs are not assignments as a bare wake', () => {
    const a = job('true');
    expect(parseChannelMessage(JSON.stringify({ type: 'wake', jobs: [a] }))).toEqual({
      type: 'wake',
      jobs: [a],
    });
    expect(parseChannelMessage('{"type":"wake"}')).toEqual({ type: 'wake' });
    expect(parseChannelMessage('{"type":"wake","jobs":[]}')).toEqual({ type: 'wake' });
    expect(parseChannelMessage('{"type":"wake","jobs":[{"job_id":"1","attempt":1}]}')).toEqual({
      type: 'wake',
    });
    expect(parseChannelMessage(JSON.stringify({ type: 'wake', jobs: [a, { job_id: 2 }] }))).toEqual({
      type: 'wake',
    });
    expect(parseChannelMessage('{"type":"register","jobs":[]}')).toEqual({ type: 'register' });
    expect(parseChannelMessage('{"type":"other"}')).toBeUndefined();
    expect(parseChannelMessage('wake')).toBeUndefined();
  });

  it('sorts refusals: re-register, retry with back-off, or no channel here', () => {
    expect(channelRefusal(new AgentApiError(404, 'unknown_worker', ''))).toBe('register');
    expect(channelRefusal(new AgentApiError(409, 'session_superseded', ''))).toBe('register');
    expect(channelRefusal(new AgentApiError(404, 'not_found', ''))).toBe('absent');
    expect(channelRefusal(new AgentApiError(426, 'http_426', ''))).toBe('absent');
    expect(channelRefusal(new AgentApiError(400, 'http_400', ''))).toBe('absent');
    expect(channelRefusal(new AgentApiError(401, 'unauthorized', ''))).toBe('retry');
    expect(channelRefusal(new AgentApiError(403, 'worker_not_yours', ''))).toBe('retry');
    expect(channelRefusal(new AgentApiError(503, 'http_503', ''))).toBe('retry');
    expect(channelRefusal(new AgentApiError(0, 'network_error', ''))).toBe('retry');
  });
});

describe('a thousand channel clients dropped at once', () => {
  it('reconnect spread over the window, every one of them', { timeout: 120_000 }, async () => {
    const CLIENTS = 1000;
    const WINDOW_S = 5;
    const wss = new WebSocketServer({ noServer: true });
    const connects: { worker: string; at: number }[] = [];
    const raw: Socket[] = [];
    const server = createServer((_req, res) => res.writeHead(404).end());
    server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
      raw.push(socket);
      const worker = new URL(req.url ?? '/', 'http://x').searchParams.get('worker_id') ?? '';
      wss.handleUpgrade(req, socket, head, (ws) => {
        connects.push({ worker, at: Date.now() });
        ws.on('message', (data) => {
          if (data.toString() === 'ping') ws.send('pong');
        });
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', 2048, resolve));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const open = new Map<string, WebSocket>();
    /** When each client saw its channel close (its delay starts there). */
    const closedAt = new Map<string, number>();
    let stopping = false;
    try {
      // Each client: the agent's client and the agent's delay on a drop (a channel that worked: 0 failures).
      const clients = Array.from({ length: CLIENTS }, (_, i) => ({
        id: `w${i}`,
        client: new AgentClient({ url, requestTimeoutMs: 30_000 }),
      }));
      const connect = async (c: (typeof clients)[number]): Promise<void> => {
        const ws = await c.client.openChannel({ worker_id: c.id, session: 's' });
        open.set(c.id, ws);
        ws.on('close', () => {
          open.delete(c.id);
          closedAt.set(c.id, Date.now());
          if (stopping) return;
          setTimeout(() => void connect(c), channelReconnectDelayMs(0, WINDOW_S));
        });
      };
      for (let i = 0; i < CLIENTS; i += 100) await Promise.all(clients.slice(i, i + 100).map(connect));
      expect(open.size).toBe(CLIENTS);
      expect(new Set(connects.map((c) => c.worker)).size).toBe(CLIENTS);

      // Every socket dropped at once, as on a deploy.
      connects.length = 0;
      for (const ws of wss.clients) ws.close(1012, 'restarting');
      await eventually(() => connects.length === CLIENTS, {
        what: 'every client back',
        timeoutMs: 60_000,
        intervalMs: 250,
      });
      expect(new Set(connects.map((c) => c.worker)).size).toBe(CLIENTS);
      await eventually(() => open.size === CLIENTS, { what: 'every client open' });

      // From each client's drop to the server seeing it back: spread over the window. Per one-second bucket,
      // none holds more than twice the mean, none less than half of it.
      const buckets = Array.from({ length: WINDOW_S }, () => 0);
      let late = 0;
      for (const { worker, at } of connects) {
        const b = Math.floor((at - closedAt.get(worker)!) / 1000);
        if (b < WINDOW_S) buckets[b]!++;
        else late++;
      }
      const mean = CLIENTS / WINDOW_S;
      // Connecting takes a little: on a loaded machine a few land just past the window.
      expect(late).toBeLessThan(CLIENTS * 0.05);
      for (const count of buckets) {
        expect(count).toBeLessThanOrEqual(2 * mean);
        expect(count).toBeGreaterThanOrEqual(mean / 2);
      }
    } finally {
      stopping = true;
      for (const ws of open.values()) ws.terminate();
      for (const socket of raw) socket.destroy();
      wss.close();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });
});
