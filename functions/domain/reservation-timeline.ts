/**
 * The dashboard's reservations timeline (`/ui/reservations`): the reservations' windows over the next 1, 7 or
 * 30 days, one lane per set of nodes, DAILY and WEEKLY ones repeated. `layoutTimeline` is pure (the tests and
 * the page's SVG both read it); `reservationTimeline` feeds it from the database.
 */

import { sql } from 'drizzle-orm';
import { z } from 'zod';
import type { Context } from './context.ts';
import { compressHostlist } from './hostlist.ts';
import { listReservations } from './reservations.ts';
import { query } from './sql.ts';

export const TIMELINE_RANGES = ['1d', '7d', '30d'] as const;
export type TimelineRange = (typeof TIMELINE_RANGES)[number];
export const reservationTimelineInput = z.strictObject({
  range: z.enum(TIMELINE_RANGES, { error: 'range is 1d, 7d or 30d' }).default('7d'),
});

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const DAYS: Record<TimelineRange, number> = { '1d': 1, '7d': 7, '30d': 30 };

/** A reservation as stored: its first window, repeated every `periodS` seconds when it has one. */
export interface TimelineReservation {
  name: string;
  /** Milliseconds since the epoch. */
  start: number;
  end: number;
  periodS: number | null;
  nodes: readonly string[];
  flags: readonly string[];
}

export interface TimelineBar {
  name: string;
  /** The window, in ms, and the part of it inside the timeline (`start`, `end`). */
  windowStart: number;
  windowEnd: number;
  start: number;
  end: number;
  /** Where the visible part starts and ends, as fractions of the timeline's width. */
  x0: number;
  x1: number;
  /** Overlapping windows on the same nodes are stacked: 0 is the lane's first row. */
  row: number;
  maint: boolean;
  repeats: 'DAILY' | 'WEEKLY' | null;
}

export interface TimelineLane {
  /** The lane's nodes as a hostlist. */
  nodes: string;
  rows: number;
  bars: TimelineBar[];
}

export interface TimelineTick {
  at: number;
  x: number;
  label: string;
  /** Minor ticks' labels give way on narrow screens. */
  major: boolean;
}

export interface Timeline {
  range: TimelineRange;
  from: number;
  to: number;
  now: number;
  nowX: number;
  lanes: TimelineLane[];
  ticks: TimelineTick[];
}

/** The windows of `r` that overlap [from, to): one, or its repeats. */
export function windowsIn(
  r: TimelineReservation,
  from: number,
  to: number,
): { start: number; end: number }[] {
  if (r.periodS === null || r.periodS <= 0) {
    return r.end > from && r.start < to ? [{ start: r.start, end: r.end }] : [];
  }
  const period = r.periodS * 1000;
  const windows: { start: number; end: number }[] = [];
  // The first repeat that ends after `from`; none before the reservation's first window.
  for (let k = Math.max(0, Math.floor((from - r.end) / period) + 1); r.start + k * period < to; k++) {
    windows.push({ start: r.start + k * period, end: r.end + k * period });
  }
  return windows;
}

const WEEKDAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

/** Gridlines at whole UTC hours (1 day: every 3 h) or UTC midnights, labelled in UTC; minor labels every other one. */
function ticksOf(range: TimelineRange, from: number, to: number): TimelineTick[] {
  const step = range === '1d' ? 3 * HOUR : DAY;
  const ticks: TimelineTick[] = [];
  for (let at = Math.ceil(from / step) * step; at <= to; at += step) {
    const d = new Date(at);
    const midnight = at % DAY === 0;
    const date = `${d.getUTCDate()} ${MONTHS[d.getUTCMonth()]}`;
    let label: string;
    let major: boolean;
    if (range === '1d') {
      label = midnight ? date : `${String(d.getUTCHours()).padStart(2, '0')}:00`;
      major = d.getUTCHours() % 6 === 0;
    } else if (range === '7d') {
      label = `${WEEKDAYS[d.getUTCDay()]} ${d.getUTCDate()}`;
      major = d.getUTCDate() % 2 === 0;
    } else {
      // 30 days: a gridline a day, a label a week (Mondays).
      label = d.getUTCDay() === 1 ? date : '';
      major = true;
    }
    ticks.push({ at, x: (at - from) / (to - from), label, major });
  }
  return ticks;
}

/**
 * The timeline from a little before `now` (a twelfth of the range, so what is open now shows where it began)
 * to `now` plus the range: windows clipped to it, one lane per set of nodes (lanes ordered by their first
 * window, then nodes), overlapping windows in a lane on rows of their own. Reservations with no window in
 * it have no lane.
 */
export function layoutTimeline(
  reservations: readonly TimelineReservation[],
  now: number,
  range: TimelineRange,
): Timeline {
  const span = DAYS[range] * DAY;
  const from = now - span / 12;
  const to = now + span;
  const x = (t: number) => (t - from) / (to - from);
  const byNodes = new Map<string, TimelineBar[]>();
  for (const r of reservations) {
    const key = compressHostlist([...r.nodes].sort());
    const repeats = r.flags.includes('DAILY') ? 'DAILY' : r.flags.includes('WEEKLY') ? 'WEEKLY' : null;
    for (const w of windowsIn(r, from, to)) {
      const start = Math.max(w.start, from);
      const end = Math.min(w.end, to);
      const bars = byNodes.get(key) ?? [];
      bars.push({
        name: r.name,
        windowStart: w.start,
        windowEnd: w.end,
        start,
        end,
        x0: x(start),
        x1: x(end),
        row: 0,
        maint: r.flags.includes('MAINT'),
        repeats,
      });
      byNodes.set(key, bars);
    }
  }
  const lanes: TimelineLane[] = [];
  for (const [nodes, bars] of byNodes) {
    bars.sort((a, b) => a.start - b.start || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    const rowEnds: number[] = [];
    for (const bar of bars) {
      let row = rowEnds.findIndex((end) => end <= bar.start);
      if (row === -1) row = rowEnds.length;
      rowEnds[row] = bar.end;
      bar.row = row;
    }
    lanes.push({ nodes, rows: rowEnds.length, bars });
  }
  lanes.sort(
    (a, b) =>
      (a.bars[0]?.start ?? 0) - (b.bars[0]?.start ?? 0) ||
      (a.nodes < b.nodes ? -1 : a.nodes > b.nodes ? 1 : 0),
  );
  return { range, from, to, now, nowX: x(now), lanes, ticks: ticksOf(range, from, to) };
}

/** The timeline and the table under it: the reservations not over (`GET /api/v1/reservations`). */
export async function reservationTimeline(ctx: Context, input: z.infer<typeof reservationTimelineInput>) {
  const now = Date.now();
  const from = now - (DAYS[input.range] * DAY) / 12;
  const rows = await query<{
    name: string;
    start_time: Date | string;
    end_time: Date | string;
    period_s: number | null;
    nodes: string[];
    flags: string[];
  }>(
    ctx.db,
    sql`SELECT name, start_time, end_time, period_s, nodes, flags FROM reservations
        WHERE period_s IS NOT NULL OR end_time > ${new Date(from).toISOString()}::timestamptz`,
  );
  const timeline = layoutTimeline(
    rows.map((r) => ({
      name: r.name,
      start: new Date(r.start_time).getTime(),
      end: new Date(r.end_time).getTime(),
      periodS: r.period_s === null ? null : Number(r.period_s),
      nodes: r.nodes,
      flags: r.flags,
    })),
    now,
    input.range,
  );
  return { timeline, reservations: await listReservations(ctx.db) };
}
