-- Indexes on a partitioned table, named and unnamed.
CREATE TABLE measures (id int, at date, v int) PARTITION BY RANGE (at);
CREATE TABLE measures_2024 PARTITION OF measures FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE measures_2025 PARTITION OF measures FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
INSERT INTO measures SELECT g, date '2024-06-01' + g, g FROM generate_series(1, 300) g;
CREATE INDEX ON measures (v);
CREATE INDEX measures_at ON measures (at);
CREATE UNIQUE INDEX ON measures (id, at);
SELECT tablename, indexname FROM pg_indexes WHERE tablename LIKE 'measures%' ORDER BY 1, 2;
