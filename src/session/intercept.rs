//! The hand-off between the pump and the DDL engine: wait until the server has
//! answered everything sent before the held Query, give the engine the connection,
//! then put the pump's state back the way the engine left it.

use super::pump::{Direction, PumpEnd};
use super::terminate::Terminate;
use super::Established;
use crate::engine::conn::InBand;
use crate::engine::{self, Batch, Outcome, SessionCx};
use crate::server::{Settings, Shared};
use crate::wire::frame::HEADER_LEN;
use std::task::Poll;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

pub(super) async fn run(
    s: &mut Established<'_>,
    shared: &Shared,
    settings: &Settings,
    deferred_pending: &mut bool,
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
                "no quiet point before a possible DDL statement: forwarded unchanged"
            );
            return forward_held(s);
        }
    }
    if *deferred_pending && s.down.scanner.tx_status == b'I' {
        // The transaction that deferred work ended some other way (extended
        // protocol COMMIT, a forwarded ROLLBACK): hand the work to the runner.
        shared.engine.deferred.poke(&s.registered.info.database);
        *deferred_pending = false;
        s.up.scanner.intercept_all = false;
    }
    // What the engine may answer: a simple Query, or a whole parameterless batch.
    let held = s.up.scanner.held;
    let (sql, prefix, len) = if s.up.pending().first() == Some(&b'P') {
        match gather(s, settings).await? {
            Some(batch) => (Some(batch.sql), batch.prefix, batch.len),
            None => (None, Default::default(), held),
        }
    } else {
        let body = &s.up.pending()[HEADER_LEN..held];
        let sql = std::str::from_utf8(body.strip_suffix(&[0]).unwrap_or(body)).ok();
        (sql.map(str::to_string), Default::default(), held)
    };
    let unread = s.down.take_unforwarded();
    let status = s.down.scanner.tx_status;
    let info = &s.registered.info;
    let outcome = match &sql {
        None => Ok((Outcome::Forward, status, unread)),
        Some(sql) => {
            let cx = SessionCx {
                settings,
                engine: &shared.engine,
                database: &info.database,
                user: &info.user,
                session_id: info.id,
                deferred_pending: *deferred_pending,
            };
            let mut io = InBand::new(&mut s.client, &mut s.server, unread, status);
            // Shutdown's terminate signal ends even a long in-band step: the
            // session closes; the server notices when it next writes to the closed
            // connection (or at client_connection_check_interval, if set).
            let mut watch = shared.terminate.watch();
            let handled = tokio::select! {
                h = engine::handle(&mut io, &cx, sql, &prefix) => Some(h),
                _ = watch.fired() => None,
            };
            let Some(handled) = handled else {
                return Err(match io.client_write_pending() {
                    true => PumpEnd::TerminatedMidReply,
                    false => PumpEnd::Terminated,
                });
            };
            let status = io.status;
            handled.map(|o| (o, status, io.into_unread()))
        }
    };
    let (outcome, status, unread) = outcome.map_err(PumpEnd::ServerIo)?;
    s.down.restore(unread).map_err(PumpEnd::ServerProtocol)?;
    match outcome {
        Outcome::Forward => return forward_held(s),
        Outcome::Handled {
            deferred_pending: pending,
        } => {
            s.up.take_front(len).map_err(PumpEnd::ClientProtocol)?;
            *deferred_pending = pending;
            s.down.scanner.tx_status = status;
            info.set_tx_status(status);
        }
    }
    s.up.scanner.intercept_all = *deferred_pending;
    Ok(())
}

/// Lets the held frame go to the server as it came: the pump writes it (while it
/// keeps relaying the server's output and watching for shutdown), and the scanner
/// sees the rest of the buffer as usual, knowing whether the frame opened a batch.
fn forward_held(s: &mut Established<'_>) -> Result<(), PumpEnd> {
    if s.up.pending().first() == Some(&b'Q') {
        s.up.scanner.turns += 1;
    } else {
        s.up.scanner.in_batch = true;
    }
    s.up.release_held().map_err(PumpEnd::ClientProtocol)
}

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
        if s.up.pending().len() > max {
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
async fn quiesce<S, C>(
    server: &mut S,
    client: &mut C,
    down: &mut Direction,
    turns: u64,
    terminate: &Terminate,
) -> Result<(), PumpEnd>
where
    S: AsyncRead + AsyncWrite + Unpin,
    C: AsyncRead + AsyncWrite + Unpin,
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
