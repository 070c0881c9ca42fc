-- CLUSTER and VACUUM FULL on a 10-row table take a moment directly.
CREATE TABLE small (id int PRIMARY KEY, v text);
INSERT INTO small SELECT g, repeat('x', g) FROM generate_series(1, 10) g;
CLUSTER small USING small_pkey;
CLUSTER small;
VACUUM FULL small;
VACUUM (FULL, ANALYZE) small;
CLUSTER missing USING missing_pkey;
VACUUM FULL missing;
SELECT count(*) FROM small;
