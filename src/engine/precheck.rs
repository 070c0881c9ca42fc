//! Before a CREATE INDEX is deferred to after the client's transaction, what its
//! build needs is checked in that transaction, so that an error Postgres would
//! raise at once is raised at once, with Postgres' own SQLSTATE and message (and
//! the transaction fails as it would have), instead of showing up later in
//! `pgshift.deferred` while the migration tool records success.
//!
//! Checked, in Postgres' order: ownership of the table, the plain columns, the
//! expressions and predicate (resolved by a query that reads no row), the name.
//! A duplicate under a UNIQUE index is looked for next (`violations`); what only
//! the build can find (a function not marked IMMUTABLE) still fails later,
//! recorded on the deferred row.
//!
//! `ADD COLUMN IF NOT EXISTS` with a fill asks whether the column is there: then
//! Postgres would do nothing, and pgshift must not set its default or fill it.

use super::conn::Conn;
use super::steps::Failure;
use crate::sql::plan::Precheck;
use crate::wire::backend::{PgError, Severity};

/// What the check found, when it found nothing wrong.
pub enum Verdict {
    /// The deferral may go ahead.
    Ready,
    /// IF NOT EXISTS and the name is taken: Postgres says so and does nothing.
    Skip(PgError),
}

const COLUMNS: &str = "\
WITH r AS (SELECT c.oid, c.relname, c.relkind, pg_catalog.pg_has_role(c.relowner, 'USAGE') AS owner
           FROM pg_catalog.pg_class c WHERE c.oid OPERATOR(pg_catalog.=) pg_catalog.to_regclass($1))
SELECT r.relname::pg_catalog.text, r.owner::pg_catalog.text,
  (SELECT u.x FROM pg_catalog.unnest($2::pg_catalog.text[]) WITH ORDINALITY AS u(x, i)
   WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_attribute a WHERE a.attrelid OPERATOR(pg_catalog.=) r.oid
                     AND a.attname OPERATOR(pg_catalog.=) u.x AND NOT a.attisdropped)
   ORDER BY u.i LIMIT 1),
  EXISTS (SELECT FROM pg_catalog.pg_class i WHERE i.relname OPERATOR(pg_catalog.=) $3
          AND i.relnamespace OPERATOR(pg_catalog.=) (SELECT c.relnamespace FROM pg_catalog.pg_class c WHERE c.oid OPERATOR(pg_catalog.=) r.oid)
          -- An INVALID index of this table is a failed build's leftover, which the
          -- build drops before it retries: not a taken name.
          AND NOT EXISTS (SELECT FROM pg_catalog.pg_index x WHERE x.indexrelid OPERATOR(pg_catalog.=) i.oid
                          AND x.indrelid OPERATOR(pg_catalog.=) r.oid AND NOT x.indisvalid))::pg_catalog.text,
  EXISTS (SELECT FROM pg_catalog.pg_attribute a WHERE a.attrelid OPERATOR(pg_catalog.=) r.oid
          AND a.attname OPERATOR(pg_catalog.=) $4 AND a.attnum OPERATOR(pg_catalog.>) 0
          AND NOT a.attisdropped)::pg_catalog.text,
  r.relkind::pg_catalog.text,
  (SELECT u.x FROM pg_catalog.unnest($2::pg_catalog.text[]) WITH ORDINALITY AS u(x, i)
   WHERE EXISTS (SELECT FROM pg_catalog.pg_attribute a WHERE a.attrelid OPERATOR(pg_catalog.=) r.oid
                 AND a.attname OPERATOR(pg_catalog.=) u.x AND a.attnum OPERATOR(pg_catalog.<) 0)
   ORDER BY u.i LIMIT 1)
FROM r";

/// `original` is the client's statement, where the probe's error position is moved.
pub async fn run<C: Conn>(conn: &mut C, p: &Precheck, original: &str) -> Result<Verdict, Failure> {
    let columns = super::unnamed::array_literal(&p.columns);
    let name = p.index.as_deref().unwrap_or("");
    let new_column = p.new_column.as_deref().unwrap_or("");
    let reply = conn
        .query_params(COLUMNS, &[&p.table, &columns, name, new_column])
        .await?;
    if reply.error.is_some() || reply.rows.is_empty() {
        // The table is gone: the build will say so.
        return Ok(Verdict::Ready);
    }
    if let Some(action) = p.action {
        // ALTER TABLE's own first check: what kind of relation it is.
        let kind = reply.cell(5);
        if !matches!(kind.as_str(), "r" | "p") {
            let error = PgError::error(
                "42809",
                format!(
                    "ALTER action {action} cannot be performed on relation \"{}\"",
                    reply.cell(0)
                ),
            );
            return Err(Failure::Ours(match relkind_plural(&kind) {
                Some(what) => {
                    error.with_detail(format!("This operation is not supported for {what}."))
                }
                None => error,
            }));
        }
    }
    if reply.cell(1) != "true" {
        return Err(Failure::Ours(PgError::error(
            "42501",
            format!("must be owner of table {}", reply.cell(0)),
        )));
    }
    if let Some(Some(missing)) = reply.rows[0].get(2) {
        let message = if p.named_in_key {
            format!("column \"{missing}\" named in key does not exist")
        } else if p.column_of_relation {
            format!(
                "column \"{missing}\" of relation \"{}\" does not exist",
                reply.cell(0)
            )
        } else {
            format!("column \"{missing}\" does not exist")
        };
        return Err(Failure::Ours(PgError::error("42703", message)));
    }
    if let (true, Some(Some(system))) = (p.no_system_column, reply.rows[0].get(6)) {
        return Err(Failure::Ours(PgError::error(
            "0A000",
            format!("cannot alter system column \"{system}\""),
        )));
    }
    if let Some(probe) = &p.probe {
        let probed = conn.query(probe).await?;
        if let Some(e) = probed.error {
            return Err(Failure::Server(e.mapped(probe, original)));
        }
    }
    if let (Some(column), true) = (&p.new_column, reply.cell(4) == "true") {
        // Only IF NOT EXISTS asks: without it, the ADD COLUMN says so itself.
        return Ok(Verdict::Skip(PgError {
            severity: Severity::Notice,
            code: "42701",
            ..PgError::notice(format!(
                "column \"{column}\" of relation \"{}\" already exists, skipping",
                reply.cell(0)
            ))
        }));
    }
    if reply.cell(3) == "true" {
        if p.if_not_exists {
            return Ok(Verdict::Skip(PgError {
                severity: Severity::Notice,
                code: "42P07",
                ..PgError::notice(format!("relation \"{name}\" already exists, skipping"))
            }));
        }
        return Err(Failure::Ours(PgError::error(
            "42P07",
            format!("relation \"{name}\" already exists"),
        )));
    }
    Ok(Verdict::Ready)
}

/// How Postgres' DETAIL names relations of kind `relkind` (`errdetail_relkind_not_supported`).
fn relkind_plural(relkind: &str) -> Option<&'static str> {
    Some(match relkind {
        "v" => "views",
        "m" => "materialized views",
        "S" => "sequences",
        "f" => "foreign tables",
        "c" => "composite types",
        "i" => "indexes",
        "I" => "partitioned indexes",
        "t" => "TOAST tables",
        _ => return None,
    })
}
