/** @jsxImportSource hono/jsx */
import type { ArrayView } from '../../domain/array-ops.ts';
import type { JobView } from '../../domain/jobs.ts';
import { StateBadge, Time } from './format.tsx';

export const jobPath = (id: number) => `/ui/jobs/${id}`;
export const nodePath = (id: string) => `/ui/nodes/${encodeURIComponent(id)}`;

/** An array's tasks, one row each (the array's row expands to them). */
export const arrayPath = (id: number) => `/?array=${id}`;

/** An array's progress in words: how many tasks are in each state. */
const progress = (a: ArrayView) =>
  `${a.counts.pending} pending · ${a.counts.running} running · ${a.counts.completed} done · ${a.counts.failed} failed` +
  (a.counts.cancelled > 0 ? ` · ${a.counts.cancelled} cancelled` : '');

/**
 * Jobs, newest first; `older` links to the next page (keyset: ids below the last one shown). A job array is one
 * row (`array`: its progress) whose tasks open with its "tasks" link.
 */
export const JobsTable = ({
  jobs,
  caption,
  older,
}: {
  jobs: (JobView & { array?: ArrayView })[];
  caption: string;
  older?: string;
}) =>
  jobs.length === 0 ? (
    <p class="empty">No jobs match.</p>
  ) : (
    <div class="scroll">
      <table>
        <caption class="visually-hidden">{caption}</caption>
        <thead>
          <tr>
            <th scope="col">ID</th>
            <th scope="col">Name</th>
            <th scope="col" class="hide-s">
              Account
            </th>
            <th scope="col">State</th>
            <th scope="col">CPUs</th>
            <th scope="col" class="hide-s">
              Node
            </th>
            <th scope="col" class="hide-s">
              Submitted
            </th>
          </tr>
        </thead>
        <tbody>
          {jobs.map((j) => (
            <tr data-job={j.id} data-array={j.array ? j.array.array_job_id : undefined}>
              <td>
                {j.array ? (
                  <>
                    <a href={arrayPath(j.id)} aria-label={`tasks of array ${j.id}`}>
                      #{j.id}_[{j.array.spec}]
                    </a>{' '}
                    <span class="array-size">({j.array.task_count} tasks)</span>
                  </>
                ) : (
                  <a href={jobPath(j.id)}>#{j.slurm_id === String(j.id) ? j.id : j.slurm_id}</a>
                )}
              </td>
              <td>{j.name}</td>
              <td class="hide-s">{j.account ?? ''}</td>
              <td>
                {j.array ? (
                  <span class="array-progress">{progress(j.array)}</span>
                ) : (
                  <StateBadge state={j.state} />
                )}
              </td>
              <td>{j.cpus}</td>
              <td class="hide-s">{j.node ? <a href={nodePath(j.node)}>{j.node}</a> : ''}</td>
              <td class="hide-s">
                <Time at={j.submit_time} />
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      {older ? (
        <p>
          <a href={older} rel="next">
            Older jobs →
          </a>
        </p>
      ) : null}
    </div>
  );
