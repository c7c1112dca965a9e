CREATE TABLE "partitions" (
	"name" text PRIMARY KEY NOT NULL,
	"is_default" boolean DEFAULT false NOT NULL,
	"state" text DEFAULT 'UP' NOT NULL,
	"nodes" text,
	"max_time_s" integer,
	"default_time_s" integer,
	"max_cpus_per_node" integer,
	"def_mem_per_cpu" integer,
	"max_mem_per_cpu" integer,
	"allow_accounts" text[],
	"priority_tier" integer DEFAULT 1 NOT NULL,
	"policy" text DEFAULT 'pack' NOT NULL,
	"created_by" text DEFAULT 'admin' NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "partitions_state_known" CHECK ("partitions"."state" IN ('UP', 'DOWN', 'DRAIN', 'INACTIVE') AND "partitions"."policy" IN ('pack', 'spread'))
);
--> statement-breakpoint
CREATE TABLE "worker_gres" (
	"worker_id" text NOT NULL,
	"name" text NOT NULL,
	"total" integer NOT NULL,
	"allocated" integer DEFAULT 0 NOT NULL,
	CONSTRAINT "worker_gres_worker_id_name_pk" PRIMARY KEY("worker_id","name"),
	CONSTRAINT "worker_gres_fits" CHECK ("worker_gres"."allocated" >= 0 AND "worker_gres"."allocated" <= "worker_gres"."total")
);
--> statement-breakpoint
ALTER TABLE "cluster_state" ADD COLUMN "allocated_memory_mb" bigint DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE "cluster_state" ADD COLUMN "allocated_gpus" bigint DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE "jobs" ADD COLUMN "memory_mb" integer;--> statement-breakpoint
ALTER TABLE "jobs" ADD COLUMN "gpus" integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE "jobs" ADD COLUMN "gpu_type" text;--> statement-breakpoint
ALTER TABLE "jobs" ADD COLUMN "gres" jsonb DEFAULT '{}'::jsonb NOT NULL;--> statement-breakpoint
ALTER TABLE "jobs" ADD COLUMN "feature_constraint" text;--> statement-breakpoint
ALTER TABLE "jobs" ADD COLUMN "exclusive" boolean DEFAULT false NOT NULL;--> statement-breakpoint
ALTER TABLE "jobs" ADD COLUMN "nodelist" text[];--> statement-breakpoint
ALTER TABLE "jobs" ADD COLUMN "exclude_nodes" text[] DEFAULT '{}'::text[] NOT NULL;--> statement-breakpoint
ALTER TABLE "jobs" ADD COLUMN "held" text;--> statement-breakpoint
ALTER TABLE "jobs" ADD COLUMN "reason_detail" text;--> statement-breakpoint
ALTER TABLE "jobs" ADD COLUMN "allocated_gpus" integer[];--> statement-breakpoint
ALTER TABLE "resource_allocations" ADD COLUMN "memory_mb" integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE "resource_allocations" ADD COLUMN "gpu_mask" bigint DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE "resource_allocations" ADD COLUMN "gres" jsonb DEFAULT '{}'::jsonb NOT NULL;--> statement-breakpoint
ALTER TABLE "workers" ADD COLUMN "memory_mb" integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE "workers" ADD COLUMN "allocated_memory_mb" integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE "workers" ADD COLUMN "gpus" jsonb DEFAULT '[]'::jsonb NOT NULL;--> statement-breakpoint
ALTER TABLE "workers" ADD COLUMN "gpu_mask" bigint DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE "workers" ADD COLUMN "gpus_used" bigint DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE "workers" ADD COLUMN "allocated_gpus" integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE "workers" ADD COLUMN "features" text[] DEFAULT '{}'::text[] NOT NULL;--> statement-breakpoint
ALTER TABLE "workers" ADD COLUMN "partitions" text[] DEFAULT '{}'::text[] NOT NULL;--> statement-breakpoint
ALTER TABLE "workers" ADD COLUMN "memory_enforcement" text;--> statement-breakpoint
ALTER TABLE "worker_gres" ADD CONSTRAINT "worker_gres_worker_id_workers_id_fk" FOREIGN KEY ("worker_id") REFERENCES "public"."workers"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
CREATE UNIQUE INDEX "partitions_one_default" ON "partitions" USING btree ("is_default") WHERE "partitions"."is_default";--> statement-breakpoint
ALTER TABLE "jobs" ADD CONSTRAINT "jobs_resources_valid" CHECK ("jobs"."gpus" >= 0 AND ("jobs"."memory_mb" IS NULL OR "jobs"."memory_mb" >= 0));--> statement-breakpoint
ALTER TABLE "workers" ADD CONSTRAINT "workers_memory_fits" CHECK ("workers"."allocated_memory_mb" >= 0 AND "workers"."allocated_memory_mb" <= "workers"."memory_mb");--> statement-breakpoint
ALTER TABLE "workers" ADD CONSTRAINT "workers_gpus_fit" CHECK ("workers"."gpus_used" & ~"workers"."gpu_mask" = 0 AND "workers"."gpus_used" >= 0 AND "workers"."allocated_gpus" = bit_count("workers"."gpus_used"::bit(64)));--> statement-breakpoint
-- The default partition: jobs that name none go there, and so do nodes that declare none.
INSERT INTO "partitions" ("name", "is_default") VALUES ('default', true) ON CONFLICT DO NOTHING;--> statement-breakpoint
-- Earlier versions accepted any partition name and ignored it: jobs still waiting under a name no partition has
-- go to the default partition (NULL), as they would have run before.
UPDATE "jobs" SET "partition" = NULL WHERE "state" = 'PENDING' AND "partition" IS NOT NULL;
