//! The hand-off between the pump and the DDL engine: wait until the server has
//! answered everything sent before the held Query, give the engine the connection,
//! then put the pump's state back the way the engine left it.

use super::pump::{Direction, PumpEnd, Stop, TransferError};
use super::Established;
use crate::engine::conn::InBand;
use crate::engine::{self, Outcome, SessionCx};
use crate::server::{Settings, Shared};
use crate::wire::frame::HEADER_LEN;
use std::task::Poll;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

pub(super) async fn run(
    s: &mut Established<'_>,
    shared: &Shared,
    settings: &Settings,
    deferred_pending: &mut bool,
) -> Result<(), PumpEnd> {
    quiesce(
        &mut s.server,
        &mut s.client,
        &mut s.down,
        s.up.scanner.turns,
    )
    .await?;
    let frame = s.up.take_held().map_err(PumpEnd::ClientProtocol)?;
    let body = &frame[HEADER_LEN..];
    let sql = std::str::from_utf8(body.strip_suffix(&[0]).unwrap_or(body)).ok();
    let unread = s.down.take_unforwarded();
    let status = s.down.scanner.tx_status;
    let info = &s.registered.info;
    let outcome = match sql {
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
            let handled = engine::handle(&mut io, &cx, sql).await;
            let status = io.status;
            handled.map(|o| (o, status, io.into_unread()))
        }
    };
    let (outcome, status, unread) = outcome.map_err(PumpEnd::ServerIo)?;
    s.down.restore(unread).map_err(PumpEnd::ServerProtocol)?;
    match outcome {
        Outcome::Forward => {
            s.server
                .write_all(&frame)
                .await
                .map_err(PumpEnd::ServerIo)?;
            s.up.scanner.turns += 1;
        }
        Outcome::Handled {
            deferred_pending: pending,
        } => {
            *deferred_pending = pending;
            s.down.scanner.tx_status = status;
            info.set_tx_status(status);
        }
    }
    s.up.scanner.intercept_all = *deferred_pending;
    Ok(())
}

/// Relays server output until it has answered every turn the client started
/// (`turns`) and stands at a frame boundary.
async fn quiesce<S, C>(
    server: &mut S,
    client: &mut C,
    down: &mut Direction,
    turns: u64,
) -> Result<(), PumpEnd>
where
    S: AsyncRead + AsyncWrite + Unpin,
    C: AsyncRead + AsyncWrite + Unpin,
{
    std::future::poll_fn(|cx| {
        let quiet = |d: &Direction| d.scanner.turns >= turns && d.at_boundary();
        if quiet(down) {
            return Poll::Ready(Ok(()));
        }
        match down.poll_transfer(cx, server, client) {
            Poll::Pending if quiet(down) => Poll::Ready(Ok(())),
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(Stop::Eof | Stop::Held)) => Poll::Ready(Err(PumpEnd::ServerClosed)),
            Poll::Ready(Err(TransferError::Read(e))) => Poll::Ready(Err(PumpEnd::ServerIo(e))),
            Poll::Ready(Err(TransferError::Write(e))) => Poll::Ready(Err(PumpEnd::ClientIo(e))),
            Poll::Ready(Err(TransferError::Frame(e))) => {
                Poll::Ready(Err(PumpEnd::ServerProtocol(e)))
            }
        }
    })
    .await
}
