/**
 * The README and docs/ stay true to the code: links lead somewhere, the configuration tables are what the
 * code generates, every `#SBATCH` option is documented, and every runnable block is used by a test.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, normalize } from 'node:path';
import { describe, expect, it } from 'vitest';
import { AGENT_OPTION_DOCS } from '../../agent/src/config.ts';
import { SBATCH_OPTIONS, SUBMIT_OPTIONS } from '../../cli/slurm/sbatch-options.ts';
import { CONFIG_VAR_DOCS } from '../../functions/config-vars.ts';
import { nodeEnvSchema } from '../../functions/node/env.ts';
import { workerEnvSchema } from '../../functions/worker-env.ts';
import { CONFIGURATION_DOC, renderConfigurationDoc } from '../../scripts/docs-config.ts';
import { commandsOf, docPages, ROOT, runnableBlocks, testsUsing, where } from './runnable.ts';

const read = (page: string) => readFileSync(join(ROOT, page), 'utf8');

/** The page without fenced code blocks and inline code, where `[x](y)` is not a link. */
function prose(text: string): string {
  return text.replace(/^(```+)[^\n]*\n[\s\S]*?^\1\s*$/gm, '').replace(/`[^`\n]*`/g, '');
}

/** GitHub's anchors for a page's headings (lower case, punctuation dropped, spaces to `-`, repeats numbered). */
function anchors(text: string): Set<string> {
  const seen = new Map<string, number>();
  const out = new Set<string>();
  const withoutCode = text.replace(/^(```+)[^\n]*\n[\s\S]*?^\1\s*$/gm, '');
  for (const match of withoutCode.matchAll(/^#{1,6}\s+(.+?)\s*#*\s*$/gm)) {
    const slug = match[1]!
      .toLowerCase()
      .replace(/<[^>]+>/g, '')
      .replace(/[^\p{L}\p{N}\s_-]/gu, '')
      .replace(/\s/g, '-');
    const n = seen.get(slug) ?? 0;
    seen.set(slug, n + 1);
    out.add(n === 0 ? slug : `${slug}-${n}`);
  }
  return out;
}

describe('links', () => {
  it.each(docPages())('every relative link of %s leads to a file, and to a heading there', (page) => {
    const text = prose(read(page));
    const problems: string[] = [];
    for (const match of text.matchAll(/!?\[[^\]]*\]\(([^)\s]+)(?:\s+"[^"]*")?\)/g)) {
      const target = match[1]!;
      if (/^[a-z][a-z+.-]*:/i.test(target)) continue; // http:, https:, mailto:
      const [path, fragment] = target.split('#') as [string, string | undefined];
      const file = path === '' ? join(ROOT, page) : normalize(join(ROOT, dirname(page), path));
      if (!file.startsWith(ROOT) || !existsSync(file)) {
        problems.push(`${target}: no such file`);
        continue;
      }
      if (fragment !== undefined) {
        if (!statSync(file).isFile() || !file.endsWith('.md')) {
          problems.push(`${target}: an anchor into something that is not a Markdown page`);
        } else if (!anchors(readFileSync(file, 'utf8')).has(fragment)) {
          problems.push(`${target}: no heading #${fragment} there`);
        }
      }
    }
    expect(problems).toEqual([]);
  });

  it('the README links every docs/ page, stays short, and says that CI runs npm test', () => {
    const readme = read('README.md');
    for (const page of docPages().filter((p) => p !== 'README.md')) {
      expect(readme, `README.md links ${page}`).toContain(`](${page})`);
    }
    expect(readme.split('\n').length).toBeLessThan(250);
    expect(readme).toContain('npm test');
    expect(readme).toMatch(/CI runs exactly this command/);
    // What CI runs: .ci/run installs with npm ci, then runs npm test.
    const ci = read('.ci/run');
    expect(ci).toMatch(/npm ci\b/);
    expect(ci).toMatch(/npm test\b/);
  });

  it("the anchors are GitHub's", () => {
    expect([
      ...anchors('# The `conductor` command\n## `#SBATCH` directives (Slurm compatibility)\n## A\n## A'),
    ]).toEqual(['the-conductor-command', 'sbatch-directives-slurm-compatibility', 'a', 'a-1']);
  });
});

describe('runnable blocks', () => {
  const blocks = runnableBlocks();

  it('have unique names', () => {
    const names = blocks.map((b) => b.name);
    expect(names.filter((n, i) => names.indexOf(n) !== i)).toEqual([]);
    expect(names.length).toBeGreaterThan(5);
  });

  it.each(blocks.map((b) => [where(b), b.name]))('%s is used by a test', (_where, name) => {
    expect(
      testsUsing(name),
      `no test file calls runnableBlock('${name}') or commandsOf('${name}')`,
    ).not.toEqual([]);
  });

  it('the set-up commands are the ones CI and the launcher tests run', () => {
    // npm ci: .ci/run (CI) runs it on a clean clone; npm start: test/e2e/launchers.test.ts.
    expect(commandsOf('readme-setup')).toEqual(['npm ci', 'npm start']);
    expect(commandsOf('quick-start')).toEqual(['npm ci', 'npm start']);
  });
});

describe('configuration tables', () => {
  it('docs/configuration.md holds what scripts/docs-config.ts generates (npx tsx scripts/docs-config.ts)', () => {
    const page = readFileSync(CONFIGURATION_DOC, 'utf8');
    expect(page).toBe(renderConfigurationDoc(page));
  });

  it('every control-plane variable has a description, and every description a variable', () => {
    const names = new Set([...Object.keys(nodeEnvSchema.shape), ...Object.keys(workerEnvSchema.shape)]);
    expect([...names].filter((n) => !CONFIG_VAR_DOCS[n])).toEqual([]);
    expect(Object.keys(CONFIG_VAR_DOCS).filter((n) => !names.has(n))).toEqual([]);
  });

  it('every variable and flag the agent reads is in AGENT_OPTION_DOCS', () => {
    const source = ['agent/src/config.ts', 'agent/src/cli.ts'].map(read).join('\n');
    const parser = source.slice(source.indexOf('export function parseAgentArgs'));
    const documented = new Map(AGENT_OPTION_DOCS.map((o) => [o.env, o.flag]));
    // Variables read as env.NAME (HOME and XDG_STATE_HOME only place the default state directory).
    const read_ = [...source.matchAll(/\benv\.([A-Z][A-Z0-9_]*)/g)].map((m) => m[1]!);
    const unknown = [...new Set(read_)].filter(
      (n) => !documented.has(n) && !['HOME', 'XDG_STATE_HOME'].includes(n),
    );
    expect(unknown).toEqual([]);
    // Flag and variable pairs: pick('<flag>', '<NAME>').
    for (const [, flag, name] of parser.matchAll(/pick\('([a-z-]+)', '([A-Z_]+)'\)/g)) {
      expect(documented.get(name!), `${name} / --${flag}`).toBe(`--${flag}`);
    }
    // Every parseArgs option but --help and --version.
    const options = /options: \{([\s\S]*?)\n {6}\},/.exec(parser)?.[1] ?? '';
    const flags = [...options.matchAll(/^\s+'?([a-z-]+)'?: \{/gm)].map((m) => `--${m[1]}`);
    expect(flags.length).toBeGreaterThan(5);
    const documentedFlags = new Set(AGENT_OPTION_DOCS.map((o) => o.flag));
    expect(flags.filter((f) => !['--help', '--version'].includes(f) && !documentedFlags.has(f))).toEqual([]);
  });
});

describe('#SBATCH directives', () => {
  it('the conductor-only options of submit have a row in docs/submitting-jobs.md, which links the sbatch table', () => {
    const page = read('docs/submitting-jobs.md');
    const table = page.slice(page.indexOf('## `#SBATCH` directives'), page.indexOf('Not supported:'));
    expect(table).toContain('(slurm/sbatch.md)');
    const missing: string[] = [];
    const global = new Set(['url', 'token']);
    for (const option of SUBMIT_OPTIONS) {
      if (SBATCH_OPTIONS.some((s) => s.long === option.long) || global.has(option.long)) continue;
      if (!table.includes(`\`--${option.long}`)) missing.push(`--${option.long}`);
    }
    expect(missing).toEqual([]);
  });
});
