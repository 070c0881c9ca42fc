-- ADD PRIMARY KEY / UNIQUE that fail: Postgres' own messages for a missing key
-- column and for relations that take no constraints (views,
-- materialized views, sequences), and nothing left behind: after a PRIMARY KEY
-- refused for NULLs or a second PRIMARY KEY, no index remains, so a retry gets
-- the plain t_pkey name. SET NOT NULL on non-tables and system columns too.
-- A key column named twice: Postgres' error, with its position, before any build.
CREATE TABLE t (a int, b int, j json);
INSERT INTO t SELECT g, CASE WHEN g = 40 THEN NULL ELSE g END, '{}' FROM generate_series(1, 100) g;
CREATE VIEW v AS SELECT a, b FROM t;
CREATE MATERIALIZED VIEW mv AS SELECT a, b FROM t;
CREATE SEQUENCE s;
ALTER TABLE t ADD UNIQUE (nope);
ALTER TABLE t ADD PRIMARY KEY (a, nope);
ALTER TABLE t ADD UNIQUE (a, a);
ALTER TABLE t ADD CONSTRAINT t_twice PRIMARY KEY (b, a, b);
ALTER TABLE t ADD CONSTRAINT t_inc UNIQUE (a) INCLUDE (nope);
ALTER TABLE t ADD UNIQUE (j);
ALTER TABLE t ADD UNIQUE (ctid);
ALTER TABLE t ADD PRIMARY KEY (b);
SELECT indexname FROM pg_indexes WHERE tablename = 't' ORDER BY 1;
UPDATE t SET b = 1000 WHERE b IS NULL;
ALTER TABLE t ADD PRIMARY KEY (b);
ALTER TABLE t ADD PRIMARY KEY (a);
ALTER TABLE t ADD CONSTRAINT t_a_pk PRIMARY KEY (a);
ALTER TABLE v ADD UNIQUE (a);
ALTER TABLE mv ADD UNIQUE (a);
ALTER TABLE mv ADD PRIMARY KEY (a);
ALTER TABLE v ALTER COLUMN a SET NOT NULL;
ALTER TABLE mv ALTER COLUMN a SET NOT NULL;
ALTER TABLE s ALTER COLUMN last_value SET NOT NULL;
ALTER TABLE t ALTER COLUMN ctid SET NOT NULL;
SELECT conname, contype FROM pg_constraint WHERE conrelid = 't'::regclass ORDER BY 1;
SELECT tablename, indexname FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1, 2;
\d t
