//! What the server sends the client while pgshift's deferred work runs on the
//! session's backend (notifications, parameter changes, pgshift's own warnings).
//! The work writes into a bounded box; the session drains whole frames from it to
//! the client, between its own answers, so the client's stream is never cut mid
//! frame and memory stays bounded: when the box is full, the work waits (and the
//! backend with it), as it would for a client that does not read.

use crate::wire::frame::header;
use bytes::BytesMut;
use std::io;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};
use tokio::io::AsyncWrite;
use tokio::sync::Notify;

/// Most bytes waiting in the box (a notification is at most 8 kB).
const CAPACITY: usize = 256 * 1024;

#[derive(Debug, Default)]
pub struct Outbox {
    inner: Mutex<Inner>,
    /// Fired when bytes come in.
    data: Notify,
}

#[derive(Debug, Default)]
struct Inner {
    buf: BytesMut,
    /// The writer waiting for room.
    writer: Option<Waker>,
}

impl Outbox {
    /// Resolves once bytes came in since the last [`Self::take_frames`].
    pub async fn filled(&self) {
        self.data.notified().await
    }

    /// Takes every whole frame at the front and makes room for the writer.
    pub fn take_frames(&self) -> BytesMut {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut end = 0;
        while let Ok(Some((_, total))) = header(&inner.buf[end..], usize::MAX) {
            if inner.buf.len() - end < total {
                break;
            }
            end += total;
        }
        let frames = inner.buf.split_to(end);
        if let Some(w) = inner.writer.take() {
            w.wake();
        }
        frames
    }
}

/// The work's side of an [`Outbox`].
pub struct Writer<'a>(pub &'a Outbox);

impl AsyncWrite for Writer<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut inner = self.0.inner.lock().unwrap_or_else(|e| e.into_inner());
        let room = CAPACITY.saturating_sub(inner.buf.len());
        if room == 0 {
            inner.writer = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = room.min(bytes.len());
        inner.buf.extend_from_slice(&bytes[..n]);
        drop(inner);
        self.0.data.notify_one();
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::frame::write_frame;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn whole_frames_only_and_bounded() {
        let outbox = Outbox::default();
        let mut frame = BytesMut::new();
        write_frame(&mut frame, b'A', |b| b.extend_from_slice(&[7; 1000]));
        let mut w = Writer(&outbox);
        w.write_all(&frame).await.unwrap();
        w.write_all(&frame[..10]).await.unwrap();
        assert_eq!(outbox.take_frames().len(), frame.len());
        assert!(outbox.take_frames().is_empty(), "a partial frame stays");
        w.write_all(&frame[10..]).await.unwrap();
        assert_eq!(outbox.take_frames().len(), frame.len());
        // Full: the writer waits until frames are taken.
        let many: Vec<u8> = std::iter::repeat_n(&frame[..], CAPACITY / frame.len() + 2)
            .flatten()
            .copied()
            .collect();
        let writing = async { Writer(&outbox).write_all(&many).await };
        tokio::pin!(writing);
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(50), &mut writing)
                .await
                .is_err()
        );
        let mut taken = outbox.take_frames().len();
        writing.await.unwrap();
        taken += outbox.take_frames().len();
        assert_eq!(taken, many.len());
    }
}
