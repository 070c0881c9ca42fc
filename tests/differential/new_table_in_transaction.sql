-- Statements on a table created earlier in the same transaction.
BEGIN;
CREATE TABLE fresh (id int PRIMARY KEY, v int, w text);
INSERT INTO fresh SELECT g, g, g::text FROM generate_series(1, 100) g;
CREATE INDEX fresh_v ON fresh (v);
CREATE INDEX ON fresh (w);
ALTER TABLE fresh ADD COLUMN x int NOT NULL DEFAULT 1;
ALTER TABLE fresh ADD CONSTRAINT v_pos CHECK (v > 0);
ALTER TABLE fresh ALTER COLUMN v SET NOT NULL;
ALTER TABLE fresh ALTER COLUMN v TYPE bigint;
ALTER TABLE fresh ADD CONSTRAINT w_unique UNIQUE (w);
COMMIT;
SELECT conname, convalidated FROM pg_constraint WHERE conrelid = 'fresh'::regclass ORDER BY 1;
SELECT indexname FROM pg_indexes WHERE tablename = 'fresh' ORDER BY 1;
