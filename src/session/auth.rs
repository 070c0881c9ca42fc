//! Authentication passthrough: the client's StartupMessage goes upstream as sent,
//! then server requests and client answers are relayed until ReadyForQuery. Only
//! three things are touched: SCRAM-SHA-256-PLUS is withdrawn from the mechanisms
//! when channel binding cannot survive the proxy, BackendKeyData is swapped for a
//! proxy-issued key, and the negotiated protocol version is noted.

use super::cancel::{CancelKey, CancelMap};
use super::io::{read_frame, ReadError};
use crate::config::UpstreamAddr;
use crate::net::stream::{ClientStream, ServerStream};
use crate::wire::backend::TxStatus;
use crate::wire::backend::{self, PgError, AUTH_OK, AUTH_SASL, AUTH_SASL_FINAL, SCRAM_PLUS};
use crate::wire::startup::Startup;
use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

/// Postgres caps auth tokens at 64 KiB (PG_MAX_AUTH_TOKEN_LENGTH).
const MAX_AUTH_MESSAGE: usize = 65_536 + 5;
/// Server messages are trusted but still framed; this only guards against garbage.
const MAX_SERVER_STARTUP_MESSAGE: usize = 1 << 24;

pub const CHANNEL_BINDING_HINT: &str = "pgshift terminates TLS, so SCRAM channel binding \
cannot reach the server. Give pgshift the same certificate as the server (tls.cert_file), \
connect pgshift to the server without TLS or over a Unix socket, or connect with \
channel_binding=disable.";

/// Facts about the connection that decide what may be rewritten.
pub struct AuthContext<'a> {
    /// SCRAM-SHA-256-PLUS may be offered: both sides use TLS with one certificate.
    pub channel_binding_ok: bool,
    /// Both hops are TLS, so a client that saw no -PLUS will claim binding support.
    pub both_tls: bool,
    pub cancel: &'a CancelMap,
    pub addr: &'a UpstreamAddr,
    /// The session's cancel requests, shared with its key.
    pub signal: &'a std::sync::Arc<crate::engine::CancelSignal>,
}

/// A session that is authenticated and ready for queries.
pub struct Ready {
    pub client_leftover: BytesMut,
    pub server_leftover: BytesMut,
    pub key: Option<CancelKey>,
    pub tx_status: TxStatus,
    /// The server backend's process id, from its BackendKeyData (0 without one).
    pub backend_pid: i32,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("the server refused the session (forwarded to the client)")]
    Rejected,
    #[error("client went away during authentication")]
    ClientGone,
    #[error("upstream: {0}")]
    Server(ReadError),
    #[error("client: {0}")]
    Client(std::io::Error),
    #[error("{}", .0.message)]
    ClientProtocol(PgError),
}

pub async fn relay(
    client: &mut ClientStream,
    client_buf: BytesMut,
    server: &mut ServerStream,
    startup: &Startup,
    ctx: AuthContext<'_>,
) -> Result<Ready, AuthError> {
    let mut client_buf = client_buf;
    let mut server_buf = BytesMut::with_capacity(1024);
    let mut out = BytesMut::with_capacity(512);
    let mut minor = startup.minor;
    let mut stripped_plus = false;
    let mut key = None;
    let mut backend_pid = 0;
    server
        .write_all(&startup.raw)
        .await
        .map_err(|e| AuthError::Server(e.into()))?;
    loop {
        let frame = read_frame(server, &mut server_buf, MAX_SERVER_STARTUP_MESSAGE)
            .await
            .map_err(AuthError::Server)?;
        match frame[0] {
            b'R' => {
                let code = backend::auth_code(&frame).ok_or_else(malformed)?;
                if code == AUTH_SASL && !ctx.channel_binding_ok {
                    let mut mechanisms = backend::sasl_mechanisms(&frame);
                    let before = mechanisms.len();
                    mechanisms.retain(|m| m != SCRAM_PLUS);
                    stripped_plus = mechanisms.len() != before;
                    out.extend_from_slice(&backend::auth_sasl(&mechanisms));
                } else {
                    out.extend_from_slice(&frame);
                }
                if code != AUTH_OK && code != AUTH_SASL_FINAL {
                    flush(client, &mut out).await?;
                    let answer = read_client_answer(client, &mut client_buf).await?;
                    server
                        .write_all(&answer)
                        .await
                        .map_err(|e| AuthError::Server(e.into()))?;
                }
            }
            b'E' => {
                let explain = stripped_plus && ctx.both_tls;
                if explain {
                    out.extend_from_slice(&backend::error_with_hint(&frame, CHANNEL_BINDING_HINT));
                } else {
                    out.extend_from_slice(&frame);
                }
                flush(client, &mut out).await?;
                return Err(AuthError::Rejected);
            }
            b'v' => {
                minor = backend::negotiated_minor(&frame).unwrap_or(0);
                out.extend_from_slice(&frame);
            }
            b'K' => {
                let (pid, secret) =
                    backend::parse_backend_key_data(&frame).ok_or_else(malformed)?;
                // 3.2 allows long keys; 3.0 clients expect exactly four bytes.
                let len = if minor >= 2 { 32 } else { 4 };
                let issued =
                    ctx.cancel
                        .register(ctx.addr.clone(), pid, secret, len, ctx.signal.clone());
                backend::backend_key_data(&mut out, issued.pid, &issued.secret);
                key = Some(issued);
                backend_pid = i32::try_from(pid).unwrap_or(0);
            }
            b'Z' => {
                out.extend_from_slice(&frame);
                flush(client, &mut out).await?;
                return Ok(Ready {
                    client_leftover: client_buf,
                    server_leftover: server_buf,
                    key,
                    tx_status: TxStatus::of_body(frame.get(5..).unwrap_or_default()),
                    backend_pid,
                });
            }
            _ => out.extend_from_slice(&frame),
        }
    }
}

fn malformed() -> AuthError {
    let e = std::io::Error::new(std::io::ErrorKind::InvalidData, "malformed startup message");
    AuthError::Server(ReadError::Io(e))
}

async fn flush(client: &mut ClientStream, out: &mut BytesMut) -> Result<(), AuthError> {
    client.write_all(out).await.map_err(AuthError::Client)?;
    client.flush().await.map_err(AuthError::Client)?;
    out.clear();
    Ok(())
}

/// Reads the client's answer to an authentication request: a 'p' message.
async fn read_client_answer(
    client: &mut ClientStream,
    buf: &mut BytesMut,
) -> Result<bytes::Bytes, AuthError> {
    match read_frame(client, buf, MAX_AUTH_MESSAGE).await {
        Ok(frame) if frame[0] == b'p' => Ok(frame),
        // psql closes and asks for a password, then reconnects.
        Ok(frame) if frame[0] == b'X' => Err(AuthError::ClientGone),
        Ok(frame) => Err(AuthError::ClientProtocol(PgError::fatal(
            "08P01",
            format!(
                "expected password response, got message type '{}'",
                char::from(frame[0])
            ),
        ))),
        Err(ReadError::Closed) => Err(AuthError::ClientGone),
        Err(ReadError::Io(e)) => Err(AuthError::Client(e)),
        Err(ReadError::Frame(e)) => Err(AuthError::ClientProtocol(PgError::fatal(
            "08P01",
            e.to_string(),
        ))),
    }
}
