-- ADD COLUMN ... REFERENCES on a table with rows, and one that cannot be valid.
CREATE TABLE customers (id int PRIMARY KEY);
INSERT INTO customers SELECT generate_series(1, 20);
CREATE TABLE orders (id int PRIMARY KEY);
INSERT INTO orders SELECT generate_series(1, 100);
ALTER TABLE orders ADD COLUMN customer_id int REFERENCES customers (id);
ALTER TABLE orders ADD COLUMN other_id int DEFAULT 99 REFERENCES customers (id);
ALTER TABLE orders ADD COLUMN named_id int CONSTRAINT orders_named_fk REFERENCES customers ON DELETE CASCADE;
SELECT conname, contype, convalidated FROM pg_constraint WHERE conrelid = 'orders'::regclass ORDER BY 1;
