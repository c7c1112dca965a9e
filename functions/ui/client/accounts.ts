/**
 * The accounts page's controls (rendered only for an admin's token): the forms post to the accounts API, the
 * delete and remove buttons send DELETE; a refusal shows the API's own message in the page's error line.
 */

export interface AccountsDeps {
  api(path: string, init?: RequestInit): Promise<Response>;
  showError(error: unknown): void;
  refresh(): Promise<unknown>;
}

/** A limit as typed: blank is left out (unchanged), `none` or `-1` removes it, a number is sent as one. */
function limitValue(text: string): unknown {
  const v = text.trim();
  if (/^(none|-1)$/i.test(v)) return null;
  // Anything else goes as typed: the API says what is wrong with it.
  return /^\d+(\.\d+)?$/.test(v) ? Number(v) : v;
}

const LIMITS = [
  'fairshare',
  'max_jobs',
  'max_submit_jobs',
  'grp_cpus',
  'grp_gpus',
  'max_wall',
  'grp_cpu_mins',
];

function formRequest(form: HTMLFormElement): { path: string; body: Record<string, unknown>; done: string } {
  const data = new FormData(form);
  const text = (name: string) => String(data.get(name) ?? '').trim();
  const body: Record<string, unknown> = {};
  for (const field of LIMITS) if (text(field) !== '') body[field] = limitValue(text(field));
  if (form.dataset.accountForm === 'user') {
    if (data.get('default') === 'true') body.default = true;
    const account = text('account');
    const user = text('user');
    return {
      path: `/api/v1/accounts/${encodeURIComponent(account)}/users/${encodeURIComponent(user)}`,
      body,
      done: `Saved user ${user} in ${account}`,
    };
  }
  const name = text('name');
  const parent = text('parent');
  if (parent === '-') body.parent = null;
  else if (parent !== '') body.parent = parent;
  if (text('description') !== '') body.description = text('description');
  return { path: `/api/v1/accounts/${encodeURIComponent(name)}`, body, done: `Saved account ${name}` };
}

export function initAccounts(deps: AccountsDeps) {
  if (!document.getElementById('accounts')) return;
  const status = (text: string) => {
    const line = document.getElementById('account-status');
    if (line) line.textContent = text;
  };
  const run = async (call: () => Promise<unknown>, done: string): Promise<boolean> => {
    try {
      await call();
      deps.showError('');
      status(done);
      await deps.refresh();
      return true;
    } catch (error) {
      status('');
      deps.showError(error);
      return false;
    }
  };

  document.addEventListener('submit', async (event) => {
    const form = (event.target as Element).closest<HTMLFormElement>('form[data-account-form]');
    if (!form) return;
    event.preventDefault();
    const { path, body, done } = formRequest(form);
    const button = form.querySelector<HTMLButtonElement>('button[type="submit"]');
    if (button) button.disabled = true;
    const ok = await run(() => deps.api(path, { method: 'POST', body: JSON.stringify(body) }), done);
    // On a refusal the form keeps what was typed, to be corrected.
    if (!ok && button) button.disabled = false;
  });

  document.addEventListener('click', async (event) => {
    const button = (event.target as Element).closest<HTMLButtonElement>('button[data-account-delete]');
    const path = button?.dataset.accountDelete;
    if (!button || !path) return;
    if (button.dataset.confirm && !window.confirm(button.dataset.confirm)) return;
    button.disabled = true;
    const label = button.getAttribute('aria-label') ?? 'Deleted';
    const ok = await run(() => deps.api(path, { method: 'DELETE' }), `${label}: done`);
    if (!ok) button.disabled = false;
  });
}
