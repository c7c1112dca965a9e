/**
 * Slurm's time formats: "minutes", "minutes:seconds", "hours:minutes:seconds", "days-hours",
 * "days-hours:minutes" and "days-hours:minutes:seconds". A number is minutes. Returns seconds, or null when
 * the text is not a valid time.
 */
export function parseTimeLimit(value: number | string): number | null {
  if (typeof value === 'number') {
    return Number.isFinite(value) && value > 0 ? Math.round(value * 60) : null;
  }
  const text = value.trim();
  const match = /^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$/.exec(text);
  if (!match) return null;
  const [, days, a, b, c] = match;
  const n = (s: string | undefined) => (s === undefined ? 0 : Number(s));
  let seconds: number;
  if (days !== undefined) {
    // days-hours[:minutes[:seconds]]
    seconds = n(days) * 86400 + n(a) * 3600 + n(b) * 60 + n(c);
  } else if (c !== undefined) {
    seconds = n(a) * 3600 + n(b) * 60 + n(c);
  } else if (b !== undefined) {
    seconds = n(a) * 60 + n(b);
  } else {
    seconds = n(a) * 60;
  }
  return seconds > 0 ? seconds : null;
}

/** Exit code in Slurm's `code:signal` form. */
export const EXIT_CODE_PATTERN = /^\d{1,3}:\d{1,3}$/;
