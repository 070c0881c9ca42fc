//! The console's listener. pgwire serves each connection over one end of a local
//! socket pair; the other end is relayed to the operator's TCP connection by a
//! guard that bounds what an unauthenticated peer can cost: a few login slots for
//! the whole console, a login deadline, and a byte cap until the login succeeds
//! (pgwire itself would buffer a message of up to 1 GiB before any password).

use super::auth::{Credentials, Failures, Login};
use super::Console;
use crate::context::Shared;
use crate::net::tls::ClientTls;
use std::io;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

/// Logins in progress at once, for the whole console.
pub const LOGIN_SLOTS: usize = 8;
/// How long a connection may take to log in.
pub const LOGIN_WAIT: Duration = Duration::from_secs(10);
/// Bytes a client may send before it has logged in (a SCRAM login takes < 1 KiB).
pub const LOGIN_BYTES: usize = 16 * 1024;

/// SSLRequest and GSSENCRequest codes: TLS when the proxy has a certificate,
/// never GSS encryption.
const SSL_REQUEST: u32 = 80877103;
const GSSENC_REQUEST: u32 = 80877104;

/// A bound console, ready to serve.
pub struct Listener {
    listener: TcpListener,
    shared: Arc<Shared>,
    credentials: Arc<Credentials>,
    failures: Arc<Failures>,
    slots: Arc<Semaphore>,
    /// The proxy's own certificate (`[tls]`), offered to consoles that ask.
    tls: Option<ClientTls>,
    /// Bound to a non-loopback address: logins only over TLS.
    tls_only: bool,
}

impl Listener {
    /// Binds `admin.listen` when the console has a password; None when it is off.
    pub async fn bind(shared: &Arc<Shared>) -> Result<Option<Listener>, crate::server::StartError> {
        let settings = shared.settings.load_full();
        let admin = &settings.config.admin;
        if admin.listen.is_empty() {
            return Ok(None);
        }
        let secret = admin.secret().map_err(crate::server::StartError::Admin)?;
        let Some(secret) = secret else {
            tracing::warn!(target: "pgshift::admin", "admin console off: set PGSHIFT_ADMIN_PASSWORD, admin.password_file or admin.scram_verifier");
            return Ok(None);
        };
        let listener = TcpListener::bind(&admin.listen).await.map_err(|source| {
            crate::server::StartError::Bind {
                addr: admin.listen.clone(),
                source,
            }
        })?;
        let tls_only = listener
            .local_addr()
            .map(|a| !a.ip().is_loopback())
            .unwrap_or(true);
        Ok(Some(Listener {
            listener,
            shared: shared.clone(),
            credentials: Arc::new(Credentials::new(&admin.user, &secret)),
            failures: Arc::new(Failures::default()),
            slots: Arc::new(Semaphore::new(LOGIN_SLOTS)),
            tls: settings.client_tls.clone(),
            tls_only,
        }))
    }

    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.listener.local_addr().expect("bound listener")
    }

    /// Serves until shutdown; then closes the open console sessions.
    pub async fn serve(self) {
        let shutdown = self.shared.shutdown.clone();
        let tracker = TaskTracker::new();
        tracing::info!(target: "pgshift::admin", addr = %self.local_addr(), "admin console listening");
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = self.listener.accept() => accepted,
            };
            let (mut tcp, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(target: "pgshift::admin", error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(slot) = self.slots.clone().try_acquire_owned() else {
                tracing::warn!(target: "pgshift::admin", %peer, "admin console: too many logins in progress");
                tracker.spawn(async move {
                    let frame = fatal_frame(
                        "53300",
                        "too many logins to the pgshift console in progress",
                    );
                    let _ =
                        tokio::time::timeout(Duration::from_secs(1), tcp.write_all(&frame)).await;
                });
                continue;
            };
            let login = Arc::new(Login::new(peer, slot));
            let console = Console {
                shared: self.shared.clone(),
                credentials: self.credentials.clone(),
                failures: self.failures.clone(),
                login: login.clone(),
            };
            let shutdown = shutdown.clone();
            let tls = self.tls.clone();
            let tls_only = self.tls_only;
            tracker.spawn(async move {
                let (ours, theirs) = match UnixStream::pair() {
                    Ok(pair) => pair,
                    Err(e) => {
                        tracing::warn!(target: "pgshift::admin", error = %e, "admin console: no socket pair");
                        return;
                    }
                };
                let serve = async {
                    tokio::join!(
                        pgwire::tokio::process_socket_unix(theirs, console),
                        guard(tcp, ours, &login, tls.as_ref(), tls_only),
                    )
                };
                tokio::select! {
                    _ = serve => {}
                    _ = shutdown.cancelled() => {}
                }
            });
        }
        tracker.close();
        tracker.wait().await;
    }
}

/// An ErrorResponse frame (severity FATAL), for answers sent before pgwire runs.
fn fatal_frame(code: &str, message: &str) -> Vec<u8> {
    let mut body = Vec::new();
    for (field, value) in [
        (b'S', "FATAL"),
        (b'V', "FATAL"),
        (b'C', code),
        (b'M', message),
    ] {
        body.push(field);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut frame = vec![b'E'];
    frame.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    frame
}

/// Relays the operator's connection and pgwire's end until either side closes;
/// before the login it enforces [`LOGIN_WAIT`] and [`LOGIN_BYTES`].
async fn guard(
    tcp: TcpStream,
    unix: UnixStream,
    login: &Login,
    tls: Option<&ClientTls>,
    tls_only: bool,
) {
    let deadline = tokio::time::Instant::now() + LOGIN_WAIT;
    match tokio::time::timeout_at(deadline, negotiate(tcp, tls)).await {
        Ok(Ok(Negotiated::Tls(stream))) => relay(*stream, unix, login, deadline).await,
        Ok(Ok(Negotiated::Plain(mut tcp))) if tls_only => {
            tracing::warn!(target: "pgshift::admin", peer = %login.peer, "admin console: a login without TLS on a non-loopback address, refused");
            let frame = fatal_frame(
                "28000",
                "the pgshift console takes only TLS connections on this address",
            );
            let _ = tokio::time::timeout(Duration::from_secs(1), tcp.write_all(&frame)).await;
        }
        Ok(Ok(Negotiated::Plain(tcp))) => relay(tcp, unix, login, deadline).await,
        Ok(Err(e)) => {
            tracing::debug!(target: "pgshift::admin", peer = %login.peer, error = %e, "admin console: no session");
        }
        Err(_) => {}
    }
    // The client is gone: its login slot is free, whatever pgwire still does.
    login.release();
}

async fn relay<S>(stream: S, unix: UnixStream, login: &Login, deadline: tokio::time::Instant)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut from_client, mut to_client) = tokio::io::split(stream);
    let (mut from_console, mut to_console) = unix.into_split();
    let up = async {
        let mut buf = vec![0u8; 8192];
        let mut before_login = Some(PreLogin::default());
        loop {
            let n = from_client.read(&mut buf).await?;
            if n == 0 {
                return to_console.shutdown().await;
            }
            match before_login.take() {
                Some(mut pre) if !login.authenticated() => match pre.take(&buf[..n]) {
                    Ok(whole) => {
                        to_console.write_all(&whole).await?;
                        before_login = Some(pre);
                    }
                    Err(why) => {
                        tracing::warn!(target: "pgshift::admin", peer = %login.peer, "admin console: {why} before a login, closed");
                        return Err(io::Error::other(why));
                    }
                },
                Some(pre) => {
                    to_console.write_all(&pre.pending).await?;
                    to_console.write_all(&buf[..n]).await?;
                }
                None => to_console.write_all(&buf[..n]).await?,
            }
        }
    };
    let down = async {
        tokio::io::copy(&mut from_console, &mut to_client).await?;
        to_client.shutdown().await
    };
    let late = async {
        tokio::time::sleep_until(deadline).await;
        if login.authenticated() {
            std::future::pending::<()>().await;
        }
        tracing::warn!(target: "pgshift::admin", peer = %login.peer, "admin console: no login within {LOGIN_WAIT:?}, closed");
    };
    tokio::pin!(down);
    tokio::select! {
        r = up => {
            // The client is done sending; what pgwire still says goes out.
            if r.is_ok() {
                let _ = tokio::time::timeout(Duration::from_secs(5), &mut down).await;
            }
        }
        _ = &mut down => {}
        _ = late => {}
    }
}

/// What a client sends before its login, passed on only as whole, well-formed
/// messages: at most [`LOGIN_BYTES`] in all, and a SASLInitialResponse whose
/// inner length is right (pgwire panics reading one that is not).
#[derive(Debug, Default)]
struct PreLogin {
    pending: Vec<u8>,
    total: usize,
    startup_seen: bool,
    sasl_seen: bool,
}

impl PreLogin {
    /// Takes `bytes`; returns the messages now whole, or why the client is cut off.
    fn take(&mut self, bytes: &[u8]) -> Result<Vec<u8>, &'static str> {
        self.total += bytes.len();
        if self.total > LOGIN_BYTES {
            return Err("too many bytes");
        }
        self.pending.extend_from_slice(bytes);
        let mut whole = Vec::new();
        loop {
            // The startup message has no type byte; every later one has.
            let at = usize::from(self.startup_seen);
            let Some(head) = self.pending.get(at..at + 4) else {
                break;
            };
            let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
            if len < 4 || (!self.startup_seen && len < 8) {
                return Err("a malformed message");
            }
            if self.pending.len() < at + len {
                break;
            }
            let message: Vec<u8> = self.pending.drain(..at + len).collect();
            if self.startup_seen && message[0] == b'p' && !self.sasl_seen {
                self.sasl_seen = true;
                if !sasl_initial_ok(&message[5..]) {
                    return Err("a malformed SASL message");
                }
            }
            self.startup_seen = true;
            whole.extend_from_slice(&message);
        }
        Ok(whole)
    }
}

/// A SASLInitialResponse body: mechanism, NUL, then -1 or the exact length of
/// the rest.
fn sasl_initial_ok(body: &[u8]) -> bool {
    let Some(nul) = body.iter().position(|b| *b == 0) else {
        return false;
    };
    let Some(len) = body.get(nul + 1..nul + 5) else {
        return false;
    };
    let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
    let rest = body.len() - (nul + 5);
    len == -1 && rest == 0 || usize::try_from(len) == Ok(rest)
}

/// The operator's connection after the encryption requests.
enum Negotiated {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// Reads leading SSLRequest and GSSENCRequest messages: GSS encryption is
/// refused ('N'); TLS is accepted ('S', then the handshake) when the proxy has
/// a certificate, refused otherwise (the client then sends its startup message
/// in the clear, or gives up, as sslmode=require does).
async fn negotiate(mut tcp: TcpStream, tls: Option<&ClientTls>) -> io::Result<Negotiated> {
    // libpq asks for GSS encryption, then for TLS, at most once each.
    for _ in 0..2 {
        let mut head = [0u8; 8];
        loop {
            let n = tcp.peek(&mut head).await?;
            if n == 0 || n == 8 {
                break;
            }
            if head[..n.min(4)] != 8u32.to_be_bytes()[..n.min(4)] {
                return Ok(Negotiated::Plain(tcp));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let code = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
        if head[..4] != 8u32.to_be_bytes() || (code != SSL_REQUEST && code != GSSENC_REQUEST) {
            return Ok(Negotiated::Plain(tcp));
        }
        tcp.read_exact(&mut head).await?;
        match (code, tls) {
            (SSL_REQUEST, Some(tls)) => {
                tcp.write_all(b"S").await?;
                let stream = tls.acceptor.accept(tcp).await?;
                return Ok(Negotiated::Tls(Box::new(stream)));
            }
            _ => tcp.write_all(b"N").await?,
        }
    }
    Ok(Negotiated::Plain(tcp))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![tag];
        m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    #[test]
    fn messages_before_a_login_pass_whole_and_well_formed() {
        let mut startup = 12u32.to_be_bytes().to_vec();
        startup.extend_from_slice(&[0, 3, 0, 0, 0, 0, 0, 0]);
        let mut sasl = b"SCRAM-SHA-256\0".to_vec();
        sasl.extend_from_slice(&3i32.to_be_bytes());
        sasl.extend_from_slice(b"n,,");
        let all = [startup.clone(), typed(b'p', &sasl), typed(b'Q', b"x\0")].concat();
        // Byte by byte, only whole messages come out, in order.
        let mut pre = PreLogin::default();
        let mut out = Vec::new();
        for b in &all {
            out.extend(pre.take(&[*b]).unwrap());
        }
        assert_eq!(out, all);
        assert!(pre.pending.is_empty());

        let mut short = b"SCRAM-SHA-256\0".to_vec();
        short.extend_from_slice(&1000i32.to_be_bytes());
        short.extend_from_slice(b"n,,");
        for bad in [
            [startup.clone(), typed(b'p', &short)].concat(),
            [startup.clone(), typed(b'p', b"PLAIN")].concat(),
            [startup.clone(), typed(b'p', b"PLAIN\0\0\0")].concat(),
            [startup.clone(), vec![b'Q', 0, 0, 0, 2]].concat(),
            vec![0, 0, 0, 5, 1],
        ] {
            assert!(PreLogin::default().take(&bad).is_err(), "{bad:?}");
        }
        // A message larger than the cap waits, up to the cap.
        let mut pre = PreLogin::default();
        assert_eq!(pre.take(&startup), Ok(startup.clone()));
        assert_eq!(pre.take(&[b'Q', 0x10, 0, 0, 0]), Ok(Vec::new()));
        assert_eq!(
            pre.take(&vec![b'x'; LOGIN_BYTES - pre.total]),
            Ok(Vec::new())
        );
        assert!(pre.take(b"x").is_err());
    }

    #[test]
    fn a_fatal_frame_is_a_well_formed_error_response() {
        let f = fatal_frame("53300", "full");
        assert_eq!(f[0], b'E');
        let len = u32::from_be_bytes([f[1], f[2], f[3], f[4]]) as usize;
        assert_eq!(len + 1, f.len());
        assert_eq!(&f[5..12], b"SFATAL\0");
        assert!(f.windows(7).any(|w| w == b"C53300\0"));
        assert_eq!(f.last(), Some(&0));
    }
}
