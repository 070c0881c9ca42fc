-- Unnamed UNIQUE and PRIMARY KEY constraints: the index and the constraint get
-- Postgres' names, numbered when the name is taken.
CREATE TABLE t (a int, b int, c int NOT NULL);
INSERT INTO t SELECT g, g, g FROM generate_series(1, 100) g;
ALTER TABLE t ADD UNIQUE (a);
ALTER TABLE t ADD UNIQUE (a);
ALTER TABLE t ADD UNIQUE (b) INCLUDE (c);
CREATE SEQUENCE t_pkey;
ALTER TABLE t ADD PRIMARY KEY (c);
SELECT conname, contype FROM pg_constraint WHERE conrelid = 't'::regclass ORDER BY 1;
