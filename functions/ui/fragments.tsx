/** @jsxImportSource hono/jsx */
/**
 * The views' HTML, rendered on the server from the API's own data (the domain functions' return types) and
 * fetched by the client script with the browser's token: `/api/v1/ui/fragments/...` (routes/ui.ts).
 */
import type { AccountView } from '../domain/accounts.ts';
import type { listUiJobs, listUiWorkers, Overview, UiWorkerDetail } from '../domain/dashboard.ts';
import type { AttemptView, JobView } from '../domain/jobs.ts';
import type { liveFairShare } from '../domain/priority.ts';
import type { reservationTimeline } from '../domain/reservation-timeline.ts';
import { AccountForms, AccountsTree } from './components/accounts.tsx';
import { JobDetail, JobExplain, type JobExplanation } from './components/job-detail.tsx';
import { JobsTable } from './components/jobs-table.tsx';
import { NodeDetail } from './components/node-detail.tsx';
import { OverviewPanel } from './components/overview.tsx';
import { ReservationsView } from './components/reservation-timeline.tsx';
import { WorkersTable } from './components/workers-table.tsx';

/** `canManage`: the viewer is an admin, who may take a partition down or bring it up. */
export const overviewFragment = (overview: Overview, origin: string, canManage = false) => (
  <OverviewPanel overview={overview} origin={origin} canManage={canManage} />
);

/** `filters`: the list's query (state, q), kept in the link to older jobs. */
export function jobsFragment(page: Awaited<ReturnType<typeof listUiJobs>>, filters: URLSearchParams) {
  let older: string | undefined;
  if (page.next_before !== null) {
    const next = new URLSearchParams(filters);
    next.set('before', String(page.next_before));
    older = `/?${next}`;
  }
  return <JobsTable jobs={page.jobs} caption="Jobs, newest first" older={older} />;
}

export function nodesFragment(page: Awaited<ReturnType<typeof listUiWorkers>>, canDrain: boolean) {
  if (page.workers.length === 0) return <p class="empty">No workers (live or down within the hour).</p>;
  const next =
    page.next_after === null ? undefined : `/ui/nodes?after=${encodeURIComponent(page.next_after)}`;
  return <WorkersTable workers={page.workers} canDrain={canDrain} next={next} />;
}

export const nodeFragment = (detail: UiWorkerDetail, canDrain: boolean) => (
  <NodeDetail detail={detail} canDrain={canDrain} />
);

export const jobFragment = (job: JobView, canCancel: boolean, attempts: AttemptView[] = []) => (
  <JobDetail job={job} canCancel={canCancel} attempts={attempts} />
);

/** `explanation`: null once the job no longer waits. */
export const jobExplainFragment = (explanation: JobExplanation | null) => (
  <JobExplain explanation={explanation} />
);

export const reservationsFragment = (data: Awaited<ReturnType<typeof reservationTimeline>>) => (
  <ReservationsView timeline={data.timeline} reservations={data.reservations} />
);
// ---------------------------------------------------------------- the accounts page

/** `canManage`: the viewer is an admin, who may delete accounts and remove users or change their default. */
export const accountsFragment = (
  accounts: AccountView[],
  fairshare: Awaited<ReturnType<typeof liveFairShare>>,
  canManage: boolean,
) => <AccountsTree accounts={accounts} fairshare={fairshare} canManage={canManage} />;

/** The admins' forms, nothing for anyone else: loaded once, not refreshed with the tree, so what is typed in stays. */
export const accountFormsFragment = (accounts: AccountView[], canManage: boolean) =>
  canManage ? <AccountForms accounts={accounts} /> : '';
