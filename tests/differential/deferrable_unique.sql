-- A DEFERRABLE UNIQUE constraint (Django's UniqueConstraint(deferrable=…), Rails'
-- unique_constraint deferrable:) keeps its deferral: a shift of every key
-- commits, a duplicate fails at COMMIT, SET CONSTRAINTS moves the check.
CREATE TABLE slots (id int PRIMARY KEY, pos int);
INSERT INTO slots SELECT g, g FROM generate_series(1, 50) g;
ALTER TABLE slots ADD CONSTRAINT slots_pos_key UNIQUE (pos) DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE slots ADD UNIQUE (id, pos) DEFERRABLE;
BEGIN;
UPDATE slots SET pos = pos + 1;
COMMIT;
BEGIN;
UPDATE slots SET pos = 2 WHERE id = 5;
COMMIT;
BEGIN;
SET CONSTRAINTS slots_pos_key IMMEDIATE;
UPDATE slots SET pos = 3 WHERE id = 5;
ROLLBACK;
SELECT conname, condeferrable, condeferred FROM pg_constraint WHERE conrelid = 'slots'::regclass ORDER BY 1;
SELECT min(pos), max(pos), count(DISTINCT pos) FROM slots;
