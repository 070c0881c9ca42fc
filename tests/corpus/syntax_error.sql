BEGIN;
CREATE INDEX ok_idx ON t (c);

-- the next statement is broken
ALTER TABLE t ADD COLUMN;
COMMIT;
