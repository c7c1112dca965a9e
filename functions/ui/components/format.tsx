/** @jsxImportSource hono/jsx */
import type { JobState, PartitionState, WorkerStatus } from '../../../db/schema.ts';

/** A moment as ISO in UTC; the client script rewrites it in the browser's locale, with its time zone. */
export const Time = ({ at }: { at: string | null }) =>
  at === null ? <span>–</span> : <time datetime={at}>{`${at.slice(0, 19).replace('T', ' ')} UTC`}</time>;

export const StateBadge = ({ state }: { state: JobState | WorkerStatus | PartitionState }) => (
  <span class={`state s-${state}`}>{state}</span>
);

/** How long ago, as the server saw it when rendering (the region is refreshed every few seconds). */
export function ago(iso: string, now = Date.now()): string {
  const s = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  return s < 60 ? `${s} s ago` : s < 3600 ? `${Math.round(s / 60)} min ago` : `${Math.round(s / 3600)} h ago`;
}

/** Megabytes as people read them: MB below a GB, then GB and TB (1,024 each, as Slurm counts). */
export function megabytes(mb: number): string {
  const round = (n: number) => String(Math.round(n * 10) / 10);
  if (mb >= 1024 * 1024) return `${round(mb / (1024 * 1024))} TB`;
  if (mb >= 1024) return `${round(mb / 1024)} GB`;
  return `${mb} MB`;
}

/**
 * How much of a resource is used, as a bar and in figures (`12/96`). A <meter>: no inline style (the CSP
 * allows none), and screen readers announce it by its label.
 */
export const UsageBar = ({
  label,
  used,
  total,
  format = String,
}: {
  label: string;
  used: number;
  total: number;
  format?: (n: number) => string;
}) =>
  total === 0 ? (
    <span class="usage none">–</span>
  ) : (
    <span class="usage">
      <meter min={0} max={total} value={used} high={total * 0.9} aria-label={label} />
      <span class="usage-text">
        {format(used)}/{format(total)}
      </span>
    </span>
  );
