//! The engine's side of a rollout start: an intercepted rewriting `ALTER COLUMN
//! … TYPE` on a large table, with the client idle, becomes a rollout; the client
//! gets `ALTER TABLE` and a NOTICE with the rollout's id once the new column
//! exists and every write mirrors into it.

use super::conn::InBand;
use super::reply::notice;
use super::steps::{Failure, StepContext};
use super::{journal, Entry, SessionCx};
use crate::rollout::{fill, start, Spec};
use crate::sql::analysis::Statement;
use crate::sql::plan::{Finding, OnlineFill, Plan};
use crate::wire::backend::{self, PgError, TxStatus};
use bytes::BytesMut;
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncWrite};

pub(super) async fn run<C, S>(
    io: &mut InBand<'_, C, S>,
    cx: &SessionCx<'_>,
    step_cx: &StepContext<'_>,
    stmt: &Statement,
    finding: &Finding,
    spec: Spec,
) -> Result<(), Failure>
where
    C: AsyncWrite + Unpin + Send,
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let started = Instant::now();
    let result = if io.status != TxStatus::Idle {
        Err(Failure::Ours(
            PgError::error(
                "0A000",
                format!(
                    "pgshift refused ALTER TABLE inside a transaction block: {}",
                    finding.problem
                ),
            )
            .with_hint("pgshift runs this type change as an online rollout, which starts outside a transaction block: run the ALTER on its own (autocommit)."),
        ))
    } else {
        start::start(io, cx, step_cx, &spec, &stmt.sql).await
    };
    journal(cx, stmt, finding, started, result.as_ref().err());
    let started = result?;
    let when = match cx.settings.config.rollout.cutover {
        crate::config::When::Auto => "automatic once verified",
        crate::config::When::Manual => "an operator's request",
    };
    answer(
        io,
        cx,
        finding,
        &format!(
            "pgshift: started rollout {} of {}: the new column is mirrored and backfilled in the background, then verified",
            started.id, started.describe
        ),
        &format!(
            "The column keeps its old type until the cutover ({when}). Follow it in pgshift.rollouts (id {}).",
            started.id
        ),
    );
    Ok(())
}

/// An `ADD COLUMN … DEFAULT <volatile>` whose rows may be filled in the
/// background: the client gets its answer once the column exists. Otherwise
/// says how the caller adds the column.
pub(super) async fn fill<C, S>(
    io: &mut InBand<'_, C, S>,
    cx: &SessionCx<'_>,
    step_cx: &StepContext<'_>,
    stmt: &Statement,
    finding: &Finding,
    plan: &Plan,
    online: &OnlineFill,
) -> Result<fill::Fill, Failure>
where
    C: AsyncWrite + Unpin + Send,
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let (Some(table), [add, set_default, _]) = (finding.table.as_deref(), plan.steps.as_slice())
    else {
        return Ok(fill::Fill::InBand(
            "the statement is not a plain ADD COLUMN".into(),
        ));
    };
    let spec = fill::FillSpec {
        table,
        online,
        add: &add.sql,
        set_default: &set_default.sql,
        exists: false,
        known_oid: None,
    };
    let began = Instant::now();
    let result = fill::start(io, cx, step_cx, &spec, &stmt.sql).await;
    let started = match result {
        Ok(fill::Fill::Started(s)) => Ok(s),
        Ok(other) => return Ok(other),
        Err(f) => Err(f),
    };
    journal(cx, stmt, finding, began, started.as_ref().err());
    let started = started?;
    answer(
        io,
        cx,
        finding,
        &format!(
            "pgshift: added the column; rollout {} fills its existing rows in the background: {}",
            started.id, started.describe
        ),
        &format!(
            "New rows get the default now; existing rows read NULL until the backfill reaches them (an UPDATE of one fills it). Follow it in pgshift.rollouts (id {}).",
            started.id
        ),
    );
    Ok(fill::Fill::Started(started))
}

/// A fill deferred from a transaction block that added the column (and its
/// default) and has committed: its old rows are filled by a rollout in the
/// background, or, when the background cannot evaluate the default, in-band
/// by the step as planned (None).
pub(super) async fn fill_committed<C: super::conn::Conn>(
    io: &mut C,
    cx: &SessionCx<'_>,
    step_cx: &StepContext<'_>,
    table: &str,
    online: &OnlineFill,
    statement: &str,
) -> Result<Option<crate::rollout::start::Started>, Failure> {
    let spec = fill::FillSpec {
        table,
        online,
        add: "",
        set_default: "",
        exists: true,
        known_oid: None,
    };
    match fill::start(io, cx, step_cx, &spec, statement).await? {
        fill::Fill::Started(started) => Ok(Some(started)),
        fill::Fill::InBand(_) | fill::Fill::AsWritten => Ok(None),
    }
}

fn journal(
    cx: &SessionCx<'_>,
    stmt: &Statement,
    finding: &Finding,
    started: Instant,
    failure: Option<&Failure>,
) {
    let error = failure.map(super::failure_text);
    cx.engine.journal.record(Entry {
        database: cx.database.to_string(),
        session_id: cx.session_id,
        user: cx.user.to_string(),
        statement: stmt.sql.clone(),
        rule: finding.rule.to_string(),
        policy: "rewrite".into(),
        outcome: if error.is_some() {
            journal::Outcome::Failed
        } else {
            journal::Outcome::Rewritten
        },
        steps: Vec::new(),
        error,
        duration_ms: started.elapsed().as_millis() as u64,
    });
}

/// The NOTICE and the original command tag.
fn answer<C, S>(
    io: &mut InBand<'_, C, S>,
    cx: &SessionCx<'_>,
    finding: &Finding,
    message: &str,
    hint: &str,
) where
    C: AsyncWrite + Unpin + Send,
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    notice(io, cx, message, Some(hint));
    let mut out = BytesMut::new();
    backend::command_complete(&mut out, finding.tag);
    io.send_client(&out);
}
