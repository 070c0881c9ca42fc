-- An event trigger's RAISE NOTICE reaches the client for each DDL.
CREATE FUNCTION say_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE NOTICE 'ddl: %', tg_tag;
END $$;
CREATE EVENT TRIGGER say_ddl ON ddl_command_end EXECUTE FUNCTION say_ddl();
CREATE TABLE t (a int, b int);
INSERT INTO t SELECT g, g FROM generate_series(1, 100) g;
CREATE INDEX t_a ON t (a);
ALTER TABLE t ADD COLUMN c int DEFAULT 5;
ALTER TABLE t ADD CONSTRAINT a_pos CHECK (a > 0);
ALTER TABLE t ALTER COLUMN a SET NOT NULL;
DROP INDEX t_a;
DROP EVENT TRIGGER say_ddl;
