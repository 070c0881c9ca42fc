-- SET NOT NULL on a column with a NULL: Postgres' own error.
CREATE TABLE t (a int, b int);
INSERT INTO t SELECT g, CASE WHEN g = 50 THEN NULL ELSE g END FROM generate_series(1, 100) g;
ALTER TABLE t ALTER COLUMN b SET NOT NULL;
ALTER TABLE t ALTER COLUMN a SET NOT NULL;
ALTER TABLE t ALTER COLUMN nope SET NOT NULL;
SELECT conname FROM pg_constraint WHERE conrelid = 't'::regclass;
\d t
