/**
 * The drop-in Slurm commands: `conductor slurm <command> [options]` runs one, and `conductor slurm-commands
 * DIR` writes an executable per command into DIR that runs this same CLI, so that DIR first on PATH makes
 * `sinfo`, `scontrol`, `srun` ... (and the tools that call them) talk to Conductor.
 */
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { Io } from '../io.ts';
import type { SlurmCommand } from './command.ts';
import { runSacct } from './sacct.ts';
import { runSacctmgr } from './sacctmgr.ts';
import { runSbatch } from './sbatch.ts';
import { runScancel } from './scancel.ts';
import { runScontrol } from './scontrol.ts';
import { runSinfo } from './sinfo.ts';
import { runSprio } from './sprio.ts';
import { runSqueue } from './squeue.ts';
import { runSreport } from './sreport.ts';
import { runSrun } from './srun.ts';
import { runSshare } from './sshare.ts';

/** Every drop-in command by name: the one place a new command is added. */
export const SLURM_COMMANDS: Record<string, SlurmCommand> = {
  sacct: runSacct,
  sacctmgr: runSacctmgr,
  sbatch: runSbatch,
  scancel: runScancel,
  scontrol: runScontrol,
  sinfo: runSinfo,
  sprio: runSprio,
  squeue: runSqueue,
  sreport: runSreport,
  srun: runSrun,
  sshare: runSshare,
};

/**
 * How to start this CLI again: the node binary, its options (tsx's loader when run from a checkout with
 * `npm run conductor`) and the entry file (cli/bin/conductor.js, cli/conductor.ts, or the package's
 * dist/standalone.js).
 */
export function currentEntry(): string[] {
  return [process.execPath, ...process.execArgv, resolve(process.argv[1] as string)];
}

const quote = (word: string) => `'${word.replace(/'/g, `'\\''`)}'`;

/** Writes one executable per command into `dir`; returns their paths. */
export function writeSlurmCommands(dir: string, entry: readonly string[]): string[] {
  mkdirSync(dir, { recursive: true });
  return Object.keys(SLURM_COMMANDS).map((name) => {
    const path = join(dir, name);
    writeFileSync(
      path,
      `#!/bin/sh\n# Slurm's ${name} on Conductor (written by conductor slurm-commands)\nexec ${entry.map(quote).join(' ')} slurm ${name} "$@"\n`,
    );
    chmodSync(path, 0o755);
    return path;
  });
}

/** `conductor slurm <command> [options]`: the command's own exit code and messages. */
export async function runSlurm(args: string[], io: Io, env: NodeJS.ProcessEnv): Promise<number> {
  const [name = '', ...rest] = args;
  const command = Object.hasOwn(SLURM_COMMANDS, name) ? SLURM_COMMANDS[name] : undefined;
  if (command) return command(rest, io, env);
  const names = Object.keys(SLURM_COMMANDS);
  io.err(`conductor slurm: unknown command ${name} (one of ${names.join(', ')})\n`);
  io.err(`Usage: conductor slurm <${names.join('|')}> [options]\n`);
  return 2;
}
