import { type SQL, sql } from 'drizzle-orm';
import type { ArrayTask, Assignment, TimeLimitSignal } from '../../agent/src/protocol.ts';
import { jsonColumn } from './sql.ts';

/**
 * An assignment as the agent gets it: from a claim's answer, or pushed on its channel with the wake of the
 * scheduling pass that placed it (the same object either way).
 */
export interface AssignmentRow {
  id: string | number;
  node: string;
  attempt: number;
  name: string;
  script: string;
  cpus: number;
  work_dir: string | null;
  environment: Record<string, string> | string;
  time_limit_s: number | null;
  requeue: boolean;
  owner: string | null;
  memory_mb: number | null;
  allocated_gpus: number[] | null;
  gres: Record<string, number> | string;
  account: string | null;
  partition: string | null;
  submit_dir: string | null;
  submit_host: string | null;
  ntasks: number | null;
  cpus_per_task: number | null;
  memory_per_cpu: number | null;
  requeues: number;
  stdout: string | null;
  stderr: string | null;
  stdin: string | null;
  open_mode: 'append' | 'truncate' | null;
  export_env: string | null;
  qos: string | null;
  signal: TimeLimitSignal | string | null;
  start_time: string | null;
  array: ArrayTask | string | null;
}

/**
 * The columns of AssignmentRow, over a `jobs` row (a SELECT's, or an UPDATE's RETURNING, where another table
 * of its FROM may share a column name: hence every column qualified). `cpus`: the CPUs it holds.
 */
export const assignmentColumns = (cpus: SQL) => sql`jobs.id, jobs.node, jobs.attempt, jobs.name, jobs.script,
  jobs.work_dir, jobs.environment, jobs.time_limit_s, jobs.requeue, jobs.owner, jobs.memory_mb, jobs.allocated_gpus,
  jobs.gres, jobs.account, jobs.submit_dir, jobs.submit_host, jobs.ntasks, jobs.cpus_per_task, jobs.memory_per_cpu,
  jobs.requeues, jobs.stdout, jobs.stderr, jobs.stdin, jobs.open_mode, jobs.export_env, jobs.qos, jobs.signal,
  jobs.start_time,
  -- Of the partitions it may use, the first this node serves (a node without any serves the default).
  coalesce(
    (SELECT u.p FROM unnest(string_to_array(jobs.partition, ',')) WITH ORDINALITY AS u(p, n)
     WHERE u.p = ANY((SELECT w.partitions FROM workers w WHERE w.id = jobs.node)::text[]) ORDER BY u.n LIMIT 1),
    split_part(jobs.partition, ',', 1)) AS partition,
  ${cpus} AS cpus,
  -- An array task's ids and its array's shape (SLURM_ARRAY_*).
  CASE WHEN jobs.array_job_id IS NOT NULL THEN (
    SELECT json_build_object('job_id', ar.array_job_id, 'task_id', jobs.array_task_id,
             'count', ar.task_count, 'min', ar.task_min, 'max', ar.task_max, 'step', ar.task_step)
    FROM job_arrays ar WHERE ar.array_job_id = jobs.array_job_id) END AS array`;

/** The same, for a job already placed: it holds what its allocation says (an exclusive job, all its node's CPUs). */
export const ASSIGNMENT_COLUMNS = assignmentColumns(
  sql`coalesce((SELECT a.allocated_cpus FROM resource_allocations a WHERE a.job_id = jobs.id), jobs.cpus)`,
);

const numbers = (a: ArrayTask): ArrayTask => ({
  job_id: Number(a.job_id),
  task_id: Number(a.task_id),
  count: Number(a.count),
  min: Number(a.min),
  max: Number(a.max),
  step: Number(a.step),
});

export function assignmentView(row: AssignmentRow, clusterName: string): Assignment {
  return {
    job_id: Number(row.id),
    attempt: Number(row.attempt),
    name: row.name,
    script: row.script,
    cpus: Number(row.cpus),
    work_dir: row.work_dir,
    environment: jsonColumn(row.environment),
    time_limit_s: row.time_limit_s === null ? null : Number(row.time_limit_s),
    requeue: row.requeue === true,
    owner: row.owner ?? null,
    memory_mb: row.memory_mb === null ? null : Number(row.memory_mb),
    gpus: row.allocated_gpus ?? [],
    gres: jsonColumn(row.gres),
    account: row.account,
    partition: row.partition === '' ? null : row.partition,
    submit_dir: row.submit_dir,
    submit_host: row.submit_host,
    ntasks: row.ntasks === null ? null : Number(row.ntasks),
    cpus_per_task: row.cpus_per_task === null ? null : Number(row.cpus_per_task),
    memory_per_cpu: row.memory_per_cpu === null ? null : Number(row.memory_per_cpu),
    requeues: Number(row.requeues),
    cluster_name: clusterName,
    stdout: row.stdout,
    stderr: row.stderr,
    stdin: row.stdin,
    open_mode: row.open_mode,
    export_env: row.export_env,
    qos: row.qos,
    signal: jsonColumn(row.signal),
    start_time: row.start_time === null ? null : new Date(row.start_time).toISOString(),
    ...(row.array === null ? {} : { array: numbers(jsonColumn(row.array)) }),
  };
}

/** The assignments a scheduling pass just placed, by worker, for the wakes that carry them to the agents. */
export function assignmentsByWorker(
  rows: readonly AssignmentRow[],
  clusterName: string,
): Map<string, Assignment[]> {
  const byWorker = new Map<string, Assignment[]>();
  for (const row of rows) {
    const list = byWorker.get(row.node) ?? [];
    list.push(assignmentView(row, clusterName));
    byWorker.set(row.node, list);
  }
  return byWorker;
}
