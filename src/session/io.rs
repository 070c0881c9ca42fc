//! Small buffered frame I/O for the startup phase, where messages are few and tiny.

use crate::wire::frame::{split_frame, FrameError};
use bytes::{Bytes, BytesMut};
use std::io;
use tokio::io::{AsyncRead, AsyncReadExt};

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("connection closed")]
    Closed,
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error(transparent)]
    Frame(#[from] FrameError),
}

/// Reads one tagged frame, keeping any bytes after it in `buf`.
pub async fn read_frame<R: AsyncRead + Unpin>(
    stream: &mut R,
    buf: &mut BytesMut,
    limit: usize,
) -> Result<Bytes, ReadError> {
    loop {
        if let Some(frame) = split_frame(buf, limit)? {
            return Ok(frame);
        }
        if buf.capacity() - buf.len() < 512 {
            buf.reserve(4096);
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(ReadError::Closed);
        }
    }
}
