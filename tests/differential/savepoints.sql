-- DDL inside savepoints, rolled back and kept.
CREATE TABLE t (a int, b int);
INSERT INTO t SELECT g, g FROM generate_series(1, 100) g;
BEGIN;
SAVEPOINT s1;
CREATE INDEX t_a ON t (a);
ROLLBACK TO SAVEPOINT s1;
SAVEPOINT s2;
CREATE INDEX t_b ON t (b);
RELEASE SAVEPOINT s2;
SAVEPOINT s3;
CREATE INDEX t_bad ON t (nope);
ROLLBACK TO s3;
ALTER TABLE t ADD COLUMN c int DEFAULT 3;
COMMIT;
SELECT indexname FROM pg_indexes WHERE tablename = 't' ORDER BY 1;
SELECT sum(c) FROM t;
