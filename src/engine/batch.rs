//! An extended-protocol batch the engine can answer itself: an unnamed Parse of one
//! statement, a Bind without parameters, an optional Describe, one Execute, Sync
//! (what JDBC, psycopg 3 and node-postgres send for a parameterless statement).
//! Anything else passes through untouched.

use crate::wire::frame::{header, write_frame, HEADER_LEN};
use bytes::{Buf, BytesMut};

/// A batch the engine may run in-band.
#[derive(Debug, PartialEq, Eq)]
pub struct Batch {
    pub sql: String,
    /// Responses owed for the messages before Execute (ParseComplete,
    /// BindComplete, ParameterDescription/NoData), sent before the engine's own.
    pub prefix: BytesMut,
    /// Bytes of the whole batch, Sync included.
    pub len: usize,
}

/// Length of the batch at the start of `buf` up to and including its Sync, if
/// `buf` holds all of it.
pub fn complete_len(buf: &[u8]) -> Option<usize> {
    let mut pos = 0;
    loop {
        let (tag, total) = header(&buf[pos..], usize::MAX).ok()??;
        if buf.len() - pos < total {
            return None;
        }
        pos += total;
        if tag == b'S' {
            return Some(pos);
        }
    }
}

/// True when the whole messages at the start of `buf` end with a Flush and hold
/// no Sync: the client waits for answers before it sends the rest.
pub fn flushed(buf: &[u8]) -> bool {
    let (mut pos, mut last) = (0, 0);
    while let Ok(Some((tag, total))) = header(&buf[pos..], usize::MAX) {
        if buf.len() - pos < total || tag == b'S' {
            break;
        }
        pos += total;
        last = tag;
    }
    last == b'H'
}

/// Reads a NUL-terminated string off the front of `b`.
fn cstr<'a>(b: &mut &'a [u8]) -> Option<&'a [u8]> {
    let end = b.iter().position(|&c| c == 0)?;
    let s = &b[..end];
    *b = &b[end + 1..];
    Some(s)
}

fn u16_at(b: &mut &[u8]) -> Option<u16> {
    (b.len() >= 2).then(|| b.get_u16())
}

/// Recognises the batch at the start of `buf` (ending at `len`).
pub fn parse(buf: &[u8], len: usize) -> Option<Batch> {
    let mut pos = 0;
    let mut prefix = BytesMut::new();
    let (mut sql, mut bound, mut executed) = (None, false, false);
    while pos < len {
        let (tag, total) = header(&buf[pos..], usize::MAX).ok()??;
        let mut body = &buf[pos + HEADER_LEN..pos + total];
        pos += total;
        match (tag, sql.is_some(), bound, executed) {
            (b'P', false, _, _) => {
                if !cstr(&mut body)?.is_empty() {
                    return None;
                }
                sql = Some(std::str::from_utf8(cstr(&mut body)?).ok()?.to_string());
                write_frame(&mut prefix, b'1', |_| {});
            }
            (b'B', true, false, false) => {
                cstr(&mut body)?; // portal
                if !cstr(&mut body)?.is_empty() {
                    return None;
                }
                let formats = u16_at(&mut body)? as usize;
                if body.len() < 2 * formats {
                    return None;
                }
                body.advance(2 * formats);
                if u16_at(&mut body)? != 0 {
                    return None;
                }
                bound = true;
                write_frame(&mut prefix, b'2', |_| {});
            }
            (b'D', true, _, false) => {
                if body.first() == Some(&b'S') {
                    write_frame(&mut prefix, b't', |b| {
                        b.extend_from_slice(&0u16.to_be_bytes())
                    });
                }
                write_frame(&mut prefix, b'n', |_| {});
            }
            (b'E', true, true, false) => executed = true,
            (b'S', true, true, true) if pos == len => {
                return Some(Batch {
                    sql: sql?,
                    prefix,
                    len,
                })
            }
            _ => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        write_frame(&mut out, tag, |b| b.extend_from_slice(body));
        out.to_vec()
    }

    fn batch(parts: &[Vec<u8>]) -> Vec<u8> {
        parts.concat()
    }

    #[test]
    fn recognises_the_parameterless_batch() {
        let bytes = batch(&[
            msg(b'P', b"\0CREATE INDEX i ON t (c)\0\0\0"),
            msg(b'B', b"\0\0\0\0\0\0\0\0"),
            msg(b'D', b"P\0"),
            msg(b'E', b"\0\0\0\0\0"),
            msg(b'S', b""),
        ]);
        let len = complete_len(&bytes).unwrap();
        assert_eq!(len, bytes.len());
        let b = parse(&bytes, len).unwrap();
        assert_eq!(b.sql, "CREATE INDEX i ON t (c)");
        assert_eq!(
            &b.prefix[..],
            &batch(&[msg(b'1', b""), msg(b'2', b""), msg(b'n', b"")])[..]
        );
        assert!(complete_len(&bytes[..bytes.len() - 1]).is_none());
        assert!(!flushed(&bytes));
        let flushed_batch = batch(&[
            msg(b'P', b"\0SELECT 1\0\0\0"),
            msg(b'D', b"S\0"),
            msg(b'H', b""),
        ]);
        assert!(flushed(&flushed_batch));
        assert!(!flushed(&flushed_batch[..flushed_batch.len() - 1]));
    }

    #[test]
    fn refuses_what_it_cannot_answer() {
        let named = batch(&[
            msg(b'P', b"s1\0CREATE INDEX i ON t (c)\0\0\0"),
            msg(b'S', b""),
        ]);
        assert!(parse(&named, named.len()).is_none());
        let with_param = batch(&[
            msg(b'P', b"\0CREATE INDEX i ON t (c)\0\0\0"),
            msg(b'B', b"\0\0\0\0\0\x01\0\0\0\x01x\0\0"),
            msg(b'E', b"\0\0\0\0\0"),
            msg(b'S', b""),
        ]);
        assert!(parse(&with_param, with_param.len()).is_none());
        let no_execute = batch(&[
            msg(b'P', b"\0CREATE INDEX i ON t (c)\0\0\0"),
            msg(b'S', b""),
        ]);
        assert!(parse(&no_execute, no_execute.len()).is_none());
    }
}
