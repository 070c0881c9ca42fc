//! The hand-off between the pump and the DDL engine: wait until the server has
//! answered everything sent before the held message, run deferred work whose
//! transaction has ended, give the engine the connection, then put the pump's
//! state back the way the engine left it.

use super::hold;
use super::pump::{Direction, PumpEnd};
use super::terminate::Terminate;
use super::Established;
use crate::context::{Settings, Shared};
use crate::engine::conn::InBand;
use crate::engine::{self, Batch, Outcome};
use crate::wire::backend::TxStatus;
use crate::wire::frame::HEADER_LEN;
use std::task::Poll;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

pub(super) async fn run(
    s: &mut Established<'_>,
    shared: &Shared,
    settings: &Settings,
) -> Result<(), PumpEnd> {
    let result = turn(s, shared, settings).await;
    // Deferred work waits for its transaction's end: until then every message
    // that opens a turn is held.
    s.up.scanner.hold_every_turn(!s.pending.is_empty());
    // A message pgshift answered itself (or a cancel did) left nothing out.
    s.up.scanner.settle();
    result?;
    s.up.rescan().map_err(PumpEnd::ClientProtocol)
}

async fn turn(
    s: &mut Established<'_>,
    shared: &Shared,
    settings: &Settings,
) -> Result<(), PumpEnd> {
    let turns = s.up.scanner.turns;
    let quiet = tokio::time::timeout(
        QUIESCE_WAIT,
        quiesce(
            &mut s.server,
            &mut s.client,
            &mut s.down,
            turns,
            &shared.terminate,
        ),
    )
    .await;
    match quiet {
        Ok(quiet) => quiet?,
        Err(_) => {
            // Earlier work is still running (or pgshift lost count of the server's
            // turns): the only safe move is to behave like a plain relay.
            tracing::warn!(
                waited_ms = QUIESCE_WAIT.as_millis() as u64,
                "no quiet point before a held message: forwarded unchanged"
            );
            s.up.release_held();
            return Ok(());
        }
    }
    if !s.pending.is_empty() && s.down.scanner.tx_status() == Some(TxStatus::Idle) {
        // The transaction that deferred work has ended (a COMMIT the engine did
        // not see: extended protocol, a prepared statement): run it now, before
        // anything the client sends next.
        s.mirrors.forget_unnamed();
        hold::run_deferred(s, shared, settings).await?;
    }
    // Nothing of the client's is at the server now: a rollout's lock window need
    // not wait for this session while it renews (or waits for that window).
    for round in 0..RENEW_ROUNDS {
        if round == 0 || s.up.scanner.stale() {
            s.up.scanner.quiet();
        }
        if s.up.scanner.stale() {
            super::statements::renew(s, shared, settings).await?;
        }
        // Published before the check: a lock window that opens from here on
        // waits for this turn; one that opened before, the check sees.
        s.up.scanner.publish();
        if !s.up.scanner.stale() {
            break;
        }
    }
    if s.up.scanner.held == 0 {
        // Woken only for the deferred work, or a cancel answered the held message.
        return Ok(());
    }
    // What the engine may answer: a simple Query, or a whole parameterless batch.
    // A message held only so that deferred work could run first goes on as it
    // came, but for a Query that may end the transaction in a way deferred work
    // cannot follow (the engine refuses those).
    let held = s.up.scanner.held;
    let hit = s.up.scanner.held_hit;
    // An INSERT or UPDATE held because a table may be under rollout: it may set
    // the rollout's new column too (with deferred work waiting, the engine's).
    let write = s.up.pending().first() == Some(&b'Q') && {
        let body = &s.up.pending()[HEADER_LEN..held];
        crate::sql::sniff::starts_with_write(body) && !crate::sql::sniff::may_be_ddl(body)
    };
    if write && hit && s.pending.is_empty() {
        let body = &s.up.pending()[HEADER_LEN..held];
        let body = body.strip_suffix(&[0]).unwrap_or(body);
        let sql = std::str::from_utf8(body)
            .ok()
            .filter(|sql| sql.len() <= MIRROR_MAX)
            .map(str::to_string);
        let rewritten = match sql {
            Some(sql) => super::mirror::rewrite(s, shared, settings, &sql, false).await?,
            None => None,
        };
        match rewritten {
            Some((m, _)) => {
                let mut frame = bytes::BytesMut::new();
                crate::wire::backend::query(&mut frame, &m.text);
                // Its errors point into the client's text, as they would directly.
                s.down.scanner.added_text(m.added);
                s.up.replace_held(&frame);
            }
            None => s.up.release_held(),
        }
        return Ok(());
    }
    // A prepared INSERT or UPDATE that may set a rollout's new column too.
    if hit && s.pending.is_empty() && super::mirrored::prepared(s, shared, settings).await? {
        return Ok(());
    }
    // A COPY prepared while a table is under rollout: its Parse alone.
    if hit && super::copies::prepared(s, shared, settings).await? {
        return Ok(());
    }
    let (sql, prefix, len) = match s.up.pending().first() {
        Some(b'P') if hit => match gather(s, settings).await? {
            Some(batch) => (Some(batch.sql), batch.prefix, batch.len),
            None => (None, Default::default(), held),
        },
        Some(b'Q') => {
            let body = &s.up.pending()[HEADER_LEN..held];
            let body = body.strip_suffix(&[0]).unwrap_or(body);
            let look = hit && !write || !s.pending.is_empty() && may_end_oddly(body);
            let sql = look.then(|| std::str::from_utf8(body).ok()).flatten();
            (sql.map(str::to_string), Default::default(), held)
        }
        _ => (None, Default::default(), held),
    };
    let Some(sql) = sql else {
        s.up.release_held();
        return Ok(());
    };
    // The engine runs statements of its own on the connection.
    s.mirrors.forget_unnamed();
    // While the engine works on the held message, nothing of the session is at
    // the server: a lock window (the engine may open one itself, starting a
    // rollout) need not wait for it.
    s.up.scanner.quiet();
    let unread = s.down.take_unforwarded();
    let status = s.down.scanner.tx_status().unwrap_or_default();
    let info = s.registered.info.clone();
    let cx = super::session_cx(&info, shared, settings);
    let mut io = InBand::new(
        &mut s.client,
        &mut s.server,
        unread,
        status,
        Some(&s.signal),
    );
    // Shutdown's terminate signal ends even a long in-band step: the session
    // closes; the server notices when it next writes to the closed connection (or
    // at client_connection_check_interval, if set).
    // The console's KILL too: a session waiting on a long transaction is what
    // SHOW BLOCKERS shows, and what an operator ends.
    let mut watch = shared.terminate.watch();
    let mut killed = info.kill.watch();
    let handled = tokio::select! {
        h = engine::handle(&mut io, &cx, &mut s.pending, &sql, &prefix) => Some(h),
        _ = watch.fired() => None,
        _ = killed.fired() => None,
    };
    let Some(handled) = handled else {
        return Err(match (io.client_write_pending(), info.kill.is_fired()) {
            (true, _) => PumpEnd::TerminatedMidReply,
            (false, true) => PumpEnd::Killed,
            (false, false) => PumpEnd::Terminated,
        });
    };
    let status = io.status;
    let client_gone = io.client_gone();
    let unread = io.into_unread();
    // A cancel sent on while the engine ran queries of its own may still be on
    // its way: it must reach the backend before the client's next statement does.
    s.signal.arrived().await;
    let outcome = handled.map_err(PumpEnd::ServerIo)?;
    s.down.restore(unread).map_err(PumpEnd::ServerProtocol)?;
    match outcome {
        Outcome::Forward => s.up.release_held(),
        Outcome::Rewrite(sql) if s.up.pending().first() == Some(&b'Q') && len == held => {
            let mut frame = bytes::BytesMut::new();
            crate::wire::backend::query(&mut frame, &sql);
            s.up.replace_held(&frame);
        }
        Outcome::Rewrite(_) => s.up.release_held(),
        Outcome::Handled => {
            s.up.drop_front(len);
            s.down.scanner.set_tx_status(status);
            info.set_tx_status(status);
            if !s.pending.is_empty() && status == TxStatus::Idle {
                // The client's COMMIT just went through the engine: the client has
                // its answer, and its next statement waits for the deferred work.
                hold::run_deferred(s, shared, settings).await?;
            }
        }
    }
    if client_gone {
        return Err(PumpEnd::ClientClosed);
    }
    Ok(())
}

/// True when `sql` may hold PREPARE TRANSACTION or COMMIT AND CHAIN (a cheap,
/// generous test: the engine parses what it lets through).
fn may_end_oddly(sql: &[u8]) -> bool {
    let has = |word: &[u8]| {
        sql.windows(word.len())
            .any(|w| w.eq_ignore_ascii_case(word))
    };
    has(b"prepare") || has(b"chain")
}

/// Renewals in a row at one turn while changes keep coming; past them the turn
/// goes on stale (as it does in a failed transaction).
const RENEW_ROUNDS: usize = 3;

/// Longest write a rollout's mirror parses (a longer one is left to the trigger).
const MIRROR_MAX: usize = 64 << 10;

/// Longest wait for the server to finish earlier work before a held statement.
const QUIESCE_WAIT: Duration = Duration::from_secs(10);

/// How long pgshift waits for the rest of a batch that starts with a held Parse.
const BATCH_WAIT: Duration = Duration::from_secs(1);

/// Reads until the batch that starts with the held Parse is complete, and says
/// whether the engine can answer it.
async fn gather(s: &mut Established<'_>, settings: &Settings) -> Result<Option<Batch>, PumpEnd> {
    let deadline = tokio::time::Instant::now() + BATCH_WAIT;
    let max = settings.config.server.max_message_size;
    loop {
        if let Some(len) = engine::batch_len(s.up.pending()) {
            return Ok(engine::parse_batch(s.up.pending(), len));
        }
        // A client that flushed without a Sync waits for the answer first: the
        // batch will not complete, and the engine cannot answer part of one.
        if s.up.pending().len() > max || engine::flushed(s.up.pending()) {
            return Ok(None);
        }
        match tokio::time::timeout_at(deadline, s.up.read_more(&mut s.client)).await {
            Err(_) => return Ok(None),
            Ok(Ok(0)) => return Err(PumpEnd::ClientClosed),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(PumpEnd::ClientIo(e)),
        }
    }
}

/// Relays server output until it has answered every turn the client started
/// (`turns`) and stands at a frame boundary.
pub(super) async fn quiesce<S, C>(
    server: &mut S,
    client: &mut C,
    down: &mut Direction,
    turns: u64,
    terminate: &Terminate,
) -> Result<(), PumpEnd>
where
    S: AsyncRead + AsyncWrite + Unpin,
    C: AsyncWrite + Unpin,
{
    let mut watch = terminate.watch();
    std::future::poll_fn(|cx| {
        if watch.poll_fired(cx) {
            return Poll::Ready(Err(PumpEnd::Terminated));
        }
        let quiet = |d: &Direction| d.scanner.turns >= turns && d.at_boundary();
        if quiet(down) {
            return Poll::Ready(Ok(()));
        }
        match down.poll_transfer(cx, server, client) {
            Poll::Pending if quiet(down) => Poll::Ready(Ok(())),
            Poll::Pending => Poll::Pending,
            Poll::Ready(r) => Poll::Ready(Err(PumpEnd::server_side(r))),
        }
    })
    .await
}
