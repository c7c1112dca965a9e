CREATE TABLE "job_dependencies" (
	"job_id" bigint NOT NULL,
	"kind" text NOT NULL,
	"target_job_id" bigint,
	"delay_s" integer DEFAULT 0 NOT NULL,
	CONSTRAINT "job_dependencies_kind_known" CHECK ("job_dependencies"."kind" IN ('after', 'afterany', 'afterok', 'afternotok', 'singleton') AND ("job_dependencies"."target_job_id" IS NULL) = ("job_dependencies"."kind" = 'singleton'))
);
--> statement-breakpoint
ALTER TABLE "jobs" ADD COLUMN "dependency" text;--> statement-breakpoint
ALTER TABLE "jobs" ADD COLUMN "dependency_any" boolean DEFAULT false NOT NULL;--> statement-breakpoint
ALTER TABLE "jobs" ADD COLUMN "kill_on_invalid_dep" boolean DEFAULT false NOT NULL;--> statement-breakpoint
ALTER TABLE "jobs" ADD COLUMN "dependency_pending" boolean DEFAULT false NOT NULL;--> statement-breakpoint
ALTER TABLE "job_dependencies" ADD CONSTRAINT "job_dependencies_job_id_jobs_id_fk" FOREIGN KEY ("job_id") REFERENCES "public"."jobs"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "job_dependencies_job_idx" ON "job_dependencies" USING btree ("job_id");--> statement-breakpoint
CREATE INDEX "jobs_pending_dependency_idx" ON "jobs" USING btree ("id") WHERE "jobs"."state" = 'PENDING' AND "jobs"."dependency_pending";--> statement-breakpoint
CREATE INDEX "jobs_active_name_idx" ON "jobs" USING btree ("name") WHERE "jobs"."state" IN ('PENDING', 'RUNNING');