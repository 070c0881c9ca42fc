//! The two kinds of connection the DDL engine runs SQL on, behind one trait: the
//! client's own upstream connection (in-band, raw protocol, the client waiting at a
//! quiescent point) and pgshift's service connection (tokio-postgres).

use crate::wire::backend::{self, error_fields};
use crate::wire::frame::{header, HEADER_LEN};
use bytes::{Buf, BytesMut};
use std::io;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// An error the server reported, with its fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerError {
    pub code: String,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

impl ServerError {
    fn from_fields(fields: &[(u8, String)]) -> Self {
        let get = |c: u8| fields.iter().find(|(k, _)| *k == c).map(|(_, v)| v.clone());
        ServerError {
            code: get(b'C').unwrap_or_else(|| "XX000".into()),
            message: get(b'M').unwrap_or_default(),
            detail: get(b'D'),
            hint: get(b'H'),
        }
    }
}

/// What one simple Query returned.
#[derive(Debug, Default)]
pub struct Reply {
    /// Text values of every DataRow, in order.
    pub rows: Vec<Vec<Option<String>>>,
    /// Command tags, one per completed statement.
    pub tags: Vec<String>,
    pub error: Option<ServerError>,
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

/// A connection the engine can run simple queries on.
pub trait Conn: Send {
    fn query(&mut self, sql: &str) -> impl std::future::Future<Output = io::Result<Reply>> + Send;
}

/// How server messages of an in-band query reach the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relay {
    /// Only what the client must see whatever happens: notifications and
    /// parameter changes. Results, notices and errors stay with the engine.
    Quiet,
    /// Everything but ReadyForQuery: the client's own statement.
    All,
}

/// The client's upstream connection, used while the client waits for its Query.
pub struct InBand<'a, C, S> {
    client: &'a mut C,
    server: &'a mut S,
    rbuf: BytesMut,
    to_client: BytesMut,
    /// Set while `to_client` is being written.
    writing_client: bool,
    /// Status byte of the last ReadyForQuery.
    pub status: u8,
    /// How server messages reach the client, for the next queries.
    pub relay: Relay,
}

impl<'a, C, S> InBand<'a, C, S>
where
    C: AsyncWrite + Unpin + Send,
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    /// `unread`: server bytes already read but not forwarded.
    pub fn new(client: &'a mut C, server: &'a mut S, unread: BytesMut, status: u8) -> Self {
        InBand {
            client,
            server,
            rbuf: unread,
            to_client: BytesMut::new(),
            writing_client: false,
            status,
            relay: Relay::Quiet,
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

    /// Queues bytes for the client; they go out with the next flush.
    pub fn send_client(&mut self, bytes: &[u8]) {
        self.to_client.extend_from_slice(bytes);
    }

    pub async fn flush_client(&mut self) -> io::Result<()> {
        if !self.to_client.is_empty() {
            self.writing_client = true;
            self.client.write_all(&self.to_client).await?;
            self.writing_client = false;
            self.to_client.clear();
        }
        self.client.flush().await
    }

    /// Sends raw bytes to the server (the client's untouched Query).
    pub async fn send_server(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.server.write_all(bytes).await
    }

    /// Reads one whole frame from the server.
    async fn frame(&mut self) -> io::Result<BytesMut> {
        loop {
            if let Some((_, total)) = header(&self.rbuf, usize::MAX)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?
            {
                if self.rbuf.len() >= total {
                    return Ok(self.rbuf.split_to(total));
                }
                self.rbuf.reserve(total - self.rbuf.len());
            }
            if self.server.read_buf(&mut self.rbuf).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// Reads until ReadyForQuery, relaying per `self.relay`.
    pub async fn collect(&mut self) -> io::Result<Reply> {
        let mut reply = Reply::default();
        loop {
            let frame = self.frame().await?;
            let tag = frame[0];
            let body = &frame[HEADER_LEN..];
            match tag {
                b'Z' => {
                    self.status = body.first().copied().unwrap_or(b'I');
                    return Ok(reply);
                }
                b'C' => reply.tags.push(cstr(body)),
                // The client's own results go to the client, not into memory.
                b'D' if self.relay == Relay::Quiet => reply.rows.push(data_row(body)),
                b'E' if reply.error.is_none() => {
                    reply.error = Some(ServerError::from_fields(&error_fields(&frame)));
                }
                _ => {}
            }
            let relay = match self.relay {
                Relay::All => tag != b'Z',
                Relay::Quiet => matches!(tag, b'A' | b'S'),
            };
            if relay {
                self.to_client.extend_from_slice(&frame);
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
}

/// pgshift's own connection through tokio-postgres.
pub struct Service(pub tokio_postgres::Client);

impl Conn for Service {
    async fn query(&mut self, sql: &str) -> io::Result<Reply> {
        use tokio_postgres::SimpleQueryMessage as M;
        let mut reply = Reply::default();
        match self.0.simple_query(sql).await {
            Ok(messages) => {
                for m in messages {
                    match m {
                        M::Row(row) => reply.rows.push(
                            (0..row.len())
                                .map(|i| row.get(i).map(str::to_string))
                                .collect(),
                        ),
                        M::CommandComplete(n) => reply.tags.push(format!("OK {n}")),
                        _ => {}
                    }
                }
            }
            Err(e) => match e.as_db_error() {
                Some(db) => {
                    reply.error = Some(ServerError {
                        code: db.code().code().to_string(),
                        message: db.message().to_string(),
                        detail: db.detail().map(str::to_string),
                        hint: db.hint().map(str::to_string),
                    })
                }
                None => return Err(io::Error::other(e.to_string())),
            },
        }
        Ok(reply)
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
