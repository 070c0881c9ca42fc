//! A minimal raw protocol client for tests that must send what real drivers won't.

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct Raw {
    pub stream: TcpStream,
}

/// A startup packet for `version` (major << 16 | minor) with `params`.
pub fn startup_packet(version: u32, params: &[(&str, &str)]) -> Vec<u8> {
    pgshift::wire::startup::startup_message(version, params).to_vec()
}

pub fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

pub fn query(sql: &str) -> Vec<u8> {
    let mut body = sql.as_bytes().to_vec();
    body.push(0);
    frame(b'Q', &body)
}

impl Raw {
    pub async fn connect(addr: std::net::SocketAddr) -> Raw {
        Raw {
            stream: TcpStream::connect(addr).await.unwrap(),
        }
    }

    /// Connects and completes a trust-auth startup as `user` on `db`.
    pub async fn startup(
        addr: std::net::SocketAddr,
        user: &str,
        db: &str,
    ) -> (Raw, Vec<(u8, Vec<u8>)>) {
        let mut raw = Raw::connect(addr).await;
        raw.send(&startup_packet(
            196_608,
            &[("user", user), ("database", db)],
        ))
        .await;
        let msgs = raw.read_until(b'Z').await;
        (raw, msgs)
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Reads one tagged message; None on EOF or after 10 s.
    pub async fn read_msg(&mut self) -> Option<(u8, Vec<u8>)> {
        tokio::time::timeout(Duration::from_secs(10), async {
            let tag = self.stream.read_u8().await.ok()?;
            let len = self.stream.read_u32().await.ok()? as usize;
            let mut body = vec![0; len.checked_sub(4)?];
            self.stream.read_exact(&mut body).await.ok()?;
            Some((tag, body))
        })
        .await
        .ok()
        .flatten()
    }

    /// Reads messages up to and including one with `tag` (or EOF).
    pub async fn read_until(&mut self, tag: u8) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        while let Some(m) = self.read_msg().await {
            let done = m.0 == tag;
            out.push(m);
            if done {
                break;
            }
        }
        out
    }

    /// True when the peer closed the connection within 10 s.
    pub async fn closed(&mut self) -> bool {
        let mut buf = [0u8; 1024];
        loop {
            match tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
                Err(_) => return false,
            }
        }
    }
}

/// The SQLSTATE of an ErrorResponse body.
pub fn error_code(body: &[u8]) -> String {
    field(body, b'C')
}

/// One field of an ErrorResponse/NoticeResponse body.
pub fn field(body: &[u8], code: u8) -> String {
    let mut rest = body;
    while let Some((&c, tail)) = rest.split_first() {
        if c == 0 {
            break;
        }
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        if c == code {
            return String::from_utf8_lossy(&tail[..end]).into_owned();
        }
        rest = &tail[(end + 1).min(tail.len())..];
    }
    String::new()
}

/// The first ErrorResponse in `msgs`, as (SQLSTATE, message, hint).
pub fn first_error(msgs: &[(u8, Vec<u8>)]) -> Option<(String, String, String)> {
    msgs.iter()
        .find(|(t, _)| *t == b'E')
        .map(|(_, b)| (error_code(b), field(b, b'M'), field(b, b'H')))
}

/// Everything a peer sent back to a scripted client, and whether it then closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transcript {
    pub bytes: Vec<u8>,
    pub closed: bool,
}

/// Where a scripted client connects.
#[derive(Debug, Clone)]
pub enum Target {
    Tcp(std::net::SocketAddr),
    Unix(std::path::PathBuf),
}

impl Target {
    /// The test cluster over TCP (where it answers an SSLRequest with `S`).
    pub fn direct() -> Target {
        Target::Tcp(super::pg().tcp_address().parse().unwrap())
    }

    /// The test cluster over its Unix socket, where Postgres answers both encryption
    /// requests with `N`, like pgshift without `tls.cert_file`.
    pub fn direct_unix() -> Target {
        let pg = super::pg();
        Target::Unix(pg.socket_dir.join(format!(".s.PGSQL.{}", pg.port)))
    }

    pub fn proxy(proxy: &super::Proxy) -> Target {
        Target::Tcp(proxy.addr)
    }
}

/// Sends each packet of `script` on its own (with a pause after each, so that they
/// arrive apart), then reads until the peer closes or says nothing for `quiet`.
pub async fn transcript(target: &Target, script: &[&[u8]], quiet: Duration) -> Transcript {
    match target {
        Target::Tcp(addr) => {
            run_script(TcpStream::connect(addr).await.unwrap(), script, quiet).await
        }
        Target::Unix(path) => {
            let stream = tokio::net::UnixStream::connect(path).await.unwrap();
            run_script(stream, script, quiet).await
        }
    }
}

async fn run_script<S>(mut stream: S, script: &[&[u8]], quiet: Duration) -> Transcript
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    for packet in script {
        // The peer may have closed already; what it sent is what counts.
        let _ = stream.write_all(packet).await;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    read_rest(&mut stream, quiet).await
}

/// Reads until the peer closes (or resets) or says nothing for `quiet`.
pub async fn read_rest<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    quiet: Duration,
) -> Transcript {
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(quiet, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                return Transcript {
                    bytes,
                    closed: true,
                }
            }
            Ok(Ok(n)) => bytes.extend_from_slice(&buf[..n]),
            Err(_) => {
                return Transcript {
                    bytes,
                    closed: false,
                }
            }
        }
    }
}

/// Splits protocol v3 backend messages; a tail that is not a whole message is
/// returned as one pseudo-message with tag 0.
pub fn messages(bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while rest.len() >= 5 {
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        if len < 4 || rest.len() < 1 + len {
            break;
        }
        out.push((rest[0], rest[5..1 + len].to_vec()));
        rest = &rest[1 + len..];
    }
    if !rest.is_empty() {
        out.push((0, rest.to_vec()));
    }
    out
}

/// `bytes` with the BackendKeyData secret and pid zeroed: pgshift issues its own.
pub fn without_key(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for (tag, body) in messages(bytes) {
        if tag == 0 {
            out.extend_from_slice(&body);
            continue;
        }
        out.push(tag);
        out.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        if tag == b'K' {
            out.extend(std::iter::repeat_n(0, body.len()));
        } else {
            out.extend_from_slice(&body);
        }
    }
    out
}

/// The fields of an ErrorResponse body a client shows (severity, SQLSTATE, message,
/// detail, hint), without Postgres' source location (file, line, routine), which
/// an error pgshift composes itself does not have.
pub fn shown_fields(body: &[u8]) -> Vec<(u8, String)> {
    let mut out = Vec::new();
    let mut rest = body;
    while let Some((&c, tail)) = rest.split_first() {
        if c == 0 {
            break;
        }
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        if !matches!(c, b'F' | b'L' | b'R') {
            out.push((c, String::from_utf8_lossy(&tail[..end]).into_owned()));
        }
        rest = &tail[(end + 1).min(tail.len())..];
    }
    out
}

/// The shown fields of every ErrorResponse and NoticeResponse in `bytes`, with
/// their tags: what a client would display.
pub fn shown_fields_of(bytes: &[u8]) -> Vec<(u8, Vec<(u8, String)>)> {
    messages(bytes)
        .into_iter()
        .filter(|(t, _)| matches!(t, b'E' | b'N'))
        .map(|(t, b)| (t, shown_fields(&b)))
        .collect()
}
