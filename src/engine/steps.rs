//! Runs one step of a plan on a connection: under lock_timeout with retries for
//! steps that could stall traffic, with the long-step statement_timeout for
//! CONCURRENTLY and VALIDATE, in batches for backfills, and with INVALID-index
//! cleanup for concurrent builds.

use super::backfill::{backfill, Fill};
use super::blockers::{self, Holder};
use super::conn::{cell, Conn, ServerError};
use super::retry::Backoff;
use super::waits::Waiting;
use crate::config::{Blockers, Ddl};
use crate::sql::ident::literal;
use crate::sql::plan::{Step, StepKind};
use crate::wire::backend::{PgError, TxStatus};
use serde::Serialize;
use std::io;
use std::time::Instant;

/// Where the step runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Each statement commits on its own (the client is idle, or pgshift's service
    /// connection).
    Autocommit,
    /// Inside the client's transaction block: attempts go in savepoints.
    InTransaction,
}

impl Mode {
    /// Where the client's session is, from its transaction status byte.
    pub fn of(status: TxStatus) -> Mode {
        if status == TxStatus::Idle {
            Mode::Autocommit
        } else {
            Mode::InTransaction
        }
    }
}

/// Why a step did not complete.
#[derive(Debug)]
pub enum Failure {
    /// The server refused the step (bad SQL, duplicate key, a failed VALIDATE).
    Server(ServerError),
    /// pgshift gave up (lock retries exhausted) or refused.
    Ours(PgError),
    Io(io::Error),
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Failure::Io(e)
    }
}

/// What a completed step cost, for the journal and the logs.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub sql: String,
    pub attempts: u32,
    pub ms: u64,
    /// Rows a backfill updated.
    pub rows: Option<u64>,
}

/// What steps need to know besides the step itself.
#[derive(Clone)]
pub struct StepContext<'a> {
    pub ddl: &'a Ddl,
    /// The session's lock_timeout and statement_timeout before pgshift touched them.
    pub saved_lock_timeout: String,
    pub saved_statement_timeout: String,
    /// The table the statement is about, for naming blockers.
    pub table: Option<&'a str>,
    /// The client's statement as written, where an error's position is moved to
    /// (empty for deferred work, which has no client to tell).
    pub original: &'a str,
}

/// SQLSTATEs worth another attempt: lock_not_available, deadlock_detected.
fn retryable(e: &ServerError) -> bool {
    e.code == "55P03" || e.code == "40P01"
}

pub async fn run<C: Conn>(
    conn: &mut C,
    step: &Step,
    mode: Mode,
    cx: &StepContext<'_>,
) -> Result<StepReport, Failure> {
    if let (StepKind::ConcurrentIndex { .. }, Mode::Autocommit) = (&step.kind, mode) {
        if let Some(stmt) = super::partitioned::partitioned_index(conn, &step.sql).await? {
            return super::partitioned::build(conn, stmt, cx).await;
        }
    }
    if let StepKind::TypeChange {
        table,
        column,
        target,
        typmod,
    } = &step.kind
    {
        super::type_change::check(conn, table, column, target, *typmod).await?;
    }
    if let StepKind::Rollout { .. } = &step.kind {
        // Started by the engine itself, never as a step of a plan.
        return Err(Failure::Ours(PgError::error(
            "0A000",
            "pgshift starts an online rollout only outside a transaction block",
        )));
    }
    let started = Instant::now();
    let mut backoff = Backoff::new(cx.ddl, mode == Mode::InTransaction);
    let mut fill = Fill::default();
    let mut looks = Looks {
        first_seen: blockers::FirstSeen::new(),
        listed: match (step.needs_lock_retry(), cx.table) {
            (true, Some(table)) => Some(Waiting::new("ddl", table, step.lock.to_string())),
            _ => None,
        },
    };
    loop {
        if conn.cancelled() {
            return Err(Failure::Ours(canceled()));
        }
        if let (true, Some(table)) = (step.needs_lock_retry(), cx.table) {
            if cx.ddl.stall_budget_ms > 0 {
                let mut tables = vec![table];
                tables.extend(step.also.iter().map(String::as_str).filter(|t| *t != table));
                let in_tx = mode == Mode::InTransaction;
                wait_out_long_holders(conn, step, cx, &tables, &backoff, in_tx, &mut looks).await?;
            }
        }
        let outcome = match (&step.kind, mode) {
            (StepKind::Backfill { .. }, _) => backfill(conn, step, cx, &mut fill).await?,
            (_, Mode::InTransaction) => in_savepoint(conn, &step.sql, cx).await?,
            (StepKind::ConcurrentIndex { index, table, .. }, _) => {
                drop_if_invalid(conn, index, table).await?;
                let r = long(conn, &step.sql, cx).await?;
                if r.is_err() {
                    drop_if_invalid(conn, index, table).await?;
                }
                r
            }
            (StepKind::Sql, _) if step.long => long(conn, &step.sql, cx).await?,
            (StepKind::Sql | StepKind::TypeChange { .. } | StepKind::Rollout { .. }, _) => {
                guarded(conn, &step.sql, cx).await?
            }
        };
        match outcome {
            Ok(()) => {
                return Ok(StepReport {
                    sql: step.sql.clone(),
                    attempts: backoff.attempts + 1,
                    ms: started.elapsed().as_millis() as u64,
                    rows: matches!(step.kind, StepKind::Backfill { .. }).then_some(fill.rows),
                })
            }
            Err(e) if retryable(&e) => {
                super::counters::lock_timeout();
                if let Some(w) = &looks.listed {
                    w.failed_attempt();
                }
                match backoff.failed() {
                    Some(pause) => {
                        if !conn.pause(pause).await {
                            return Err(Failure::Ours(canceled()));
                        }
                    }
                    None => {
                        super::counters::gave_up();
                        return Err(Failure::Ours(gave_up(conn, step, cx, &backoff, &e).await));
                    }
                }
            }
            Err(e) => {
                // A backfill batch ran other SQL than the step's: no position.
                let e = match step.kind {
                    StepKind::Backfill { .. } => e.without_position(),
                    _ => as_original(e, step).mapped(&step.sql, cx.original),
                };
                return Err(Failure::Server(e));
            }
        }
    }
}

/// The error the original statement would have raised, where pgshift's form of it
/// words it differently: a NULL found by the CHECK that stands in for NOT NULL.
fn as_original(e: ServerError, step: &Step) -> ServerError {
    match &step.null_column {
        Some(column) if e.code == "23514" => e.null_in(column),
        _ => e,
    }
}

/// What Postgres says when a client cancels a statement.
pub fn canceled() -> PgError {
    PgError::error("57014", "canceling statement due to user request")
}

pub(super) fn ms(d: u64) -> String {
    literal(&format!("{d}ms"))
}

/// One attempt inside the client's transaction, in a savepoint so that a lock
/// timeout does not abort the transaction. ROLLBACK TO undoes SET LOCAL, so the
/// setting is re-issued on every attempt and restored on success.
async fn in_savepoint<C: Conn>(
    conn: &mut C,
    sql: &str,
    cx: &StepContext<'_>,
) -> io::Result<Result<(), ServerError>> {
    let before = format!(
        "SAVEPOINT pgshift_step; SET LOCAL lock_timeout = {}; ",
        ms(blockers::attempt_ms(cx.ddl))
    );
    let attempt = format!(
        "{before}{sql}; SET LOCAL lock_timeout = {}; RELEASE SAVEPOINT pgshift_step",
        literal(&cx.saved_lock_timeout),
    );
    let reply = conn.query_step(&attempt).await?;
    match reply.error {
        None => Ok(Ok(())),
        Some(e) => {
            let e = e.within(before.chars().count(), sql);
            conn.query("ROLLBACK TO SAVEPOINT pgshift_step; RELEASE SAVEPOINT pgshift_step")
                .await?;
            Ok(Err(e))
        }
    }
}

/// One attempt of a quick lock-taking statement in autocommit: its own transaction
/// with SET LOCAL, so nothing needs restoring.
async fn guarded<C: Conn>(
    conn: &mut C,
    sql: &str,
    cx: &StepContext<'_>,
) -> io::Result<Result<(), ServerError>> {
    let before = format!(
        "BEGIN; SET LOCAL lock_timeout = {}; ",
        ms(blockers::attempt_ms(cx.ddl))
    );
    let attempt = format!("{before}{sql}; COMMIT");
    let reply = conn.query_step(&attempt).await?;
    let at = before.chars().count();
    match reply.error.map(|e| e.within(at, sql)) {
        None => Ok(Ok(())),
        // VACUUM and friends refuse transaction blocks: set, run, restore instead.
        Some(e) if e.code == "25001" => {
            conn.query("ROLLBACK").await?;
            with_settings(
                conn,
                sql,
                "lock_timeout",
                &ms(blockers::attempt_ms(cx.ddl)),
                &cx.saved_lock_timeout,
            )
            .await
        }
        Some(e) => {
            conn.query("ROLLBACK").await?;
            Ok(Err(e))
        }
    }
}

/// A long step that must not run in a transaction block (CONCURRENTLY), or that
/// needs its own: statement_timeout raised for it, then restored.
async fn long<C: Conn>(
    conn: &mut C,
    sql: &str,
    cx: &StepContext<'_>,
) -> io::Result<Result<(), ServerError>> {
    let timeout = ms(cx.ddl.long_step_timeout_ms);
    with_settings(
        conn,
        sql,
        "statement_timeout",
        &timeout,
        &cx.saved_statement_timeout,
    )
    .await
}

async fn with_settings<C: Conn>(
    conn: &mut C,
    sql: &str,
    name: &str,
    value: &str,
    saved: &str,
) -> io::Result<Result<(), ServerError>> {
    conn.query(&format!("SET {name} = {value}")).await?;
    // A cancel that came while pgshift was between queries would find the
    // backend idle: check before starting what may run for an hour.
    let reply = if conn.cancelled() {
        None
    } else {
        Some(conn.query_step(sql).await?)
    };
    conn.query(&format!("SET {name} = {}", literal(saved)))
        .await?;
    match reply {
        None => Ok(Err(cancel_error())),
        Some(reply) => Ok(reply.error.map_or(Ok(()), |e| Err(e.within(0, sql)))),
    }
}

/// [`canceled`] as the server would have reported it.
pub(super) fn cancel_error() -> ServerError {
    let e = canceled();
    ServerError {
        code: e.code.into(),
        message: e.message,
        detail: None,
        hint: None,
        fields: Vec::new(),
    }
}

/// Drops `index` if it is an INVALID index of `table` (a failed concurrent build).
/// An index lives in its table's schema, so it is found by its own name among the
/// table's indexes, not through search_path (which may name another schema first).
async fn drop_if_invalid<C: Conn>(conn: &mut C, index: &str, table: &str) -> io::Result<()> {
    let find = format!(
        "SELECT pg_catalog.format('%I.%I', n.nspname, c.relname) FROM pg_catalog.pg_index x \
         JOIN pg_catalog.pg_class c ON c.oid = x.indexrelid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE x.indrelid = pg_catalog.to_regclass({}) AND NOT x.indisvalid \
         AND c.relname = (SELECT p[pg_catalog.cardinality(p)] FROM pg_catalog.parse_ident({}) p)",
        literal(table),
        literal(index)
    );
    let found = conn.query(&find).await?;
    if let Some(row) = found.rows.first() {
        let leftover = cell(row, 0);
        tracing::info!(index = %leftover, "dropping the INVALID index a failed build left");
        conn.query(&format!("DROP INDEX CONCURRENTLY IF EXISTS {leftover}"))
            .await?;
    }
    Ok(())
}

/// What a step keeps across its looks at who blocks it: when each holder was
/// first seen, and its entry in the console's SHOW LOCKS.
struct Looks {
    first_seen: blockers::FirstSeen,
    listed: Option<Waiting>,
}

/// Waits, outside Postgres' lock queue, while a long transaction holds a lock on
/// one of `tables` that the step's lock conflicts with (see `super::blockers`).
/// The client hears once who pgshift waits for. Bounded by the retry deadline.
/// An autovacuum in the way is cancelled, and with `ddl.blockers = "end_idle"` a
/// session idle in its transaction long enough is ended; each at most once.
async fn wait_out_long_holders<C: Conn>(
    conn: &mut C,
    step: &Step,
    cx: &StepContext<'_>,
    tables: &[&str],
    backoff: &Backoff,
    in_tx: bool,
    looks: &mut Looks,
) -> Result<(), Failure> {
    let budget = cx.ddl.stall_budget_ms;
    let deadline = std::time::Duration::from_millis(cx.ddl.retry_deadline_ms);
    let mut told = false;
    // Sessions pgshift signalled (or may not signal): never again.
    let mut signalled: Vec<String> = Vec::new();
    // The holder of the last look, and when pg_locks was last read.
    let mut known: Option<Holder> = None;
    let mut checked = Instant::now();
    loop {
        blockers::fresh_look(conn, in_tx).await?;
        let seen = match known.take() {
            Some(h) if h.visible && checked.elapsed() < blockers::RECHECK => {
                blockers::same_transaction(conn, &h).await?
            }
            _ => None,
        };
        let holder = match seen {
            Some(h) => h,
            None => {
                checked = Instant::now();
                match blockers::long_holder(conn, tables, step.lock, budget, &mut looks.first_seen)
                    .await?
                {
                    Some(h) => h,
                    None => {
                        if let Some(w) = &looks.listed {
                            w.blocked_by(None);
                        }
                        return Ok(());
                    }
                }
            }
        };
        let table = holder.relation.as_str();
        if let Some(w) = &looks.listed {
            w.blocked_by(Some((holder.pid.clone(), holder.to_string())));
        }
        let signal = match signalled.contains(&holder.pid) {
            true => None,
            false => blockers::Signal::for_holder(&holder, cx.ddl),
        };
        let mut sent = false;
        if let Some(signal) = signal {
            match blockers::signal(conn, &holder, signal, in_tx).await? {
                Ok(true) => {
                    signalled.push(holder.pid.clone());
                    sent = true;
                    match signal {
                        blockers::Signal::CancelAutovacuum => {
                            tracing::info!(target: "pgshift::ddl", %table, blocker = %holder, "cancelled an autovacuum that blocked a step, as Postgres does for a lock request it blocks");
                        }
                        blockers::Signal::EndIdle(_) => {
                            tracing::warn!(target: "pgshift::ddl", %table, blocker = %holder, "ended a session idle in its transaction that blocked a step (ddl.blockers = \"end_idle\")");
                            if cx.ddl.notices {
                                let notice = PgError::notice(format!(
                                    "pgshift: ended {holder}, which blocked the {} lock on {table} (ddl.blockers = \"end_idle\")",
                                    step.lock
                                ));
                                conn.tell(&notice).await?;
                            }
                        }
                    }
                }
                // It changed meanwhile: look again.
                Ok(false) => {}
                Err(e) => {
                    signalled.push(holder.pid.clone());
                    tracing::warn!(target: "pgshift::ddl", %table, blocker = %holder, error = %e.message, "could not signal a session that blocks a step; waiting for it instead");
                }
            }
        }
        if !told && !sent {
            told = true;
            tracing::info!(target: "pgshift::ddl", %table, blocker = %holder, lock = %step.lock, "waiting outside the lock queue for a long transaction");
            if cx.ddl.notices {
                let ending = if cx.ddl.blockers == Blockers::EndIdle && holder.idle_in_transaction()
                {
                    format!(
                        " (ddl.blockers = \"end_idle\" ends it once it has been idle for {:.1} s)",
                        cx.ddl.blockers_idle_ms as f64 / 1000.0
                    )
                } else {
                    String::new()
                };
                let notice = PgError::notice(format!(
                    "pgshift: waiting for {holder} to end its transaction before taking the {} lock on {table}{ending}; nothing queues behind this statement meanwhile",
                    step.lock
                ));
                conn.tell(&notice).await?;
            }
        }
        if backoff.elapsed() >= deadline {
            let err = PgError::error(
                "55P03",
                format!(
                    "pgshift could not get the {} lock on {table}: a long transaction held it for all of ddl.retry_deadline_ms ({:.1} s)",
                    step.lock,
                    backoff.elapsed().as_secs_f64()
                ),
            )
            .with_detail(format!("Waiting for {holder}."))
            .with_hint("End or wait out that transaction, then run the statement again.");
            return Err(Failure::Ours(err));
        }
        // A signalled session lets go as it stops: look again in full, shortly.
        // One this role cannot see into is only ever looked at in pg_locks: less often.
        let pause = if sent {
            blockers::POLL / 5
        } else if !holder.visible {
            blockers::POLL * 5
        } else {
            blockers::POLL
        };
        if !conn.pause(pause).await {
            return Err(Failure::Ours(canceled()));
        }
        if !sent {
            known = Some(holder);
        }
    }
}

/// The 55P03 the client gets when retries run out, naming who holds locks.
async fn gave_up<C: Conn>(
    conn: &mut C,
    step: &Step,
    cx: &StepContext<'_>,
    backoff: &Backoff,
    last: &ServerError,
) -> PgError {
    let table = cx.table.unwrap_or("the table");
    let mut err = PgError::error(
        "55P03",
        format!(
            "pgshift could not get the {} lock on {table}: {} attempts with lock_timeout {} ms over {:.1} s all failed ({})",
            step.lock,
            backoff.attempts,
            blockers::attempt_ms(cx.ddl),
            backoff.elapsed().as_secs_f64(),
            last.message
        ),
    )
    .with_hint(
        "End or wait out the blocking transactions, then run the statement again. \
         ddl.lock_timeout_ms, ddl.max_attempts and ddl.retry_deadline_ms set how long pgshift tries.",
    );
    if let Some(t) = cx.table {
        if let Ok(blockers) = blockers(conn, t).await {
            if !blockers.is_empty() {
                err = err.with_detail(format!("Sessions holding locks on {t}: {blockers}"));
            }
        }
    }
    err
}

async fn blockers<C: Conn>(conn: &mut C, table: &str) -> io::Result<String> {
    let sql = format!(
        "SELECT a.pid, coalesce(a.application_name, ''), coalesce(a.state, ''), \
         coalesce(extract(epoch FROM pg_catalog.now() - coalesce(a.xact_start, a.query_start))::int, 0), \
         pg_catalog.left(coalesce(a.query, ''), 120) \
         FROM pg_catalog.pg_locks l JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid \
         WHERE l.granted AND l.locktype = 'relation' AND l.relation = pg_catalog.to_regclass({}) \
         AND a.pid <> pg_catalog.pg_backend_pid() GROUP BY 1, 2, 3, 4, 5 ORDER BY 4 DESC LIMIT 5",
        literal(table)
    );
    let reply = conn.query(&sql).await?;
    let described: Vec<String> = reply
        .rows
        .iter()
        .map(|r| {
            let v = |i: usize| cell(r, i);
            format!(
                "pid {} (application \"{}\", {} for {} s, query: {})",
                v(0),
                v(1),
                v(2),
                v(3),
                v(4)
            )
        })
        .collect();
    Ok(described.join("; "))
}
