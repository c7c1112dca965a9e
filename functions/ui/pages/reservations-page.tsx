/** @jsxImportSource hono/jsx */
import { TIMELINE_RANGES, type TimelineRange } from '../../domain/reservation-timeline.ts';
import { Layout, Region } from '../components/layout.tsx';

const LABELS: Record<TimelineRange, string> = { '1d': '1 day', '7d': '7 days', '30d': '30 days' };

/**
 * `/ui/reservations`: the reservations' windows as a timeline over the next 1, 7 or 30 days (`?range=`, 7 days
 * unless it is one of those) and a table of them, from `/api/v1/ui/fragments/reservations`, refreshed every
 * minute (the line at now moves).
 */
export const ReservationsPage = ({ range: asked }: { range: string | undefined }) => {
  const range = TIMELINE_RANGES.find((r) => r === asked) ?? '7d';
  return (
    <Layout title="Reservations · Conductor" current="reservations">
      <h1>Reservations</h1>
      <fieldset class="row">
        <legend>Over the next</legend>
        {TIMELINE_RANGES.map((r) => (
          <button type="button" data-range={r} aria-pressed={String(r === range)}>
            {LABELS[r]}
          </button>
        ))}
      </fieldset>
      <section aria-labelledby="res-h">
        <h2 id="res-h">Timeline</h2>
        <Region id="reservations" src={`/api/v1/ui/fragments/reservations?range=${range}`} every={60_000} />
      </section>
    </Layout>
  );
};
