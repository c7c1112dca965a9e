import type { IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { serve } from '@hono/node-server';
import { createApp } from '../app.ts';
import { syncAllocationCache } from '../domain/cache.ts';
import { type Context, createContext } from '../domain/context.ts';
import { logClusterStats } from '../domain/dashboard.ts';
import { pruneSubmissionKeys } from '../domain/jobs.ts';
import { cacheSyncSkippable, runBackstopUnlessQuiet } from '../domain/maintenance.ts';
import type { Ports } from '../domain/ports.ts';
import { ProcessMetrics } from '../domain/process-metrics.ts';
import { nodeSwaggerUiAssets } from '../http/api-docs-node.ts';
import { ChannelHub, type WakeBus } from './channel-hub.ts';

export interface RunningServer {
  url: string;
  port: number;
  ctx: Context;
  /** The push channel's hub, when the server has one. */
  hub?: ChannelHub | undefined;
  close(): Promise<void>;
}

/**
 * Serves the control plane on Node: the HTTP app plus the timers that Workers replaces with crons
 * (scheduling/reaping backstop, cache sync, statistics log). Each timer skips a tick while its last one runs.
 */
export async function startServer(
  ports: Omit<Ports, 'defer'>,
  options: {
    port: number;
    host: string;
    timers?: boolean;
    /** The push channel (on by default); `bus` carries wakes to the other server processes. */
    channel?: false | { bus?: WakeBus };
  },
): Promise<RunningServer> {
  const pending = new Set<Promise<unknown>>();
  const defer = (work: Promise<unknown>) => {
    const tracked = work
      .catch((error: unknown) =>
        ports.logger.error('Background work failed', {
          error: error instanceof Error ? error.message : String(error),
        }),
      )
      .finally(() => pending.delete(tracked));
    pending.add(tracked);
  };
  const metrics = ports.metrics ?? new ProcessMetrics();
  const hub =
    options.channel === false
      ? undefined
      : new ChannelHub({ ...ports, metrics, defer }, options.channel?.bus);
  const ctx = createContext({
    ...ports,
    metrics,
    ...(hub ? { notifier: hub.wrap(ports.notifier), channel: hub.port } : {}),
    defer,
  });
  const app = createApp(ctx, { swaggerUi: nodeSwaggerUiAssets });

  const stopHub = hub?.start(ports.notifier);
  const server = await new Promise<ReturnType<typeof serve>>((resolve, reject) => {
    const s = serve({ fetch: app.fetch, port: options.port, hostname: options.host }, () => resolve(s));
    s.once('error', reject);
  }).catch(async (error: unknown) => {
    await stopHub?.();
    throw error;
  });
  const port = (server.address() as AddressInfo).port;
  if (hub) {
    server.on('upgrade', (request: IncomingMessage, socket: Duplex, head: Buffer) => {
      void hub.handleUpgrade(request, socket, head, (r) => app.fetch(r));
    });
  }

  const timers: NodeJS.Timeout[] = [];
  const every = (seconds: number, name: string, work: () => Promise<unknown>) => {
    let busy = false;
    const timer = setInterval(async () => {
      if (busy) return;
      busy = true;
      try {
        await work();
      } catch (error) {
        ports.logger.warn(`${name} failed`, {
          error: error instanceof Error ? error.message : String(error),
        });
      } finally {
        busy = false;
      }
    }, seconds * 1000);
    timer.unref();
    timers.push(timer);
  };
  if (options.timers !== false) {
    const { config } = ports;
    every(config.scheduleIntervalSeconds, 'Scheduling backstop', () => runBackstopUnlessQuiet(ctx));
    every(config.cacheSyncIntervalSeconds, 'Resource cache sync', async () => {
      if (!(await cacheSyncSkippable(ctx))) await syncAllocationCache(ctx);
    });
    every(config.cacheSyncIntervalSeconds, 'Pruning expired Idempotency-Keys', () =>
      pruneSubmissionKeys(ctx.db),
    );
    every(config.statsIntervalSeconds, 'Statistics', () => logClusterStats(ctx));
    // The same single sender the requests kick (one subscription's deliveries go out one after another).
    every(config.notifyIntervalSeconds, 'Notifications', async () => ctx.kickNotifications());
  }

  const host = options.host.includes(':') ? `[${options.host}]` : options.host;
  return {
    url: `http://${host === '0.0.0.0' ? '127.0.0.1' : host}:${port}`,
    port,
    ctx,
    hub,
    async close() {
      for (const timer of timers) clearInterval(timer);
      await stopHub?.();
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        // Long-polling claims hold their connections open: end them rather than wait.
        if ('closeAllConnections' in server) setTimeout(() => server.closeAllConnections(), 500).unref();
      });
      await Promise.allSettled([...pending]);
    },
  };
}
