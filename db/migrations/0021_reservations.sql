CREATE TABLE "reservations" (
	"name" text PRIMARY KEY NOT NULL,
	"start_time" timestamp with time zone NOT NULL,
	"end_time" timestamp with time zone NOT NULL,
	"period_s" integer,
	"nodes" text[] NOT NULL,
	"partition" text,
	"users" text[] DEFAULT '{}'::text[] NOT NULL,
	"accounts" text[] DEFAULT '{}'::text[] NOT NULL,
	"flags" text[] DEFAULT '{}'::text[] NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "reservations_window_valid" CHECK ("reservations"."end_time" > "reservations"."start_time" AND ("reservations"."period_s" IS NULL OR "reservations"."end_time" - "reservations"."start_time" < make_interval(secs => "reservations"."period_s")))
);
--> statement-breakpoint
ALTER TABLE "jobs" ADD COLUMN "reservation" text;--> statement-breakpoint
ALTER TABLE "jobs" ADD COLUMN "planned_start_time" timestamp with time zone;--> statement-breakpoint
-- Whether a window of a reservation (its first [s, e), repeated every period_s seconds when set) overlaps
-- [a, b): the occurrence that is the first to end after a starts before b. The placing statement's check;
-- functions/domain/placement.ts windowOverlaps is the same rule for the planner.
CREATE FUNCTION reservation_overlaps(s timestamptz, e timestamptz, period_s integer, a timestamptz, b timestamptz)
RETURNS boolean LANGUAGE sql IMMUTABLE AS $$
  SELECT s + k * make_interval(secs => coalesce(period_s, 0)) < b
     AND e + k * make_interval(secs => coalesce(period_s, 0)) > a
  FROM (SELECT CASE WHEN period_s IS NULL OR a < e THEN 0
                    ELSE floor(extract(epoch FROM a - e) / period_s)::int + 1 END AS k) x
$$;
