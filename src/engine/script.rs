//! Runs one intercepted simple Query: decides per statement (pass, reject, plan)
//! from the rules and the policies, then runs it in-band. A multi-statement Query
//! that arrives outside a transaction runs in BEGIN … COMMIT, as Postgres would run
//! it in one implicit transaction.

use super::conn::{Conn, InBand, Relay};
use super::deferred::{Deferral, Pending, REPLAYED};
use super::reply::{in_transaction_refusal, notice, rejection, send_failure, unparsed_refusal};
use super::risk::{self, Risk};
use super::steps::{self, Failure, Mode, StepContext, StepReport};
use super::{journal, precheck};
use super::{Entry, Outcome, SessionCx};
use crate::config::{InTransaction, UnparsedPolicy};
use crate::rollout::fill::Fill;
use crate::sql::analysis::{analyze_shared, Statement, TxControl, Unparsed, Verdict};
use crate::sql::ident::literal;
use crate::sql::plan::{Finding, Placement, Plan, Policy, Step, StepKind};
use crate::wire::backend::TxStatus;
use crate::wire::backend::{self, PgError};
use bytes::BytesMut;
use std::io;
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncWrite};

/// Longest pgshift keeps away from a database a client drops, renames or copies
/// (the statement's end lifts it sooner).
const STEP_ASIDE: std::time::Duration = std::time::Duration::from_secs(3600);

/// What pgshift does with one statement.
enum Action<'a> {
    Pass,
    /// Small tables only: the statement as written, under lock_timeout with
    /// retries, without a NOTICE (nothing differs but the lock wait).
    AsWritten(&'a Finding),
    Reject(&'a Finding),
    /// Refused for a reason the catalog gave (not the rule's own).
    Refuse(PgError),
    Run {
        finding: &'a Finding,
        plan: Plan,
        policy: Policy,
    },
}

fn decide<'a>(stmt: &'a Statement, cx: &SessionCx<'_>) -> Action<'a> {
    let Some(f) = &stmt.finding else {
        return Action::Pass;
    };
    let ddl = &cx.settings.config.ddl;
    let policy = ddl
        .policy(f.rule, cx.database, cx.user)
        .unwrap_or(f.default_policy);
    match (policy, &f.rewrite) {
        (Policy::Allow, _) => Action::Pass,
        (Policy::Reject, _) | (Policy::Rewrite, None) => Action::Reject(f),
        (Policy::Rewrite, Some(plan))
            if !cx.settings.config.rollout.enabled
                && matches!(
                    plan.steps.first().map(|s| &s.kind),
                    Some(crate::sql::plan::StepKind::Rollout { .. })
                ) =>
        {
            Action::Reject(f)
        }
        (Policy::Rewrite, Some(plan)) => Action::Run {
            finding: f,
            plan: plan.clone(),
            policy,
        },
        (Policy::Warn, _) => Action::Run {
            finding: f,
            plan: Plan {
                summary: format!(
                    "ran as written, under lock_timeout with retries: {}",
                    f.problem
                ),
                steps: vec![Step::quick(stmt.sql.clone(), f.lock)],
            },
            policy,
        },
    }
}

/// Looks at what the statement locks, in the client's session, and lets the rule
/// act only where the statement as written could stall someone else: not on temp
/// tables, tables the client's own transaction created, or a relation that does
/// not exist (Postgres says so at once); on small tables it runs as written.
async fn assess<'a, C, S>(
    io: &mut InBand<'_, C, S>,
    cx: &SessionCx<'_>,
    stmt: &'a Statement,
    action: Action<'a>,
) -> io::Result<Action<'a>>
where
    C: AsyncWrite + Unpin + Send,
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let finding = match &action {
        Action::Pass | Action::AsWritten(_) | Action::Refuse(_) => return Ok(action),
        Action::Reject(f) | Action::Run { finding: f, .. } => *f,
    };
    let mut seen = Vec::new();
    for name in finding.locked() {
        seen.push(risk::look(io, name).await?);
    }
    let small = cx.settings.config.ddl.small_table_bytes;
    Ok(match risk::judge(&seen, small) {
        Risk::None => Action::Pass,
        Risk::Small => Action::AsWritten(finding),
        Risk::Rule if finding.rule == "refresh-matview" => match (&action, seen.first()) {
            // CONCURRENTLY needs data and a unique index: without them, refuse
            // rather than turn a statement that works into one that fails.
            (Action::Run { .. }, Some(Some(view))) if !(view.populated && view.unique_index) => {
                Action::Refuse(refresh_refusal(&stmt.sql, finding, view))
            }
            _ => action,
        },
        Risk::Rule if finding.rule == "detach-partition" => match (&action, seen.first()) {
            // Postgres refuses CONCURRENTLY while the table has a default
            // partition (that one's included): there is no safe form.
            (Action::Run { .. }, Some(Some(parent))) if parent.default_partition => {
                Action::Refuse(detach_refusal(finding))
            }
            _ => action,
        },
        Risk::Rule if finding.rule == "set-not-null" => match (&action, seen.first()) {
            (Action::Run { .. }, Some(Some(table)))
                if table.partitioned
                    && finding
                        .rewrite
                        .as_ref()
                        .is_some_and(crate::sql::rules::set_not_null::only_table) =>
            {
                Action::AsWritten(finding)
            }
            _ => action,
        },
        Risk::Rule if matches!(finding.rule, "add-foreign-key" | "add-unique") => {
            match (&action, seen.first()) {
                // Its safe form fails on a partitioned table (PG 15): say so
                // before anything is built.
                (Action::Run { .. }, Some(Some(table))) if table.partitioned => {
                    Action::Refuse(partitioned_refusal(finding))
                }
                _ => action,
            }
        }
        Risk::Rule => action,
    })
}

/// Why a large partitioned table's foreign key, primary key or unique
/// constraint cannot be added in its safe form.
fn partitioned_refusal(finding: &Finding) -> PgError {
    let name = finding.table.as_deref().unwrap_or("the table");
    let (why, each) = match finding.rule {
        "add-foreign-key" => (
            "Postgres 15 cannot add a partitioned table's foreign key NOT VALID",
            "ADD CONSTRAINT … NOT VALID, then VALIDATE CONSTRAINT",
        ),
        _ => (
            "Postgres 15 cannot add a partitioned table's key USING INDEX",
            "CREATE UNIQUE INDEX CONCURRENTLY, then ADD CONSTRAINT … USING INDEX",
        ),
    };
    PgError::error(
        "0A000",
        format!(
            "pgshift refused ALTER TABLE: {}; {name} is partitioned, and {why}",
            finding.problem
        ),
    )
    .with_hint(format!(
        "Add it on each partition first ({each}), then run the statement with SET pgshift.bypass = on: Postgres then takes the partitions' constraints over without checking the rows again, in a short lock. Run as written on its own, it holds writes while it checks every row."
    ))
}

/// Why a large partitioned table's DETACH PARTITION cannot be made concurrent.
fn detach_refusal(finding: &Finding) -> PgError {
    let name = finding.table.as_deref().unwrap_or("the table");
    PgError::error(
        "0A000",
        format!(
            "pgshift refused ALTER TABLE: {}; {name} has a default partition, and Postgres cannot detach a partition of it CONCURRENTLY",
            finding.problem
        ),
    )
    .with_hint(format!(
        "Detach it at a quiet moment: SET pgshift.bypass = on, then the same statement (every query on {name} waits while it runs). Or detach the default partition that way first; the others then detach CONCURRENTLY."
    ))
}

/// Why a large materialized view's REFRESH cannot be made concurrent.
fn refresh_refusal(sql: &str, finding: &Finding, view: &risk::Seen) -> PgError {
    let name = finding.table.as_deref().unwrap_or(sql);
    let (why, hint) = if view.populated {
        (
            format!("{name} has no unique index on plain columns without a WHERE clause, which REFRESH … CONCURRENTLY needs"),
            format!("Create a unique index on {name} (CREATE UNIQUE INDEX CONCURRENTLY … ON {name} (…)), then refresh again; or SET pgshift.bypass = on to refresh it with reads blocked."),
        )
    } else {
        (
            format!("{name} holds no data yet, and its first REFRESH cannot be CONCURRENTLY"),
            format!("Populate it at a quiet moment (SET pgshift.bypass = on; REFRESH MATERIALIZED VIEW {name}), with reads of it blocked while it runs."),
        )
    };
    PgError::error(
        "0A000",
        format!(
            "pgshift refused REFRESH MATERIALIZED VIEW: {}; {why}",
            finding.problem
        ),
    )
    .with_hint(hint)
}

/// `prefix`: responses owed to the client before the statement's own (an
/// extended-protocol batch's ParseComplete and BindComplete), sent only when
/// pgshift answers the statement itself.
pub async fn handle<C, S>(
    io: &mut InBand<'_, C, S>,
    cx: &SessionCx<'_>,
    pending: &mut Pending,
    sql: &str,
    prefix: &[u8],
) -> io::Result<Outcome>
where
    C: AsyncWrite + Unpin + Send,
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let analysis = match analyze_shared(sql, &cx.settings.config.ddl.parse_limits()).await {
        Verdict::Parsed(a) => a,
        // Syntax errors are the server's to report.
        Verdict::SyntaxError(_) => return Ok(Outcome::Forward),
        // Held only because a table may be under rollout (a COPY, no DDL, no
        // deferred work waiting): it goes on as it would have without one.
        Verdict::Unparsed(_)
            if pending.is_empty()
                && crate::sql::sniff::starts_with_copy(sql.as_bytes())
                && !crate::sql::sniff::may_be_ddl(sql.as_bytes()) =>
        {
            return Ok(Outcome::Forward)
        }
        Verdict::Unparsed(why) => return unparsed(io, cx, prefix, &why).await,
    };
    // Failed transactions are the server's to report too.
    if io.status == TxStatus::Failed || analysis.statements.is_empty() {
        return Ok(Outcome::Forward);
    }
    if let [only] = &analysis.statements[..] {
        if let (Some(target), true) = (&only.copy_target, prefix.is_empty()) {
            return super::copies::with_column_list(io, cx, sql, target).await;
        }
    }
    let exclusive: Vec<&String> = analysis
        .statements
        .iter()
        .flat_map(|s| &s.exclusive_databases)
        .collect();
    if !exclusive.is_empty() {
        // Postgres waits 5 s for other sessions to leave the database, then
        // refuses: pgshift's own connection must not be one of them. It stays away
        // while the statement runs (in-band, as sent), and not a moment longer.
        let books = &cx.engine.books;
        for database in &exclusive {
            books.step_aside(database, Some(STEP_ASIDE)).await;
        }
        io.send_client(prefix);
        io.relay = Relay::All;
        let ran = io.query(sql).await;
        for database in &exclusive {
            books.step_aside(database, None).await;
        }
        ran?;
        return finish_turn(io).await;
    }
    if crate::sql::sniff::splits_differ(sql.as_bytes()) {
        // What pgshift checked would not be what Postgres runs.
        io.send_client(prefix);
        fail(io, &Failure::Ours(split_refusal()), true).await?;
        return finish_turn(io).await;
    }
    if analysis.statements.iter().any(|s| s.copy) {
        // COPY data flows between client and server: only the pump can carry it.
        tracing::warn!(target: "pgshift::ddl", session = cx.session_id, "a Query with COPY and possible DDL was forwarded unchanged");
        return Ok(Outcome::Forward);
    }
    if !pending.is_empty() {
        if let Some(refusal) = analysis
            .statements
            .iter()
            .find_map(|s| ending_refused(s.tx))
        {
            // Deferred work runs on this session between this transaction and the
            // next; these endings leave no such moment.
            io.send_client(prefix);
            fail(io, &Failure::Ours(refusal), true).await?;
            return finish_turn(io).await;
        }
    }
    let mut actions: Vec<Action> = analysis.statements.iter().map(|s| decide(s, cx)).collect();
    for (stmt, action) in analysis.statements.iter().zip(actions.iter_mut()) {
        if let Some(table) = &stmt.changes_columns_of {
            let by_name = analysis.statements.len() > 1;
            if let Some(refusal) =
                super::copies::column_change_refusal(io, cx, table, by_name).await?
            {
                *action = Action::Refuse(refusal);
            }
        }
    }
    let in_tx = io.status != TxStatus::Idle;
    let followers = in_tx && analysis.statements.iter().any(|s| follows(s, pending));
    if actions.iter().all(|a| matches!(a, Action::Pass)) && !followers {
        return Ok(Outcome::Forward);
    }
    let ddl = &cx.settings.config.ddl;
    if analysis.statements.len() > 1 && !prefix.is_empty() {
        // Postgres refuses several statements in one Parse: let it say so.
        return Ok(Outcome::Forward);
    }
    let prelude = io
        .query("SELECT pg_catalog.current_setting('pgshift.bypass', true), pg_catalog.current_setting('lock_timeout'), pg_catalog.current_setting('statement_timeout'), pg_catalog.current_setting('standard_conforming_strings'), pg_catalog.current_setting('client_encoding')")
        .await?;
    let value = |i: usize| prelude.cell(i);
    if value(3) == "off" {
        // pg_query reads backslashes in '…' as the standard says; this session's
        // server would not, so statement boundaries could differ. Stay out of it.
        tracing::warn!(target: "pgshift::ddl", session = cx.session_id, "standard_conforming_strings is off: statement forwarded unchanged");
        return Ok(Outcome::Forward);
    }
    if value(4) != "UTF8" {
        // Names pgshift reads back (search_path, roles) and the text it sends would
        // be in another encoding than the one it works in.
        tracing::warn!(target: "pgshift::ddl", session = cx.session_id, encoding = %value(4), "client_encoding is not UTF8: statement forwarded unchanged");
        return Ok(Outcome::Forward);
    }
    if matches!(value(0).as_str(), "on" | "true" | "1" | "yes") {
        if ddl.allow_bypass {
            tracing::info!(target: "pgshift::ddl", session = cx.session_id, "pgshift.bypass is on: statement passed through");
            return Ok(Outcome::Forward);
        }
        notice(io, cx, "pgshift.bypass is set but ddl.allow_bypass is off: the statement runs through pgshift's rules", None);
    }
    for (stmt, action) in analysis.statements.iter().zip(actions.iter_mut()) {
        *action = assess(io, cx, stmt, std::mem::replace(action, Action::Pass)).await?;
    }
    if actions.iter().all(|a| matches!(a, Action::Pass)) && !followers {
        return Ok(Outcome::Forward);
    }
    io.send_client(prefix);
    let step_cx = StepContext {
        ddl,
        saved_lock_timeout: value(1),
        saved_statement_timeout: value(2),
        table: None,
        original: "",
    };
    let wrap = analysis.statements.len() > 1
        && io.status == TxStatus::Idle
        && analysis.statements.iter().all(|s| s.tx.is_none());
    if wrap {
        io.relay = Relay::Quiet;
        io.query("BEGIN").await?;
    }
    let mut failed = false;
    for (stmt, action) in analysis.statements.iter().zip(&actions) {
        let renamed = match (&stmt.renames, pending.is_empty()) {
            (Some((table, name)), false) => {
                renames_deferred(io, pending, table, name.as_deref()).await?
            }
            _ => None,
        };
        let refused;
        let action = match renamed {
            Some(refusal) => {
                refused = Action::Refuse(refusal);
                &refused
            }
            None => action,
        };
        let result = match action {
            Action::Pass if io.status != TxStatus::Idle && follows(stmt, pending) => {
                follow(io, cx, pending, stmt).await
            }
            Action::Pass => {
                io.relay = Relay::All;
                io.position_shift = sql[..stmt.offset.min(sql.len())].chars().count();
                let reply = io.query(&stmt.sql).await?;
                io.position_shift = 0;
                io.relay = Relay::Quiet;
                if reply.error.is_some() {
                    failed = true;
                    break;
                }
                continue;
            }
            Action::AsWritten(finding) => {
                let cx2 = StepContext {
                    table: finding.table.as_deref(),
                    original: &stmt.sql,
                    ..step_cx.clone()
                };
                let shift = sql[..stmt.offset.min(sql.len())].chars().count();
                run_as_written(io, cx, &cx2, stmt, finding, "small-table")
                    .await
                    .map_err(|f| match f {
                        Failure::Server(e) => Failure::Server(e.shifted(shift)),
                        other => other,
                    })
            }
            Action::Reject(f) => {
                super::counters::outcome(f.rule, "rejected");
                Err(Failure::Ours(rejection(f)))
            }
            Action::Refuse(e) => Err(Failure::Ours(e.clone())),
            Action::Run {
                finding,
                plan,
                policy,
            } => {
                let cx2 = StepContext {
                    table: finding.table.as_deref(),
                    original: &stmt.sql,
                    ..step_cx.clone()
                };
                let shift = sql[..stmt.offset.min(sql.len())].chars().count();
                // Inside a transaction the rollout starts after COMMIT: run_plan
                // defers its step (placed outside transactions).
                let rollout = plan
                    .steps
                    .first()
                    .map(|s| &s.kind)
                    .filter(|_| io.status == TxStatus::Idle);
                if let Some(crate::sql::plan::StepKind::Rollout {
                    table,
                    column,
                    target,
                    using,
                }) = rollout
                {
                    let spec = crate::rollout::Spec {
                        table: table.clone(),
                        column: column.clone(),
                        target: target.clone(),
                        using: using.clone(),
                    };
                    super::rollouts::run(io, cx, &cx2, stmt, finding, spec)
                        .await
                        .map_err(|f| match f {
                            Failure::Server(e) => Failure::Server(e.shifted(shift)),
                            other => other,
                        })
                } else {
                    // A column's fill may run in the background once it exists.
                    let online = online_fill(plan).filter(|_| {
                        io.status == TxStatus::Idle && cx.settings.config.rollout.enabled
                    });
                    let filled = match online {
                        Some(online) => {
                            super::rollouts::fill(io, cx, &cx2, stmt, finding, plan, online).await
                        }
                        None => Ok(Fill::InBand(String::new())),
                    };
                    match filled {
                        Ok(Fill::Started(_)) => Ok(()),
                        Ok(Fill::AsWritten) => {
                            run_as_written(io, cx, &cx2, stmt, finding, "not-volatile").await
                        }
                        Ok(Fill::InBand(_)) => {
                            let mut plan = plan.clone();
                            // Outside a transaction block the steps run by pass
                            // (`Step::pass`): named in that order, as Postgres
                            // names what it adds in the order it adds it.
                            if io.status == TxStatus::Idle {
                                plan.steps.sort_by_key(|s| s.pass);
                            }
                            super::unnamed::name_indexes(io, &mut plan).await?;
                            super::unnamed::name_constraints(io, &mut plan).await?;
                            super::unnamed::name_sequences(io, &mut plan).await?;
                            run_plan(io, cx, &cx2, pending, stmt, finding, &plan, *policy).await
                        }
                        Err(f) => Err(f),
                    }
                    .map_err(|f| match f {
                        // Moved from the SQL pgshift ran into the statement; from
                        // there into the client's whole Query.
                        Failure::Server(e) => Failure::Server(e.shifted(shift)),
                        other => other,
                    })
                }
            }
        };
        match result {
            Ok(()) => {}
            Err(Failure::Io(e)) => return Err(e),
            Err(failure) => {
                fail(io, &failure, !wrap).await?;
                failed = true;
                break;
            }
        }
    }
    if wrap {
        // Postgres ends an implicit transaction without a command tag of its own.
        io.relay = Relay::Quiet;
        let end = io.query(if failed { "ROLLBACK" } else { "COMMIT" }).await?;
        if let Some(e) = end.error {
            send_failure(io, &Failure::Server(e));
        }
    }
    finish_turn(io).await
}

/// The fill of a plan that adds a column, filling its rows, and nothing after
/// (see `crate::rollout::fill`).
fn online_fill(plan: &Plan) -> Option<&crate::sql::plan::OnlineFill> {
    match plan.steps.as_slice() {
        [_, _, last] => match &last.kind {
            crate::sql::plan::StepKind::Backfill { online, .. } => online.as_ref(),
            _ => None,
        },
        _ => None,
    }
}

/// Sends our error. In a transaction that is the client's (`client_tx`: not one
/// pgshift opened around a multi-statement Query) it first fails the transaction,
/// like a server error would.
async fn fail<C, S>(io: &mut InBand<'_, C, S>, failure: &Failure, client_tx: bool) -> io::Result<()>
where
    C: AsyncWrite + Unpin + Send,
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    if client_tx && io.status == TxStatus::InTransaction {
        io.query("DO $$BEGIN RAISE EXCEPTION 'pgshift: statement failed'; END$$")
            .await?;
    }
    send_failure(io, failure);
    Ok(())
}

/// A candidate pgshift did not parse: forwarded unchecked, or refused under
/// `ddl.unparsed = "reject"` (failing the client's transaction as usual).
async fn unparsed<C, S>(
    io: &mut InBand<'_, C, S>,
    cx: &SessionCx<'_>,
    prefix: &[u8],
    why: &Unparsed,
) -> io::Result<Outcome>
where
    C: AsyncWrite + Unpin + Send,
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let ddl = &cx.settings.config.ddl;
    let mut forward = ddl.unparsed == UnparsedPolicy::Forward || io.status == TxStatus::Failed;
    if !forward && ddl.allow_bypass {
        let bypass = io
            .query("SELECT pg_catalog.current_setting('pgshift.bypass', true)")
            .await?;
        forward = matches!(bypass.cell(0).as_str(), "on" | "true" | "1" | "yes");
    }
    if forward {
        tracing::warn!(target: "pgshift::ddl", session = cx.session_id, reason = %why, "statement not parsed: forwarded unchecked");
        return Ok(Outcome::Forward);
    }
    tracing::warn!(target: "pgshift::ddl", session = cx.session_id, reason = %why, "statement not parsed: refused (ddl.unparsed = reject)");
    io.send_client(prefix);
    fail(io, &Failure::Ours(unparsed_refusal(why)), true).await?;
    finish_turn(io).await
}

/// The refusal for a text pg_query and Postgres would split into different statements.
fn split_refusal() -> PgError {
    PgError::error(
        "0A000",
        "pgshift refused a text whose statements it cannot delimit as Postgres does: a string continues on a later line after a -- comment",
    )
    .with_hint("Remove the comment between the two parts of the string, or write the string in one piece.")
}

/// The refusal for a transaction ending that leaves deferred work no moment to
/// run on this session.
fn ending_refused(tx: Option<TxControl>) -> Option<PgError> {
    let (what, hint) = match tx? {
        TxControl::Prepare => (
            "PREPARE TRANSACTION",
            "Commit the transaction directly, or run its DDL outside the prepared transaction.",
        ),
        TxControl::CommitChain => ("COMMIT AND CHAIN", "Send COMMIT, then BEGIN."),
        _ => return None,
    };
    Some(
        PgError::error(
            "0A000",
            format!("pgshift cannot run {what} here: this transaction deferred work that must run on this session right after it commits"),
        )
        .with_hint(hint),
    )
}

/// Ends the client's turn with ReadyForQuery. Deferred work whose transaction is
/// now over runs after this (the session does it: the client already has its
/// answer, and its next message waits).
async fn finish_turn<C, S>(io: &mut InBand<'_, C, S>) -> io::Result<Outcome>
where
    C: AsyncWrite + Unpin + Send,
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut out = BytesMut::new();
    backend::ready_for_query(&mut out, io.status);
    io.send_client(&out);
    io.flush_client().await?;
    io.relay = Relay::Quiet;
    Ok(Outcome::Handled)
}

/// Runs a plan: every step in autocommit, or inside the client's transaction the
/// steps that may run there and the rest deferred (or refused) per policy.
#[allow(clippy::too_many_arguments)]
async fn run_plan<C, S>(
    io: &mut InBand<'_, C, S>,
    cx: &SessionCx<'_>,
    step_cx: &StepContext<'_>,
    pending: &mut Pending,
    stmt: &Statement,
    finding: &Finding,
    plan: &Plan,
    policy: Policy,
) -> Result<(), Failure>
where
    C: AsyncWrite + Unpin + Send,
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let started = Instant::now();
    for (full, cut) in crate::sql::naming::truncations(&stmt.sql) {
        // What Postgres' scanner would have said while reading the statement.
        let notice = PgError {
            code: "42622",
            ..PgError::notice(format!(
                "identifier \"{full}\" will be truncated to \"{cut}\""
            ))
        };
        io.send_client(&notice.to_bytes());
    }
    let in_tx = io.status != TxStatus::Idle;
    let n = plan.steps.len();
    let split = if !in_tx {
        n
    } else {
        let natural = plan
            .steps
            .iter()
            .position(|s| s.placement != Placement::Anywhere)
            .unwrap_or(n);
        // A FOREIGN KEY whose key is built after COMMIT follows it there.
        match on_deferred_key(io, pending, plan).await? {
            Some(i) => natural.min(i),
            None => natural,
        }
    };
    let mode = Mode::of(io.status);
    let mut reports: Vec<StepReport> = Vec::new();
    let mut skipped: Option<PgError> = None;
    let mut outcome = if policy == Policy::Warn {
        journal::Outcome::Warned
    } else {
        journal::Outcome::Rewritten
    };
    let result: Result<(), Failure> = async {
        if split < n && cx.settings.config.ddl.in_transaction == InTransaction::Reject {
            return Err(Failure::Ours(in_transaction_refusal(finding)));
        }
        if let Some(check) = &finding.precheck {
            if let precheck::Verdict::Skip(notice) =
                precheck::run(io, check, step_cx.original).await?
            {
                skipped = Some(notice);
                outcome = journal::Outcome::Skipped;
                return Ok(());
            }
        }
        if split < n {
            // What the deferred steps would find in the rows, found now.
            let rows_pending = pending.writes_rows();
            super::violations::look(io, &plan.steps[..split], &plan.steps[split..], rows_pending)
                .await?;
        }
        for (i, step) in plan.steps[..split].iter().enumerate() {
            match steps::run(io, step, mode, step_cx).await {
                Ok(report) => reports.push(report),
                Err(Failure::Io(e)) => return Err(Failure::Io(e)),
                Err(failure) => {
                    if mode == Mode::Autocommit {
                        undo(io, cx, step_cx, &plan.steps[..i]).await?;
                    }
                    return Err(failure);
                }
            }
        }
        if split < n {
            // A fill that would be refused after COMMIT is refused now, while the
            // transaction can still fail as a whole.
            for step in &plan.steps[split..] {
                if let Err(e) = super::backfill::fits(io, step).await? {
                    return Err(Failure::Server(e));
                }
            }
            let (rule, table) = (finding.rule, finding.table.as_ref());
            defer(io, cx, pending, stmt, rule, table, &plan.steps[split..]).await?;
            outcome = journal::Outcome::Deferred;
        }
        Ok(())
    }
    .await;
    let error = result.as_ref().err().map(super::failure_text);
    cx.engine.journal.record(Entry {
        outcome: if error.is_some() {
            journal::Outcome::Failed
        } else {
            outcome
        },
        steps: reports,
        error,
        ..entry(cx, stmt, finding.rule, policy.name(), started)
    });
    result?;
    if let Some(notice) = skipped {
        // Postgres' own words for IF NOT EXISTS on a taken name; nothing to do.
        io.send_client(&notice.to_bytes());
        let mut out = BytesMut::new();
        backend::command_complete(&mut out, finding.tag);
        io.send_client(&out);
        return Ok(());
    }
    let message = match (outcome, policy) {
        (journal::Outcome::Deferred, _) => format!(
            "pgshift: {} runs in your transaction; the rest runs after COMMIT (nothing if you roll back): {}",
            if split == 0 { "nothing".to_string() } else { format!("{split} of {n} steps") },
            plan.summary
        ),
        (_, Policy::Warn) => format!("pgshift: rule {} warns: {}", finding.rule, finding.problem),
        _ => format!("pgshift: rewrote {} (rule {}): {}", finding.tag, finding.rule, plan.summary),
    };
    notice(io, cx, &message, None);
    let mut out = BytesMut::new();
    backend::command_complete(&mut out, finding.tag);
    io.send_client(&out);
    Ok(())
}

/// The first step of `plan` that adds a FOREIGN KEY to a table whose unique
/// index this transaction deferred (its key, added just before): Postgres finds
/// no key to reference until that build is done, so that step and the rest
/// follow it after COMMIT. A foreign key's step names the referenced table in
/// `Step::also` (ADD FOREIGN KEY, inline REFERENCES, in a split statement too).
async fn on_deferred_key<C, S>(
    io: &mut InBand<'_, C, S>,
    pending: &Pending,
    plan: &Plan,
) -> io::Result<Option<usize>>
where
    C: AsyncWrite + Unpin + Send,
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let keyed = pending.unique_builds_on();
    let mut referenced: Vec<String> = Vec::new();
    for t in plan.steps.iter().flat_map(|s| &s.also) {
        if !referenced.contains(t) {
            referenced.push(t.clone());
        }
    }
    let waiting = same_relations(io, &referenced, &keyed).await?;
    Ok(plan
        .steps
        .iter()
        .position(|s| s.also.iter().any(|t| waiting.contains(t))))
}

/// The names in `names` (SQL, as written) that stand, in the client's session,
/// for the same relation as one in `others`; none when either list is empty or
/// the look fails.
async fn same_relations<C, S>(
    io: &mut InBand<'_, C, S>,
    names: &[String],
    others: &[String],
) -> io::Result<Vec<String>>
where
    C: AsyncWrite + Unpin + Send,
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    if names.is_empty() || others.is_empty() {
        return Ok(Vec::new());
    }
    let reply = io
        .query_params(
            "SELECT n FROM pg_catalog.unnest($1::pg_catalog.text[]) AS n \
             WHERE EXISTS (SELECT FROM pg_catalog.unnest($2::pg_catalog.text[]) AS o \
                           WHERE pg_catalog.to_regclass(o) OPERATOR(pg_catalog.=) pg_catalog.to_regclass(n))",
            &[
                &super::unnamed::array_literal(names),
                &super::unnamed::array_literal(others),
            ],
        )
        .await?;
    Ok(match reply.error {
        Some(_) => Vec::new(),
        None => reply.rows.iter().map(|r| super::conn::cell(r, 0)).collect(),
    })
}

/// The refusal of a RENAME of `table`, or of column or constraint `name` in it,
/// while steps this transaction deferred work on that table and name what it
/// renames: they would fail, or miss, after COMMIT.
async fn renames_deferred<C, S>(
    io: &mut InBand<'_, C, S>,
    pending: &Pending,
    table: &crate::sql::analysis::TableRef,
    name: Option<&str>,
) -> io::Result<Option<PgError>>
where
    C: AsyncWrite + Unpin + Send,
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let tables = pending.tables_naming(name);
    let renamed = match &table.schema {
        Some(schema) => crate::sql::ident::qualified(schema, &table.name),
        None => crate::sql::ident::quote(&table.name),
    };
    let Some(deferred) = same_relations(io, &tables, &[renamed])
        .await?
        .into_iter()
        .next()
    else {
        return Ok(None);
    };
    Ok(Some(
        PgError::error(
            "0A000",
            format!(
                "pgshift cannot rename in {deferred} here: this transaction deferred steps on it to after COMMIT, and they name it as it is now"
            ),
        )
        .with_hint(
            "Rename in a transaction of its own after this one commits (e.g. the next migration), or run the deferred statement outside a transaction block.",
        ),
    ))
}

/// True when `stmt` names an index whose build this transaction deferred: it
/// must run after the build, not now (the index does not exist yet).
fn follows(stmt: &Statement, pending: &Pending) -> bool {
    stmt.index_use
        .as_ref()
        .is_some_and(|u| pending.builds_index(&u.indexes))
}

/// Defers `stmt` behind the build it depends on, in order, and answers it.
async fn follow<C, S>(
    io: &mut InBand<'_, C, S>,
    cx: &SessionCx<'_>,
    pending: &mut Pending,
    stmt: &Statement,
) -> Result<(), Failure>
where
    C: AsyncWrite + Unpin + Send,
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let Some(used) = &stmt.index_use else {
        return Ok(());
    };
    let step = Step::quick(stmt.sql.clone(), crate::sql::plan::Lock::AccessExclusive);
    defer(io, cx, pending, stmt, FOLLOWS, None, &[step]).await?;
    let message = format!(
        "pgshift: {} runs after COMMIT, once the deferred build of the index it names is done",
        used.tag
    );
    notice(io, cx, &message, None);
    let mut out = BytesMut::new();
    backend::command_complete(&mut out, used.tag);
    io.send_client(&out);
    Ok(())
}

/// The rule recorded for a statement deferred behind an index build it names.
const FOLLOWS: &str = "follows-deferred-index";

/// Runs a statement on small tables as written: the same SQL, under lock_timeout
/// with retries, in a savepoint inside the client's transaction. The server's
/// notices reach the client; pgshift adds none.
async fn run_as_written<C, S>(
    io: &mut InBand<'_, C, S>,
    cx: &SessionCx<'_>,
    step_cx: &StepContext<'_>,
    stmt: &Statement,
    finding: &Finding,
    why: &str,
) -> Result<(), Failure>
where
    C: AsyncWrite + Unpin + Send,
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let started = Instant::now();
    let mode = Mode::of(io.status);
    let step = Step::quick(stmt.sql.clone(), finding.lock);
    let result = steps::run(io, &step, mode, step_cx).await;
    let error = result.as_ref().err().map(super::failure_text);
    cx.engine.journal.record(Entry {
        outcome: if error.is_some() {
            journal::Outcome::Failed
        } else {
            journal::Outcome::AsWritten
        },
        steps: result.iter().cloned().collect(),
        error,
        ..entry(cx, stmt, finding.rule, why, started)
    });
    result?;
    let mut out = BytesMut::new();
    backend::command_complete(&mut out, finding.tag);
    io.send_client(&out);
    Ok(())
}

/// A journal entry for `stmt` with nothing done yet.
fn entry(
    cx: &SessionCx<'_>,
    stmt: &Statement,
    rule: &str,
    policy: &str,
    started: Instant,
) -> Entry {
    Entry {
        database: cx.database.to_string(),
        session_id: cx.session_id,
        user: cx.user.to_string(),
        statement: stmt.sql.clone(),
        rule: rule.to_string(),
        policy: policy.to_string(),
        outcome: journal::Outcome::Rewritten,
        steps: Vec::new(),
        error: None,
        duration_ms: started.elapsed().as_millis() as u64,
    }
}

/// Index `$2` (as the plan names it) when it is one of table `$1`'s, by its own
/// schema: an unqualified name may resolve to another table's index elsewhere.
const BUILT: &str = "\
SELECT pg_catalog.quote_ident(n.nspname::pg_catalog.text) OPERATOR(pg_catalog.||) '.' \
       OPERATOR(pg_catalog.||) pg_catalog.quote_ident(i.relname::pg_catalog.text)
FROM pg_catalog.pg_index x, pg_catalog.pg_class i, pg_catalog.pg_namespace n
WHERE x.indrelid OPERATOR(pg_catalog.=) pg_catalog.to_regclass($1)
  AND x.indexrelid OPERATOR(pg_catalog.=) pg_catalog.to_regclass($2)
  AND i.oid OPERATOR(pg_catalog.=) x.indexrelid AND n.oid OPERATOR(pg_catalog.=) i.relnamespace";

/// Drops the index a concurrent build of a failed statement made (a later
/// step, its USING INDEX, failed: NULLs under a primary key, a second one), so
/// that nothing is left, as directly. Not a build with IF NOT EXISTS: the index
/// may have been there before.
async fn drop_built<C, S>(
    io: &mut InBand<'_, C, S>,
    cx: &SessionCx<'_>,
    table: &str,
    index: &str,
    build: &str,
) -> io::Result<()>
where
    C: AsyncWrite + Unpin + Send,
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    // pgshift deparsed the build: IF NOT EXISTS stands right after CONCURRENTLY.
    if build.contains("CONCURRENTLY IF NOT EXISTS ") {
        return Ok(());
    }
    let found = io.query_params(BUILT, &[table, index]).await?;
    if found.error.is_some() || found.rows.is_empty() {
        return Ok(());
    }
    let sql = format!("DROP INDEX CONCURRENTLY IF EXISTS {}", found.cell(0));
    let dropped = io.query(&sql).await?;
    if let Some(e) = dropped.error {
        tracing::warn!(target: "pgshift::ddl", session = cx.session_id, undo = %sql, error = %e.message, "could not take back a step of a failed statement");
    }
    Ok(())
}

/// Takes back the steps that completed before one failed, last first, so that
/// the failed statement leaves nothing behind, as it would directly. (Inside a
/// transaction the failure rolls them back.) An undo that fails is logged.
async fn undo<C, S>(
    io: &mut InBand<'_, C, S>,
    cx: &SessionCx<'_>,
    step_cx: &StepContext<'_>,
    done: &[Step],
) -> io::Result<()>
where
    C: AsyncWrite + Unpin + Send,
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    for s in done.iter().rev() {
        if let (None, StepKind::ConcurrentIndex { table, index, .. }) = (&s.undo, &s.kind) {
            drop_built(io, cx, table, index, &s.sql).await?;
            continue;
        }
        let Some(sql) = &s.undo else {
            continue;
        };
        let step = Step::quick(sql.clone(), crate::sql::plan::Lock::AccessExclusive);
        match steps::run(io, &step, Mode::Autocommit, step_cx).await {
            Ok(_) => {}
            Err(Failure::Io(e)) => return Err(e),
            Err(failure) => tracing::warn!(
                target: "pgshift::ddl",
                session = cx.session_id,
                undo = %sql,
                error = %super::failure_text(&failure),
                "could not take back a step of a failed statement"
            ),
        }
    }
    Ok(())
}

/// Records the remaining steps in `pgshift.deferred` through `pgshift.defer`,
/// inside the client's transaction: the row commits or rolls back with it (and
/// with its savepoint). The session keeps the steps and runs them itself once the
/// transaction is over; the row is for people to see, and is never executed.
async fn defer<C, S>(
    io: &mut InBand<'_, C, S>,
    cx: &SessionCx<'_>,
    pending: &mut Pending,
    stmt: &Statement,
    rule: &str,
    table: Option<&String>,
    rest: &[Step],
) -> Result<(), Failure>
where
    C: AsyncWrite + Unpin + Send,
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    // Made on the engine's own runtime: a cancel stops the wait, not the work,
    // which must not be cut short in the middle of the schema's transaction.
    let book = cx.engine.books.get(cx.database);
    let (settings, rt) = (cx.engine.settings(), cx.engine.books.runtime().clone());
    let rt2 = rt.clone();
    let ensure = rt.spawn(async move { book.ensure(&settings, &rt2).await });
    let ready = io
        .unless_cancelled(ensure)
        .await
        .ok_or_else(|| Failure::Ours(steps::canceled()))?
        .map_err(|e| Failure::Io(std::io::Error::other(e)))?;
    ready.map_err(|e| Failure::Ours(PgError::error("58000", e.to_string()).with_hint(e.hint())))?;
    let steps = serde_json::to_string(rest).unwrap_or_default();
    let reads: Vec<String> = REPLAYED
        .iter()
        .map(|(_, read)| format!("pg_catalog.current_setting('{read}')"))
        .collect();
    let call = format!(
        "SELECT {}, current_user::pg_catalog.text, pgshift.defer({}, {}, {}::pg_catalog.jsonb, \
         pg_catalog.current_setting('search_path'), current_user::pg_catalog.text)::pg_catalog.text",
        reads.join(", "),
        literal(&stmt.sql),
        literal(rule),
        literal(&steps)
    );
    let reply = io.query(&call).await?;
    if let Some(e) = reply.error {
        // Its position would point into pgshift's call, not the client's text.
        return Err(Failure::Server(e.without_position()));
    }
    let n = REPLAYED.len();
    let id = reply.cell(n + 1).parse::<i64>().map_err(|_| {
        Failure::Ours(PgError::error("58000", "pgshift.defer recorded no row").with_hint(
            "The statement and its steps are limited to 32 MiB, and the session's current role must be one its login may use.",
        ))
    })?;
    pending
        .push(Deferral {
            id,
            statement: stmt.sql.clone(),
            rule: rule.to_string(),
            steps: rest.to_vec(),
            settings: (0..n).map(|i| reply.cell(i)).collect(),
            role: reply.cell(n),
            table: table.cloned(),
        })
        .map_err(Failure::Ours)
}
