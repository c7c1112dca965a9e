ALTER TABLE "jobs" ADD COLUMN "memory_per_cpu" integer;--> statement-breakpoint
ALTER TABLE "jobs" ADD COLUMN "submit_dir" text;--> statement-breakpoint
ALTER TABLE "jobs" ADD COLUMN "submit_host" text;--> statement-breakpoint
ALTER TABLE "jobs" ADD COLUMN "ntasks" integer;--> statement-breakpoint
ALTER TABLE "jobs" ADD COLUMN "cpus_per_task" integer;