-- Unnamed indexes whose natural name is taken, by an index or another relation.
CREATE TABLE t (a int, b int);
INSERT INTO t SELECT g, g FROM generate_series(1, 100) g;
CREATE INDEX ON t (a);
CREATE INDEX ON t (a);
CREATE INDEX ON t (a);
CREATE TABLE t_b_idx (x int);
CREATE SEQUENCE t_b_idx1;
CREATE INDEX ON t (b);
CREATE UNIQUE INDEX ON t (b);
CREATE UNIQUE INDEX ON t (b);
SELECT indexname FROM pg_indexes WHERE tablename = 't' ORDER BY 1;
