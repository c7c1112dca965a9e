/** @jsxImportSource hono/jsx */
import { FINAL_STATES } from '../../../db/schema.ts';
import type { JobView } from '../../domain/jobs.ts';
import { StateBadge, Time } from './format.tsx';
import { nodePath } from './jobs-table.tsx';

type JobWithScript = JobView & { script?: string; environment?: Record<string, string> };

const dash = (v: string | number | null | undefined) => (v === null || v === undefined || v === '' ? '–' : v);

/**
 * One job: every field `conductor show` prints, its attempts and its script. `data-final` tells the client
 * script to stop following it.
 */
export const JobDetail = ({ job, canCancel }: { job: JobWithScript; canCancel: boolean }) => {
  const final = FINAL_STATES.includes(job.state);
  const fields: [string, unknown][] = [
    ['State', job.state],
    ['Exit code', dash(job.exit_code)],
    ['Node', job.node ? <a href={nodePath(job.node)}>{job.node}</a> : '–'],
    ['CPUs', job.cpus],
    ['Account', dash(job.account)],
    ['Partition', dash(job.partition)],
    ['Time limit', job.time_limit === null ? 'none' : `${job.time_limit} min`],
    ['Work dir', dash(job.work_dir)],
    ['Priority', job.priority],
    ['Submitted', <Time at={job.submit_time} />],
    ['Started', <Time at={job.start_time} />],
    ['Ended', <Time at={job.end_time} />],
    ['Reason', dash(job.reason)],
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
