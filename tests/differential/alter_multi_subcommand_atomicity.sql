-- An ALTER TABLE with several subcommands is one statement: when a later
-- subcommand fails (a CHECK or FOREIGN KEY violated by existing rows, NULLs
-- under SET NOT NULL) nothing of the earlier ones stays: no dropped column, no
-- new default, no key, no added column.
CREATE TABLE parents (id int PRIMARY KEY);
INSERT INTO parents SELECT generate_series(1, 10);
-- (id is NOT NULL already: a PRIMARY KEY taken back through pgshift leaves the
-- NOT NULL its USING INDEX set.)
CREATE TABLE t (id int NOT NULL, a int, legacy text, status text);
INSERT INTO t SELECT g, g, 'old' || g, CASE WHEN g % 10 = 0 THEN NULL ELSE 'new' END FROM generate_series(1, 100) g;
ALTER TABLE t DROP COLUMN legacy, ADD CONSTRAINT t_a_small CHECK (a < 50);
ALTER TABLE t ALTER COLUMN status SET DEFAULT 'draft', ADD CONSTRAINT t_status_ok CHECK (status IN ('draft', 'published'));
ALTER TABLE t ADD PRIMARY KEY (id), ADD CONSTRAINT t_a_parent FOREIGN KEY (a) REFERENCES parents (id);
ALTER TABLE t ADD UNIQUE (a), ALTER COLUMN status SET NOT NULL;
ALTER TABLE t ADD COLUMN note text DEFAULT 'n', ADD COLUMN rank int DEFAULT 0 CHECK (rank > 0);
ALTER TABLE t ALTER COLUMN a SET NOT NULL, ADD CONSTRAINT t_a_pos CHECK (a > 100);
SELECT count(*), count(legacy), count(status) FROM t;
\d t
SELECT count(*), count(status), count(a), sum(a) FROM t;
SELECT conname, convalidated FROM pg_constraint WHERE conrelid = 't'::regclass ORDER BY 1;
SELECT indexname FROM pg_indexes WHERE tablename = 't' ORDER BY 1;
\d t
