-- Unnamed CHECKs are named after the one column their condition reads, as the
-- planner sees it: through array subscripts and slices, composite fields, named
-- function arguments and XML functions. Table constraints and inline column
-- constraints of ADD COLUMN alike. (A whole-row reference, `t IS NOT NULL`, is
-- named as if `t` were a column: pgshift cannot tell it from one without the
-- catalog.)
CREATE TYPE addr AS (street text, zip int);
CREATE TABLE t (id int, tags text[], home addr, n int, b text);
INSERT INTO t SELECT g, ARRAY['x' || g], ROW('s', g)::addr, g, 'b' || g FROM generate_series(1, 100) g;
ALTER TABLE t ADD CHECK (tags[1] <> '');
ALTER TABLE t ADD CHECK (tags[1:1] IS NOT NULL);
ALTER TABLE t ADD CHECK ((tags)[1] IS NOT NULL);
ALTER TABLE t ADD CHECK ((home).zip > 0);
ALTER TABLE t ADD CHECK (make_interval(days => n) < interval '1000 days');
ALTER TABLE t ADD CHECK (xmlelement(name x, b) IS NOT NULL);
ALTER TABLE t ADD CHECK (num_nonnulls(VARIADIC ARRAY[id]) > 0);
ALTER TABLE t ADD CHECK (t.n > 0 AND n < 1000);
ALTER TABLE t ADD CHECK (id IS DISTINCT FROM NULL);
ALTER TABLE t ADD COLUMN scores int[] DEFAULT '{1}' CHECK (scores[1] > 0);
ALTER TABLE t ADD COLUMN office addr CHECK ((office).zip IS NULL OR (office).zip > 0);
ALTER TABLE t ADD COLUMN m int DEFAULT 1 CHECK (make_interval(days => m) >= interval '0');
SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 't'::regclass ORDER BY 1;
-- The names are taken now: later ones are numbered from them.
ALTER TABLE t ADD CHECK (n < 2000);
ALTER TABLE t ADD CHECK (tags <> '{}');
ALTER TABLE t ADD CHECK (home IS NOT NULL);
ALTER TABLE t ADD CHECK (id + n > 0);
SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 't'::regclass ORDER BY 1;
