CREATE TABLE "job_arrays" (
	"array_job_id" bigint PRIMARY KEY NOT NULL,
	"spec" text NOT NULL,
	"task_count" integer NOT NULL,
	"task_min" integer NOT NULL,
	"task_max" integer NOT NULL,
	"task_step" integer NOT NULL,
	"max_running" integer,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "job_arrays_max_running_positive" CHECK ("job_arrays"."max_running" IS NULL OR "job_arrays"."max_running" >= 1)
);
--> statement-breakpoint
ALTER TABLE "job_dependencies" DROP CONSTRAINT "job_dependencies_kind_known";--> statement-breakpoint
ALTER TABLE "jobs" ADD COLUMN "array_job_id" bigint;--> statement-breakpoint
ALTER TABLE "jobs" ADD COLUMN "array_task_id" integer;--> statement-breakpoint
CREATE INDEX "jobs_array_task_idx" ON "jobs" USING btree ("array_job_id","array_task_id") WHERE "jobs"."array_job_id" IS NOT NULL;--> statement-breakpoint
CREATE INDEX "jobs_array_running_idx" ON "jobs" USING btree ("array_job_id") WHERE "jobs"."state" = 'RUNNING' AND "jobs"."array_job_id" IS NOT NULL;--> statement-breakpoint
ALTER TABLE "job_dependencies" ADD CONSTRAINT "job_dependencies_kind_known" CHECK ("job_dependencies"."kind" IN ('after', 'afterany', 'afterok', 'afternotok', 'aftercorr', 'singleton') AND ("job_dependencies"."target_job_id" IS NULL) = ("job_dependencies"."kind" = 'singleton'));