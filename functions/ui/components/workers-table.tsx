/** @jsxImportSource hono/jsx */
import type { UiWorker } from '../../domain/dashboard.ts';
import { ago, megabytes, StateBadge, UsageBar } from './format.tsx';
import { nodePath } from './jobs-table.tsx';

/** Drain or undrain (admins only; a down worker has nothing to drain). */
export const DrainButton = ({ worker }: { worker: Pick<UiWorker, 'worker_id' | 'status'> }) => {
  if (worker.status === 'down') return null;
  const drain = worker.status === 'ready';
  const id = encodeURIComponent(worker.worker_id);
  return (
    <button
      type="button"
      data-action={`/api/v1/workers/${id}/${drain ? 'drain' : 'undrain'}`}
      aria-label={`${drain ? 'Drain' : 'Undrain'} ${worker.worker_id}`}
    >
      {drain ? 'Drain' : 'Undrain'}
    </button>
  );
};

/** A page of workers; `next` links to the following page (keyset: ids after the last one shown). */
export const WorkersTable = ({
  workers,
  canDrain,
  next,
}: {
  workers: UiWorker[];
  canDrain: boolean;
  next?: string;
}) => (
  <div class="scroll">
    <table>
      <caption class="visually-hidden">Workers</caption>
      <thead>
        <tr>
          <th scope="col">Name</th>
          <th scope="col" class="hide-s">
            Hostname
          </th>
          <th scope="col">CPUs used</th>
          <th scope="col">Memory used</th>
          <th scope="col">GPUs used</th>
          <th scope="col" class="hide-s">
            Partitions
          </th>
          <th scope="col">Status</th>
          <th scope="col">Heartbeat</th>
          <th scope="col">Running jobs</th>
          {canDrain ? (
            <th scope="col">
              <span class="visually-hidden">Actions</span>
            </th>
          ) : null}
        </tr>
      </thead>
      <tbody>
        {workers.map((w) => (
          <tr data-worker={w.worker_id}>
            <td>
              <a href={nodePath(w.worker_id)}>{w.worker_id}</a>
            </td>
            <td class="hide-s">{w.hostname}</td>
            <td>
              <UsageBar label={`${w.worker_id} CPUs used`} used={w.allocated_cpus} total={w.cpus} />
            </td>
            <td>
              <UsageBar
                label={`${w.worker_id} memory used`}
                used={w.allocated_memory_mb}
                total={w.memory_mb}
                format={megabytes}
              />
            </td>
            <td>
              <UsageBar label={`${w.worker_id} GPUs used`} used={w.allocated_gpus} total={w.gpus} />
            </td>
            <td class="hide-s">{w.partitions.join(', ')}</td>
            <td>
              <StateBadge state={w.status} />
            </td>
            <td>{ago(w.last_heartbeat)}</td>
            <td>{w.running_jobs}</td>
            {canDrain ? (
              <td>
                <DrainButton worker={w} />
              </td>
            ) : null}
          </tr>
        ))}
      </tbody>
    </table>
    {next ? (
      <p>
        <a href={next} rel="next">
          More workers →
        </a>
      </p>
    ) : null}
  </div>
);
