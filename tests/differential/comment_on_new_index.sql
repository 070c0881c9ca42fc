-- A migration that builds an index and comments on it in one transaction.
CREATE SCHEMA auth;
CREATE TABLE auth.users (id int PRIMARY KEY, email text, deleted_at timestamptz);
INSERT INTO auth.users SELECT g, 'u' || g, NULL FROM generate_series(1, 100) g;
BEGIN;
CREATE UNIQUE INDEX IF NOT EXISTS users_email_partial_key ON auth.users (email) WHERE deleted_at IS NULL;
COMMENT ON INDEX auth.users_email_partial_key IS 'Auth: unique email among live users';
ALTER INDEX auth.users_email_partial_key SET (fillfactor = 90);
COMMIT;
SELECT obj_description('auth.users_email_partial_key'::regclass, 'pg_class');
