/** @jsxImportSource hono/jsx */
import { FINAL_STATES, type JobState } from '../../../db/schema.ts';
import type { AttemptView, explainJob, JobView } from '../../domain/jobs.ts';
import { megabytes, StateBadge, Time } from './format.tsx';
import { nodePath } from './jobs-table.tsx';

type JobWithScript = JobView & { script?: string; environment?: Record<string, string> };

const dash = (v: string | number | null | undefined) => (v === null || v === undefined || v === '' ? '–' : v);

/** `2 (a100), indexes 0, 2`: how many GPUs, of which model, and which ones it holds. */
function gpusText(job: JobView): string {
  if (job.gpus === 0) return 'none';
  const held =
    job.allocated_gpus && job.allocated_gpus.length > 0 ? `, indexes ${job.allocated_gpus.join(', ')}` : '';
  return `${job.gpus}${job.gpu_type ? ` (${job.gpu_type})` : ''}${held}`;
}

/** What a job asked for beyond CPUs, as the page lists it. */
export function resourceFields(job: JobView): [string, string][] {
  const gres = Object.entries(job.gres ?? {});
  return [
    ['Memory', job.memory_mb === null ? 'no limit' : megabytes(job.memory_mb)],
    ['GPUs', gpusText(job)],
    ['Generic resources', gres.length === 0 ? '–' : gres.map(([name, n]) => `${name}:${n}`).join(', ')],
    ['Constraint', job.constraint ?? '–'],
    ['Exclusive', job.exclusive ? 'yes: the whole node' : 'no'],
    ['Node list', job.nodelist && job.nodelist.length > 0 ? job.nodelist.join(', ') : '–'],
    ['Excluded nodes', job.exclude.length > 0 ? job.exclude.join(', ') : '–'],
  ];
}

/**
 * One job: every field `conductor show` prints, its attempts and its script. `data-final` tells the client
 * script to stop following it.
 */
export const JobDetail = ({
  job,
  canCancel,
  attempts = [],
}: {
  job: JobWithScript;
  canCancel: boolean;
  attempts?: AttemptView[];
}) => {
  const final = FINAL_STATES.includes(job.state);
  const fields: [string, unknown][] = [
    ['State', job.state],
    ['Exit code', dash(job.exit_code)],
    ['Node', job.node ? <a href={nodePath(job.node)}>{job.node}</a> : '–'],
    ['CPUs', job.cpus],
    ...resourceFields(job),
    ['Account', dash(job.account)],
    ['Partition', dash(job.partition)],
    ['Time limit', job.time_limit === null ? 'none' : `${job.time_limit} min`],
    ['Work dir', dash(job.work_dir)],
    ['Priority', job.priority],
    ['Submitted', <Time at={job.submit_time} />],
    ['Started', <Time at={job.start_time} />],
    ['Ended', <Time at={job.end_time} />],
    ['Reason', dash(job.reason)],
    ['Reason detail', dash(job.reason_detail)],
    ['Held', job.held === null ? 'no' : `yes, by ${job.held === 'admin' ? 'an admin' : 'its owner'}`],
    ['Owner', dash(job.owner)],
    ['Cancel requested', job.cancel_requested ? 'yes' : 'no'],
  ];
  const env = Object.entries(job.environment ?? {});
  return (
    <div data-final={String(final)}>
      <h1 id="d-h">
        Job #{job.id} {job.name} <StateBadge state={job.state} />
      </h1>
      {canCancel && !final ? (
        <div class="row">
          <button id="cancel" class="danger" type="button" data-action={`/api/v1/jobs/${job.id}/cancel`}>
            Cancel job
          </button>
        </div>
      ) : null}
      <section aria-labelledby="f-h">
        <h2 id="f-h">Details</h2>
        <dl class="fields" id="fields">
          {fields.map(([label, value]) => (
            <>
              <dt>{label}</dt>
              <dd data-field={label}>{value}</dd>
            </>
          ))}
        </dl>
      </section>
      <section aria-labelledby="a-h">
        <h2 id="a-h">Attempts</h2>
        <p id="attempts">
          {job.attempt === 0
            ? 'Not placed yet.'
            : `Placed ${job.attempt} time${job.attempt === 1 ? '' : 's'}; the output below is attempt ${job.attempt}'s.`}{' '}
          {job.requeue ? 'Requeued if its node is lost.' : 'Not requeued if its node is lost.'}
        </p>
        {attempts.length > 1 || (attempts.length === 1 && attempts[0]?.requeued) ? (
          <div class="scroll">
            <table id="attempts-table">
              <caption class="visually-hidden">Each run of the job on a node, first to last</caption>
              <thead>
                <tr>
                  <th scope="col">#</th>
                  <th scope="col">Node</th>
                  <th scope="col">Started</th>
                  <th scope="col">Ended</th>
                  <th scope="col">State</th>
                  <th scope="col">Exit code</th>
                  <th scope="col">Reason</th>
                </tr>
              </thead>
              <tbody>
                {attempts.map((a) => (
                  <tr>
                    <td>{a.attempt}</td>
                    <td>{a.node ? <a href={nodePath(a.node)}>{a.node}</a> : '–'}</td>
                    <td>
                      <Time at={a.start_time} />
                    </td>
                    <td>
                      <Time at={a.end_time} />
                    </td>
                    <td>
                      <StateBadge state={a.state as JobState} />
                      {a.requeued ? ' requeued' : ''}
                    </td>
                    <td>{dash(a.exit_code)}</td>
                    <td>{dash(a.reason)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        ) : null}
      </section>
      {env.length > 0 ? (
        <section aria-labelledby="e-h">
          <h2 id="e-h">Environment</h2>
          <dl class="fields">
            {env.map(([k, v]) => (
              <>
                <dt>{k}</dt>
                <dd>{v}</dd>
              </>
            ))}
          </dl>
        </section>
      ) : null}
      <section aria-labelledby="s-h">
        <h2 id="s-h">Script</h2>
        <pre id="script">{job.script ?? ''}</pre>
      </section>
    </div>
  );
};

export type JobExplanation = Awaited<ReturnType<typeof explainJob>>;

/**
 * Why a pending job waits, node by node (`GET /api/v1/jobs/:id/explain`): the nodes it fits first. Once the
 * job no longer waits, an empty final part (the page stops asking).
 */
export const JobExplain = ({ explanation }: { explanation: JobExplanation | null }) => {
  if (explanation === null) return <div data-final="true" />;
  const nodes = [...explanation.nodes].sort((a, b) => Number(b.fits) - Number(a.fits));
  return (
    <section aria-labelledby="x-h" data-final="false">
      <h2 id="x-h">Why it waits</h2>
      <p id="explain-reason">
        {explanation.reason ?? 'None'}
        {explanation.reason_detail ? `: ${explanation.reason_detail}` : ''}
      </p>
      {nodes.length === 0 ? (
        <p class="empty">No node has registered yet.</p>
      ) : (
        <div class="scroll">
          <table>
            <caption class="visually-hidden">Each node, and whether the job could start there now</caption>
            <thead>
              <tr>
                <th scope="col">Node</th>
                <th scope="col">Fits now</th>
                <th scope="col">Why not</th>
              </tr>
            </thead>
            <tbody>
              {nodes.map((n) => (
                <tr data-explain-node={n.node}>
                  <td>
                    <a href={nodePath(n.node)}>{n.node}</a>
                  </td>
                  <td>{n.fits ? 'yes' : 'no'}</td>
                  <td>
                    {n.why.length === 0 ? (
                      '–'
                    ) : (
                      <ul class="why">
                        {n.why.map((w) => (
                          <li>{w}</li>
                        ))}
                      </ul>
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
};
