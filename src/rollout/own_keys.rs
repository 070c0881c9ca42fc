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
pub(super) const OWN_KEYS: &str = "
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

/// The first foreign key of table $1 on column $2 (attnum) that the new type
/// $3 cannot take, as the server tells it when the ALTER adds the key again
/// (`ATAddForeignKeyConstraint`): the referenced key's operator family has no
/// equality of the new type with the key's type and with itself, and the new
/// type has no implicit cast to the key's. Only what is certain: a domain's
/// base type stands for it, and polymorphic types are left to the server. Its
/// name, the column, the referenced column and both types.
const KEY_MISFIT: &str = "
SELECT k.conname::pg_catalog.text, a.attname::pg_catalog.text, pa.attname::pg_catalog.text,
       pg_catalog.format_type(nt.oid, NULL), pg_catalog.format_type(pa.atttypid, NULL)
  FROM pg_catalog.pg_constraint k
 CROSS JOIN LATERAL ROWS FROM (pg_catalog.unnest(k.conkey), pg_catalog.unnest(k.confkey)) AS u(fk, pk)
  JOIN pg_catalog.pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.fk
  JOIN pg_catalog.pg_attribute pa ON pa.attrelid = k.confrelid AND pa.attnum = u.pk
  JOIN pg_catalog.pg_index i ON i.indexrelid = k.conindid
 CROSS JOIN LATERAL (SELECT x.c FROM ROWS FROM (pg_catalog.unnest(i.indkey::pg_catalog.int2[]), pg_catalog.unnest(i.indclass::pg_catalog.oid[])) AS x(att, c)
                      WHERE x.att = u.pk LIMIT 1) ix
  JOIN pg_catalog.pg_opclass oc ON oc.oid = ix.c
  JOIN pg_catalog.pg_type ot ON ot.oid = oc.opcintype
 CROSS JOIN (SELECT t.oid, t.typtype, CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END AS base
               FROM pg_catalog.pg_type t WHERE t.oid = $3::text::pg_catalog.regtype) nt
 WHERE k.conrelid = $1::text::oid AND k.contype = 'f' AND k.conparentid = 0 AND u.fk = $2::int4
   AND nt.typtype <> 'p' AND ot.typtype <> 'p' AND nt.base <> oc.opcintype
   AND NOT (EXISTS (SELECT FROM pg_catalog.pg_amop o WHERE o.amopfamily = oc.opcfamily AND o.amopstrategy = 3
                       AND o.amoplefttype = oc.opcintype AND o.amoprighttype = nt.base)
        AND EXISTS (SELECT FROM pg_catalog.pg_amop o WHERE o.amopfamily = oc.opcfamily AND o.amopstrategy = 3
                       AND o.amoplefttype = nt.base AND o.amoprighttype = nt.base))
   AND NOT EXISTS (SELECT FROM pg_catalog.pg_cast c WHERE c.castsource = nt.base
                      AND c.casttarget = oc.opcintype AND c.castcontext = 'i')
 ORDER BY k.oid
 LIMIT 1";

/// A foreign key of the column that the new type cannot take.
pub struct KeyMisfit {
    pub message: String,
    pub detail: String,
}

impl Driver {
    /// At the start: the first foreign key of the column the new type cannot
    /// take, with the server's words for it (a temporary copy cannot carry a
    /// key to a permanent table, so this looks at the catalog). None when all
    /// fit, or when the look cannot tell.
    pub async fn keys_fit(&self, r: &Rollout) -> Result<Option<KeyMisfit>, StepError> {
        let Ok(attnum) = self.attnum(r, &r.column).await else {
            return Ok(None);
        };
        let row = self
            .client
            .query_opt(
                KEY_MISFIT,
                &[&r.table_oid.to_string(), &attnum, &r.new_type],
            )
            .await;
        // A type name the service session cannot resolve: the expand says so.
        let Ok(Some(row)) = row else {
            return Ok(None);
        };
        let (name, column, referenced, new, key): (String, String, String, String, String) =
            (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
        Ok(Some(KeyMisfit {
            message: format!("foreign key constraint \"{name}\" cannot be implemented"),
            detail: format!(
                "Key columns \"{column}\" and \"{referenced}\" are of incompatible types: {new} and {key}."
            ),
        }))
    }

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
