-- A CHECK constraint and SET NOT NULL on a table with rows.
CREATE TABLE accounts (id int PRIMARY KEY, email text);
INSERT INTO accounts SELECT g, 'u' || g || '@x' FROM generate_series(1, 100) g;
ALTER TABLE accounts ADD CONSTRAINT email_has_at CHECK (email LIKE '%@%');
ALTER TABLE accounts ALTER COLUMN email SET NOT NULL;
ALTER TABLE accounts ADD CONSTRAINT email_short CHECK (length(email) < 3);
SELECT conname, convalidated FROM pg_constraint WHERE conrelid = 'accounts'::regclass ORDER BY 1;
\d accounts
