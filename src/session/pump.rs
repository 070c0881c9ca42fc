//! The hot path: after authentication, bytes flow both ways in one future, like
//! tokio's copy_bidirectional, but frame-aware. Each direction reads into its own
//! buffer, lets the scanner mark how much is complete, and writes that in one call.
//! No per-message allocation, no SQL parsing, no locks.

use super::info::SessionInfo;
use super::pause::Hold;
use super::spill::Spill;
use super::terminate::Terminate;
use crate::stats::{Stats, Traffic};
use crate::wire::backend::TxStatus;
use crate::wire::frame::FrameError;
use crate::wire::scanner::{Counts, Flow, Scanner};
use bytes::{Buf, BytesMut};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Sleep;

/// Read buffer per direction; grows only while a held frame needs more.
const BUF_SIZE: usize = 8 * 1024;
/// A buffer that grew past this is dropped once it is empty again.
const SHRINK_ABOVE: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("read: {0}")]
    Read(io::Error),
    #[error("write: {0}")]
    Write(io::Error),
    #[error(transparent)]
    Frame(FrameError),
    /// The file a long row goes through.
    #[error("spill file: {0}")]
    Spill(io::Error),
}

/// Why a direction stopped moving bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Stop {
    /// The reading side ended.
    Eof,
    /// The scanner holds a Query for the DDL engine; everything before it is written.
    Held,
}

/// One direction of a session.
pub struct Direction {
    buf: BytesMut,
    /// Prefix of `buf` that is scanned and may be written.
    ready: usize,
    pub scanner: Scanner,
    read_eof: bool,
    need_flush: bool,
    /// Bytes written since the last report.
    unreported: u64,
    /// A long DataRow on its way through a file (see [`Spill`]).
    spill: Option<Spill>,
}

impl Direction {
    /// A direction that starts with bytes already read during the handshake.
    pub fn new(flow: Flow, limit: usize, initial: BytesMut) -> Result<Self, FrameError> {
        let mut d = Direction {
            buf: initial,
            ready: 0,
            scanner: Scanner::new(flow, limit),
            read_eof: false,
            need_flush: false,
            unreported: 0,
            spill: None,
        };
        d.scan_from(0)?;
        Ok(d)
    }

    /// Scans past `from`; once the client's stream ended for the server, drops
    /// what follows (Postgres never reads it), so that it cannot pile up.
    fn scan_from(&mut self, from: usize) -> Result<(), FrameError> {
        self.ready = self.scanner.scan(&mut self.buf, from)?;
        if self.scanner.ended.is_some() {
            self.buf.truncate(self.ready);
        }
        Ok(())
    }

    /// True when everything forwarded so far ends on a frame boundary, so the proxy
    /// may write a message of its own to the peer.
    pub fn at_boundary(&self) -> bool {
        self.ready == 0 && self.scanner.at_boundary() && self.spill.is_none()
    }

    /// The unforwarded bytes, starting with the held frame.
    pub fn pending(&self) -> &[u8] {
        &self.buf
    }

    /// Reads more from `r` into the buffer (the DDL engine gathering a batch).
    pub async fn read_more<R: AsyncRead + Unpin>(&mut self, r: &mut R) -> io::Result<usize> {
        use tokio::io::AsyncReadExt;
        r.read_buf(&mut self.buf).await
    }

    /// Drops `len` bytes (the held frame, or a whole turn starting with it): pgshift
    /// answered them itself. What follows is scanned by [`Self::rescan`].
    pub fn drop_front(&mut self, len: usize) {
        self.buf.advance(len.min(self.buf.len()));
        self.scanner.consume();
    }

    /// Makes the held frame forwardable as it came; what follows is scanned by
    /// [`Self::rescan`].
    pub fn release_held(&mut self) {
        self.ready = self.scanner.release();
    }

    /// Forwards `frame` in place of the held frame (a message of the same kind, so
    /// the turn is counted as for the held one); what follows is scanned by
    /// [`Self::rescan`].
    pub fn replace_held(&mut self, frame: &[u8]) {
        let held = self.scanner.release();
        let mut buf = BytesMut::with_capacity(frame.len() + self.buf.len() - held);
        buf.extend_from_slice(frame);
        buf.extend_from_slice(&self.buf[held..]);
        self.buf = buf;
        self.ready = frame.len();
    }

    /// Scans what is buffered past the forwardable prefix (after the scanner's
    /// flags changed, or a held frame was dropped or released).
    pub fn rescan(&mut self) -> Result<(), FrameError> {
        self.scan_from(self.ready)
    }

    /// Bytes read but not yet forwarded (the start of an incomplete frame).
    pub fn take_unforwarded(&mut self) -> BytesMut {
        self.ready = 0;
        self.buf.split()
    }

    /// Puts back bytes taken with [`Self::take_unforwarded`] (or read past them).
    pub fn restore(&mut self, bytes: BytesMut) -> Result<(), FrameError> {
        self.buf = bytes;
        self.scan_from(0)
    }

    /// Moves bytes from `r` to `w` until `r` ends, the scanner holds a frame for the
    /// DDL engine, or an error.
    pub fn poll_transfer<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        r: &mut R,
        w: &mut W,
    ) -> Poll<Result<Stop, TransferError>>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        loop {
            while self.ready > 0 {
                let n = ready!(Pin::new(&mut *w).poll_write(cx, &self.buf[..self.ready]))
                    .map_err(TransferError::Write)?;
                if n == 0 {
                    return Poll::Ready(Err(TransferError::Write(io::ErrorKind::WriteZero.into())));
                }
                self.buf.advance(n);
                self.ready -= n;
                self.unreported += n as u64;
                self.need_flush = true;
            }
            if let Some((total, map)) = self.scanner.spill.take() {
                self.spill = Some(Spill::new(total, map).map_err(TransferError::Spill)?);
            }
            if let Some(spill) = &mut self.spill {
                if let Err(e) = spill.fill(&mut self.buf) {
                    // Nothing of the row went: the session can say why it ends.
                    self.spill = None;
                    return Poll::Ready(Err(TransferError::Spill(e)));
                }
                while spill.filled() {
                    let piece = spill.next().map_err(TransferError::Spill)?;
                    if piece.is_empty() {
                        self.spill = None;
                        self.scan_from(0).map_err(TransferError::Frame)?;
                        break;
                    }
                    let n = ready!(Pin::new(&mut *w).poll_write(cx, piece))
                        .map_err(TransferError::Write)?;
                    if n == 0 {
                        return Poll::Ready(Err(TransferError::Write(
                            io::ErrorKind::WriteZero.into(),
                        )));
                    }
                    spill.sent(n);
                    self.unreported += n as u64;
                    self.need_flush = true;
                }
                if self.spill.is_none() {
                    continue;
                }
            }
            if self.read_eof || self.scanner.held > 0 {
                ready!(Pin::new(&mut *w).poll_flush(cx)).map_err(TransferError::Write)?;
                self.need_flush = false;
                let stop = if self.read_eof { Stop::Eof } else { Stop::Held };
                return Poll::Ready(Ok(stop));
            }
            if self.buf.is_empty() && self.buf.capacity() > SHRINK_ABOVE {
                self.buf = BytesMut::new();
            }
            if self.buf.capacity() - self.buf.len() < BUF_SIZE / 4 {
                self.buf.reserve(BUF_SIZE);
            }
            match tokio_util::io::poll_read_buf(Pin::new(&mut *r), cx, &mut self.buf) {
                Poll::Pending => {
                    if self.need_flush {
                        ready!(Pin::new(&mut *w).poll_flush(cx)).map_err(TransferError::Write)?;
                        self.need_flush = false;
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(TransferError::Read(e))),
                // A frame cut short by EOF is dropped: the peer could not use it.
                Poll::Ready(Ok(0)) => self.read_eof = true,
                Poll::Ready(Ok(_)) if self.spill.is_some() => {}
                Poll::Ready(Ok(_)) => self.scan_from(self.ready).map_err(TransferError::Frame)?,
            }
        }
    }

    /// Takes the byte and message counts gathered since the last call.
    fn take_counts(&mut self) -> (u64, Counts) {
        let bytes = std::mem::take(&mut self.unreported);
        (bytes, self.scanner.take_counts())
    }
}

/// How a session's pump ended.
#[derive(Debug)]
pub enum PumpEnd {
    /// The client closed its side.
    ClientClosed,
    /// The server closed its side.
    ServerClosed,
    /// The client sent something that is not protocol v3.
    ClientProtocol(FrameError),
    /// The server sent unparseable frames.
    ServerProtocol(FrameError),
    ClientIo(io::Error),
    ServerIo(io::Error),
    /// Shutdown asked the session to end.
    Terminated,
    /// The admin console's KILL ended the session.
    Killed,
    /// A long row could not go through its file (see [`Spill`]).
    Spill(io::Error),
    /// Shutdown ended the session while the DDL engine was writing to the client,
    /// which may be left mid-message: it gets no FATAL, only the close.
    TerminatedMidReply,
    /// The client sent a Query that may be DDL (it waits in the up direction), or
    /// deferred work can run now.
    Intercepted,
}

impl PumpEnd {
    /// How the server-to-client direction ended (it never holds frames).
    pub fn server_side(r: Result<Stop, TransferError>) -> PumpEnd {
        match r {
            Ok(_) => PumpEnd::ServerClosed,
            Err(TransferError::Read(e)) => PumpEnd::ServerIo(e),
            Err(TransferError::Write(e)) => PumpEnd::ClientIo(e),
            Err(TransferError::Frame(e)) => PumpEnd::ServerProtocol(e),
            Err(TransferError::Spill(e)) => PumpEnd::Spill(e),
        }
    }
}

/// How long a terminated session may take to reach a frame boundary.
const TERMINATE_GRACE: Duration = Duration::from_secs(2);

/// Runs both directions until one ends, or `terminate` fires and the
/// server-to-client stream reaches a frame boundary (or the grace runs out).
pub async fn run<C, S>(
    client: &mut C,
    server: &mut S,
    up: &mut Direction,
    down: &mut Direction,
    terminate: &Terminate,
    info: &SessionInfo,
) -> PumpEnd
where
    C: AsyncRead + AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut watch = terminate.watch();
    let mut killed = info.kill.watch();
    let mut hold = Hold::new(&info.pause);
    let mut grace: Option<Pin<Box<Sleep>>> = None;
    std::future::poll_fn(|cx| {
        if grace.is_none() && (watch.poll_fired(cx) | killed.poll_fired(cx)) {
            grace = Some(Box::pin(tokio::time::sleep(TERMINATE_GRACE)));
        }
        // PAUSE: nothing new is read from the client between turns.
        let held = info.pause.is_paused() && idle(up, down) && hold.poll_held(cx);
        let polled = match held {
            true => Poll::Pending,
            false => up.poll_transfer(cx, client, server),
        };
        let end = match polled {
            Poll::Ready(Ok(Stop::Eof)) => Some(PumpEnd::ClientClosed),
            Poll::Ready(Ok(Stop::Held)) => Some(PumpEnd::Intercepted),
            Poll::Ready(Err(TransferError::Read(e))) => Some(PumpEnd::ClientIo(e)),
            Poll::Ready(Err(TransferError::Write(e))) => Some(PumpEnd::ServerIo(e)),
            Poll::Ready(Err(TransferError::Frame(e))) => Some(PumpEnd::ClientProtocol(e)),
            // The client's side spills nothing.
            Poll::Ready(Err(TransferError::Spill(e))) => Some(PumpEnd::Spill(e)),
            Poll::Pending => None,
        };
        let end = end.or_else(|| match down.poll_transfer(cx, server, client) {
            Poll::Ready(r) => Some(PumpEnd::server_side(r)),
            Poll::Pending => None,
        });
        // Deferred work waits for its transaction's end: stop as soon as the
        // server has answered everything and is idle.
        let end = end.or_else(|| {
            (up.scanner.holds_every_turn() && idle(up, down)).then_some(PumpEnd::Intercepted)
        });
        let end = end.or_else(|| {
            let grace = grace.as_mut()?;
            let end = match info.kill.is_fired() {
                true => PumpEnd::Killed,
                false => PumpEnd::Terminated,
            };
            (down.at_boundary() || grace.as_mut().poll(cx).is_ready()).then_some(end)
        });
        report(up, down, &info.traffic);
        if let Some(status) = down.scanner.tx_status() {
            info.set_tx_status(status);
        }
        info.set_busy(!idle(up, down));
        match end {
            Some(end) => Poll::Ready(end),
            None => Poll::Pending,
        }
    })
    .await
}

/// True when the server has answered every turn the client started, both streams
/// stand between frames, and the session is outside a transaction block.
pub fn idle(up: &Direction, down: &Direction) -> bool {
    down.scanner.tx_status() == Some(TxStatus::Idle)
        && down.scanner.turns >= up.scanner.turns
        && !up.scanner.in_batch
        && up.at_boundary()
        && down.at_boundary()
}

fn report(up: &mut Direction, down: &mut Direction, stats: &Traffic) {
    let (up_bytes, up_counts) = up.take_counts();
    let (down_bytes, down_counts) = down.take_counts();
    Stats::add(&stats.bytes_from_clients, up_bytes);
    Stats::add(&stats.bytes_from_servers, down_bytes);
    Stats::add(&stats.queries, up_counts.queries);
    Stats::add(&stats.ddl_candidates, up_counts.ddl_candidates);
    Stats::add(&stats.server_errors, down_counts.errors);
    if down_counts.errors > 0 {
        down.scanner
            .take_error_classes(|slot, n| stats.errors_by_class.add(slot, n));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    use tokio::io::AsyncWriteExt;

    fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        out.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    fn description(names: &[&str]) -> Vec<u8> {
        let mut body = (names.len() as u16).to_be_bytes().to_vec();
        for name in names {
            body.extend_from_slice(name.as_bytes());
            body.extend_from_slice(&[
                0, 0, 0, 0, 9, 0, 1, 0, 0, 0, 25, 255, 255, 255, 255, 255, 255,
            ]);
            body.extend_from_slice(&[0, 0]);
        }
        frame(b'T', &body)
    }

    fn row(values: &[&[u8]]) -> Vec<u8> {
        let mut body = (values.len() as u16).to_be_bytes().to_vec();
        for v in values {
            body.extend_from_slice(&(v.len() as i32).to_be_bytes());
            body.extend_from_slice(v);
        }
        frame(b'D', &body)
    }

    /// A mapped row of 3 MiB goes through a file: the session's buffer stays
    /// small, and the client gets the row without pgshift's column.
    #[tokio::test]
    async fn a_long_mapped_row_is_not_held_in_memory() {
        let big = vec![b'x'; 3 << 20];
        let mut from_server = description(&["id", "note", "id__pgshift_new"]);
        from_server.extend(row(&[b"1", &big, b"1"]));
        from_server.extend(row(&[b"2", b"short", b"2"]));
        from_server.extend(frame(b'C', b"SELECT 2\0"));
        from_server.extend(frame(b'Z', b"I"));
        let mut want = description(&["id", "note"]);
        want.extend(row(&[b"1", &big]));
        want.extend(row(&[b"2", b"short"]));
        want.extend(frame(b'C', b"SELECT 2\0"));
        want.extend(frame(b'Z', b"I"));

        let (mut server, mut server_end) = tokio::io::duplex(64 * 1024);
        let (mut client_end, mut client) = tokio::io::duplex(64 * 1024);
        let feed = tokio::spawn(async move {
            server_end.write_all(&from_server).await.unwrap();
            server_end.shutdown().await.unwrap();
        });
        let read = tokio::spawn(async move {
            let mut got = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut client, &mut got)
                .await
                .unwrap();
            got
        });
        let mut down = Direction::new(Flow::ServerToClient, usize::MAX, BytesMut::new()).unwrap();
        down.scanner.hide_columns(Arc::new(AtomicUsize::new(1)));
        let mut most = 0;
        let stop = std::future::poll_fn(|cx| {
            let r = down.poll_transfer(cx, &mut server, &mut client_end);
            most = most.max(down.buf.capacity());
            r
        })
        .await
        .unwrap();
        assert_eq!(stop, Stop::Eof);
        client_end.shutdown().await.unwrap();
        drop(client_end);
        feed.await.unwrap();
        let got = read.await.unwrap();
        assert!(got == want, "{} bytes, want {}", got.len(), want.len());
        assert!(most < 256 * 1024, "the buffer grew to {most} bytes");
    }
}
