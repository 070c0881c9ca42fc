-- Errors inside DDL, in and out of a transaction.
CREATE TABLE t (a int, b text);
INSERT INTO t SELECT g, g::text FROM generate_series(1, 100) g;
CREATE INDEX ON missing (a);
CREATE INDEX t_nocol ON t (nocol);
CREATE INDEX t_bad_expr ON t ((a + b));
CREATE UNIQUE INDEX t_dup ON t ((a % 2));
ALTER TABLE t ADD COLUMN a int;
ALTER TABLE t ADD CONSTRAINT c CHECK (nocol > 0);
BEGIN;
CREATE INDEX t_a ON t (a);
CREATE INDEX t_x ON t (x);
CREATE INDEX t_b ON t (b);
COMMIT;
SELECT indexname FROM pg_indexes WHERE tablename = 't' ORDER BY 1;
