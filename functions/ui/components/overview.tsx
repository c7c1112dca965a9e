/** @jsxImportSource hono/jsx */
import { JOB_STATES } from '../../../db/schema.ts';
import type { Overview } from '../../domain/dashboard.ts';

/** What an operator types on a new node; shown while no worker is live. */
export const NoWorkers = ({ origin }: { origin: string }) => (
  <div class="empty" id="no-workers">
    <p>
      <strong>No active workers: start one with npx conductor-agent</strong>
    </p>
    <pre>{`export CONDUCTOR_URL=${origin}
export CONDUCTOR_TOKEN=cnd_...     # the node's agent token
export NODE_NAME=worker-node-01   # unique per node; default: the hostname
export TOTAL_CPUS=96              # default: the machine's CPU count
npx conductor-agent`}</pre>
  </div>
);

const Stat = ({ id, label, value }: { id: string; label: string; value: string | number }) => (
  <div class="stat">
    <dt>{label}</dt>
    <dd id={id}>{value}</dd>
  </div>
);

/** The cluster at a glance: capacity, workers by state, jobs by state. Summaries only, whatever the size. */
export const OverviewPanel = ({ overview, origin }: { overview: Overview; origin: string }) => {
  const r = overview.resources;
  const w = overview.workers;
  return (
    <div>
      <section aria-labelledby="cap-h">
        <h2 id="cap-h">Cluster capacity</h2>
        <dl class="stats">
          <Stat id="total" label="Total CPUs" value={r.total_cpus} />
          <Stat id="allocated" label="Allocated" value={r.allocated_cpus} />
          <Stat id="available" label="Available" value={r.available_cpus} />
          <Stat id="utilization" label="Utilization" value={`${r.utilization}%`} />
        </dl>
      </section>
      <section aria-labelledby="w-h">
        <h2 id="w-h">Workers</h2>
        {w.live === 0 ? <NoWorkers origin={origin} /> : null}
        <dl class="stats">
          <Stat id="workers-live" label="Live" value={w.live} />
          <Stat id="workers-ready" label="Ready" value={w.ready} />
          <Stat id="workers-draining" label="Draining" value={w.draining} />
          <Stat id="workers-down" label="Down (last hour)" value={w.down_last_hour} />
        </dl>
        <p>
          <a href="/ui/nodes">All workers →</a>
        </p>
      </section>
      <section aria-labelledby="c-h">
        <h2 id="c-h">Jobs by state</h2>
        <dl class="stats">
          {JOB_STATES.map((s) => (
            <Stat id={`count-${s}`} label={s} value={overview.jobs[s] ?? 0} />
          ))}
        </dl>
      </section>
    </div>
  );
};
