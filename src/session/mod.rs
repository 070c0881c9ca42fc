//! One client connection from accept to close: opening, upstream connect,
//! authentication relay, then the pump. Every way it can end gives the client a
//! proper ErrorResponse where the protocol allows one.

mod auth;
pub mod cancel;
pub mod info;
mod io;
mod opening;
pub mod pump;

use crate::net::stream::ClientStream;
use crate::net::upstream;
use crate::server::{Settings, Shared};
use crate::stats::{ActiveGuard, Stats};
use crate::wire::backend::PgError;
use crate::wire::scanner::Flow;
use opening::{refuse, Opening};
use pump::{Direction, PumpEnd};
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tracing::{debug, info, warn};

/// How long a terminated session may take to reach a frame boundary.
const TERMINATE_GRACE: Duration = Duration::from_secs(2);

pub async fn serve(tcp: TcpStream, peer: SocketAddr, id: u64, shared: Arc<Shared>) {
    let settings = shared.settings.load_full();
    let active = ActiveGuard::new(&shared.stats);
    let startup_deadline = tokio::time::Instant::now() + settings.config.startup_timeout();
    let opening = tokio::time::timeout_at(
        startup_deadline,
        opening::accept(tcp, settings.client_tls.as_ref()),
    )
    .await;
    let (mut client, startup, leftover) = match opening {
        Ok(Ok(Opening::Startup {
            stream,
            startup,
            leftover,
        })) => (stream, startup, leftover),
        Ok(Ok(Opening::Cancel { pid, secret })) => {
            drop(active);
            forward_cancel(&shared, &settings, pid, &secret).await;
            return;
        }
        Ok(Err(e)) => {
            if matches!(e, opening::OpeningError::Protocol(_)) {
                shared.stats.protocol_errors.fetch_add(1, Relaxed);
            }
            debug!(error = %e, "opening failed");
            return;
        }
        Err(_) => {
            debug!("startup packet timeout");
            return;
        }
    };
    let span = tracing::Span::current();
    span.record("user", startup.param("user").unwrap_or(""));
    span.record("database", startup.param("database").unwrap_or(""));
    span.record("tls", client.is_tls());
    let registered = shared.sessions.register(
        id,
        peer,
        startup.param("user").unwrap_or(""),
        startup.param("database").unwrap_or(""),
        client.is_tls(),
    );

    if active.active() > settings.config.server.max_client_conn as u64 {
        shared.stats.connections_rejected.fetch_add(1, Relaxed);
        warn!(
            limit = settings.config.server.max_client_conn,
            "too many clients"
        );
        let err = PgError::fatal("53300", "sorry, too many clients already").with_hint(format!(
            "pgshift serves at most {} clients (server.max_client_conn).",
            settings.config.server.max_client_conn
        ));
        refuse(&mut client, err).await;
        return;
    }

    let connected = match upstream::connect(
        &settings.upstream,
        &settings.upstream_tls,
        settings.config.connect_timeout(),
    )
    .await
    {
        Ok(c) => c,
        Err(e) => {
            shared.stats.upstream_connect_errors.fetch_add(1, Relaxed);
            warn!(error = %e, "upstream connect failed");
            let err = PgError::fatal("08006", "pgshift could not connect to the database server")
                .with_detail(e.to_string())
                .with_hint(
                    "Check that Postgres is running and that upstream.address points at it.",
                );
            refuse(&mut client, err).await;
            return;
        }
    };
    let mut server = connected.stream;
    let channel_binding_ok = match (&settings.client_tls, &connected.server_cert) {
        (Some(ours), Some(theirs)) => client.is_tls() && ours.leaf == *theirs,
        _ => false,
    };
    let ctx = auth::AuthContext {
        channel_binding_ok,
        both_tls: client.is_tls() && server.is_tls(),
        cancel: &shared.cancel,
        addr: &settings.upstream,
    };
    let authed = tokio::time::timeout_at(
        startup_deadline,
        auth::relay(&mut client, leftover, &mut server, &startup, ctx),
    )
    .await;
    let ready = match authed {
        Ok(Ok(ready)) => ready,
        Ok(Err(auth::AuthError::ClientProtocol(err))) => {
            shared.stats.protocol_errors.fetch_add(1, Relaxed);
            refuse(&mut client, err).await;
            return;
        }
        Ok(Err(auth::AuthError::Server(e))) => {
            warn!(error = %e, "upstream failed during authentication");
            let err = PgError::fatal(
                "08006",
                "the database server closed the connection during authentication",
            );
            refuse(&mut client, err).await;
            return;
        }
        Ok(Err(e)) => {
            debug!(error = %e, "authentication ended");
            return;
        }
        Err(_) => {
            let err = PgError::fatal("08006", "startup did not finish in time").with_hint(format!(
                "Startup and authentication must finish within {} ms (server.startup_timeout_ms).",
                settings.config.server.startup_timeout_ms
            ));
            refuse(&mut client, err).await;
            return;
        }
    };
    debug!("session ready");
    let _key = ready.key;
    let limit = settings.config.server.max_message_size;
    let up = Direction::new(Flow::ClientToServer, limit, ready.client_leftover);
    let down = Direction::new(Flow::ServerToClient, usize::MAX, ready.server_leftover);
    let (Ok(mut up), Ok(mut down)) = (up, down) else {
        refuse(
            &mut client,
            PgError::fatal("08P01", "invalid message during startup"),
        )
        .await;
        return;
    };
    down.scanner.tx_status = ready.tx_status;
    let end = run_pump(
        &mut client,
        &mut server,
        &mut up,
        &mut down,
        &shared,
        &registered.info,
    )
    .await;
    finish(&mut client, &down, end, &shared.stats).await;
}

async fn run_pump(
    client: &mut ClientStream,
    server: &mut crate::net::stream::ServerStream,
    up: &mut Direction,
    down: &mut Direction,
    shared: &Shared,
    info: &info::SessionInfo,
) -> PumpEnd {
    let pump = pump::run(
        client,
        server,
        up,
        down,
        &shared.terminate,
        &shared.stats,
        info,
    );
    tokio::pin!(pump);
    tokio::select! {
        end = &mut pump => end,
        _ = async {
            shared.terminate.cancelled().await;
            tokio::time::sleep(TERMINATE_GRACE).await;
        } => PumpEnd::Terminated,
    }
}

/// Tells the client why its session ended, when the stream is at a frame boundary
/// and the server did not already say so.
async fn finish(client: &mut ClientStream, down: &Direction, end: PumpEnd, stats: &Stats) {
    let err = match &end {
        PumpEnd::ClientClosed | PumpEnd::ClientIo(_) => None,
        PumpEnd::ServerClosed | PumpEnd::ServerIo(_) => {
            (down.scanner.last_tag != b'E').then(|| {
                PgError::fatal(
                    "08006",
                    "the database server closed the connection unexpectedly",
                )
                .with_hint("The server may have restarted or crashed. Reconnect and retry.")
            })
        }
        PumpEnd::ClientProtocol(e) => {
            stats.protocol_errors.fetch_add(1, Relaxed);
            Some(
                PgError::fatal("08P01", format!("invalid frontend message: {e}"))
                    .with_hint("Raise server.max_message_size if the message is legitimate."),
            )
        }
        PumpEnd::ServerProtocol(e) => Some(PgError::fatal(
            "08P01",
            format!("invalid message from the database server: {e}"),
        )),
        PumpEnd::Terminated => Some(
            PgError::fatal(
                "57P01",
                "terminating connection because pgshift is shutting down",
            )
            .with_hint("Reconnect once pgshift or its replacement is back."),
        ),
    };
    info!(end = ?end, "session closed");
    if let Some(err) = err.filter(|_| down.at_boundary()) {
        let _ = client.write_all(&err.to_bytes()).await;
    }
    let _ = client.shutdown().await;
}

async fn forward_cancel(shared: &Shared, settings: &Settings, pid: u32, secret: &[u8]) {
    shared.stats.cancel_requests.fetch_add(1, Relaxed);
    let Some(target) = shared.cancel.lookup(pid, secret) else {
        debug!(pid, "cancel request with an unknown key");
        return;
    };
    let packet = crate::wire::startup::cancel_request(target.backend_pid, &target.backend_secret);
    match upstream::connect_plain(&target.addr, settings.config.connect_timeout()).await {
        Ok(mut stream) => {
            if let Err(e) = stream.write_all(&packet).await {
                warn!(error = %e, "sending cancel upstream failed");
            }
            // Wait for the server to close: libpq treats that as "cancel processed".
            let mut sink = [0u8; 64];
            let _ = tokio::time::timeout(
                settings.config.connect_timeout(),
                tokio::io::AsyncReadExt::read(&mut stream, &mut sink),
            )
            .await;
            info!(backend_pid = target.backend_pid, "cancel forwarded");
        }
        Err(e) => warn!(error = %e, "cancel: upstream connect failed"),
    }
}
