-- Unnamed indexes: one column, several, expressions, unique, partial, schema-qualified.
CREATE SCHEMA app;
CREATE TABLE app.t (a int, b int, c text, d jsonb);
INSERT INTO app.t SELECT g, g, g::text, jsonb_build_object('k', g) FROM generate_series(1, 100) g;
CREATE INDEX ON app.t (a);
CREATE INDEX ON app.t (a, b);
CREATE INDEX ON app.t (lower(c));
CREATE INDEX ON app.t ((a + b));
CREATE INDEX ON app.t ((d ->> 'k'), a);
CREATE UNIQUE INDEX ON app.t (b);
CREATE INDEX ON app.t (c) WHERE a > 10;
CREATE INDEX ON app.t USING hash (c);
CREATE INDEX ON app.t (c) INCLUDE (a);
CREATE INDEX CONCURRENTLY ON app.t (b, c);
SET search_path = app;
CREATE INDEX ON t (c DESC NULLS LAST);
SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'app' ORDER BY 1;
