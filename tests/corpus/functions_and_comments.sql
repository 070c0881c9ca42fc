-- ALTER TABLE accounts ADD COLUMN looks_like_ddl int NOT NULL;   (a comment, not a statement)
/* DROP TABLE accounts;
   CREATE INDEX fake ON accounts (id); */
CREATE OR REPLACE FUNCTION audit_touch() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    -- CREATE INDEX inside a body is not run by the migration
    EXECUTE 'ALTER TABLE audit ADD COLUMN x int; DROP TABLE y;';
    NEW.updated_at := clock_timestamp();
    RETURN NEW;
END;
$fn$;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_type WHERE typname = 'mood') THEN
        CREATE TYPE mood AS ENUM ('sad', 'ok');
    END IF;
END
$$;

SELECT 'VACUUM FULL accounts; TRUNCATE accounts;' AS not_a_statement;

CREATE TRIGGER accounts_touch BEFORE UPDATE ON accounts
    FOR EACH ROW EXECUTE FUNCTION audit_touch();

ALTER TABLE accounts ADD COLUMN row_version uuid DEFAULT gen_random_uuid();
