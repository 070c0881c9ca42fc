//! A leaf partition's own indexes on the changed column: made on the
//! partition itself, attached to none of the table's. Each gets its twin on
//! that partition (`CREATE INDEX CONCURRENTLY`), which takes the index's name
//! in the cutover's window (the index is parked, and goes with the old
//! column at the finish); a rollback after the cutover gives the name back.
//! Plain ones only (on columns, no predicate, behind no constraint), as
//! `PARTITIONS_USERS` lets through.

use super::driver::{Driver, StepError};
use super::model::Rollout;
use super::sql;
use super::twins::{pass_index_name, Place};
use crate::context::Settings;

/// A leaf partition's own index, and its partition.
pub(super) struct LeafIndex {
    pub index: sql::OldIndex,
    pub table: Place,
}

impl LeafIndex {
    /// How `indexes` records it (see [`super::model::leaf_index`]).
    pub fn entry(&self) -> String {
        format!(
            "l:{}:{}:{}",
            self.index.oid, self.table.oid, self.index.name
        )
    }
}

/// The leaf partitions among $1 (oids, text): oid, schema, qualified name.
const LEAVES: &str = "
SELECT c.oid::pg_catalog.text, n.nspname::pg_catalog.text, pg_catalog.format('%I.%I', n.nspname, c.relname)
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
 WHERE c.oid OPERATOR(pg_catalog.=) ANY ($1::pg_catalog.text[]::pg_catalog.oid[]) AND c.relkind OPERATOR(pg_catalog.=) 'r'
 ORDER BY c.oid";

/// An index's name and schema now, by oid ($1, text).
const INDEX_NAME: &str = "
SELECT c.relname::pg_catalog.text, n.nspname::pg_catalog.text
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
 WHERE c.oid OPERATOR(pg_catalog.=) $1::pg_catalog.text::pg_catalog.oid AND c.relkind OPERATOR(pg_catalog.=) 'i'";

/// Whether schema $1 has a relation named $2.
const NAME_TAKEN: &str = "
SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
                WHERE n.nspname OPERATOR(pg_catalog.=) $1::pg_catalog.text::pg_catalog.name
                  AND c.relname OPERATOR(pg_catalog.=) $2::pg_catalog.text::pg_catalog.name)";

impl Driver {
    /// The leaf partitions' own plain indexes on `column` (see
    /// `start::LEAF_OWN`): (oid, partition's oid, name), by oid. One query:
    /// the cutover's window reads it under its lock.
    pub(super) async fn leaf_own(
        &self,
        r: &Rollout,
        column: &str,
    ) -> Result<Vec<(u32, u32, String)>, StepError> {
        if !r.partitioned {
            return Ok(Vec::new());
        }
        let rows = self
            .client
            .query(super::start::LEAF_OWN, &[&r.table_oid.to_string(), &column])
            .await?;
        Ok(rows
            .iter()
            .filter_map(|x| {
                Some((
                    x.get::<_, String>(0).parse().ok()?,
                    x.get::<_, String>(1).parse().ok()?,
                    x.get(2),
                ))
            })
            .collect())
    }

    /// The leaf partitions' own plain indexes on `column`, with what it takes
    /// to build their twins.
    pub(super) async fn leaf_indexes(
        &self,
        r: &Rollout,
        column: &str,
    ) -> Result<Vec<LeafIndex>, StepError> {
        let own = self.leaf_own(r, column).await?;
        if own.is_empty() {
            return Ok(Vec::new());
        }
        let mut oids: Vec<String> = own.iter().map(|o| o.1.to_string()).collect();
        oids.dedup();
        let leaves = self.client.query(LEAVES, &[&oids]).await?;
        let mut found = Vec::new();
        for leaf in leaves {
            let table = Place {
                oid: leaf.get::<_, String>(0).parse().unwrap_or(0),
                schema: leaf.get(1),
                qualified: leaf.get(2),
            };
            found.extend(
                self.rebuildable_in(table.oid, column)
                    .await?
                    .into_iter()
                    .filter(|i| own.iter().any(|o| o.0 == i.oid))
                    .map(|index| LeafIndex {
                        index,
                        table: table.clone(),
                    }),
            );
        }
        Ok(found)
    }

    /// Builds the twin of each of `leaves` on the new column, once.
    pub(super) async fn build_leaf_twins(
        &self,
        settings: &Settings,
        r: &Rollout,
        leaves: &[LeafIndex],
    ) -> Result<(), StepError> {
        let n = r.names();
        for leaf in leaves {
            let to_attnum = self.attnum_in(leaf.table.oid, &r.new_column).await?;
            self.build_twin(
                settings,
                r,
                &leaf.index,
                &n.new_index(leaf.index.oid),
                &leaf.table,
                to_attnum,
                &r.column,
                &r.new_column,
            )
            .await?;
        }
        Ok(())
    }

    /// The cutover's renames (each twin takes its index's name, the index is
    /// parked) and what the partitions say of the indexes (replica identity,
    /// CLUSTER ON), for the twins, to run once the NOT NULL has moved.
    pub(super) fn leaf_swap(r: &Rollout, leaves: &[LeafIndex]) -> (Vec<String>, Vec<String>) {
        let n = r.names();
        let mut renames = Vec::new();
        let mut marks = Vec::new();
        for leaf in leaves {
            renames.extend(pass_index_name(
                &leaf.table.schema,
                &leaf.index.name,
                &n.old_index(leaf.index.oid),
                &n.new_index(leaf.index.oid),
            ));
            marks.extend(leaf.index.table_marks(&leaf.table.qualified));
        }
        (renames, marks)
    }

    /// The leaf partitions' own indexes on the new column (after the
    /// cutover, `column`) that are not the twins pgshift made: a rollback
    /// would drop them with the column.
    pub(super) async fn leaf_added(&self, r: &Rollout) -> Result<Vec<String>, StepError> {
        Ok(self
            .leaf_own(r, &r.column)
            .await?
            .into_iter()
            .filter(|(_, table, name)| {
                !r.leaf_indexes
                    .iter()
                    .any(|(_, t, n)| t == table && n == name)
            })
            .map(|(_, _, name)| name)
            .collect())
    }

    /// A rollback after the cutover: each old index (by oid, whatever its
    /// name now) takes its name back from its twin, which is parked as it was
    /// built, with what the partition says of the twin; if the twin is gone,
    /// the old index takes the name if it is free. One whose old index is
    /// gone stays as it is (and goes with the new column).
    pub(super) async fn leaf_unswap(
        &self,
        r: &Rollout,
    ) -> Result<(Vec<String>, Vec<String>), StepError> {
        let n = r.names();
        let now = self.leaf_indexes(r, &r.column).await?;
        let mut renames = Vec::new();
        let mut marks = Vec::new();
        for (oid, table, name) in &r.leaf_indexes {
            let Some(old) = self
                .client
                .query_opt(INDEX_NAME, &[&oid.to_string()])
                .await?
            else {
                tracing::warn!(target: "pgshift::rollout", rollout = r.id, index = %name, "the old index of a partition is gone: its twin goes with the new column");
                continue;
            };
            let (old_name, schema): (String, String) = (old.get(0), old.get(1));
            match now
                .iter()
                .find(|l| l.table.oid == *table && l.index.name == *name)
            {
                Some(twin) => {
                    renames.extend(pass_index_name(
                        &schema,
                        name,
                        &n.new_index(*oid),
                        &old_name,
                    ));
                    marks.extend(twin.index.table_marks(&twin.table.qualified));
                }
                None => {
                    let taken: bool = self
                        .client
                        .query_one(NAME_TAKEN, &[&schema, name])
                        .await?
                        .get(0);
                    if !taken && old_name != *name {
                        renames.push(format!(
                            "ALTER INDEX {} RENAME TO {}",
                            crate::sql::ident::qualified(&schema, &old_name),
                            crate::sql::ident::quote(name)
                        ));
                    }
                }
            }
        }
        Ok((renames, marks))
    }
}
