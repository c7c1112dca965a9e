/** @jsxImportSource hono/jsx */
import type { AccountUserView, AccountView } from '../../domain/accounts.ts';
import type { liveFairShare } from '../../domain/priority.ts';

type FairShareRow = Awaited<ReturnType<typeof liveFairShare>>[number];
interface Figures {
  norm_shares: number;
  raw_usage: number;
  norm_usage: number;
  fairshare: number;
}
type Limits = Omit<AccountUserView, 'user' | 'default'>;

/** Deepest indentation drawn (the style sheet has a step per level up to it). */
const MAX_INDENT = 8;

/** Minutes as Slurm writes a time limit: `[D-]HH:MM:SS`. */
export function slurmMinutes(minutes: number): string {
  const total = Math.round(minutes * 60);
  const d = Math.floor(total / 86_400);
  const pad = (n: number) => String(n).padStart(2, '0');
  const hms = `${pad(Math.floor((total % 86_400) / 3600))}:${pad(Math.floor((total % 3600) / 60))}:${pad(total % 60)}`;
  return d > 0 ? `${d}-${hms}` : hms;
}

const four = (n: number | undefined) => (n === undefined ? '–' : n.toFixed(4));

/** The limits set, as sacctmgr writes them (`MaxJobs=20`); none set: an empty cell. */
const LimitsCell = ({ limits }: { limits: Limits }) => {
  const tres = [
    limits.grp_cpus === null ? null : `cpu=${limits.grp_cpus}`,
    limits.grp_gpus === null ? null : `gres/gpu=${limits.grp_gpus}`,
  ].filter((t) => t !== null);
  const set: [string, string, string | null][] = [
    ['max_jobs', 'MaxJobs', limits.max_jobs === null ? null : String(limits.max_jobs)],
    ['max_submit_jobs', 'MaxSubmit', limits.max_submit_jobs === null ? null : String(limits.max_submit_jobs)],
    ['grp_tres', 'GrpTRES', tres.length > 0 ? tres.join(',') : null],
    ['max_wall', 'MaxWall', limits.max_wall === null ? null : slurmMinutes(limits.max_wall)],
    ['grp_cpu_mins', 'GrpTRESMins', limits.grp_cpu_mins === null ? null : `cpu=${limits.grp_cpu_mins}`],
  ];
  return (
    <td class="limits">
      {set
        .filter(([, , value]) => value !== null)
        .map(([field, name, value]) => (
          <span class="limit" data-limit={field}>
            {name}={value}
          </span>
        ))}
    </td>
  );
};

const FigureCells = ({ figures }: { figures: Figures | undefined }) => (
  <>
    <td data-col="norm_shares">{four(figures?.norm_shares)}</td>
    <td data-col="raw_usage">{figures ? Math.round(figures.raw_usage).toLocaleString('en-US') : '–'}</td>
    <td data-col="norm_usage">{four(figures?.norm_usage)}</td>
    <td data-col="fairshare">{four(figures?.fairshare)}</td>
  </>
);

const depthOf = (account: AccountView, byName: Map<string, AccountView>) => {
  let depth = 0;
  for (let a = account; a.parent !== null && depth < MAX_INDENT; depth++) {
    const up = byName.get(a.parent);
    if (!up) break;
    a = up;
  }
  return depth;
};

/**
 * The account tree (parents before children, as listAccounts orders it), each account followed by its users,
 * with shares, limits and the fair-share figures computed now. Admins get a button per row to delete the
 * account, remove a user or make an account the user's default.
 */
export const AccountsTree = ({
  accounts,
  fairshare,
  canManage,
}: {
  accounts: AccountView[];
  fairshare: FairShareRow[];
  canManage: boolean;
}) => {
  if (accounts.length === 0)
    return (
      <p class="empty">
        No accounts yet: a job's account is a free label until an admin creates them (here, with sacctmgr or
        the API).
      </p>
    );
  const byName = new Map(accounts.map((a) => [a.name, a]));
  const figures = new Map(fairshare.map((f) => [f.account, f]));
  return (
    <div class="scroll">
      <table id="accounts-table">
        <caption class="visually-hidden">Accounts, their users, shares, limits and fair-share</caption>
        <thead>
          <tr>
            <th scope="col">Account / user</th>
            <th scope="col">Shares</th>
            <th scope="col">Norm. shares</th>
            <th scope="col">Decayed usage (CPU&#8209;s)</th>
            <th scope="col">Effective usage</th>
            <th scope="col">Fair-share factor</th>
            <th scope="col">Limits</th>
            {canManage ? (
              <th scope="col">
                <span class="visually-hidden">Actions</span>
              </th>
            ) : null}
          </tr>
        </thead>
        <tbody>
          {accounts.flatMap((account) => {
            const depth = depthOf(account, byName);
            const fs = figures.get(account.name);
            const path = `/api/v1/accounts/${encodeURIComponent(account.name)}`;
            return [
              <tr class="account-row" data-account={account.name}>
                <th scope="row" class="tree" data-depth={String(depth)}>
                  {account.name}
                  {account.description ? <span class="muted">{account.description}</span> : null}
                </th>
                <td data-col="shares">{account.fairshare}</td>
                <FigureCells figures={fs} />
                <LimitsCell limits={account} />
                {canManage ? (
                  <td>
                    <button
                      type="button"
                      class="danger"
                      data-account-delete={path}
                      data-confirm={`Delete account ${account.name}?`}
                      aria-label={`Delete account ${account.name}`}
                    >
                      Delete
                    </button>
                  </td>
                ) : null}
              </tr>,
              ...account.users.map((user) => {
                const userPath = `${path}/users/${encodeURIComponent(user.user)}`;
                return (
                  <tr class="user-row" data-account={account.name} data-user={user.user}>
                    <th scope="row" class="tree" data-depth={String(Math.min(depth + 1, MAX_INDENT))}>
                      <span class="user-name">{user.user}</span>
                      {user.default ? <span class="badge">default</span> : null}
                    </th>
                    <td data-col="shares">{user.fairshare}</td>
                    <FigureCells figures={fs?.users?.find((u) => u.user === user.user)} />
                    <LimitsCell limits={user} />
                    {canManage ? (
                      <td class="actions">
                        {user.default ? null : (
                          <button
                            type="button"
                            data-action={userPath}
                            data-body='{"default":true}'
                            aria-label={`Make ${account.name} the default account of ${user.user}`}
                          >
                            Make default
                          </button>
                        )}
                        <button
                          type="button"
                          class="danger"
                          data-account-delete={userPath}
                          data-confirm={`Remove ${user.user} from ${account.name}?`}
                          aria-label={`Remove ${user.user} from ${account.name}`}
                        >
                          Remove
                        </button>
                      </td>
                    ) : null}
                  </tr>
                );
              }),
            ];
          })}
        </tbody>
      </table>
    </div>
  );
};

const LIMIT_INPUTS = [
  ['fairshare', 'Shares'],
  ['max_jobs', 'MaxJobs'],
  ['max_submit_jobs', 'MaxSubmit'],
  ['grp_cpus', 'GrpTRES cpu'],
  ['grp_gpus', 'GrpTRES gpu'],
  ['max_wall', 'MaxWall'],
  ['grp_cpu_mins', 'GrpTRESMins cpu'],
] as const;

const LimitInputs = ({ form }: { form: string }) => (
  <>
    {LIMIT_INPUTS.map(([field, label]) => (
      <label>
        {label}
        <input
          name={field}
          id={`${form}-${field}`}
          size={8}
          autocomplete="off"
          placeholder={field === 'max_wall' ? '2-00:00:00' : field === 'fairshare' ? '' : 'none'}
        />
      </label>
    ))}
  </>
);

/**
 * The admins' forms: create or change an account, add a user to an account or change their association. A
 * blank field is left as it is; `none` removes a limit. The client script posts them to the accounts API.
 */
export const AccountForms = ({ accounts }: { accounts: AccountView[] }) => (
  <>
    <section aria-labelledby="account-form-h">
      <h2 id="account-form-h">Add or change an account</h2>
      <form id="account-form" class="account-form" data-account-form="account">
        <label>
          Name
          <input name="name" id="account-form-name" required size={14} autocomplete="off" />
        </label>
        <label>
          Parent
          <select name="parent" id="account-form-parent">
            <option value="">(unchanged; new: top level)</option>
            <option value="-">(none: top level)</option>
            {accounts.map((a) => (
              <option value={a.name}>{a.name}</option>
            ))}
          </select>
        </label>
        <label>
          Description
          <input name="description" id="account-form-description" size={20} autocomplete="off" />
        </label>
        <LimitInputs form="account-form" />
        <button class="primary" type="submit">
          Save account
        </button>
      </form>
    </section>
    <section aria-labelledby="user-form-h">
      <h2 id="user-form-h">Add or change a user</h2>
      <form id="user-form" class="account-form" data-account-form="user">
        <label>
          Account
          <select name="account" id="user-form-account" required>
            {accounts.map((a) => (
              <option value={a.name}>{a.name}</option>
            ))}
          </select>
        </label>
        <label>
          User
          <input name="user" id="user-form-user" required size={14} autocomplete="off" />
        </label>
        <label class="check">
          <input type="checkbox" name="default" id="user-form-default" value="true" />
          Default account
        </label>
        <LimitInputs form="user-form" />
        <button class="primary" type="submit">
          Save user
        </button>
      </form>
    </section>
    <p class="hint">
      A blank field stays as it is; <code>none</code> removes a limit. MaxWall takes minutes or a Slurm time.
    </p>
  </>
);
