BEGIN;

CREATE TABLE alembic_version (
    version_num VARCHAR(32) NOT NULL, 
    CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)
);

-- Running upgrade  -> 3f2a1b4c5d6e

ALTER TABLE accounts ADD COLUMN created_at TIMESTAMP WITHOUT TIME ZONE DEFAULT timezone('utc', now()) NOT NULL;

ALTER TABLE accounts ADD COLUMN external_id UUID DEFAULT gen_random_uuid();

CREATE INDEX ix_accounts_external_id ON accounts (external_id);

ALTER TABLE accounts ALTER COLUMN email SET NOT NULL;

ALTER TABLE accounts ADD CONSTRAINT ck_accounts_balance_positive CHECK (balance >= 0);

INSERT INTO alembic_version (version_num) VALUES ('3f2a1b4c5d6e') RETURNING alembic_version.version_num;

COMMIT;
