/**
 * When the agent tries its push channel again (see Agent: the channel is a WebSocket to the control plane,
 * agent/src/protocol.ts ChannelQuery). Pure functions of a random source, shared by the agent and the tests
 * that check a thousand agents dropped at once come back spread out.
 */
import { AgentApiError } from './client.ts';
import type { Assignment, ChannelMessage } from './protocol.ts';

/** The longest wait between two tries while connecting keeps failing. */
export const CHANNEL_MAX_BACKOFF_MS = 5 * 60_000;

/** How long before asking again a control plane that has no channel (an older server, a proxy in the way). */
export const CHANNEL_ABSENT_RETRY_MS = 5 * 60_000;

/**
 * The delay before the next try after `failures` tries in a row that failed (or dropped before the server
 * answered a ping). 0 failures, a channel that worked dropped: uniform in [0, window], so that agents dropped
 * together (a deploy, a restart) come back spread over the window. Then exponential back-off with full
 * jitter: uniform in [0, min(5 min, max(window, 1 s) * 2^failures)].
 */
export function channelReconnectDelayMs(
  failures: number,
  windowS: number,
  random: () => number = Math.random,
): number {
  const windowMs = Math.max(0, windowS) * 1000;
  if (failures <= 0) return Math.round(random() * windowMs);
  const ceiling = Math.min(CHANNEL_MAX_BACKOFF_MS, Math.max(windowMs, 1000) * 2 ** Math.min(failures, 20));
  return Math.round(random() * ceiling);
}

/** About 5 minutes (4 to 6), for a control plane that answered the channel with "not here". */
export function channelAbsentDelayMs(random: () => number = Math.random): number {
  return Math.round(CHANNEL_ABSENT_RETRY_MS * (0.8 + 0.4 * random()));
}

/**
 * What a refused or failed channel connection means. `register`: the server no longer knows the session (404
 * `unknown_worker`, 409 `session_superseded`). `retry`: worth trying again soon, with back-off (no answer,
 * 401 or 403, which the HTTP calls report too, another 409, 408, 429, 5xx). `absent`: the control plane has
 * no channel here (404 route not found on an older server, 400 or 426 from a proxy that strips the upgrade).
 */
export function channelRefusal(err: unknown): 'register' | 'retry' | 'absent' {
  if (!(err instanceof AgentApiError)) return 'retry';
  const { status, code } = err;
  if ((status === 404 && code === 'unknown_worker') || (status === 409 && code === 'session_superseded')) {
    return 'register';
  }
  if (status === 0 || [401, 403, 408, 409, 429].includes(status) || status >= 500) return 'retry';
  return 'absent';
}

/**
 * A server → agent frame, or undefined when it is none this agent knows. A wake's `jobs` are kept when they
 * are a list of assignments (anything else there makes it a bare wake: the claim it asks brings them).
 */
export function parseChannelMessage(text: string): ChannelMessage | undefined {
  try {
    const message = JSON.parse(text) as { type?: unknown; jobs?: unknown };
    if (message?.type === 'register') return { type: 'register' };
    if (message?.type !== 'wake') return undefined;
    const { jobs } = message;
    return Array.isArray(jobs) && jobs.length > 0 && jobs.every(isAssignment)
      ? { type: 'wake', jobs }
      : { type: 'wake' };
  } catch {
    return undefined; // not JSON
  }
}

function isAssignment(value: unknown): value is Assignment {
  const a = value as Partial<Assignment> | null;
  return (
    typeof a === 'object' &&
    a !== null &&
    Number.isSafeInteger(a.job_id) &&
    Number.isSafeInteger(a.attempt) &&
    typeof a.script === 'string' &&
    typeof a.cpus === 'number'
  );
}
