CREATE TABLE "fairshare" (
	"account" text PRIMARY KEY NOT NULL,
	"shares_norm" double precision NOT NULL,
	"usage_raw" double precision NOT NULL,
	"usage_norm" double precision NOT NULL,
	"factor" double precision NOT NULL,
	"computed_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
ALTER TABLE "jobs" ADD COLUMN "requested_priority" integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE "jobs" ADD COLUMN "priority_factors" jsonb;--> statement-breakpoint
-- Until now the stored priority was the submitter's: it is their adjustment from here on.
UPDATE "jobs" SET "requested_priority" = "priority";
