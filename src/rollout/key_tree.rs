//! A partitioned table's primary key or unique constraint on the changed
//! column: a catalog entry over one constraint per partition, each on its own
//! index. Its twins are built on the leaves beforehand (CREATE UNIQUE INDEX
//! CONCURRENTLY, see `build_twins`). In the lock window the old constraint is
//! dropped whole (with every partition's index), and after the renames and
//! the NOT NULL moved, the constraint is made again level by level, as
//! pg_dump restores one: `ON ONLY` on the partitioned levels (no build: an
//! invalid index), on each leaf's twin by `USING INDEX`, then every index
//! attached to its parent's, deepest first, which makes them valid. Every
//! level keeps its name; no statement scans a row.

use super::driver::{Driver, StepError};
use super::model::{Constraint, Rollout};
use super::sql::OldIndex;
use super::twins::in_part;
use crate::sql::ident::{qualified, quote};

/// Each constraint's definition by its index, as `ADD CONSTRAINT … <this>`
/// writes it, and its kind (a leaf's primary key may stand under the table's
/// unique constraint): $1 the indexes' oids (text).
const DEFINITIONS: &str = "
SELECT k.conindid::pg_catalog.text, pg_catalog.pg_get_constraintdef(k.oid), k.contype::pg_catalog.text
  FROM pg_catalog.pg_constraint k
 WHERE k.conindid OPERATOR(pg_catalog.=) ANY ($1::pg_catalog.text[]::pg_catalog.oid[])
   AND k.contype IN ('p', 'u')";

impl Driver {
    /// What the window runs, once the old constraint on `index` (the
    /// table's, by its oid: the tree is read now) is dropped and the column
    /// renamed, to make it again on the twins named `name(oid)` (the leaves'
    /// by [`in_part`]); and what the partitions said of their indexes (replica
    /// identity, CLUSTER ON), for once the constraints stand. The definitions
    /// are read now: their column names mean the other column after the renames.
    pub(super) async fn key_tree(
        &self,
        r: &Rollout,
        index: &OldIndex,
        name: impl Fn(u32) -> String,
    ) -> Result<(Vec<String>, Vec<String>), StepError> {
        let Some((constraint, _)) = &index.constraint else {
            return Ok((Vec::new(), Vec::new()));
        };
        let parts = self.index_parts(index.oid).await?;
        let levels: Vec<String> = std::iter::once(index.oid)
            .chain(parts.iter().map(|p| p.oid))
            .map(|oid| oid.to_string())
            .collect();
        let rows = self.client.query(DEFINITIONS, &[&levels]).await?;
        let read = |oid: u32| {
            rows.iter()
                .find(|row| row.get::<_, String>(0) == oid.to_string())
                .map(|row| (row.get::<_, String>(1), row.get::<_, String>(2)))
                .ok_or_else(|| {
                    super::driver::ours(format!(
                        "the constraint on index {oid} of {} changed while pgshift read it; ask again",
                        r.qualified()
                    ))
                })
        };
        let definition = |oid: u32| read(oid).map(|(text, _)| text);
        let mut made = vec![format!(
            "ALTER TABLE ONLY {} ADD CONSTRAINT {} {}",
            r.qualified(),
            quote(constraint),
            definition(index.oid)?
        )];
        for p in &parts {
            made.push(match p.partitioned {
                true => format!(
                    "ALTER TABLE ONLY {} ADD CONSTRAINT {} {}",
                    p.table.qualified,
                    quote(&p.name),
                    definition(p.oid)?
                ),
                false => format!(
                    "ALTER TABLE ONLY {} ADD CONSTRAINT {} {} USING INDEX {}",
                    p.table.qualified,
                    quote(&p.name),
                    Constraint::of(&read(p.oid)?.1)
                        .unwrap_or(Constraint::Unique)
                        .sql(),
                    quote(&in_part(&name, index.oid, p.table.oid))
                ),
            });
        }
        // Each level's index has its constraint's name once it is made.
        let named = |oid: u32| match parts.iter().find(|p| p.oid == oid) {
            Some(p) => qualified(&p.table.schema, &p.name),
            None => qualified(&r.schema, constraint),
        };
        let mut marks = Vec::new();
        for p in parts.iter().rev() {
            made.push(format!(
                "ALTER INDEX {} ATTACH PARTITION {}",
                named(p.parent),
                named(p.oid)
            ));
            marks.extend(p.table_marks());
        }
        Ok((made, marks))
    }
}
