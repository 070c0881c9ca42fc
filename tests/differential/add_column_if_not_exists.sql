-- ADD COLUMN IF NOT EXISTS on a column that is there does nothing but say so,
-- whatever the new definition would have brought: a volatile default, a CHECK,
-- NOT NULL, a key, a reference, a serial.
CREATE TABLE items (id int PRIMARY KEY, qty int, price int);
INSERT INTO items SELECT g, g, CASE WHEN g % 2 = 0 THEN NULL ELSE g END FROM generate_series(1, 50) g;
CREATE TABLE refs (id int PRIMARY KEY);
ALTER TABLE items ADD COLUMN IF NOT EXISTS price int DEFAULT (random() * 10)::int;
ALTER TABLE items ADD COLUMN IF NOT EXISTS price int CHECK (price > 100);
ALTER TABLE items ADD COLUMN IF NOT EXISTS price int NOT NULL DEFAULT 0;
ALTER TABLE items ADD COLUMN IF NOT EXISTS price int UNIQUE;
ALTER TABLE items ADD COLUMN IF NOT EXISTS price int REFERENCES refs;
ALTER TABLE items ADD COLUMN IF NOT EXISTS qty serial;
SELECT count(*), count(price), sum(price) FROM items;
-- Columns not there yet are added as without IF NOT EXISTS.
ALTER TABLE items ADD COLUMN IF NOT EXISTS seen timestamptz DEFAULT clock_timestamp();
ALTER TABLE items ADD COLUMN IF NOT EXISTS small int CHECK (small < 10);
SELECT count(seen), count(small) FROM items;
