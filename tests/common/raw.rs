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
