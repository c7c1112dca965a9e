/** @jsxImportSource hono/jsx */
import type { JobState, WorkerStatus } from '../../../db/schema.ts';

/** A moment as ISO in UTC; the client script rewrites it in the browser's locale, with its time zone. */
export const Time = ({ at }: { at: string | null }) =>
  at === null ? <span>–</span> : <time datetime={at}>{`${at.slice(0, 19).replace('T', ' ')} UTC`}</time>;

export const StateBadge = ({ state }: { state: JobState | WorkerStatus }) => (
  <span class={`state s-${state}`}>{state}</span>
);

/** How long ago, as the server saw it when rendering (the region is refreshed every few seconds). */
export function ago(iso: string, now = Date.now()): string {
  const s = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  return s < 60 ? `${s} s ago` : s < 3600 ? `${Math.round(s / 60)} min ago` : `${Math.round(s / 3600)} h ago`;
}
