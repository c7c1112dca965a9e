CREATE TABLE "job_attempts" (
	"job_id" bigint NOT NULL,
	"attempt" integer NOT NULL,
	"node" text,
	"start_time" timestamp with time zone,
	"end_time" timestamp with time zone NOT NULL,
	"state" text NOT NULL,
	"exit_code" text,
	"reason" text,
	"requeued" boolean NOT NULL,
	CONSTRAINT "job_attempts_job_id_attempt_pk" PRIMARY KEY("job_id","attempt")
);
--> statement-breakpoint
ALTER TABLE "jobs" ADD COLUMN "max_requeues" integer;--> statement-breakpoint
ALTER TABLE "jobs" ADD COLUMN "retry_on_failure" boolean;--> statement-breakpoint
ALTER TABLE "jobs" ADD COLUMN "retry_backoff_s" integer;--> statement-breakpoint
ALTER TABLE "jobs" ADD COLUMN "crash_limit" integer;--> statement-breakpoint
ALTER TABLE "jobs" ADD COLUMN "crashes" integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE "jobs" ADD COLUMN "requeued_from" text;--> statement-breakpoint
ALTER TABLE "partitions" ADD COLUMN "max_requeues" integer;--> statement-breakpoint
ALTER TABLE "partitions" ADD COLUMN "retry_on_failure" boolean;--> statement-breakpoint
ALTER TABLE "partitions" ADD COLUMN "retry_backoff_s" integer;--> statement-breakpoint
ALTER TABLE "partitions" ADD COLUMN "crash_limit" integer;--> statement-breakpoint
ALTER TABLE "job_attempts" ADD CONSTRAINT "job_attempts_job_id_jobs_id_fk" FOREIGN KEY ("job_id") REFERENCES "public"."jobs"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
-- Every attempt's end is recorded by the statement that ends it, whichever path that is (an agent's report, a
-- lost node, a cancel, a requeue, the server's time limit): a row trigger fired only by a transition out of
-- RUNNING (the WHEN clause is all a placement pays). A requeue leaves the job PENDING: how the attempt ended is
-- then in requeued_from (NODE_FAIL, FAILED, REQUEUED), set by the requeueing statement.
CREATE FUNCTION "job_attempts_record"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO "job_attempts" ("job_id", "attempt", "node", "start_time", "end_time", "state", "exit_code", "reason", "requeued")
  VALUES (OLD."id", OLD."attempt", OLD."node", coalesce(OLD."start_time", NEW."start_time"), coalesce(NEW."end_time", now()),
          CASE WHEN NEW."state" = 'PENDING' THEN coalesce(NEW."requeued_from", 'REQUEUED') ELSE NEW."state" END,
          NEW."exit_code", NEW."reason", NEW."state" = 'PENDING')
  ON CONFLICT ("job_id", "attempt") DO NOTHING;
  RETURN NULL;
END
$$;
--> statement-breakpoint
CREATE TRIGGER "jobs_attempt_ended" AFTER UPDATE OF "state" ON "jobs"
  FOR EACH ROW WHEN (OLD."state" = 'RUNNING' AND NEW."state" <> 'RUNNING')
  EXECUTE FUNCTION "job_attempts_record"();
