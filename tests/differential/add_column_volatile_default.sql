-- A volatile default fills every row; a serial column numbers them.
CREATE TABLE events (id int PRIMARY KEY, kind text);
INSERT INTO events SELECT g, 'k' || g FROM generate_series(1, 200) g;
ALTER TABLE events ADD COLUMN seen timestamptz DEFAULT clock_timestamp();
ALTER TABLE events ADD COLUMN token text NOT NULL DEFAULT md5(random()::text);
ALTER TABLE events ADD COLUMN n serial;
SELECT count(*), count(seen), count(DISTINCT token), min(n), max(n) FROM events;
