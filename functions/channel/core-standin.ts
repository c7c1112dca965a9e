/**
 * TEMPORARY stand-ins for the lead's "Channel core" (ChannelPort, channelHeartbeat), deleted at the merge.
 */
import type { Ports } from '../domain/ports.ts';

export interface ChannelPort {
  accept(request: Request, worker: { workerId: string; session: string }): Promise<Response>;
}

export async function channelHeartbeat(
  ports: Ports,
  workers: { worker_id: string; session: string }[],
): Promise<{ reregister: string[] }> {
  const now = new Date().toISOString().slice(0, 19);
  const reregister: string[] = [];
  for (const w of workers) {
    if (!(await ports.registry.touchWorker(w.worker_id, now, ports.config.workerTtlSeconds)))
      reregister.push(w.worker_id);
  }
  return { reregister };
}

/** The route GET /api/v1/agents/channel, unvalidated (the lead's validates the session): undefined elsewhere. */
export function standInChannelRoute(
  request: Request,
  channel: ChannelPort | undefined,
): Promise<Response> | undefined {
  const url = new URL(request.url);
  if (url.pathname !== '/api/v1/agents/channel' || !channel) return undefined;
  return channel.accept(request, {
    workerId: url.searchParams.get('worker_id') ?? '',
    session: url.searchParams.get('session') ?? '',
  });
}
