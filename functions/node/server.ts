import type { AddressInfo } from 'node:net';
import { serve } from '@hono/node-server';
import { createApp } from '../app.ts';
import { syncAllocationCache } from '../domain/cache.ts';
import { type Context, createContext } from '../domain/context.ts';
import { logClusterStats } from '../domain/dashboard.ts';
import { pruneSubmissionKeys } from '../domain/jobs.ts';
import { runBackstop } from '../domain/maintenance.ts';
import type { Ports } from '../domain/ports.ts';
import { nodeSwaggerUiAssets } from '../http/api-docs-node.ts';

export interface RunningServer {
  url: string;
  port: number;
  ctx: Context;
  close(): Promise<void>;
}

/**
 * Serves the control plane on Node: the HTTP app plus the timers that Workers replaces with crons
 * (scheduling/reaping backstop, cache sync, statistics log). Each timer skips a tick while its last one runs.
 */
export async function startServer(
  ports: Omit<Ports, 'defer'>,
  options: { port: number; host: string; timers?: boolean },
): Promise<RunningServer> {
  const pending = new Set<Promise<unknown>>();
  const ctx = createContext({
    ...ports,
    defer(work) {
      const tracked = work
        .catch((error: unknown) =>
          ports.logger.error('Background work failed', {
            error: error instanceof Error ? error.message : String(error),
          }),
        )
        .finally(() => pending.delete(tracked));
      pending.add(tracked);
    },
  });
  const app = createApp(ctx, { swaggerUi: nodeSwaggerUiAssets });

  const server = await new Promise<ReturnType<typeof serve>>((resolve, reject) => {
    const s = serve({ fetch: app.fetch, port: options.port, hostname: options.host }, () => resolve(s));
    s.once('error', reject);
  });
  const port = (server.address() as AddressInfo).port;

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
    every(config.scheduleIntervalSeconds, 'Scheduling backstop', () => runBackstop(ctx));
    every(config.cacheSyncIntervalSeconds, 'Resource cache sync', () => syncAllocationCache(ctx));
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
    async close() {
      for (const timer of timers) clearInterval(timer);
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        // Long-polling claims hold their connections open: end them rather than wait.
        if ('closeAllConnections' in server) setTimeout(() => server.closeAllConnections(), 500).unref();
      });
      await Promise.allSettled([...pending]);
    },
  };
}
