/**
 * Event notifications: subscriptions to job events (sbatch's `--mail-type` names: BEGIN, END, FAIL, REQUEUE,
 * TIME_LIMIT_50/80/90, ARRAY_TASKS) and worker events (WORKER_REGISTERED, WORKER_LOST, WORKER_DRAINED),
 * delivered as Standard Webhooks (https://www.standardwebhooks.com: `webhook-id`, `webhook-timestamp`,
 * `webhook-signature: v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">` under a `whsec_` secret), and
 * mail for jobs submitted with `mail_type` when an SMTP server is configured.
 *
 * The outbox is in Postgres: triggers on jobs and workers (migration 0013) write `notification_events` and
 * their `notification_deliveries` in the transaction that caused them; `deliverNotifications` takes due
 * deliveries (a lease: `next_attempt_at` moves forward before anything is sent, so a sender that dies leaves
 * them due again), sends them and records the answer, retrying with exponential back-off up to
 * `notifyMaxAttempts`. At least once: a receiver dedups by `webhook-id` (the event's id, the same on every
 * retry and replay).
 */
import { sql } from 'drizzle-orm';
import { z } from 'zod';
import {
  DELIVERY_STATES,
  JOB_EVENT_TYPES,
  NOTIFICATION_FORMATS,
  WORKER_EVENT_TYPES,
} from '../../db/schema.ts';
import { actorName, recordAudit } from './audit.ts';
import { CONTROL_CHARS, type Principal, seesAllJobs } from './auth.ts';
import type { Context } from './context.ts';
import { toBytes } from './crypto.ts';
import { forbidden, invalid, notFound } from './errors.ts';
import type { Ports } from './ports.ts';
import { pgArray, query, queryOne } from './sql.ts';

/** `--mail-type` words beyond the event names: what each expands to (Slurm's meanings). */
const EVENT_ALIASES: Record<string, readonly string[]> = {
  ALL: ['BEGIN', 'END', 'FAIL', 'REQUEUE'],
  TIME_LIMIT: ['TIME_LIMIT_50', 'TIME_LIMIT_80', 'TIME_LIMIT_90'],
  NONE: [],
};
const EVENT_NAMES = [...JOB_EVENT_TYPES, ...WORKER_EVENT_TYPES] as readonly string[];

/** Expands `ALL`, `TIME_LIMIT`, `NONE`; refuses unknown names. Sorted, without duplicates. */
export function expandEventNames(names: readonly string[], field: string, allowWorker: boolean): string[] {
  const out = new Set<string>();
  for (const raw of names) {
    const name = raw.trim().toUpperCase();
    const alias = EVENT_ALIASES[name];
    if (alias) {
      for (const a of alias) out.add(a);
    } else if ((JOB_EVENT_TYPES as readonly string[]).includes(name)) {
      out.add(name);
    } else if ((WORKER_EVENT_TYPES as readonly string[]).includes(name)) {
      if (!allowWorker) throw invalid('invalid_event', `${field}: ${name} is a worker event: not here`);
      out.add(name);
    } else {
      throw invalid(
        'invalid_event',
        `${field}: unknown event ${JSON.stringify(raw)} (known: ${[...EVENT_NAMES, 'ALL', 'TIME_LIMIT', 'NONE'].join(', ')})`,
      );
    }
  }
  return [...out].sort();
}

/** A job's `mail_type` as stored: null for none. */
export function mailTypeColumn(mailType: string | undefined): string[] | null {
  if (mailType === undefined) return null;
  const names = expandEventNames(mailType.split(','), 'mail_type', false);
  return names.length > 0 ? names : null;
}

/** The Standard Webhooks secret form: `whsec_` and the base64 of 24 to 64 bytes. */
const SECRET = /^whsec_[A-Za-z0-9+/]{32,88}={0,2}$/;

export const createSubscriptionInput = z.strictObject({
  url: z
    .url({ protocol: /^https?$/, error: 'url is an http(s) URL' })
    .max(2048, 'url is at most 2048 characters'),
  events: z
    .array(z.string().max(64, 'event names are at most 64 characters'))
    .min(1, 'events names at least one event')
    .max(32, 'events names at most 32 events'),
  /** `standard` (Standard Webhooks JSON) or `slack` (`{"text": ...}`, for Slack-compatible incoming webhooks). */
  format: z.enum(NOTIFICATION_FORMATS, { error: 'format is standard or slack' }).default('standard'),
  /** `cluster`: every job and the workers (admins only); `own`: the caller's jobs. Default: cluster for admins. */
  scope: z.enum(['cluster', 'own'], { error: 'scope is cluster or own' }).optional(),
  /** A `whsec_` secret; generated (and shown once) when not given. */
  secret: z.string().regex(SECRET, 'secret is whsec_ and base64 of 24 to 64 bytes').optional(),
  description: z
    .string()
    .max(1024, 'description is at most 1024 characters')
    .refine((s) => !CONTROL_CHARS.test(s), 'description has control characters')
    .optional(),
});
export type CreateSubscriptionInput = z.infer<typeof createSubscriptionInput>;

export const subscriptionIdParam = z.strictObject({
  id: z.coerce.number({ error: 'id is a subscription id' }).int().positive().max(Number.MAX_SAFE_INTEGER),
});
export const deliveryParams = z.strictObject({
  id: subscriptionIdParam.shape.id,
  delivery: z.coerce
    .number({ error: 'delivery is a delivery id' })
    .int()
    .positive()
    .max(Number.MAX_SAFE_INTEGER),
});
export const listDeliveriesInput = z.strictObject({
  state: z.enum(DELIVERY_STATES, { error: `state is one of ${DELIVERY_STATES.join(', ')}` }).optional(),
  limit: z.coerce.number().int().min(1).max(1000).default(100),
  /** Deliveries with an id below this (paging back). */
  before: z.coerce.number().int().positive().optional(),
});

interface SubscriptionRow {
  id: string | number;
  owner: string | null;
  url: string;
  secret: string;
  events: string[] | string;
  format: 'standard' | 'slack';
  description: string | null;
  created_by: string;
  created_at: Date | string;
}

const textArray = (v: string[] | string): string[] =>
  Array.isArray(v)
    ? v
    : v
        .replace(/^\{|\}$/g, '')
        .split(',')
        .filter(Boolean);

function subscriptionView(row: SubscriptionRow, options: { secret?: boolean } = {}) {
  return {
    id: Number(row.id),
    scope: row.owner === null ? ('cluster' as const) : ('own' as const),
    owner: row.owner,
    url: row.url,
    events: textArray(row.events),
    format: row.format,
    description: row.description,
    created_by: row.created_by,
    created_at: new Date(row.created_at).toISOString(),
    ...(options.secret ? { secret: row.secret } : {}),
  };
}
export type SubscriptionView = ReturnType<typeof subscriptionView>;

/** A new `whsec_` secret: 32 random bytes. */
function newSecret(): string {
  let binary = '';
  for (const b of crypto.getRandomValues(new Uint8Array(32))) binary += String.fromCharCode(b);
  return `whsec_${btoa(binary)}`;
}

/**
 * Creates a subscription. Admins (and the open local cluster's caller) subscribe cluster-wide by default;
 * anyone else to the jobs of their owner, and never to worker events. The secret is in the answer, this once.
 */
export async function createSubscription(ctx: Context, input: CreateSubscriptionInput, caller: Principal) {
  const all = seesAllJobs(caller);
  const scope = input.scope ?? (all ? 'cluster' : 'own');
  if (scope === 'cluster' && !all) {
    throw forbidden('cluster_scope_forbidden', 'Only an admin subscribes to every job and to worker events');
  }
  if (scope === 'own' && caller.owner === null) {
    throw invalid(
      'no_owner',
      'scope own needs a token with an owner: this caller has none (use scope cluster)',
    );
  }
  const events = expandEventNames(input.events, 'events', scope === 'cluster');
  if (events.length === 0) throw invalid('invalid_event', 'events: NONE leaves nothing to deliver');
  const row = await queryOne<SubscriptionRow>(
    ctx.db,
    sql`INSERT INTO notification_subscriptions (owner, url, secret, events, format, description, created_by)
        VALUES (${scope === 'cluster' ? null : caller.owner}::text, ${input.url}, ${input.secret ?? newSecret()},
                ${pgArray(events)}::text[], ${input.format}, ${input.description ?? null}::text, ${actorName(caller)})
        RETURNING *`,
  );
  await recordAudit(ctx.db, caller, 'subscription.create', `subscription:${row!.id}`, {
    url: input.url,
    events,
    scope,
  });
  return subscriptionView(row!, { secret: true });
}

/** The caller's subscriptions (an admin's: all). */
export async function listSubscriptions(ctx: Context, caller: Principal) {
  const rows = await query<SubscriptionRow>(
    ctx.db,
    seesAllJobs(caller)
      ? sql`SELECT * FROM notification_subscriptions ORDER BY id`
      : sql`SELECT * FROM notification_subscriptions WHERE owner = ${caller.owner} ORDER BY id`,
  );
  return rows.map((r) => subscriptionView(r));
}

async function ownSubscription(ctx: Context, id: number, caller: Principal): Promise<SubscriptionRow> {
  const row = await queryOne<SubscriptionRow>(
    ctx.db,
    sql`SELECT * FROM notification_subscriptions WHERE id = ${id}`,
  );
  if (!row || !(seesAllJobs(caller) || (row.owner !== null && row.owner === caller.owner))) {
    throw notFound('subscription_not_found', `No subscription ${id}`);
  }
  return row;
}

export async function getSubscription(ctx: Context, id: number, caller: Principal) {
  return subscriptionView(await ownSubscription(ctx, id, caller));
}

/** Deletes a subscription and its delivery log (pending deliveries are not sent). */
export async function deleteSubscription(ctx: Context, id: number, caller: Principal) {
  const row = await ownSubscription(ctx, id, caller);
  await ctx.db.execute(sql`DELETE FROM notification_subscriptions WHERE id = ${id}`);
  await recordAudit(ctx.db, caller, 'subscription.delete', `subscription:${id}`, { url: row.url });
  return subscriptionView(row);
}

interface DeliveryRow {
  id: string | number;
  event_id: string | number;
  type: string;
  job_id: string | number | null;
  worker_id: string | null;
  state: string;
  attempts: number;
  next_attempt_at: Date | string;
  last_attempt_at: Date | string | null;
  last_status: number | null;
  last_error: string | null;
  delivered_at: Date | string | null;
  created_at: Date | string;
}

const isoOrNull = (v: Date | string | null) => (v === null ? null : new Date(v).toISOString());

function deliveryView(row: DeliveryRow) {
  return {
    id: Number(row.id),
    event_id: Number(row.event_id),
    webhook_id: webhookId(row.event_id),
    type: row.type,
    job_id: row.job_id === null ? null : Number(row.job_id),
    worker_id: row.worker_id,
    state: row.state as (typeof DELIVERY_STATES)[number],
    attempts: Number(row.attempts),
    next_attempt_at: row.state === 'pending' ? isoOrNull(row.next_attempt_at) : null,
    last_attempt_at: isoOrNull(row.last_attempt_at),
    last_status: row.last_status === null ? null : Number(row.last_status),
    last_error: row.last_error,
    delivered_at: isoOrNull(row.delivered_at),
    created_at: new Date(row.created_at).toISOString(),
  };
}

const DELIVERY_COLUMNS = sql`d.id, d.event_id, e.type, e.job_id, e.worker_id, d.state, d.attempts, d.next_attempt_at,
  d.last_attempt_at, d.last_status, d.last_error, d.delivered_at, d.created_at`;

/** A subscription's delivery log, newest first. */
export async function listDeliveries(
  ctx: Context,
  id: number,
  input: z.infer<typeof listDeliveriesInput>,
  caller: Principal,
) {
  await ownSubscription(ctx, id, caller);
  const rows = await query<DeliveryRow>(
    ctx.db,
    sql`SELECT ${DELIVERY_COLUMNS} FROM notification_deliveries d JOIN notification_events e ON e.id = d.event_id
        WHERE d.subscription_id = ${id}
          ${input.state ? sql`AND d.state = ${input.state}` : sql``}
          ${input.before ? sql`AND d.id < ${input.before}` : sql``}
        ORDER BY d.id DESC LIMIT ${input.limit}`,
  );
  return { deliveries: rows.map(deliveryView) };
}

/** Sends a delivery again (whatever its state): due now, with its attempts counted from zero; same webhook-id. */
export async function replayDelivery(ctx: Context, id: number, deliveryId: number, caller: Principal) {
  await ownSubscription(ctx, id, caller);
  const row = await queryOne<DeliveryRow>(
    ctx.db,
    sql`WITH d AS (
          UPDATE notification_deliveries SET state = 'pending', attempts = 0, next_attempt_at = now(),
            delivered_at = NULL
          WHERE id = ${deliveryId} AND subscription_id = ${id}
          RETURNING *)
        SELECT ${DELIVERY_COLUMNS} FROM d JOIN notification_events e ON e.id = d.event_id`,
  );
  if (!row) throw notFound('delivery_not_found', `No delivery ${deliveryId} of subscription ${id}`);
  await recordAudit(ctx.db, caller, 'subscription.replay', `subscription:${id}`, { delivery: deliveryId });
  return deliveryView(row);
}

// ---- sending -----------------------------------------------------------------------------------------------

/** The `webhook-id` of an event: the same on every retry and replay, so receivers dedup by it. */
export const webhookId = (eventId: string | number) => `evt_${eventId}`;

/** `job.begin`, `job.time_limit_80`, `worker.lost`: the payload's `type`. */
export function payloadType(event: string): string {
  return event.startsWith('WORKER_')
    ? `worker.${event.slice(7).toLowerCase()}`
    : `job.${event.toLowerCase()}`;
}

function base64(bytes: Uint8Array): string {
  let binary = '';
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary);
}

/** The Standard Webhooks headers for `body` under a `whsec_` secret. */
export async function signWebhook(secret: string, id: string, timestamp: number, body: string) {
  const raw = Uint8Array.from(atob(secret.replace(/^whsec_/, '')), (c) => c.charCodeAt(0));
  const key = await crypto.subtle.importKey('raw', raw, { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
  const mac = new Uint8Array(await crypto.subtle.sign('HMAC', key, toBytes(`${id}.${timestamp}.${body}`)));
  return {
    'webhook-id': id,
    'webhook-timestamp': String(timestamp),
    'webhook-signature': `v1,${base64(mac)}`,
  };
}

const VERBS: Record<string, string> = {
  BEGIN: 'began',
  END: 'ended',
  FAIL: 'failed',
  REQUEUE: 'was requeued',
  TIME_LIMIT_50: 'reached 50% of its time limit',
  TIME_LIMIT_80: 'reached 80% of its time limit',
  TIME_LIMIT_90: 'reached 90% of its time limit',
  ARRAY_TASKS: 'array task event',
  WORKER_REGISTERED: 'registered',
  WORKER_LOST: 'was lost',
  WORKER_DRAINED: 'was drained',
};

/** One line for people: Slack's `text`, and the mail's subject. */
export function eventLine(type: string, data: Record<string, unknown>): string {
  if (type.startsWith('WORKER_')) {
    return `Conductor worker ${data.worker_id} (${data.cpus} CPUs) ${VERBS[type] ?? type}${data.down_reason ? `: ${data.down_reason}` : ''}`;
  }
  const tail = [
    `state ${data.state}`,
    data.exit_code ? `exit code ${data.exit_code}` : null,
    data.node ? `on ${data.node}` : null,
  ].filter(Boolean);
  return `Conductor job ${data.job_id} (${data.name}) ${VERBS[type] ?? type}: ${tail.join(', ')}`;
}

export interface OutgoingMail {
  to: string;
  subject: string;
  text: string;
}

/** Sends mail (an SMTP client on Node: functions/node/smtp.ts). */
export interface Mailer {
  send(mail: OutgoingMail): Promise<void>;
}

interface DueRow {
  id: string | number;
  attempts: number;
  event_id: string | number;
  subscription_id: string | number | null;
  recipient: string | null;
  type: string;
  data: Record<string, unknown> | string;
  event_time: Date | string;
  url: string | null;
  secret: string | null;
  format: 'standard' | 'slack' | null;
}

type Outcome =
  | { ok: true; status: number | null }
  | { ok: false; status: number | null; error: string; skip?: boolean };

/** How long a sender holds the deliveries it took before another may take them (it died meanwhile). */
const leaseSeconds = (config: Ports['config']) => config.notifyTimeoutSeconds * 2 + 5;

/** When to try again after `attempts` failed attempts: base * 2^(attempts-1), capped. */
export function backoffSeconds(config: Ports['config'], attempts: number): number {
  return Math.min(
    config.notifyRetryMaxSeconds,
    config.notifyRetryBaseSeconds * 2 ** Math.max(0, attempts - 1),
  );
}

async function sendWebhook(ctx: Context, row: DueRow): Promise<Outcome> {
  const data = typeof row.data === 'string' ? (JSON.parse(row.data) as Record<string, unknown>) : row.data;
  const id = webhookId(row.event_id);
  const body =
    row.format === 'slack'
      ? JSON.stringify({ text: eventLine(row.type, data) })
      : JSON.stringify({
          type: payloadType(row.type),
          timestamp: new Date(row.event_time).toISOString(),
          data: { event: row.type, ...data },
        });
  const headers = await signWebhook(row.secret!, id, Math.floor(Date.now() / 1000), body);
  try {
    const res = await fetch(row.url!, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'user-agent': 'Conductor-Webhooks/1', ...headers },
      body,
      redirect: 'manual',
      signal: AbortSignal.timeout(ctx.config.notifyTimeoutSeconds * 1000),
    });
    await res.body?.cancel().catch(() => {});
    if (res.status >= 200 && res.status < 300) return { ok: true, status: res.status };
    return { ok: false, status: res.status, error: `HTTP ${res.status}` };
  } catch (error) {
    const message = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
    return { ok: false, status: null, error: message.slice(0, 500) };
  }
}

async function sendMail(ctx: Context, row: DueRow): Promise<Outcome> {
  if (!ctx.mailer) {
    return {
      ok: false,
      status: null,
      error: 'no SMTP server is configured (CONDUCTOR_SMTP_URL)',
      skip: true,
    };
  }
  const data = typeof row.data === 'string' ? (JSON.parse(row.data) as Record<string, unknown>) : row.data;
  try {
    await ctx.mailer.send({
      to: row.recipient!,
      subject: eventLine(row.type, data),
      text: `${Object.entries({ event: row.type, ...data })
        .map(([k, v]) => `${k}: ${v ?? ''}`)
        .join('\n')}\n`,
    });
    return { ok: true, status: null };
  } catch (error) {
    return {
      ok: false,
      status: null,
      error: (error instanceof Error ? error.message : String(error)).slice(0, 500),
    };
  }
}

/**
 * Sends the deliveries that are due, at most `limit`, and records each answer; returns how many it took.
 * Deliveries to one subscription go in event order, one after another; subscriptions (and mails) in parallel.
 * Safe to run in several processes at once (SKIP LOCKED, and the lease).
 */
export async function deliverNotifications(ctx: Context, limit = 100): Promise<number> {
  const due = await query<DueRow>(
    ctx.db,
    sql`WITH due AS (
          SELECT id FROM notification_deliveries
          WHERE state = 'pending' AND next_attempt_at <= now()
          ORDER BY next_attempt_at, id LIMIT ${limit} FOR UPDATE SKIP LOCKED),
        taken AS (
          UPDATE notification_deliveries d
          SET attempts = d.attempts + 1, last_attempt_at = now(),
              next_attempt_at = now() + make_interval(secs => ${leaseSeconds(ctx.config)})
          FROM due WHERE d.id = due.id
          RETURNING d.id, d.attempts, d.event_id, d.subscription_id, d.recipient)
        SELECT t.*, e.type, e.data, e.created_at AS event_time, s.url, s.secret, s.format
        FROM taken t JOIN notification_events e ON e.id = t.event_id
        LEFT JOIN notification_subscriptions s ON s.id = t.subscription_id
        ORDER BY t.event_id, t.id`,
  );
  if (due.length === 0) return 0;
  const lanes = new Map<string, DueRow[]>();
  for (const row of due) {
    const lane = row.subscription_id === null ? `mail:${row.id}` : `sub:${row.subscription_id}`;
    lanes.set(lane, [...(lanes.get(lane) ?? []), row]);
  }
  await Promise.all(
    [...lanes.values()].map(async (rows) => {
      for (const row of rows) {
        const outcome = row.subscription_id === null ? await sendMail(ctx, row) : await sendWebhook(ctx, row);
        await recordOutcome(ctx, row, outcome);
      }
    }),
  );
  return due.length;
}

async function recordOutcome(ctx: Context, row: DueRow, outcome: Outcome): Promise<void> {
  const attempts = Number(row.attempts);
  if (outcome.ok) {
    await ctx.db.execute(
      sql`UPDATE notification_deliveries SET state = 'delivered', delivered_at = now(), last_status = ${outcome.status}::int,
            last_error = NULL
          WHERE id = ${row.id} AND attempts = ${attempts} AND state = 'pending'`,
    );
    return;
  }
  const giveUp = outcome.skip || attempts >= ctx.config.notifyMaxAttempts;
  await ctx.db.execute(
    sql`UPDATE notification_deliveries
        SET state = ${outcome.skip ? 'skipped' : giveUp ? 'failed' : 'pending'}, last_status = ${outcome.status}::int,
            last_error = ${outcome.error},
            next_attempt_at = now() + make_interval(secs => ${backoffSeconds(ctx.config, attempts)})
        WHERE id = ${row.id} AND attempts = ${attempts} AND state = 'pending'`,
  );
  if (giveUp && !outcome.skip) {
    ctx.logger.warn(`Notification delivery ${row.id} gave up after ${attempts} attempts`, {
      event: webhookId(row.event_id),
      error: outcome.error,
    });
  }
}

/** Sends the due deliveries, batch after batch, until none is due (or `maxBatches` were sent). */
export async function sendDueNotifications(ctx: Context, maxBatches = 50): Promise<void> {
  for (let i = 0; i < maxBatches; i++) {
    if ((await deliverNotifications(ctx)) < 100) return;
  }
}

/**
 * TIME_LIMIT_50/80/90 of running jobs, each once per attempt (a unique index; inserted ON CONFLICT DO NOTHING),
 * for the jobs someone wants them of. The maintenance pass runs it, so they come within one backstop period.
 */
export async function emitTimeLimitEvents(ctx: Context): Promise<number> {
  const rows = await query<{ id: string }>(
    ctx.db,
    sql`INSERT INTO notification_events (type, job_id, owner, attempt, mail_to, data)
        SELECT t.type, j.id, j.owner, j.attempt,
               CASE WHEN t.type = ANY(j.mail_type) THEN coalesce(j.mail_user, j.owner) END,
               notification_job_data(j)
        FROM jobs j
        CROSS JOIN (VALUES ('TIME_LIMIT_50', 0.5), ('TIME_LIMIT_80', 0.8), ('TIME_LIMIT_90', 0.9)) AS t(type, f)
        WHERE j.state = 'RUNNING' AND j.time_limit_s IS NOT NULL AND j.start_time IS NOT NULL
          AND j.start_time + make_interval(secs => j.time_limit_s * t.f) <= now()
          AND (t.type = ANY(j.mail_type)
               OR EXISTS (SELECT 1 FROM notification_subscriptions s
                          WHERE (s.owner IS NULL OR s.owner = j.owner) AND t.type = ANY(s.events)))
        ORDER BY j.id, t.f
        ON CONFLICT (job_id, attempt, type) WHERE type LIKE 'TIME_LIMIT%' DO NOTHING
        RETURNING id`,
  );
  return rows.length;
}

/**
 * Deletes events (with their deliveries) older than `logRetentionDays` whose deliveries are all settled
 * (delivered, failed or skipped), at most `limit` a call; 0 days keeps them forever. Returns how many.
 */
export async function pruneNotificationEvents(ctx: Context, limit = 1000): Promise<number> {
  const days = ctx.config.logRetentionDays;
  if (!(days > 0)) return 0;
  const rows = await query<{ id: string }>(
    ctx.db,
    sql`DELETE FROM notification_events WHERE id IN (
          SELECT e.id FROM notification_events e
          WHERE e.created_at < now() - make_interval(days => ${days})
            AND NOT EXISTS (SELECT 1 FROM notification_deliveries d WHERE d.event_id = e.id AND d.state = 'pending')
          ORDER BY e.id LIMIT ${limit})
        RETURNING id`,
  );
  return rows.length;
}

/** The submission's warning when it asks for mail that will not be sent. */
export function mailWarning(ctx: Pick<Ports, 'mailer'>, mailType: string | undefined): string | null {
  if (ctx.mailer || mailTypeColumn(mailType) === null) return null;
  return 'mail_type accepted, but no mail is sent: no SMTP server is configured (webhook subscriptions still get the events)';
}
