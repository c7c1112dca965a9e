import { execFileSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

/** Environment for every wrangler call: no telemetry, no `Request.cf` lookup, config files kept local. */
export const WRANGLER_ENV = {
  WRANGLER_SEND_METRICS: 'false',
  WRANGLER_SEND_ERROR_REPORTS: 'false',
  CLOUDFLARE_CF_FETCH_ENABLED: 'false',
  XDG_CONFIG_HOME: join(ROOT, '.wrangler', 'config'),
};

/** Bundles the Worker with wrangler's own bundler (`wrangler deploy --dry-run`); returns the script path. */
export function bundleWorker(): { dir: string; script: string; output: string } {
  const dir = mkdtempSync(join(tmpdir(), 'conductor-worker-'));
  const output = execFileSync(
    process.execPath,
    [join(ROOT, 'node_modules/wrangler/bin/wrangler.js'), 'deploy', '--dry-run', '--outdir', dir],
    {
      cwd: ROOT,
      env: { ...process.env, ...WRANGLER_ENV },
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  return { dir, script: join(dir, 'worker.js'), output };
}

/**
 * Miniflare's options for running a `bundleWorker()` output as wrangler would: the script with the modules
 * beside it, wrangler's text modules (wrangler.toml [[rules]]: Swagger UI for /api/docs, named <sha1>-<file>)
 * and the compatibility date the Worker is built for.
 */
export function workerModules(bundle: { dir: string; script: string }) {
  return {
    modules: true,
    scriptPath: bundle.script,
    modulesRoot: bundle.dir,
    modulesRules: [{ type: 'Text' as const, include: ['**/*-swagger-ui.css', '**/*-swagger-ui-bundle.js'] }],
    compatibilityDate: '2026-04-20',
  };
}
