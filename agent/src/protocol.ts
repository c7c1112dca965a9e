/**
 * The wire protocol between the agent and the control plane. Types only: the agent has no runtime
 * dependencies, and the control plane's zod schemas (functions/http/agent-schemas.ts) are checked against
 * these types at compile time, so the two sides cannot drift.
 *
 * Every agent call is `POST /api/v1/agents/...` with a JSON body, authenticated with
 * `Authorization: Bearer $CONDUCTOR_TOKEN` when a token is configured (an agent token: scope `agent`, which
 * can make these calls and nothing else). Errors come back as `{error: {code, message, details?}}` with a
 * 4xx/5xx status: 401 for a missing, unknown or revoked token; 403 `worker_not_yours` when the worker was
 * registered with another token (only that token may act as it, until it is revoked), and 403
 * `assignment_not_yours` for a report on a job attempt assigned to another token's worker.
 */

/** Slurm's exit code form `code:signal`, e.g. `0:0`, `3:0`, `0:9`. */
export type ExitCode = `${number}:${number}`;

/** A GPU of a node, as `nvidia-smi` numbers it (`index`, 0-based) and names it (`model`, e.g. `a100`). */
export interface GpuDevice {
  index: number;
  model: string;
}

/**
 * How the agent holds a job to its memory: `cgroup` (cgroup v2 `memory.max`), `rss` (sampling the job's
 * processes and killing them past the limit), `none` (jobs ask no memory of this node, or nothing works).
 */
export type MemoryEnforcement = 'cgroup' | 'rss' | 'none';

export interface RegisterRequest {
  worker_id: string;
  hostname: string;
  cpus: number;
  /**
   * MB of memory jobs may use: the machine's total minus the reserve for the system (`TOTAL_MEMORY`
   * overrides). Absent (older agents): 0, and jobs that ask for memory are not placed there.
   */
  memory_mb?: number;
  /** The node's GPUs (detected with `nvidia-smi`, or `GPUS=a100:4` / `GPUS=4`). Absent: none. */
  gpus?: GpuDevice[];
  /** Generic resources other than GPUs and their counts (`GRES=nvme:1,license_matlab:2`). */
  gres?: Record<string, number>;
  /** Node features for `--constraint` (`FEATURES=avx512,ssd`). */
  features?: string[];
  /** The partitions this node serves (`PARTITIONS=gpu,batch`); absent or empty: the default partition. */
  partitions?: string[];
  memory_enforcement?: MemoryEnforcement;
  labels?: Record<string, string>;
  agent_version?: string;
  /**
   * Assignments this agent process is still running or holds an undelivered result for. On registration
   * the server fails the worker's other claimed assignments (their process is gone) and keeps these.
   */
  running?: JobRef[];
  /**
   * The session this agent (or its previous run, from its state directory) last had. A worker name whose
   * current session is alive can only be taken over by presenting that session; otherwise registration
   * fails with 409 `worker_name_in_use` until the other agent has been silent for a TTL.
   */
  previous_session?: string;
}

export interface RegisterResponse {
  worker_id: string;
  /** Identifies this run of the agent; sent back on heartbeat, claim and unregister. */
  session: string;
  heartbeat_interval_s: number;
  worker_ttl_s: number;
  /** How long a claim may wait for work before answering empty. */
  claim_wait_s: number;
  /**
   * Attempts named in `running` that are no longer this worker's (reaped, requeued, cancelled meanwhile):
   * kill their processes; their results will be refused.
   */
  cancel: JobRef[];
  /**
   * Only on the open local cluster (no API token yet) to an agent that sent none: its own agent token, to
   * send from then on, so that it keeps working once the cluster requires tokens.
   */
  token?: string;
}

export interface HeartbeatRequest {
  worker_id: string;
  session: string;
  /** `draining`: the agent is finishing its jobs before it leaves; it gets no new ones. */
  status?: 'ready' | 'draining';
}

/** 404 `unknown_worker` or 409 `session_superseded` means: register again. */
export interface HeartbeatResponse {
  heartbeat_interval_s: number;
  /** The worker's status as the server has it (an operator may have drained it). */
  status: 'ready' | 'draining';
  /** Jobs this worker runs that someone cancelled. */
  cancel: JobRef[];
  /** Signals to deliver to jobs this worker runs (each is handed out once). */
  signal?: JobSignal[];
}

export interface ClaimRequest {
  worker_id: string;
  session: string;
  /** Long-poll: wait up to this many seconds for work (0 answers at once). */
  wait_s?: number;
}

export interface ClaimResponse {
  /** New assignments. The same assignment may come again until its `started` report arrives: dedupe by (job_id, attempt). */
  jobs: Assignment[];
  cancel: JobRef[];
  /** Signals to deliver to jobs this worker runs (each is handed out once). */
  signal?: JobSignal[];
  /** The worker's status as the server has it (an operator may have drained it); channel agents learn a drain here. */
  status?: 'ready' | 'draining';
}

export interface JobRef {
  job_id: number;
  attempt: number;
}

export interface Assignment extends JobRef {
  name: string;
  script: string;
  cpus: number;
  work_dir: string | null;
  environment: Record<string, string>;
  /** Seconds, or null for no limit. */
  time_limit_s: number | null;
  /**
   * MB of memory the job may use on this node; past it the job ends OUT_OF_MEMORY (outcome
   * `out_of_memory`). Null or absent: no limit (the job asked none and its partition sets no default).
   */
  memory_mb?: number | null;
  /**
   * The indexes of the GPUs assigned to the job (`GpuDevice.index`): the agent sets CUDA_VISIBLE_DEVICES,
   * SLURM_JOB_GPUS and GPU_DEVICE_ORDINAL to them (comma-separated). Absent or empty: no GPUs.
   */
  gpus?: number[];
  /** Generic resources assigned (name -> count), set as SLURM_JOB_GRES-style `name:count,...`. */
  gres?: Record<string, number>;
  /**
   * The job goes back to the queue if its node is lost, so it may run elsewhere: the agent stops it when it
   * has been out of touch with the control plane for too long (see `lost`). Absent from older servers.
   */
  requeue?: boolean;
  /**
   * The job's owner (its submitting token's owner), which picks the user it runs as under an owner map
   * (CONDUCTOR_RUN_AS=alice:alice,...); null when it has none (the open local cluster). Older servers omit it.
   */
  owner?: string | null;
  /** The job's account and the partition it runs in (SLURM_JOB_ACCOUNT, SLURM_JOB_PARTITION); null: none. */
  account?: string | null;
  partition?: string | null;
  /** Where and from which host it was submitted (SLURM_SUBMIT_DIR, SLURM_SUBMIT_HOST); null: not said. */
  submit_dir?: string | null;
  submit_host?: string | null;
  /** `--ntasks` and `--cpus-per-task` as asked; null: not asked (one task; no SLURM_CPUS_PER_TASK). */
  ntasks?: number | null;
  cpus_per_task?: number | null;
  /** `--mem-per-cpu` as asked (MB): the job sees SLURM_MEM_PER_CPU instead of SLURM_MEM_PER_NODE. */
  memory_per_cpu?: number | null;
  /**
   * How many times the job went back to the queue before this attempt (automatically or by scontrol requeue):
   * the job sees it as SLURM_RESTART_COUNT, set only when above 0 (as Slurm does, only after a restart).
   */
  requeues?: number;
  /** The cluster's name (SLURM_CLUSTER_NAME). */
  cluster_name?: string;
  /**
   * sbatch `-o`: the output file's pattern as given (`%j`, `%x`, ... expanded by the agent, relative to the
   * job's working directory); null or absent: `slurm-%j.out`.
   */
  stdout?: string | null;
  /** sbatch `-e`: the error file's pattern; null or absent: into the output file. */
  stderr?: string | null;
  /** sbatch `-i`: the input file's pattern; null or absent: /dev/null. */
  stdin?: string | null;
  /** sbatch `--open-mode`; null or absent: truncate. */
  open_mode?: 'append' | 'truncate' | null;
  /**
   * sbatch `--export` as given (SLURM_EXPORT_ENV): the exported variables themselves are in `environment`.
   * `NONE`: the job gets the node's clean base environment; otherwise `environment` overrides it.
   */
  export_env?: string | null;
  /** The job's quality of service (SLURM_JOB_QOS); null: none. */
  qos?: string | null;
  /** sbatch `--signal`: send `signal` this long before the time limit (to the batch shell only, or all). */
  signal?: TimeLimitSignal | null;
  /** When this attempt started (ISO), for SLURM_JOB_START_TIME and SLURM_JOB_END_TIME. */
  start_time?: string | null;
  /** sbatch `--array`: the task's ids and its array's shape (SLURM_ARRAY_*, `%A`, `%a`). Absent: no array. */
  array?: ArrayTask;
}

/** An array task as its job sees it: SLURM_ARRAY_JOB_ID, _TASK_ID, _TASK_COUNT, _TASK_MIN, _TASK_MAX, _TASK_STEP. */
export interface ArrayTask {
  job_id: number;
  task_id: number;
  count: number;
  min: number;
  max: number;
  step: number;
}

/** A signal name without `SIG` (`USR1`) or a number as a string. */
export interface TimeLimitSignal {
  signal: string;
  before_s: number;
  batch_only: boolean;
}

/** A signal to deliver now to a running job (scancel --signal): to the batch shell only, or to all its processes. */
export interface JobSignal extends JobRef {
  signal: string;
  batch_only: boolean;
}

/** Reports: POST /api/v1/agents/jobs/:job_id/{started,output,finish}. A report for an attempt that is no longer current gets 409 `stale_assignment`: drop it and kill the process. */
export interface ReportBase {
  worker_id: string;
  attempt: number;
}

export interface StartedRequest extends ReportBase {
  /**
   * The agent's session, sent for an assignment pushed on the channel (one it may not have claimed): the
   * control plane then takes the report as that session's claim of it, if the session is the worker's
   * current one (else 409 `session_superseded` or 404 `unknown_worker`: register again, then report again).
   */
  session?: string;
}

/** The job's state; anything but RUNNING (a cancel that won the race) means: stop the process. */
export interface StartedResponse {
  state: string;
}

export interface OutputRequest extends ReportBase {
  stream: 'stdout' | 'stderr';
  /**
   * Byte offset of `data` in the stream. Chunks are appended when `offset` equals the stored length; an
   * offset past it means the agent skipped output (the gap is marked, and the stored length becomes
   * `offset + bytes`); an offset before it is a replay and gets 409 `output_offset_mismatch` with
   * `details.expected` (the stored length) and changes nothing.
   */
  offset: number;
  /** UTF-8 text of the chunk. */
  data: string;
  /** Byte length of the chunk as the agent read it. */
  bytes: number;
}

export interface OutputResponse {
  /** Bytes stored for this stream so far. */
  bytes: number;
}

/**
 * `failed_to_start`: the job never ran (its folder could not be made, bash could not start, a bad work_dir);
 * it ends FAILED. `lost`: the agent stopped a `requeue` job itself after it had no contact with the control
 * plane for a TTL (the node may have been declared lost and the job placed elsewhere); the control plane
 * treats it as a lost node's job: back to the queue (or NODE_FAIL), unless that already happened.
 * `out_of_memory`: the job went past its `memory_mb` and was killed (cgroup OOM kill, or the agent's RSS
 * check); it ends OUT_OF_MEMORY with its output kept.
 */
export type JobOutcome = 'exited' | 'cancelled' | 'timeout' | 'failed_to_start' | 'lost' | 'out_of_memory';

export interface FinishRequest extends ReportBase {
  exit_code: ExitCode;
  outcome: JobOutcome;
  /** Why, for outcomes other than `exited` (shown as the job's reason). */
  message?: string;
  /** The peak resident memory of the job's processes (summed over its process group), in KiB. */
  max_rss_kb?: number;
}

export interface FinishResponse {
  state: string;
}

export interface UnregisterRequest {
  worker_id: string;
  session: string;
}

/**
 * The push channel: `GET /api/v1/agents/channel?worker_id=&session=` upgraded to a WebSocket (same token and
 * the same refusals as `/heartbeat`: 401, 403 `worker_not_yours`, 404 `unknown_worker`, 409
 * `session_superseded`, in the error envelope). The agent sends the text frame `ping` every heartbeat
 * interval and the server answers `pong` (an accepted heartbeat); the server sends ChannelMessage frames.
 * While it is open the agent sends no heartbeats and makes no long-poll claims: it claims (`wait_s` 0) once
 * when it opens and then on each `wake`.
 */
export interface ChannelQuery {
  worker_id: string;
  session: string;
}

/**
 * `wake`: there may be new assignments, cancels, signals or a drain: claim now. A wake that carries `jobs`
 * (the assignments a scheduling pass just placed here, the objects a claim answers with) asks no claim: the
 * agent starts them at once (deduplicated with claimed ones by (job_id, attempt)), and each one's `started`
 * report, which then carries the agent's `session`, is what tells the control plane it was delivered; one
 * never reported started is woken for again (a bare wake) and claimed. `register`: the worker's key is gone
 * or its session is no longer current: register again (with `previous_session`), then reconnect.
 */
export type ChannelMessage = { type: 'wake'; jobs?: Assignment[] } | { type: 'register' };
