//! The backfill behind `add-column`: one transaction per batch, walking the table's
//! heap pages with TID ranges (linear in the table size, unlike repeated scans for
//! NULLs), then a sweep for rows that moved past the last page while it ran.

use super::conn::{Conn, ServerError};
use super::steps::{cancel_error, ms, StepContext};
use crate::sql::ident::literal;
use crate::sql::plan::{Step, StepKind};
use std::io;
use std::time::Duration;

/// Where a backfill stands, kept across lock-timeout retries.
#[derive(Debug, Default)]
pub(super) struct Fill {
    pub(super) rows: u64,
    /// Heap pages to walk and the most pages per batch (`ddl.backfill_batch_rows`
    /// worth), read once at the start; next page to do.
    pages: Option<(u64, u64)>,
    next_page: u64,
    /// Pages in the next batch: shrunk when a batch holds its row locks longer
    /// than half the stall budget, grown back when it is quick.
    per_batch: u64,
    /// The batches run with `session_replication_role = replica`, so that the
    /// table's UPDATE triggers and rules stay quiet (read once at the start).
    quiet: Option<bool>,
}

impl Fill {
    /// The next batch's size in pages after one of `took` over `pages` pages.
    fn resize(&mut self, pages: u64, took: Duration, budget_ms: u64, most: u64) {
        if budget_ms == 0 {
            self.per_batch = most;
            return;
        }
        let target = Duration::from_millis(budget_ms) / 2;
        self.per_batch = if took > target {
            let scaled = pages as f64 * target.as_secs_f64() / took.as_secs_f64();
            (scaled as u64).max(1)
        } else if took < target / 2 {
            pages.saturating_mul(2)
        } else {
            pages
        }
        .clamp(1, most);
    }
}

/// Walks the table's pages in batches (one transaction each), then sweeps rows
/// that moved past the last page meanwhile. Ranges and limits travel as bind
/// parameters: the statements hold the user's default expression, and no text is
/// ever replaced inside them.
pub(super) async fn backfill<C: Conn>(
    conn: &mut C,
    step: &Step,
    cx: &StepContext<'_>,
    fill: &mut Fill,
) -> io::Result<Result<(), ServerError>> {
    match fill_rows(conn, step, cx, fill).await? {
        Err(e) if e.code == "23514" => Ok(Err(not_valid_check(conn, step, e).await?)),
        done => Ok(done),
    }
}

/// A batch stopped by a CHECK constraint: when it is NOT VALID, old rows break
/// it, which Postgres' rewrite would not have checked; the fill's UPDATEs do.
async fn not_valid_check<C: Conn>(
    conn: &mut C,
    step: &Step,
    mut e: ServerError,
) -> io::Result<ServerError> {
    let StepKind::Backfill { table, .. } = &step.kind else {
        return Ok(e);
    };
    let Some((_, name)) = e.fields.iter().find(|(k, _)| *k == b'n').cloned() else {
        return Ok(e);
    };
    let reply = conn
        .query_params(
            "SELECT pg_catalog.pg_get_expr(c.conbin, c.conrelid) FROM pg_catalog.pg_constraint c \
             WHERE c.conrelid OPERATOR(pg_catalog.=) pg_catalog.to_regclass($1) \
             AND c.conname OPERATOR(pg_catalog.=) $2 AND NOT c.convalidated AND c.contype OPERATOR(pg_catalog.=) 'c'",
            &[table, &name],
        )
        .await?;
    if reply.error.is_none() && !reply.rows.is_empty() {
        let hint = format!(
            "Constraint \"{name}\" is NOT VALID and old rows of {table} break it: Postgres' rewrite for this ADD COLUMN would not check them, but pgshift fills the column with UPDATEs, which do. Mend the rows (WHERE NOT ({})) or drop the constraint, then run the statement again.",
            reply.cell(0)
        );
        e.fields.retain(|(k, _)| *k != b'H');
        e.fields.push((b'H', hint.clone()));
        e.hint = Some(hint);
    }
    Ok(e)
}

async fn fill_rows<C: Conn>(
    conn: &mut C,
    step: &Step,
    cx: &StepContext<'_>,
    fill: &mut Fill,
) -> io::Result<Result<(), ServerError>> {
    let StepKind::Backfill {
        table,
        by_pages,
        rest,
        ..
    } = &step.kind
    else {
        return Ok(Ok(()));
    };
    let quiet = match fill.quiet {
        Some(q) => q,
        None => match quiet_updates(conn, table).await? {
            Ok(q) => *fill.quiet.insert(q),
            Err(e) => return Ok(Err(e)),
        },
    };
    let (pages, most) = match fill.pages {
        Some(p) => p,
        None => {
            let p = table_pages(conn, table, cx.ddl.backfill_batch_rows).await?;
            fill.pages = Some(p);
            fill.per_batch = p.1;
            p
        }
    };
    let pause = Duration::from_millis(cx.ddl.backfill_pause_ms);
    while fill.next_page < pages {
        let size = fill.per_batch.clamp(1, most);
        let to = fill.next_page + size;
        let (from, until) = (format!("({},0)", fill.next_page), format!("({to},0)"));
        let held = match batch_timed(conn, cx, quiet, by_pages, &[&from, &until]).await? {
            Ok((rows, held)) => {
                fill.rows += rows;
                held
            }
            Err(e) => return Ok(Err(e)),
        };
        fill.resize(size, held, cx.ddl.stall_budget_ms, most);
        fill.next_page = to;
        if !conn.pause(pause).await {
            return Ok(Err(cancel_error()));
        }
    }
    // A default that can itself be NULL would match again and again: a pass that
    // fills less than a batch has seen every remaining row, and passes are capped.
    let limit = cx.ddl.backfill_batch_rows.to_string();
    for _ in 0..SWEEP_PASSES {
        let rows = match batch(conn, cx, quiet, &step.sql, &[&limit]).await? {
            Ok(rows) => rows,
            Err(e) => return Ok(Err(e)),
        };
        fill.rows += rows;
        if rows < cx.ddl.backfill_batch_rows {
            // Fewer than a batch are left, but rows updated meanwhile moved to
            // ctids this sweep did not list: one plain UPDATE finds them.
            if !rest.is_empty() {
                match batch(conn, cx, quiet, rest, &[]).await? {
                    Ok(rows) => fill.rows += rows,
                    Err(e) => return Ok(Err(e)),
                }
            }
            return Ok(Ok(()));
        }
        if !conn.pause(pause).await {
            return Ok(Err(cancel_error()));
        }
    }
    tracing::warn!(
        table,
        "backfill sweep stopped after {SWEEP_PASSES} full batches: the default may produce NULL"
    );
    Ok(Ok(()))
}

/// One batch in a transaction of its own, under lock_timeout and the long-step
/// statement_timeout; returns the rows it updated.
async fn batch<C: Conn>(
    conn: &mut C,
    cx: &StepContext<'_>,
    quiet: bool,
    sql: &str,
    params: &[&str],
) -> io::Result<Result<u64, ServerError>> {
    Ok(batch_timed(conn, cx, quiet, sql, params)
        .await?
        .map(|(rows, _)| rows))
}

/// [`batch`], and how long it held its row locks: from the UPDATE's start to
/// the COMMIT's answer (the BEGIN before it takes none).
async fn batch_timed<C: Conn>(
    conn: &mut C,
    cx: &StepContext<'_>,
    quiet: bool,
    sql: &str,
    params: &[&str],
) -> io::Result<Result<(u64, Duration), ServerError>> {
    if conn.cancelled() {
        return Ok(Err(cancel_error()));
    }
    let begin = format!(
        "BEGIN; SET LOCAL lock_timeout = {}; SET LOCAL statement_timeout = {}{}",
        ms(super::blockers::attempt_ms(cx.ddl)),
        ms(cx.ddl.long_step_timeout_ms),
        if quiet {
            "; SET LOCAL session_replication_role = replica"
        } else {
            ""
        }
    );
    let mut reply = conn.query(&begin).await?;
    let mut rows = 0;
    let started = std::time::Instant::now();
    if reply.error.is_none() {
        reply = conn.query_params(sql, params).await?;
        rows = reply.last_count();
    }
    if let Some(e) = reply.error {
        conn.query("ROLLBACK").await?;
        return Ok(Err(e));
    }
    let end = conn.query("COMMIT").await?;
    Ok(match end.error {
        Some(e) => Err(e),
        None => Ok((rows, started.elapsed())),
    })
}

/// The UPDATE triggers and rules of a table and of its partitions or
/// inheritance children (the fill's UPDATE reaches them all), enabled and not
/// internal, but not pgshift's own: the names of those an UPDATE fires
/// (ENABLE, ENABLE ALWAYS), whether any fires under `session_replication_role =
/// replica` (ENABLE REPLICA, ENABLE ALWAYS), and whether the session may set
/// that role (superuser, or granted `SET` on it, Postgres 15).
const UPDATE_CODE: &str = "\
WITH RECURSIVE r(oid) AS (
  SELECT pg_catalog.to_regclass($1)::pg_catalog.oid
  UNION SELECT i.inhrelid FROM pg_catalog.pg_inherits i, r WHERE i.inhparent OPERATOR(pg_catalog.=) r.oid),
code AS (
  SELECT 'trigger ' OPERATOR(pg_catalog.||) pg_catalog.quote_ident(t.tgname) AS name, t.tgenabled AS enabled
  FROM pg_catalog.pg_trigger t, r
  WHERE t.tgrelid OPERATOR(pg_catalog.=) r.oid AND NOT t.tgisinternal
    AND (t.tgtype::pg_catalog.int4 OPERATOR(pg_catalog.&) 16) OPERATOR(pg_catalog.<>) 0
    AND t.tgenabled OPERATOR(pg_catalog.<>) 'D'
    -- pgshift's own (a fill's or a rollout's mirror, its function in schema
    -- pgshift) fire for every writer alike, these batches too.
    AND NOT EXISTS (SELECT FROM pg_catalog.pg_proc p WHERE p.oid OPERATOR(pg_catalog.=) t.tgfoid
                    AND p.pronamespace OPERATOR(pg_catalog.=) pg_catalog.to_regnamespace('pgshift'))
  UNION ALL
  SELECT 'rule ' OPERATOR(pg_catalog.||) pg_catalog.quote_ident(w.rulename), w.ev_enabled
  FROM pg_catalog.pg_rewrite w, r
  WHERE w.ev_class OPERATOR(pg_catalog.=) r.oid AND w.ev_type OPERATOR(pg_catalog.=) '2'
    AND w.ev_enabled OPERATOR(pg_catalog.<>) 'D')
SELECT pg_catalog.string_agg(DISTINCT name, ', ' ORDER BY name)
         FILTER (WHERE enabled OPERATOR(pg_catalog.=) ANY ('{O,A}'::\"char\"[])),
  pg_catalog.bool_or(enabled OPERATOR(pg_catalog.=) ANY ('{R,A}'::\"char\"[]))::pg_catalog.text,
  pg_catalog.current_setting('is_superuser')
FROM code";

/// For a backfill step deferred from the client's transaction: the refusal it
/// would meet after COMMIT (see [`quiet_updates`]), found now.
pub(super) async fn fits<C: Conn>(
    conn: &mut C,
    step: &Step,
) -> io::Result<Result<(), ServerError>> {
    match &step.kind {
        StepKind::Backfill { table, .. } => Ok(quiet_updates(conn, table).await?.map(|_| ())),
        _ => Ok(Ok(())),
    }
}

/// Whether the batches must keep the table's UPDATE triggers and rules quiet:
/// Postgres fills a new column by rewriting the table, and none of them fires.
/// Through UPDATEs they would, once per row (a version bumped, an audit row, an
/// append-only table refusing): `session_replication_role = replica` keeps the
/// ordinary ones quiet. When the session may not set it, or a trigger fires
/// even so, the fill is refused (`0A000`) before any row changes.
async fn quiet_updates<C: Conn>(
    conn: &mut C,
    table: &str,
) -> io::Result<Result<bool, ServerError>> {
    let reply = conn.query_params(UPDATE_CODE, &[table]).await?;
    if let Some(e) = reply.error {
        return Ok(Err(e));
    }
    // None an UPDATE fires (only ENABLE REPLICA ones, or none at all).
    let names = reply.cell(0);
    if names.is_empty() {
        return Ok(Ok(false));
    }
    let fires_anyway = reply.cell(1) == "true";
    let may = reply.cell(2) == "on"
        || {
            let granted = conn
            .query("SELECT pg_catalog.has_parameter_privilege('session_replication_role', 'SET')::pg_catalog.text")
            .await?;
            granted.error.is_none() && granted.cell(0) == "true"
        };
    if may && !fires_anyway {
        return Ok(Ok(true));
    }
    let why = if fires_anyway {
        "one of them is ENABLE REPLICA or ALWAYS, so it would fire even with session_replication_role = replica"
    } else {
        "this role may not set session_replication_role to keep them quiet"
    };
    Ok(Err(ServerError {
        code: "0A000".into(),
        message: format!(
            "pgshift fills the existing rows of {table} with UPDATEs, which would fire {names} on every row (Postgres' own rewrite fires none), and {why}"
        ),
        detail: None,
        hint: Some(
            "Add the column without a default, SET DEFAULT, and fill the rows yourself. Or, where the role that migrates may be trusted with it, GRANT SET ON PARAMETER session_replication_role TO that role (Postgres 15): pgshift then keeps ordinary triggers quiet during the fill (the setting turns off triggers and foreign-key checks for that role's writes)."
                .into(),
        ),
        fields: Vec::new(),
    }))
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
        "SELECT coalesce(pg_catalog.max(pg_catalog.pg_relation_size(t.relid)) / pg_catalog.current_setting('block_size')::bigint, 0), \
         coalesce(pg_catalog.sum(c.reltuples) FILTER (WHERE c.reltuples > 0) / nullif(pg_catalog.sum(c.relpages) FILTER (WHERE c.reltuples > 0), 0), 100)::bigint \
         FROM (SELECT relid FROM pg_catalog.pg_partition_tree(pg_catalog.to_regclass({t})) WHERE isleaf \
         UNION SELECT pg_catalog.to_regclass({t})) t JOIN pg_catalog.pg_class c ON c.oid = t.relid",
        t = literal(table)
    );
    let reply = conn.query(&sql).await?;
    let value = |i: usize| -> u64 { reply.cell(i).parse().unwrap_or(0) };
    let per_page = value(1).max(1);
    Ok((value(0), (batch_rows / per_page).max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_shrink_to_half_the_budget_and_grow_back() {
        let mut fill = Fill::default();
        // 40 pages took 200 ms against a 100 ms budget: a quarter of them next.
        fill.resize(40, Duration::from_millis(200), 100, 50);
        assert_eq!(fill.per_batch, 10);
        // Quick batches double, up to the configured size.
        fill.resize(10, Duration::from_millis(5), 100, 50);
        assert_eq!(fill.per_batch, 20);
        fill.resize(40, Duration::from_millis(5), 100, 50);
        assert_eq!(fill.per_batch, 50);
        // In the band between a quarter and half of the budget: unchanged.
        fill.resize(30, Duration::from_millis(40), 100, 50);
        assert_eq!(fill.per_batch, 30);
        // Never below one page; with the budget off, always the configured size.
        fill.resize(1, Duration::from_secs(3), 100, 50);
        assert_eq!(fill.per_batch, 1);
        fill.resize(1, Duration::from_secs(3), 0, 50);
        assert_eq!(fill.per_batch, 50);
    }
}
