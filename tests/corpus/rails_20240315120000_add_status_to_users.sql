-- ActiveRecord::Migration[7.1] AddStatusToUsers, as logged by `rails db:migrate`
BEGIN;
ALTER TABLE "users" ADD "status" character varying DEFAULT 'active' NOT NULL;
CREATE INDEX "index_users_on_status" ON "users" ("status");
ALTER TABLE "users" ADD "public_id" uuid DEFAULT gen_random_uuid() NOT NULL;
ALTER TABLE "orders" ADD CONSTRAINT "fk_rails_f868b47f6a" FOREIGN KEY ("user_id")
  REFERENCES "users" ("id")
;
ALTER TABLE "orders" ALTER COLUMN "total_cents" TYPE bigint;
ALTER TABLE "users" RENAME COLUMN "name" TO "full_name";
INSERT INTO "schema_migrations" ("version") VALUES ('20240315120000') RETURNING "version";
COMMIT;
