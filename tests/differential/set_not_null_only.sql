-- SET NOT NULL with ONLY: on an inheritance parent it leaves the children
-- alone (one of them holds NULLs); on a partitioned table with partitions
-- Postgres refuses it (its words), on one without it succeeds; in a
-- transaction block too.
CREATE TABLE par (a int, b int);
CREATE TABLE chi () INHERITS (par);
INSERT INTO par SELECT g, g FROM generate_series(1, 50) g;
INSERT INTO chi VALUES (NULL, NULL), (1, NULL);
ALTER TABLE ONLY par ALTER COLUMN a SET NOT NULL;
BEGIN;
ALTER TABLE ONLY par ALTER COLUMN b SET NOT NULL;
INSERT INTO chi VALUES (NULL, NULL);
COMMIT;
INSERT INTO par VALUES (NULL, 1);
INSERT INTO par VALUES (1, NULL);
SELECT count(*) FROM chi WHERE a IS NULL;
CREATE TABLE pp (a int, b int) PARTITION BY RANGE (a);
CREATE TABLE pp1 PARTITION OF pp FOR VALUES FROM (0) TO (100);
INSERT INTO pp SELECT g, g FROM generate_series(1, 50) g;
ALTER TABLE ONLY pp ALTER COLUMN b SET NOT NULL;
CREATE TABLE pe (a int, b int) PARTITION BY RANGE (a);
ALTER TABLE ONLY pe ALTER COLUMN b SET NOT NULL;
BEGIN;
CREATE TABLE pe2 (a int, b int) PARTITION BY RANGE (a);
COMMIT;
BEGIN;
ALTER TABLE ONLY pe2 ALTER COLUMN b SET NOT NULL;
COMMIT;
SELECT conname FROM pg_constraint WHERE contype = 'c' AND connamespace = 'public'::regnamespace ORDER BY 1;
\d par
\d chi
\d pe
\d pe2
