/**
 * Writes the configuration tables of docs/configuration.md from the code: the control plane's variables from
 * the zod schemas that parse them (functions/node/env.ts, functions/worker-env.ts) with the descriptions in
 * functions/config-vars.ts, and the agent's from AGENT_OPTION_DOCS (agent/src/config.ts). Each table sits
 * between `<!-- generated:<name> start -->` and `<!-- generated:<name> end -->`.
 *
 *   npx tsx scripts/docs-config.ts           rewrite the tables
 *   npx tsx scripts/docs-config.ts --check   exit 1 if the committed tables differ (test/docs does the same)
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { z } from 'zod';
import { AGENT_OPTION_DOCS } from '../agent/src/config.ts';
import { CONFIG_VAR_DOCS } from '../functions/config-vars.ts';
import { nodeEnvSchema } from '../functions/node/env.ts';
import { workerEnvSchema } from '../functions/worker-env.ts';

export const CONFIGURATION_DOC = join(
  dirname(fileURLToPath(import.meta.url)),
  '..',
  'docs',
  'configuration.md',
);

/** The default a schema gives a missing variable, as the table shows it. */
function schemaDefault(schema: z.ZodType): string {
  const result = schema.safeParse(undefined);
  if (!result.success) return 'required';
  const value: unknown = result.data;
  if (value === undefined || (Array.isArray(value) && value.length === 0)) return 'none';
  if (typeof value === 'boolean') return `\`${value ? '1' : '0'}\``;
  return `\`${String(value)}\``;
}

const cell = (text: string) => text.replaceAll('|', '\\|').replaceAll('\n', ' ');

/** The control plane's table: every variable of both schemas, in the Node schema's order, then the Worker's. */
export function controlPlaneTable(): string {
  const node = nodeEnvSchema.shape as Record<string, z.ZodType>;
  const worker = workerEnvSchema.shape as Record<string, z.ZodType>;
  const names = [...new Set([...Object.keys(node), ...Object.keys(worker)])];
  const missing = names.filter((n) => !CONFIG_VAR_DOCS[n]);
  if (missing.length > 0) {
    throw new Error(`No description in functions/config-vars.ts CONFIG_VAR_DOCS for: ${missing.join(', ')}`);
  }
  const rows = names.map((name) => {
    const docs = CONFIG_VAR_DOCS[name]!;
    const n = node[name];
    const w = worker[name];
    const where = [n ? 'Node' : '', w ? 'Workers' : ''].filter(Boolean).join(', ');
    let fallback = docs.default;
    if (fallback === undefined) {
      const nd = n ? schemaDefault(n) : undefined;
      const wd = w ? schemaDefault(w) : undefined;
      fallback = nd && wd && nd !== wd ? `${nd} (Node), ${wd} (Workers)` : (nd ?? wd ?? 'none');
    }
    return `| \`${name}\` | ${where} | ${cell(fallback)} | ${cell(docs.description)} |`;
  });
  return ['| variable | read by | default | meaning |', '| --- | --- | --- | --- |', ...rows].join('\n');
}

/** The agent's table: every variable (and its flag) parseAgentArgs reads. */
export function agentTable(): string {
  const rows = AGENT_OPTION_DOCS.map(
    (o) =>
      `| \`${o.env}\`${o.flag ? ` / \`${o.flag}\`` : ''} | ${cell(o.default)} | ${cell(o.description)} |`,
  );
  return ['| agent variable / flag | default | meaning |', '| --- | --- | --- |', ...rows].join('\n');
}

export const GENERATED_TABLES: Record<string, () => string> = {
  'control-plane-env': controlPlaneTable,
  'agent-env': agentTable,
};

/** The page with every generated table replaced by what the code says now. */
export function renderConfigurationDoc(page: string): string {
  let out = page;
  for (const [name, generate] of Object.entries(GENERATED_TABLES)) {
    const start = `<!-- generated:${name} start -->`;
    const end = `<!-- generated:${name} end -->`;
    const from = out.indexOf(start);
    const to = out.indexOf(end);
    if (from < 0 || to < from) throw new Error(`docs/configuration.md has no ${start} ... ${end} markers`);
    out = `${out.slice(0, from + start.length)}\n${generate()}\n${out.slice(to)}`;
  }
  return out;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const page = readFileSync(CONFIGURATION_DOC, 'utf8');
  const wanted = renderConfigurationDoc(page);
  if (process.argv.includes('--check')) {
    if (wanted !== page) {
      process.stderr.write('docs/configuration.md is out of date: run npx tsx scripts/docs-config.ts\n');
      process.exit(1);
    }
  } else if (wanted !== page) {
    writeFileSync(CONFIGURATION_DOC, wanted);
    process.stdout.write('docs/configuration.md: tables rewritten\n');
  }
}
