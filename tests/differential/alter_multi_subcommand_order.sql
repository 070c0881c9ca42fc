-- One ALTER TABLE with several subcommands runs them in Postgres' pass order
-- (columns, then indexes, then constraints), not as written: a CHECK or NOT NULL
-- on a column added later in the list, a FOREIGN KEY to a key added later, a
-- constraint dropped and added again under its name. (A named CHECK that takes the
-- name an unnamed UNIQUE of the same statement would get fails both ways, with
-- other words through pgshift: not here.)
CREATE TABLE t (id int, a int, b text);
INSERT INTO t SELECT g, g, 'b' || g FROM generate_series(1, 100) g;
ALTER TABLE t ADD CONSTRAINT t_x_pos CHECK (x > 0), ADD COLUMN x int DEFAULT 1;
ALTER TABLE t ALTER COLUMN y SET NOT NULL, ADD COLUMN y int DEFAULT 0;
ALTER TABLE t ADD FOREIGN KEY (a) REFERENCES t (id), ADD PRIMARY KEY (id);
ALTER TABLE t ADD CONSTRAINT t_z_fk FOREIGN KEY (z) REFERENCES t (id), ADD COLUMN z int;
ALTER TABLE t ADD CHECK (w >= 0), ADD COLUMN w int DEFAULT 5 CHECK (w < 10);
ALTER TABLE t DROP CONSTRAINT t_x_pos, ADD CONSTRAINT t_x_pos CHECK (x >= 1);
SELECT column_name, is_nullable, column_default FROM information_schema.columns
WHERE table_name = 't' ORDER BY ordinal_position;
SELECT conname, contype, convalidated, pg_get_constraintdef(oid) FROM pg_constraint
WHERE conrelid = 't'::regclass ORDER BY 1;
SELECT indexname FROM pg_indexes WHERE tablename = 't' ORDER BY 1;
