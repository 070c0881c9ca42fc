//! The engine's side of a rollout start: an intercepted rewriting `ALTER COLUMN
//! … TYPE` on a large table, with the client idle, becomes a rollout; the client
//! gets `ALTER TABLE` and a NOTICE with the rollout's id once the new column
//! exists and every write mirrors into it.

use super::conn::InBand;
use super::reply::notice;
use super::steps::{Failure, StepContext};
use super::{journal, Entry, SessionCx};
use crate::rollout::{start, Spec};
use crate::sql::analysis::Statement;
use crate::sql::plan::Finding;
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
    let error = result.as_ref().err().map(super::failure_text);
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
    let started = result?;
    notice(
        io,
        cx,
        &format!(
            "pgshift: started rollout {} of {}: the new column is mirrored and backfilled in the background, then verified",
            started.id, started.describe
        ),
        Some(&format!(
            "The column keeps its old type until the cutover ({}). Follow it in pgshift.rollouts (id {}).",
            match cx.settings.config.rollout.cutover {
                crate::config::When::Auto => "automatic once verified",
                crate::config::When::Manual => "an operator's request",
            },
            started.id
        )),
    );
    let mut out = BytesMut::new();
    backend::command_complete(&mut out, finding.tag);
    io.send_client(&out);
    Ok(())
}
