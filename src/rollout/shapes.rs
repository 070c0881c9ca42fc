//! Indexes on the changed column with expressions or a predicate ("shaped":
//! `(lower(note), amount)`, `(amount % 10)`, `… WHERE amount > 0`). Directly, the
//! ALTER builds them again from their definitions, read over the new type. A
//! rollout builds each twin (CONCURRENTLY, like the other twins) from the
//! definition Postgres prints for it on a temporary, empty copy of the table
//! whose column was renamed to the new column's name and then changed to the
//! new type: the same text the direct ALTER would read, with the column's new
//! name, and literals, quoting and other columns as they were. A definition
//! that does not work with the new type fails there, with the server's error.

use super::checks::CheckError;
use super::driver::{Driver, StepError};
use super::model::Rollout;
use super::sql::OldIndex;
use super::twins::Place;
use crate::sql::ident::quote;

/// Index definitions from `USING` on (what follows `CREATE [UNIQUE] INDEX name
/// ON [ONLY] schema.table `, ONLY for a partitioned table's; the session's own
/// temporary schema prints as `pg_temp`),
/// for the indexes `x` the WHERE clause picks.
fn tails(filter: &str) -> String {
    format!(
        "SELECT x.indexrelid::pg_catalog.text, c.relname::pg_catalog.text,
       (SELECT pg_catalog.substr(s.d, pg_catalog.length(s.p) OPERATOR(pg_catalog.+) 1)
          FROM (SELECT pg_catalog.pg_get_indexdef(x.indexrelid) AS d,
                       pg_catalog.format('CREATE %sINDEX %I ON %s%s.%I ',
                              CASE WHEN x.indisunique THEN 'UNIQUE ' ELSE '' END, c.relname,
                              CASE WHEN t.relkind OPERATOR(pg_catalog.=) 'p' THEN 'ONLY ' ELSE '' END,
                              CASE WHEN n.oid OPERATOR(pg_catalog.=) pg_catalog.pg_my_temp_schema() THEN 'pg_temp'
                                   ELSE pg_catalog.quote_ident(n.nspname) END,
                              t.relname) AS p) s
         WHERE pg_catalog.starts_with(s.d, s.p)),
       (SELECT pg_catalog.string_agg(pg_catalog.pg_describe_object(d.refclassid, d.refobjid, d.refobjsubid), ', ')
          FROM pg_catalog.pg_depend d
         WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass
           AND d.objid OPERATOR(pg_catalog.=) x.indexrelid
           AND d.refclassid IN ('pg_catalog.pg_proc'::pg_catalog.regclass, 'pg_catalog.pg_operator'::pg_catalog.regclass,
                                'pg_catalog.pg_type'::pg_catalog.regclass)
           AND d.refobjid OPERATOR(pg_catalog.>=) 16384)
  FROM pg_catalog.pg_index x
  JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) x.indexrelid
  JOIN pg_catalog.pg_class t ON t.oid OPERATOR(pg_catalog.=) x.indrelid
  JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) t.relnamespace
 WHERE {filter}
 ORDER BY x.indexrelid"
    )
}

impl Driver {
    /// Fills in `definition` for the shaped ones among `indexes` (see the
    /// module's comment).
    pub(super) async fn shape(
        &self,
        r: &Rollout,
        indexes: &mut [OldIndex],
    ) -> Result<(), CheckError> {
        let oids: Vec<String> = indexes
            .iter()
            .filter(|i| i.shaped)
            .map(|i| i.oid.to_string())
            .collect();
        if oids.is_empty() {
            return Ok(());
        }
        let rows = self
            .client
            .query(
                &tails("x.indexrelid OPERATOR(pg_catalog.=) ANY ($1::pg_catalog.text[]::pg_catalog.oid[])"),
                &[&oids],
            )
            .await?;
        let name = format!("pgshift_shapes_{}", r.id);
        let copy = format!("pg_temp.{name}");
        let (c, new) = (quote(&r.column), quote(&r.new_column));
        let mut steps = vec![
            "BEGIN".to_string(),
            format!("CREATE TEMPORARY TABLE {name} (LIKE {})", r.qualified()),
            format!("ALTER TABLE {copy} DROP COLUMN IF EXISTS {new}"),
        ];
        for row in &rows {
            let (oid, index): (String, String) = (row.get(0), row.get(1));
            let tail: Option<String> = row.get(2);
            // Its text is parsed again as pgshift's service role: a literal of a
            // type that is not built in would run that type's input function.
            if let Some(foreign) = row.get::<_, Option<String>>(3) {
                return Err(CheckError::Foreign(format!(
                    "index {} uses {foreign}",
                    quote(&index)
                )));
            }
            let Some(tail) = tail else {
                return Err(CheckError::Step(super::driver::ours(format!(
                    "pgshift could not read the definition of index {}",
                    quote(&index)
                ))));
            };
            let unique = indexes.iter().any(|i| i.oid.to_string() == oid && i.unique);
            steps.push(format!(
                "CREATE {}INDEX pgshift_shape_{oid} ON {copy} {tail}",
                if unique { "UNIQUE " } else { "" }
            ));
        }
        steps.push(format!("ALTER TABLE {copy} RENAME COLUMN {c} TO {new}"));
        steps.push(format!(
            "ALTER TABLE {copy} ALTER COLUMN {new} TYPE {} USING NULL",
            r.new_type
        ));
        let result = async {
            self.client.batch_execute(&steps.join("; ")).await?;
            let printed = self
                .client
                .query(
                    &tails(&format!(
                        "x.indrelid OPERATOR(pg_catalog.=) '{copy}'::pg_catalog.regclass"
                    )),
                    &[],
                )
                .await?;
            Ok::<_, CheckError>(printed)
        }
        .await;
        let _ = self.client.batch_execute("ROLLBACK").await;
        let printed = result?;
        for index in indexes.iter_mut().filter(|i| i.shaped) {
            let copy_name = format!("pgshift_shape_{}", index.oid);
            index.definition = printed
                .iter()
                .find(|row| row.get::<_, String>(1) == copy_name)
                .and_then(|row| row.get::<_, Option<String>>(2));
            if index.definition.is_none() {
                return Err(CheckError::Step(super::driver::ours(format!(
                    "pgshift could not carry index {} over to the new column",
                    quote(&index.name)
                ))));
            }
        }
        Ok(())
    }

    /// At the start: fails with the server's error if an index on the column
    /// with expressions or a predicate does not work with the new type.
    pub async fn shapes_fit(&self, r: &Rollout) -> Result<(), CheckError> {
        let mut old = self.old_indexes(r).await?;
        self.shape(r, &mut old).await
    }

    /// Whether the index named `twin` in `table`'s schema is the valid twin
    /// of shaped index `old`: on that table (the rollout's, or a partition of
    /// it), and printed as its definition. None: there is no such index;
    /// Some((valid, is_the_twin)).
    pub(super) async fn shaped_twin(
        &self,
        table: &Place,
        twin: &str,
        old: &OldIndex,
    ) -> Result<Option<(bool, bool)>, StepError> {
        let tail = old.definition.clone().unwrap_or_default();
        let row = self
            .client
            .query_opt(
                "SELECT x.indisvalid, x.indrelid OPERATOR(pg_catalog.=) $3::text::oid \
                   AND x.indisunique OPERATOR(pg_catalog.=) $4::bool \
                   AND pg_catalog.pg_get_indexdef(x.indexrelid) OPERATOR(pg_catalog.=) \
                       pg_catalog.format('CREATE %sINDEX %I ON %I.%I %s', CASE WHEN x.indisunique THEN 'UNIQUE ' ELSE '' END, \
                                         c.relname, $2::text, t.relname, $5::text) \
                 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_index x ON x.indexrelid = c.oid \
                 JOIN pg_catalog.pg_class t ON t.oid = x.indrelid \
                 WHERE c.relname = $1::text::name \
                   AND c.relnamespace = (SELECT n.oid FROM pg_catalog.pg_namespace n WHERE n.nspname = $2::text::name)",
                &[
                    &twin,
                    &table.schema,
                    &table.oid.to_string(),
                    &old.unique,
                    &tail,
                ],
            )
            .await?;
        Ok(row.map(|x| (x.get(0), x.get(1))))
    }
}
