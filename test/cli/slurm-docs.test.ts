import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { SLURM_COMMANDS } from '../../cli/slurm/index.ts';
import { renderSlurmDoc, SLURM_DOCS, slurmDocPath } from '../../scripts/slurm-docs.ts';

describe('docs/slurm: the fate of every option of every drop-in command', () => {
  it('has a page for each command conductor slurm runs', () => {
    expect(SLURM_DOCS.map((d) => d.command).sort()).toEqual(Object.keys(SLURM_COMMANDS).sort());
  });

  it('gives every option a reason, not only a fate', () => {
    for (const { command, table } of SLURM_DOCS) {
      for (const spec of table) expect(spec.note.length, `${command} --${spec.long}`).toBeGreaterThan(5);
    }
  });

  it('holds what scripts/slurm-docs.ts generates from the tables the parsers use (npm run docs:slurm)', () => {
    for (const { command, table, more } of SLURM_DOCS) {
      expect(readFileSync(slurmDocPath(command), 'utf8'), command).toBe(renderSlurmDoc(command, table, more));
    }
  });
});
