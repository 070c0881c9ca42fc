VACUUM FULL events;
CLUSTER events USING events_pkey;
ALTER TABLE events ALTER COLUMN id TYPE bigint;
ALTER TABLE events ADD COLUMN tenant_id bigint NOT NULL;
ALTER TABLE events ADD COLUMN seq bigint GENERATED ALWAYS AS IDENTITY;
ALTER TABLE bookings ADD CONSTRAINT no_overlap EXCLUDE USING gist (room_id WITH =, during WITH &&);
ALTER TABLE events SET TABLESPACE fast_ssd;
ALTER TABLE events ADD COLUMN note text, ALTER COLUMN kind TYPE int USING kind::int;
