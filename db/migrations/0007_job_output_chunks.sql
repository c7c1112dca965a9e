-- Job output as append-only chunks (one row per upload) instead of one value rewritten on every upload, which
-- wrote the whole kept 1 MiB to the WAL each time. job_output keeps one row per stream: its attempt and its
-- total byte count. What a stream shows is the concatenation of its chunks (in seq order), cut to the last
-- 1 MiB of characters; whole chunks that lie before that are deleted as newer ones arrive.
CREATE SEQUENCE "job_output_chunks_seq";
--> statement-breakpoint
CREATE TABLE "job_output_chunks" (
	"job_id" bigint NOT NULL,
	"stream" text NOT NULL,
	"attempt" integer NOT NULL,
	"seq" bigint DEFAULT nextval('job_output_chunks_seq') NOT NULL,
	"chars" integer NOT NULL,
	"size" integer NOT NULL,
	"data" text NOT NULL,
	CONSTRAINT "job_output_chunks_pk" PRIMARY KEY("job_id","stream","attempt","seq")
);
--> statement-breakpoint
ALTER SEQUENCE "job_output_chunks_seq" OWNED BY "job_output_chunks"."seq";
--> statement-breakpoint
ALTER TABLE "job_output_chunks" ADD CONSTRAINT "job_output_chunks_stream_fk" FOREIGN KEY ("job_id","stream") REFERENCES "public"."job_output"("job_id","stream") ON DELETE cascade ON UPDATE no action;
--> statement-breakpoint
INSERT INTO "job_output_chunks" ("job_id", "stream", "attempt", "chars", "size", "data")
SELECT "job_id", "stream", "attempt", char_length("content"), octet_length("content"), "content"
FROM "job_output" WHERE "content" <> '' ORDER BY "job_id", "stream";
--> statement-breakpoint
ALTER TABLE "job_output" DROP COLUMN "content";
