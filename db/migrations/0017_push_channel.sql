ALTER TABLE "workers" ADD COLUMN "channel" boolean DEFAULT false NOT NULL;--> statement-breakpoint
ALTER TABLE "workers" ADD COLUMN "channel_generation" integer DEFAULT 0 NOT NULL;