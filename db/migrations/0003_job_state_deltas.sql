CREATE TABLE "job_state_deltas" (
	"state" text NOT NULL,
	"n" bigint NOT NULL
);
--> statement-breakpoint
DROP INDEX "resource_allocations_active_idx";--> statement-breakpoint
CREATE INDEX "jobs_start_time_idx" ON "jobs" USING btree ("start_time");--> statement-breakpoint
CREATE INDEX "resource_allocations_active_cpus_idx" ON "resource_allocations" USING btree ("node_name","allocated_cpus") WHERE "resource_allocations"."released" = false;