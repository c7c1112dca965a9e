import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../../cli/commands.ts';
import { tokenHash } from '../../functions/domain/auth.ts';
import { query } from '../../functions/domain/sql.ts';
import { availableBackends, type Backend } from '../support/cluster.ts';

const [pglite] = (await availableBackends()).filter((b) => b.name === 'pglite+memory');

describe.runIf(pglite)('conductor CLI (the importable module)', () => {
  let backend: Backend;
  beforeAll(async () => {
    backend = await pglite!.create();
  });
  afterAll(async () => {
    await backend?.close();
  });

  const cli = async (...argv: string[]) => {
    const out: string[] = [];
    const err: string[] = [];
    const code = await runCli(
      argv,
      {},
      { out: (t) => out.push(t), err: (t) => err.push(t) },
      {
        open: async () => ({ db: backend.db.db, where: 'test', close: async () => {} }),
        user: 'alice',
      },
    );
    return { code, out: out.join(''), err: err.join('') };
  };

  it('creates a token, printing only the token on stdout; stores its hash', async () => {
    const { code, out, err } = await cli(
      'token',
      'create',
      '--scope',
      'jobs:read,jobs:write',
      '--name',
      'ci',
      '--owner',
      'team',
    );
    expect(code).toBe(0);
    const token = out.trim();
    expect(token).toMatch(/^cnd_[A-Za-z0-9_-]{43}$/);
    expect(err).toContain('name ci, owner team, scopes jobs:read,jobs:write');
    const rows = await query<{ n: string }>(
      backend.db.db,
      sql`SELECT count(*) AS n FROM api_tokens WHERE token_hash = ${await tokenHash(token)} AND created_by = 'cli:alice'`,
    );
    expect(Number(rows[0]?.n)).toBe(1);
    const json = await cli('token', 'create', '--scope', 'agent', '--name', 'node-1', '--json');
    expect(JSON.parse(json.out)).toMatchObject({
      name: 'node-1',
      scopes: ['agent'],
      token: expect.stringMatching(/^cnd_/),
    });
  });

  it('lists and revokes', async () => {
    const list = await cli('token', 'list');
    expect(list.out).toMatch(/^ID\s+NAME\s+OWNER\s+SCOPES/);
    expect(list.out).toContain('ci');
    const id = (
      JSON.parse((await cli('token', 'list', '--json')).out) as { id: number; name: string }[]
    ).find((t) => t.name === 'ci')!.id;
    const revoked = await cli('token', 'revoke', String(id));
    expect(revoked.code).toBe(0);
    expect(revoked.out).toContain(`Token ${id} (ci) revoked`);
    expect((await cli('token', 'list')).out).toMatch(/ci .* revoked /);
    expect((await cli('token', 'revoke', '999999')).err).toContain('Token 999999 does not exist');
  });

  it('explains bad usage with exit code 2', async () => {
    for (const [args, text] of [
      [
        ['token', 'create', '--scope', 'root', '--name', 'x'],
        'scopes are admin, jobs:write, jobs:read, agent',
      ],
      [['token', 'create', '--scope', 'agent,admin', '--name', 'x'], 'agent token has the scope agent alone'],
      [['token', 'create', '--scope', 'admin'], 'name is required'],
      [['token', 'revoke'], 'expected 1 argument'],
      [['token', 'revoke', 'abc'], 'token id must be a positive integer'],
      [['token', 'create', '--nope'], "Unknown option '--nope'"],
      [['frobnicate'], 'unknown command'],
    ] as const) {
      const result = await cli(...args);
      expect(result.code, args.join(' ')).toBe(2);
      expect(result.err, args.join(' ')).toContain(text);
    }
    expect((await cli('--help')).out).toContain('token create --scope');
  });

  it('manages webhooks, printing the secret once', async () => {
    const created = await cli(
      'webhook',
      'create',
      '--name',
      'deploy',
      '--template',
      '{"script": "deploy.sh", "cpus": 2}',
      '--map',
      'ref=GIT_REF',
      '--map',
      'repository.full_name=REPO',
      '--event',
      'push',
    );
    expect(created.code).toBe(0);
    expect(created.out.trim()).toMatch(/^whsec_/);
    const list = await cli('webhook', 'list');
    expect(list.out).toContain('ref=GIT_REF repository.full_name=REPO');
    expect(list.out).not.toContain(created.out.trim());
    const bad = await cli('webhook', 'create', '--name', 'x', '--template', '{"script": "a"}');
    expect(bad.code).toBe(2);
    expect(bad.err).toContain('template.cpus');
    expect((await cli('webhook', 'delete', 'deploy')).out).toContain('Webhook deploy deleted');
  });
});
