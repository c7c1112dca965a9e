CREATE TABLE "cluster_state" (
	"id" smallint PRIMARY KEY DEFAULT 1 NOT NULL,
	"allocated_cpus" bigint DEFAULT 0 NOT NULL,
	"allocation_version" bigint DEFAULT 0 NOT NULL,
	CONSTRAINT "cluster_state_singleton" CHECK ("cluster_state"."id" = 1)
);
--> statement-breakpoint
CREATE TABLE "job_output" (
	"job_id" bigint NOT NULL,
	"stream" text NOT NULL,
	"attempt" integer NOT NULL,
	"content" text DEFAULT '' NOT NULL,
	"bytes" bigint DEFAULT 0 NOT NULL,
	CONSTRAINT "job_output_job_id_stream_pk" PRIMARY KEY("job_id","stream")
);
--> statement-breakpoint
CREATE TABLE "jobs" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"name" text NOT NULL,
	"script" text NOT NULL,
	"cpus" integer NOT NULL,
	"state" text DEFAULT 'PENDING' NOT NULL,
	"exit_code" text,
	"node" text,
	"account" text,
	"partition" text,
	"time_limit_s" integer,
	"work_dir" text,
	"environment" jsonb DEFAULT '{}'::jsonb NOT NULL,
	"priority" integer DEFAULT 0 NOT NULL,
	"requeue" boolean DEFAULT false NOT NULL,
	"attempt" integer DEFAULT 0 NOT NULL,
	"claimed_session" text,
	"claimed_at" timestamp with time zone,
	"cancel_requested" boolean DEFAULT false NOT NULL,
	"reason" text,
	"submit_time" timestamp with time zone DEFAULT now() NOT NULL,
	"start_time" timestamp with time zone,
	"end_time" timestamp with time zone,
	CONSTRAINT "jobs_cpus_positive" CHECK ("jobs"."cpus" > 0)
);
--> statement-breakpoint
CREATE TABLE "maintenance_state" (
	"id" smallint PRIMARY KEY DEFAULT 1 NOT NULL,
	"reaper_seen_at" timestamp with time zone,
	"reaper_resumed_at" timestamp with time zone,
	"cache_synced_at" timestamp with time zone,
	"cache_drift" bigint,
	CONSTRAINT "maintenance_state_singleton" CHECK ("maintenance_state"."id" = 1)
);
--> statement-breakpoint
CREATE TABLE "resource_allocations" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"job_id" bigint NOT NULL,
	"allocated_cpus" integer NOT NULL,
	"node_name" text NOT NULL,
	"released" boolean DEFAULT false NOT NULL,
	"allocation_time" timestamp with time zone DEFAULT now() NOT NULL,
	"released_time" timestamp with time zone
);
--> statement-breakpoint
CREATE TABLE "workers" (
	"id" text PRIMARY KEY NOT NULL,
	"hostname" text NOT NULL,
	"cpus" integer NOT NULL,
	"allocated_cpus" integer DEFAULT 0 NOT NULL,
	"status" text DEFAULT 'ready' NOT NULL,
	"session" text NOT NULL,
	"registered_at" timestamp with time zone DEFAULT now() NOT NULL,
	"last_heartbeat" timestamp with time zone DEFAULT now() NOT NULL,
	"down_at" timestamp with time zone,
	"down_reason" text,
	"labels" jsonb DEFAULT '{}'::jsonb NOT NULL,
	"agent_version" text,
	CONSTRAINT "workers_allocation_fits" CHECK ("workers"."allocated_cpus" >= 0 AND "workers"."allocated_cpus" <= "workers"."cpus")
);
--> statement-breakpoint
ALTER TABLE "job_output" ADD CONSTRAINT "job_output_job_id_jobs_id_fk" FOREIGN KEY ("job_id") REFERENCES "public"."jobs"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "resource_allocations" ADD CONSTRAINT "resource_allocations_job_id_jobs_id_fk" FOREIGN KEY ("job_id") REFERENCES "public"."jobs"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "jobs_pending_queue_idx" ON "jobs" USING btree ("priority" DESC NULLS LAST,"submit_time","id") WHERE "jobs"."state" = 'PENDING';--> statement-breakpoint
CREATE INDEX "jobs_node_active_idx" ON "jobs" USING btree ("node") WHERE "jobs"."state" = 'RUNNING';--> statement-breakpoint
CREATE INDEX "jobs_state_id_idx" ON "jobs" USING btree ("state","id" DESC NULLS LAST);--> statement-breakpoint
CREATE UNIQUE INDEX "resource_allocations_job_id_key" ON "resource_allocations" USING btree ("job_id");--> statement-breakpoint
CREATE INDEX "resource_allocations_active_idx" ON "resource_allocations" USING btree ("node_name") WHERE "resource_allocations"."released" = false;--> statement-breakpoint
CREATE INDEX "workers_status_heartbeat_idx" ON "workers" USING btree ("status","last_heartbeat");--> statement-breakpoint
INSERT INTO "cluster_state" ("id") VALUES (1) ON CONFLICT DO NOTHING;--> statement-breakpoint
INSERT INTO "maintenance_state" ("id") VALUES (1) ON CONFLICT DO NOTHING;
