/**
 * A local stand-in for Upstash's REST API in front of a real Redis (node:http + ioredis), so that
 * @upstash/redis can be tested without an Upstash account. See /work/shared/TOOLCHAIN.md:
 * POST {url} with `["cmd", ...args]`, POST {url}/pipeline and {url}/multi-exec with `[[...], ...]`;
 * `Authorization: Bearer <token>`; with `Upstash-Encoding: base64` every bulk string in the reply is base64.
 */
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Redis } from 'ioredis';

export interface UpstashBridge {
  url: string;
  token: string;
  /** Every Redis command the bridge ran, in order, name upper-cased: what Upstash would bill (empty when
   *  started with `keepCommands: false`; `counts` is kept either way). */
  commands: string[][];
  /** Commands run, as Upstash bills them: a pipeline or multi-exec of n commands counts n. */
  counts: { commands: number; byName: Map<string, number> };
  /** HTTP requests served. */
  requests: number;
  close(): Promise<void>;
}

type Reply = { result: unknown } | { error: string };

export async function startUpstashBridge(options: {
  redisUrl: string;
  token?: string;
  /** Keep every command in `commands` (default true); a long bench keeps only the counts. */
  keepCommands?: boolean;
}): Promise<UpstashBridge> {
  const redis = new Redis(options.redisUrl, { protocol: 2, maxRetriesPerRequest: 1 });
  const token = options.token ?? randomUUID();
  const keep = options.keepCommands ?? true;
  const bridge = {
    url: '',
    token,
    commands: [] as string[][],
    counts: { commands: 0, byName: new Map<string, number>() },
    requests: 0,
    close: async () => {},
  };

  const toArgs = (command: unknown): [string, ...string[]] => {
    if (!Array.isArray(command) || command.length === 0)
      throw new Error('ERR a command is a non-empty array');
    const [name, ...args] = command.map((part) => String(part));
    const upper = String(name).toUpperCase();
    bridge.counts.commands++;
    bridge.counts.byName.set(upper, (bridge.counts.byName.get(upper) ?? 0) + 1);
    if (keep) bridge.commands.push([upper, ...args]);
    return [String(name), ...args];
  };

  const server = createServer(async (req: IncomingMessage, res: ServerResponse) => {
    bridge.requests++;
    const send = (status: number, body: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
    };
    if (req.method !== 'POST') return send(405, { error: 'ERR only POST is supported' });
    if (req.headers.authorization !== `Bearer ${token}`) return send(401, { error: 'Unauthorized' });
    const base64 = req.headers['upstash-encoding'] === 'base64';
    const encode = (value: unknown): unknown => {
      if (Buffer.isBuffer(value)) return base64 ? value.toString('base64') : value.toString('utf8');
      if (typeof value === 'string') return base64 ? Buffer.from(value).toString('base64') : value;
      if (Array.isArray(value)) return value.map(encode);
      if (value !== null && typeof value === 'object') return Object.entries(value).flat().map(encode);
      return value ?? null;
    };
    try {
      const chunks: Buffer[] = [];
      for await (const chunk of req) chunks.push(chunk as Buffer);
      const body: unknown = JSON.parse(Buffer.concat(chunks).toString('utf8'));
      const path = new URL(req.url ?? '/', 'http://bridge').pathname.replace(/\/+$/, '');
      if (path === '/pipeline' || path === '/multi-exec') {
        if (!Array.isArray(body)) return send(400, { error: 'ERR expected an array of commands' });
        const batch = path === '/multi-exec' ? redis.multi() : redis.pipeline();
        for (const command of body) batch.callBuffer(...toArgs(command));
        const results = (await batch.exec()) ?? [];
        return send(
          200,
          results.map(
            ([error, result]): Reply => (error ? { error: error.message } : { result: encode(result) }),
          ),
        );
      }
      if (path !== '') return send(404, { error: `ERR unknown path ${path}` });
      return send(200, { result: encode(await redis.callBuffer(...toArgs(body))) });
    } catch (error) {
      return send(400, { error: error instanceof Error ? error.message : String(error) });
    }
  });

  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  bridge.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  bridge.close = async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    redis.disconnect();
  };
  return bridge;
}
