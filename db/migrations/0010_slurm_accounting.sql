ALTER TABLE "jobs" ADD COLUMN "qos" text;--> statement-breakpoint
ALTER TABLE "jobs" ADD COLUMN "begin_time" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "jobs" ADD COLUMN "eligible_time" timestamp with time zone DEFAULT now() NOT NULL;--> statement-breakpoint
ALTER TABLE "jobs" ADD COLUMN "stdout" text;--> statement-breakpoint
ALTER TABLE "jobs" ADD COLUMN "stderr" text;--> statement-breakpoint
ALTER TABLE "jobs" ADD COLUMN "stdin" text;--> statement-breakpoint
ALTER TABLE "jobs" ADD COLUMN "open_mode" text;--> statement-breakpoint
ALTER TABLE "jobs" ADD COLUMN "export_env" text;--> statement-breakpoint
ALTER TABLE "jobs" ADD COLUMN "signal" jsonb;--> statement-breakpoint
ALTER TABLE "jobs" ADD COLUMN "comment" text;--> statement-breakpoint
ALTER TABLE "jobs" ADD COLUMN "max_rss_kb" bigint;--> statement-breakpoint
ALTER TABLE "jobs" ADD COLUMN "cancelled_by" text;--> statement-breakpoint
ALTER TABLE "jobs" ADD COLUMN "signal_pending" jsonb;--> statement-breakpoint
ALTER TABLE "jobs" ADD COLUMN "fenced_node" text;--> statement-breakpoint
ALTER TABLE "jobs" ADD COLUMN "fenced_attempt" integer;--> statement-breakpoint
ALTER TABLE "jobs" ADD COLUMN "fenced_at" timestamp with time zone;--> statement-breakpoint
CREATE INDEX "jobs_pending_begin_idx" ON "jobs" USING btree ("begin_time") WHERE "jobs"."state" = 'PENDING' AND "jobs"."begin_time" IS NOT NULL;--> statement-breakpoint
CREATE INDEX "jobs_fenced_node_idx" ON "jobs" USING btree ("fenced_node") WHERE "jobs"."fenced_node" IS NOT NULL;--> statement-breakpoint
ALTER TABLE "jobs" ADD CONSTRAINT "jobs_open_mode_known" CHECK ("jobs"."open_mode" IS NULL OR "jobs"."open_mode" IN ('append', 'truncate'));--> statement-breakpoint
-- Jobs submitted before this migration were eligible when they were submitted.
UPDATE "jobs" SET "eligible_time" = "submit_time";
