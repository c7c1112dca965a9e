CREATE TABLE "notification_deliveries" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"event_id" bigint NOT NULL,
	"subscription_id" bigint,
	"recipient" text,
	"state" text DEFAULT 'pending' NOT NULL,
	"attempts" integer DEFAULT 0 NOT NULL,
	"next_attempt_at" timestamp with time zone DEFAULT now() NOT NULL,
	"last_attempt_at" timestamp with time zone,
	"last_status" integer,
	"last_error" text,
	"delivered_at" timestamp with time zone,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "notification_deliveries_state_known" CHECK ("notification_deliveries"."state" IN ('pending', 'delivered', 'failed', 'skipped') AND ("notification_deliveries"."subscription_id" IS NULL) = ("notification_deliveries"."recipient" IS NOT NULL))
);
--> statement-breakpoint
CREATE TABLE "notification_events" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"type" text NOT NULL,
	"job_id" bigint,
	"worker_id" text,
	"owner" text,
	"attempt" integer,
	"mail_to" text,
	"data" jsonb NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "notification_subscriptions" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"owner" text,
	"url" text NOT NULL,
	"secret" text NOT NULL,
	"events" text[] NOT NULL,
	"format" text DEFAULT 'standard' NOT NULL,
	"description" text,
	"created_by" text NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "notification_subscriptions_format_known" CHECK ("notification_subscriptions"."format" IN ('standard', 'slack'))
);
--> statement-breakpoint
ALTER TABLE "jobs" ADD COLUMN "mail_type" text[];--> statement-breakpoint
ALTER TABLE "jobs" ADD COLUMN "mail_user" text;--> statement-breakpoint
ALTER TABLE "notification_deliveries" ADD CONSTRAINT "notification_deliveries_event_id_notification_events_id_fk" FOREIGN KEY ("event_id") REFERENCES "public"."notification_events"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "notification_deliveries" ADD CONSTRAINT "notification_deliveries_subscription_id_notification_subscriptions_id_fk" FOREIGN KEY ("subscription_id") REFERENCES "public"."notification_subscriptions"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "notification_deliveries_due_idx" ON "notification_deliveries" USING btree ("next_attempt_at") WHERE "notification_deliveries"."state" = 'pending';--> statement-breakpoint
CREATE INDEX "notification_deliveries_subscription_idx" ON "notification_deliveries" USING btree ("subscription_id","id" DESC NULLS LAST);--> statement-breakpoint
CREATE UNIQUE INDEX "notification_events_time_limit_key" ON "notification_events" USING btree ("job_id","attempt","type") WHERE "notification_events"."type" LIKE 'TIME_LIMIT%';--> statement-breakpoint
CREATE INDEX "notification_events_job_idx" ON "notification_events" USING btree ("job_id");--> statement-breakpoint
CREATE INDEX "notification_subscriptions_owner_idx" ON "notification_subscriptions" USING btree ("owner");
--> statement-breakpoint
-- Event notifications (functions/domain/notifications.ts). Triggers write the outbox in the transaction that
-- changed the job or the worker, so an event commits with its cause or not at all. They cost one look at the
-- (small) subscriptions table when nobody subscribed, plus, for jobs, one scan of the statement's transition
-- table for a job that asked for mail.
--
-- Which subscription names an event wants: a FAIL is also an END (Slurm mails a failed job's end as FAIL to
-- those who asked for END only).
CREATE FUNCTION "notification_wanted"("type" text) RETURNS text[] LANGUAGE sql IMMUTABLE AS $$
  SELECT CASE $1 WHEN 'FAIL' THEN ARRAY['FAIL', 'END'] ELSE ARRAY[$1] END
$$;
--> statement-breakpoint
CREATE FUNCTION "notification_job_data"("j" "jobs") RETURNS jsonb LANGUAGE sql STABLE AS $$
  SELECT jsonb_build_object(
    'job_id', j.id, 'name', j.name, 'state', j.state, 'exit_code', j.exit_code, 'node', j.node,
    'owner', j.owner, 'partition', j.partition, 'attempt', j.attempt, 'reason', j.reason,
    'time_limit', j.time_limit_s / 60.0, 'submit_time', j.submit_time, 'start_time', j.start_time,
    'end_time', j.end_time)
$$;
--> statement-breakpoint
-- Job events from one UPDATE statement: BEGIN when the job's start is recorded (its agent started it), END
-- (COMPLETED, CANCELLED) or FAIL (FAILED, TIMEOUT, NODE_FAIL, OUT_OF_MEMORY) when it ends, REQUEUE when it goes
-- back to PENDING. A job started and ended by one statement (its reports arrived together) gets BEGIN then END.
-- JIT off: the planner knows nothing of transition tables and overestimates their join (5,000 rows priced as
-- 125,000 x a lateral VALUES: above jit_above_cost), and compiling took 1 s for a statement that runs in ms.
CREATE FUNCTION "notification_jobs_after_update"() RETURNS trigger LANGUAGE plpgsql SET jit = off AS $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM "notification_subscriptions"
                 WHERE "events" && ARRAY['BEGIN', 'END', 'FAIL', 'REQUEUE']::text[])
     AND NOT EXISTS (SELECT 1 FROM "notification_jobs_new" WHERE "mail_type" IS NOT NULL) THEN
    RETURN NULL;
  END IF;
  INSERT INTO "notification_events" ("type", "job_id", "owner", "attempt", "mail_to", "data")
  SELECT t."type", n."id", n."owner", n."attempt",
         CASE WHEN n."mail_type" && "notification_wanted"(t."type") THEN coalesce(n."mail_user", n."owner") END,
         "notification_job_data"(n)
  FROM "notification_jobs_new" n
  JOIN "notification_jobs_old" o ON o."id" = n."id"
  CROSS JOIN LATERAL (VALUES
    (1, CASE WHEN o."start_time" IS NULL AND n."start_time" IS NOT NULL THEN 'BEGIN' END),
    (2, CASE WHEN n."state" = o."state" THEN NULL
             WHEN n."state" = 'PENDING' THEN 'REQUEUE'
             WHEN o."state" NOT IN ('PENDING', 'RUNNING') THEN NULL
             WHEN n."state" IN ('COMPLETED', 'CANCELLED') THEN 'END'
             WHEN n."state" <> 'RUNNING' THEN 'FAIL' END)
  ) AS t("ord", "type")
  WHERE t."type" IS NOT NULL
    AND (n."mail_type" && "notification_wanted"(t."type")
         OR EXISTS (SELECT 1 FROM "notification_subscriptions" s
                    WHERE (s."owner" IS NULL OR s."owner" = n."owner") AND s."events" && "notification_wanted"(t."type")))
  ORDER BY n."id", t."ord";
  RETURN NULL;
END
$$;
--> statement-breakpoint
CREATE TRIGGER "jobs_notification_events" AFTER UPDATE ON "jobs"
  REFERENCING OLD TABLE AS "notification_jobs_old" NEW TABLE AS "notification_jobs_new"
  FOR EACH STATEMENT EXECUTE FUNCTION "notification_jobs_after_update"();
--> statement-breakpoint
-- Worker events (cluster-wide subscriptions only): registered (a new row, or a new session), lost (down for any
-- reason but its own unregistration), drained. Row-level, behind a WHEN that skips heartbeats and allocations.
CREATE FUNCTION "notification_workers_after"() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  "kind" text;
BEGIN
  IF TG_OP = 'INSERT' THEN
    "kind" := 'WORKER_REGISTERED';
  ELSIF OLD."session" IS DISTINCT FROM NEW."session" THEN
    "kind" := 'WORKER_REGISTERED';
  ELSIF NEW."drained" AND NOT OLD."drained" THEN
    "kind" := 'WORKER_DRAINED';
  ELSIF NEW."status" = 'down' AND OLD."status" <> 'down' AND NEW."down_reason" IS DISTINCT FROM 'unregistered' THEN
    "kind" := 'WORKER_LOST';
  ELSE
    RETURN NULL;
  END IF;
  IF EXISTS (SELECT 1 FROM "notification_subscriptions" WHERE "owner" IS NULL AND "kind" = ANY("events")) THEN
    INSERT INTO "notification_events" ("type", "worker_id", "data")
    VALUES ("kind", NEW."id", jsonb_build_object(
      'worker_id', NEW."id", 'hostname', NEW."hostname", 'cpus', NEW."cpus", 'status', NEW."status",
      'drained', NEW."drained", 'registered_at', NEW."registered_at", 'last_heartbeat', NEW."last_heartbeat",
      'down_reason', NEW."down_reason"));
  END IF;
  RETURN NULL;
END
$$;
--> statement-breakpoint
CREATE TRIGGER "workers_notification_insert" AFTER INSERT ON "workers"
  FOR EACH ROW EXECUTE FUNCTION "notification_workers_after"();
--> statement-breakpoint
CREATE TRIGGER "workers_notification_update" AFTER UPDATE ON "workers"
  FOR EACH ROW WHEN (OLD."session" IS DISTINCT FROM NEW."session" OR OLD."drained" IS DISTINCT FROM NEW."drained"
                     OR OLD."status" IS DISTINCT FROM NEW."status")
  EXECUTE FUNCTION "notification_workers_after"();
--> statement-breakpoint
-- The deliveries of new events: one per matching subscription, one per mail.
CREATE FUNCTION "notification_events_fan_out"() RETURNS trigger LANGUAGE plpgsql SET jit = off AS $$
BEGIN
  INSERT INTO "notification_deliveries" ("event_id", "subscription_id", "recipient")
  SELECT e."id", s."id", NULL
  FROM "notification_events_new" e
  JOIN "notification_subscriptions" s
    ON (s."owner" IS NULL OR s."owner" = e."owner") AND s."events" && "notification_wanted"(e."type")
  UNION ALL
  SELECT e."id", NULL, e."mail_to" FROM "notification_events_new" e WHERE e."mail_to" IS NOT NULL
  ORDER BY 1, 2;
  RETURN NULL;
END
$$;
--> statement-breakpoint
CREATE TRIGGER "notification_events_deliveries" AFTER INSERT ON "notification_events"
  REFERENCING NEW TABLE AS "notification_events_new"
  FOR EACH STATEMENT EXECUTE FUNCTION "notification_events_fan_out"();
