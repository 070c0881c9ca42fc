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
use super::twins::{old_index, pass_index_name, Place};
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

/// Which of $1 (index oids, text) are attached to an index of a parent.
const ATTACHED: &str = "
SELECT i.inhrelid::pg_catalog.text FROM pg_catalog.pg_inherits i
 WHERE i.inhrelid OPERATOR(pg_catalog.=) ANY ($1::pg_catalog.text[]::pg_catalog.oid[])";

impl Driver {
    /// The leaf partitions' own plain indexes on `column`, by partition.
    pub(super) async fn leaf_indexes(
        &self,
        r: &Rollout,
        column: &str,
    ) -> Result<Vec<LeafIndex>, StepError> {
        if !r.partitioned {
            return Ok(Vec::new());
        }
        let oids: Vec<String> = r.partitions.iter().map(|p| p.1.to_string()).collect();
        let leaves = self.client.query(LEAVES, &[&oids]).await?;
        let mut found = Vec::new();
        for leaf in leaves {
            let table = Place {
                oid: leaf.get::<_, String>(0).parse().unwrap_or(0),
                schema: leaf.get(1),
                qualified: leaf.get(2),
            };
            let attnum = self.attnum_in(table.oid, column).await?;
            let rows = self
                .client
                .query(
                    super::start::REBUILDABLE,
                    &[&table.oid.to_string(), &attnum],
                )
                .await?;
            let indexes: Vec<sql::OldIndex> = rows.iter().map(old_index).collect();
            let ids: Vec<String> = indexes.iter().map(|i| i.oid.to_string()).collect();
            let attached: Vec<u32> = self
                .client
                .query(ATTACHED, &[&ids])
                .await?
                .iter()
                .filter_map(|x| x.get::<_, String>(0).parse().ok())
                .collect();
            found.extend(
                indexes
                    .into_iter()
                    .filter(|i| i.constraint.is_none() && !i.shaped && !attached.contains(&i.oid))
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

    /// A rollback after the cutover: each old index takes its name back from
    /// its twin (parked as it was built), with what the partition says of the
    /// twin. A twin dropped since leaves its old index parked.
    pub(super) async fn leaf_unswap(
        &self,
        r: &Rollout,
    ) -> Result<(Vec<String>, Vec<String>), StepError> {
        let n = r.names();
        let now = self.leaf_indexes(r, &r.column).await?;
        let mut renames = Vec::new();
        let mut marks = Vec::new();
        for (oid, table, name) in &r.leaf_indexes {
            let Some(twin) = now
                .iter()
                .find(|l| l.table.oid == *table && l.index.name == *name)
            else {
                continue;
            };
            renames.extend(pass_index_name(
                &twin.table.schema,
                name,
                &n.new_index(*oid),
                &n.old_index(*oid),
            ));
            marks.extend(twin.index.table_marks(&twin.table.qualified));
        }
        Ok((renames, marks))
    }
}
