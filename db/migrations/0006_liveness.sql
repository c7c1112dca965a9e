-- An operator's drain, kept apart from liveness: a restart (unregister, register) or a reap no longer loses it.
-- Set by drain, cleared only by undrain; a drained worker that is up shows the status 'draining'.
ALTER TABLE "workers" ADD COLUMN "drained" boolean DEFAULT false NOT NULL;--> statement-breakpoint
-- Workers an operator drained (their last drain/undrain in the audit log is a drain) stay drained.
UPDATE "workers" SET "drained" = true
WHERE "status" <> 'ready' AND (
  SELECT "action" FROM "audit_log"
  WHERE "target" = 'worker:' || "workers"."id" AND "action" IN ('worker.drain', 'worker.undrain')
  ORDER BY "id" DESC LIMIT 1
) = 'worker.drain';--> statement-breakpoint
ALTER TABLE "workers" ADD CONSTRAINT "workers_drained_not_ready" CHECK (NOT ("workers"."drained" AND "workers"."status" = 'ready'));--> statement-breakpoint
-- How many times the job went back to the queue because its node was lost (capped by max requeues).
ALTER TABLE "jobs" ADD COLUMN "requeues" integer DEFAULT 0 NOT NULL;--> statement-breakpoint
-- Identifies this database's allocation history: the cache resets when a snapshot comes from another one.
ALTER TABLE "cluster_state" ADD COLUMN "allocation_epoch" text DEFAULT gen_random_uuid()::text NOT NULL;
