//! The client's opening: SSLRequest/GSSENCRequest negotiation, TLS termination, and
//! the StartupMessage or CancelRequest that follows, answered the way Postgres'
//! ProcessStartupPacket answers them.

use crate::net::stream::ClientStream;
use crate::net::tls::ClientTls;
use crate::wire::backend::PgError;
use crate::wire::startup::{self, BadLength, Negotiated, Startup, StartupPacket};
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
    /// A packet only the server can answer (see [`StartupPacket::ForServer`]).
    ForServer {
        stream: ClientStream,
        packet: Bytes,
    },
}

/// Why an opening failed; the client has already been told where Postgres would
/// have told it.
#[derive(Debug, thiserror::Error)]
pub enum OpeningError {
    #[error("client closed the connection during startup")]
    Closed,
    /// Closed without a word, as Postgres closes it.
    #[error(transparent)]
    BadLength(#[from] BadLength),
    /// Refused with a FATAL after the answer to the request, as Postgres refuses it.
    #[error("received unencrypted data after {0}")]
    UnencryptedData(&'static str),
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl OpeningError {
    /// The client broke the protocol (rather than went away or failed TLS).
    pub fn is_protocol_error(&self) -> bool {
        matches!(
            self,
            OpeningError::BadLength(_) | OpeningError::UnencryptedData(_)
        )
    }
}

pub async fn accept(tcp: TcpStream, tls: Option<&ClientTls>) -> Result<Opening, OpeningError> {
    let mut stream = ClientStream::Plain(tcp);
    let mut buf = BytesMut::with_capacity(512);
    let mut done = Negotiated::default();
    loop {
        match read_packet(&mut stream, &mut buf, done).await? {
            StartupPacket::SslRequest => {
                stream = match (stream, tls) {
                    (ClientStream::Plain(mut tcp), Some(tls)) => {
                        tcp.write_all(b"S").await?;
                        let tls_stream =
                            tls.acceptor.accept(tcp).await.map_err(OpeningError::Tls)?;
                        // Inside TLS, a GSSENCRequest is no longer one.
                        done.gss = true;
                        ClientStream::Tls(Box::new(tls_stream))
                    }
                    (mut plain, _) => {
                        plain.write_all(b"N").await?;
                        plain
                    }
                };
                done.ssl = true;
                refuse_unencrypted(&mut stream, &buf, "SSL request").await?;
            }
            StartupPacket::GssEncRequest => {
                // pgshift has no GSSAPI encryption: it answers like a Postgres
                // without it (or on a Unix socket), and the client may try TLS next.
                stream.write_all(b"N").await?;
                done.gss = true;
                refuse_unencrypted(&mut stream, &buf, "GSSAPI encryption request").await?;
            }
            StartupPacket::Cancel { pid, secret } => return Ok(Opening::Cancel { pid, secret }),
            StartupPacket::Startup(startup) => {
                return Ok(Opening::Startup {
                    stream,
                    startup,
                    leftover: buf,
                })
            }
            StartupPacket::ForServer(packet) => return Ok(Opening::ForServer { stream, packet }),
        }
    }
}

/// Bytes that came before the answer to an encryption request were not encrypted,
/// and may have been injected by a man in the middle (CVE-2021-23214). Postgres
/// refuses them once it has answered (over TLS, if it accepted), with this FATAL.
async fn refuse_unencrypted(
    stream: &mut ClientStream,
    buf: &BytesMut,
    request: &'static str,
) -> Result<(), OpeningError> {
    if buf.is_empty() {
        return Ok(());
    }
    let err = PgError::fatal(
        "08P01",
        format!("received unencrypted data after {request}"),
    )
    .with_detail(
        "This could be either a client-software bug or evidence of an attempted \
             man-in-the-middle attack.",
    );
    refuse(stream, err).await;
    Err(OpeningError::UnencryptedData(request))
}

async fn read_packet<R: AsyncRead + Unpin>(
    stream: &mut R,
    buf: &mut BytesMut,
    done: Negotiated,
) -> Result<StartupPacket, OpeningError> {
    loop {
        if let Some(packet) = startup::decode(buf, done)? {
            return Ok(packet);
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
