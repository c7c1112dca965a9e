/** @jsxImportSource hono/jsx */
import type { UiWorkerDetail } from '../../domain/dashboard.ts';
import { ago, megabytes, StateBadge, Time, UsageBar } from './format.tsx';
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
        <h3>In use</h3>
        <dl class="fields">
          <dt>CPUs</dt>
          <dd id="node-cpus-used">
            <UsageBar label="CPUs used" used={w.allocated_cpus} total={w.cpus} />
          </dd>
          <dt>Memory</dt>
          <dd id="node-memory">
            {w.memory_mb === 0 ? (
              'none reported'
            ) : (
              <UsageBar
                label="Memory used"
                used={w.allocated_memory_mb}
                total={w.memory_mb}
                format={megabytes}
              />
            )}
          </dd>
          <dt>GPUs</dt>
          <dd id="node-gpus">
            {w.gpus === 0 ? (
              'none'
            ) : (
              <>
                <UsageBar label="GPUs used" used={w.allocated_gpus} total={w.gpus} />{' '}
                {w.gpu_devices.map((g) => `${g.index}: ${g.model}${g.used ? ' (in use)' : ''}`).join(', ')}
              </>
            )}
          </dd>
          {Object.entries(w.gres).map(([name, g]) => (
            <>
              <dt>{name}</dt>
              <dd data-gres={name}>
                <UsageBar label={`${name} used`} used={g.allocated} total={g.total} />
              </dd>
            </>
          ))}
          <dt>Features</dt>
          <dd data-field="Features">{w.features.length > 0 ? w.features.join(', ') : '–'}</dd>
          <dt>Partitions</dt>
          <dd data-field="Partitions">{w.partitions.length > 0 ? w.partitions.join(', ') : '–'}</dd>
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
