-- An inline CHECK on a new column, on a table with rows and on an empty one.
CREATE TABLE items (id int PRIMARY KEY, qty int);
INSERT INTO items SELECT g, g FROM generate_series(1, 50) g;
ALTER TABLE items ADD COLUMN price int DEFAULT 1 CHECK (price > 0);
ALTER TABLE items ADD COLUMN bad int DEFAULT 0 CONSTRAINT bad_positive CHECK (bad > 0);
CREATE TABLE empty (id int);
ALTER TABLE empty ADD COLUMN score int CHECK (score BETWEEN 0 AND 10);
SELECT conname, convalidated FROM pg_constraint WHERE conrelid IN ('items'::regclass, 'empty'::regclass) ORDER BY 1;
SELECT count(*), sum(price) FROM items;
