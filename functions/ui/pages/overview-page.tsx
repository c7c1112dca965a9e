/** @jsxImportSource hono/jsx */
import { JOB_STATES } from '../../../db/schema.ts';
import { Layout, Region } from '../components/layout.tsx';

/** `/`: capacity, workers and jobs at a glance, the utilization chart, the job list with its filters. */
export const OverviewPage = ({ query }: { query: URLSearchParams }) => {
  const state = query.get('state') ?? '';
  return (
    <Layout title="Conductor" current="overview">
      <h1 class="visually-hidden">Cluster overview</h1>
      <Region id="overview" src="/api/v1/ui/fragments/overview" every={3000} />
      <section aria-labelledby="u-h">
        <h2 id="u-h">Utilization</h2>
        <fieldset class="row">
          <legend>Over the last</legend>
          <button type="button" data-window="1h" aria-pressed="true">
            hour
          </button>
          <button type="button" data-window="24h" aria-pressed="false">
            24 h
          </button>
        </fieldset>
        <figure>
          <div id="chart" class="chart" aria-hidden="true" />
          <figcaption id="chart-caption">Utilization: loading</figcaption>
        </figure>
      </section>
      <section aria-labelledby="j-h">
        <h2 id="j-h">Jobs</h2>
        <search>
          <form id="filters" class="row" action="/" method="get">
            <label for="state">State</label>
            <select id="state" name="state">
              <option value="">all</option>
              {JOB_STATES.map((s) => (
                <option selected={s === state}>{s}</option>
              ))}
            </select>
            <label for="q">Search</label>
            <input id="q" name="q" type="search" placeholder="name or account" value={query.get('q') ?? ''} />
            {/* An array's tasks (`/?array=<id>`, the link of its row): the filters keep to them. */}
            {query.get('array') ? (
              <input type="hidden" name="array" value={query.get('array') ?? ''} />
            ) : null}
          </form>
        </search>
        <Region id="jobs" src={`/api/v1/ui/fragments/jobs?${query}`} every={3000} />
      </section>
    </Layout>
  );
};
