//! The backfill behind `add-column`: one transaction per batch, walking the table's
//! heap pages with TID ranges (linear in the table size, unlike repeated scans for
//! NULLs), then a sweep for rows that moved past the last page while it ran.

use super::conn::{Conn, Reply, ServerError};
use super::steps::{ms, StepContext};
use crate::sql::ident::literal;
use crate::sql::plan::{Step, StepKind};
use std::io;
use std::time::Duration;

/// Where a backfill stands, kept across lock-timeout retries.
#[derive(Debug, Default)]
pub(super) struct Fill {
    pub(super) rows: u64,
    /// Heap pages to walk, read once at the start; next page to do.
    pages: Option<(u64, u64)>,
    next_page: u64,
}

/// Walks the table's pages in batches (one transaction each), then sweeps rows
/// that moved past the last page meanwhile.
pub(super) async fn backfill<C: Conn>(
    conn: &mut C,
    step: &Step,
    cx: &StepContext<'_>,
    fill: &mut Fill,
) -> io::Result<Result<(), ServerError>> {
    let StepKind::Backfill { table, by_pages } = &step.kind else {
        return Ok(Ok(()));
    };
    let run = |sql: String| {
        format!(
            "BEGIN; SET LOCAL lock_timeout = {}; SET LOCAL statement_timeout = {}; {sql}; COMMIT",
            ms(cx.ddl.lock_timeout_ms),
            ms(cx.ddl.long_step_timeout_ms)
        )
    };
    let (pages, per_batch) = match fill.pages {
        Some(p) => p,
        None => {
            let p = table_pages(conn, table, cx.ddl.backfill_batch_rows).await?;
            fill.pages = Some(p);
            p
        }
    };
    let pause = Duration::from_millis(cx.ddl.backfill_pause_ms);
    while fill.next_page < pages {
        let to = fill.next_page + per_batch;
        let sql = by_pages
            .replace("$FROM", &format!("'({},0)'::tid", fill.next_page))
            .replace("$TO", &format!("'({to},0)'::tid"));
        let reply = conn.query(&run(sql)).await?;
        if let Some(e) = reply.error {
            conn.query("ROLLBACK").await?;
            return Ok(Err(e));
        }
        fill.rows += updated(&reply);
        fill.next_page = to;
        tokio::time::sleep(pause).await;
    }
    let sweep = run(step
        .sql
        .replace("$BATCH", &cx.ddl.backfill_batch_rows.to_string()));
    // A default that can itself be NULL would match again and again: a pass that
    // fills less than a batch has seen every remaining row, and passes are capped.
    for _ in 0..SWEEP_PASSES {
        let reply = conn.query(&sweep).await?;
        if let Some(e) = reply.error {
            conn.query("ROLLBACK").await?;
            return Ok(Err(e));
        }
        let rows = updated(&reply);
        fill.rows += rows;
        if rows < cx.ddl.backfill_batch_rows {
            return Ok(Ok(()));
        }
        tokio::time::sleep(pause).await;
    }
    tracing::warn!(
        table,
        "backfill sweep stopped after {SWEEP_PASSES} full batches: the default may produce NULL"
    );
    Ok(Ok(()))
}

/// Most sweep passes after the page walk (rows that moved while it ran are few).
const SWEEP_PASSES: u32 = 100;

/// Heap pages of `table` (its largest leaf partition, for a partitioned table; a
/// plain table is not in its own partition tree) and
/// how many pages hold about `batch_rows` rows.
async fn table_pages<C: Conn>(
    conn: &mut C,
    table: &str,
    batch_rows: u64,
) -> io::Result<(u64, u64)> {
    let sql = format!(
        "SELECT coalesce(max(pg_relation_size(t.relid)) / current_setting('block_size')::bigint, 0), \
         coalesce(sum(c.reltuples) FILTER (WHERE c.reltuples > 0) / nullif(sum(c.relpages) FILTER (WHERE c.reltuples > 0), 0), 100)::bigint \
         FROM (SELECT relid FROM pg_partition_tree(to_regclass({t})) WHERE isleaf \
         UNION SELECT to_regclass({t})) t JOIN pg_class c ON c.oid = t.relid",
        t = literal(table)
    );
    let reply = conn.query(&sql).await?;
    let value = |i: usize| -> u64 { reply.cell(i).parse().unwrap_or(0) };
    let per_page = value(1).max(1);
    Ok((value(0), (batch_rows / per_page).max(1)))
}

/// Rows the batch UPDATE touched: the largest count among the statements' tags.
fn updated(reply: &Reply) -> u64 {
    reply
        .tags
        .iter()
        .filter_map(|t| t.rsplit(' ').next()?.parse::<u64>().ok())
        .max()
        .unwrap_or(0)
}
