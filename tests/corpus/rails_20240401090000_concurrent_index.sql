-- disable_ddl_transaction! with algorithm: :concurrently: no transaction, already safe.
CREATE INDEX CONCURRENTLY "index_orders_on_created_at" ON "orders" ("created_at");
CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS "index_users_on_lower_email" ON "users" (lower("email"));
INSERT INTO "schema_migrations" ("version") VALUES ('20240401090000') RETURNING "version";
