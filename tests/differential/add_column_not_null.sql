-- NOT NULL without a default: fine on an empty table, Postgres' own error on rows.
CREATE TABLE users (id int);
ALTER TABLE users ADD COLUMN uid uuid NOT NULL;
INSERT INTO users VALUES (1, '00000000-0000-0000-0000-000000000001');
CREATE TABLE filled (id int);
INSERT INTO filled VALUES (1), (2);
ALTER TABLE filled ADD COLUMN tenant_id bigint NOT NULL;
ALTER TABLE filled ADD COLUMN tenant int NOT NULL DEFAULT 7;
SELECT * FROM filled ORDER BY id;
\d users
