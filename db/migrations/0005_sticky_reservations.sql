-- The worker a blocked job holds until it starts (the scheduler keeps it; see functions/domain/placement.ts).
ALTER TABLE "jobs" ADD COLUMN "reserved_worker" text;--> statement-breakpoint
CREATE INDEX "jobs_reserved_worker_idx" ON "jobs" USING btree ("reserved_worker") WHERE "jobs"."state" = 'PENDING' AND "jobs"."reserved_worker" IS NOT NULL;
