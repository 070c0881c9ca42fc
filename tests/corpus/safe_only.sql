-- Plain psql script with only statements that are safe on a live database.
SET lock_timeout = '2s';
SET statement_timeout = 0;

CREATE TABLE IF NOT EXISTS feature_flags (
    name text PRIMARY KEY,
    enabled boolean NOT NULL DEFAULT false
);

CREATE INDEX CONCURRENTLY IF NOT EXISTS orders_created_at_idx ON orders (created_at);
CREATE UNIQUE INDEX CONCURRENTLY users_email_lower_key ON users (lower(email));
DROP INDEX CONCURRENTLY IF EXISTS orders_old_idx;
REINDEX INDEX CONCURRENTLY orders_pkey;
ALTER TABLE orders VALIDATE CONSTRAINT orders_user_id_fkey;
REFRESH MATERIALIZED VIEW CONCURRENTLY daily_totals;

CREATE TYPE order_state AS ENUM ('new', 'paid', 'shipped');
CREATE VIEW recent_orders AS SELECT * FROM orders WHERE created_at > now() - interval '7 days';
COMMENT ON COLUMN orders.total IS 'In cents';
GRANT SELECT ON recent_orders TO reporting;

INSERT INTO feature_flags (name) VALUES ('new_checkout') ON CONFLICT DO NOTHING;
UPDATE feature_flags SET enabled = true WHERE name = 'new_checkout';
ANALYZE orders;
