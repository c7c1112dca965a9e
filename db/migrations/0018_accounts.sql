CREATE TABLE "account_users" (
	"account" text NOT NULL,
	"user_name" text NOT NULL,
	"is_default" boolean DEFAULT false NOT NULL,
	"fairshare" integer DEFAULT 1 NOT NULL,
	"max_jobs" integer,
	"max_submit_jobs" integer,
	"grp_cpus" integer,
	"grp_gpus" integer,
	"max_wall_s" integer,
	"grp_cpu_mins" bigint,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "account_users_account_user_name_pk" PRIMARY KEY("account","user_name"),
	CONSTRAINT "account_users_values_valid" CHECK ("account_users"."fairshare" >= 0 AND "account_users"."max_jobs" >= 0 AND "account_users"."max_submit_jobs" >= 0 AND "account_users"."grp_cpus" >= 0
          AND "account_users"."grp_gpus" >= 0 AND "account_users"."max_wall_s" > 0 AND "account_users"."grp_cpu_mins" >= 0)
);
--> statement-breakpoint
CREATE TABLE "accounts" (
	"name" text PRIMARY KEY NOT NULL,
	"parent" text,
	"description" text DEFAULT '' NOT NULL,
	"fairshare" integer DEFAULT 1 NOT NULL,
	"max_jobs" integer,
	"max_submit_jobs" integer,
	"grp_cpus" integer,
	"grp_gpus" integer,
	"max_wall_s" integer,
	"grp_cpu_mins" bigint,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "accounts_values_valid" CHECK ("accounts"."parent" IS DISTINCT FROM "accounts"."name" AND "accounts"."fairshare" >= 0 AND "accounts"."max_jobs" >= 0 AND "accounts"."max_submit_jobs" >= 0
          AND "accounts"."grp_cpus" >= 0 AND "accounts"."grp_gpus" >= 0 AND "accounts"."max_wall_s" > 0 AND "accounts"."grp_cpu_mins" >= 0)
);
--> statement-breakpoint
ALTER TABLE "account_users" ADD CONSTRAINT "account_users_account_accounts_name_fk" FOREIGN KEY ("account") REFERENCES "public"."accounts"("name") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "accounts" ADD CONSTRAINT "accounts_parent_fkey" FOREIGN KEY ("parent") REFERENCES "public"."accounts"("name") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "account_users_user_idx" ON "account_users" USING btree ("user_name");--> statement-breakpoint
CREATE UNIQUE INDEX "account_users_one_default" ON "account_users" USING btree ("user_name") WHERE "account_users"."is_default";--> statement-breakpoint
CREATE INDEX "accounts_parent_idx" ON "accounts" USING btree ("parent");--> statement-breakpoint
CREATE INDEX "jobs_account_active_idx" ON "jobs" USING btree ("account","owner") WHERE "jobs"."state" IN ('PENDING', 'RUNNING') AND "jobs"."account" IS NOT NULL;