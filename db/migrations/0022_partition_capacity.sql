CREATE TABLE "capacity_partition_hourly" (
	"bucket" timestamp with time zone NOT NULL,
	"partition" text NOT NULL,
	"cpu_seconds" numeric DEFAULT '0' NOT NULL,
	"samples" integer DEFAULT 0 NOT NULL,
	CONSTRAINT "capacity_partition_hourly_bucket_partition_pk" PRIMARY KEY("bucket","partition")
);
--> statement-breakpoint
ALTER TABLE "utilization_samples" ADD COLUMN "partition_cpus" jsonb DEFAULT '{}'::jsonb NOT NULL;