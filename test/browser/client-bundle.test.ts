/**
 * The dashboard's browser bundle is committed (functions/ui/assets.generated.ts, so that Node, wrangler and
 * the tests serve it without a build step of their own): it must be what its sources build, and those
 * sources, which the root tsconfig leaves out (they run in browsers, with the DOM's types), must type-check.
 */
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const run = (args: string[]) =>
  execFileSync(process.execPath, args, { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

describe('the dashboard client bundle', () => {
  it('is what functions/ui/client builds (run npm run build after changing it)', () => {
    expect(run(['scripts/build-ui.mjs', '--check'])).toContain('UI assets up to date');
  });

  it('type-checks with the DOM types', () => {
    expect(() =>
      run(['node_modules/typescript/bin/tsc', '--noEmit', '-p', 'functions/ui/client/tsconfig.json']),
    ).not.toThrow();
  }, 60_000);
});
