-- ADD COLUMN with a volatile default or a serial type fills existing rows by
-- rewriting the table, not by UPDATE: no row-level or statement-level UPDATE
-- trigger fires, no ON UPDATE rule runs, an append-only table that forbids
-- UPDATE still gets its column. (Old rows that break a NOT VALID CHECK stop
-- pgshift's fill, with a HINT: tests/fill_triggers.rs.)
CREATE TABLE items (id int PRIMARY KEY, qty int, version int NOT NULL DEFAULT 1);
INSERT INTO items SELECT g, g, 1 FROM generate_series(1, 100) g;
CREATE TABLE audit (item_id int, op text);
CREATE FUNCTION bump() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.version := OLD.version + 1;
  RETURN NEW;
END $$;
CREATE FUNCTION log_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO audit VALUES (NEW.id, TG_OP);
  IF NEW.id = 1 THEN RAISE NOTICE 'row trigger on item %', NEW.id; END IF;
  RETURN NULL;
END $$;
CREATE FUNCTION say_statement() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE NOTICE 'statement trigger % on %', TG_OP, TG_TABLE_NAME;
  RETURN NULL;
END $$;
CREATE TRIGGER items_bump BEFORE UPDATE ON items FOR EACH ROW EXECUTE FUNCTION bump();
CREATE TRIGGER items_log AFTER UPDATE ON items FOR EACH ROW EXECUTE FUNCTION log_update();
CREATE TRIGGER items_stmt AFTER UPDATE ON items FOR EACH STATEMENT EXECUTE FUNCTION say_statement();
ALTER TABLE items ADD COLUMN token text NOT NULL DEFAULT md5(random()::text);
ALTER TABLE items ADD COLUMN n serial;
ALTER TABLE items ADD COLUMN seen_at timestamptz NOT NULL DEFAULT clock_timestamp();
SELECT count(*), sum(version), count(DISTINCT token), min(n), max(n) FROM items;
SELECT op, count(*) FROM audit GROUP BY op ORDER BY 1;
CREATE TABLE ledger (id int PRIMARY KEY, amount int);
INSERT INTO ledger SELECT g, g * 10 FROM generate_series(1, 100) g;
CREATE FUNCTION append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'ledger is append-only';
END $$;
CREATE TRIGGER ledger_append_only BEFORE UPDATE OR DELETE ON ledger FOR EACH ROW EXECUTE FUNCTION append_only();
ALTER TABLE ledger ADD COLUMN entry_id uuid NOT NULL DEFAULT gen_random_uuid();
ALTER TABLE ledger ADD COLUMN seq bigserial;
SELECT count(*), count(DISTINCT entry_id), max(seq) FROM ledger;
CREATE TABLE notes (id int PRIMARY KEY, body text);
INSERT INTO notes SELECT g, 'n' || g FROM generate_series(1, 100) g;
CREATE TABLE notes_log (id int);
CREATE RULE notes_on_update AS ON UPDATE TO notes DO ALSO INSERT INTO notes_log VALUES (OLD.id);
ALTER TABLE notes ADD COLUMN ref text NOT NULL DEFAULT md5(random()::text);
SELECT count(*) FROM notes_log;
