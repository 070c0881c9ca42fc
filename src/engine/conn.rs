//! The connection the DDL engine runs SQL on: the client's own upstream
//! connection, in-band (raw protocol, the client waiting at a quiescent point).
//! pgshift's service connections run only bookkeeping (`service`, `book`).

use super::cancel::CancelSignal;
use crate::wire::backend::TxStatus;
use crate::wire::backend::{self, error_fields};
use crate::wire::frame::{header, HEADER_LEN};
use bytes::{Buf, BytesMut};
use std::io;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// An error the server reported, with its fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerError {
    pub code: String,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
    /// Every field as the server sent it (severity, context, schema, table,
    /// constraint, position, source location…), so it can reach the client whole.
    pub fields: Vec<(u8, String)>,
}

impl ServerError {
    pub fn from_fields(fields: Vec<(u8, String)>) -> Self {
        let get = |c: u8| fields.iter().find(|(k, _)| *k == c).map(|(_, v)| v.clone());
        ServerError {
            code: get(b'C').unwrap_or_else(|| "XX000".into()),
            message: get(b'M').unwrap_or_default(),
            detail: get(b'D'),
            hint: get(b'H'),
            fields,
        }
    }

    /// The position (1-based, in characters) as the server gave it.
    fn position(&self) -> Option<usize> {
        let p = self.fields.iter().find(|(k, _)| *k == b'P')?;
        p.1.parse().ok()
    }

    fn set_position(&mut self, at: Option<usize>) {
        self.fields.retain(|(k, _)| *k != b'P');
        if let Some(at) = at {
            // Postgres puts the position after the message fields; any place works.
            self.fields.push((b'P', at.to_string()));
        }
    }

    /// Makes the position count from the start of `sql`, which began `at`
    /// characters into the text the server ran; drops it when it points elsewhere.
    pub fn within(mut self, at: usize, sql: &str) -> Self {
        let inside = self
            .position()
            .and_then(|p| p.checked_sub(at))
            .filter(|&p| p >= 1 && p <= sql.chars().count() + 1);
        self.set_position(inside);
        self
    }

    /// Moves the position `by` characters on (to count in the client's whole Query).
    pub fn shifted(mut self, by: usize) -> Self {
        let p = self.position().map(|p| p + by);
        self.set_position(p);
        self
    }

    /// The check violation of the CHECK that stood in for NOT NULL on `column`, as
    /// SET NOT NULL reports it: 23502, `column "c" of relation "t" contains null
    /// values`, with the column instead of the constraint.
    pub fn null_in(mut self, column: &str) -> Self {
        let table = self
            .fields
            .iter()
            .find(|(k, _)| *k == b't')
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        self.code = "23502".into();
        self.message = format!("column \"{column}\" of relation \"{table}\" contains null values");
        self.fields.retain(|(k, _)| !matches!(k, b'n' | b'D'));
        for (k, v) in &mut self.fields {
            match k {
                b'C' => *v = self.code.clone(),
                b'M' => *v = self.message.clone(),
                _ => {}
            }
        }
        self.fields.push((b'c', column.to_string()));
        self.detail = None;
        self
    }

    /// Drops the position: it points into SQL the client did not send.
    /// Moves the position from `ran`, SQL pgshift ran in place of the client's
    /// statement, to the same text in `original`, the statement as written: the
    /// longest stretch of `ran` from the position (at least its first token) that
    /// occurs exactly once in `original`. Dropped when there is none.
    pub fn mapped(mut self, ran: &str, original: &str) -> Self {
        if ran == original {
            return self;
        }
        let at = self.position().and_then(|p| find_again(ran, p, original));
        self.set_position(at);
        self
    }

    pub fn without_position(mut self) -> Self {
        self.set_position(None);
        self
    }
}

/// The 1-based character position in `original` of the text at character `p` of
/// `ran` (see [`ServerError::mapped`]).
fn find_again(ran: &str, p: usize, original: &str) -> Option<usize> {
    let word = |c: char| c.is_alphanumeric() || c == '_' || c == '$';
    let start = ran.char_indices().nth(p.checked_sub(1)?)?.0;
    let rest = &ran[start..];
    let first = rest.chars().next()?;
    // The whole token the position points at: an identifier or keyword, or one
    // character of anything else.
    let token = if word(first) {
        rest.find(|c: char| !word(c)).unwrap_or(rest.len())
    } else {
        first.len_utf8()
    };
    let mut lengths: Vec<usize> = [64, 32, 16, 8]
        .iter()
        .map(|&chars| {
            rest.char_indices()
                .nth(chars)
                .map_or(rest.len(), |(i, _)| i)
        })
        .filter(|&len| len >= token)
        .collect();
    lengths.push(token);
    lengths.dedup();
    for len in lengths {
        let snippet = &rest[..len];
        let after_in_ran = rest[len..].chars().next();
        // A match must start and end where tokens do in the original as in `ran`:
        // `s` must not be found inside `ts`.
        let fits = |i: usize| {
            let before = original[..i].chars().next_back();
            let after = original[i + len..].chars().next();
            let starts = !word(first) || !before.is_some_and(word);
            let ends = !snippet.chars().next_back().is_some_and(word)
                || after.is_some_and(word) == after_in_ran.is_some_and(word);
            starts && ends
        };
        let mut found = original
            .match_indices(snippet)
            .map(|(i, _)| i)
            .filter(|&i| fits(i));
        match (found.next(), found.next()) {
            (Some(i), None) => return Some(original[..i].chars().count() + 1),
            // Shorter stretches would be just as ambiguous.
            (Some(_), Some(_)) => return None,
            (None, _) => {}
        }
    }
    None
}

/// Adds `shift` characters to the position field of an ErrorResponse or
/// NoticeResponse: the server counted from the start of the one statement pgshift
/// sent, the client from the start of its whole Query.
pub fn shift_position(frame: &[u8], shift: usize) -> Option<BytesMut> {
    backend::remap_position(frame, |p| p + shift)
}

/// What one simple Query returned.
#[derive(Debug, Default)]
pub struct Reply {
    /// Text values of every DataRow, in order.
    pub rows: Vec<Vec<Option<String>>>,
    /// Command tags, one per completed statement.
    pub tags: Vec<String>,
    pub error: Option<ServerError>,
    /// The columns of the last RowDescription (a Describe's answer).
    pub fields: Option<Vec<crate::wire::backend::Field>>,
    /// The types of the last ParameterDescription (a Describe's answer).
    pub params: Option<Vec<u32>>,
}

impl Reply {
    /// Rows affected by the last statement (`UPDATE 42` → 42).
    pub fn last_count(&self) -> u64 {
        self.tags
            .last()
            .and_then(|t| t.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    pub fn first_value(&self) -> Option<&str> {
        self.rows.first()?.first()?.as_deref()
    }

    /// Column `i` of the first row as text; empty when there is none.
    pub fn cell(&self, i: usize) -> String {
        self.rows.first().map(|r| cell(r, i)).unwrap_or_default()
    }
}

/// Column `i` of `row` as text; empty for NULL or a missing column.
pub fn cell(row: &[Option<String>], i: usize) -> String {
    row.get(i).cloned().flatten().unwrap_or_default()
}

/// A connection the engine can run SQL on: the client's own, in-band.
pub trait Conn: Send {
    /// One simple Query (several statements allowed), its whole answer.
    fn query(&mut self, sql: &str) -> impl std::future::Future<Output = io::Result<Reply>> + Send;

    /// One statement with text parameters ($1, $2…), through the extended protocol:
    /// values are never spliced into SQL. For the steps' own SQL (backfill
    /// batches): the server's notices reach the client.
    fn query_params(
        &mut self,
        sql: &str,
        params: &[&str],
    ) -> impl std::future::Future<Output = io::Result<Reply>> + Send;

    /// [`Conn::query`] for SQL that stands in for the client's statement: the
    /// server's notices reach the client, as they would have directly.
    fn query_step(
        &mut self,
        sql: &str,
    ) -> impl std::future::Future<Output = io::Result<Reply>> + Send;

    /// True when the client asked to cancel what it is waiting for.
    fn cancelled(&self) -> bool;

    /// Sleeps for `pause`; false when a cancel request cut it short.
    fn pause(&mut self, pause: Duration) -> impl std::future::Future<Output = bool> + Send;

    /// Sends the client a NoticeResponse now (pgshift is about to wait a while).
    fn tell(
        &mut self,
        notice: &crate::wire::backend::PgError,
    ) -> impl std::future::Future<Output = io::Result<()>> + Send;
}

/// How server messages of an in-band query reach the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relay {
    /// Only what the client must see whatever happens: notifications and
    /// parameter changes. Results, notices and errors stay with the engine.
    Quiet,
    /// Everything but ReadyForQuery: the client's own statement.
    All,
    /// What the client would have seen had its statement run as written, short of
    /// results and errors: notices, warnings, notifications, parameter changes
    /// (for the steps pgshift runs in its place).
    Notices,
}

/// Bytes queued for the client are written once there are this many: a large
/// result streams to the client instead of piling up in memory.
const FLUSH_ABOVE: usize = 64 * 1024;
/// A frame larger than this is passed on (or skipped) in pieces; the engine keeps
/// only its first [`INSPECT_MAX`] bytes to look at.
const STREAM_ABOVE: usize = 256 * 1024;
const INSPECT_MAX: usize = 64 * 1024;

/// The client's upstream connection, used while the client waits for its Query.
pub struct InBand<'a, C, S> {
    client: &'a mut C,
    server: &'a mut S,
    rbuf: BytesMut,
    to_client: BytesMut,
    /// Set while `to_client` is being written.
    writing_client: bool,
    /// A write to the client failed: it is gone. The work on the server goes on
    /// (deferred steps must still run); what it would have sent is dropped.
    client_gone: bool,
    /// The status of the last ReadyForQuery.
    pub status: TxStatus,
    /// How server messages reach the client, for the next queries.
    pub relay: Relay,
    /// The session's cancel requests, and how many there were when the client's
    /// statement was handed over (older ones were for earlier statements).
    cancel: Option<(&'a CancelSignal, u64)>,
    /// Characters before the running statement in the client's Query: added to
    /// the positions in what is relayed with [`Relay::All`].
    pub position_shift: usize,
    /// How the server's messages for the steps' own SQL reach the client:
    /// [`Relay::Notices`] while the client waits for its statement; after it
    /// has its answer (work deferred to after COMMIT), [`Relay::Quiet`].
    pub step_relay: Relay,
}

impl<'a, C, S> InBand<'a, C, S>
where
    C: AsyncWrite + Unpin + Send,
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    /// `unread`: server bytes already read but not forwarded. `cancel`: the
    /// session's cancel requests, when the client waits on this work.
    pub fn new(
        client: &'a mut C,
        server: &'a mut S,
        unread: BytesMut,
        status: TxStatus,
        cancel: Option<&'a CancelSignal>,
    ) -> Self {
        InBand {
            client,
            server,
            rbuf: unread,
            to_client: BytesMut::new(),
            writing_client: false,
            client_gone: false,
            status,
            relay: Relay::Quiet,
            cancel: cancel.map(|c| (c, c.count())),
            position_shift: 0,
            step_relay: Relay::Notices,
        }
    }

    /// Server bytes read past the last ReadyForQuery, for the pump.
    pub fn into_unread(self) -> BytesMut {
        self.rbuf
    }

    /// True when a write to the client was cut short (by shutdown): the client may
    /// be in the middle of a message. Bytes only queued do not count.
    pub fn client_write_pending(&self) -> bool {
        self.writing_client
    }

    /// Runs `work` unless the client cancels first (then None, and `work` is dropped).
    pub async fn unless_cancelled<F: std::future::Future>(&self, work: F) -> Option<F::Output> {
        match self.cancel {
            None => Some(work.await),
            Some((c, seen)) => c.unless_requested(seen, work).await,
        }
    }

    /// True when a write to the client failed.
    pub fn client_gone(&self) -> bool {
        self.client_gone
    }

    /// Queues bytes for the client; they go out with the next flush.
    pub fn send_client(&mut self, bytes: &[u8]) {
        self.to_client.extend_from_slice(bytes);
    }

    /// Bytes queued for the client and not yet written.
    pub fn take_queued(&mut self) -> BytesMut {
        self.to_client.split()
    }

    async fn write_queued(&mut self) -> io::Result<()> {
        if !self.to_client.is_empty() {
            if !self.client_gone {
                self.writing_client = true;
                let written = self.client.write_all(&self.to_client).await;
                self.writing_client = false;
                self.client_gone = written.is_err();
            }
            self.to_client.clear();
            if self.to_client.capacity() > 4 * FLUSH_ABOVE {
                self.to_client = BytesMut::new();
            }
        }
        Ok(())
    }

    pub async fn flush_client(&mut self) -> io::Result<()> {
        self.write_queued().await?;
        if !self.client_gone {
            self.client_gone = self.client.flush().await.is_err();
        }
        Ok(())
    }

    /// Sends raw bytes to the server (the client's untouched Query).
    pub async fn send_server(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.server.write_all(bytes).await
    }

    /// Makes sure `rbuf` holds at least `n` bytes.
    async fn fill(&mut self, n: usize) -> io::Result<()> {
        while self.rbuf.len() < n {
            // At least a socket buffer's worth: a large frame is read in pieces.
            self.rbuf
                .reserve((n - self.rbuf.len()).clamp(16 * 1024, STREAM_ABOVE));
            if self.server.read_buf(&mut self.rbuf).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        Ok(())
    }

    /// Reads the next frame from the server. A small frame comes back whole; a
    /// large one is written on to the client as it arrives (`relay`) or skipped,
    /// and only its first [`INSPECT_MAX`] bytes come back (`true`: streamed).
    async fn frame(&mut self, relay: impl Fn(u8) -> bool) -> io::Result<(BytesMut, bool)> {
        self.fill(HEADER_LEN).await?;
        let (_, total) = header(&self.rbuf, usize::MAX)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidData))?;
        if total <= STREAM_ABOVE {
            self.fill(total).await?;
            return Ok((self.rbuf.split_to(total), false));
        }
        self.fill(INSPECT_MAX).await?;
        let head = BytesMut::from(&self.rbuf[..INSPECT_MAX]);
        let mut pass = relay(head[0]);
        if pass {
            self.write_queued().await?;
            pass = !self.client_gone;
            self.writing_client = pass;
        }
        let mut left = total;
        while left > 0 {
            if self.rbuf.is_empty() {
                self.fill(1).await?;
            }
            let piece = self.rbuf.split_to(left.min(self.rbuf.len()));
            left -= piece.len();
            if pass && self.client.write_all(&piece).await.is_err() {
                self.client_gone = true;
                pass = false;
            }
        }
        self.writing_client = false;
        Ok((head, true))
    }

    /// Reads until ReadyForQuery, relaying per `self.relay`.
    pub async fn collect(&mut self) -> io::Result<Reply> {
        let mut reply = Reply::default();
        let relay_mode = self.relay;
        let relays = move |tag: u8| match relay_mode {
            Relay::All => tag != b'Z',
            Relay::Quiet => matches!(tag, b'A' | b'S'),
            Relay::Notices => matches!(tag, b'A' | b'S' | b'N'),
        };
        loop {
            let (frame, streamed) = self.frame(relays).await?;
            let tag = frame[0];
            let body = &frame[HEADER_LEN.min(frame.len())..];
            match tag {
                b'Z' => {
                    self.status = TxStatus::of_body(body);
                    if self.to_client.len() > FLUSH_ABOVE {
                        self.write_queued().await?;
                    }
                    return Ok(reply);
                }
                b'C' => reply.tags.push(cstr(body)),
                // The client's own results go to the client, not into memory.
                b'D' if self.relay != Relay::All => reply.rows.push(data_row(body)),
                b'T' if !streamed => reply.fields = crate::wire::backend::row_description(body),
                b't' if !streamed => reply.params = crate::wire::backend::parameter_types(body),
                b'E' if reply.error.is_none() => {
                    reply.error = Some(ServerError::from_fields(error_fields(&frame)));
                }
                _ => {}
            }
            if !streamed && relays(tag) {
                let shifted = match (tag, self.position_shift) {
                    (b'E' | b'N', shift) if shift > 0 => shift_position(&frame, shift),
                    _ => None,
                };
                self.to_client
                    .extend_from_slice(shifted.as_deref().unwrap_or(&frame));
                if self.to_client.len() > FLUSH_ABOVE {
                    self.write_queued().await?;
                }
            }
        }
    }
}

impl<C, S> Conn for InBand<'_, C, S>
where
    C: AsyncWrite + Unpin + Send,
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    async fn query(&mut self, sql: &str) -> io::Result<Reply> {
        let mut out = BytesMut::new();
        backend::query(&mut out, sql);
        self.server.write_all(&out).await?;
        self.collect().await
    }

    async fn query_params(&mut self, sql: &str, params: &[&str]) -> io::Result<Reply> {
        let mut out = BytesMut::new();
        backend::query_with_params(&mut out, sql, params);
        self.server.write_all(&out).await?;
        let relay = std::mem::replace(&mut self.relay, self.step_relay);
        let reply = self.collect().await;
        self.relay = relay;
        reply
    }

    async fn query_step(&mut self, sql: &str) -> io::Result<Reply> {
        let relay = std::mem::replace(&mut self.relay, self.step_relay);
        let reply = self.query(sql).await;
        self.relay = relay;
        reply
    }

    fn cancelled(&self) -> bool {
        self.cancel.is_some_and(|(c, seen)| c.count() > seen)
    }

    async fn tell(&mut self, notice: &crate::wire::backend::PgError) -> io::Result<()> {
        self.send_client(&notice.to_bytes());
        self.flush_client().await
    }

    async fn pause(&mut self, pause: Duration) -> bool {
        let sleep = tokio::time::sleep(pause);
        match self.cancel {
            None => {
                sleep.await;
                true
            }
            Some((c, seen)) => c.unless_requested(seen, sleep).await.is_some(),
        }
    }
}

fn cstr(body: &[u8]) -> String {
    let end = body.iter().position(|&b| b == 0).unwrap_or(body.len());
    String::from_utf8_lossy(&body[..end]).into_owned()
}

fn data_row(mut body: &[u8]) -> Vec<Option<String>> {
    let mut values = Vec::new();
    if body.len() < 2 {
        return values;
    }
    let n = body.get_u16();
    for _ in 0..n {
        if body.len() < 4 {
            break;
        }
        let len = body.get_i32();
        if len < 0 {
            values.push(None);
            continue;
        }
        let len = (len as usize).min(body.len());
        values.push(Some(String::from_utf8_lossy(&body[..len]).into_owned()));
        body.advance(len);
    }
    values
}

#[cfg(test)]
mod tests {
    use super::find_again;

    #[test]
    fn positions_find_the_same_text_in_the_original() {
        // "+" in the safe form's probe is the one "+" of the original.
        let probe = "SELECT ((a + b)) FROM ONLY public.t LIMIT 0";
        let original = "CREATE INDEX t_bad_expr ON t ((a + b))";
        let p = probe.find('+').unwrap() + 1;
        assert_eq!(
            find_again(probe, p, original),
            original.find('+').map(|i| i + 1)
        );
        // An identifier followed by text the original lacks.
        let ran = "ALTER TABLE t ADD CONSTRAINT c CHECK (nocol > 0) NOT VALID";
        let original = "ALTER TABLE t ADD CONSTRAINT c CHECK (nocol > 0)";
        let p = ran.find("nocol").unwrap() + 1;
        assert_eq!(
            find_again(ran, p, original),
            original.find("nocol").map(|i| i + 1)
        );
        // Characters, not bytes.
        let ran = "CREATE INDEX CONCURRENTLY ä ON t ((é + x))";
        let original = "CREATE INDEX ä ON t ((é + x))";
        let p = ran.chars().position(|c| c == 'é').unwrap() + 1;
        assert_eq!(
            find_again(ran, p, original),
            original.chars().position(|c| c == 'é').map(|i| i + 1)
        );
    }

    #[test]
    fn matches_keep_to_token_boundaries() {
        // The schema `s` of pgshift's `ONLY s.ts` is not the `s` inside `ts`.
        let ran = "SELECT x FROM ONLY s.ts LIMIT 0";
        let p = ran.find("s.ts").unwrap() + 1;
        assert_eq!(find_again(ran, p, "CREATE INDEX ON ts ((x))"), None);
        // Nor a word that only begins like the one pointed at.
        let ran = "SELECT (nocol > 0) FROM t";
        let p = ran.find("nocol").unwrap() + 1;
        assert_eq!(
            find_again(ran, p, "ALTER TABLE t ADD CHECK (nocolumn > 0)"),
            None
        );
    }

    #[test]
    fn ambiguous_or_missing_text_gives_no_position() {
        let ran = "SELECT (a + c) FROM t";
        let p = ran.find("a +").unwrap() + 1;
        // "a + c)" is not in the original, "a + " twice: no guess.
        assert_eq!(
            find_again(ran, p, "CREATE INDEX ON t (((a + b) * (a + b)))"),
            None
        );
        assert_eq!(find_again(ran, p, "CREATE INDEX ON t ((b))"), None);
        assert_eq!(find_again(ran, 0, "x"), None);
        assert_eq!(find_again(ran, 999, "x"), None);
    }
}
