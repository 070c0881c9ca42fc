//! Partitions attached to a partitioned table after a verify pass began: their
//! rows came with their own values in the new column, which no pass compared.
//! Before a cutover, each is checked on its own (no full pass for an empty
//! partition made on a schedule, as pg_partman does); a mismatch, or a check
//! that cannot finish in time, sends the rollout back to a full verify pass,
//! which repairs.

use super::driver::{ours, Driver, StepError};
use super::model::Rollout;
use super::sql;
use crate::sql::ident::literal;

/// A partition and its attachment: (name, (oid, attaching transaction)).
pub(super) type Attached = (String, (u32, u32));

/// A check of one partition's rows takes at most this long; a larger partition
/// gets the full pass.
const CHECK_TIMEOUT: &str = "10s";

/// The partitions of table $1 (oid, text) left half detached, as (partition,
/// parent): a `DETACH PARTITION … CONCURRENTLY` that was cancelled or failed
/// after its first transaction. Such a partition is out of the table for
/// every query and every `ALTER TABLE` that recurses (the renames and drops of
/// a cutover, finish or rollback would skip it), and `pg_partition_tree`, by
/// which pgshift looks at the code an UPDATE would run, leaves it out: its
/// `pg_inherits` row, rewritten, also reads as a new attachment. `pg_inherits`
/// takes no lock.
const DETACHING: &str = "
WITH RECURSIVE tree(oid, parent, pending) AS (
    SELECT i.inhrelid, i.inhparent, i.inhdetachpending FROM pg_catalog.pg_inherits i WHERE i.inhparent = $1::text::oid
    UNION SELECT i.inhrelid, i.inhparent, i.inhdetachpending FROM pg_catalog.pg_inherits i JOIN tree ON i.inhparent = tree.oid)
SELECT tree.oid::pg_catalog.regclass::text, tree.parent::pg_catalog.regclass::text FROM tree WHERE tree.pending
 ORDER BY 1";

/// The partitions, at every level, that a query of table $1 (oid, text)
/// reaches: what `FOREIGN_CODE` looked at (a partition under a half-detached
/// one keeps its own attachment, and is out of both).
const IN_TREE: &str = "
SELECT p.relid::pg_catalog.oid::pg_catalog.text FROM pg_catalog.pg_partition_tree($1::pg_catalog.text::pg_catalog.oid::pg_catalog.regclass) p";

/// The partitions of the rollout's table whose attachment is not among
/// `verified` (the attachments a verify pass saw from its start). A partition
/// detached, written and attached again has a new attachment.
pub(super) fn attached_since(r: &Rollout, verified: &[(u32, u32)]) -> Vec<Attached> {
    r.partitions
        .iter()
        .zip(&r.attachments)
        .filter(|(_, a)| !verified.contains(a))
        .map(|((name, _), a)| (name.clone(), *a))
        .collect()
}

impl Driver {
    /// Waits while a partition of the table is half detached (see
    /// [`DETACHING`]): a cutover, finish or rollback would leave it with the
    /// column as it was, and its rows and code were never looked at. A retry
    /// error (the driver tries again a few seconds later, keeping what it
    /// verified): a `DETACH … CONCURRENTLY` still waiting for readers ends on
    /// its own. Before every window that changes the phase, and under its
    /// lock (a `DETACH … CONCURRENTLY` needs a lock on the table that
    /// conflicts with it).
    pub(super) async fn refuse_detaching(&self, r: &Rollout) -> Result<(), StepError> {
        if !r.partitioned {
            return Ok(());
        }
        let found = self
            .client
            .query(DETACHING, &[&r.table_oid.to_string()])
            .await?;
        if found.is_empty() {
            return Ok(());
        }
        let finalize: Vec<String> = found
            .iter()
            .map(|row| {
                let (partition, parent): (String, String) = (row.get(0), row.get(1));
                format!("ALTER TABLE {parent} DETACH PARTITION {partition} FINALIZE")
            })
            .collect();
        Err(StepError {
            reason: format!(
                "a partition of {} is being detached (a DETACH PARTITION … CONCURRENTLY is waiting or did not finish); \
                 pgshift goes on once it is done: finish it with {}",
                r.qualified(),
                finalize.join("; ")
            ),
            retry: true,
            broken: false,
        })
    }

    /// True when no row of the `attached` partitions (their own partitions
    /// included) has a new value other than the transform's. Under the lock
    /// and the checks a batch runs under: nothing a user wrote runs here.
    /// False when a row differs, when a partition's attachment changed
    /// meanwhile, or when a check fails, waits too long for its lock or runs
    /// out of time: a full pass, which takes its locks batch by batch.
    pub(super) async fn attached_match(
        &self,
        r: &Rollout,
        attached: &[Attached],
        lock_ms: u64,
    ) -> Result<bool, StepError> {
        let begin = format!(
            "BEGIN; SET LOCAL lock_timeout = {}; SET LOCAL statement_timeout = {}; \
             SET LOCAL row_security = off; LOCK TABLE {} IN SHARE UPDATE EXCLUSIVE MODE",
            literal(&format!("{lock_ms}ms")),
            literal(CHECK_TIMEOUT),
            r.target()
        );
        self.client.batch_execute(&begin).await?;
        let result = self.attached_rows_match(r, attached).await;
        let _ = self.client.batch_execute("ROLLBACK").await;
        match result {
            Err(e) if !e.broken => {
                tracing::info!(target: "pgshift::rollout", rollout = r.id, reason = %e, "attached partitions not checked on their own");
                Ok(false)
            }
            other => other,
        }
    }

    async fn attached_rows_match(
        &self,
        r: &Rollout,
        attached: &[Attached],
    ) -> Result<bool, StepError> {
        let names = r.names();
        let function = format!("{}()", names.function);
        self.check_locked(r, &names.trigger, &function, &r.new_column)
            .await?;
        if !self.names_table(r).await? {
            return Err(ours(format!("{} was renamed meanwhile", r.qualified())));
        }
        // Under the lock, the partitions stay as they are now. None may be
        // half detached (since the driver looked): a partition under one
        // keeps its attachment, but is out of what `check_locked` looked at.
        self.refuse_detaching(r).await?;
        let now = self.load().await?;
        let tree: Vec<String> = self
            .client
            .query(IN_TREE, &[&r.table_oid.to_string()])
            .await?
            .iter()
            .map(|row| row.get(0))
            .collect();
        for (name, attachment) in attached {
            if !now.attachments.contains(attachment) || !tree.contains(&attachment.0.to_string()) {
                tracing::info!(target: "pgshift::rollout", rollout = r.id, partition = %name, "partition detached or attached again during its check");
                return Ok(false);
            }
            let table: String = self
                .client
                .query_one(
                    "SELECT $1::pg_catalog.text::pg_catalog.oid::pg_catalog.regclass::pg_catalog.text",
                    &[&attachment.0.to_string()],
                )
                .await?
                .get(0);
            let differs: bool = self
                .client
                .query_one(&sql::differs_in(r, &table), &[])
                .await?
                .get(0);
            if differs {
                tracing::info!(target: "pgshift::rollout", rollout = r.id, partition = %name, "an attached partition has rows whose new value differs: a verify pass repairs them");
                return Ok(false);
            }
        }
        Ok(true)
    }
}
