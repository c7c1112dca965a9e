/**
 * `sinfo` over Conductor's partitions and workers: the partition × node-state lines, `-o`/`-O` formats,
 * node-oriented (`-N`), summarized (`-s`) and reason (`-R`) views print as Slurm 22.05's sinfo prints them
 * (src/sinfo/print.c), since scripts parse them (snakemake takes the `*` entry of `sinfo -o %P` as the
 * default partition).
 */
import { ApiError, type Client } from '../api.ts';
import type { Io } from '../io.ts';
import { apiClient, guarded, has, optionHelp, parseOptions, SLURM_VERSION, SlurmError } from './command.ts';
import { fit, squeueSeconds, timestamp } from './format.ts';
import { lastValue, type OptionSpec } from './getopt.ts';
import { compressHostlist, hostlistMatcher } from './hostlist.ts';

export const SINFO_OPTIONS: readonly OptionSpec[] = [
  {
    long: 'all',
    short: 'a',
    arg: 'none',
    fate: 'honoured',
    note: 'every partition (none is hidden on Conductor)',
  },
  {
    long: 'clusters',
    short: 'M',
    arg: 'required',
    fate: 'refused',
    note: 'a Conductor control plane is one cluster',
    value: 'string',
  },
  {
    long: 'dead',
    short: 'd',
    arg: 'none',
    fate: 'honoured',
    note: 'only nodes that are down (not responding)',
  },
  {
    long: 'exact',
    short: 'e',
    arg: 'none',
    fate: 'honoured',
    note: 'nodes are grouped only when their CPUs, memory, features and GRES are the same',
  },
  { long: 'federation', arg: 'none', fate: 'warned', note: 'Conductor has no federation' },
  {
    long: 'format',
    short: 'o',
    arg: 'required',
    fate: 'honoured',
    note: 'the output format (%P %R %a %l %L %D %t %T %N %n %c %C %m %e %O %f %b %G %E %H %u %U %z %X %Y %Z %A %F %s %h %g %r %p %B %d %w ...)',
    value: 'output_format',
  },
  {
    long: 'Format',
    short: 'O',
    arg: 'required',
    fate: 'honoured',
    note: 'the output fields by name (Partition, NodeList, StateCompact, CPUsState, Memory, Gres, Reason ...)',
    value: 'output_format',
  },
  { long: 'help', arg: 'none', fate: 'honoured', note: 'this help' },
  { long: 'hide', arg: 'none', fate: 'honoured', note: 'the default: Conductor has no hidden partitions' },
  {
    long: 'iterate',
    short: 'i',
    arg: 'required',
    fate: 'refused',
    note: 'sinfo prints once here; run it under watch(1)',
    value: 'seconds',
  },
  {
    long: 'json',
    arg: 'none',
    fate: 'refused',
    note: "Slurm's JSON layout is not reproduced; `conductor nodes --json` and `conductor partitions --json` give the API's",
  },
  {
    long: 'list-reasons',
    short: 'R',
    arg: 'none',
    fate: 'honoured',
    note: 'the nodes that are down, drained or draining, with why',
  },
  {
    long: 'local',
    arg: 'none',
    fate: 'warned',
    note: 'Conductor has no federation: the one cluster is local',
  },
  { long: 'long', short: 'l', arg: 'none', fate: 'honoured', note: "Slurm's long formats" },
  { long: 'noconvert', arg: 'none', fate: 'honoured', note: 'the default here: memory prints in MB' },
  { long: 'Node', short: 'N', arg: 'none', fate: 'honoured', note: 'one line per node and partition' },
  {
    long: 'nodes',
    short: 'n',
    arg: 'required',
    fate: 'honoured',
    note: 'only these nodes (a hostlist: node[01-04],gpu01)',
    value: 'nodes',
  },
  { long: 'noheader', short: 'h', arg: 'none', fate: 'honoured', note: 'no header line' },
  {
    long: 'partition',
    short: 'p',
    arg: 'required',
    fate: 'honoured',
    note: 'only these partitions (a comma list)',
    value: 'partition',
  },
  {
    long: 'reservation',
    short: 'T',
    arg: 'none',
    fate: 'refused',
    note: 'the API does not list reservations',
  },
  { long: 'responding', short: 'r', arg: 'none', fate: 'honoured', note: 'only nodes that respond (live)' },
  {
    long: 'sort',
    short: 'S',
    arg: 'required',
    fate: 'warned',
    note: "lines print in sinfo's default order (partitions as listed, busier states first; nodes by name with -N)",
    value: 'sort_list',
  },
  {
    long: 'states',
    short: 't',
    arg: 'required',
    fate: 'honoured',
    note: 'only nodes in these states (idle, mix, alloc, drain, drained, draining, down, no_respond; a comma list, or & for all of them)',
    value: 'states',
  },
  {
    long: 'summarize',
    short: 's',
    arg: 'none',
    fate: 'honoured',
    note: 'one line per partition: NODES(A/I/O/T)',
  },
  { long: 'usage', arg: 'none', fate: 'honoured', note: 'a short usage message' },
  { long: 'verbose', short: 'v', arg: 'none', fate: 'honoured', note: 'says which control plane it asks' },
  { long: 'version', short: 'V', arg: 'none', fate: 'honoured', note: `prints "slurm ${SLURM_VERSION}"` },
  { long: 'yaml', arg: 'none', fate: 'refused', note: "Slurm's YAML layout is not reproduced" },
];

/** The partitions and workers sinfo reads, as GET /api/v1/partitions and /api/v1/workers return them. */
export interface SinfoPartition {
  name: string;
  default: boolean;
  state: string;
  nodes?: string | null;
  max_time: number | null;
  default_time: number | null;
  max_cpus_per_node?: number | null;
  priority_tier?: number;
  live_nodes: string[];
}

export interface SinfoWorker {
  worker_id: string;
  cpus: number;
  allocated_cpus: number;
  status: string;
  live?: boolean;
  memory_mb?: number;
  allocated_memory_mb?: number;
  gpu_devices?: { index: number; model: string; used: boolean }[];
  gpus?: number;
  gres?: Record<string, { total: number; allocated: number }>;
  features?: string[];
  declared_partitions?: string[];
  /** The dashboard's workers carry their partitions already. */
  partitions?: string[];
  down_at?: string | null;
  down_reason?: string | null;
}

type NodeState = 'idle' | 'mixed' | 'allocated' | 'draining' | 'drained' | 'down';

const COMPACT: Record<NodeState, string> = {
  idle: 'idle',
  mixed: 'mix',
  allocated: 'alloc',
  draining: 'drng',
  drained: 'drain',
  down: 'down',
};

/** sinfo's default order puts the higher node state first (MIXED above ALLOCATED above IDLE above DOWN). */
const STATE_RANK: Record<NodeState, number> = {
  mixed: 5,
  allocated: 3,
  draining: 3,
  idle: 2,
  drained: 2,
  down: 1,
};

export interface NodeInfo {
  name: string;
  state: NodeState;
  responding: boolean;
  cpus: number;
  allocCpus: number;
  memoryMb: number;
  allocMemoryMb: number;
  features: string;
  gres: string;
  partitions: string[];
  reason: string | null;
  reasonTime: string | null;
}

function nodeState(w: SinfoWorker): NodeState {
  if (w.live === false || w.status === 'down') return 'down';
  if (w.status === 'draining') return w.allocated_cpus > 0 ? 'draining' : 'drained';
  if (w.allocated_cpus === 0) return 'idle';
  return w.allocated_cpus >= w.cpus ? 'allocated' : 'mixed';
}

function gresOf(w: SinfoWorker): string {
  const gpus = new Map<string, number>();
  for (const device of w.gpu_devices ?? []) gpus.set(device.model, (gpus.get(device.model) ?? 0) + 1);
  const parts = [...gpus].map(([model, n]) => (model ? `gpu:${model}:${n}` : `gpu:${n}`));
  if (parts.length === 0 && (w.gpus ?? 0) > 0) parts.push(`gpu:${w.gpus}`);
  for (const [name, { total }] of Object.entries(w.gres ?? {})) parts.push(`${name}:${total}`);
  return parts.length > 0 ? parts.join(',') : '(null)';
}

/** Each worker as sinfo sees it, with the partitions it serves (the same rule as the scheduler's). */
export function nodesOf(partitions: readonly SinfoPartition[], workers: readonly SinfoWorker[]): NodeInfo[] {
  const known = new Set(partitions.map((p) => p.name));
  const lists = partitions
    .filter((p) => p.nodes)
    .map((p) => ({ name: p.name, matches: hostlistMatcher(p.nodes as string) }));
  const defaultName = partitions.find((p) => p.default)?.name;
  return workers.map((w) => {
    let names: string[];
    if (w.partitions) names = w.partitions.filter((p) => known.has(p));
    else if (w.live !== false && w.status !== 'down') {
      names = partitions.filter((p) => p.live_nodes.includes(w.worker_id)).map((p) => p.name);
    } else {
      const declared = w.declared_partitions ?? [];
      const set = new Set(declared.filter((d) => known.has(d)));
      for (const list of lists) if (list.matches(w.worker_id)) set.add(list.name);
      if (set.size === 0 && declared.length === 0 && defaultName !== undefined) set.add(defaultName);
      names = [...set];
    }
    const state = nodeState(w);
    return {
      name: w.worker_id,
      state,
      responding: state !== 'down',
      cpus: w.cpus,
      allocCpus: w.allocated_cpus,
      memoryMb: w.memory_mb ?? 0,
      allocMemoryMb: w.allocated_memory_mb ?? 0,
      features: w.features && w.features.length > 0 ? w.features.join(',') : '(null)',
      gres: gresOf(w),
      partitions: names,
      reason: state === 'down' ? (w.down_reason ?? 'Not responding') : null,
      reasonTime: state === 'down' ? (w.down_at ?? null) : null,
    };
  });
}

interface Row {
  partition: SinfoPartition | null;
  nodes: NodeInfo[];
}

interface Field {
  header: string;
  /** Which record property the field shows: rows are only merged when they agree on it. */
  match?: 'partition' | 'state' | 'reason' | 'features' | 'gres';
  value(row: Row): string;
}

const minPlus = (values: number[]) => {
  if (values.length === 0) return '0';
  const min = Math.min(...values);
  return min === Math.max(...values) ? String(min) : `${min}+`;
};

const stateText = (row: Row, long: boolean) => {
  const node = row.nodes[0];
  if (!node) return 'n/a';
  const text = long ? node.state : COMPACT[node.state];
  return node.responding ? text : `${text}*`;
};

const counts = (row: Row) => {
  let alloc = 0;
  let idle = 0;
  let other = 0;
  for (const n of row.nodes) {
    if (n.state === 'idle') idle++;
    else if (n.state === 'mixed' || n.state === 'allocated') alloc++;
    else other++;
  }
  return { alloc, idle, other, total: row.nodes.length };
};

const part = (row: Row, f: (p: SinfoPartition) => string) => (row.partition ? f(row.partition) : 'n/a');
const limit = (minutes: number | null, none: string) =>
  minutes === null ? none : squeueSeconds(Math.round(minutes * 60));

const FIELDS: Record<string, Field> = {
  a: {
    header: 'AVAIL',
    match: 'partition',
    value: (r) =>
      part(
        r,
        (p) => ({ UP: 'up', DOWN: 'down', DRAIN: 'drain', INACTIVE: 'inactive' })[p.state] ?? 'unknown',
      ),
  },
  A: {
    header: 'NODES(A/I)',
    value: (r) => {
      const c = counts(r);
      return `${c.alloc}/${c.idle}`;
    },
  },
  b: { header: 'ACTIVE_FEATURES', match: 'features', value: (r) => r.nodes[0]?.features ?? '(null)' },
  B: {
    header: 'MAX_CPUS_PER_NODE',
    match: 'partition',
    value: (r) => part(r, (p) => (p.max_cpus_per_node ? String(p.max_cpus_per_node) : 'UNLIMITED')),
  },
  c: { header: 'CPUS', value: (r) => minPlus(r.nodes.map((n) => n.cpus)) },
  C: {
    header: 'CPUS(A/I/O/T)',
    value: (r) => {
      let alloc = 0;
      let idle = 0;
      let other = 0;
      for (const n of r.nodes) {
        if (n.state === 'down' || n.state === 'drained') other += n.cpus;
        else if (n.state === 'draining') {
          alloc += n.allocCpus;
          other += n.cpus - n.allocCpus;
        } else {
          alloc += n.allocCpus;
          idle += n.cpus - n.allocCpus;
        }
      }
      return `${alloc}/${idle}/${other}/${alloc + idle + other}`;
    },
  },
  d: { header: 'TMP_DISK', value: () => '0' },
  D: { header: 'NODES', value: (r) => String(r.nodes.length) },
  e: { header: 'FREE_MEM', value: () => 'N/A' },
  E: { header: 'REASON', match: 'reason', value: (r) => r.nodes[0]?.reason ?? 'none' },
  f: { header: 'AVAIL_FEATURES', match: 'features', value: (r) => r.nodes[0]?.features ?? '(null)' },
  F: {
    header: 'NODES(A/I/O/T)',
    value: (r) => {
      const c = counts(r);
      return `${c.alloc}/${c.idle}/${c.other}/${c.total}`;
    },
  },
  g: { header: 'GROUPS', match: 'partition', value: (r) => part(r, () => 'all') },
  G: { header: 'GRES', match: 'gres', value: (r) => r.nodes[0]?.gres ?? '(null)' },
  h: { header: 'OVERSUBSCRIBE', match: 'partition', value: (r) => part(r, () => 'NO') },
  H: { header: 'TIMESTAMP', match: 'reason', value: (r) => timestamp(r.nodes[0]?.reasonTime) },
  I: { header: 'PRIO_JOB_FACTOR', match: 'partition', value: (r) => part(r, () => '1') },
  l: { header: 'TIMELIMIT', match: 'partition', value: (r) => part(r, (p) => limit(p.max_time, 'infinite')) },
  L: {
    header: 'DEFAULTTIME',
    match: 'partition',
    value: (r) => part(r, (p) => limit(p.default_time, 'n/a')),
  },
  m: { header: 'MEMORY', value: (r) => minPlus(r.nodes.map((n) => n.memoryMb)) },
  M: { header: 'PREEMPT_MODE', match: 'partition', value: (r) => part(r, () => 'OFF') },
  n: { header: 'HOSTNAMES', value: (r) => compressHostlist(r.nodes.map((n) => n.name)) },
  N: { header: 'NODELIST', value: (r) => compressHostlist(r.nodes.map((n) => n.name)) },
  o: { header: 'NODE_ADDR', value: (r) => compressHostlist(r.nodes.map((n) => n.name)) },
  O: { header: 'CPU_LOAD', value: () => 'N/A' },
  p: { header: 'PRIO_TIER', match: 'partition', value: (r) => part(r, (p) => String(p.priority_tier ?? 1)) },
  P: {
    header: 'PARTITION',
    match: 'partition',
    value: (r) => part(r, (p) => `${p.name}${p.default ? '*' : ''}`),
  },
  r: { header: 'ROOT', match: 'partition', value: (r) => part(r, () => 'no') },
  R: { header: 'PARTITION', match: 'partition', value: (r) => part(r, (p) => p.name) },
  s: { header: 'JOB_SIZE', match: 'partition', value: (r) => part(r, () => '1') },
  S: { header: 'ALLOCNODES', match: 'partition', value: (r) => part(r, () => 'all') },
  t: { header: 'STATE', match: 'state', value: (r) => stateText(r, false) },
  T: { header: 'STATE', match: 'state', value: (r) => stateText(r, true) },
  u: { header: 'USER', match: 'reason', value: (r) => (r.nodes[0]?.reason ? 'root' : 'Unknown') },
  U: { header: 'USER', match: 'reason', value: (r) => (r.nodes[0]?.reason ? 'root(0)' : 'Unknown') },
  v: { header: 'VERSION', value: () => SLURM_VERSION },
  V: { header: 'CLUSTER', value: () => 'N/A' },
  w: { header: 'WEIGHT', value: () => '1' },
  X: { header: 'SOCKETS', value: () => '1' },
  Y: { header: 'CORES', value: (r) => minPlus(r.nodes.map((n) => n.cpus)) },
  Z: { header: 'THREADS', value: () => '1' },
  z: { header: 'S:C:T', value: (r) => `1:${minPlus(r.nodes.map((n) => n.cpus))}:1` },
};

/** `-O` names and the `-o` letter each stands for. */
const LONG_FIELDS: Record<string, string> = {
  allocnodes: 'S',
  available: 'a',
  cluster: 'V',
  cores: 'Y',
  cpus: 'c',
  cpusload: 'O',
  cpusstate: 'C',
  defaulttime: 'L',
  disk: 'd',
  features: 'f',
  features_act: 'b',
  freemem: 'e',
  gres: 'G',
  groups: 'g',
  maxcpuspernode: 'B',
  memory: 'm',
  nodeaddr: 'o',
  nodeai: 'A',
  nodeaiot: 'F',
  nodehost: 'n',
  nodelist: 'N',
  nodes: 'D',
  oversubscribe: 'h',
  partition: 'P',
  partitionname: 'R',
  preemptmode: 'M',
  priority: 'p',
  priorityjobfactor: 'I',
  prioritytier: 'p',
  reason: 'E',
  root: 'r',
  size: 's',
  socketcorethread: 'z',
  sockets: 'X',
  statecompact: 't',
  statelong: 'T',
  threads: 'Z',
  time: 'l',
  timestamp: 'H',
  user: 'u',
  userlong: 'U',
  version: 'v',
  weight: 'w',
};

interface Column {
  field: Field;
  /** 0: as wide as the text; -1: the widest value (Slurm's `%#P`, `%#N`), at least 9. */
  width: number;
  right: boolean;
  /** Literal text after the field. */
  suffix: string;
}

interface Format {
  prefix: string;
  columns: Column[];
}

/** An `-o` format: `%[.][size]type` fields and the text between them (`%%`: a percent sign). */
function parseFormat(text: string): Format {
  const format: Format = { prefix: '', columns: [] };
  const re = /%%|%(\.)?(#|\d+)?([A-Za-z])/g;
  let last = 0;
  for (let m = re.exec(text); m; m = re.exec(text)) {
    const literal = text.slice(last, m.index) + (m[0] === '%%' ? '%' : '');
    const previous = format.columns.at(-1);
    if (previous) previous.suffix += literal;
    else format.prefix += literal;
    last = re.lastIndex;
    if (m[0] === '%%') continue;
    const field = FIELDS[m[3] as string];
    if (!field) throw new SlurmError(`Invalid node format specification: ${m[3]}`);
    format.columns.push({
      field,
      width: m[2] === '#' ? -1 : Number(m[2] ?? 0),
      right: m[1] === '.',
      suffix: '',
    });
  }
  const rest = text.slice(last);
  const previous = format.columns.at(-1);
  if (previous) previous.suffix += rest;
  else format.prefix += rest;
  return format;
}

/** An `-O` format: `type[:[.][size][suffix]]`, comma separated; a field is 20 wide unless told. */
function parseLongFormat(text: string): Format {
  const columns = text
    .split(',')
    .filter((item) => item !== '')
    .map((item) => {
      const colon = item.indexOf(':');
      const name = colon < 0 ? item : item.slice(0, colon);
      const spec = colon < 0 ? '' : item.slice(colon + 1);
      const letter = LONG_FIELDS[name.toLowerCase()];
      const field = letter === undefined ? undefined : FIELDS[letter];
      if (!field) throw new SlurmError(`Invalid node format specification: ${name}`);
      const m = /^(\.)?(\d*)(.*)$/.exec(spec) as RegExpExecArray;
      return { field, width: m[2] ? Number(m[2]) : 20, right: m[1] === '.', suffix: m[3] ?? '' };
    });
  return { prefix: '', columns };
}

interface View {
  format: Format;
  /** Node-oriented (-N): a row per node and partition. */
  perNode: boolean;
  exact: boolean;
  /** -R: only nodes with a reason to be unavailable. */
  reasons: boolean;
}

/** The rows of the view: nodes grouped by partition and by whatever the format shows of them. */
function buildRows(partitions: readonly SinfoPartition[], nodes: readonly NodeInfo[], view: View): Row[] {
  const matches = new Set(view.format.columns.map((c) => c.field.match).filter(Boolean));
  const byPartition = matches.has('partition') || view.perNode;
  const key = (node: NodeInfo) =>
    [
      view.perNode ? node.name : '',
      matches.has('state') ? `${node.state}${node.responding}` : '',
      matches.has('reason') ? `${node.reason}\u0000${node.reasonTime}` : '',
      view.exact ? `${node.cpus}\u0000${node.memoryMb}\u0000${node.features}\u0000${node.gres}` : '',
      matches.has('features') ? node.features : '',
      matches.has('gres') ? node.gres : '',
    ].join('\u0001');
  const rows: Row[] = [];
  const group = (partition: SinfoPartition | null, members: NodeInfo[]) => {
    const groups = new Map<string, Row>();
    for (const node of members) {
      const k = key(node);
      let row = groups.get(k);
      if (!row) {
        row = { partition, nodes: [] };
        groups.set(k, row);
      }
      row.nodes.push(node);
    }
    const list = [...groups.values()].sort(
      (a, b) => STATE_RANK[b.nodes[0]!.state] - STATE_RANK[a.nodes[0]!.state],
    );
    // A partition without nodes still has its line, as in Slurm (not in the node-oriented views).
    if (list.length === 0 && partition && !view.reasons && !view.perNode) list.push({ partition, nodes: [] });
    rows.push(...list);
  };
  if (byPartition) {
    for (const partition of partitions) {
      group(
        partition,
        nodes.filter((n) => n.partitions.includes(partition.name)),
      );
    }
  } else {
    const inAny = nodes.filter((n) => n.partitions.some((p) => partitions.some((q) => q.name === p)));
    group(partitions.length === 1 ? (partitions[0] as SinfoPartition) : null, inAny);
  }
  if (view.perNode) rows.sort((a, b) => ((a.nodes[0]?.name ?? '') < (b.nodes[0]?.name ?? '') ? -1 : 1));
  return rows;
}

/** The lines sinfo prints for these rows (with the header unless `noHeader`). */
function renderRows(rows: readonly Row[], format: Format, noHeader: boolean): string {
  const widths = format.columns.map((c) => {
    if (c.width !== -1) return c.width;
    return Math.max(9, ...rows.map((r) => c.field.value(r).length));
  });
  const line = (row: Row | null) =>
    format.prefix +
    format.columns
      .map((c, i) => {
        const text = row ? c.field.value(row) : c.field.header;
        return fit(text, widths[i], c.right) + c.suffix;
      })
      .join('');
  return [...(noHeader ? [] : [line(null)]), ...rows.map(line)].map((l) => `${l}\n`).join('');
}

const STATE_FILTERS: Record<string, (n: NodeInfo) => boolean> = {
  alloc: (n) => n.state === 'allocated',
  allocated: (n) => n.state === 'allocated',
  idle: (n) => n.state === 'idle',
  mix: (n) => n.state === 'mixed',
  mixed: (n) => n.state === 'mixed',
  down: (n) => n.state === 'down',
  drain: (n) => n.state === 'draining' || n.state === 'drained',
  drained: (n) => n.state === 'drained',
  draining: (n) => n.state === 'draining',
  drng: (n) => n.state === 'draining',
  no_respond: (n) => !n.responding,
};

/** Slurm's other node states: valid in `-t`, never the state of a Conductor node. */
const OTHER_STATES = new Set(
  'cloud comp completing fail future futr maint npc perfctrs planned power_down powering_down powered_down powering_up reboot_issued reboot_requested resv reserved unk unknown'.split(
    ' ',
  ),
);

function stateFilter(spec: string): (n: NodeInfo) => boolean {
  const all = spec.includes('&');
  const tests = spec.split(all ? '&' : ',').map((word) => {
    const name = word.trim().toLowerCase();
    const test = STATE_FILTERS[name];
    if (test) return test;
    if (OTHER_STATES.has(name)) return () => false;
    throw new SlurmError(`Invalid node state specified: ${word.trim()}`);
  });
  return all ? (n) => tests.every((t) => t(n)) : (n) => tests.some((t) => t(n));
}

/** The partitions and every worker: all of them for an admin, else the live ones the dashboard lists. */
export async function loadCluster(
  api: Client,
): Promise<{ partitions: SinfoPartition[]; workers: SinfoWorker[] }> {
  const [{ partitions }, workers] = await Promise.all([
    api.request<{ partitions: SinfoPartition[] }>('GET', '/api/v1/partitions'),
    api
      .request<{ workers: SinfoWorker[] }>('GET', '/api/v1/workers?all=true')
      .then((r) => r.workers)
      .catch(async (error) => {
        if (!(error instanceof ApiError) || (error.status !== 401 && error.status !== 403)) throw error;
        return (await api.request<{ workers: SinfoWorker[] }>('GET', '/api/v1/dashboard')).workers;
      }),
  ]);
  return { partitions, workers };
}

const USAGE = `Usage: sinfo [-o format] [-O format] [-p partition] [-n nodes] [-t states] [-aNRrdelsVhv]\n`;

export async function runSinfo(args: string[], io: Io, env: NodeJS.ProcessEnv): Promise<number> {
  return guarded('sinfo', io, async () => {
    const parsed = parseOptions('sinfo', args, SINFO_OPTIONS, io);
    if (has(parsed, 'help')) {
      io.out(`${USAGE}\n${optionHelp(SINFO_OPTIONS)}\n`);
      return 0;
    }
    if (has(parsed, 'usage')) {
      io.out(USAGE);
      return 0;
    }
    if (has(parsed, 'version')) {
      io.out(`slurm ${SLURM_VERSION}\n`);
      return 0;
    }
    if (parsed.positionals.length > 0) throw new SlurmError(`Unknown argument: ${parsed.positionals[0]}`);
    const long = has(parsed, 'long');
    const node = has(parsed, 'Node');
    const reasons = has(parsed, 'list-reasons');
    const format = lastValue(parsed.options, 'format')?.value ?? env.SINFO_FORMAT;
    const longFormat = lastValue(parsed.options, 'Format')?.value;
    let spec: Format;
    if (longFormat !== undefined) spec = parseLongFormat(longFormat);
    else if (format !== undefined) spec = parseFormat(format);
    else if (reasons) spec = parseFormat(long ? '%20E %12U %19H %6t %N' : '%20E %9u %19H %N');
    else if (has(parsed, 'summarize')) spec = parseFormat('%#P %.5a %.10l %.16F  %N');
    else if (node) {
      spec = parseFormat(long ? '%#N %.6D %#P %.11T %.4c %.8z %.6m %.8d %.6w %.8f %20E' : '%#N %.6D %#P %6t');
    } else if (long) spec = parseFormat('%#P %.5a %.10l %.10s %.4r %.8h %.10g %.6D %.11T %N');
    else spec = parseFormat('%#P %.5a %.10l %.6D %.6t %N');

    const api = apiClient(env);
    if (has(parsed, 'verbose')) io.err(`sinfo: asking ${api.config.url}\n`);
    const { partitions, workers } = await loadCluster(api);
    const wanted = lastValue(parsed.options, 'partition')?.value ?? env.SINFO_PARTITION;
    const names = wanted?.split(',').map((p) => p.trim());
    const shown = names ? partitions.filter((p) => names.includes(p.name)) : partitions;
    let nodes = nodesOf(partitions, workers);
    const nodeList = lastValue(parsed.options, 'nodes')?.value;
    if (nodeList !== undefined) {
      const matches = hostlistMatcher(nodeList);
      nodes = nodes.filter((n) => matches(n.name));
    }
    const states = lastValue(parsed.options, 'states')?.value;
    if (states !== undefined) nodes = nodes.filter(stateFilter(states));
    if (has(parsed, 'responding')) nodes = nodes.filter((n) => n.responding);
    if (has(parsed, 'dead')) nodes = nodes.filter((n) => !n.responding);
    if (reasons)
      nodes = nodes.filter((n) => n.state === 'down' || n.state === 'drained' || n.state === 'draining');
    const filtered =
      nodeList !== undefined || states !== undefined || has(parsed, 'responding') || has(parsed, 'dead');
    let rows = buildRows(shown, nodes, { format: spec, perNode: node, exact: has(parsed, 'exact'), reasons });
    // Filtering nodes drops the lines of partitions left without any, as Slurm's sinfo does.
    if (filtered || reasons) rows = rows.filter((r) => r.nodes.length > 0);
    io.out(renderRows(rows, spec, has(parsed, 'noheader')));
    return 0;
  });
}
