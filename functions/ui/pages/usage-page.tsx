/** @jsxImportSource hono/jsx */
import { Layout } from '../components/layout.tsx';

const Chart = ({ id, title }: { id: string; title: string }) => (
  <figure>
    <div id={id} class="chart" data-usage-chart={id} aria-hidden="true" />
    <figcaption id={`${id}-caption`}>{title}: loading</figcaption>
  </figure>
);

/**
 * `/ui/usage`: who used the cluster and how busy it was, per hour (last day, last week) or per day (last
 * month), from the usage roll-ups (`/api/v1/ui/usage`); the charts are drawn by the client script, and the
 * table under them says the same in text.
 */
export const UsagePage = () => (
  <Layout title="Usage · Conductor" current="usage">
    <h1>Usage</h1>
    <fieldset class="row">
      <legend>Over the last</legend>
      <button type="button" data-period="day" aria-pressed="true">
        day
      </button>
      <button type="button" data-period="week" aria-pressed="false">
        week
      </button>
      <button type="button" data-period="month" aria-pressed="false">
        month
      </button>
    </fieldset>
    <section aria-labelledby="util-h">
      <h2 id="util-h">Utilization</h2>
      <Chart id="usage-utilization" title="Utilization" />
    </section>
    <section aria-labelledby="acct-h">
      <h2 id="acct-h">CPU-hours per account</h2>
      <Chart id="usage-accounts" title="CPU-hours per account" />
      <table id="usage-accounts-table">
        <caption class="visually-hidden">CPU-hours per account over the period</caption>
        <thead>
          <tr>
            <th scope="col">Account</th>
            <th scope="col">CPU-hours</th>
          </tr>
        </thead>
        <tbody />
      </table>
    </section>
    <section aria-labelledby="trend-h">
      <h2 id="trend-h">Trends per partition</h2>
      <Chart id="usage-wait" title="Mean queue wait per partition" />
      <Chart id="usage-partitions" title="CPU-hours per partition" />
      <Chart id="usage-partition-utilization" title="Utilization per partition" />
    </section>
    <p>
      Usage counts once a job's attempt has ended, in the hours it ran; utilization is CPU-hours used over the
      CPU-hours the live workers offered.
    </p>
  </Layout>
);
