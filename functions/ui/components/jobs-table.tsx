/** @jsxImportSource hono/jsx */
import type { JobView } from '../../domain/jobs.ts';
import { StateBadge, Time } from './format.tsx';

export const jobPath = (id: number) => `/ui/jobs/${id}`;
export const nodePath = (id: string) => `/ui/nodes/${encodeURIComponent(id)}`;

/** Jobs, newest first; `older` links to the next page (keyset: ids below the last one shown). */
export const JobsTable = ({ jobs, caption, older }: { jobs: JobView[]; caption: string; older?: string }) =>
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
            <tr data-job={j.id}>
              <td>
                <a href={jobPath(j.id)}>#{j.id}</a>
              </td>
              <td>{j.name}</td>
              <td class="hide-s">{j.account ?? ''}</td>
              <td>
                <StateBadge state={j.state} />
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
