-- Findings, but none that needs a rewrite or a rejection: exit code 0.
ALTER TYPE order_state ADD VALUE IF NOT EXISTS 'refunded' AFTER 'paid';
ALTER TABLE "Legacy"."Invoices" RENAME TO invoices_archive;
ALTER TABLE invoices_archive DROP COLUMN fax_number;
TRUNCATE staging_rows;
REINDEX SCHEMA reporting;
REFRESH MATERIALIZED VIEW reporting.monthly WITH NO DATA;
