CREATE TABLE metrics.samples (
    taken_at timestamptz NOT NULL,
    device_id bigint NOT NULL,
    value double precision
) PARTITION BY RANGE (taken_at);

CREATE TABLE metrics.samples_2025 PARTITION OF metrics.samples
    FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');

-- The partitioned-index sequence: instant on the parent, concurrent per partition.
CREATE INDEX samples_device_idx ON ONLY metrics.samples (device_id);
CREATE INDEX CONCURRENTLY samples_2025_device_idx ON metrics.samples_2025 (device_id);
ALTER INDEX metrics.samples_device_idx ATTACH PARTITION metrics.samples_2025_device_idx;

-- Pre-validated bound, then attach without a scan.
ALTER TABLE metrics.samples_2026 ADD CONSTRAINT samples_2026_bound
    CHECK (taken_at IS NOT NULL AND taken_at >= '2026-01-01' AND taken_at < '2027-01-01') NOT VALID;
ALTER TABLE metrics.samples_2026 VALIDATE CONSTRAINT samples_2026_bound;
ALTER TABLE metrics.samples ATTACH PARTITION metrics.samples_2026
    FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');

ALTER TABLE metrics.samples DETACH PARTITION metrics.samples_2019;
ALTER TABLE metrics.samples DETACH PARTITION metrics.samples_2020 CONCURRENTLY;
ALTER TABLE metrics.samples DETACH PARTITION metrics.samples_2018 FINALIZE;
