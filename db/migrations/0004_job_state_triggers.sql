-- Jobs per state without counting the job history: every statement that inserts, updates or deletes jobs
-- appends its net change per state to job_state_deltas (statement-level AFTER triggers over transition
-- tables: one INSERT per statement, however many rows it changed; zero nets are skipped). The rows commit
-- with the statement's transaction, so `SELECT state, sum(n) FROM job_state_deltas GROUP BY state` is exact in
-- any snapshot. Appends never conflict: concurrent transitions do not queue on a counter row.
CREATE FUNCTION "job_state_deltas_after_insert"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO "job_state_deltas" ("state", "n")
  SELECT "state", count(*) FROM "job_state_new" GROUP BY "state";
  RETURN NULL;
END
$$;
--> statement-breakpoint
CREATE FUNCTION "job_state_deltas_after_update"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO "job_state_deltas" ("state", "n")
  SELECT "state", sum("n") FROM (
    SELECT "state", 1 AS "n" FROM "job_state_new"
    UNION ALL
    SELECT "state", -1 AS "n" FROM "job_state_old"
  ) "c"
  GROUP BY "state" HAVING sum("n") <> 0;
  RETURN NULL;
END
$$;
--> statement-breakpoint
CREATE FUNCTION "job_state_deltas_after_delete"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO "job_state_deltas" ("state", "n")
  SELECT "state", -count(*) FROM "job_state_old" GROUP BY "state";
  RETURN NULL;
END
$$;
--> statement-breakpoint
-- TRUNCATE fires no DELETE trigger (and has no transition table): it empties the counts too.
CREATE FUNCTION "job_state_deltas_after_truncate"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM "job_state_deltas";
  RETURN NULL;
END
$$;
--> statement-breakpoint
CREATE TRIGGER "jobs_state_deltas_insert" AFTER INSERT ON "jobs"
  REFERENCING NEW TABLE AS "job_state_new"
  FOR EACH STATEMENT EXECUTE FUNCTION "job_state_deltas_after_insert"();
--> statement-breakpoint
CREATE TRIGGER "jobs_state_deltas_update" AFTER UPDATE ON "jobs"
  REFERENCING OLD TABLE AS "job_state_old" NEW TABLE AS "job_state_new"
  FOR EACH STATEMENT EXECUTE FUNCTION "job_state_deltas_after_update"();
--> statement-breakpoint
CREATE TRIGGER "jobs_state_deltas_delete" AFTER DELETE ON "jobs"
  REFERENCING OLD TABLE AS "job_state_old"
  FOR EACH STATEMENT EXECUTE FUNCTION "job_state_deltas_after_delete"();
--> statement-breakpoint
CREATE TRIGGER "jobs_state_deltas_truncate" AFTER TRUNCATE ON "jobs"
  FOR EACH STATEMENT EXECUTE FUNCTION "job_state_deltas_after_truncate"();
--> statement-breakpoint
-- Backfill from the jobs that exist. CREATE TRIGGER above locked jobs against writes until this migration
-- commits, so no transition can slip between the count and the triggers.
INSERT INTO "job_state_deltas" ("state", "n") SELECT "state", count(*) FROM "jobs" GROUP BY "state";
