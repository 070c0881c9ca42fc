-- Flyway V2: cleanup and new columns.
ALTER TABLE inventory.item ADD COLUMN line_no bigserial;

DROP INDEX inventory.item_warehouse_id_idx;

REINDEX TABLE inventory.warehouse;

TRUNCATE inventory.staging_import;

DROP TABLE IF EXISTS inventory.legacy_stock CASCADE;

ALTER TABLE inventory.item DROP COLUMN IF EXISTS legacy_code;
