/**
 * `conductor`: administration straight against the database (DATABASE_URL, or the local PGlite under
 * CONDUCTOR_DATA_DIR), for what has to happen before any API token exists. The same domain verbs as the
 * admin API; every change is in the audit log as `cli:<OS user>`.
 *
 *   conductor token create --scope jobs:read,jobs:write --name ci [--owner team]
 *   conductor token list [--json]
 *   conductor token revoke <id>
 *   conductor webhook create --name deploy --template '{"script": "...", "cpus": 1}' --map ref=GIT_REF ...
 *   conductor webhook list [--json]
 *   conductor webhook delete <name>
 */
import { readFileSync } from 'node:fs';
import { userInfo } from 'node:os';
import { type ParseArgsConfig, parseArgs } from 'node:util';
import {
  apiTokensExist,
  createToken,
  createTokenInput,
  listTokens,
  OPEN_ACCESS_ENDED,
  type Principal,
  revokeToken,
  TOKEN_SCOPES,
} from '../functions/domain/auth.ts';
import type { Database } from '../functions/domain/ports.ts';
import {
  createWebhook,
  createWebhookInput,
  deleteWebhook,
  listWebhooks,
} from '../functions/domain/webhooks.ts';
import { parseInput } from '../functions/http/validate.ts';
import { openCliDatabase } from './database.ts';

export const USAGE = `Usage: conductor <command>

Talks to the database directly: DATABASE_URL, or else the local cluster's PGlite in
CONDUCTOR_DATA_DIR (default .conductor; stop \`npm start\` first).

  token create --scope <scope>[,<scope>] --name <name> [--owner <owner>] [--json]
      Scopes: ${TOKEN_SCOPES.join(', ')} (agent alone). Owner (default: the name) is the
      account whose jobs the token sees and cancels. Prints the token once, on stdout.
  token list [--json]
  token revoke <id>
      Takes effect on the next request made with the token.

  webhook create --name <name> (--template <json> | --template-file <file>)
                 [--map <payload.path>=<ENV_VAR> ...] [--event <event> ...]
                 [--secret <secret>] [--owner <owner>] [--json]
      The template is a submit body ({"script": ..., "cpus": ...}); payload values reach
      the job only as the mapped environment variables. Prints the secret once.
  webhook list [--json]
  webhook delete <name>
`;

export interface CliIo {
  out(text: string): void;
  err(text: string): void;
}

export interface CliDeps {
  /** Opens the database; openCliDatabase by default (tests pass their own). */
  open?: (env: NodeJS.ProcessEnv) => Promise<{ db: Database; where: string; close(): Promise<void> }>;
  /** Who is at the keyboard, for the audit log. */
  user?: string;
}

class UsageError extends Error {}

/** Runs one command; returns the exit code (0 ok, 1 failed, 2 usage). */
export async function runCli(
  argv: string[],
  env: NodeJS.ProcessEnv,
  io: CliIo,
  deps: CliDeps = {},
): Promise<number> {
  const [group, action, ...rest] = argv;
  if (!group || group === 'help' || group === '--help' || group === '-h') {
    io.out(USAGE);
    return group ? 0 : 2;
  }
  let run: ((db: Database, by: Principal) => Promise<void>) | undefined;
  try {
    run = command(group, action, rest, io);
  } catch (error) {
    io.err(`conductor: ${error instanceof Error ? error.message : String(error)} (see conductor --help)\n`);
    return 2;
  }
  if (!run) {
    io.err(
      `conductor: unknown command ${[group, action].filter(Boolean).join(' ')} (see conductor --help)\n`,
    );
    return 2;
  }
  const by: Principal = {
    kind: 'cli',
    tokenId: null,
    name: deps.user ?? safeUser(),
    owner: null,
    scopes: TOKEN_SCOPES,
  };
  let database: Awaited<ReturnType<NonNullable<CliDeps['open']>>>;
  try {
    database = await (deps.open ?? openCliDatabase)(env);
  } catch (error) {
    io.err(
      `conductor: cannot open the database: ${error instanceof Error ? error.message : String(error)}\n`,
    );
    return 1;
  }
  try {
    await run(database.db, by);
    return 0;
  } catch (error) {
    if (error instanceof UsageError) {
      io.err(`conductor: ${error.message} (see conductor --help)\n`);
      return 2;
    }
    io.err(`conductor: ${error instanceof Error ? error.message : String(error)}\n`);
    return 1;
  } finally {
    await database.close().catch(() => {});
  }
}

function safeUser(): string {
  try {
    return userInfo().username;
  } catch {
    return 'unknown';
  }
}

function parse(
  args: string[],
  options: NonNullable<ParseArgsConfig['options']>,
  positionals = 0,
): { values: Record<string, string | boolean | (string | boolean)[] | undefined>; positionals: string[] } {
  try {
    const parsed = parseArgs({ args, options, strict: true, allowPositionals: positionals > 0 });
    if (parsed.positionals.length !== positionals) {
      throw new UsageError(`expected ${positionals} argument(s), got ${parsed.positionals.length}`);
    }
    return parsed;
  } catch (error) {
    if (error instanceof UsageError) throw error;
    throw new UsageError((error as Error).message);
  }
}

/** The command's work, after its arguments are checked (before the database is opened). */
function command(
  group: string,
  action: string | undefined,
  args: string[],
  io: CliIo,
): ((db: Database, by: Principal) => Promise<void>) | undefined {
  const toInput = <T>(schema: Parameters<typeof parseInput>[0], data: unknown): T => {
    try {
      return parseInput(schema, data, 'arguments') as T;
    } catch (error) {
      throw new UsageError(error instanceof Error ? error.message : String(error));
    }
  };

  if (group === 'token' && action === 'create') {
    const { values } = parse(args, {
      scope: { type: 'string', multiple: true },
      name: { type: 'string' },
      owner: { type: 'string' },
      json: { type: 'boolean' },
    });
    const scopes = ((values.scope as string[] | undefined) ?? [])
      .flatMap((s) => s.split(','))
      .map((s) => s.trim());
    const input = toInput<Parameters<typeof createToken>[1]>(createTokenInput, {
      name: values.name,
      scopes,
      ...(values.owner !== undefined ? { owner: values.owner } : {}),
    });
    return async (db, by) => {
      const first = !(await apiTokensExist(db));
      const created = await createToken(db, input, by);
      if (first) io.err(`${OPEN_ACCESS_ENDED}\n`);
      if (values.json) {
        io.out(`${JSON.stringify(created, null, 2)}\n`);
        return;
      }
      io.err(
        `Token ${created.id} created: name ${created.name}, owner ${created.owner}, scopes ${created.scopes.join(',')}.\n` +
          'It is shown once, below: only its SHA-256 is stored. Send it as "Authorization: Bearer <token>"' +
          `${created.scopes.includes('agent') ? ' (agents: CONDUCTOR_TOKEN)' : ''}.\n`,
      );
      io.out(`${created.token}\n`);
    };
  }
  if (group === 'token' && action === 'list') {
    const { values } = parse(args, { json: { type: 'boolean' } });
    return async (db) => {
      const { tokens } = await listTokens(db, { limit: 1000 });
      if (values.json) {
        io.out(`${JSON.stringify(tokens, null, 2)}\n`);
        return;
      }
      const rows = tokens.map((t) => [
        String(t.id),
        t.name,
        t.owner,
        t.scopes.join(','),
        `${t.prefix}…`,
        t.created_at ?? '',
        t.last_used_at ?? 'never',
        t.revoked_at ? `revoked ${t.revoked_at}` : t.internal ? 'active (internal)' : 'active',
      ]);
      io.out(table(['ID', 'NAME', 'OWNER', 'SCOPES', 'TOKEN', 'CREATED', 'LAST USED', 'STATUS'], rows));
    };
  }
  if (group === 'token' && action === 'revoke') {
    const { positionals } = parse(args, {}, 1);
    const id = Number(positionals[0]);
    if (!Number.isSafeInteger(id) || id < 1)
      throw new UsageError(`token id must be a positive integer, got ${positionals[0]}`);
    return async (db, by) => {
      const token = await revokeToken(db, id, by);
      io.out(`Token ${token.id} (${token.name}) revoked at ${token.revoked_at}\n`);
    };
  }
  if (group === 'webhook' && action === 'create') {
    const { values } = parse(args, {
      name: { type: 'string' },
      template: { type: 'string' },
      'template-file': { type: 'string' },
      map: { type: 'string', multiple: true },
      event: { type: 'string', multiple: true },
      secret: { type: 'string' },
      owner: { type: 'string' },
      json: { type: 'boolean' },
    });
    let template: unknown;
    const source =
      values.template ??
      (values['template-file'] ? readFileSync(String(values['template-file']), 'utf8') : undefined);
    if (typeof source !== 'string') throw new UsageError('--template or --template-file is required');
    try {
      template = JSON.parse(source);
    } catch (error) {
      throw new UsageError(`the template is not JSON: ${(error as Error).message}`);
    }
    const mapping: Record<string, string> = {};
    for (const entry of (values.map as string[] | undefined) ?? []) {
      const at = entry.lastIndexOf('=');
      if (at <= 0) throw new UsageError(`--map is <payload.path>=<ENV_VAR>, got ${entry}`);
      mapping[entry.slice(0, at)] = entry.slice(at + 1);
    }
    const input = toInput<Parameters<typeof createWebhook>[1]>(createWebhookInput, {
      name: values.name,
      template,
      mapping,
      ...(values.event ? { events: values.event } : {}),
      ...(values.secret !== undefined ? { secret: values.secret } : {}),
      ...(values.owner !== undefined ? { owner: values.owner } : {}),
    });
    return async (db, by) => {
      const created = await createWebhook(db, input, by);
      if (values.json) {
        io.out(`${JSON.stringify(created, null, 2)}\n`);
        return;
      }
      io.err(
        `Webhook ${created.name} created: POST ${created.url_path}, signed with the secret below ` +
          '(X-Hub-Signature-256 or X-Conductor-Signature). It is shown once.\n',
      );
      io.out(`${created.secret}\n`);
    };
  }
  if (group === 'webhook' && action === 'list') {
    const { values } = parse(args, { json: { type: 'boolean' } });
    return async (db) => {
      const { webhooks } = await listWebhooks(db);
      if (values.json) {
        io.out(`${JSON.stringify(webhooks, null, 2)}\n`);
        return;
      }
      const rows = webhooks.map((w) => [
        w.name,
        w.url_path,
        w.owner,
        Object.entries(w.mapping)
          .map(([path, variable]) => `${path}=${variable}`)
          .join(' '),
        w.events?.join(',') ?? '(all but ping)',
      ]);
      io.out(table(['NAME', 'PATH', 'OWNER', 'MAPPING', 'EVENTS'], rows));
    };
  }
  if (group === 'webhook' && action === 'delete') {
    const { positionals } = parse(args, {}, 1);
    const name = String(positionals[0]);
    return async (db, by) => {
      await deleteWebhook(db, name, by);
      io.out(`Webhook ${name} deleted\n`);
    };
  }
  return undefined;
}

function table(header: string[], rows: string[][]): string {
  const all = [header, ...rows];
  const widths = header.map((_, i) => Math.max(...all.map((r) => (r[i] ?? '').length)));
  return `${all
    .map((r) =>
      r
        .map((cell, i) => cell.padEnd(widths[i] ?? 0))
        .join('  ')
        .trimEnd(),
    )
    .join('\n')}\n`;
}
