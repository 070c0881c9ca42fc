-- A type change on a small table is quick directly: it must work the same.
CREATE TABLE amounts (id int PRIMARY KEY, amount int, code text);
INSERT INTO amounts SELECT g, g * 10, g::text FROM generate_series(1, 30) g;
ALTER TABLE amounts ALTER COLUMN amount TYPE bigint;
ALTER TABLE amounts ALTER COLUMN code TYPE int USING code::int;
ALTER TABLE amounts ALTER COLUMN code TYPE date;
SELECT sum(amount), sum(code) FROM amounts;
\d amounts
