-- Temp tables are invisible to other sessions: everything runs as written.
CREATE TEMP TABLE tt (a int, b int);
INSERT INTO tt SELECT g, g FROM generate_series(1, 1000) g;
CREATE INDEX tt_a ON tt (a);
CREATE INDEX ON tt (b);
ALTER TABLE tt ADD COLUMN c int DEFAULT 1;
ALTER TABLE tt ADD CONSTRAINT a_pos CHECK (a > 0);
ALTER TABLE tt ALTER COLUMN a SET NOT NULL;
BEGIN;
CREATE TEMP TABLE tt2 (a int);
CREATE INDEX tt2_a ON tt2 (a);
COMMIT;
SELECT tablename, indexname FROM pg_indexes WHERE tablename LIKE 'tt%' ORDER BY 1, 2;
CLUSTER tt USING tt_a;
VACUUM FULL tt;
SELECT count(*) FROM tt;
