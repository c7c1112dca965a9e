import { z } from 'zod';

/** Linux's signal names (without SIG), as scancel(1) and sbatch(1) `--signal` accept them. */
const SIGNAL_NAMES = new Set(
  'HUP INT QUIT ILL TRAP ABRT BUS FPE KILL USR1 SEGV USR2 PIPE ALRM TERM STKFLT CHLD CONT STOP TSTP TTIN TTOU URG XCPU XFSZ VTALRM PROF WINCH IO PWR SYS'.split(
    ' ',
  ),
);

/** A signal as the agent takes it: a name without `SIG` (`USR1`), or a number 1..64 as a string; null if neither. */
export function normalizeSignal(value: string): string | null {
  const s = value.trim().toUpperCase();
  if (/^\d{1,2}$/.test(s)) {
    const n = Number(s);
    return n >= 1 && n <= 64 ? String(n) : null;
  }
  const name = s.startsWith('SIG') ? s.slice(3) : s;
  return SIGNAL_NAMES.has(name) ? name : null;
}

const SIGNAL_HELP = 'signal is a name such as USR1, SIGUSR1 or TERM, or a number from 1 to 64';

/** A signal in a request: normalized (see normalizeSignal), 400 when unknown. */
export const signalName = z
  .string({ error: SIGNAL_HELP })
  .max(16, SIGNAL_HELP)
  .refine((s) => normalizeSignal(s) !== null, SIGNAL_HELP)
  .transform((s) => normalizeSignal(s) as string);
