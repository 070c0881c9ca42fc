-- Constraints that build indexes, with and without names.
CREATE TABLE t (a int, b int, c int);
INSERT INTO t SELECT g, g, g % 3 FROM generate_series(1, 100) g;
ALTER TABLE t ADD PRIMARY KEY (a);
ALTER TABLE t ADD UNIQUE (b);
ALTER TABLE t ADD CONSTRAINT t_b_c UNIQUE (b, c);
ALTER TABLE t ADD UNIQUE (c);
CREATE UNIQUE INDEX t_b_idx2 ON t (b);
ALTER TABLE t ADD CONSTRAINT t_b_using UNIQUE USING INDEX t_b_idx2;
SELECT conname, contype FROM pg_constraint WHERE conrelid = 't'::regclass ORDER BY 1;
