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
