import { OpenAPIHono } from '@hono/zod-openapi';
import {
  accountInput,
  accountNameParam,
  accountUserInput,
  accountUserParams,
  deleteAccount,
  deleteAccountUser,
  getAccount,
  listAccounts,
  putAccount,
  putAccountUser,
} from '../domain/accounts.ts';
import type { Context } from '../domain/context.ts';
import type { AppEnv } from '../http/auth.ts';
import {
  accountListSchema,
  accountSchema,
  accountUserSchema,
  accountUsersSchema,
} from '../http/responses.ts';
import { mount, type RouteSpec } from '../http/route.ts';

/** Accounts and their users (Slurm's associations): anyone who may read jobs reads them; admins manage them. */
export function accountRoutes(ctx: Context) {
  const app = new OpenAPIHono<AppEnv>();
  mount(app, listAccountsRoute, async (c) => c.json({ accounts: await listAccounts(ctx) }));
  mount(app, getAccountRoute, async (c, { params }) => c.json(await getAccount(ctx, params.name)));
  mount(app, putAccountRoute, async (c, { params, body }) =>
    c.json(await putAccount(ctx, params.name, await body(), c.get('principal'))),
  );
  mount(app, deleteAccountRoute, async (c, { params }) =>
    c.json(await deleteAccount(ctx, params.name, c.get('principal'))),
  );
  mount(app, listAccountUsersRoute, async (c, { params }) =>
    c.json({ users: (await getAccount(ctx, params.name)).users }),
  );
  mount(app, putAccountUserRoute, async (c, { params, body }) =>
    c.json(await putAccountUser(ctx, params.name, params.user, await body(), c.get('principal'))),
  );
  mount(app, deleteAccountUserRoute, async (c, { params }) =>
    c.json(await deleteAccountUser(ctx, params.name, params.user, c.get('principal'))),
  );
  return app;
}

const LIMITS =
  'Limits (null: none): max_jobs (MaxJobs: running at once), max_submit_jobs (MaxSubmitJobs: pending or running; more is refused at submit), grp_cpus and grp_gpus (GrpTRES: allocated at once), max_wall (MaxWall: minutes or a Slurm time; a job without a time limit gets it, one over it is refused), grp_cpu_mins (GrpTRESMins=cpu per CONDUCTOR_USAGE_RESET_PERIOD); fairshare: shares. A job over a running limit waits with Slurm’s reason (AssocMaxJobsLimit, AssocGrpCpuLimit, AssocGrpGRES, AssocGrpCPUMinutesLimit).';

const listAccountsRoute = {
  method: 'get',
  path: '/',
  operationId: 'listAccounts',
  summary: 'List accounts (parents before children) with their users and limits',
  tag: 'cluster',
  access: 'jobs:read',
  responses: { 200: { description: 'Accounts', schema: accountListSchema } },
} satisfies RouteSpec<undefined, undefined, undefined>;

const getAccountRoute = {
  method: 'get',
  path: '/{name}',
  operationId: 'getAccount',
  summary: 'One account with its users',
  tag: 'cluster',
  access: 'jobs:read',
  params: accountNameParam,
  responses: { 200: { description: 'The account', schema: accountSchema } },
  refusals: { 404: 'No account of that name (account_not_found)' },
} satisfies RouteSpec<typeof accountNameParam, undefined, undefined>;

const putAccountRoute = {
  method: 'post',
  path: '/{name}',
  operationId: 'putAccount',
  summary: 'Create an account, or change the fields given (sacctmgr add/modify account)',
  description: `parent: the account above it (organisation -> group -> project); an account’s limits cover every account under it. description. ${LIMITS}`,
  tag: 'admin',
  access: 'admin',
  params: accountNameParam,
  body: accountInput,
  bodyExample: { parent: 'physics', fairshare: 10, max_jobs: 20, grp_cpus: 256, max_wall: '2-00:00:00' },
  responses: { 200: { description: 'The account', schema: accountSchema } },
  refusals: { 400: 'A parent that does not exist, or is the account or one under it (invalid_parent)' },
} satisfies RouteSpec<typeof accountNameParam, undefined, typeof accountInput>;

const deleteAccountRoute = {
  method: 'delete',
  path: '/{name}',
  operationId: 'deleteAccount',
  summary: 'Delete an account (and its users) with no account under it and no waiting or running job',
  tag: 'admin',
  access: 'admin',
  params: accountNameParam,
  responses: { 200: { description: 'The deleted account', schema: accountSchema } },
  refusals: {
    404: 'No account of that name (account_not_found)',
    409: 'Accounts are under it, or jobs are charged to it (account_has_children, account_in_use)',
  },
} satisfies RouteSpec<typeof accountNameParam, undefined, undefined>;

const listAccountUsersRoute = {
  method: 'get',
  path: '/{name}/users',
  operationId: 'listAccountUsers',
  summary: 'The users of an account, with their limits',
  tag: 'cluster',
  access: 'jobs:read',
  params: accountNameParam,
  responses: {
    200: { description: 'Its users', schema: accountUsersSchema },
  },
  refusals: { 404: 'No account of that name (account_not_found)' },
} satisfies RouteSpec<typeof accountNameParam, undefined, undefined>;

const putAccountUserRoute = {
  method: 'post',
  path: '/{name}/users/{user}',
  operationId: 'putAccountUser',
  summary: 'Add a user (a token owner) to an account, or change their association (sacctmgr add/modify user)',
  description: `default: true makes it the user’s default account (a user’s first account is). ${LIMITS}`,
  tag: 'admin',
  access: 'admin',
  params: accountUserParams,
  body: accountUserInput,
  bodyExample: { default: true, max_jobs: 4 },
  responses: { 200: { description: 'The association', schema: accountUserSchema } },
  refusals: { 404: 'No account of that name (account_not_found)' },
} satisfies RouteSpec<typeof accountUserParams, undefined, typeof accountUserInput>;

const deleteAccountUserRoute = {
  method: 'delete',
  path: '/{name}/users/{user}',
  operationId: 'deleteAccountUser',
  summary: 'Remove a user from an account',
  tag: 'admin',
  access: 'admin',
  params: accountUserParams,
  responses: { 200: { description: 'The removed association', schema: accountUserSchema } },
  refusals: { 404: 'The user is not in that account (account_user_not_found)' },
} satisfies RouteSpec<typeof accountUserParams, undefined, undefined>;
