//! Tagged frame headers: one tag byte, then a big-endian length that counts itself
//! but not the tag. Lengths are checked against a limit before anything is reserved.

use super::be_u32;

/// Bytes in a tagged frame header (tag + length).
pub const HEADER_LEN: usize = 5;

/// A frame header that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("invalid message length {len} for message type '{}'", char::from(*tag))]
    BadLength { tag: u8, len: u32 },
    #[error("message of type '{}' is {len} bytes, over the limit of {limit} bytes", char::from(*tag))]
    TooLarge { tag: u8, len: usize, limit: usize },
}

/// Decodes the header at the start of `buf`: `Ok(None)` until five bytes are there,
/// else the tag and the total frame length (tag byte included).
pub fn header(buf: &[u8], limit: usize) -> Result<Option<(u8, usize)>, FrameError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let tag = buf[0];
    let len = be_u32(buf, 1);
    if len < 4 {
        return Err(FrameError::BadLength { tag, len });
    }
    let total = 1 + len as usize;
    if total > limit {
        return Err(FrameError::TooLarge {
            tag,
            len: total,
            limit,
        });
    }
    Ok(Some((tag, total)))
}

/// Postgres' cap on frontend messages it expects to be short (PQ_SMALL_MESSAGE_LIMIT).
const PQ_SMALL_MESSAGE_LIMIT: u32 = 10_000;
/// Postgres' cap on any frontend message (PQ_LARGE_MESSAGE_LIMIT, MaxAllocSize - 1).
const PQ_LARGE_MESSAGE_LIMIT: u32 = 0x3fff_fffe;

/// True when `buf` starts with a frontend header Postgres refuses as soon as it has
/// read it (SocketBackend, CopyGetData, pq_getmessage): a length below 4, or over
/// its cap for the message type. It then ends the session, whatever follows.
pub fn refused_header(buf: &[u8]) -> bool {
    if buf.len() < HEADER_LEN {
        return false;
    }
    let len = be_u32(buf, 1);
    let short = matches!(
        buf[0],
        b'C' | b'D' | b'E' | b'H' | b'S' | b'X' | b'c' | b'f'
    );
    !(4..=PQ_LARGE_MESSAGE_LIMIT).contains(&len) || short && len > PQ_SMALL_MESSAGE_LIMIT
}

/// Splits one complete frame off the front of `buf`, if there is one.
pub fn split_frame(
    buf: &mut bytes::BytesMut,
    limit: usize,
) -> Result<Option<bytes::Bytes>, FrameError> {
    match header(buf, limit)? {
        Some((_, total)) if buf.len() >= total => Ok(Some(buf.split_to(total).freeze())),
        Some((_, total)) => {
            buf.reserve(total - buf.len());
            Ok(None)
        }
        None => Ok(None),
    }
}

/// Appends a frame with `tag` whose body is written by `body`; fills in the length.
pub fn write_frame(out: &mut bytes::BytesMut, tag: u8, body: impl FnOnce(&mut bytes::BytesMut)) {
    out.extend_from_slice(&[tag, 0, 0, 0, 0]);
    let start = out.len() - 4;
    body(out);
    let len = (out.len() - start) as u32;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    #[test]
    fn header_needs_five_bytes() {
        assert_eq!(header(b"Q\0\0\0", 100), Ok(None));
        assert_eq!(header(b"Q\0\0\0\x05x", 100), Ok(Some((b'Q', 6))));
    }

    #[test]
    fn header_rejects_short_and_oversize_lengths() {
        assert!(matches!(
            header(b"Q\0\0\0\x03", 100),
            Err(FrameError::BadLength { .. })
        ));
        assert!(matches!(
            header(b"Q\x7f\0\0\0", 1 << 20),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn headers_postgres_refuses() {
        assert!(!refused_header(b"Q\0\0\0"));
        assert!(refused_header(b"Q\0\0\0\x03"));
        assert!(refused_header(b"@\0\0\0\x00"));
        assert!(!refused_header(b"Q\0\0\0\x04"));
        // Sync, Terminate and friends are capped at 10000 bytes, Query at 1 GB.
        assert!(!refused_header(b"S\0\0\x27\x10"));
        assert!(refused_header(b"S\0\0\x27\x11"));
        assert!(refused_header(b"X\0\0\x27\x11"));
        assert!(!refused_header(b"Q\0\0\x27\x11"));
        assert!(!refused_header(b"d\x3f\xff\xff\xfe"));
        assert!(refused_header(b"d\x3f\xff\xff\xff"));
    }

    #[test]
    fn split_frame_waits_for_the_whole_frame() {
        let mut buf = BytesMut::from(&b"Z\0\0\0\x05I"[..5]);
        assert_eq!(split_frame(&mut buf, 100), Ok(None));
        buf.extend_from_slice(b"IQ");
        let frame = split_frame(&mut buf, 100).unwrap().unwrap();
        assert_eq!(&frame[..], b"Z\0\0\0\x05I");
        assert_eq!(&buf[..], b"Q");
    }

    #[test]
    fn write_frame_fills_length() {
        let mut out = BytesMut::new();
        write_frame(&mut out, b'Z', |b| b.extend_from_slice(b"I"));
        assert_eq!(&out[..], b"Z\0\0\0\x05I");
    }
}
