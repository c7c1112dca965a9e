/** @jsxImportSource hono/jsx */
import type { Timeline, TimelineBar, TimelineLane } from '../../domain/reservation-timeline.ts';
import type { ReservationView } from '../../domain/reservations.ts';
import { Time } from './format.tsx';

const AXIS = 22;
const LANE_LABEL = 16;
const ROW = 22;
const BAR = 18;
const GAP = 8;
const WHAT = { '1d': 'day', '7d': '7 days', '30d': '30 days' } as const;

/** A fraction of the width as an SVG percentage: the bars keep their place at any screen width. */
const pct = (x: number) => `${(x * 100).toFixed(4)}%`;
const iso = (t: number) => new Date(t).toISOString();
const utc = (t: number) => `${iso(t).slice(0, 16).replace('T', ' ')} UTC`;

const Bar = ({ bar, y }: { bar: TimelineBar; y: number }) => (
  // A nested <svg> clips its label to the bar.
  <svg
    x={pct(bar.x0)}
    y={y}
    width={pct(bar.x1 - bar.x0)}
    height={BAR}
    class={bar.maint ? 'res-bar res-maint' : 'res-bar'}
    data-name={bar.name}
    data-start={iso(bar.start)}
    data-end={iso(bar.end)}
  >
    <title>
      {`${bar.name}${bar.maint ? ' (MAINT)' : ''}${bar.repeats ? ` (${bar.repeats})` : ''}: ${utc(bar.windowStart)} – ${utc(bar.windowEnd)}`}
    </title>
    <rect
      width="100%"
      height="100%"
      rx={3}
      fill={bar.maint ? 'url(#res-hatch)' : '#2457c5'}
      stroke={bar.maint ? '#c2410c' : '#173a85'}
    />
    <text
      x={4}
      y={13}
      font-size={11}
      fill={bar.maint ? '#431407' : '#fff'}
      stroke={bar.maint ? '#ffedd5' : 'none'}
      stroke-width={bar.maint ? 3 : 0}
      paint-order="stroke"
    >
      {bar.maint ? `MAINT ${bar.name}` : bar.name}
    </text>
  </svg>
);

/** The lane's reservations by name, beside its nodes: a short window's bar has no room for its own. */
const laneNames = (lane: TimelineLane) =>
  [
    ...new Set(
      lane.bars.map(
        (b) => `${b.name}${b.maint ? ' (MAINT)' : ''}${b.repeats ? ` (${b.repeats.toLowerCase()})` : ''}`,
      ),
    ),
  ].join(', ');

/** The lanes and bars of `layoutTimeline`, gridlines in UTC, and a line at now. */
export const TimelineChart = ({ timeline }: { timeline: Timeline }) => {
  let y = AXIS;
  const lanes = timeline.lanes.map((lane) => {
    const top = y;
    y += LANE_LABEL + lane.rows * ROW + GAP;
    return { lane, top };
  });
  const height = y;
  return (
    <svg
      id="res-timeline"
      class="res-timeline"
      width="100%"
      height={height}
      role="img"
      aria-labelledby="res-timeline-caption"
      data-from={iso(timeline.from)}
      data-to={iso(timeline.to)}
      data-range={timeline.range}
    >
      <title>Reservation windows, one lane per set of nodes</title>
      {timeline.ticks.map((t) => (
        <g class={t.major ? 'res-tick' : 'res-tick res-minor'}>
          <line x1={pct(t.x)} x2={pct(t.x)} y1={AXIS - 6} y2={height} stroke="#dde1e6" />
          {t.label && t.x > 0.02 && t.x < 0.98 ? (
            <text x={pct(t.x)} y={12} font-size={11} fill="#5b6570" text-anchor="middle">
              {t.label}
            </text>
          ) : null}
        </g>
      ))}
      {lanes.map(({ lane, top }) => (
        <g class="res-lane" data-nodes={lane.nodes}>
          <line x1={0} x2="100%" y1={top} y2={top} stroke="#c9ced6" />
          <text x={4} y={top + 12} font-size={11} font-weight={600} fill="#10243e">
            {lane.nodes}
            <tspan font-weight={400} fill="#5b6570">
              {` · ${laneNames(lane)}`}
            </tspan>
          </text>
          {lane.bars.map((bar) => (
            <Bar bar={bar} y={top + LANE_LABEL + bar.row * ROW} />
          ))}
        </g>
      ))}
      <g class="res-now">
        <line
          x1={pct(timeline.nowX)}
          x2={pct(timeline.nowX)}
          y1={AXIS - 6}
          y2={height}
          stroke="#b71c1c"
          stroke-width={2}
        />
        <text x={pct(timeline.nowX)} y={AXIS - 8} font-size={10} fill="#b71c1c" text-anchor="middle">
          now
        </text>
      </g>
    </svg>
  );
};

/** The MAINT hatching, for the timeline and the legend (an SVG of no size: a hidden one would not paint it). */
const HatchPattern = () => (
  <svg width={0} height={0} class="res-defs" aria-hidden="true">
    <defs>
      <pattern
        id="res-hatch"
        patternUnits="userSpaceOnUse"
        width={8}
        height={8}
        patternTransform="rotate(45)"
      >
        <rect width={8} height={8} fill="#fdba74" />
        <line x1={0} y1={0} x2={0} y2={8} stroke="#c2410c" stroke-width={4} />
      </pattern>
    </defs>
  </svg>
);

const Legend = () => (
  <ul class="res-legend">
    <li>
      <svg width={22} height={12} aria-hidden="true">
        <rect width={22} height={12} rx={2} fill="#2457c5" />
      </svg>
      reservation window
    </li>
    <li>
      <svg width={22} height={12} aria-hidden="true">
        <rect width={22} height={12} rx={2} fill="url(#res-hatch)" stroke="#c2410c" />
      </svg>
      MAINT (maintenance)
    </li>
    <li>
      <svg width={22} height={12} aria-hidden="true">
        <line x1={11} x2={11} y1={0} y2={12} stroke="#b71c1c" stroke-width={2} />
      </svg>
      now
    </li>
  </ul>
);

const ReservationsTable = ({ reservations }: { reservations: ReservationView[] }) => (
  <div class="scroll">
    <table id="res-table">
      <caption class="visually-hidden">Reservations not over, the next to start first</caption>
      <thead>
        <tr>
          <th scope="col">Name</th>
          <th scope="col">Nodes</th>
          <th scope="col">Accounts / users</th>
          <th scope="col">Start</th>
          <th scope="col">End</th>
          <th scope="col">Flags</th>
        </tr>
      </thead>
      <tbody>
        {reservations.map((r) => (
          <tr data-name={r.name} class={r.flags.includes('MAINT') ? 'res-row-maint' : undefined}>
            <td>{r.name}</td>
            <td>
              {r.nodes} ({r.node_count})
            </td>
            <td>
              {[
                r.accounts.length > 0 ? `accounts ${r.accounts.join(', ')}` : '',
                r.users.length > 0 ? `users ${r.users.join(', ')}` : '',
              ]
                .filter(Boolean)
                .join('; ')}
            </td>
            <td>
              <Time at={r.start_time} />
            </td>
            <td>
              <Time at={r.end_time} />
            </td>
            <td>{r.flags.length > 0 ? r.flags.join(', ') : '–'}</td>
          </tr>
        ))}
      </tbody>
    </table>
  </div>
);

/** The reservations page's region: the timeline, its legend, and the table of the reservations not over. */
export const ReservationsView = ({
  timeline,
  reservations,
}: {
  timeline: Timeline;
  reservations: ReservationView[];
}) => {
  if (reservations.length === 0 && timeline.lanes.length === 0) {
    return <p class="empty">No reservations. An admin creates them with scontrol create reservation.</p>;
  }
  const what = WHAT[timeline.range];
  return (
    <>
      <figure class="res-figure">
        <HatchPattern />
        {timeline.lanes.length > 0 ? (
          <TimelineChart timeline={timeline} />
        ) : (
          <p class="empty">No reservation window in the next {what}.</p>
        )}
        <figcaption id="res-timeline-caption">
          Reservation windows over the next {what}, one lane per set of nodes (DAILY and WEEKLY ones
          repeated); gridlines and hover times in UTC, the table in your time zone.
        </figcaption>
        <Legend />
      </figure>
      <h2>Reservations</h2>
      <ReservationsTable reservations={reservations} />
    </>
  );
};
