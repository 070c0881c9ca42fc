-- DROP ... CASCADE lists what it drops.
CREATE TABLE base (id int PRIMARY KEY, v int);
CREATE VIEW base_v AS SELECT * FROM base;
CREATE VIEW base_vv AS SELECT * FROM base_v;
CREATE TABLE refs (id int REFERENCES base (id));
CREATE FUNCTION base_n() RETURNS bigint LANGUAGE sql AS 'SELECT count(*) FROM base';
DROP TABLE base;
DROP TABLE base CASCADE;
CREATE TABLE other (id int);
CREATE INDEX other_id ON other (id);
DROP INDEX other_id CASCADE;
DROP SCHEMA IF EXISTS nothing CASCADE;
