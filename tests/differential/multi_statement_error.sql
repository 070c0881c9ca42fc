-- One Query of several statements, as golang-migrate sends a file.
CREATE TABLE artifact (id int, push_time timestamptz);
INSERT INTO artifact SELECT g, now() FROM generate_series(1, 100) g;
CREATE INDEX IF NOT EXISTS a_idx ON artifact (push_time) \; CREATE INDEX IF NOT EXISTS t_idx ON tag (push_time);
SELECT indexname FROM pg_indexes WHERE tablename = 'artifact';
CREATE INDEX a_idx2 ON artifact (id) \;
  SELECT 1 \;
  CREATE INDEX a_idx3 ON artifact (nope);
SELECT 1 \; DROP TABLE IF EXISTS nothing_here \; CREATE INDEX a_idx4 ON artifact (id) \; SELECT 2;
SELECT indexname FROM pg_indexes WHERE tablename = 'artifact' ORDER BY 1;
