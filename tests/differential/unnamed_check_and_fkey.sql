-- Unnamed CHECK and FOREIGN KEY constraints: Postgres' names, numbered when the
-- name is taken, cut to 63 bytes; SET NOT NULL next to a constraint named like
-- the one pgshift uses on the way.
CREATE TABLE owners (id int PRIMARY KEY);
INSERT INTO owners SELECT generate_series(1, 100);
CREATE TABLE t (a int, b int);
INSERT INTO t SELECT g, g FROM generate_series(1, 100) g;
ALTER TABLE t ADD CHECK (a > 0);
ALTER TABLE t ADD CHECK (a > -1);
ALTER TABLE t ADD CHECK (a + b > 0);
ALTER TABLE t ADD CHECK (a + b > -1);
ALTER TABLE t ADD FOREIGN KEY (a) REFERENCES owners (id);
ALTER TABLE t ADD FOREIGN KEY (a) REFERENCES owners (id);
ALTER TABLE t ADD COLUMN c int CHECK (c > 0) CHECK (c < 10) REFERENCES owners (id);
ALTER TABLE t ADD COLUMN d int CHECK (d > 0) REFERENCES owners (id);
ALTER TABLE t ADD CONSTRAINT t_b_not_null CHECK (b > -5);
ALTER TABLE t ALTER COLUMN b SET NOT NULL;
CREATE TABLE a_table_with_a_rather_long_name_that_goes_on_and_on_forever_x (
    a_column_with_a_long_name_too_and_then_some_more int,
    c int
);
INSERT INTO a_table_with_a_rather_long_name_that_goes_on_and_on_forever_x SELECT g, g FROM generate_series(1, 100) g;
ALTER TABLE a_table_with_a_rather_long_name_that_goes_on_and_on_forever_x
    ADD CHECK (a_column_with_a_long_name_too_and_then_some_more > 0);
ALTER TABLE a_table_with_a_rather_long_name_that_goes_on_and_on_forever_x
    ADD FOREIGN KEY (a_column_with_a_long_name_too_and_then_some_more, c) REFERENCES owners (id, id);
ALTER TABLE a_table_with_a_rather_long_name_that_goes_on_and_on_forever_x
    ADD FOREIGN KEY (c) REFERENCES owners (id);
SELECT conrelid::regclass::text AS rel, conname, contype, convalidated
FROM pg_constraint WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2;
