-- GENERATED ... STORED columns on an empty table and a small one.
CREATE TABLE empty (a int, b int);
ALTER TABLE empty ADD COLUMN total int GENERATED ALWAYS AS (a + b) STORED;
CREATE TABLE filled (a int, b int);
INSERT INTO filled SELECT g, g FROM generate_series(1, 40) g;
ALTER TABLE filled ADD COLUMN total int GENERATED ALWAYS AS (a + b) STORED;
ALTER TABLE filled ADD COLUMN id int GENERATED ALWAYS AS IDENTITY;
SELECT sum(total), max(id) FROM filled;
