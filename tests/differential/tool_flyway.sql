-- Flyway `migrate`: flyway_schema_history created with its PK and index in a transaction, pg_try_advisory_xact_lock held per migration transaction, V1__/V2__ scripts of several statements each in one transaction with the history row, a non-transactional V3__ (CREATE INDEX CONCURRENTLY, one statement at a time), a failing V4__ rolled back with nothing recorded, then a repaired V4__ and a repeatable R__ view.
SET search_path = "public";
SELECT COUNT(*) FROM pg_namespace WHERE nspname='public';
SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relname = 'flyway_schema_history' AND c.relkind = 'r');
BEGIN;
SELECT pg_try_advisory_xact_lock(77431708279161);
CREATE TABLE "public"."flyway_schema_history" (
    "installed_rank" INT NOT NULL,
    "version" VARCHAR(50),
    "description" VARCHAR(200) NOT NULL,
    "type" VARCHAR(20) NOT NULL,
    "script" VARCHAR(1000) NOT NULL,
    "checksum" INTEGER,
    "installed_by" VARCHAR(100) NOT NULL,
    "installed_on" TIMESTAMP NOT NULL DEFAULT now(),
    "execution_time" INTEGER NOT NULL,
    "success" BOOLEAN NOT NULL
);
ALTER TABLE "public"."flyway_schema_history" ADD CONSTRAINT "flyway_schema_history_pk" PRIMARY KEY ("installed_rank");
CREATE INDEX "flyway_schema_history_s_idx" ON "public"."flyway_schema_history" ("success");
COMMIT;
SELECT "installed_rank","version","description","type","script","checksum","installed_on","installed_by","execution_time","success" FROM "public"."flyway_schema_history" WHERE "installed_rank" > -1 ORDER BY "installed_rank";
-- V1__create_customers.sql
BEGIN;
SELECT pg_try_advisory_xact_lock(77431708279161);
CREATE TABLE customer (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email TEXT NOT NULL,
    country CHAR(2) NOT NULL DEFAULT 'US',
    created_on DATE NOT NULL DEFAULT CURRENT_DATE
);
CREATE UNIQUE INDEX customer_email_uidx ON customer (lower(email));
CREATE TABLE purchase (
    id BIGINT GENERATED ALWAYS AS IDENTITY,
    customer_id BIGINT NOT NULL,
    sku TEXT NOT NULL,
    qty INT NOT NULL CHECK (qty > 0)
);
ALTER TABLE purchase ADD PRIMARY KEY (id);
ALTER TABLE purchase ADD CONSTRAINT purchase_customer_fk FOREIGN KEY (customer_id) REFERENCES customer (id);
INSERT INTO "public"."flyway_schema_history" ("installed_rank", "version", "description", "type", "script", "checksum", "installed_by", "execution_time", "success") VALUES (1, '1', 'create customers', 'SQL', 'V1__create_customers.sql', 1427693412, 'flyway', 12, true);
COMMIT;
INSERT INTO customer (email, country, created_on) SELECT 'C' || g || '@Example.com', CASE WHEN g % 3 = 0 THEN 'DE' ELSE 'US' END, DATE '2024-04-01' FROM generate_series(1, 80) g;
INSERT INTO purchase (customer_id, sku, qty) SELECT 1 + g % 80, 'sku-' || (g % 7), 1 + g % 4 FROM generate_series(1, 160) g;
-- V2__add_columns.sql
BEGIN;
SELECT pg_try_advisory_xact_lock(77431708279161);
ALTER TABLE customer ADD COLUMN status TEXT NOT NULL DEFAULT 'active';
ALTER TABLE customer ADD COLUMN phone TEXT;
ALTER TABLE customer ADD CONSTRAINT customer_status_chk CHECK (status IN ('active', 'closed'));
ALTER TABLE purchase ADD COLUMN unit_price NUMERIC(12,2);
UPDATE purchase SET unit_price = 9.99;
ALTER TABLE purchase ALTER COLUMN unit_price SET NOT NULL;
CREATE INDEX purchase_customer_idx ON purchase (customer_id);
COMMENT ON COLUMN customer.status IS 'lifecycle state';
INSERT INTO "public"."flyway_schema_history" ("installed_rank", "version", "description", "type", "script", "checksum", "installed_by", "execution_time", "success") VALUES (2, '2', 'add columns', 'SQL', 'V2__add_columns.sql', -918273645, 'flyway', 9, true);
COMMIT;
-- V3__concurrent_indexes.sql (executeInTransaction=false: statements sent one by one in autocommit)
SELECT pg_try_advisory_lock(77431708279161);
SET lock_timeout = '3s';
CREATE INDEX CONCURRENTLY purchase_sku_idx ON purchase (sku);
CREATE UNIQUE INDEX CONCURRENTLY customer_phone_uidx ON customer (phone) WHERE phone IS NOT NULL;
RESET lock_timeout;
INSERT INTO "public"."flyway_schema_history" ("installed_rank", "version", "description", "type", "script", "checksum", "installed_by", "execution_time", "success") VALUES (3, '3', 'concurrent indexes', 'SQL', 'V3__concurrent_indexes.sql', 55512345, 'flyway', 20, true);
SELECT pg_advisory_unlock(77431708279161);
-- V4__country_fk.sql (fails: a country code not in the new table)
BEGIN;
SELECT pg_try_advisory_xact_lock(77431708279161);
CREATE TABLE country (code CHAR(2) PRIMARY KEY, name TEXT NOT NULL);
INSERT INTO country VALUES ('US', 'United States');
ALTER TABLE customer ADD CONSTRAINT customer_country_fk FOREIGN KEY (country) REFERENCES country (code);
INSERT INTO "public"."flyway_schema_history" ("installed_rank", "version", "description", "type", "script", "checksum", "installed_by", "execution_time", "success") VALUES (4, '4', 'country fk', 'SQL', 'V4__country_fk.sql', 777, 'flyway', 5, true);
ROLLBACK;
SELECT "installed_rank", "version", "success" FROM "public"."flyway_schema_history" ORDER BY "installed_rank";
-- V4__country_fk.sql, fixed
BEGIN;
SELECT pg_try_advisory_xact_lock(77431708279161);
CREATE TABLE country (code CHAR(2) PRIMARY KEY, name TEXT NOT NULL);
INSERT INTO country VALUES ('US', 'United States'), ('DE', 'Germany');
ALTER TABLE customer ADD CONSTRAINT customer_country_fk FOREIGN KEY (country) REFERENCES country (code);
ALTER TABLE customer ALTER COLUMN country DROP DEFAULT;
INSERT INTO "public"."flyway_schema_history" ("installed_rank", "version", "description", "type", "script", "checksum", "installed_by", "execution_time", "success") VALUES (4, '4', 'country fk', 'SQL', 'V4__country_fk.sql', 778, 'flyway', 5, true);
COMMIT;
-- R__customer_view.sql (repeatable)
BEGIN;
SELECT pg_try_advisory_xact_lock(77431708279161);
CREATE OR REPLACE VIEW customer_totals AS SELECT c.id, c.email, sum(p.qty * p.unit_price) AS total FROM customer c LEFT JOIN purchase p ON p.customer_id = c.id GROUP BY c.id, c.email;
INSERT INTO "public"."flyway_schema_history" ("installed_rank", "version", "description", "type", "script", "checksum", "installed_by", "execution_time", "success") VALUES (5, NULL, 'customer view', 'SQL', 'R__customer_view.sql', 4242, 'flyway', 3, true);
COMMIT;
-- baseline again on an existing history (fails: duplicate key), and V1 re-run by hand (objects exist)
INSERT INTO "public"."flyway_schema_history" ("installed_rank", "version", "description", "type", "script", "checksum", "installed_by", "execution_time", "success") VALUES (1, '1', '<< Flyway Baseline >>', 'BASELINE', '<< Flyway Baseline >>', NULL, 'flyway', 0, true);
CREATE TABLE customer (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, email TEXT NOT NULL);
CREATE UNIQUE INDEX customer_email_uidx ON customer (lower(email));
SELECT "installed_rank", "version", "description", "type", "script", "checksum", "installed_by", "execution_time", "success" FROM "public"."flyway_schema_history" ORDER BY "installed_rank";
SELECT country, status, count(*) FROM customer GROUP BY 1, 2 ORDER BY 1, 2;
SELECT id, email, total FROM customer_totals ORDER BY id LIMIT 5;
SELECT conrelid::regclass::text, conname, contype, convalidated FROM pg_constraint WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2;
SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1, 2;
