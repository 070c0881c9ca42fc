//! Deferred work runs on the session's own backend right after the transaction
//! that deferred it ends. Meanwhile the client already has its COMMIT's answer,
//! and whatever it sends next waits here. A cancel request does not reach the
//! backend (it would cancel pgshift's committed work, not the client's statement):
//! the waiting statement is answered with 57014 instead, as Postgres answers a
//! cancelled statement, and never runs. If the client goes away, the work still
//! finishes on the backend before the session closes. What the server sends the
//! client meanwhile (notifications) reaches it through a bounded [`Outbox`].

use super::outbox::{Outbox, Writer};
use super::pump::{Direction, PumpEnd};
use super::Established;
use crate::context::{Settings, Shared};
use crate::engine::conn::InBand;
use crate::engine::{self, CancelSignal};
use crate::wire::backend;
use crate::wire::backend::TxStatus;
use crate::wire::frame::header;
use bytes::BytesMut;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

/// Most bytes of the client's next messages read while they wait: then the
/// client's socket fills and it waits for real.
const HOLD_BUFFER: usize = 1 << 20;

/// Longest write to a client that does not read; then it counts as gone (it may
/// be left mid-message, so the session ends after the work).
const WRITE_WAIT: Duration = Duration::from_secs(2);

/// Runs the session's deferred work (its transaction has ended, the server is idle).
pub(super) async fn run_deferred(
    s: &mut Established<'_>,
    shared: &Shared,
    settings: &Settings,
) -> Result<(), PumpEnd> {
    let pending = s.pending.take();
    let cx = super::session_cx(&s.registered.info, shared, settings);
    let outbox = Outbox::default();
    let mut writer = Writer(&outbox);
    let unread = s.down.take_unforwarded();
    let mut io = InBand::new(&mut writer, &mut s.server, unread, TxStatus::Idle, None);
    // The client has its COMMIT's answer: a notice now (an index that is no
    // longer there, skipping) would belong to no statement of its.
    io.step_relay = crate::engine::conn::Relay::Quiet;
    s.signal.set_own_work(true);
    let mut waiting = Waiting::new(&s.signal, s.up.scanner.held);
    let mut watch = shared.terminate.watch();
    let done = {
        let work = engine::deferred::run_committed(&mut io, &cx, pending);
        tokio::pin!(work);
        loop {
            tokio::select! {
                r = &mut work => break Some(r),
                _ = watch.fired() => break None,
                _ = outbox.filled() => waiting.pass_on(outbox.take_frames(), &mut s.client).await,
                event = waiting.next(&mut s.client, &mut s.up) => {
                    waiting.handle(event, &mut s.client, &mut s.up).await;
                }
            }
        }
    };
    s.signal.set_own_work(false);
    let status = io.status;
    let unread = io.into_unread();
    match done {
        None => return Err(PumpEnd::Terminated),
        Some(r) => r.map_err(PumpEnd::ServerIo)?,
    }
    waiting.pass_on(outbox.take_frames(), &mut s.client).await;
    s.down.restore(unread).map_err(PumpEnd::ServerProtocol)?;
    s.down.scanner.set_tx_status(status);
    if waiting.client_gone {
        return Err(PumpEnd::ClientClosed);
    }
    Ok(())
}

/// The client's side while the work runs.
struct Waiting<'a> {
    signal: &'a CancelSignal,
    seen: u64,
    /// Cancel requests that arrived while a statement of the client's waited.
    cancels: usize,
    /// The client closed, or a write to it failed: read and write no more.
    client_gone: bool,
    /// Bytes already buffered when the wait began (the held message).
    start: usize,
}

enum Event {
    Read(std::io::Result<usize>),
    Cancel,
}

impl<'a> Waiting<'a> {
    fn new(signal: &'a CancelSignal, held: usize) -> Self {
        Waiting {
            signal,
            seen: signal.count(),
            cancels: 0,
            client_gone: false,
            start: held,
        }
    }

    /// The next thing that happens on the client's side. Both branches can be
    /// dropped at any point without losing data.
    async fn next<C: AsyncRead + Unpin>(&mut self, client: &mut C, up: &mut Direction) -> Event {
        let can_read = !self.client_gone && up.pending().len() < self.start + HOLD_BUFFER;
        tokio::select! {
            n = up.read_more(client), if can_read => Event::Read(n),
            _ = self.signal.after(self.seen) => Event::Cancel,
        }
    }

    /// Writes whole frames to the client; a client that does not take them within
    /// [`WRITE_WAIT`] is gone (frames for it are dropped).
    async fn pass_on<C: AsyncWrite + Unpin>(&mut self, frames: BytesMut, client: &mut C) {
        if frames.is_empty() || self.client_gone {
            return;
        }
        let written = tokio::time::timeout(WRITE_WAIT, async {
            client.write_all(&frames).await?;
            client.flush().await
        })
        .await;
        if !matches!(written, Ok(Ok(()))) {
            self.client_gone = true;
        }
    }

    async fn handle<C: AsyncWrite + Unpin>(
        &mut self,
        event: Event,
        client: &mut C,
        up: &mut Direction,
    ) {
        match event {
            Event::Read(Ok(0)) | Event::Read(Err(_)) => self.client_gone = true,
            Event::Read(Ok(_)) => {}
            Event::Cancel => {
                self.seen = self.signal.count();
                // A cancel with no statement waiting finds nothing to cancel, as
                // on an idle backend.
                if up.pending().first().is_some_and(|&t| opens_statement(t)) {
                    self.cancels += 1;
                }
            }
        }
        while self.cancels > 0 && !self.client_gone {
            let Some(len) = turn_len(up.pending()) else {
                break;
            };
            let mut out = BytesMut::new();
            crate::engine::steps::canceled().encode(&mut out);
            backend::ready_for_query(&mut out, TxStatus::Idle);
            self.pass_on(out, client).await;
            tracing::info!("cancel request answered a statement waiting for deferred work");
            up.drop_front(len);
            self.start = 0;
            self.cancels -= 1;
        }
    }
}

/// Messages that start a statement a cancel can hit (not Sync, Flush, Terminate).
fn opens_statement(tag: u8) -> bool {
    matches!(tag, b'Q' | b'P' | b'B' | b'E' | b'D' | b'C' | b'F')
}

/// Length of the whole turn at the start of `buf` (a Query, a FunctionCall, or
/// extended-protocol messages up to their Sync), if it is all there and holds a
/// statement. None for a Terminate, a bare Sync or Flush: nothing to cancel.
pub(super) fn turn_len(buf: &[u8]) -> Option<usize> {
    let mut pos = 0;
    loop {
        let (tag, total) = header(&buf[pos..], usize::MAX).ok()??;
        if buf.len() - pos < total || (pos == 0 && !opens_statement(tag)) {
            return None;
        }
        pos += total;
        match tag {
            b'X' => return None,
            b'Q' | b'F' if pos == total => return Some(pos),
            b'S' => return Some(pos),
            _ => {}
        }
    }
}

/// After the client left: lets the server finish what it was sent, and if the
/// transaction ended, runs the deferred work with nobody waiting (bounded by the
/// quiet-point wait; the work itself by its own timeouts).
pub(super) async fn finish_after_client_left(
    s: &mut Established<'_>,
    shared: &Shared,
    settings: &Settings,
) {
    if s.pending.is_empty() {
        return;
    }
    let turns = s.up.scanner.turns;
    let mut sink = tokio::io::sink();
    let quiet = tokio::time::timeout(
        Duration::from_secs(10),
        super::intercept::quiesce(
            &mut s.server,
            &mut sink,
            &mut s.down,
            turns,
            &shared.terminate,
        ),
    )
    .await;
    if !matches!(quiet, Ok(Ok(()))) || s.down.scanner.tx_status() != Some(TxStatus::Idle) {
        // Mid-transaction: the server rolls it back when the connection closes.
        return;
    }
    // The client's side reads EOF at once: nobody waits, the work still runs.
    match run_deferred(s, shared, settings).await {
        Ok(()) | Err(PumpEnd::ClientClosed) => {}
        Err(end) => {
            tracing::warn!(end = ?end, "deferred work after the client left did not finish")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::turn_len;
    use crate::wire::frame::write_frame;

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = bytes::BytesMut::new();
        write_frame(&mut out, tag, |b| b.extend_from_slice(body));
        out.to_vec()
    }

    #[test]
    fn whole_turns_only() {
        let q = msg(b'Q', b"SELECT 1\0");
        assert_eq!(turn_len(&q), Some(q.len()));
        assert_eq!(turn_len(&q[..q.len() - 1]), None);
        let batch = [
            msg(b'P', b"\0SELECT 1\0\0\0"),
            msg(b'B', b"\0\0\0\0\0\0\0\0"),
            msg(b'E', b"\0\0\0\0\0"),
            msg(b'S', b""),
        ]
        .concat();
        assert_eq!(turn_len(&batch), Some(batch.len()));
        assert_eq!(turn_len(&batch[..batch.len() - 5]), None);
        assert_eq!(turn_len(&msg(b'X', b"")), None);
        assert_eq!(
            turn_len(&msg(b'S', b"")),
            None,
            "a bare Sync is not cancelled"
        );
    }
}
