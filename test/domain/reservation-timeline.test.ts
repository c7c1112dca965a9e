import { describe, expect, it } from 'vitest';
import {
  layoutTimeline,
  reservationTimelineInput,
  type TimelineReservation,
  windowsIn,
} from '../../functions/domain/reservation-timeline.ts';

const H = 3_600_000;
const D = 24 * H;
/** Monday 7 December 2026, 12:00 UTC. */
const NOW = Date.parse('2026-12-07T12:00:00Z');

const res = (over: Partial<TimelineReservation> & { name: string }): TimelineReservation => ({
  start: NOW + H,
  end: NOW + 2 * H,
  periodS: null,
  nodes: ['n1'],
  flags: [],
  ...over,
});

describe('reservation timeline layout', () => {
  it('spans a twelfth of the range before now to the range after it, now at 1/13 of the width', () => {
    for (const [range, days] of [
      ['1d', 1],
      ['7d', 7],
      ['30d', 30],
    ] as const) {
      const t = layoutTimeline([], NOW, range);
      expect(t.to - NOW).toBe(days * D);
      expect(NOW - t.from).toBe((days * D) / 12);
      expect(t.nowX).toBeCloseTo(1 / 13, 10);
      expect(t.lanes).toEqual([]);
    }
  });

  it('places a window by its times and clips those that run past either edge', () => {
    const t = layoutTimeline(
      [
        res({ name: 'inside', start: NOW + D, end: NOW + 2 * D }),
        res({ name: 'started', start: NOW - 3 * D, end: NOW + 3 * H, nodes: ['n2'] }),
        res({ name: 'late', start: NOW + 6 * D, end: NOW + 9 * D, nodes: ['n3'] }),
        res({ name: 'beyond', start: NOW + 8 * D, end: NOW + 9 * D, nodes: ['n4'] }),
        res({ name: 'over', start: NOW - 5 * D, end: NOW - 4 * D, nodes: ['n5'] }),
      ],
      NOW,
      '7d',
    );
    const bars = new Map(t.lanes.flatMap((l) => l.bars.map((b) => [b.name, b] as const)));
    expect([...bars.keys()].sort()).toEqual(['inside', 'late', 'started']);
    const span = t.to - t.from;
    const inside = bars.get('inside');
    expect(inside?.x0).toBeCloseTo((NOW + D - t.from) / span, 10);
    expect(inside?.x1).toBeCloseTo((NOW + 2 * D - t.from) / span, 10);
    // Begun before the timeline: drawn from its left edge; its whole window is kept for the tooltip.
    expect(bars.get('started')).toMatchObject({ x0: 0, start: t.from, windowStart: NOW - 3 * D });
    expect(bars.get('started')?.x1).toBeCloseTo((NOW + 3 * H - t.from) / span, 10);
    expect(bars.get('late')).toMatchObject({ x1: 1, end: t.to, windowEnd: NOW + 9 * D });
  });

  it('repeats a DAILY reservation every day and a WEEKLY one every week across the range', () => {
    // Daily 02:00–04:00 UTC since a week ago; weekly Tuesday 06:00–08:00 UTC since two weeks ago.
    const daily = res({
      name: 'nightly',
      start: Date.parse('2026-11-30T02:00:00Z'),
      end: Date.parse('2026-11-30T04:00:00Z'),
      periodS: 86_400,
      flags: ['DAILY'],
    });
    const weekly = res({
      name: 'tuesdays',
      start: Date.parse('2026-11-24T06:00:00Z'),
      end: Date.parse('2026-11-24T08:00:00Z'),
      periodS: 604_800,
      flags: ['WEEKLY', 'MAINT'],
      nodes: ['n2', 'n3'],
    });
    const week = layoutTimeline([daily, weekly], NOW, '7d');
    const starts = (name: string, t = week) =>
      t.lanes
        .flatMap((l) => l.bars)
        .filter((b) => b.name === name)
        .map((b) => new Date(b.windowStart).toISOString());
    // From 14 h before now (Sunday 22:00) to next Monday noon: Monday's 02:00 through next Monday's.
    expect(starts('nightly')).toEqual([
      '2026-12-07T02:00:00.000Z',
      '2026-12-08T02:00:00.000Z',
      '2026-12-09T02:00:00.000Z',
      '2026-12-10T02:00:00.000Z',
      '2026-12-11T02:00:00.000Z',
      '2026-12-12T02:00:00.000Z',
      '2026-12-13T02:00:00.000Z',
      '2026-12-14T02:00:00.000Z',
    ]);
    expect(starts('tuesdays')).toEqual(['2026-12-08T06:00:00.000Z']);
    const month = layoutTimeline([daily, weekly], NOW, '30d');
    expect(starts('nightly', month)).toHaveLength(33);
    expect(starts('tuesdays', month)).toEqual([
      '2026-12-08T06:00:00.000Z',
      '2026-12-15T06:00:00.000Z',
      '2026-12-22T06:00:00.000Z',
      '2026-12-29T06:00:00.000Z',
      '2027-01-05T06:00:00.000Z',
    ]);
    const bar = month.lanes.flatMap((l) => l.bars).find((b) => b.name === 'tuesdays');
    expect(bar).toMatchObject({ maint: true, repeats: 'WEEKLY' });
    // Each repeat is as long as the first window.
    for (const b of month.lanes.flatMap((l) => l.bars)) expect(b.windowEnd - b.windowStart).toBe(2 * H);
    // A repeating reservation whose first window is still to come has no window before it.
    const later = res({ name: 'later', start: NOW + 3 * D, end: NOW + 3 * D + H, periodS: 86_400 });
    expect(windowsIn(later, NOW - D, NOW + 7 * D).map((w) => (w.start - NOW) / D)).toEqual([3, 4, 5, 6]);
  });

  it('gives each set of nodes one lane, ordered by its first window, and stacks overlapping windows', () => {
    const t = layoutTimeline(
      [
        res({ name: 'b', nodes: ['n2', 'n1'], start: NOW + 2 * H, end: NOW + 5 * H }),
        res({ name: 'a', nodes: ['n1', 'n2'], start: NOW + H, end: NOW + 3 * H }),
        res({ name: 'c', nodes: ['n1', 'n2'], start: NOW + 6 * H, end: NOW + 7 * H }),
        res({ name: 'gpu', nodes: ['g1'], start: NOW + 30 * 60_000, end: NOW + H }),
        res({ name: 'other', nodes: ['n1'], start: NOW + 4 * H, end: NOW + 8 * H }),
      ],
      NOW,
      '1d',
    );
    expect(t.lanes.map((l) => l.nodes)).toEqual(['g1', 'n[1-2]', 'n1']);
    const pair = t.lanes[1];
    expect(pair?.bars.map((b) => [b.name, b.row])).toEqual([
      ['a', 0],
      ['b', 1],
      ['c', 0],
    ]);
    expect(pair?.rows).toBe(2);
    expect(t.lanes[0]?.rows).toBe(1);
  });

  it('draws gridlines on UTC hours (1 day) or midnights, labelled in UTC', () => {
    const day = layoutTimeline([], NOW, '1d');
    expect(day.ticks.map((t) => t.label)).toEqual([
      '12:00',
      '15:00',
      '18:00',
      '21:00',
      '8 Dec',
      '03:00',
      '06:00',
      '09:00',
      '12:00',
    ]);
    expect(day.ticks.filter((t) => !t.major).map((t) => t.label)).toEqual([
      '15:00',
      '21:00',
      '03:00',
      '09:00',
    ]);
    for (const tick of day.ticks) expect(tick.x).toBeCloseTo((tick.at - day.from) / (day.to - day.from), 10);
    const week = layoutTimeline([], NOW, '7d');
    expect(week.ticks.map((t) => t.label)).toEqual([
      'Mon 7',
      'Tue 8',
      'Wed 9',
      'Thu 10',
      'Fri 11',
      'Sat 12',
      'Sun 13',
      'Mon 14',
    ]);
    expect(week.ticks.filter((t) => t.major).map((t) => t.label)).toEqual([
      'Tue 8',
      'Thu 10',
      'Sat 12',
      'Mon 14',
    ]);
    const month = layoutTimeline([], NOW, '30d');
    expect(month.ticks).toHaveLength(33);
    expect(month.ticks.filter((t) => t.label).map((t) => t.label)).toEqual([
      '7 Dec',
      '14 Dec',
      '21 Dec',
      '28 Dec',
      '4 Jan',
    ]);
  });

  it('takes ranges 1d, 7d and 30d (7d by default) and refuses any other', () => {
    expect(reservationTimelineInput.parse({}).range).toBe('7d');
    expect(reservationTimelineInput.parse({ range: '30d' }).range).toBe('30d');
    const bad = reservationTimelineInput.safeParse({ range: '2d' });
    expect(bad.success).toBe(false);
    expect(bad.error?.issues[0]?.message).toBe('range is 1d, 7d or 30d');
  });
});
