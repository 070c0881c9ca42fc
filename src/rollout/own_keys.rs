//! Foreign keys of the changed column's own (`customer_id int REFERENCES
//! customers`, widened with the key it references). Directly, the ALTER adds
//! them again over the new type. A rollout gives each a twin on the new column
//! before the cutover, like a CHECK constraint (see `checks`): the definition
//! Postgres prints, with the new column's name in the key's column list, added
//! NOT VALID as the table's owner and validated as the owner too (the check
//! compares with the other table's key), then renamed in the cutover's window.

use super::checks::CheckTwin;
use super::driver::{ours, Driver, StepError};
use super::model::Rollout;
use crate::sql::ident::quote;

/// The foreign keys of table $1 on column $2 (attnum), not the ones Postgres
/// derives for the partitions of a partitioned table they reference (those go
/// and come with theirs): oid, name, definition
/// (without NOT VALID), validated, and the twin's definition with column $3 in
/// place of the column (NULL if the definition does not start as expected).
const OWN_KEYS: &str = "
SELECT k.oid::pg_catalog.text, k.conname::pg_catalog.text, s.d, k.convalidated,
       CASE WHEN pg_catalog.starts_with(s.d, s.p)
            THEN s.q OPERATOR(pg_catalog.||) pg_catalog.substr(s.d, pg_catalog.length(s.p) OPERATOR(pg_catalog.+) 1) END
  FROM pg_catalog.pg_constraint k
 CROSS JOIN LATERAL (
       SELECT pg_catalog.regexp_replace(pg_catalog.pg_get_constraintdef(k.oid), ' NOT VALID$', '') AS d,
              pg_catalog.format('FOREIGN KEY (%s)', pg_catalog.string_agg(pg_catalog.quote_ident(a.attname), ', ' ORDER BY u.ord)) AS p,
              pg_catalog.format('FOREIGN KEY (%s)', pg_catalog.string_agg(pg_catalog.quote_ident(
                  CASE WHEN a.attnum = $2::int4 THEN $3::text ELSE a.attname::text END), ', ' ORDER BY u.ord)) AS q
         FROM pg_catalog.unnest(k.conkey) WITH ORDINALITY AS u(attnum, ord)
         JOIN pg_catalog.pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.attnum) s
 WHERE k.conrelid = $1::text::oid AND k.contype = 'f' AND $2::int4 = ANY (k.conkey)
   AND k.conparentid = 0
 ORDER BY k.oid";

impl Driver {
    /// The twins the old column's own foreign keys need.
    pub(super) async fn own_key_twins(&self, r: &Rollout) -> Result<Vec<CheckTwin>, StepError> {
        let attnum = self.attnum(r, &r.column).await?;
        let rows = self
            .client
            .query(
                OWN_KEYS,
                &[&r.table_oid.to_string(), &attnum, &r.new_column],
            )
            .await?;
        rows.iter()
            .map(|x| {
                let name: String = x.get(1);
                let twin: Option<String> = x.get(4);
                let twin = twin.ok_or_else(|| {
                    ours(format!(
                        "pgshift could not read the definition of foreign key {}",
                        quote(&name)
                    ))
                })?;
                Ok(CheckTwin {
                    oid: x.get::<_, String>(0).parse().unwrap_or(0),
                    name,
                    definition: x.get(2),
                    twin,
                    validated: x.get(3),
                    foreign: true,
                })
            })
            .collect()
    }

    /// The table's owner, quoted.
    pub(super) async fn owner_of(&self, r: &Rollout) -> Result<String, StepError> {
        let row = self
            .client
            .query_one(
                "SELECT pg_catalog.quote_ident(o.rolname) FROM pg_catalog.pg_class c \
                 JOIN pg_catalog.pg_roles o ON o.oid = c.relowner WHERE c.oid = $1::text::oid",
                &[&r.table_oid.to_string()],
            )
            .await?;
        Ok(row.get(0))
    }
}
