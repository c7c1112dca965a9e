CREATE TABLE "capacity_hourly" (
	"bucket" timestamp with time zone PRIMARY KEY NOT NULL,
	"cpu_seconds" numeric DEFAULT '0' NOT NULL,
	"samples" integer DEFAULT 0 NOT NULL
);
--> statement-breakpoint
CREATE TABLE "usage_daily" (
	"bucket" timestamp with time zone NOT NULL,
	"account" text NOT NULL,
	"owner" text NOT NULL,
	"partition" text NOT NULL,
	"node" text NOT NULL,
	"cpu_seconds" numeric DEFAULT '0' NOT NULL,
	"gpu_seconds" numeric DEFAULT '0' NOT NULL,
	"mem_mb_seconds" numeric DEFAULT '0' NOT NULL,
	"wall_seconds" numeric DEFAULT '0' NOT NULL,
	"max_rss_kb" bigint,
	"attempts" integer DEFAULT 0 NOT NULL,
	"requeued" integer DEFAULT 0 NOT NULL,
	"completed" integer DEFAULT 0 NOT NULL,
	"failed" integer DEFAULT 0 NOT NULL,
	"cancelled" integer DEFAULT 0 NOT NULL,
	"timeout" integer DEFAULT 0 NOT NULL,
	"node_fail" integer DEFAULT 0 NOT NULL,
	"out_of_memory" integer DEFAULT 0 NOT NULL,
	"starts" integer DEFAULT 0 NOT NULL,
	"wait_seconds" numeric DEFAULT '0' NOT NULL,
	CONSTRAINT "usage_daily_bucket_account_owner_partition_node_pk" PRIMARY KEY("bucket","account","owner","partition","node")
);
--> statement-breakpoint
CREATE TABLE "usage_hourly" (
	"bucket" timestamp with time zone NOT NULL,
	"account" text NOT NULL,
	"owner" text NOT NULL,
	"partition" text NOT NULL,
	"node" text NOT NULL,
	"cpu_seconds" numeric DEFAULT '0' NOT NULL,
	"gpu_seconds" numeric DEFAULT '0' NOT NULL,
	"mem_mb_seconds" numeric DEFAULT '0' NOT NULL,
	"wall_seconds" numeric DEFAULT '0' NOT NULL,
	"max_rss_kb" bigint,
	"attempts" integer DEFAULT 0 NOT NULL,
	"requeued" integer DEFAULT 0 NOT NULL,
	"completed" integer DEFAULT 0 NOT NULL,
	"failed" integer DEFAULT 0 NOT NULL,
	"cancelled" integer DEFAULT 0 NOT NULL,
	"timeout" integer DEFAULT 0 NOT NULL,
	"node_fail" integer DEFAULT 0 NOT NULL,
	"out_of_memory" integer DEFAULT 0 NOT NULL,
	"starts" integer DEFAULT 0 NOT NULL,
	"wait_seconds" numeric DEFAULT '0' NOT NULL,
	CONSTRAINT "usage_hourly_bucket_account_owner_partition_node_pk" PRIMARY KEY("bucket","account","owner","partition","node")
);
--> statement-breakpoint
ALTER TABLE "job_attempts" ADD COLUMN "cpus" integer;--> statement-breakpoint
ALTER TABLE "job_attempts" ADD COLUMN "memory_mb" integer;--> statement-breakpoint
ALTER TABLE "job_attempts" ADD COLUMN "gpus" integer;--> statement-breakpoint
ALTER TABLE "job_attempts" ADD COLUMN "partition" text;--> statement-breakpoint
ALTER TABLE "job_attempts" ADD COLUMN "max_rss_kb" bigint;--> statement-breakpoint
ALTER TABLE "job_attempts" ADD COLUMN "eligible_time" timestamp with time zone;--> statement-breakpoint
-- An attempt's record now keeps what it held: the allocation row (released, but kept until the next placement)
-- says what the job got (an exclusive job gets the whole node), else the job's request.
CREATE OR REPLACE FUNCTION "job_attempts_record"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO "job_attempts" ("job_id", "attempt", "node", "start_time", "end_time", "state", "exit_code", "reason", "requeued",
                              "cpus", "memory_mb", "gpus", "partition", "max_rss_kb", "eligible_time")
  SELECT OLD."id", OLD."attempt", OLD."node", coalesce(OLD."start_time", NEW."start_time"), coalesce(NEW."end_time", now()),
         CASE WHEN NEW."state" = 'PENDING' THEN coalesce(NEW."requeued_from", 'REQUEUED') ELSE NEW."state" END,
         NEW."exit_code", NEW."reason", NEW."state" = 'PENDING',
         coalesce(ra."allocated_cpus", OLD."cpus"), coalesce(ra."memory_mb", OLD."memory_mb", 0),
         coalesce(bit_count(ra."gpu_mask"::bit(64))::int, OLD."gpus"), OLD."partition", NEW."max_rss_kb",
         greatest(OLD."eligible_time", OLD."begin_time",
                  (SELECT max(p."end_time") FROM "job_attempts" p WHERE p."job_id" = OLD."id" AND p."attempt" < OLD."attempt"))
  FROM (SELECT 1) one
  LEFT JOIN "resource_allocations" ra ON ra."job_id" = OLD."id" AND ra."node_name" = OLD."node"
  ON CONFLICT ("job_id", "attempt") DO NOTHING;
  RETURN NULL;
END
$$;
--> statement-breakpoint
-- The roll-ups, in the statement that records the attempts (and so in the transaction that ended them): each
-- attempt's run is split into the UTC hours (and days) it overlaps; its end counts in the bucket it ended in,
-- its queue wait in the bucket it started in. Rows are upserted in key order, so two statements lock them in
-- the same order. Days are 24-hour steps from a UTC midnight, whatever the session's time zone.
CREATE FUNCTION "usage_roll_up"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  WITH x AS (
    SELECT a.*, coalesce(j."account", '') AS acct, coalesce(j."owner", '') AS usr,
           coalesce(a."partition", '') AS part, coalesce(a."node", '') AS nd,
           coalesce(a."start_time", a."end_time") AS t0, greatest(a."end_time", a."start_time") AS t1
    FROM added a JOIN "jobs" j ON j."id" = a."job_id"
  ),
  pieces AS (
    SELECT x.*, h AS bucket,
           greatest(extract(epoch FROM least(x.t1, h + interval '1 hour') - greatest(x.t0, h)), 0) AS s,
           h = date_trunc('hour', x.t1, 'UTC') AS ends_here,
           h = date_trunc('hour', x.t0, 'UTC') AND x."start_time" IS NOT NULL AS starts_here
    FROM x, generate_series(date_trunc('hour', x.t0, 'UTC'), date_trunc('hour', x.t1, 'UTC'), interval '1 hour') h
  ),
  hourly AS (
    SELECT bucket, acct, usr, part, nd,
           sum(coalesce("cpus", 0) * s) AS cpu_s, sum(coalesce("gpus", 0) * s) AS gpu_s,
           sum(coalesce("memory_mb", 0) * s) AS mem_s, sum(s) AS wall_s, max("max_rss_kb") AS rss,
           count(*) FILTER (WHERE ends_here) AS attempts,
           count(*) FILTER (WHERE ends_here AND "requeued") AS requeued,
           count(*) FILTER (WHERE ends_here AND NOT "requeued" AND "state" = 'COMPLETED') AS completed,
           count(*) FILTER (WHERE ends_here AND NOT "requeued" AND "state" = 'FAILED') AS failed,
           count(*) FILTER (WHERE ends_here AND NOT "requeued" AND "state" = 'CANCELLED') AS cancelled,
           count(*) FILTER (WHERE ends_here AND NOT "requeued" AND "state" = 'TIMEOUT') AS timeout,
           count(*) FILTER (WHERE ends_here AND NOT "requeued" AND "state" = 'NODE_FAIL') AS node_fail,
           count(*) FILTER (WHERE ends_here AND NOT "requeued" AND "state" = 'OUT_OF_MEMORY') AS oom,
           count(*) FILTER (WHERE starts_here) AS starts,
           coalesce(sum(greatest(extract(epoch FROM x_start - x_eligible), 0)) FILTER (WHERE starts_here), 0) AS wait_s
    FROM (SELECT pieces.*, pieces."start_time" AS x_start, coalesce(pieces."eligible_time", pieces."start_time") AS x_eligible
          FROM pieces) p
    GROUP BY bucket, acct, usr, part, nd
  ),
  h AS (
    INSERT INTO "usage_hourly" AS u ("bucket", "account", "owner", "partition", "node", "cpu_seconds", "gpu_seconds",
      "mem_mb_seconds", "wall_seconds", "max_rss_kb", "attempts", "requeued", "completed", "failed", "cancelled",
      "timeout", "node_fail", "out_of_memory", "starts", "wait_seconds")
    SELECT * FROM hourly ORDER BY bucket, acct, usr, part, nd
    ON CONFLICT ("bucket", "account", "owner", "partition", "node") DO UPDATE SET
      "cpu_seconds" = u."cpu_seconds" + excluded."cpu_seconds", "gpu_seconds" = u."gpu_seconds" + excluded."gpu_seconds",
      "mem_mb_seconds" = u."mem_mb_seconds" + excluded."mem_mb_seconds",
      "wall_seconds" = u."wall_seconds" + excluded."wall_seconds",
      "max_rss_kb" = greatest(u."max_rss_kb", excluded."max_rss_kb"),
      "attempts" = u."attempts" + excluded."attempts", "requeued" = u."requeued" + excluded."requeued",
      "completed" = u."completed" + excluded."completed", "failed" = u."failed" + excluded."failed",
      "cancelled" = u."cancelled" + excluded."cancelled", "timeout" = u."timeout" + excluded."timeout",
      "node_fail" = u."node_fail" + excluded."node_fail", "out_of_memory" = u."out_of_memory" + excluded."out_of_memory",
      "starts" = u."starts" + excluded."starts", "wait_seconds" = u."wait_seconds" + excluded."wait_seconds"
  )
  INSERT INTO "usage_daily" AS u ("bucket", "account", "owner", "partition", "node", "cpu_seconds", "gpu_seconds",
    "mem_mb_seconds", "wall_seconds", "max_rss_kb", "attempts", "requeued", "completed", "failed", "cancelled",
    "timeout", "node_fail", "out_of_memory", "starts", "wait_seconds")
  SELECT date_trunc('day', bucket, 'UTC') AS day, acct, usr, part, nd, sum(cpu_s), sum(gpu_s), sum(mem_s), sum(wall_s),
         max(rss), sum(attempts), sum(requeued), sum(completed), sum(failed), sum(cancelled), sum(timeout),
         sum(node_fail), sum(oom), sum(starts), sum(wait_s)
  FROM hourly GROUP BY day, acct, usr, part, nd ORDER BY day, acct, usr, part, nd
  ON CONFLICT ("bucket", "account", "owner", "partition", "node") DO UPDATE SET
    "cpu_seconds" = u."cpu_seconds" + excluded."cpu_seconds", "gpu_seconds" = u."gpu_seconds" + excluded."gpu_seconds",
    "mem_mb_seconds" = u."mem_mb_seconds" + excluded."mem_mb_seconds",
    "wall_seconds" = u."wall_seconds" + excluded."wall_seconds",
    "max_rss_kb" = greatest(u."max_rss_kb", excluded."max_rss_kb"),
    "attempts" = u."attempts" + excluded."attempts", "requeued" = u."requeued" + excluded."requeued",
    "completed" = u."completed" + excluded."completed", "failed" = u."failed" + excluded."failed",
    "cancelled" = u."cancelled" + excluded."cancelled", "timeout" = u."timeout" + excluded."timeout",
    "node_fail" = u."node_fail" + excluded."node_fail", "out_of_memory" = u."out_of_memory" + excluded."out_of_memory",
    "starts" = u."starts" + excluded."starts", "wait_seconds" = u."wait_seconds" + excluded."wait_seconds";
  RETURN NULL;
END
$$;
--> statement-breakpoint
CREATE TRIGGER "job_attempts_usage" AFTER INSERT ON "job_attempts"
  REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION "usage_roll_up"();
--> statement-breakpoint
-- Attempts recorded before this migration: what their jobs asked for, then rolled up once like new ones.
UPDATE "job_attempts" a SET "cpus" = j."cpus", "memory_mb" = coalesce(j."memory_mb", 0), "gpus" = j."gpus",
  "partition" = CASE WHEN a."attempt" = j."attempt" THEN j."partition" END,
  "max_rss_kb" = CASE WHEN a."attempt" = j."attempt" THEN j."max_rss_kb" END,
  "eligible_time" = CASE WHEN a."attempt" = 1 THEN j."eligible_time" END
FROM "jobs" j WHERE j."id" = a."job_id";
--> statement-breakpoint
CREATE TEMPORARY TABLE "attempts_before_usage" AS SELECT * FROM "job_attempts";
--> statement-breakpoint
DELETE FROM "job_attempts";
--> statement-breakpoint
INSERT INTO "job_attempts" SELECT * FROM "attempts_before_usage";
--> statement-breakpoint
DROP TABLE "attempts_before_usage";
