/**
 * Finding every process a job started, so that none outlives the job: a process that calls `setsid` leaves
 * the job's process group and would survive a kill of the group.
 *
 * - `cgroup2`: each attempt gets a cgroup v2 `<agent's cgroup>/conductor-<id>/<job>.<attempt>`; the job enters
 *   it before its script runs, and nothing it starts can leave it. Killed with `cgroup.kill` (Linux 5.14+),
 *   else by SIGKILLing `cgroup.procs` until it is empty.
 * - `cgroup1`: the same in a cgroup v1 hierarchy (freezer, else pids), killed through `cgroup.procs`.
 * - `sweep`: no cgroup the agent may create (not root, no cgroup fs): a /proc scan finds the job's process
 *   group, processes whose environment carries the job's CONDUCTOR_JOB_MARKER (readable for the same user,
 *   or by root), the sessions and children of those, and kills them. A process that leaves the session, drops those variables
 *   (exec with a new environment) and loses its parent escapes it.
 *
 * A supervisor per agent (`/bin/sh` blocked reading a pipe from the agent, told of each job's process group)
 * kills the agent's jobs the same way when the pipe closes without a word: the agent died (kill -9, OOM).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  accessSync,
  constants,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmdirSync,
  writeFileSync,
} from 'node:fs';
import { writeFile as writeFileAsync } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import type { JobRef, MemoryEnforcement } from './protocol.ts';

export type ContainmentKind = 'cgroup2' | 'cgroup1' | 'sweep';
export type ContainmentChoice = ContainmentKind | 'auto';
export const CONTAINMENT_CHOICES: readonly ContainmentChoice[] = ['auto', 'cgroup2', 'cgroup1', 'sweep'];

export interface Containment {
  kind: ContainmentKind;
  /** What is in use and where, or why no cgroup (for the start-up log line). */
  description: string;
  /** The cgroup holding this agent's job cgroups (cgroup kinds). */
  parent?: string;
}

interface Mount {
  point: string;
  root: string;
  fstype: string;
  superOptions: string[];
}

function readMounts(): Mount[] {
  const mounts: Mount[] = [];
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const [left, right] = line.split(' - ');
    if (!left || !right) continue;
    const fields = left.split(' ');
    const [fstype, , superOptions] = right.split(' ');
    if (!fields[4] || !fields[3] || !fstype) continue;
    mounts.push({
      point: unescapeMount(fields[4]),
      root: unescapeMount(fields[3]),
      fstype,
      superOptions: (superOptions ?? '').split(','),
    });
  }
  return mounts;
}

function unescapeMount(path: string): string {
  return path.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(Number.parseInt(octal, 8)));
}

/** This process's cgroup path in the v2 hierarchy (`0::`) or in the v1 hierarchy with `controller`. */
function ownCgroup(controller: string | undefined): string | undefined {
  for (const line of readFileSync('/proc/self/cgroup', 'utf8').split('\n')) {
    const m = /^(\d+):([^:]*):(.*)$/.exec(line);
    if (!m) continue;
    if (controller === undefined ? m[1] === '0' && m[2] === '' : m[2]!.split(',').includes(controller)) {
      return m[3];
    }
  }
  return undefined;
}

function cgroupDir(mount: Mount, path: string): string {
  const inside = mount.root !== '/' && path.startsWith(mount.root) ? path.slice(mount.root.length) : path;
  return join(mount.point, inside);
}

/** Stable across restarts, distinct for each agent on the machine: its jobs folder, hashed. */
function agentTag(jobsDir: string): string {
  let tag = agentTags.get(jobsDir);
  if (tag === undefined) {
    tag = createHash('sha256').update(resolve(jobsDir)).digest('hex').slice(0, 12);
    agentTags.set(jobsDir, tag);
  }
  return tag;
}

/** Every job's marker starts with its agent's tag: hashed once per jobs folder, not once per job. */
const agentTags = new Map<string, string>();

/** One cgroup per agent (state dir) holds its jobs' cgroups. */
function parentName(jobsDir: string): string {
  return `conductor-${agentTag(jobsDir)}`;
}

/** The variable every job gets, which the /proc sweep looks for: set where nothing else is. */
export const JOB_MARKER_VAR = 'CONDUCTOR_JOB_MARKER';

/** The value of JOB_MARKER_VAR for an attempt: unique to this agent's state dir and the attempt. */
export function jobMarker(jobsDir: string, ref: JobRef): string {
  return `${agentTag(jobsDir)}.${ref.job_id}.${ref.attempt}`;
}

/** A directory for job cgroups in `base`, or why not. */
function makeParent(base: string, name: string, probeFile: string): string | { problem: string } {
  const parent = join(base, name);
  try {
    accessSync(join(base, 'cgroup.procs'), constants.W_OK);
    mkdirSync(parent, { recursive: true });
    accessSync(join(parent, probeFile), constants.W_OK);
    return parent;
  } catch (err) {
    return { problem: `cannot use ${parent}: ${(err as Error).message}` };
  }
}

function tryCgroup2(jobsDir: string): Containment | string {
  const mount = readMounts().find((m) => m.fstype === 'cgroup2');
  if (!mount) return 'no cgroup2 file system mounted';
  const own = ownCgroup(undefined);
  if (own === undefined) return 'this process has no cgroup v2 path';
  const parent = makeParent(cgroupDir(mount, own), parentName(jobsDir), 'cgroup.procs');
  if (typeof parent !== 'string') return parent.problem;
  const how = existsSync(join(parent, 'cgroup.kill')) ? 'cgroup.kill' : 'cgroup.procs (no cgroup.kill)';
  return { kind: 'cgroup2', parent, description: `a cgroup v2 per job in ${parent}, killed with ${how}` };
}

function tryCgroup1(jobsDir: string): Containment | string {
  const problems: string[] = [];
  for (const controller of ['freezer', 'pids']) {
    const mount = readMounts().find((m) => m.fstype === 'cgroup' && m.superOptions.includes(controller));
    if (!mount) {
      problems.push(`no cgroup v1 ${controller} hierarchy`);
      continue;
    }
    const own = ownCgroup(controller);
    if (own === undefined) continue;
    const parent = makeParent(cgroupDir(mount, own), parentName(jobsDir), 'cgroup.procs');
    if (typeof parent !== 'string') {
      problems.push(parent.problem);
      continue;
    }
    return {
      kind: 'cgroup1',
      parent,
      description: `a cgroup v1 (${controller}) per job in ${parent}, killed through cgroup.procs`,
    };
  }
  return problems.join('; ') || 'no cgroup v1 hierarchy';
}

const SWEEP_DESCRIPTION =
  "a /proc sweep at each job's end (process group, CONDUCTOR_JOB_ID/CONDUCTOR_ATTEMPT in the environment, their sessions and children)";

/**
 * The way jobs' processes are kept track of: `choice` forces one (falling back to the sweep when it is not
 * usable), `auto` takes the first of cgroup2, cgroup1, sweep that works. Creates the parent cgroup.
 */
export function detectContainment(jobsDir: string, choice: ContainmentChoice = 'auto'): Containment {
  if (choice === 'sweep') return { kind: 'sweep', description: `${SWEEP_DESCRIPTION} (as configured)` };
  if (process.platform !== 'linux') {
    return { kind: 'sweep', description: `process groups only (no /proc on ${process.platform})` };
  }
  const problems: string[] = [];
  for (const attempt of choice === 'auto'
    ? [tryCgroup2, tryCgroup1]
    : [choice === 'cgroup2' ? tryCgroup2 : tryCgroup1]) {
    let found: Containment | string;
    try {
      found = attempt(jobsDir);
    } catch (err) {
      found = (err as Error).message;
    }
    if (typeof found !== 'string') return found;
    problems.push(found);
  }
  return { kind: 'sweep', description: `${SWEEP_DESCRIPTION}: no usable cgroup (${problems.join('; ')})` };
}

/** How jobs with a memory limit are held to it (what the agent reports as `memory_enforcement`). */
export interface MemoryEnforcementMode {
  kind: MemoryEnforcement;
  /** For the start-up log line: the mechanism, and why not a cgroup when it is not one. */
  description: string;
}

function controllersIn(file: string): string[] {
  try {
    return readFileSync(file, 'utf8').trim().split(/\s+/);
  } catch {
    return [];
  }
}

/**
 * Enables the memory controller for the job cgroups: in the agent's own cgroup's `cgroup.subtree_control`
 * (when it is not there already) and in the agent's parent cgroup's. True when job cgroups get `memory.max`.
 *
 * A cgroup other than the root that holds processes may not hand the memory controller down (EBUSY): a
 * systemd service with Delegate=yes starts the agent in the service's cgroup. When the agent is alone there,
 * it moves itself into a leaf beside its parent cgroup (`conductor-<id>-agent`) and tries again.
 */
function enableMemoryController(parent: string): true | string {
  const own = dirname(parent);
  if (!controllersIn(join(own, 'cgroup.controllers')).includes('memory')) {
    return `the memory controller is not available in ${own} (cgroup v1 may hold it)`;
  }
  for (const dir of [own, parent]) {
    const control = join(dir, 'cgroup.subtree_control');
    if (controllersIn(control).includes('memory')) continue;
    try {
      writeFileSync(control, '+memory');
    } catch (err) {
      const busy = (err as NodeJS.ErrnoException).code === 'EBUSY';
      if (!(busy && dir === own && moveSelfToLeaf(own, `${parent}-agent`))) {
        return `cannot enable the memory controller in ${control}: ${(err as Error).message}`;
      }
      try {
        writeFileSync(control, '+memory');
      } catch (again) {
        return `cannot enable the memory controller in ${control}: ${(again as Error).message}`;
      }
    }
  }
  return true;
}

/** Moves this process from `own` into the cgroup `leaf` when it is the only process in `own`. */
function moveSelfToLeaf(own: string, leaf: string): boolean {
  try {
    const procs = readFileSync(join(own, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean);
    if (procs.length !== 1 || procs[0] !== String(process.pid)) return false;
    mkdirSync(leaf, { recursive: true });
    writeFileSync(join(leaf, 'cgroup.procs'), String(process.pid));
    return true;
  } catch {
    return false;
  }
}

/**
 * `cgroup` when job cgroups are cgroup v2 ones with the memory controller (enabled here if need be), else
 * `rss` (the agent sums the resident memory of each limited job's processes every `sampleMs`), or `none`
 * without /proc.
 */
export function detectMemoryEnforcement(containment: Containment, sampleMs: number): MemoryEnforcementMode {
  let why: string;
  if (containment.kind === 'cgroup2' && containment.parent) {
    const enabled = enableMemoryController(containment.parent);
    if (enabled === true) {
      return {
        kind: 'cgroup',
        description: `cgroup (memory.max in each job's cgroup v2, no swap; OOM kills read from memory.events)`,
      };
    }
    why = enabled;
  } else {
    why = `job containment is ${containment.kind === 'sweep' ? 'the /proc sweep' : 'cgroup v1'}`;
  }
  if (process.platform !== 'linux' || !existsSync('/proc/self/status')) {
    return { kind: 'none', description: `none (no /proc to read memory use from; ${why})` };
  }
  return {
    kind: 'rss',
    description: `rss (sampling every ${sampleMs} ms, killing a job past its limit; ${why})`,
  };
}

/** Removes the agent's parent cgroup when no job cgroup is left in it (the agent stops). */
export function removeContainment(containment: Containment | undefined): void {
  if (!containment?.parent) return;
  try {
    rmdirSync(containment.parent);
  } catch {
    // a job's cgroup is still there (it could not be emptied), or it is gone already
  }
}

/** Sends `signal` to `pid`; false when it is gone (or not ours to signal). */
function signalPid(pid: number, signal: NodeJS.Signals): boolean {
  try {
    process.kill(pid, signal);
    return true;
  } catch {
    return false;
  }
}

/** The cgroup of one attempt. */
export class JobCgroup {
  constructor(readonly path: string) {}

  static create(containment: Containment, ref: JobRef): JobCgroup | undefined {
    if (!containment.parent) return undefined;
    const path = join(containment.parent, `${ref.job_id}.${ref.attempt}`);
    mkdirSync(path, { recursive: true });
    return new JobCgroup(path);
  }

  /** Moves `pid` into the cgroup, in libuv's thread pool (a move can sleep in the kernel). */
  add(pid: number): Promise<void> {
    return writeFileAsync(join(this.path, 'cgroup.procs'), `${pid}\n`);
  }

  pids(): number[] {
    try {
      return readFileSync(join(this.path, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number);
    } catch {
      return [];
    }
  }

  /** True while a live process is in the cgroup (exited processes leave it at once, zombies or not). */
  populated(): boolean {
    return this.pids().length > 0;
  }

  /** Signals every process in the cgroup; SIGKILL goes through cgroup.kill where there is one. */
  signal(signal: NodeJS.Signals): boolean {
    if (signal === 'SIGKILL') {
      try {
        writeFileSync(join(this.path, 'cgroup.kill'), '1');
        return true;
      } catch {
        // cgroup v1, or a kernel before 5.14: one by one below
      }
    }
    let any = false;
    for (const pid of this.pids()) any = signalPid(pid, signal) || any;
    return any;
  }

  /**
   * Holds the cgroup to `mb` MB (memory.max) with no swap (memory.swap.max, when the kernel has swap
   * accounting): past it the kernel reclaims, then OOM-kills a process of the job.
   */
  limitMemory(mb: number): void {
    writeFileSync(join(this.path, 'memory.max'), String(mb * 1024 * 1024));
    if (existsSync(join(this.path, 'memory.swap.max'))) {
      writeFileSync(join(this.path, 'memory.swap.max'), '0');
    }
  }

  /** How many processes of the cgroup the kernel OOM-killed (memory.events `oom_kill`); 0 without. */
  oomKills(): number {
    try {
      const m = /^oom_kill (\d+)$/m.exec(readFileSync(join(this.path, 'memory.events'), 'utf8'));
      return m ? Number(m[1]) : 0;
    } catch {
      return 0;
    }
  }

  /** Removes the (empty) cgroup; false while processes remain. */
  remove(): boolean {
    try {
      rmdirSync(this.path);
      return true;
    } catch (err) {
      return (err as NodeJS.ErrnoException).code === 'ENOENT';
    }
  }
}

interface ProcInfo {
  ppid: number;
  pgrp: number;
  session: number;
}

function readProc(pid: number): (ProcInfo & { state: string }) | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return { state: f[0] ?? '', ppid: Number(f[1]), pgrp: Number(f[2]), session: Number(f[3]) };
  } catch {
    return undefined;
  }
}

function carriesMarker(pid: number, mark: string): boolean {
  let environ: string;
  try {
    environ = readFileSync(`/proc/${pid}/environ`, 'latin1');
  } catch {
    return false; // gone, or another user's (readable only by root)
  }
  return `\0${environ}`.includes(`\0${mark}\0`);
}

/**
 * The live processes of a job, from one look at /proc: its process group (`pgid`), processes whose
 * environment carries its marker (jobMarker), and everything in the sessions and below the processes
 * found. `exclude` (the supervisor) never counts, nor does this process. Empty without /proc.
 */
export function findJobProcesses(marker: string, pgid: number | undefined, exclude: number[] = []): number[] {
  let entries: string[];
  try {
    entries = readdirSync('/proc');
  } catch {
    return [];
  }
  const skip = new Set([1, process.pid, ...exclude]);
  const own = readProc(process.pid);
  const mark = `${JOB_MARKER_VAR}=${marker}`;
  const procs = new Map<number, ProcInfo>();
  const found = new Set<number>();
  for (const entry of entries) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    if (skip.has(pid)) continue;
    const info = readProc(pid);
    if (!info || info.state === 'Z') continue;
    procs.set(pid, info);
    if ((pgid !== undefined && info.pgrp === pgid) || carriesMarker(pid, mark)) found.add(pid);
  }
  for (let grew = true; grew; ) {
    grew = false;
    const sessions = new Set<number>();
    for (const pid of found) {
      const session = procs.get(pid)!.session;
      if (session !== own?.session && session > 1) sessions.add(session);
    }
    for (const [pid, info] of procs) {
      if (found.has(pid)) continue;
      if (found.has(info.ppid) || sessions.has(info.session)) {
        found.add(pid);
        grew = true;
      }
    }
  }
  return [...found];
}

/** Signals every process findJobProcesses finds; returns how many there were. */
export function sweepJobProcesses(
  marker: string,
  pgid: number | undefined,
  signal: NodeJS.Signals,
  exclude: number[] = [],
): number {
  const pids = findJobProcesses(marker, pgid, exclude);
  for (const pid of pids) signalPid(pid, signal);
  return pids.length;
}

/**
 * Reads lines from the agent: `+ <pgid>` a job started in that process group, `- <pgid>` it is over and
 * cleaned up, `done` the agent stops with nothing left to watch: exit. End of file without `done`: the agent
 * died; kill every group still watched, then every job cgroup in the agent's parent (until empty) and remove
 * them, or without cgroups every process carrying a marker of this agent's jobs. Arguments: the agent's tag
 * (jobMarker's prefix), its parent cgroup (or empty). No command is started until the end: a fork is the
 * dearest step of starting a job, and it would be paid here for every one.
 */
const SUPERVISOR_SCRIPT = `groups=' '
while IFS=' ' read -r op pgid; do
  case $op in
  +) groups="$groups$pgid " ;;
  -) case $groups in *" $pgid "*) groups="\${groups%% $pgid *} \${groups#* $pgid }" ;; esac ;;
  done) exit 0 ;;
  esac
done
tag=$1 parent=$2
for pgid in $groups; do kill -KILL -- "-$pgid" 2>/dev/null; done
if [ -n "$parent" ]; then
  n=0
  while [ $n -lt 100 ]; do
    left=
    for cg in "$parent"/*/; do
      [ -d "$cg" ] || continue
      [ -e "\${cg}cgroup.kill" ] && echo 1 > "\${cg}cgroup.kill"
      pids=$(cat "\${cg}cgroup.procs" 2>/dev/null)
      if [ -n "$pids" ]; then
        kill -KILL $pids 2>/dev/null
        left=1
      else
        rmdir "$cg" 2>/dev/null
      fi
    done
    [ -z "$left" ] && break
    sleep 0.1
    n=$((n + 1))
  done
  rmdir "$parent" 2>/dev/null
else
  for round in 1 2; do
    for e in $(grep -l -z -e "^${JOB_MARKER_VAR}=$tag\\." /proc/[0-9]*/environ 2>/dev/null); do
      p=\${e#/proc/}
      kill -KILL "\${p%/environ}" 2>/dev/null
    done
  done
fi
`;

/**
 * The shell that kills an agent's jobs if the agent dies before them: one per agent (jobs folder), started
 * with its first job and replaced (told every group still watched) if it dies itself.
 */
export class AgentSupervisor {
  private child: ChildProcess | undefined;
  private readonly groups = new Set<number>();

  constructor(
    private readonly tag: string,
    private readonly parentCgroup: string | undefined,
  ) {}

  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** The job whose process group is `pgid` started: kill it if the agent dies. */
  watch(pgid: number): void {
    this.groups.add(pgid);
    this.send(`+ ${pgid}\n`);
  }

  /** The job of group `pgid` is over and cleaned up. */
  release(pgid: number): void {
    if (this.groups.delete(pgid)) this.send(`- ${pgid}\n`);
  }

  /**
   * Lets the supervisor exit without doing anything when no job is left to watch; otherwise it stays, and
   * kills what is left when the agent's process ends.
   */
  close(): void {
    if (this.groups.size > 0) return;
    this.child?.stdin?.end('done\n');
    this.child = undefined;
  }

  private send(line: string): void {
    if (this.child) {
      this.child.stdin?.write(line);
      return;
    }
    const child = this.start();
    if (!child) return;
    // A new supervisor (the first, or one replacing a dead one) learns every group still watched.
    child.stdin?.write([...this.groups].map((pgid) => `+ ${pgid}\n`).join(''));
  }

  private start(): ChildProcess | undefined {
    try {
      const child = spawn(
        '/bin/sh',
        ['-c', SUPERVISOR_SCRIPT, 'conductor-agent-supervisor', this.tag, this.parentCgroup ?? ''],
        {
          stdio: ['pipe', 'ignore', 'ignore'],
          detached: true,
          env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin' },
        },
      );
      if (child.pid === undefined) return undefined;
      child.on('error', () => {});
      child.stdin?.on('error', () => {});
      child.once('exit', () => {
        if (this.child === child) this.child = undefined;
      });
      // Neither the shell nor its pipe keeps the agent's process alive.
      child.unref();
      (child.stdin as unknown as { unref?: () => void } | null)?.unref?.();
      this.child = child;
      return child;
    } catch {
      return undefined;
    }
  }
}

const supervisors = new Map<string, AgentSupervisor>();

/** The supervisor of the agent whose jobs folder is `jobsDir`. */
export function agentSupervisor(jobsDir: string, containment: Containment): AgentSupervisor {
  const key = resolve(jobsDir);
  let supervisor = supervisors.get(key);
  if (!supervisor) {
    supervisor = new AgentSupervisor(agentTag(jobsDir), containment.parent);
    supervisors.set(key, supervisor);
  }
  return supervisor;
}

/** Lets the supervisor of `jobsDir` go (the agent stopped, its jobs are over). */
export function closeAgentSupervisor(jobsDir: string): void {
  const key = resolve(jobsDir);
  supervisors.get(key)?.close();
  supervisors.delete(key);
}
