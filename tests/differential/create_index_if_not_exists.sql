-- IF NOT EXISTS on an existing index, and a name taken by a table.
CREATE TABLE t (a int, b int);
INSERT INTO t SELECT g, g FROM generate_series(1, 100) g;
CREATE INDEX t_a ON t (a);
CREATE INDEX IF NOT EXISTS t_a ON t (a);
CREATE INDEX t_a ON t (b);
CREATE TABLE taken (x int);
CREATE INDEX taken ON t (b);
CREATE INDEX IF NOT EXISTS taken ON t (b);
CREATE INDEX CONCURRENTLY IF NOT EXISTS t_b ON t (b);
SELECT indexname FROM pg_indexes WHERE tablename = 't' ORDER BY 1;
