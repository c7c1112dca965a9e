import { z } from 'zod';
import type {
  ClaimRequest,
  FinishRequest,
  HeartbeatRequest,
  OutputRequest,
  RegisterRequest,
  StartedRequest,
  UnregisterRequest,
} from '../../agent/src/protocol.ts';
import { EXIT_CODE_PATTERN } from '../domain/time-limit.ts';

/** The agent protocol's request bodies (agent/src/protocol.ts); the checks at the bottom keep them equal. */
const workerId = z
  .string()
  .min(1, 'worker_id must not be empty')
  .max(255)
  .regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, 'worker_id is letters, digits, ".", "_" and "-"');
const session = z.string().min(1).max(100);
const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;
/** GPUs are tracked as bits of a bigint per node: indexes 0 to 62. */
export const MAX_GPU_INDEX = 62;
const jobRef = z.strictObject({
  job_id: z.number().int().positive().max(Number.MAX_SAFE_INTEGER),
  attempt: z.number().int().min(1).max(2_147_483_647),
});
// biome-ignore lint/suspicious/noControlCharactersInRegex: the point is to find control characters
const CONTROL = /[\u0000-\u001f\u007f]/;
const text = (what: string, max: number) =>
  z
    .string()
    .max(max, `${what} is at most ${max} characters`)
    .refine((s) => !CONTROL.test(s), `${what} has control characters`);

export const registerRequest = z.strictObject({
  worker_id: workerId,
  hostname: text('hostname', 255).pipe(z.string().min(1, 'hostname must not be empty')),
  cpus: z.number().int().min(1, 'cpus must be at least 1').max(65_536),
  memory_mb: z
    .number()
    .int()
    .min(0)
    .max(2 ** 31 - 1)
    .optional(),
  gpus: z
    .array(
      z.strictObject({
        index: z.number().int().min(0).max(MAX_GPU_INDEX, `GPU indexes are 0 to ${MAX_GPU_INDEX}`),
        model: text('GPU model', 100).pipe(
          z.string().regex(NAME, 'GPU models are letters, digits, ".", "_" and "-"'),
        ),
      }),
    )
    .max(MAX_GPU_INDEX + 1)
    .refine((gpus) => new Set(gpus.map((g) => g.index)).size === gpus.length, 'GPU indexes must differ')
    .optional(),
  gres: z
    .record(
      z.string().regex(NAME, 'gres names are letters, digits, ".", "_" and "-"').max(100),
      z.number().int().min(0).max(1_000_000),
    )
    .refine((g) => Object.keys(g).length <= 64, 'at most 64 generic resources')
    .refine((g) => !('gpu' in g), 'GPUs are reported in gpus, not gres')
    .optional(),
  features: z
    .array(z.string().regex(NAME, 'features are letters, digits, ".", "_" and "-"').max(100))
    .max(256)
    .optional(),
  partitions: z
    .array(z.string().regex(NAME, 'partition names are letters, digits, ".", "_" and "-"').max(100))
    .max(64)
    .optional(),
  memory_enforcement: z.enum(['cgroup', 'rss', 'none']).optional(),
  labels: z.record(text('label names', 255), text('label values', 1024)).optional(),
  agent_version: text('agent_version', 100).optional(),
  running: z.array(jobRef).max(10_000).optional(),
  previous_session: session.optional(),
});

export const heartbeatRequest = z.strictObject({
  worker_id: workerId,
  session,
  status: z.enum(['ready', 'draining']).optional(),
});
export const unregisterRequest = z.strictObject({ worker_id: workerId, session });
/** The push channel's query: the same worker and session as a heartbeat. */
export const channelQuery = z.strictObject({ worker_id: workerId, session });
export const claimRequest = z.strictObject({
  worker_id: workerId,
  session,
  wait_s: z.number().min(0).max(300).optional(),
});

const reportBase = { worker_id: workerId, attempt: z.number().int().min(1).max(2_147_483_647) };
/** `session`: sent for a pushed assignment, which its started report claims (protocol.ts StartedRequest). */
export const startedRequest = z.strictObject({ ...reportBase, session: session.optional() });
export const outputRequest = z.strictObject({
  ...reportBase,
  stream: z.enum(['stdout', 'stderr']),
  offset: z.number().int().min(0),
  // Jobs may print anything: NUL (which Postgres text cannot hold) and broken UTF-16 are stored as U+FFFD.
  data: z
    .string()
    .max(1024 * 1024)
    .transform((d) =>
      d
        .replaceAll('\u0000', '\uFFFD')
        .replace(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g, '\uFFFD'),
    ),
  bytes: z
    .number()
    .int()
    .min(0)
    .max(4 * 1024 * 1024),
});
export const finishRequest = z.strictObject({
  ...reportBase,
  exit_code: z
    .string()
    .regex(
      EXIT_CODE_PATTERN,
      'exit_code is code:signal, e.g. 0:0',
    ) as unknown as z.ZodType<`${number}:${number}`>,
  outcome: z.enum(['exited', 'cancelled', 'timeout', 'failed_to_start', 'lost', 'out_of_memory']),
  message: z.string().max(4096).optional(),
  max_rss_kb: z.number().int('max_rss_kb is whole KiB').min(0).max(Number.MAX_SAFE_INTEGER).optional(),
});

export const workerIdParam = z.strictObject({ id: workerId });
export const workersQuery = z.strictObject({
  all: z
    .enum(['true', 'false', '1', '0'])
    .transform((v) => v === 'true' || v === '1')
    .optional(),
});

export const jobIdParam = z.strictObject({
  id: z.coerce
    .number({ error: 'job id must be a number' })
    .int('job id must be a whole number')
    .positive('job id must be a positive integer')
    .max(Number.MAX_SAFE_INTEGER, 'job id is too large'),
});

type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
type Check<T extends true> = T;
export type ProtocolChecks = [
  Check<Same<z.infer<typeof registerRequest>, RegisterRequest>>,
  Check<Same<z.infer<typeof heartbeatRequest>, HeartbeatRequest>>,
  Check<Same<z.infer<typeof unregisterRequest>, UnregisterRequest>>,
  Check<Same<z.infer<typeof claimRequest>, ClaimRequest>>,
  Check<Same<z.infer<typeof startedRequest>, StartedRequest>>,
  Check<Same<z.infer<typeof outputRequest>, OutputRequest>>,
  Check<Same<z.infer<typeof finishRequest>, FinishRequest>>,
];
