/**
 * The files an sbatch job reads and writes on the shared filesystem, as slurmd does: its output file
 * (`-o`, default `slurm-%j.out` in its working directory), its error file (`-e`, default: the output file),
 * its input file (`-i`, default /dev/null), opened per `--open-mode`.
 *
 * The job's stdout and stderr still go to the attempt's own files in the agent's job folder (what the agent
 * streams to the control plane and holds to CONDUCTOR_OUTPUT_LIMIT); the agent copies what lands there into
 * the user's files. Without `-e` the job's stderr is the same open file as its stdout (so the two interleave
 * as written, in the output file and in the captured stdout stream alike, and the captured stderr stays
 * empty). Everything touching a user-chosen path happens in a process running as the job's user: the check
 * of the working directory and the creation of the files (one short bash), and the writers (`cat`), so that
 * no file is created, and no path resolved, with the agent's privileges.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import type { RunAsUser } from './config.ts';
import type { Assignment } from './protocol.ts';

/** What a filename pattern's replacement symbols stand for. */
export interface FilenamePatternValues {
  jobId: number;
  jobName: string;
  /** The user name the job runs as (`%u`). */
  user: string;
  /** The node's short host name (`%N`). */
  node: string;
  /** An array task's array job id (`%A`) and index (`%a`); absent: no array (`%A` is the job id). */
  arrayJobId?: number;
  arrayTaskId?: number;
}

/** `%a` of a job that is no array: Slurm's NO_VAL (0xfffffffe), which it prints as is. */
export const NO_ARRAY_INDEX = 4294967294;

/** Slurm takes at most this many digits of zero padding (`%10j`). */
const MAX_PAD = 10;

/**
 * sbatch(1) "filename pattern": `%%`, `%A`, `%a`, `%J`, `%j`, `%N`, `%n`, `%s`, `%t`, `%u`, `%x`, each
 * numeric one zero-padded to the width written between `%` and the letter (`%5j` → `00042`). A pattern
 * holding a backslash is not expanded; its backslashes are dropped. Any other `%` sequence stays as written.
 */
export function expandFilenamePattern(pattern: string, values: FilenamePatternValues): string {
  if (pattern.includes('\\')) return pattern.replaceAll('\\', '');
  return pattern.replace(/%(\d*)([%AaJjNnstux])/g, (whole, width: string, letter: string) => {
    const pad = (n: number | string) => String(n).padStart(Math.min(Number(width || 0), MAX_PAD), '0');
    switch (letter) {
      case '%':
        return width ? whole : '%';
      case 'A':
        return pad(values.arrayJobId ?? values.jobId);
      case 'j':
        return pad(values.jobId);
      case 'a':
        return pad(values.arrayTaskId ?? NO_ARRAY_INDEX);
      case 'J':
        return `${pad(values.jobId)}.batch`;
      case 'n':
      case 't':
        return pad(0);
      case 's':
        return 'batch';
      case 'N':
        return values.node;
      case 'u':
        return values.user;
      default:
        return values.jobName;
    }
  });
}

/** The job writes files of its own: sbatch jobs (they say where they were submitted) or any naming a file. */
export function writesJobFiles(assignment: Assignment): boolean {
  return Boolean(assignment.submit_dir || assignment.stdout || assignment.stderr || assignment.stdin);
}

export interface JobFilePaths {
  /** Absolute paths, resolved in the directory the job runs in. */
  output: string;
  /** Undefined: stderr goes into the output file. */
  error?: string;
  input?: string;
}

export interface PreparedPlace {
  /** The directory the job runs in: the one asked for, else /tmp. */
  cwd: string;
  /** slurmstepd's line for the job's stderr when the directory asked for could not be entered. */
  chdirMessage?: string;
  files?: JobFilePaths;
}

/** slurmstepd's words when it cannot enter a job's working directory. */
export function chdirMessage(dir: string, why: string): string {
  return `slurmstepd: error: couldn't chdir to \`${dir}': ${why}: going to /tmp instead\n`;
}

/**
 * Run as the job's user, with NUL-separated records `kind path error` on stdout: enters $1 (else /tmp, with
 * the reason), then creates or opens the output ($2), error ($3) and input ($4) files, relative paths in the
 * directory entered, $5 being `append` or `truncate`. bash words its errors with strerror, as slurmstepd.
 */
const PREPARE_SCRIPT = `
record() { printf '%s\\0%s\\0%s\\0' "$1" "$2" "$3"; }
if ! why=$(cd -- "$1" 2>&1); then record chdir "$1" "\${why##*"$1": }"; cd /tmp || exit 1; else cd -- "$1" || exit 1; fi
record cwd "$PWD" ""
open() {
  [ -n "$2" ] || return 0
  case $2 in /*) p=$2 ;; *) p=\${PWD%/}/$2 ;; esac
  if [ "$1" = input ]; then why=$( { : <"$p"; } 2>&1 )
  elif [ "$5" = append ]; then why=$( { : >>"$p"; } 2>&1 )
  else why=$( { : >"$p"; } 2>&1 ); fi && why=
  record "$1" "$p" "\${why##*"$p": }"
}
open output "$2" x x "$5"
open error "$3" x x "$5"
open input "$4" x x "$5"
`;

/**
 * Enters `dir` as the job's user (`runAs`, else the agent's own), falling back to /tmp with slurmstepd's
 * message, and, when `names` is given, creates the output and error files per `append` (truncating them
 * otherwise) and checks the input file can be read. Returns the place, or why the job cannot start
 * (`couldn't open output file /x/y: No such file or directory`).
 */
export function prepareJobPlace(
  dir: string,
  names: { output: string; error?: string; input?: string; append: boolean } | undefined,
  runAs: RunAsUser | undefined,
  envPath: string | undefined,
): PreparedPlace | { problem: string } {
  const run = spawnSync(
    'bash',
    [
      '-c',
      PREPARE_SCRIPT,
      'conductor-job-files',
      dir,
      names?.output ?? '',
      names?.error ?? '',
      names?.input ?? '',
      names?.append ? 'append' : 'truncate',
    ],
    {
      env: { PATH: envPath ?? '/usr/bin:/bin', LC_ALL: 'C' },
      stdio: ['ignore', 'pipe', 'pipe'],
      encoding: 'utf8',
      timeout: 30_000,
      ...(runAs ? { uid: runAs.uid, gid: runAs.gid } : {}),
    },
  );
  const fields = (run.stdout ?? '').split('\0');
  const place: PreparedPlace = { cwd: '/tmp' };
  const files: Partial<JobFilePaths> = {};
  let cwdSeen = false;
  for (let i = 0; i + 2 < fields.length; i += 3) {
    const [kind, at, why] = [fields[i]!, fields[i + 1]!, fields[i + 2]!];
    if (kind === 'chdir') place.chdirMessage = chdirMessage(at, why);
    else if (kind === 'cwd') {
      place.cwd = at;
      cwdSeen = true;
    } else if (why) {
      return { problem: `couldn't open ${kind} file ${at}: ${why}` };
    } else if (kind === 'output' || kind === 'error' || kind === 'input') files[kind] = at;
  }
  if (!cwdSeen) {
    const why = run.error?.message ?? (run.stderr || `exit status ${run.status}`).trim();
    return { problem: `cannot prepare the job's working directory ${dir}: ${why}` };
  }
  if (names) {
    if (!files.output) return { problem: `couldn't open output file ${names.output}` };
    place.files = {
      output: files.output,
      ...(files.error ? { error: files.error } : {}),
      ...(files.input ? { input: files.input } : {}),
    };
  }
  return place;
}

/** Bytes copied per read; also how much a writer may have waiting before the copy pauses. */
const COPY_CHUNK_BYTES = 1024 * 1024;

/** Appends stdin to the file $1, as the job's user. */
const WRITER_SCRIPT = 'exec cat >>"$1"';

/** One user file and the `cat` (running as the job's user) that appends to it. */
class FileWriter {
  readonly child: ChildProcess;
  readonly exited: Promise<void>;
  /** What went wrong, once: the copy stops and the agent logs it. */
  failure: string | undefined;

  constructor(
    readonly path: string,
    runAs: RunAsUser | undefined,
    envPath: string | undefined,
  ) {
    this.child = spawn('bash', ['-c', WRITER_SCRIPT, 'conductor-job-output', path], {
      env: { PATH: envPath ?? '/usr/bin:/bin', LC_ALL: 'C' },
      stdio: ['pipe', 'ignore', 'pipe'],
      ...(runAs ? { uid: runAs.uid, gid: runAs.gid } : {}),
    });
    let stderr = '';
    this.child.stderr?.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    this.child.stdin?.on('error', (err) => {
      this.failure ??= err.message;
    });
    this.exited = new Promise((resolve) => {
      this.child.once('error', (err) => {
        this.failure ??= err.message;
        resolve();
      });
      this.child.once('close', (code) => {
        if (code !== 0) this.failure ??= stderr.trim() || `exit status ${code}`;
        resolve();
      });
    });
  }

  get busy(): boolean {
    return (this.child.stdin?.writableLength ?? 0) >= COPY_CHUNK_BYTES;
  }

  /** Resolves once the writer can take more (or is gone: a failure then says why). */
  async write(data: Buffer): Promise<void> {
    const stdin = this.child.stdin;
    if (!stdin || this.failure || stdin.write(data)) return;
    await Promise.race([new Promise((resolve) => stdin.once('drain', resolve)), this.exited]);
  }
}

/** Copies the attempt's captured streams into the user's files, each from where it left off. */
export class JobFileCopier {
  private readonly sources: { path: string; copied: number; writer: FileWriter }[] = [];
  private finishing: Promise<void> | undefined;

  /**
   * `streams`: the attempt's stdout file (copied to `files.output`) and, with a separate error file, its
   * stderr file. The user's files exist already (prepareJobPlace created them).
   */
  constructor(
    streams: { stdout: string; stderr: string },
    files: JobFilePaths,
    runAs: RunAsUser | undefined,
    envPath: string | undefined,
  ) {
    this.sources.push({
      path: streams.stdout,
      copied: 0,
      writer: new FileWriter(files.output, runAs, envPath),
    });
    if (files.error !== undefined) {
      const writer =
        files.error === files.output ? this.sources[0]!.writer : new FileWriter(files.error, runAs, envPath);
      this.sources.push({ path: streams.stderr, copied: 0, writer });
    }
  }

  /** Why copying into a user file stopped, if it did. */
  get failures(): string[] {
    return [...new Set(this.sources.map((s) => s.writer))]
      .filter((w) => w.failure !== undefined)
      .map((w) => `cannot write ${w.path}: ${w.failure}`);
  }

  /** Copies what is new, without waiting for a writer that has a chunk's worth still to write. */
  copyNew(): void {
    for (const source of this.sources) void this.copy(source, false);
  }

  /** Copies the rest (the job is over), then lets the writers finish. */
  finish(): Promise<void> {
    this.finishing ??= (async () => {
      for (const source of this.sources) await this.copy(source, true);
      const writers = [...new Set(this.sources.map((s) => s.writer))];
      for (const writer of writers) writer.child.stdin?.end();
      await Promise.all(writers.map((w) => w.exited));
    })();
    return this.finishing;
  }

  /**
   * Hands the writer what `source` holds past where it left off, up to its end now: while the writer keeps
   * up (the rest waits in the file for the next call), or all of it (`all`, waiting for the writer).
   */
  private async copy(source: JobFileCopier['sources'][number], all: boolean): Promise<void> {
    let fd: number;
    try {
      fd = openSync(source.path, 'r');
    } catch {
      return; // the folder is gone (stale job removed)
    }
    try {
      const end = fstatSync(fd).size;
      while (source.copied < end && !source.writer.failure && (all || !source.writer.busy)) {
        const buf = Buffer.alloc(Math.min(COPY_CHUNK_BYTES, end - source.copied));
        const n = readSync(fd, buf, 0, buf.length, source.copied);
        if (n === 0) break;
        source.copied += n;
        const written = source.writer.write(buf.subarray(0, n));
        if (all) await written;
      }
    } finally {
      closeSync(fd);
    }
  }
}
