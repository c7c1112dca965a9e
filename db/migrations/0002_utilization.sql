CREATE TABLE "utilization_samples" (
	"at" timestamp with time zone PRIMARY KEY NOT NULL,
	"total_cpus" integer NOT NULL,
	"allocated_cpus" integer NOT NULL,
	"live_workers" integer NOT NULL
);
