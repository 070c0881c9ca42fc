-- ADD FOREIGN KEY: valid, violated, and on a missing column.
CREATE TABLE parents (id int PRIMARY KEY);
INSERT INTO parents SELECT generate_series(1, 10);
CREATE TABLE kids (id int PRIMARY KEY, parent_id int);
INSERT INTO kids SELECT g, 1 + g % 10 FROM generate_series(1, 100) g;
ALTER TABLE kids ADD CONSTRAINT kids_parent_fk FOREIGN KEY (parent_id) REFERENCES parents (id);
INSERT INTO kids VALUES (1000, 77);
ALTER TABLE kids DROP CONSTRAINT kids_parent_fk;
INSERT INTO kids VALUES (1000, 77);
ALTER TABLE kids ADD CONSTRAINT kids_parent_fk FOREIGN KEY (parent_id) REFERENCES parents (id);
ALTER TABLE kids ADD FOREIGN KEY (nope) REFERENCES parents (id);
ALTER TABLE kids ADD FOREIGN KEY (parent_id) REFERENCES parents (id) NOT VALID;
SELECT conname, convalidated FROM pg_constraint WHERE conrelid = 'kids'::regclass ORDER BY 1;
