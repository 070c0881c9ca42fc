/*
 * Flyway baseline: schema for the inventory service.
 */
CREATE SCHEMA IF NOT EXISTS inventory;

CREATE SEQUENCE inventory.sku_seq START 1000;

CREATE TABLE inventory.warehouse (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    code        text NOT NULL UNIQUE,
    opened_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE inventory.item (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sku          bigint NOT NULL DEFAULT nextval('inventory.sku_seq'),
    warehouse_id bigint NOT NULL REFERENCES inventory.warehouse (id),
    qty          integer NOT NULL DEFAULT 0 CHECK (qty >= 0)
);

CREATE INDEX item_warehouse_id_idx ON inventory.item (warehouse_id);

COMMENT ON TABLE inventory.item IS 'Stock per warehouse; qty never negative.';
