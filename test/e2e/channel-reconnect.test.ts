import { execFileSync } from 'node:child_process';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { channelReconnectDelayMs } from '../../agent/src/channel.ts';
import { eventually } from '../support/agent-process.ts';
import { createPostgresDatabase, type TestDatabase } from '../support/databases.ts';
import { freePort, ServerProcess } from '../support/server-process.ts';
import { serviceAvailable } from '../support/services.ts';

/**
 * A thousand agents on the real Node hub when it restarts (a deploy: every socket drops at once). Each client
 * reconnects as the agent does (the agent's own delay function: uniform over the window, then full-jitter
 * back-off while the server is still away). Every one comes back on the channel with its session, no worker
 * is lost, and the connection attempts are spread over the window instead of arriving in one instant.
 */
const available = (await serviceAvailable('postgres')) && (await serviceAvailable('redis'));
const REDIS_DB = '7';
const AGENTS = 1000;
const WINDOW_S = 5;

interface Client {
  worker_id: string;
  session: string;
  token: string;
  socket?: WebSocket;
  failures: number;
  /** Connection attempts after the drop (ms). */
  attempts: number[];
  back?: number;
}

describe.runIf(available)('a thousand agents reconnecting to the Node hub after a restart', () => {
  let database: TestDatabase;
  let server: ServerProcess;
  let port: number;
  let redis: Redis;
  const clients: Client[] = [];
  const psql = (statement: string) =>
    execFileSync('psql', [database.url!, '-Atc', statement], { encoding: 'utf8' }).trim();
  const env = () => ({
    DATABASE_URL: database.url!,
    REDIS_URL: `redis://127.0.0.1:6379/${REDIS_DB}`,
    CONDUCTOR_EMBEDDED_AGENT: '0',
  });

  beforeAll(async () => {
    database = await createPostgresDatabase();
    redis = new Redis(`redis://127.0.0.1:6379/${REDIS_DB}`);
    await redis.flushdb();
    port = await freePort();
    server = new ServerProcess(port, env());
    await server.ready();
  });
  afterAll(async () => {
    for (const client of clients) client.socket?.terminate();
    await server?.stop();
    await redis?.flushdb();
    redis?.disconnect();
    await database?.close();
  });

  const open = (client: Client): Promise<WebSocket | null> =>
    new Promise((resolve) => {
      const url = `ws://127.0.0.1:${port}/api/v1/agents/channel?worker_id=${client.worker_id}&session=${client.session}`;
      const socket = new WebSocket(url, { headers: { authorization: `Bearer ${client.token}` } });
      socket.once('open', () => resolve(socket));
      socket.once('unexpected-response', () => resolve(null));
      socket.once('error', () => resolve(null));
    });

  /** As the agent: after a drop, tries after its delay, then backs off while the server is away. */
  const reconnect = (client: Client, droppedAt: number) => {
    const delay = channelReconnectDelayMs(client.failures, WINDOW_S);
    setTimeout(async () => {
      client.attempts.push(Date.now() - droppedAt);
      const socket = await open(client);
      if (!socket) {
        client.failures++;
        reconnect(client, droppedAt);
        return;
      }
      client.failures = 0;
      client.socket = socket;
      client.back = Date.now() - droppedAt;
    }, delay);
  };

  it('every one comes back, spread over the window, and no worker is lost', {
    timeout: 240_000,
  }, async () => {
    const base = `http://127.0.0.1:${port}`;
    for (let batch = 0; batch < AGENTS; batch += 50) {
      await Promise.all(
        Array.from({ length: Math.min(50, AGENTS - batch) }, async (_, i) => {
          const id = `fleet-${String(batch + i).padStart(4, '0')}`;
          const response = await fetch(`${base}/api/v1/agents/register`, {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: JSON.stringify({ worker_id: id, hostname: id, cpus: 1 }),
          });
          expect(response.status).toBe(200);
          const body = (await response.json()) as { session: string; token: string };
          const client: Client = {
            worker_id: id,
            session: body.session,
            token: body.token,
            failures: 0,
            attempts: [],
          };
          client.socket = (await open(client)) ?? undefined;
          expect(client.socket).toBeDefined();
          clients.push(client);
        }),
      );
    }
    expect(psql(`SELECT count(*) FROM workers WHERE channel AND channel_generation = 1`)).toBe(
      String(AGENTS),
    );

    // The deploy: the server stops (closing every socket at once) and starts again on the same port.
    const droppedAt = Date.now();
    for (const client of clients) {
      client.socket!.once('close', () => reconnect(client, droppedAt));
    }
    expect(await server.stop()).toBe(0);
    server = new ServerProcess(port, env());
    await server.ready();

    await eventually(() => clients.every((c) => c.back !== undefined), {
      timeoutMs: 120_000,
      what: 'every client back on the channel',
    });
    // Every session reopened its channel (a second generation), none was declared lost.
    expect(psql(`SELECT count(*) FROM workers WHERE channel AND channel_generation >= 2`)).toBe(
      String(AGENTS),
    );
    expect(psql(`SELECT count(*) FROM workers WHERE status = 'down'`)).toBe('0');
    // Spread: the first tries fall uniformly over the window; no second of it holds more than a quarter of them
    // (a herd would put all of them in one).
    const first = clients.map((c) => c.attempts[0]!);
    expect(Math.max(...first)).toBeLessThanOrEqual(WINDOW_S * 1000 + 1000);
    const perSecond = new Map<number, number>();
    for (const at of first)
      perSecond.set(Math.floor(at / 1000), (perSecond.get(Math.floor(at / 1000)) ?? 0) + 1);
    expect(Math.max(...perSecond.values())).toBeLessThanOrEqual(AGENTS / 4);
  });
});
