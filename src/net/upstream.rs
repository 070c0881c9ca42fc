//! Connecting to the upstream server: TCP or Unix socket, then the SSLRequest
//! exchange when upstream TLS is on. Everything runs under the connect timeout.

use super::stream::ServerStream;
use super::tls::UpstreamTls;
use crate::config::{UpstreamAddr, UpstreamTlsMode};
use crate::wire::startup::ssl_request;
use rustls::pki_types::{CertificateDer, ServerName};
use std::io;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("could not connect to the upstream server: {0}")]
    Io(#[from] io::Error),
    #[error("timed out connecting to the upstream server after {0:?}")]
    Timeout(Duration),
    #[error("the upstream server refused TLS, and upstream.tls_mode requires it")]
    TlsRefused,
    #[error("TLS handshake with the upstream server failed: {0}")]
    Tls(io::Error),
    #[error("invalid upstream TLS server name {0:?}")]
    ServerName(String),
}

/// A fresh upstream connection and, with TLS, the certificate the server showed.
pub struct Connected {
    pub stream: ServerStream,
    pub server_cert: Option<CertificateDer<'static>>,
}

pub async fn connect(
    addr: &UpstreamAddr,
    tls: &UpstreamTls,
    timeout: Duration,
) -> Result<Connected, ConnectError> {
    tokio::time::timeout(timeout, connect_inner(addr, tls))
        .await
        .map_err(|_| ConnectError::Timeout(timeout))?
}

/// A plain connection, for CancelRequests (Postgres reads them before TLS or auth).
pub async fn connect_plain(
    addr: &UpstreamAddr,
    timeout: Duration,
) -> Result<ServerStream, ConnectError> {
    tokio::time::timeout(timeout, open(addr))
        .await
        .map_err(|_| ConnectError::Timeout(timeout))?
}

async fn open(addr: &UpstreamAddr) -> Result<ServerStream, ConnectError> {
    Ok(match addr {
        UpstreamAddr::Tcp { host, port } => {
            let tcp = TcpStream::connect((host.as_str(), *port)).await?;
            tcp.set_nodelay(true)?;
            ServerStream::Tcp(tcp)
        }
        UpstreamAddr::Unix { .. } => {
            ServerStream::Unix(UnixStream::connect(addr.socket_path().expect("unix")).await?)
        }
    })
}

async fn connect_inner(addr: &UpstreamAddr, tls: &UpstreamTls) -> Result<Connected, ConnectError> {
    let stream = open(addr).await?;
    let (mut tcp, connector) = match (stream, &tls.connector) {
        (ServerStream::Tcp(tcp), Some(connector)) => (tcp, connector),
        // Unix sockets never use TLS, as with libpq.
        (stream, _) => {
            return Ok(Connected {
                stream,
                server_cert: None,
            })
        }
    };
    tcp.write_all(&ssl_request()).await?;
    let answer = tcp.read_u8().await?;
    if answer != b'S' {
        if tls.mode == UpstreamTlsMode::Prefer && answer == b'N' {
            return Ok(Connected {
                stream: ServerStream::Tcp(tcp),
                server_cert: None,
            });
        }
        return Err(ConnectError::TlsRefused);
    }
    let name = ServerName::try_from(tls.server_name.clone())
        .map_err(|_| ConnectError::ServerName(tls.server_name.clone()))?;
    let stream = connector
        .connect(name, tcp)
        .await
        .map_err(ConnectError::Tls)?;
    let server_cert = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.clone().into_owned());
    Ok(Connected {
        stream: ServerStream::Tls(Box::new(stream)),
        server_cert,
    })
}
