-- golang-migrate (session advisory lock, schema_migrations version/dirty, each .up.sql sent as one multi-statement query, a failing file leaves the version dirty, `force` then re-run, CONCURRENTLY inside a multi-statement file fails) and sqitch (sqitch.changes registry, lock, deploy/revert scripts with their own BEGIN/COMMIT).
SELECT pg_advisory_lock(1836391034);
CREATE TABLE IF NOT EXISTS "public"."schema_migrations" (version bigint not null primary key, dirty boolean not null);
SELECT version, dirty FROM "public"."schema_migrations" LIMIT 1;
-- 000001_create_items.up.sql
BEGIN;
TRUNCATE "public"."schema_migrations";
INSERT INTO "public"."schema_migrations" (version, dirty) VALUES (1, true);
COMMIT;
CREATE TABLE IF NOT EXISTS items (
  id serial PRIMARY KEY,
  sku varchar(32) NOT NULL,
  qty int NOT NULL DEFAULT 0
) \;
CREATE UNIQUE INDEX IF NOT EXISTS items_sku_key ON items (sku) \;
CREATE TABLE IF NOT EXISTS item_tags (item_id int NOT NULL REFERENCES items (id) ON DELETE CASCADE, tag text NOT NULL, PRIMARY KEY (item_id, tag));
BEGIN;
TRUNCATE "public"."schema_migrations";
INSERT INTO "public"."schema_migrations" (version, dirty) VALUES (1, false);
COMMIT;
INSERT INTO items (sku, qty) SELECT 'SKU-' || lpad(g::text, 4, '0'), g % 13 FROM generate_series(1, 150) g;
INSERT INTO item_tags SELECT g, CASE WHEN g % 2 = 0 THEN 'even' ELSE 'odd' END FROM generate_series(1, 150) g;
-- 000002_add_price.up.sql (fails halfway: the single query is one implicit transaction)
BEGIN;
TRUNCATE "public"."schema_migrations";
INSERT INTO "public"."schema_migrations" (version, dirty) VALUES (2, true);
COMMIT;
ALTER TABLE items ADD COLUMN price_cents int \;
UPDATE items SET price_cents = qty * 100 \;
ALTER TABLE items ALTER COLUMN price_cents SET NOT NULL \;
ALTER TABLE items ADD CONSTRAINT items_price_positive CHECK (price_cents > 0) \;
CREATE INDEX items_price_idx ON items (price_cents);
SELECT version, dirty FROM "public"."schema_migrations" LIMIT 1;
SELECT count(*) FROM information_schema.columns WHERE table_name = 'items' AND column_name = 'price_cents';
-- migrate force 1, fix the file, migrate up again
BEGIN;
TRUNCATE "public"."schema_migrations";
INSERT INTO "public"."schema_migrations" (version, dirty) VALUES (1, false);
COMMIT;
BEGIN;
TRUNCATE "public"."schema_migrations";
INSERT INTO "public"."schema_migrations" (version, dirty) VALUES (2, true);
COMMIT;
ALTER TABLE items ADD COLUMN price_cents int \;
UPDATE items SET price_cents = qty * 100 + 1 \;
ALTER TABLE items ALTER COLUMN price_cents SET NOT NULL \;
ALTER TABLE items ADD CONSTRAINT items_price_positive CHECK (price_cents > 0) \;
CREATE INDEX items_price_idx ON items (price_cents);
BEGIN;
TRUNCATE "public"."schema_migrations";
INSERT INTO "public"."schema_migrations" (version, dirty) VALUES (2, false);
COMMIT;
-- 000003_concurrent.up.sql written as one file with two statements: CONCURRENTLY refuses the implicit transaction
BEGIN;
TRUNCATE "public"."schema_migrations";
INSERT INTO "public"."schema_migrations" (version, dirty) VALUES (3, true);
COMMIT;
SET lock_timeout = '2s' \;
CREATE INDEX CONCURRENTLY IF NOT EXISTS items_qty_idx ON items (qty);
-- split into one statement per file
CREATE INDEX CONCURRENTLY IF NOT EXISTS items_qty_idx ON items (qty);
CREATE INDEX CONCURRENTLY IF NOT EXISTS items_qty_idx ON items (qty);
BEGIN;
TRUNCATE "public"."schema_migrations";
INSERT INTO "public"."schema_migrations" (version, dirty) VALUES (3, false);
COMMIT;
SELECT pg_advisory_unlock(1836391034);
SELECT version, dirty FROM "public"."schema_migrations" LIMIT 1;
-- sqitch deploy
CREATE SCHEMA IF NOT EXISTS sqitch;
CREATE TABLE sqitch.projects (project TEXT PRIMARY KEY, uri TEXT NULL UNIQUE, created_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(), creator_name TEXT NOT NULL, creator_email TEXT NOT NULL);
CREATE TABLE sqitch.changes (change_id TEXT PRIMARY KEY, script_hash TEXT NULL, change TEXT NOT NULL, project TEXT NOT NULL REFERENCES sqitch.projects(project) ON UPDATE CASCADE, note TEXT NOT NULL DEFAULT '', committed_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(), committer_name TEXT NOT NULL, committer_email TEXT NOT NULL, planned_at TIMESTAMPTZ NOT NULL, planner_name TEXT NOT NULL, planner_email TEXT NOT NULL, UNIQUE(project, script_hash));
CREATE TABLE sqitch.events (event TEXT NOT NULL CHECK (event IN ('deploy', 'revert', 'fail', 'merge')), change_id TEXT NOT NULL, change TEXT NOT NULL, project TEXT NOT NULL REFERENCES sqitch.projects(project) ON UPDATE CASCADE, committed_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(), PRIMARY KEY (change_id, committed_at));
INSERT INTO sqitch.projects (project, uri, creator_name, creator_email) VALUES ('inventory', 'https://example.com/inventory', 'Dev', 'dev@example.com');
SELECT pg_try_advisory_lock(75474063);
-- deploy/warehouses.sql
BEGIN;
CREATE TABLE warehouses (code text PRIMARY KEY, city text NOT NULL);
ALTER TABLE items ADD COLUMN warehouse text;
UPDATE items SET warehouse = 'W1';
INSERT INTO warehouses VALUES ('W1', 'Oslo');
ALTER TABLE items ADD CONSTRAINT items_warehouse_fkey FOREIGN KEY (warehouse) REFERENCES warehouses (code);
CREATE INDEX items_warehouse_idx ON items (warehouse);
COMMIT;
INSERT INTO sqitch.changes (change_id, script_hash, change, project, committer_name, committer_email, planned_at, planner_name, planner_email) VALUES ('a1b2c3', 'h1', 'warehouses', 'inventory', 'Dev', 'dev@example.com', '2024-06-01 00:00:00+00', 'Dev', 'dev@example.com');
INSERT INTO sqitch.events (event, change_id, change, project, committed_at) VALUES ('deploy', 'a1b2c3', 'warehouses', 'inventory', '2024-06-01 00:00:01+00');
-- verify/warehouses.sql
SELECT code, city FROM warehouses WHERE FALSE;
SELECT 1/COUNT(*) FROM pg_indexes WHERE indexname = 'items_warehouse_idx';
-- deploy/stock_levels.sql (fails; sqitch logs a fail event)
BEGIN;
ALTER TABLE items ADD COLUMN level text NOT NULL CHECK (level IN ('low', 'high'));
COMMIT;
INSERT INTO sqitch.events (event, change_id, change, project, committed_at) VALUES ('fail', 'd4e5f6', 'stock_levels', 'inventory', '2024-06-01 00:00:02+00');
-- revert/warehouses.sql
BEGIN;
DROP INDEX items_warehouse_idx;
ALTER TABLE items DROP CONSTRAINT items_warehouse_fkey;
ALTER TABLE items DROP COLUMN warehouse;
DROP TABLE warehouses;
COMMIT;
DELETE FROM sqitch.changes WHERE change_id = 'a1b2c3';
INSERT INTO sqitch.events (event, change_id, change, project, committed_at) VALUES ('revert', 'a1b2c3', 'warehouses', 'inventory', '2024-06-01 00:00:03+00');
SELECT pg_advisory_unlock(75474063);
SELECT event, change_id, change FROM sqitch.events ORDER BY committed_at;
SELECT count(*), sum(price_cents), min(sku) FROM items;
SELECT conrelid::regclass::text, conname, contype, convalidated FROM pg_constraint WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2;
SELECT schemaname, tablename, indexname FROM pg_indexes WHERE schemaname IN ('public', 'sqitch') ORDER BY 1, 2, 3;
