-- ADD COLUMN serial creates its own sequence: named t_c_seq, numbered when any
-- relation has the name (it never reuses one), cut to 63 bytes the way Postgres
-- cuts table and column in turn, in the table's schema whatever search_path says
-- first, and owned by the table's owner (not the role running the statement).
CREATE TABLE t (id int PRIMARY KEY);
INSERT INTO t SELECT generate_series(1, 50);
CREATE SEQUENCE t_n_seq START 1000;
ALTER TABLE t ADD COLUMN n serial;
CREATE TABLE t_m_seq (x int);
ALTER TABLE t ADD COLUMN m bigserial;
CREATE INDEX t_k_seq ON t (id);
ALTER TABLE t ADD COLUMN k smallserial;
SELECT id, n, m, k FROM t WHERE id IN (1, 2, 49, 50) ORDER BY id;
SELECT pg_get_serial_sequence('t', 'n') AS n, pg_get_serial_sequence('t', 'm') AS m, pg_get_serial_sequence('t', 'k') AS k;
\d t
CREATE TABLE a_table_with_a_rather_long_name_that_goes_on_and_on_x (id int);
INSERT INTO a_table_with_a_rather_long_name_that_goes_on_and_on_x SELECT generate_series(1, 20);
ALTER TABLE a_table_with_a_rather_long_name_that_goes_on_and_on_x ADD COLUMN serial_number_column serial;
SELECT pg_get_serial_sequence('a_table_with_a_rather_long_name_that_goes_on_and_on_x', 'serial_number_column');
CREATE SCHEMA app;
CREATE TABLE public."Orders" (id int);
INSERT INTO public."Orders" SELECT generate_series(1, 20);
SET search_path = app, public;
ALTER TABLE "Orders" ADD COLUMN "Seq" serial;
RESET search_path;
SELECT pg_get_serial_sequence('public."Orders"', 'Seq');
CREATE TABLE owned (id int);
INSERT INTO owned SELECT generate_series(1, 20);
ALTER TABLE owned OWNER TO pg_database_owner;
ALTER TABLE owned ADD COLUMN n serial;
SELECT max(n) FROM owned;
CREATE TABLE two (id int);
INSERT INTO two SELECT generate_series(1, 20);
ALTER TABLE two ADD COLUMN s1 serial, ADD COLUMN s2 bigserial;
SELECT min(s1), max(s1), min(s2), max(s2) FROM two;
SELECT n.nspname, c.relname, c.relowner::regrole FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'S' AND n.nspname <> 'pgshift' ORDER BY 1, 2;
