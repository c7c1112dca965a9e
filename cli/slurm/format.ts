/**
 * How Slurm's commands print times and fields (src/common/parse_time.c, squeue's print.c), which scripts
 * parse: the same job prints the same text on Conductor as on Slurm.
 */

function split(totalSeconds: number): [days: number, hours: number, minutes: number, seconds: number] {
  const s = Math.max(0, Math.floor(totalSeconds));
  return [Math.floor(s / 86400), Math.floor((s % 86400) / 3600), Math.floor((s % 3600) / 60), s % 60];
}

const two = (n: number) => String(n).padStart(2, '0');

/** squeue's TIME and TIME_LIMIT (`_print_secs`): `M:SS`, `H:MM:SS`, `D-HH:MM:SS`. */
export function squeueSeconds(totalSeconds: number): string {
  const [d, h, m, s] = split(totalSeconds);
  if (d > 0) return `${d}-${two(h)}:${two(m)}:${two(s)}`;
  if (h > 0) return `${h}:${two(m)}:${two(s)}`;
  return `${m}:${two(s)}`;
}

/** `secs2time_str` (sacct's Elapsed, Timelimit, CPUTime; scontrol's RunTime): `HH:MM:SS`, `D-HH:MM:SS`. */
export function clockSeconds(totalSeconds: number): string {
  const [d, h, m, s] = split(totalSeconds);
  return d > 0 ? `${d}-${two(h)}:${two(m)}:${two(s)}` : `${two(h)}:${two(m)}:${two(s)}`;
}

/** A time limit in minutes as the given style prints it; none is `UNLIMITED`. */
export function timeLimit(minutes: number | null | undefined, style: 'squeue' | 'clock'): string {
  if (minutes === null || minutes === undefined) return 'UNLIMITED';
  return style === 'squeue' ? squeueSeconds(minutes * 60) : clockSeconds(minutes * 60);
}

/** `slurm_make_time_str` with Slurm's default format `%FT%T` in local time; no time is `missing`. */
export function timestamp(iso: string | null | undefined, missing = 'Unknown'): string {
  if (!iso) return missing;
  const t = new Date(iso);
  if (Number.isNaN(t.getTime())) return missing;
  return `${t.getFullYear()}-${two(t.getMonth() + 1)}-${two(t.getDate())}T${two(t.getHours())}:${two(t.getMinutes())}:${two(t.getSeconds())}`;
}

/** A field in a column of `width`: cut to it (as Slurm does), padded on the left when `right`. */
export function fit(text: string, width: number | undefined, right: boolean): string {
  if (width === undefined || width <= 0) return text;
  const cut = text.length > width ? text.slice(0, width) : text;
  return right ? cut.padStart(width) : cut.padEnd(width);
}
