/** @jsxImportSource hono/jsx */
import { JOB_STATES } from '../../../db/schema.ts';
import type { Overview, PartitionSummary } from '../../domain/dashboard.ts';
import { megabytes, StateBadge, UsageBar } from './format.tsx';

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

/** `name 3/8, name 0/2`: resources by name or model, with how many are held. */
const byName = (entries: Record<string, { total: number; allocated: number }>) =>
  Object.entries(entries)
    .map(([name, r]) => `${name || 'unknown'} ${r.allocated}/${r.total}`)
    .join(', ');

/**
 * Takes a partition DOWN (it keeps its jobs and starts none) or brings it back UP: an admin's, as with
 * `conductor partition <name> --state`.
 */
const PartitionStateButton = ({ partition }: { partition: Pick<PartitionSummary, 'name' | 'state'> }) => {
  const next = partition.state === 'UP' ? 'DOWN' : 'UP';
  return (
    <button
      type="button"
      data-action={`/api/v1/partitions/${encodeURIComponent(partition.name)}`}
      data-body={JSON.stringify({ state: next })}
      aria-label={`Set partition ${partition.name} ${next}`}
    >
      Set {next}
    </button>
  );
};

/** The partitions as sinfo summarizes them, with their jobs; admins may set them DOWN or UP. */
export const PartitionsTable = ({
  partitions,
  canManage = false,
}: {
  partitions: PartitionSummary[];
  canManage?: boolean;
}) => (
  <div class="scroll">
    <table>
      <caption class="visually-hidden">Partitions</caption>
      <thead>
        <tr>
          <th scope="col">Partition</th>
          <th scope="col">State</th>
          <th scope="col">Nodes</th>
          <th scope="col">CPUs used</th>
          <th scope="col">GPUs used</th>
          <th scope="col">Pending</th>
          <th scope="col">Running</th>
          {canManage ? <th scope="col">Admin</th> : null}
        </tr>
      </thead>
      <tbody>
        {partitions.map((p) => (
          <tr data-partition={p.name}>
            <td>
              {p.name}
              {p.default ? ' (default)' : ''}
            </td>
            <td>
              <StateBadge state={p.state} />
            </td>
            <td>{p.live_nodes}</td>
            <td>
              <UsageBar label={`${p.name} CPUs used`} used={p.allocated_cpus} total={p.total_cpus} />
            </td>
            <td>
              <UsageBar label={`${p.name} GPUs used`} used={p.allocated_gpus} total={p.total_gpus} />
            </td>
            <td>{p.pending_jobs ?? '–'}</td>
            <td>{p.running_jobs}</td>
            {canManage ? (
              <td>
                <PartitionStateButton partition={p} />
              </td>
            ) : null}
          </tr>
        ))}
      </tbody>
    </table>
  </div>
);

/** The cluster at a glance: capacity, partitions, workers by state, jobs by state. Summaries only, whatever the size. */
export const OverviewPanel = ({
  overview,
  origin,
  canManage = false,
}: {
  overview: Overview;
  origin: string;
  canManage?: boolean;
}) => {
  const r = overview.resources;
  const w = overview.workers;
  const { memory, gpus, gres } = overview;
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
        <h3>Memory and GPUs</h3>
        <dl class="stats">
          <Stat id="memory-total" label="Memory" value={megabytes(memory.total_mb)} />
          <Stat id="memory-allocated" label="Memory allocated" value={megabytes(memory.allocated_mb)} />
          <Stat id="memory-available" label="Memory available" value={megabytes(memory.available_mb)} />
          <Stat id="gpus-total" label="GPUs" value={gpus.total} />
          <Stat id="gpus-allocated" label="GPUs allocated" value={gpus.allocated} />
          <Stat id="gpus-available" label="GPUs available" value={gpus.available} />
        </dl>
        {gpus.total > 0 ? (
          <p class="resources-line" id="gpu-models">
            GPUs by model (allocated/total): {byName(gpus.by_model)}
          </p>
        ) : null}
        {Object.keys(gres).length > 0 ? (
          <p class="resources-line" id="gres">
            Generic resources (allocated/total): {byName(gres)}
          </p>
        ) : null}
      </section>
      <section aria-labelledby="p-h">
        <h2 id="p-h">Partitions</h2>
        <div id="partitions">
          <PartitionsTable partitions={overview.partitions} canManage={canManage} />
        </div>
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
