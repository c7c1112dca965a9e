/** @jsxImportSource hono/jsx */
import { Layout, Region } from '../components/layout.tsx';

/**
 * `/ui/accounts`: the account tree with shares, limits, users and fair-share (refreshed every 15 s), and for an
 * admin's token the forms that change it (the client script posts them to `/api/v1/accounts`).
 */
export const AccountsPage = () => (
  <Layout title="Accounts · Conductor" current="accounts">
    <h1>Accounts</h1>
    <section aria-labelledby="tree-h">
      <h2 id="tree-h">Accounts, users and fair-share</h2>
      <Region id="accounts" src="/api/v1/ui/fragments/accounts" every={15_000} />
      <p class="hint">
        Fair-share as sshare computes it now: normalized shares S (an account's shares over its siblings',
        times its parent's), decayed CPU-seconds, effective usage U (over the whole cluster's) and the factor
        2^(-U/S) the scheduler weighs. A user's S is the account's split by its users' shares.
      </p>
    </section>
    <p id="account-status" class="ok" role="status" />
    <Region id="account-forms" src="/api/v1/ui/fragments/accounts/forms" every={0} />
  </Layout>
);
