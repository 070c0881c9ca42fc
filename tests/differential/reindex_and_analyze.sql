-- Maintenance statements on a small table.
CREATE TABLE t (a int PRIMARY KEY, b int);
INSERT INTO t SELECT g, g FROM generate_series(1, 100) g;
CREATE INDEX t_b ON t (b);
REINDEX INDEX t_b;
REINDEX TABLE t;
REINDEX INDEX missing;
VACUUM t;
ANALYZE t;
VACUUM ANALYZE t;
ALTER TABLE t SET (fillfactor = 80);
SELECT count(*) FROM t;
