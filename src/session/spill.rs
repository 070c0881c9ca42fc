//! A DataRow too long to hold in memory while its columns are mapped (see
//! `wire::hidden`): its length word comes first, and it depends on the length of
//! a field further on, so the whole row must be read before a byte of it goes
//! to the client. Such a row goes to an unnamed temporary file (unlinked at
//! once: it disappears with the session, even after a crash) and is sent from
//! there in pieces, so a session holds at most one piece in memory whatever
//! the row's size.

use crate::wire::hidden::Mapping;
use bytes::{Buf, BytesMut};
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

/// Bytes sent from the file at a time.
const PIECE: usize = 64 * 1024;

#[derive(Debug)]
pub struct Spill {
    file: File,
    /// The frame's length, header included.
    total: usize,
    /// Bytes of it in the file so far.
    filled: usize,
    map: Arc<Mapping>,
    /// Once filled: what is left to send, as byte ranges of the file.
    ranges: Vec<(u64, u64)>,
    /// The piece being sent, and how much of it went.
    piece: Vec<u8>,
    sent: usize,
}

impl Spill {
    /// A spill for a DataRow of `total` bytes, header included.
    pub fn new(total: usize, map: Arc<Mapping>) -> io::Result<Spill> {
        Ok(Spill {
            file: temporary()?,
            total,
            filled: 0,
            map,
            ranges: Vec::new(),
            piece: Vec::new(),
            sent: 0,
        })
    }

    /// True once the whole row is in the file.
    pub fn filled(&self) -> bool {
        self.filled == self.total
    }

    /// Moves what `buf` holds of the row into the file; once the row is whole,
    /// plans what to send.
    pub fn fill(&mut self, buf: &mut BytesMut) -> io::Result<()> {
        let take = buf.len().min(self.total - self.filled);
        if take == 0 {
            return Ok(());
        }
        self.file.write_all(&buf[..take])?;
        buf.advance(take);
        self.filled += take;
        if self.filled() {
            self.plan()?;
        }
        Ok(())
    }

    /// The bytes to send next; empty when the row went whole.
    pub fn next(&mut self) -> io::Result<&[u8]> {
        if self.sent == self.piece.len() {
            self.piece.clear();
            self.sent = 0;
            while self.piece.len() < PIECE {
                let Some((at, len)) = self.ranges.first_mut() else {
                    break;
                };
                let take = (*len).min((PIECE - self.piece.len()) as u64);
                let start = self.piece.len();
                self.piece.resize(start + take as usize, 0);
                self.file.read_exact_at(&mut self.piece[start..], *at)?;
                *at += take;
                *len -= take;
                if *len == 0 {
                    self.ranges.remove(0);
                }
            }
        }
        Ok(&self.piece[self.sent..])
    }

    /// `n` bytes of what [`Self::next`] gave went to the client.
    pub fn sent(&mut self, n: usize) {
        self.sent += n;
    }

    /// The ranges of the file the client gets: a new header, then the fields
    /// the mapping keeps in its order; the row as it came when it does not have
    /// the fields its description had.
    fn plan(&mut self) -> io::Result<()> {
        let mut values = Vec::new();
        let mut word = [0u8; 4];
        let mut count = [0u8; 2];
        self.file.read_exact_at(&mut count, 5)?;
        let mut at = 7u64;
        for _ in 0..u16::from_be_bytes(count) {
            if at + 4 > self.total as u64 {
                break;
            }
            self.file.read_exact_at(&mut word, at)?;
            let len = u64::try_from(i32::from_be_bytes(word)).unwrap_or(0);
            values.push((at, 4 + len));
            at += 4 + len;
        }
        let whole = values.len() == usize::from(u16::from_be_bytes(count))
            && at == self.total as u64
            && values.len() == self.map.from();
        if !whole {
            self.ranges = vec![(0, self.total as u64)];
            return Ok(());
        }
        let fields: Vec<(u64, u64)> = self.map.out().iter().map(|&i| values[i]).collect();
        let len = 4 + 2 + fields.iter().map(|f| f.1).sum::<u64>();
        self.piece = vec![b'D'];
        self.piece.extend_from_slice(&(len as u32).to_be_bytes());
        self.piece
            .extend_from_slice(&(fields.len() as u16).to_be_bytes());
        self.sent = 0;
        self.ranges = fields;
        Ok(())
    }
}

/// A file in the temporary directory (`TMPDIR`, else /tmp) that has no name:
/// `O_TMPFILE` where the file system has it, else a file created and unlinked
/// at once. Readable by this user only.
fn temporary() -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = std::env::temp_dir();
    let unnamed = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE)
        .open(&dir);
    if let Ok(file) = unnamed {
        return Ok(file);
    }
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = dir.join(format!("pgshift-row-{}-{n}", std::process::id()));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(v: &[u8]) -> Vec<u8> {
        let mut out = (v.len() as i32).to_be_bytes().to_vec();
        out.extend_from_slice(v);
        out
    }

    fn data_row(values: &[Vec<u8>]) -> Vec<u8> {
        let mut body = (values.len() as u16).to_be_bytes().to_vec();
        values.iter().for_each(|v| body.extend_from_slice(v));
        let mut frame = vec![b'D'];
        frame.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        frame.extend(body);
        frame
    }

    fn send_all(spill: &mut Spill) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let piece = spill.next().unwrap().to_vec();
            if piece.is_empty() {
                return out;
            }
            // The client takes a few bytes at a time.
            let n = piece.len().min(1000);
            out.extend_from_slice(&piece[..n]);
            spill.sent(n);
        }
    }

    #[test]
    fn a_long_row_is_sent_from_the_file_mapped() {
        let fields: &[(&[u8], u32)] = &[(b"a__pgshift_old", 1), (b"big", 1), (b"a", 1)];
        let map = Arc::new(Mapping::of(fields).unwrap());
        let big = vec![b'x'; 300_000];
        let row = data_row(&[value(b"1"), value(&big), value(b"22")]);
        let mut spill = Spill::new(row.len(), map.clone()).unwrap();
        let mut buf = BytesMut::new();
        for chunk in row.chunks(7_000) {
            assert!(!spill.filled());
            buf.extend_from_slice(chunk);
            spill.fill(&mut buf).unwrap();
            assert!(buf.is_empty());
        }
        assert!(spill.filled());
        assert_eq!(send_all(&mut spill), data_row(&[value(b"22"), value(&big)]));
        // What follows the row in the buffer stays there.
        let mut spill = Spill::new(row.len(), map.clone()).unwrap();
        let mut buf = BytesMut::from(&row[..]);
        buf.extend_from_slice(b"Z\0\0\0\x05I");
        spill.fill(&mut buf).unwrap();
        assert_eq!(&buf[..], b"Z\0\0\0\x05I");
        // A row of another shape goes as it came.
        let other = data_row(&[value(b"1"), value(&big)]);
        let mut spill = Spill::new(other.len(), map).unwrap();
        spill.fill(&mut BytesMut::from(&other[..])).unwrap();
        assert_eq!(send_all(&mut spill), other);
    }
}
