-- Alembic/SQLAlchemy `alembic upgrade head` then `downgrade`: dialect probes, alembic_version, all revisions in one transaction (create_table, create_index, create_foreign_key, alter_column nullable/server_default/widen), autocommit_block with postgresql_concurrently, a failing revision rolled back, batch_alter_table recreate="always" (copy, drop, rename).
SHOW standard_conforming_strings;
SHOW transaction isolation level;
SELECT current_schema();
BEGIN;
SELECT pg_catalog.pg_class.relname FROM pg_catalog.pg_class JOIN pg_catalog.pg_namespace ON pg_catalog.pg_namespace.oid = pg_catalog.pg_class.relnamespace WHERE pg_catalog.pg_class.relname = 'alembic_version' AND pg_catalog.pg_class.relkind = ANY (ARRAY['r', 'p', 'f', 'v', 'm']) AND pg_catalog.pg_table_is_visible(pg_catalog.pg_class.oid) AND pg_catalog.pg_namespace.nspname != 'pg_catalog';
CREATE TABLE alembic_version (
    version_num VARCHAR(32) NOT NULL,
    CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)
);
-- Running upgrade  -> 1975ea83b712, create account table
CREATE TABLE account (
    id SERIAL NOT NULL,
    name VARCHAR(50) NOT NULL,
    email VARCHAR(120),
    description VARCHAR(200),
    PRIMARY KEY (id)
);
CREATE INDEX ix_account_name ON account (name);
INSERT INTO alembic_version (version_num) VALUES ('1975ea83b712') RETURNING alembic_version.version_num;
-- Running upgrade 1975ea83b712 -> ae1027a6acf, add orders
CREATE TABLE "order" (
    id SERIAL NOT NULL,
    account_id INTEGER NOT NULL,
    amount NUMERIC(10, 2) NOT NULL,
    status VARCHAR(20),
    PRIMARY KEY (id)
);
ALTER TABLE "order" ADD CONSTRAINT fk_order_account_id_account FOREIGN KEY(account_id) REFERENCES account (id) ON DELETE CASCADE;
CREATE INDEX ix_order_account_id ON "order" (account_id);
UPDATE alembic_version SET version_num='ae1027a6acf' WHERE alembic_version.version_num = '1975ea83b712';
COMMIT;
INSERT INTO account (name, email) SELECT 'acct' || g, CASE WHEN g % 9 = 0 THEN NULL ELSE 'acct' || g || '@example.org' END FROM generate_series(1, 60) g;
INSERT INTO "order" (account_id, amount, status) SELECT 1 + g % 60, g * 1.25, NULL FROM generate_series(1, 150) g;
-- Running upgrade ae1027a6acf -> 27c6a30d7c24, tighten columns
BEGIN;
SET LOCAL lock_timeout = '5s';
UPDATE account SET email='unknown-' || id || '@example.org' WHERE email IS NULL;
ALTER TABLE account ALTER COLUMN email SET NOT NULL;
ALTER TABLE account ALTER COLUMN description TYPE VARCHAR(500);
ALTER TABLE "order" ALTER COLUMN status SET DEFAULT 'new';
UPDATE "order" SET status='new' WHERE status IS NULL;
ALTER TABLE "order" ALTER COLUMN status SET NOT NULL;
ALTER TABLE account ADD COLUMN is_active BOOLEAN DEFAULT true NOT NULL;
ALTER TABLE account ADD CONSTRAINT uq_account_email UNIQUE (email);
UPDATE alembic_version SET version_num='27c6a30d7c24' WHERE alembic_version.version_num = 'ae1027a6acf';
COMMIT;
-- Running upgrade 27c6a30d7c24 -> 3b8e1f0a9d11 (fails: duplicate names); the whole transaction rolls back
BEGIN;
ALTER TABLE account ADD COLUMN slug VARCHAR(60);
UPDATE account SET slug=lower(name);
CREATE UNIQUE INDEX ix_account_slug ON account (slug);
ALTER TABLE account ADD CONSTRAINT uq_account_name UNIQUE (description);
INSERT INTO account (name, email, description) VALUES ('acct1', 'dup@example.org', NULL);
ALTER TABLE account ADD CONSTRAINT uq_account_name2 UNIQUE (name);
UPDATE alembic_version SET version_num='3b8e1f0a9d11' WHERE alembic_version.version_num = '27c6a30d7c24';
COMMIT;
SELECT version_num FROM alembic_version ORDER BY 1;
-- Running upgrade 27c6a30d7c24 -> 4c1d2e3f4a5b, concurrent index inside op.get_context().autocommit_block()
BEGIN;
ALTER TABLE "order" ADD COLUMN placed_on DATE;
UPDATE "order" SET placed_on = DATE '2024-03-01' + (id % 30);
COMMIT;
CREATE INDEX CONCURRENTLY ix_order_placed_on ON "order" (placed_on);
BEGIN;
CREATE INDEX CONCURRENTLY ix_order_status ON "order" (status);
ROLLBACK;
BEGIN;
CREATE INDEX ix_order_status ON "order" (status) WHERE status != 'new';
UPDATE alembic_version SET version_num='4c1d2e3f4a5b' WHERE alembic_version.version_num = '27c6a30d7c24';
COMMIT;
-- Running upgrade 4c1d2e3f4a5b -> 5d6e7f8a9b0c, batch_alter_table("account", recreate="always")
BEGIN;
CREATE TABLE _alembic_tmp_account (
    id SERIAL NOT NULL,
    name VARCHAR(50) NOT NULL,
    email VARCHAR(120) NOT NULL,
    description VARCHAR(500),
    is_active BOOLEAN DEFAULT true NOT NULL,
    nickname VARCHAR(30),
    PRIMARY KEY (id),
    CONSTRAINT uq_account_email_v2 UNIQUE (email)
);
INSERT INTO _alembic_tmp_account (id, name, email, description, is_active) SELECT account.id, account.name, account.email, account.description, account.is_active FROM account;
ALTER TABLE "order" DROP CONSTRAINT fk_order_account_id_account;
DROP TABLE account;
ALTER TABLE _alembic_tmp_account RENAME TO account;
ALTER SEQUENCE _alembic_tmp_account_id_seq RENAME TO account_id_seq2;
SELECT setval('account_id_seq2', (SELECT max(id) FROM account));
CREATE INDEX ix_account_name ON account (name);
ALTER TABLE "order" ADD CONSTRAINT fk_order_account_id_account FOREIGN KEY(account_id) REFERENCES account (id) ON DELETE CASCADE;
UPDATE alembic_version SET version_num='5d6e7f8a9b0c' WHERE alembic_version.version_num = '4c1d2e3f4a5b';
COMMIT;
-- re-running the first revision by hand (object exists)
CREATE INDEX ix_account_name ON account (name);
-- Running downgrade 5d6e7f8a9b0c -> 4c1d2e3f4a5b -> 27c6a30d7c24
BEGIN;
ALTER TABLE account DROP COLUMN nickname;
UPDATE alembic_version SET version_num='4c1d2e3f4a5b' WHERE alembic_version.version_num = '5d6e7f8a9b0c';
DROP INDEX ix_order_status;
ALTER TABLE "order" DROP COLUMN placed_on;
UPDATE alembic_version SET version_num='27c6a30d7c24' WHERE alembic_version.version_num = '4c1d2e3f4a5b';
COMMIT;
SELECT version_num FROM alembic_version ORDER BY 1;
SELECT count(*), count(DISTINCT email), bool_and(is_active) FROM account;
SELECT status, count(*), sum(amount) FROM "order" GROUP BY status ORDER BY 1;
SELECT conrelid::regclass, conname, contype, convalidated, confdeltype FROM pg_constraint WHERE connamespace = 'public'::regnamespace ORDER BY conrelid::regclass::text, conname;
SELECT tablename, indexname FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1, 2;
