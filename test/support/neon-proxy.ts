/**
 * A local stand-in for Neon's WebSocket endpoint: the Neon driver's Pool (`neonConfig.wsProxy`) opens
 * `ws://127.0.0.1:PORT/v1?address=host:port` and sends raw Postgres wire bytes in binary frames; this relays
 * them to that address over TCP and back. Only allow-listed targets (the local Postgres) can be reached:
 * anything else is refused with 403 before the upgrade. Listens on 127.0.0.1 only.
 *
 * It also reads the frontend message headers going through, to count round trips: every simple Query
 * ('Q') and every Sync ('S', closing an extended-protocol Parse/Bind/Execute group) waits for the server.
 */
import { createServer } from 'node:http';
import { type AddressInfo, connect } from 'node:net';
import { WebSocketServer } from 'ws';

export interface NeonProxyStats {
  /** WebSocket connections relayed (each is one Postgres connection). */
  connections: number;
  /** Currently open. */
  active: number;
  /** Upgrades refused: bad path, target outside the allow-list. */
  refused: number;
  /** Connections that waited for a free slot (with `maxConnections`). */
  queued: number;
  /** Client → server Query and Sync messages: statements' round trips (BEGIN and COMMIT count). */
  roundTrips: number;
  /** WebSocket frames and bytes, client → Postgres and back. */
  framesIn: number;
  framesOut: number;
  bytesIn: number;
  bytesOut: number;
}

export interface NeonProxy {
  port: number;
  /** For `neonConfig.wsProxy` (no protocol: the driver adds `ws://` and `?address=host:port`). */
  url: string;
  stats: NeonProxyStats;
  resetStats(): void;
  close(): Promise<void>;
}

export const DEFAULT_NEON_TARGETS = ['127.0.0.1:5432', 'localhost:5432'];

export async function startNeonProxy(
  options: {
    port?: number;
    allow?: readonly string[];
    /** Called with Date.now() whenever wire traffic goes to Postgres (a connection opened, any frame from
     *  the client): the instants at which a Neon compute would be woken or kept awake. */
    onTraffic?: (atMs: number) => void;
    /** At most this many Postgres connections at once; further clients wait (their WebSocket opens when a
     *  connection ends), as behind Neon's pooler. Default: no limit. */
    maxConnections?: number;
  } = {},
): Promise<NeonProxy> {
  const onTraffic = options.onTraffic;
  const allow = new Set(options.allow ?? DEFAULT_NEON_TARGETS);
  const zero = (): NeonProxyStats => ({
    connections: 0,
    active: 0,
    refused: 0,
    queued: 0,
    roundTrips: 0,
    framesIn: 0,
    framesOut: 0,
    bytesIn: 0,
    bytesOut: 0,
  });
  const stats = zero();
  const http = createServer((_req, res) => res.writeHead(426).end('WebSocket only\n'));
  const wss = new WebSocketServer({ noServer: true });
  const max = options.maxConnections ?? Number.POSITIVE_INFINITY;
  let slots = 0;
  const waiting: (() => void)[] = [];
  const release = () => {
    slots--;
    const next = waiting.shift();
    if (next) next();
  };

  http.on('upgrade', (req, socket, head) => {
    const url = new URL(req.url ?? '/', 'http://proxy');
    const address = url.searchParams.get('address') ?? '';
    if (url.pathname !== '/v1' || !allow.has(address)) {
      stats.refused++;
      socket.end(`HTTP/1.1 403 Forbidden\r\nConnection: close\r\n\r\ntarget not allowed: ${address}\n`);
      return;
    }
    const admit = () => {
      if (socket.destroyed) return release();
      relay();
    };
    if (slots < max) {
      slots++;
      relay();
    } else {
      stats.queued++;
      waiting.push(() => {
        slots++;
        admit();
      });
    }
    function relay() {
      // A slot is held from here: released by end() once relayed, or by the socket's close if the upgrade
      // never completes.
      let relayed = false;
      socket.once('close', () => {
        if (!relayed) release();
      });
      wss.handleUpgrade(req, socket, head, (ws) => {
        relayed = true;
        const [host, port] = [address.slice(0, address.lastIndexOf(':')), address.split(':').pop()];
        // localhost may resolve to ::1 first, where Postgres may not listen.
        const tcp = connect({ host: host === 'localhost' ? '127.0.0.1' : host, port: Number(port) });
        tcp.setNoDelay(true);
        stats.connections++;
        stats.active++;
        onTraffic?.(Date.now());
        const count = frontendMessageCounter(() => stats.roundTrips++);
        ws.on('message', (data: Buffer) => {
          stats.framesIn++;
          stats.bytesIn += data.length;
          onTraffic?.(Date.now());
          count(data);
          tcp.write(data); // buffered by node while the TCP connection is still opening
        });
        tcp.on('data', (data) => {
          stats.framesOut++;
          stats.bytesOut += data.length;
          ws.send(data, { binary: true });
        });
        let open = true;
        const end = () => {
          if (!open) return;
          open = false;
          stats.active--;
          release();
          tcp.destroy();
          ws.close();
        };
        ws.on('close', end);
        ws.on('error', end);
        tcp.on('close', end);
        tcp.on('error', end);
      });
    }
  });

  await new Promise<void>((resolve, reject) => {
    http.once('error', reject);
    http.listen(options.port ?? 0, '127.0.0.1', resolve);
  });
  const port = (http.address() as AddressInfo).port;
  return {
    port,
    url: `127.0.0.1:${port}/v1`,
    stats,
    resetStats() {
      Object.assign(stats, zero(), { active: stats.active });
    },
    async close() {
      for (const client of wss.clients) client.terminate();
      wss.close();
      http.closeAllConnections();
      await new Promise<void>((resolve) => http.close(() => resolve()));
    },
  };
}

/**
 * Follows the frontend message stream across frame boundaries, calling `onRoundTrip` for each Query or
 * Sync. The stream starts with untyped messages (an optional SSLRequest, then the StartupMessage: a length
 * and a payload); every later message is a type byte and a length that counts itself but not the type.
 */
function frontendMessageCounter(onRoundTrip: () => void): (chunk: Buffer) => void {
  let started = false;
  let header = Buffer.alloc(0);
  let skip = 0;
  return (chunk) => {
    let offset = 0;
    while (offset < chunk.length) {
      if (skip > 0) {
        const n = Math.min(skip, chunk.length - offset);
        skip -= n;
        offset += n;
        continue;
      }
      const need = started ? 5 : 8;
      const take = Math.min(need - header.length, chunk.length - offset);
      header = Buffer.concat([header, chunk.subarray(offset, offset + take)]);
      offset += take;
      if (header.length < need) return;
      if (started) {
        const type = String.fromCharCode(header[0]!);
        if (type === 'Q' || type === 'S') onRoundTrip();
        skip = header.readInt32BE(1) - 4;
      } else {
        // SSLRequest / GSSENCRequest (length 8) come before the StartupMessage; anything longer is it.
        const length = header.readInt32BE(0);
        const code = header.readInt32BE(4);
        if (!(length === 8 && (code === 80877103 || code === 80877104))) started = true;
        skip = length - 8;
      }
      header = Buffer.alloc(0);
    }
  };
}
