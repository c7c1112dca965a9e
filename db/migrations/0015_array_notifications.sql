ALTER TABLE "job_arrays" ADD COLUMN "begin_notified" boolean DEFAULT false NOT NULL;--> statement-breakpoint
ALTER TABLE "job_arrays" ADD COLUMN "end_notified" boolean DEFAULT false NOT NULL;--> statement-breakpoint
ALTER TABLE "notification_events" ADD COLUMN "array_scope" text;--> statement-breakpoint
-- Job arrays (sbatch(1) --mail-type: "ARRAY_TASKS: send emails for each array task; otherwise BEGIN, END and
-- FAIL apply to a job array as a whole rather than generating individual email messages for each task").
-- A task's BEGIN, END and FAIL are written as `task` events only for those who asked for ARRAY_TASKS (its mail,
-- or a subscription naming it); the others get one `array` BEGIN when the first task starts, and one END (FAIL
-- if any task did not complete) when no task is left pending or running. REQUEUE and TIME_LIMIT_* stay per task.
-- Exactly once: the BEGIN by the statement that sets job_arrays.begin_notified; the END under a transaction
-- advisory lock per array, taken after the statement's own row locks (a finishing statement may hold worker
-- rows; no scheduling pass takes this lock, so no cycle), checked with a snapshot taken after the lock.
CREATE TYPE "notification_job_event" AS ("ord" int, "type" text, "per_array" boolean, "job" "jobs");
--> statement-breakpoint
CREATE OR REPLACE FUNCTION "notification_jobs_after_update"() RETURNS trigger LANGUAGE plpgsql SET jit = off AS $$
DECLARE
  "a" record;
  "statement_events" "notification_job_event"[];
BEGIN
  IF NOT EXISTS (SELECT 1 FROM "notification_subscriptions"
                 WHERE "events" && ARRAY['BEGIN', 'END', 'FAIL', 'REQUEUE']::text[])
     AND NOT EXISTS (SELECT 1 FROM "notification_jobs_new" WHERE "mail_type" IS NOT NULL) THEN
    RETURN NULL;
  END IF;
  "statement_events" := ARRAY(
    SELECT ROW(t."ord", t."type", n."array_job_id" IS NOT NULL AND t."type" IN ('BEGIN', 'END', 'FAIL'), n)::"notification_job_event"
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
    WHERE t."type" IS NOT NULL);

  -- Each job's own events; an array task's BEGIN, END and FAIL only for those who asked for ARRAY_TASKS.
  INSERT INTO "notification_events" ("type", "job_id", "owner", "attempt", "mail_to", "array_scope", "data")
  SELECT e."type", (e."job")."id", (e."job")."owner", (e."job")."attempt",
         CASE WHEN (e."job")."mail_type" && "notification_wanted"(e."type")
                   AND (NOT e."per_array" OR 'ARRAY_TASKS' = ANY((e."job")."mail_type"))
              THEN coalesce((e."job")."mail_user", (e."job")."owner") END,
         CASE WHEN e."per_array" THEN 'task' END,
         "notification_job_data"(e."job")
  FROM unnest("statement_events") e
  WHERE ((e."job")."mail_type" && "notification_wanted"(e."type")
         AND (NOT e."per_array" OR 'ARRAY_TASKS' = ANY((e."job")."mail_type")))
     OR EXISTS (SELECT 1 FROM "notification_subscriptions" s
                WHERE (s."owner" IS NULL OR s."owner" = (e."job")."owner")
                  AND s."events" && "notification_wanted"(e."type")
                  AND (NOT e."per_array" OR 'ARRAY_TASKS' = ANY(s."events")))
  ORDER BY (e."job")."id", e."ord";

  -- The arrays' own events, for those who did not ask for ARRAY_TASKS.
  FOR "a" IN
    SELECT DISTINCT ON ((e."job")."array_job_id", e."type" = 'BEGIN')
           (e."job")."array_job_id" AS "id", e."type" = 'BEGIN' AS "begin", e."job" AS "job"
    FROM unnest("statement_events") e
    WHERE e."per_array"
      AND (((e."job")."mail_type" && ARRAY['BEGIN', 'END', 'FAIL']::text[]
            AND NOT 'ARRAY_TASKS' = ANY((e."job")."mail_type"))
           OR EXISTS (SELECT 1 FROM "notification_subscriptions" s
                      WHERE (s."owner" IS NULL OR s."owner" = (e."job")."owner")
                        AND s."events" && "notification_wanted"(e."type")
                        AND NOT 'ARRAY_TASKS' = ANY(s."events")))
    ORDER BY (e."job")."array_job_id", e."type" = 'BEGIN' DESC
  LOOP
    IF "a"."begin" THEN
      UPDATE "job_arrays" SET "begin_notified" = true WHERE "array_job_id" = "a"."id" AND NOT "begin_notified";
      IF FOUND THEN
        PERFORM "notification_array_event"("a"."id", 'BEGIN', "a"."job");
      END IF;
    ELSE
      PERFORM pg_advisory_xact_lock(1852797299, hashtext("a"."id"::text));
      IF NOT EXISTS (SELECT 1 FROM "jobs" WHERE "array_job_id" = "a"."id" AND "state" IN ('PENDING', 'RUNNING')) THEN
        UPDATE "job_arrays" SET "end_notified" = true WHERE "array_job_id" = "a"."id" AND NOT "end_notified";
        IF FOUND THEN
          PERFORM "notification_array_event"("a"."id",
            CASE WHEN EXISTS (SELECT 1 FROM "jobs" WHERE "array_job_id" = "a"."id"
                              AND "state" NOT IN ('COMPLETED', 'CANCELLED')) THEN 'FAIL' ELSE 'END' END,
            "a"."job");
        END IF;
      END IF;
    END IF;
  END LOOP;
  RETURN NULL;
END
$$;
--> statement-breakpoint
-- One event for a whole array: its job id, its tasks per state, to those who did not ask for ARRAY_TASKS.
CREATE FUNCTION "notification_array_event"("array_id" bigint, "kind" text, "task" "jobs") RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO "notification_events" ("type", "job_id", "owner", "attempt", "mail_to", "array_scope", "data")
  SELECT "kind", "array_id", "task"."owner", NULL,
         CASE WHEN "task"."mail_type" && "notification_wanted"("kind")
                   AND NOT 'ARRAY_TASKS' = ANY("task"."mail_type")
              THEN coalesce("task"."mail_user", "task"."owner") END,
         'array',
         jsonb_build_object(
           'job_id', "array_id", 'array_job_id', "array_id", 'name', "task"."name", 'owner', "task"."owner",
           'partition', "task"."partition", 'array', a."spec" || coalesce('%' || a."max_running", ''),
           'task_count', a."task_count",
           'state', CASE "kind" WHEN 'BEGIN' THEN 'RUNNING' WHEN 'END' THEN 'COMPLETED' ELSE 'FAILED' END,
           'tasks', (SELECT jsonb_object_agg(s."state", s."n")
                     FROM (SELECT "state", count(*) AS "n" FROM "jobs" WHERE "array_job_id" = "array_id"
                           GROUP BY "state") s))
  FROM "job_arrays" a WHERE a."array_job_id" = "array_id";
END
$$;
--> statement-breakpoint
-- A task event goes to the subscriptions that named ARRAY_TASKS, an array event to the others.
CREATE OR REPLACE FUNCTION "notification_events_fan_out"() RETURNS trigger LANGUAGE plpgsql SET jit = off AS $$
BEGIN
  INSERT INTO "notification_deliveries" ("event_id", "subscription_id", "recipient")
  SELECT e."id", s."id", NULL
  FROM "notification_events_new" e
  JOIN "notification_subscriptions" s
    ON (s."owner" IS NULL OR s."owner" = e."owner") AND s."events" && "notification_wanted"(e."type")
       AND (e."array_scope" IS NULL OR (e."array_scope" = 'task') = ('ARRAY_TASKS' = ANY(s."events")))
  UNION ALL
  SELECT e."id", NULL, e."mail_to" FROM "notification_events_new" e WHERE e."mail_to" IS NOT NULL
  ORDER BY 1, 2;
  RETURN NULL;
END
$$;
