ALTER TABLE "jobs" ADD COLUMN "dependency_epoch" integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE "jobs" ADD COLUMN "dependency_checked" integer DEFAULT -1 NOT NULL;--> statement-breakpoint
CREATE INDEX "job_dependencies_target_idx" ON "job_dependencies" USING btree ("target_job_id");--> statement-breakpoint
CREATE INDEX "jobs_dependency_due_idx" ON "jobs" USING btree ("id") WHERE "jobs"."state" = 'PENDING' AND "jobs"."dependency_pending" AND "jobs"."dependency_epoch" <> "jobs"."dependency_checked";--> statement-breakpoint
DROP INDEX "jobs_pending_queue_idx";--> statement-breakpoint
CREATE INDEX "jobs_pending_queue_idx" ON "jobs" USING btree ("priority" DESC NULLS LAST,"submit_time","id") WHERE "jobs"."state" = 'PENDING' AND NOT "jobs"."dependency_pending";
--> statement-breakpoint
-- Wakes the dependants of the jobs a statement started (start_time recorded: `after`) or ended (left PENDING or
-- RUNNING for any other state), and of the arrays their tasks belong to (an array's job id as a target,
-- aftercorr). Only when some job waits for a dependency at all (the partial index answers), and only rows that
-- really moved: the scheduler's placing statement (PENDING to RUNNING) wakes nobody. Its own UPDATE changes no
-- state, so the trigger it fires again returns at once.
CREATE FUNCTION "jobs_dependency_wakeup"() RETURNS trigger LANGUAGE plpgsql SET jit = off AS $$
DECLARE
  "moved" bigint[];
BEGIN
  IF NOT EXISTS (SELECT 1 FROM "jobs" WHERE "state" = 'PENDING' AND "dependency_pending") THEN
    RETURN NULL;
  END IF;
  SELECT array_agg(t."target") INTO "moved"
  FROM "dependency_wakeup_new" n JOIN "dependency_wakeup_old" o ON o."id" = n."id"
  CROSS JOIN LATERAL (VALUES (n."id"), (n."array_job_id")) AS t("target")
  WHERE t."target" IS NOT NULL
    AND ((o."start_time" IS NULL AND n."start_time" IS NOT NULL)
         OR (o."state" IN ('PENDING', 'RUNNING') AND n."state" NOT IN ('PENDING', 'RUNNING')));
  -- Nothing moved: this statement placed jobs, changed reasons, or is the UPDATE below (whose trigger ends here).
  IF "moved" IS NULL THEN
    RETURN NULL;
  END IF;
  UPDATE "jobs" w SET "dependency_epoch" = w."dependency_epoch" + 1
  FROM (SELECT DISTINCT d."job_id" FROM "job_dependencies" d WHERE d."target_job_id" = ANY("moved")) due
  WHERE w."id" = due."job_id" AND w."state" = 'PENDING' AND w."dependency_pending";
  RETURN NULL;
END
$$;
--> statement-breakpoint
CREATE TRIGGER "jobs_dependency_wakeup" AFTER UPDATE ON "jobs"
  REFERENCING OLD TABLE AS "dependency_wakeup_old" NEW TABLE AS "dependency_wakeup_new"
  FOR EACH STATEMENT EXECUTE FUNCTION "jobs_dependency_wakeup"();
