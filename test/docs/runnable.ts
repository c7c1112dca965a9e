/**
 * The docs' runnable blocks: a fenced code block right after a `<!-- runnable: <name> -->` line, in README.md
 * or docs/*.md. A test that runs a block's commands (or the steps they stand for) reads the block through
 * runnableBlock / commandsOf with its name; test/docs/docs.test.ts fails when a marked block is used by no
 * test file, so a block cannot be added, renamed or moved without a test following it.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));

/** README.md and every docs/*.md, as paths relative to the repository. */
export function docPages(): string[] {
  const docs = readdirSync(join(ROOT, 'docs'))
    .filter((f) => f.endsWith('.md'))
    .sort()
    .map((f) => `docs/${f}`);
  return ['README.md', ...docs];
}

export interface RunnableBlock {
  name: string;
  /** The page, relative to the repository (`docs/agents.md`). */
  page: string;
  /** The info string of the fence (`bash`, `sql`). */
  lang: string;
  code: string;
}

const MARKER = /^<!-- runnable: ([a-z0-9-]+) -->$/;

export function runnableBlocks(): RunnableBlock[] {
  const blocks: RunnableBlock[] = [];
  for (const page of docPages()) {
    const lines = readFileSync(join(ROOT, page), 'utf8').split('\n');
    lines.forEach((line, i) => {
      const marker = MARKER.exec(line.trim());
      if (!marker) return;
      const fence = /^(```+)(\S*)\s*$/.exec(lines[i + 1] ?? '');
      if (!fence)
        throw new Error(`${page}:${i + 1}: <!-- runnable: ${marker[1]} --> is not followed by a fence`);
      const end = lines.findIndex((l, j) => j > i + 1 && l.trim() === fence[1]);
      if (end < 0) throw new Error(`${page}:${i + 2}: the fence of ${marker[1]} is never closed`);
      blocks.push({ name: marker[1]!, page, lang: fence[2] ?? '', code: lines.slice(i + 2, end).join('\n') });
    });
  }
  return blocks;
}

/** The code of the block named `name`; throws when no page (or more than one) has it. */
export function runnableBlock(name: string): RunnableBlock {
  const found = runnableBlocks().filter((b) => b.name === name);
  if (found.length !== 1) {
    throw new Error(`${found.length} runnable blocks named ${name} in README.md and docs/ (want exactly 1)`);
  }
  return found[0]!;
}

/**
 * The block's commands: continuation lines joined, comment lines and trailing comments (`  # ...`,
 * `  -- ...` in SQL) dropped, blank lines left out.
 */
export function commandsOf(name: string): string[] {
  const block = runnableBlock(name);
  const joined = block.code.replace(/\\\n\s*/g, '');
  const comment = block.lang === 'sql' ? /\s+--\s.*$/ : /\s+#\s.*$/;
  return joined
    .split('\n')
    .map((l) => l.replace(comment, '').trim())
    .filter((l) => l !== '' && !l.startsWith('#') && !l.startsWith('--'));
}

/** Where a block is, for messages. */
export const where = (block: RunnableBlock) => `${block.page} (${block.name})`;

/** Test files (relative paths) that use a block by name through this module. */
export function testsUsing(name: string): string[] {
  const files: string[] = [];
  const walk = (dir: string) => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) walk(path);
      // docs.test.ts checks the blocks; it does not count as running one.
      else if (entry.name.endsWith('.test.ts') && entry.name !== 'docs.test.ts') files.push(path);
    }
  };
  walk(join(ROOT, 'test'));
  const use = new RegExp(`(runnableBlock|commandsOf)\\(\\s*'${name}'\\s*\\)`);
  return files.filter((f) => use.test(readFileSync(f, 'utf8'))).map((f) => relative(ROOT, f));
}
