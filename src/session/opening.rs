//! The client's opening: SSLRequest/GSSENCRequest negotiation, TLS termination, and
//! the StartupMessage or CancelRequest that follows.

use crate::net::stream::ClientStream;
use crate::net::tls::ClientTls;
use crate::wire::backend::PgError;
use crate::wire::startup::{self, Startup, StartupPacket};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What a client opened with.
pub enum Opening {
    Startup {
        stream: ClientStream,
        startup: Startup,
        /// Bytes the client sent after its StartupMessage.
        leftover: BytesMut,
    },
    Cancel {
        pid: u32,
        secret: Bytes,
    },
}

/// Why an opening failed; the client has already been told where it could be.
#[derive(Debug, thiserror::Error)]
pub enum OpeningError {
    #[error("client closed the connection during startup")]
    Closed,
    #[error("{0}")]
    Protocol(String),
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

pub async fn accept(tcp: TcpStream, tls: Option<&ClientTls>) -> Result<Opening, OpeningError> {
    let mut stream = ClientStream::Plain(tcp);
    let mut buf = BytesMut::with_capacity(512);
    let mut gss_asked = false;
    loop {
        let packet = match read_packet(&mut stream, &mut buf).await {
            Ok(p) => p,
            Err(OpeningError::Protocol(msg)) => {
                refuse(&mut stream, PgError::fatal("08P01", msg.clone())).await;
                return Err(OpeningError::Protocol(msg));
            }
            Err(e) => return Err(e),
        };
        match packet {
            StartupPacket::SslRequest if !stream.is_tls() => {
                if !buf.is_empty() {
                    // Bytes sent before the handshake would be trusted as if encrypted.
                    let msg = "received unencrypted data after SSL request";
                    refuse(&mut stream, PgError::fatal("08P01", msg)).await;
                    return Err(OpeningError::Protocol(msg.into()));
                }
                match (stream, tls) {
                    (ClientStream::Plain(mut tcp), Some(tls)) => {
                        tcp.write_all(b"S").await?;
                        let tls_stream =
                            tls.acceptor.accept(tcp).await.map_err(OpeningError::Tls)?;
                        stream = ClientStream::Tls(Box::new(tls_stream));
                    }
                    (mut plain, _) => {
                        plain.write_all(b"N").await?;
                        stream = plain;
                    }
                }
            }
            StartupPacket::GssEncRequest if !gss_asked && !stream.is_tls() => {
                gss_asked = true;
                stream.write_all(b"N").await?;
            }
            StartupPacket::SslRequest | StartupPacket::GssEncRequest => {
                let msg = "unexpected encryption request after negotiation";
                refuse(&mut stream, PgError::fatal("08P01", msg)).await;
                return Err(OpeningError::Protocol(msg.into()));
            }
            StartupPacket::Cancel { pid, secret } => return Ok(Opening::Cancel { pid, secret }),
            StartupPacket::Startup(startup) => {
                return Ok(Opening::Startup {
                    stream,
                    startup,
                    leftover: buf,
                })
            }
        }
    }
}

async fn read_packet<R: AsyncRead + Unpin>(
    stream: &mut R,
    buf: &mut BytesMut,
) -> Result<StartupPacket, OpeningError> {
    loop {
        match startup::decode(buf) {
            Ok(Some(packet)) => return Ok(packet),
            Ok(None) => {}
            Err(e) => return Err(OpeningError::Protocol(e.to_string())),
        }
        if buf.capacity() - buf.len() < 256 {
            buf.reserve(1024);
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(OpeningError::Closed);
        }
    }
}

/// Sends a FATAL to a client that has not finished startup; errors are moot, and a
/// client that is not reading gets [`super::FINISH_WAIT`] to take it.
pub async fn refuse(stream: &mut ClientStream, err: PgError) {
    let send = async {
        stream.write_all(&err.to_bytes()).await?;
        stream.flush().await
    };
    let _ = tokio::time::timeout(super::FINISH_WAIT, send).await;
}
