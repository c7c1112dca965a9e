/**
 * The CLI's HTTP commands ship without the control plane: loading cli/main.ts (and running a command that
 * needs no server) must load Node built-ins and the CLI's own files only. A loader hook in a child process
 * records every module that is resolved.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const FORBIDDEN =
  /node_modules\/(drizzle-orm|pg|pg-[^/]+|@electric-sql|hono|@hono|zod|ioredis|@upstash|@neondatabase)\//;

function loadedBy(code: string): string[] {
  const dir = mkdtempSync(join(tmpdir(), 'cli-graph-'));
  const log = join(dir, 'modules.log');
  const hooks = join(dir, 'hooks.mjs');
  writeFileSync(
    hooks,
    `import { appendFileSync } from 'node:fs';
export async function resolve(specifier, context, next) {
  const result = await next(specifier, context);
  appendFileSync(${JSON.stringify(log)}, result.url + '\\n');
  return result;
}`,
  );
  const register = join(dir, 'register.mjs');
  writeFileSync(
    register,
    `import { register } from 'node:module';\nregister(${JSON.stringify(pathToFileURL(hooks).href)});\n`,
  );
  writeFileSync(log, '');
  const run = spawnSync(
    process.execPath,
    ['--import', register, '--import', 'tsx', '--input-type=module', '-e', code],
    {
      cwd: ROOT,
      encoding: 'utf8',
      env: { PATH: process.env.PATH, HOME: dir, CONDUCTOR_URL: 'http://127.0.0.1:9' },
    },
  );
  expect(run.status, run.stderr).toBe(0);
  return readFileSync(log, 'utf8').split('\n').filter(Boolean);
}

describe('the CLI module graph', () => {
  it('cli/main.ts loads no control-plane dependency', () => {
    const modules = loadedBy(
      `const { main } = await import(${JSON.stringify(pathToFileURL(join(ROOT, 'cli/main.ts')).href)});
       const code = await main(['jobs', '--help'], process.env, { out: () => {}, err: () => {} });
       if (code !== 0) process.exit(10);`,
    );
    const ours = modules.filter((m) => m.startsWith('file:') && !m.includes('/node_modules/'));
    expect(ours.some((m) => m.endsWith('/cli/main.ts'))).toBe(true);
    expect(modules.filter((m) => FORBIDDEN.test(m))).toEqual([]);
    // Only the CLI's own files: nothing from functions/ or db/.
    expect(ours.filter((m) => !m.includes('/cli/'))).toEqual([]);
  });

  it('the check would notice: `conductor token` with the database commands does load them', () => {
    // As cli/conductor.ts (the repository's `conductor`) passes them.
    const modules = loadedBy(
      `const { main } = await import(${JSON.stringify(pathToFileURL(join(ROOT, 'cli/main.ts')).href)});
       const commands = ${JSON.stringify(pathToFileURL(join(ROOT, 'cli/commands.ts')).href)};
       await main(['token', '--help'], process.env, { out: () => {}, err: () => {} }, {
         databaseCommands: async (argv, env, io) => (await import(commands)).runCli(argv, env, io),
       });`,
    );
    expect(modules.some((m) => FORBIDDEN.test(m))).toBe(true);
  });

  it('without them (the packaged CLI), `conductor token` loads nothing and says where to run it', () => {
    const modules = loadedBy(
      `const { main } = await import(${JSON.stringify(pathToFileURL(join(ROOT, 'cli/main.ts')).href)});
       let err = '';
       const code = await main(['token', 'create', '--scope', 'admin'], process.env, {
         out: () => {},
         err: (text) => { err += text; },
       });
       if (code !== 2 || !err.includes('npm run conductor -- token')) process.exit(10);`,
    );
    expect(modules.filter((m) => FORBIDDEN.test(m))).toEqual([]);
    const ours = modules.filter((m) => m.startsWith('file:') && !m.includes('/node_modules/'));
    expect(ours.filter((m) => !m.includes('/cli/'))).toEqual([]);
    expect(ours.some((m) => m.endsWith('/cli/commands.ts'))).toBe(false);
  });

  it('the packaged entry (cli/standalone.ts) imports only cli/main.ts and what it imports', () => {
    const modules = loadedBy(
      `process.argv = [process.argv[0], 'conductor', '--version'];
       await import(${JSON.stringify(pathToFileURL(join(ROOT, 'cli/standalone.ts')).href)});`,
    );
    const ours = modules.filter((m) => m.startsWith('file:') && !m.includes('/node_modules/'));
    expect(ours.some((m) => m.endsWith('/cli/standalone.ts'))).toBe(true);
    expect(modules.filter((m) => FORBIDDEN.test(m))).toEqual([]);
    expect(ours.filter((m) => !m.includes('/cli/'))).toEqual([]);
  });
});
