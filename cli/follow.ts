import { ApiError, type Client } from './api.ts';
import type { Io } from './io.ts';

/**
 * Streams a job's output (SSE) to stdout/stderr until it ends; returns its final state and exit code. Output
 * comes JSON-encoded (`encoding=json`), so it is byte-exact (carriage returns included). A dropped stream is
 * resumed where it stopped (`Last-Event-ID`): nothing is printed twice or lost.
 */
export async function followJob(
  client: Client,
  id: number,
  io: Io,
  tail?: number,
): Promise<{ state: string; exit_code: string | null }> {
  let end: { state: string; exit_code: string | null } | undefined;
  let lastId: string | undefined;
  const query = `follow=1&encoding=json${tail === undefined ? '' : `&tail=${tail}`}`;
  for (let failures = 0; ; ) {
    const before = lastId;
    try {
      await client.events(
        `/api/v1/jobs/${id}/logs?${query}`,
        (event, data, eventId) => {
          if (event === 'stdout') io.out(JSON.parse(data) as string);
          else if (event === 'stderr') io.err(JSON.parse(data) as string);
          else if (event === 'end') end = JSON.parse(data) as { state: string; exit_code: string | null };
          lastId = eventId;
        },
        lastId,
      );
    } catch (error) {
      // Refused (no such job, no access, output expired), or unreachable before anything came: say so.
      if (lastId === undefined || (error instanceof ApiError && error.status > 0)) throw error;
    }
    if (end) return end;
    // The stream was cut: resume it where it stopped, for a while; then ask how the job is.
    failures = lastId === before ? failures + 1 : 0;
    if (failures >= 5)
      return await client.request<{ state: string; exit_code: string | null }>('GET', `/api/v1/jobs/${id}`);
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}
