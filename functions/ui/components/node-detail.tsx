/** @jsxImportSource hono/jsx */
import type { UiWorkerDetail } from '../../domain/dashboard.ts';
import { ago, StateBadge, Time } from './format.tsx';
import { JobsTable } from './jobs-table.tsx';
import { DrainButton } from './workers-table.tsx';

/** One node: its resources and state, its running jobs, its recent history. */
export const NodeDetail = ({ detail, canDrain }: { detail: UiWorkerDetail; canDrain: boolean }) => {
  const w = detail.worker;
  const labels = Object.entries(w.labels);
  return (
    <div>
      <h1 id="n-h">
        Node {w.worker_id} <StateBadge state={w.status} />
      </h1>
      {canDrain ? (
        <div class="row" data-worker={w.worker_id}>
          <DrainButton worker={w} />
        </div>
      ) : null}
      <section aria-labelledby="r-h">
        <h2 id="r-h">Resources</h2>
        <dl class="stats">
          <div class="stat">
            <dt>CPUs</dt>
            <dd id="node-cpus">{w.cpus}</dd>
          </div>
          <div class="stat">
            <dt>Allocated</dt>
            <dd id="node-allocated">{w.allocated_cpus}</dd>
          </div>
          <div class="stat">
            <dt>Available</dt>
            <dd id="node-available">{w.available_cpus}</dd>
          </div>
          <div class="stat">
            <dt>Running jobs</dt>
            <dd id="node-running">{w.running_jobs}</dd>
          </div>
        </dl>
        <h3>Agent</h3>
        <dl class="fields">
          <dt>Hostname</dt>
          <dd data-field="Hostname">{w.hostname}</dd>
          <dt>Status</dt>
          <dd data-field="Status">{w.status}</dd>
          <dt>Last heartbeat</dt>
          <dd data-field="Last heartbeat">
            <Time at={w.last_heartbeat} /> ({ago(w.last_heartbeat)})
          </dd>
          <dt>Registered</dt>
          <dd data-field="Registered">
            <Time at={w.registered_at} />
          </dd>
          <dt>Agent version</dt>
          <dd data-field="Agent version">{w.agent_version ?? '–'}</dd>
          {w.down_at ? (
            <>
              <dt>Down since</dt>
              <dd data-field="Down since">
                <Time at={w.down_at} /> {w.down_reason ? `(${w.down_reason})` : ''}
              </dd>
            </>
          ) : null}
          {labels.length > 0 ? (
            <>
              <dt>Labels</dt>
              <dd data-field="Labels">{labels.map(([k, v]) => `${k}=${v}`).join(', ')}</dd>
            </>
          ) : null}
        </dl>
      </section>
      <section aria-labelledby="run-h">
        <h2 id="run-h">Running jobs</h2>
        <div id="node-running-jobs">
          <JobsTable jobs={detail.running} caption={`Jobs running on ${w.worker_id}`} />
        </div>
      </section>
      <section aria-labelledby="hist-h">
        <h2 id="hist-h">Recent history</h2>
        <div id="node-history">
          <JobsTable jobs={detail.recent} caption={`Recent jobs of ${w.worker_id}`} />
        </div>
      </section>
    </div>
  );
};
