-- Rails with disable_ddl_transaction! and strong_migrations: lock/statement timeouts, add_index algorithm: :concurrently (a failed unique build leaves an INVALID index, the rerun fails on it, then remove_index and retry), add_foreign_key validate: false + validate_foreign_key, safe change_column_null via a NOT VALID check, add_column with a volatile default.
SET client_min_messages TO 'warning';
SELECT pg_try_advisory_lock(1553330703046473555);
CREATE TABLE "schema_migrations" ("version" character varying NOT NULL PRIMARY KEY);
CREATE TABLE "accounts" ("id" bigserial primary key, "email" character varying, "plan" character varying, "created_at" timestamp(6) NOT NULL, "updated_at" timestamp(6) NOT NULL);
CREATE TABLE "invoices" ("id" bigserial primary key, "account_id" bigint, "total_cents" integer, "created_at" timestamp(6) NOT NULL, "updated_at" timestamp(6) NOT NULL);
INSERT INTO "accounts" ("email", "plan", "created_at", "updated_at")
SELECT 'a' || g || '@example.com', CASE WHEN g % 7 = 0 THEN NULL ELSE 'basic' END, '2024-02-01 00:00:00', '2024-02-01 00:00:00' FROM generate_series(1, 100) g;
INSERT INTO "accounts" ("email", "plan", "created_at", "updated_at") VALUES ('a5@example.com', 'pro', '2024-02-01 00:00:00', '2024-02-01 00:00:00');
INSERT INTO "invoices" ("account_id", "total_cents", "created_at", "updated_at")
SELECT 1 + g % 100, g * 100, '2024-02-02 00:00:00', '2024-02-02 00:00:00' FROM generate_series(1, 200) g;
-- 20240201000001_add_index_to_accounts_email.rb (disable_ddl_transaction!, strong_migrations timeouts)
SET statement_timeout TO '1h';
SET lock_timeout TO '10s';
SHOW statement_timeout;
SHOW lock_timeout;
CREATE UNIQUE INDEX CONCURRENTLY "index_accounts_on_email" ON "accounts" ("email");
SELECT c.relname, i.indisvalid, i.indisready FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = 'accounts'::regclass ORDER BY 1;
-- rerun without cleanup: the invalid index is in the way
CREATE UNIQUE INDEX CONCURRENTLY "index_accounts_on_email" ON "accounts" ("email");
-- fix the data, remove_index algorithm: :concurrently, if_exists: true, then add it again
DELETE FROM "accounts" WHERE "id" = 101;
DROP INDEX CONCURRENTLY IF EXISTS "index_accounts_on_email";
CREATE UNIQUE INDEX CONCURRENTLY "index_accounts_on_email" ON "accounts" ("email");
CREATE INDEX CONCURRENTLY IF NOT EXISTS "index_accounts_on_email" ON "accounts" ("email");
CREATE INDEX CONCURRENTLY "index_invoices_on_account_id" ON "invoices" ("account_id");
CREATE INDEX CONCURRENTLY "index_invoices_on_created_at_and_total" ON "invoices" ("created_at" DESC, "total_cents") WHERE "total_cents" > 0;
RESET statement_timeout;
RESET lock_timeout;
INSERT INTO "schema_migrations" ("version") VALUES ('20240201000001') RETURNING "version";
-- 20240201000002_add_fk_to_invoices.rb: add_foreign_key validate: false, then validate_foreign_key in a second migration
BEGIN;
SET LOCAL lock_timeout TO '10s';
ALTER TABLE "invoices" ADD CONSTRAINT "fk_rails_4d3b5e9c1a" FOREIGN KEY ("account_id") REFERENCES "accounts" ("id") NOT VALID;
INSERT INTO "schema_migrations" ("version") VALUES ('20240201000002') RETURNING "version";
COMMIT;
SHOW lock_timeout;
BEGIN;
ALTER TABLE "invoices" VALIDATE CONSTRAINT "fk_rails_4d3b5e9c1a";
INSERT INTO "schema_migrations" ("version") VALUES ('20240201000003') RETURNING "version";
COMMIT;
-- 20240201000004: safe change_column_null :accounts, :plan, false (check NOT VALID, validate, SET NOT NULL, drop check); first try fails on NULLs
BEGIN;
ALTER TABLE "accounts" ADD CONSTRAINT "accounts_plan_null" CHECK ("plan" IS NOT NULL) NOT VALID;
COMMIT;
ALTER TABLE "accounts" VALIDATE CONSTRAINT "accounts_plan_null";
UPDATE "accounts" SET "plan" = 'basic' WHERE "plan" IS NULL;
BEGIN;
ALTER TABLE "accounts" VALIDATE CONSTRAINT "accounts_plan_null";
ALTER TABLE "accounts" ALTER COLUMN "plan" SET NOT NULL;
ALTER TABLE "accounts" DROP CONSTRAINT "accounts_plan_null";
INSERT INTO "schema_migrations" ("version") VALUES ('20240201000004') RETURNING "version";
COMMIT;
-- 20240201000005: add_column :accounts, :api_token, :uuid, default: -> { "gen_random_uuid()" }, null: false
BEGIN;
ALTER TABLE "accounts" ADD "api_token" uuid DEFAULT gen_random_uuid() NOT NULL;
CREATE UNIQUE INDEX "index_accounts_on_api_token" ON "accounts" ("api_token");
INSERT INTO "schema_migrations" ("version") VALUES ('20240201000005') RETURNING "version";
COMMIT;
-- add_check_constraint :invoices, "total_cents >= 0", name: "invoices_total_nonneg", validate: false; violated by a later row
ALTER TABLE "invoices" ADD CONSTRAINT "invoices_total_nonneg" CHECK (total_cents >= 0) NOT VALID;
INSERT INTO "invoices" ("account_id", "total_cents", "created_at", "updated_at") VALUES (1, -5, '2024-02-03 00:00:00', '2024-02-03 00:00:00');
SELECT pg_advisory_unlock(1553330703046473555);
SELECT "version" FROM "schema_migrations" ORDER BY 1;
SELECT count(*), count(DISTINCT "api_token"), count(*) FILTER (WHERE "plan" IS NULL) FROM "accounts";
SELECT conname, contype, convalidated FROM pg_constraint WHERE conrelid IN ('accounts'::regclass, 'invoices'::regclass) ORDER BY 1;
SELECT c.relname, i.indisvalid, i.indisunique FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid IN ('accounts'::regclass, 'invoices'::regclass) ORDER BY 1;
\d invoices
