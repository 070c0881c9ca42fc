//! Steps deferred until after a client's COMMIT (CONCURRENTLY, VALIDATE: they
//! cannot run inside its transaction block).
//!
//! They run on the client's own upstream session, right after its transaction
//! ends: that session is the author (login, role, privileges), so nothing the
//! author wrote ever runs as pgshift's service role. The steps come from pgshift's
//! memory, never from a table. The row in `pgshift.deferred` is written inside the
//! client's transaction (through `pgshift.defer`), so it exists exactly when that
//! transaction committed, and it records progress for people to see. If the
//! session dies first, a scan marks the row `interrupted`; nothing runs it again
//! on its own.

use super::book::{Book, RowState};
use super::conn::{Conn, InBand};
use super::journal::Outcome;
use super::steps::{self, Mode, StepContext};
use super::{Entry, SessionCx};
use crate::sql::ident::{self, literal};
use crate::sql::plan::{Step, StepKind};
use crate::wire::backend::PgError;
use std::io;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};

/// Most text (statements and steps) one transaction may defer: a session's
/// memory stays bounded however many statements it defers.
pub const MAX_PENDING_BYTES: usize = 16 << 20;

/// How often databases are scanned for rows whose session died.
pub const SCAN_EVERY: Duration = Duration::from_secs(30);

/// Settings that decide what a deferred step does, taken when the statement ran
/// and put back around its steps: (the setting to set, what to read for it).
pub const REPLAYED: &[(&str, &str)] = &[
    ("search_path", "search_path"),
    ("default_tablespace", "default_tablespace"),
    ("maintenance_work_mem", "maintenance_work_mem"),
    (
        "max_parallel_maintenance_workers",
        "max_parallel_maintenance_workers",
    ),
    // The transaction could write: the steps' own transactions may too.
    ("default_transaction_read_only", "transaction_read_only"),
];

/// One deferred statement, as this session will run it.
#[derive(Debug, Clone)]
pub struct Deferral {
    /// Its row in `pgshift.deferred`.
    pub id: i64,
    pub statement: String,
    pub rule: String,
    pub steps: Vec<Step>,
    /// The [`REPLAYED`] settings and the role when the statement ran: a SET LOCAL
    /// is over after COMMIT, and the steps were written for these.
    pub settings: Vec<String>,
    pub role: String,
    pub table: Option<String>,
}

/// The deferrals of the session's open transaction.
#[derive(Debug, Default)]
pub struct Pending {
    items: Vec<Deferral>,
    bytes: usize,
}

impl Pending {
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Adds a deferral, or refuses it when the transaction has deferred too much.
    pub fn push(&mut self, d: Deferral) -> Result<(), PgError> {
        let size = d.statement.len() + d.steps.iter().map(|s| s.sql.len()).sum::<usize>();
        if self.bytes + size > MAX_PENDING_BYTES {
            return Err(PgError::error(
                "54000",
                format!(
                    "pgshift cannot defer more than {} MiB of statements in one transaction",
                    MAX_PENDING_BYTES >> 20
                ),
            )
            .with_hint("Split the migration into several transactions."));
        }
        self.bytes += size;
        self.items.push(d);
        Ok(())
    }

    /// True when a deferred build makes an index that one of `names` (SQL) may name.
    pub fn builds_index(&self, names: &[String]) -> bool {
        self.items
            .iter()
            .flat_map(|d| &d.steps)
            .any(|s| match &s.kind {
                StepKind::ConcurrentIndex { index, .. } => names
                    .iter()
                    .any(|n| crate::sql::mentions::same_index(n, index)),
                _ => false,
            })
    }

    /// The tables (as SQL) of the unique indexes the deferred steps build.
    pub fn unique_builds_on(&self) -> Vec<String> {
        self.items
            .iter()
            .flat_map(|d| &d.steps)
            .filter_map(|s| match &s.kind {
                StepKind::ConcurrentIndex { table, .. } if s.sql.starts_with("CREATE UNIQUE") => {
                    Some(table.clone())
                }
                _ => None,
            })
            .collect()
    }

    /// True when a deferred step writes rows ([`Step::writes_rows`]).
    pub fn writes_rows(&self) -> bool {
        self.items
            .iter()
            .flat_map(|d| &d.steps)
            .any(Step::writes_rows)
    }

    /// The tables (as SQL, each once) of deferrals with a step that names `name`
    /// (any name when `None`).
    pub fn tables_naming(&self, name: Option<&str>) -> Vec<String> {
        let name = name.map(str::to_lowercase);
        let mut tables: Vec<String> = Vec::new();
        for d in &self.items {
            let Some(table) = &d.table else {
                continue;
            };
            let named = name.as_deref().is_none_or(|n| {
                d.steps
                    .iter()
                    .any(|s| crate::sql::mentions::mentions(&s.sql.to_lowercase(), n))
            });
            if named && !tables.contains(table) {
                tables.push(table.clone());
            }
        }
        tables
    }

    pub fn take(&mut self) -> Vec<Deferral> {
        self.bytes = 0;
        std::mem::take(&mut self.items)
    }
}

/// Runs the deferrals whose transaction committed, in order, on the session's
/// connection (idle, after the COMMIT). Progress goes to their rows; a failure
/// ends that deferral and is recorded, the others still run.
pub async fn run_committed<C, S>(
    io: &mut InBand<'_, C, S>,
    cx: &SessionCx<'_>,
    pending: Vec<Deferral>,
) -> io::Result<()>
where
    C: AsyncWrite + Unpin + Send,
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    if pending.is_empty() {
        return Ok(());
    }
    let book = cx.engine.books.get(cx.database);
    let rt = cx.engine.books.runtime();
    let ids: Vec<i64> = pending.iter().map(|d| d.id).collect();
    let mut committed = book.committed(cx.settings, rt, &ids).await;
    if committed.is_err() {
        // Once more, on a fresh connection if the last one broke.
        tokio::time::sleep(Duration::from_millis(200)).await;
        committed = book.committed(cx.settings, rt, &ids).await;
    }
    let committed = match committed {
        Ok(c) => c,
        Err(e) => {
            // Without the rows pgshift cannot tell COMMIT from ROLLBACK, and a
            // guess could build what the client rolled back.
            tracing::error!(target: "pgshift::ddl", session = cx.session_id, error = %e, ids = ?ids, "deferred work not run: its rows could not be read");
            let warning = PgError::warning(format!(
                "pgshift did not run the work your transaction deferred: {e}"
            ))
            .with_hint(format!(
                "See pgshift.deferred rows {ids:?}; if your transaction committed, run their steps outside a transaction block."
            ));
            io.send_client(&warning.to_bytes());
            return io.flush_client().await;
        }
    };
    let last = pending
        .iter()
        .rposition(|d| committed.contains(&d.id))
        .unwrap_or(0);
    for (k, d) in pending.into_iter().enumerate() {
        if committed.contains(&d.id) {
            // A fill may run in the background only when nothing the
            // transaction deferred after it waits for its rows (a SET NOT NULL,
            // a unique index, a type change of the column).
            run_one(io, cx, &book, d, k == last).await?;
        } else {
            tracing::info!(target: "pgshift::ddl", session = cx.session_id, deferred = d.id, "deferred work dropped: its transaction rolled back");
        }
    }
    // Notifications that came meanwhile.
    io.flush_client().await
}

async fn run_one<C, S>(
    io: &mut InBand<'_, C, S>,
    cx: &SessionCx<'_>,
    book: &Book,
    d: Deferral,
    last: bool,
) -> io::Result<()>
where
    C: AsyncWrite + Unpin + Send,
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let started = Instant::now();
    let steps_n = d.steps.len();
    let rt = cx.engine.books.runtime();
    let id = d.id;
    let record = |state: RowState, next: usize, error: Option<String>| async move {
        if let Err(e) = book
            .set_state(cx.settings, rt, id, state, next, error.as_deref())
            .await
        {
            tracing::warn!(target: "pgshift::ddl", deferred = id, error = %e, "could not record deferred progress");
        }
    };
    record(RowState::Running, 0, None).await;
    // The session's settings now, to compare with the statement's and to restore.
    let reads: Vec<String> = REPLAYED
        .iter()
        .map(|(name, _)| format!("pg_catalog.current_setting('{name}')"))
        .collect();
    let saved = io
        .query(&format!(
            "SELECT {}, current_user::text, pg_catalog.current_setting('role'), \
             pg_catalog.current_setting('lock_timeout'), pg_catalog.current_setting('statement_timeout')",
            reads.join(", ")
        ))
        .await?;
    let n = REPLAYED.len();
    let value = |i: usize| saved.cell(i);
    let mut enter = Vec::new();
    let mut restore = Vec::new();
    for (i, (name, _)) in REPLAYED.iter().enumerate() {
        let wanted = d.settings.get(i).cloned().unwrap_or_default();
        if value(i) != wanted {
            enter.push(format!(
                "pg_catalog.set_config('{name}', {}, false)",
                literal(&wanted)
            ));
            restore.push(format!(
                "pg_catalog.set_config('{name}', {}, false)",
                literal(&value(i))
            ));
        }
    }
    let mut enter = (!enter.is_empty())
        .then(|| format!("SELECT {}", enter.join(", ")))
        .into_iter()
        .collect::<Vec<_>>();
    if value(n) != d.role {
        enter.push(format!("SET ROLE {}", ident::quote(&d.role)));
        restore.push(format!(
            "pg_catalog.set_config('role', {}, false)",
            literal(&value(n + 1))
        ));
    }
    let mut outcome: Result<usize, String> = Ok(0);
    if !enter.is_empty() {
        let reply = io.query(&enter.join("; ")).await?;
        if let Some(e) = reply.error {
            outcome = Err(format!("{} ({})", e.message, e.code));
        }
    }
    let step_cx = StepContext {
        ddl: &cx.settings.config.ddl,
        saved_lock_timeout: value(n + 2),
        saved_statement_timeout: value(n + 3),
        table: d.table.as_deref(),
        original: "",
    };
    let mut reports = Vec::new();
    if outcome.is_ok() {
        for (i, step) in d.steps.iter().enumerate() {
            tracing::info!(target: "pgshift::ddl", deferred = d.id, step = i, sql = %step.sql, "running deferred step");
            let ran = match &step.kind {
                // A type change deferred from the transaction starts its rollout
                // now that the transaction committed.
                crate::sql::plan::StepKind::Rollout {
                    table,
                    column,
                    target,
                    using,
                } => {
                    let spec = crate::rollout::Spec {
                        table: table.clone(),
                        column: column.clone(),
                        target: target.clone(),
                        using: using.clone(),
                    };
                    let at = Instant::now();
                    crate::rollout::start::start(io, cx, &step_cx, &spec, &d.statement)
                        .await
                        .map(|started| {
                            tracing::info!(target: "pgshift::rollout", deferred = d.id, rollout = started.id, "started rollout of {}", started.describe);
                            steps::StepReport {
                                sql: step.sql.clone(),
                                attempts: 1,
                                ms: at.elapsed().as_millis() as u64,
                                rows: None,
                            }
                        })
                }
                // The column's old rows, filled in the background where the
                // default allows (the client's next statement need not wait).
                crate::sql::plan::StepKind::Backfill {
                    table,
                    online: Some(online),
                    ..
                } if cx.settings.config.rollout.enabled && last && i + 1 == steps_n => {
                    let at = Instant::now();
                    match super::rollouts::fill_committed(
                        io,
                        cx,
                        &step_cx,
                        table,
                        online,
                        &d.statement,
                    )
                    .await
                    {
                        Ok(Some(started)) => {
                            tracing::info!(target: "pgshift::rollout", deferred = d.id, rollout = started.id, "started the fill of {}", started.describe);
                            Ok(steps::StepReport {
                                sql: step.sql.clone(),
                                attempts: 1,
                                ms: at.elapsed().as_millis() as u64,
                                rows: None,
                            })
                        }
                        Ok(None) => steps::run(io, step, Mode::Autocommit, &step_cx).await,
                        Err(steps::Failure::Io(e)) => Err(steps::Failure::Io(e)),
                        // The rollout could not start (its trigger's lock not
                        // granted in time, a console's fill of the column
                        // started a moment before, …): the rows are filled
                        // in-band.
                        Err(f) => {
                            tracing::warn!(target: "pgshift::rollout", deferred = d.id, error = %super::failure_text(&f), "the fill runs in-band");
                            steps::run(io, step, Mode::Autocommit, &step_cx).await
                        }
                    }
                }
                _ => steps::run(io, step, Mode::Autocommit, &step_cx).await,
            };
            match ran {
                Ok(report) => {
                    reports.push(report);
                    record(RowState::Running, i + 1, None).await;
                }
                Err(steps::Failure::Io(e)) => return Err(e),
                Err(failure) => {
                    outcome = Err(super::failure_text(&failure));
                    break;
                }
            }
            outcome = Ok(i + 1);
        }
    }
    if !restore.is_empty() {
        io.query(&format!("SELECT {}", restore.join(", "))).await?;
    }
    let error = outcome.as_ref().err().cloned();
    match &outcome {
        Ok(n) => record(RowState::Done, *n, None).await,
        Err(why) => {
            tracing::warn!(target: "pgshift::ddl", deferred = d.id, error = %why, "deferred work failed");
            record(RowState::Failed, reports.len(), Some(why.clone())).await;
        }
    }
    cx.engine.journal.record(Entry {
        database: cx.database.to_string(),
        session_id: cx.session_id,
        user: cx.user.to_string(),
        statement: d.statement,
        rule: d.rule,
        policy: "rewrite".into(),
        outcome: if error.is_some() {
            Outcome::Failed
        } else {
            Outcome::Completed
        },
        steps: reports,
        error,
        duration_ms: started.elapsed().as_millis() as u64,
    });
    Ok(())
}

/// Marks interrupted rows in `database` (a proxy or connection died after the
/// COMMIT), bounded in time.
pub async fn scan(book: &Book, settings: &crate::context::Settings, rt: &tokio::runtime::Handle) {
    let limit = Duration::from_secs(20);
    let _ = tokio::time::timeout(limit, book.recheck(settings)).await;
    match tokio::time::timeout(limit, book.mark_interrupted(settings, rt)).await {
        Ok(Ok(0)) => {}
        Ok(Ok(n)) => {
            tracing::warn!(target: "pgshift::ddl", database = book.database(), rows = n, "deferred work interrupted: its session ended before it finished (see pgshift.deferred)")
        }
        Ok(Err(e)) => {
            tracing::debug!(database = book.database(), error = %e, "deferred scan skipped")
        }
        Err(_) => tracing::warn!(database = book.database(), "deferred scan took too long"),
    }
    book.close_if_idle().await;
}
