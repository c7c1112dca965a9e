/**
 * Webhook submission: `POST /api/v1/webhooks/:name`. Each named webhook has its own secret and a job
 * template; the payload reaches the job only through the webhook's mapping (payload path -> environment
 * variable), never through the script. Two signature forms, both HMAC-SHA256 checked in constant time with
 * Web Crypto (this runs on Workers too):
 *
 * - GitHub's `X-Hub-Signature-256: sha256=<hex>`, over the raw body;
 * - `X-Conductor-Signature: t=<unix seconds>,v1=<hex>` (Stripe's scheme), over `<t>.<raw body>`, accepted
 *   within 5 minutes of `t`.
 *
 * A delivery is accepted once: its delivery id (`X-GitHub-Delivery` / `X-Conductor-Delivery`, required with
 * GitHub's form) and, for the timestamped form, its signature are submission keys (kept DELIVERY_KEY_TTL_SECONDS
 * and SIGNATURE_KEY_TTL_SECONDS), so a replay returns the first job. An unknown name answers as a bad signature.
 */
import { sql } from 'drizzle-orm';
import { z } from 'zod';
import { actorName, auditInsert, recordAudit } from './audit.ts';
import { CONTROL_CHARS, type Principal } from './auth.ts';
import type { Context } from './context.ts';
import {
  concatBytes,
  equalBytes,
  fromHex,
  hmacKey,
  hmacSha256,
  randomSecret,
  sha256Hex,
  toBytes,
} from './crypto.ts';
import { ConductorError, conflict, invalid, notFound, unauthorized } from './errors.ts';
import { type JobView, type SubmissionKey, submitJobInput, submitJobOnce } from './jobs.ts';
import type { Database } from './ports.ts';
import { limitSubmissions } from './rate-limit.ts';
import { jsonColumn, pgErrorCode, query, queryOne } from './sql.ts';

/** How far a timestamped signature's `t` may be from now. */
export const SIGNATURE_TOLERANCE_SECONDS = 5 * 60;

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const PAYLOAD_PATH = /^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/;
const WEBHOOK_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

export const webhookNameParam = z.strictObject({
  name: z
    .string()
    .min(1)
    .max(255, 'webhook name is at most 255 characters')
    .regex(WEBHOOK_NAME, 'webhook names are letters, digits, ".", "_" and "-"'),
});

export const createWebhookInput = z
  .strictObject({
    name: webhookNameParam.shape.name,
    /** Generated (and shown once) when not given. */
    secret: z
      .string()
      .min(16, 'secret is at least 16 characters')
      .max(1024, 'secret is at most 1024 characters')
      .refine((s) => !CONTROL_CHARS.test(s), 'secret has control characters')
      .optional(),
    template: submitJobInput,
    /** Payload path (dots; numbers index arrays) -> environment variable name. */
    mapping: z
      .record(
        z
          .string()
          .max(512, 'mapping paths are at most 512 characters')
          .regex(PAYLOAD_PATH, 'mapping keys are payload paths such as repository.full_name or commits.0.id'),
        z
          .string()
          .max(255, 'mapping values are environment variable names (at most 255 characters)')
          .regex(ENV_NAME, 'mapping values are environment variable names: letters, digits and _')
          .refine((s) => !s.startsWith('CONDUCTOR_'), 'CONDUCTOR_* variables are set by the agent'),
      )
      .refine((m) => Object.keys(m).length <= 64, 'mapping has at most 64 entries')
      .default({}),
    /** Events that submit a job; default: every event but `ping`. */
    events: z
      .array(
        z
          .string()
          .min(1)
          .max(100)
          .regex(/^[A-Za-z0-9_.-]+$/, 'event names are letters, digits, ".", "_" and "-"'),
      )
      .min(1)
      .max(64)
      .optional(),
    owner: z
      .string()
      .min(1)
      .max(255)
      .refine((s) => !CONTROL_CHARS.test(s), 'owner has control characters')
      .optional(),
  })
  .superRefine((input, issue) => {
    const vars = Object.values(input.mapping);
    const declared = Object.keys(input.template.environment ?? {});
    for (const name of vars) {
      if (declared.includes(name)) {
        issue.addIssue({
          code: 'custom',
          path: ['mapping'],
          message: `mapping: ${name} is also set by template.environment; a variable comes from one place`,
        });
      }
    }
    if (new Set(vars).size !== vars.length) {
      issue.addIssue({
        code: 'custom',
        path: ['mapping'],
        message: 'mapping: two paths map to one variable',
      });
    }
    if (declared.length + vars.length > 256) {
      issue.addIssue({
        code: 'custom',
        path: ['mapping'],
        message: 'mapping: the job would have over 256 variables',
      });
    }
  });
export type CreateWebhookInput = z.infer<typeof createWebhookInput>;

interface WebhookRow {
  id: string | number;
  name: string;
  secret: string;
  template: Record<string, unknown> | string;
  mapping: Record<string, string> | string;
  events: string[] | string | null;
  owner: string;
  created_by: string;
  created_at: Date | string;
}

const textArray = (v: string[] | string | null): string[] | null =>
  v === null
    ? null
    : Array.isArray(v)
      ? v
      : v
          .replace(/^\{|\}$/g, '')
          .split(',')
          .filter(Boolean);

function webhookView(row: WebhookRow) {
  return {
    id: Number(row.id),
    name: row.name,
    url_path: `/api/v1/webhooks/${row.name}`,
    template: jsonColumn(row.template),
    mapping: jsonColumn(row.mapping),
    events: textArray(row.events),
    owner: row.owner,
    created_by: row.created_by,
    created_at: new Date(row.created_at).toISOString(),
  };
}
export type WebhookView = ReturnType<typeof webhookView>;

const COLUMNS = sql`id, name, secret, template, mapping, events, owner, created_by, created_at`;

/** Creates a webhook; the result carries its secret, which is not shown again. */
export async function createWebhook(
  db: Database,
  input: CreateWebhookInput,
  by: Principal,
): Promise<WebhookView & { secret: string }> {
  const secret = input.secret ?? randomSecret('whsec_');
  const owner = input.owner ?? by.owner ?? input.name;
  let row: WebhookRow | undefined;
  try {
    row = await queryOne<WebhookRow>(
      db,
      sql`WITH w AS (
            INSERT INTO webhooks (name, secret, template, mapping, events, owner, created_by)
            VALUES (${input.name}, ${secret}, ${JSON.stringify(input.template)}::jsonb, ${JSON.stringify(input.mapping)}::jsonb,
                    ${input.events ? `{${input.events.join(',')}}` : null}::text[], ${owner}, ${actorName(by)})
            RETURNING ${COLUMNS}
          ),
          a AS (${auditInsert(by, 'webhook.create', {
            target: sql`'webhook:' || w.name`,
            details: sql`jsonb_build_object('owner', w.owner, 'mapping', w.mapping)`,
            from: sql`w`,
          })})
          SELECT * FROM w`,
    );
  } catch (error) {
    if (pgErrorCode(error) === '23505')
      throw conflict('webhook_exists', `A webhook named ${input.name} exists`);
    throw error;
  }
  if (!row) throw new Error('webhook insert returned no row');
  return { ...webhookView(row), secret };
}

export async function listWebhooks(db: Database) {
  const rows = await query<WebhookRow>(db, sql`SELECT ${COLUMNS} FROM webhooks ORDER BY name LIMIT 10000`);
  return { webhooks: rows.map(webhookView) };
}

export async function deleteWebhook(db: Database, name: string, by: Principal): Promise<WebhookView> {
  const row = await queryOne<WebhookRow>(
    db,
    sql`DELETE FROM webhooks WHERE name = ${name} RETURNING ${COLUMNS}`,
  );
  if (!row) throw notFound('webhook_not_found', `No webhook named ${name}`);
  await recordAudit(db, by, 'webhook.delete', `webhook:${name}`);
  return webhookView(row);
}

// ---- deliveries ---------------------------------------------------------------------------------------

export interface Delivery {
  name: string;
  /** Lower-case header names. */
  headers: (name: string) => string | undefined;
  body: Uint8Array;
  requestId?: string;
  /** Seconds since the epoch (tests); Date.now() by default. */
  nowSeconds?: number;
}

export type DeliveryResult =
  | { kind: 'job'; job: JobView; duplicate: boolean }
  | { kind: 'ignored'; event: string; reason: string };

const HEX64 = /^[0-9a-fA-F]{64}$/;
const DELIVERY_ID = /^[\x21-\x7e]{1,200}$/;

/** Most `v1=` values one X-Conductor-Signature may carry (a sender rotating its secret signs with two). */
export const MAX_SIGNATURE_CANDIDATES = 3;

/**
 * How long a delivery id is remembered: a redelivery within this time returns the first job. It outlasts
 * GitHub's redelivery window (3 days; a redelivery keeps its `X-GitHub-Delivery`), and bounds submission_keys
 * to a week of deliveries (pruneSubmissionKeys deletes expired keys).
 */
export const DELIVERY_KEY_TTL_SECONDS = 7 * 24 * 3600;
/**
 * How long a timestamped signature is remembered: it is accepted only within SIGNATURE_TOLERANCE_SECONDS of its
 * `t`, so after an hour no replay of it passes anyway.
 */
export const SIGNATURE_KEY_TTL_SECONDS = 3600;

/** What a delivery's signature headers claim, read without the secret. */
interface SignatureClaim {
  form: 'conductor' | 'github';
  /** The bytes the signature is over. */
  signed: Uint8Array;
  /** The signatures given (hex, lower-case), at most MAX_SIGNATURE_CANDIDATES. */
  candidates: string[];
  /** `t` of the timestamped form. */
  t?: string;
  /** The answer when no candidate matches. */
  mismatch: string;
}

/**
 * Reads a delivery's signature headers (format, number of candidates, the timestamp's window): no HMAC yet,
 * and nothing about the webhook, so that these answers are the same for every name.
 */
function signatureClaim(delivery: Delivery): SignatureClaim {
  const conductor = delivery.headers('x-conductor-signature');
  if (conductor !== undefined) {
    const parts = conductor.split(',').map((p) => p.trim());
    const t = parts.find((p) => p.startsWith('t='))?.slice(2);
    const v1 = parts.filter((p) => p.startsWith('v1=')).map((p) => p.slice(3));
    if (v1.length > MAX_SIGNATURE_CANDIDATES) {
      throw unauthorized(
        'invalid_signature',
        `X-Conductor-Signature carries ${v1.length} v1 signatures; at most ${MAX_SIGNATURE_CANDIDATES} are accepted`,
      );
    }
    if (!t || !/^\d{1,12}$/.test(t) || v1.length === 0 || v1.some((s) => !HEX64.test(s))) {
      throw unauthorized(
        'invalid_signature',
        'X-Conductor-Signature must be t=<unix seconds>,v1=<64 hex digits of HMAC-SHA256 over "<t>.<body>">',
      );
    }
    const now = delivery.nowSeconds ?? Math.floor(Date.now() / 1000);
    const age = now - Number(t);
    if (Math.abs(age) > SIGNATURE_TOLERANCE_SECONDS) {
      throw unauthorized(
        'signature_expired',
        `X-Conductor-Signature timestamp is ${Math.abs(age)} s ${age > 0 ? 'old' : 'in the future'}; at most ${SIGNATURE_TOLERANCE_SECONDS} s are accepted (check the sender's clock)`,
      );
    }
    return {
      form: 'conductor',
      signed: concatBytes(toBytes(`${t}.`), delivery.body),
      candidates: v1.map((c) => c.toLowerCase()),
      t,
      mismatch: 'X-Conductor-Signature does not match: wrong secret, or the body was changed',
    };
  }
  const github = delivery.headers('x-hub-signature-256');
  if (github !== undefined) {
    const hex = github.startsWith('sha256=') ? github.slice(7) : '';
    if (!HEX64.test(hex)) {
      throw unauthorized('invalid_signature', 'X-Hub-Signature-256 must be sha256=<64 hex digits>');
    }
    return {
      form: 'github',
      signed: delivery.body,
      candidates: [hex.toLowerCase()],
      mismatch: 'X-Hub-Signature-256 does not match: wrong secret, or the body was changed',
    };
  }
  throw unauthorized(
    'missing_signature',
    'Webhook deliveries must be signed: X-Hub-Signature-256 (GitHub) or X-Conductor-Signature (see docs/operating.md, Webhooks)',
  );
}

/**
 * Checks the claimed signatures against `secret` with ONE HMAC, each candidate compared in constant time.
 * Returns the candidate that matched, or undefined.
 */
async function matchingSignature(secret: string, claim: SignatureClaim): Promise<string | undefined> {
  const expected = await hmacSha256(await hmacKey(secret), claim.signed);
  let matched: string | undefined;
  for (const candidate of claim.candidates) {
    const bytes = fromHex(candidate);
    if (bytes && equalBytes(bytes, expected)) matched = candidate;
  }
  return matched;
}

/**
 * Stands in for the secret of a webhook that does not exist, so that its deliveries cost and answer the
 * same as a bad signature (no 404 telling which names exist). Never accepted: such a delivery is refused
 * whatever it matches.
 */
const NO_WEBHOOK_SECRET = 'conductor: no webhook of this name';

const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;
const isWellFormed = (text: string) => !LONE_SURROGATE.test(text);

/** The value at a dotted path (numbers index arrays), or undefined. */
export function valueAt(payload: unknown, path: string): unknown {
  let value: unknown = payload;
  for (const segment of path.split('.')) {
    if (value === null || typeof value !== 'object') return undefined;
    if (Array.isArray(value)) {
      if (!/^\d+$/.test(segment)) return undefined;
      value = value[Number(segment)];
    } else {
      if (!Object.hasOwn(value, segment)) return undefined;
      value = (value as Record<string, unknown>)[segment];
    }
  }
  return value;
}

/**
 * Receives a delivery: finds the webhook, checks the signature (before reading the payload), fills the
 * mapped variables from the payload, and submits the template once per delivery.
 */
export async function deliverWebhook(ctx: Context, delivery: Delivery): Promise<DeliveryResult> {
  const row = await queryOne<WebhookRow>(
    ctx.db,
    sql`SELECT ${COLUMNS} FROM webhooks WHERE name = ${delivery.name}`,
  );
  const claim = signatureClaim(delivery);
  const matched = await matchingSignature(row?.secret ?? NO_WEBHOOK_SECRET, claim);
  if (!row || matched === undefined) throw unauthorized('invalid_signature', claim.mismatch);
  const signatureKey = claim.t === undefined ? undefined : `sig:${claim.t}:${matched}`;

  // GitHub's signature does not cover a timestamp: the delivery id is what makes a replay of a captured
  // delivery harmless, and GitHub always sends one.
  const deliveryId = delivery.headers('x-github-delivery') ?? delivery.headers('x-conductor-delivery');
  if (deliveryId !== undefined && !DELIVERY_ID.test(deliveryId)) {
    throw invalid('invalid_delivery_id', 'The delivery id header is 1 to 200 printable ASCII characters');
  }
  if (claim.form === 'github' && deliveryId === undefined) {
    throw invalid(
      'missing_delivery_id',
      'A delivery signed with X-Hub-Signature-256 must carry X-GitHub-Delivery (or X-Conductor-Delivery): without a delivery id it could be replayed',
    );
  }

  const event = delivery.headers('x-github-event') ?? delivery.headers('x-conductor-event') ?? '';
  const events = textArray(row.events);
  if (events ? !events.includes(event) : event === 'ping') {
    return {
      kind: 'ignored',
      event,
      reason: events ? `event ${event || '(none)'} is not one of ${events.join(', ')}` : 'ping',
    };
  }

  let payload: unknown;
  try {
    payload = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(delivery.body));
  } catch (error) {
    throw invalid(
      'invalid_json',
      `The webhook payload is not JSON (send Content-Type: application/json): ${error instanceof Error ? error.message : String(error)}`,
    );
  }

  const template = jsonColumn(row.template);
  const mapping = jsonColumn(row.mapping);
  const environment: Record<string, string> = { ...((template.environment as Record<string, string>) ?? {}) };
  for (const [path, variable] of Object.entries(mapping)) {
    const value = valueAt(payload, path);
    if (value === undefined || value === null) continue;
    const text = typeof value === 'object' ? JSON.stringify(value) : String(value);
    if (text.includes('\u0000') || !isWellFormed(text)) {
      throw invalid(
        'invalid_payload',
        `Payload ${path} (for ${variable}) contains a NUL character or broken Unicode; it cannot be a variable`,
      );
    }
    if (text.length > 128 * 1024) {
      throw invalid('invalid_payload', `Payload ${path} (for ${variable}) is longer than 128 KiB`);
    }
    environment[variable] = text;
  }
  const parsed = submitJobInput.safeParse({ ...template, environment });
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ');
    throw new ConductorError('unprocessable', 'invalid_job', `The webhook's job is not valid: ${problems}`);
  }

  const id = Number(row.id);
  const principal: Principal = {
    kind: 'webhook',
    tokenId: null,
    name: row.name,
    owner: row.owner,
    scopes: ['jobs:write'],
    ...(delivery.requestId ? { requestId: delivery.requestId } : {}),
  };
  const scope = `webhook:${id}`;
  const keys: SubmissionKey[] = [];
  if (deliveryId !== undefined)
    keys.push({
      scope,
      key: `delivery:${deliveryId}`,
      ttlSeconds: DELIVERY_KEY_TTL_SECONDS,
      label: 'delivery',
    });
  if (signatureKey) {
    keys.push({ scope, key: signatureKey, ttlSeconds: SIGNATURE_KEY_TTL_SECONDS, label: 'signature' });
  }
  await limitSubmissions(ctx, scope);
  const submitted = await submitJobOnce(ctx, parsed.data, {
    caller: principal,
    owner: row.owner,
    keys,
    requestHash: await sha256Hex(delivery.body),
    audit: { via: `webhook:${row.name}`, event, delivery: deliveryId ?? null },
  }).catch((error: unknown) => {
    // The template names a partition or resources the cluster does not have (now): the sender did nothing wrong.
    if (error instanceof ConductorError && error.kind === 'invalid') {
      throw new ConductorError(
        'unprocessable',
        'invalid_job',
        `The webhook's job is not valid: ${error.message}`,
      );
    }
    throw error;
  });
  return { kind: 'job', job: submitted.job, duplicate: submitted.duplicate };
}
