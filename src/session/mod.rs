//! One client connection from accept to close: opening, upstream connect,
//! authentication relay, then the pump. Every way it can end gives the client a
//! proper ErrorResponse where the protocol allows one.

mod auth;
pub mod cancel;
mod copies;
mod hold;
pub mod info;
mod intercept;
mod io;
mod mirror;
mod mirrored;
mod opening;
mod outbox;
pub mod pause;
pub mod pump;
mod refusal;
mod spill;
mod statements;
pub mod terminate;
mod window;
mod wrapper;

use crate::context::{Settings, Shared};
use crate::engine::{CancelSignal, Pending};
use crate::net::stream::{ClientStream, ServerStream};
use crate::net::upstream::{self, Connected};
use crate::stats::{ActiveGuard, Stats};
use crate::wire::backend::PgError;
use crate::wire::scanner::Flow;
use cancel::CancelKey;
use info::Registered;
use opening::{refuse, Opening};
use pump::{Direction, PumpEnd};
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::{debug, info, warn, Instrument};

pub async fn serve(tcp: TcpStream, peer: SocketAddr, id: u64, shared: Arc<Shared>) {
    let span = tracing::info_span!(
        "conn",
        id,
        %peer,
        user = tracing::field::Empty,
        database = tracing::field::Empty,
        tls = tracing::field::Empty,
    );
    let settings = shared.settings.load_full();
    shared.stats.connections_total.fetch_add(1, Relaxed);
    // Shutdown's terminate signal also ends a session still opening (a client
    // that sends nothing, a stalled handshake): its deadlines may be a minute away.
    let mut watch = shared.terminate.watch();
    let established = tokio::select! {
        e = establish(tcp, peer, id, &shared, &settings).instrument(span.clone()) => e,
        _ = watch.fired() => None,
    };
    let Some(mut s) = established else {
        return;
    };
    // The hot path runs outside the span: nothing in the pump logs, and entering a
    // span on every wake-up costs more than the pump's own work.
    if settings.config.ddl.enabled {
        shared.engine.seen(&s.registered.info.database);
    }
    let end = loop {
        let end = pump::run(
            &mut s.client,
            &mut s.server,
            &mut s.up,
            &mut s.down,
            &shared.terminate,
            &s.registered.info,
        )
        .await;
        if !matches!(end, PumpEnd::Intercepted) {
            break end;
        }
        let handled = intercept::run(&mut s, &shared, &settings)
            .instrument(span.clone())
            .await;
        if let Err(end) = handled {
            break end;
        }
    };
    if matches!(end, PumpEnd::ClientClosed | PumpEnd::ClientIo(_)) {
        // A transaction may have committed just before the client went away.
        hold::finish_after_client_left(&mut s, &shared, &settings)
            .instrument(span.clone())
            .await;
    }
    finish(&mut s.client, &s.up, &s.down, end, &shared.stats)
        .instrument(span)
        .await;
}

/// A session past authentication, ready for the pump.
pub(crate) struct Established<'a> {
    client: ClientStream,
    server: ServerStream,
    up: Direction,
    down: Direction,
    registered: Registered<'a>,
    _cancel_key: Option<CancelKey>,
    /// Cancel requests for this session, as pgshift sees them.
    signal: Arc<CancelSignal>,
    /// Deferred work of the open transaction, run once it ends.
    pending: Pending,
    /// The last lookup of a write's table for a rollout's mirror.
    lookup: Option<mirror::Lookup>,
    /// Prepared writes pgshift changed to set a rollout's new column too.
    mirrors: mirrored::Mirrors,
    /// Counts the session against `server.max_client_conn`.
    _active: ActiveGuard<'a>,
}

/// Opening, limits, upstream connect and authentication. On failure the client has
/// been told why, where the protocol allows it.
async fn establish<'a>(
    tcp: TcpStream,
    peer: SocketAddr,
    id: u64,
    shared: &'a Shared,
    settings: &Settings,
) -> Option<Established<'a>> {
    let deadline = Instant::now() + settings.config.startup_timeout();
    // A socket that says nothing holds no client slot, and not for long.
    let packet_deadline = deadline.min(Instant::now() + settings.config.startup_packet_timeout());
    let (mut client, startup, leftover) = match open(tcp, shared, settings, packet_deadline).await?
    {
        Opening::Startup {
            stream,
            startup,
            leftover,
        } => (stream, startup, leftover),
        Opening::Cancel { pid, secret } => {
            answer_cancel(pid, &secret, shared, settings).await;
            return None;
        }
        Opening::ForServer { mut stream, packet } => {
            shared.stats.protocol_errors.fetch_add(1, Relaxed);
            let _active = admit(&mut stream, shared, settings).await?;
            refusal::relay(&mut stream, &packet, shared, settings, deadline).await;
            return None;
        }
    };
    let user = startup.param("user").unwrap_or("");
    // Postgres defaults the database to the user name.
    let database = startup.param("database").unwrap_or(user);
    let span = tracing::Span::current();
    span.record("user", user);
    span.record("database", database);
    span.record("tls", client.is_tls());
    let active = admit(&mut client, shared, settings).await?;
    let connected = connect_upstream(&mut client, shared, settings).await?;
    let channel_binding_ok = same_certificate(&client, settings, &connected);
    let mut server = connected.stream;
    let signal = Arc::new(CancelSignal::default());
    let ctx = auth::AuthContext {
        channel_binding_ok,
        both_tls: client.is_tls() && server.is_tls(),
        cancel: &shared.cancel,
        addr: &settings.upstream,
        signal: &signal,
    };
    let relayed = tokio::time::timeout_at(
        deadline,
        auth::relay(&mut client, leftover, &mut server, &startup, ctx),
    )
    .await;
    let ready = auth_outcome(&mut client, relayed, shared, settings).await?;
    // Only now: the registry, the per-database counters and pauses are keyed by
    // the database name, which is the client's to choose until the server took it.
    let registered = shared.sessions.register(
        id,
        peer,
        user,
        database,
        client.is_tls(),
        shared.stats.traffic(database),
    );
    registered
        .info
        .set_upstream(ready.backend_pid, server.is_tls());
    debug!("session ready");
    let max = settings.config.server.max_message_size;
    let up = Direction::new(Flow::ClientToServer, max, ready.client_leftover);
    let down = Direction::new(Flow::ServerToClient, usize::MAX, ready.server_leftover);
    let (Ok(up), Ok(mut down)) = (up, down) else {
        let err = PgError::fatal("08P01", "invalid message during startup");
        refuse(&mut client, err).await;
        return None;
    };
    down.scanner.set_tx_status(ready.tx_status);
    let mut up = up;
    up.scanner.set_intercept(settings.config.ddl.enabled);
    if settings.config.rollout.enabled {
        up.scanner.hold_copies(shared.engine.rollouts.live());
        up.scanner.hold_writes(
            shared.engine.rollouts.repeating(),
            &registered.info.database,
        );
        down.scanner.hide_columns(shared.engine.rollouts.live());
        up.scanner
            .watch_changes(shared.engine.rollouts.changes(&registered.info.database));
        let described = Arc::new(crate::wire::described::Record::default());
        up.scanner.track_described(described.clone());
        down.scanner.track_described(described);
        let activity = shared.engine.rollouts.activity(
            &registered.info.database,
            Some(registered.info.traffic.clone()),
        );
        up.scanner.track_activity(activity.clone());
        down.scanner.track_activity(activity);
    }
    Some(Established {
        client,
        server,
        up,
        down,
        registered,
        _cancel_key: ready.key,
        signal,
        pending: Pending::default(),
        lookup: None,
        mirrors: Default::default(),
        _active: active,
    })
}

/// Reads the client's opening.
async fn open(
    tcp: TcpStream,
    shared: &Shared,
    settings: &Settings,
    deadline: Instant,
) -> Option<Opening> {
    let opening =
        tokio::time::timeout_at(deadline, opening::accept(tcp, settings.client_tls.as_ref())).await;
    match opening {
        Ok(Ok(opening)) => Some(opening),
        Ok(Err(e)) => {
            if e.is_protocol_error() {
                shared.stats.protocol_errors.fetch_add(1, Relaxed);
            }
            debug!(error = %e, "opening failed");
            None
        }
        Err(_) => {
            // Like Postgres' startup packet timeout: close without a word.
            debug!("startup packet timeout");
            None
        }
    }
}

/// Passes a CancelRequest on; the client gets no answer, as from Postgres.
async fn answer_cancel(pid: u32, secret: &[u8], shared: &Shared, settings: &Settings) {
    shared.stats.cancel_requests.fetch_add(1, Relaxed);
    cancel::forward(
        &shared.cancel,
        pid,
        secret,
        settings.config.connect_timeout(),
    )
    .await;
}

/// Counts the client against `server.max_client_conn`, or refuses it.
async fn admit<'a>(
    client: &mut ClientStream,
    shared: &'a Shared,
    settings: &Settings,
) -> Option<ActiveGuard<'a>> {
    let active = ActiveGuard::new(&shared.stats);
    let limit = settings.config.server.max_client_conn;
    if active.active() <= limit as u64 {
        return Some(active);
    }
    shared.stats.connections_rejected.fetch_add(1, Relaxed);
    warn!(limit, "too many clients");
    let err = PgError::fatal("53300", "sorry, too many clients already").with_hint(format!(
        "pgshift serves at most {limit} clients (server.max_client_conn)."
    ));
    refuse(client, err).await;
    None
}

async fn connect_upstream(
    client: &mut ClientStream,
    shared: &Shared,
    settings: &Settings,
) -> Option<Connected> {
    let timeout = settings.config.connect_timeout();
    match upstream::connect(&settings.upstream, &settings.upstream_tls, timeout).await {
        Ok(connected) => Some(connected),
        Err(e) => {
            shared.stats.upstream_connect_errors.fetch_add(1, Relaxed);
            warn!(error = %e, "upstream connect failed");
            let err = PgError::fatal("08006", "pgshift could not connect to the database server")
                .with_detail(e.to_string())
                .with_hint(
                    "Check that Postgres is running and that upstream.address points at it.",
                );
            refuse(client, err).await;
            None
        }
    }
}

/// Channel binding survives the proxy only when the client sees the very
/// certificate the server presented to us.
fn same_certificate(client: &ClientStream, settings: &Settings, connected: &Connected) -> bool {
    match (&settings.client_tls, &connected.server_cert) {
        (Some(ours), Some(theirs)) => client.is_tls() && ours.leaf == *theirs,
        _ => false,
    }
}

/// Turns the auth relay's result into a ready session, or tells the client why not.
async fn auth_outcome(
    client: &mut ClientStream,
    relayed: Result<Result<auth::Ready, auth::AuthError>, tokio::time::error::Elapsed>,
    shared: &Shared,
    settings: &Settings,
) -> Option<auth::Ready> {
    let err = match relayed {
        Ok(Ok(ready)) => return Some(ready),
        Ok(Err(auth::AuthError::ClientProtocol(err))) => {
            shared.stats.protocol_errors.fetch_add(1, Relaxed);
            err
        }
        Ok(Err(auth::AuthError::Server(e))) => {
            warn!(error = %e, "upstream failed during authentication");
            PgError::fatal(
                "08006",
                "the database server closed the connection during authentication",
            )
        }
        Ok(Err(e)) => {
            debug!(error = %e, "authentication ended");
            return None;
        }
        Err(_) => PgError::fatal("08006", "startup did not finish in time").with_hint(format!(
            "Startup and authentication must finish within {} ms (server.startup_timeout_ms).",
            settings.config.server.startup_timeout_ms
        )),
    };
    refuse(client, err).await;
    None
}

/// Tells the client why its session ended, when the stream is at a frame boundary
/// and the server did not already say so.
async fn finish(
    client: &mut ClientStream,
    up: &Direction,
    down: &Direction,
    end: PumpEnd,
    stats: &Stats,
) {
    let err = match &end {
        PumpEnd::ClientClosed | PumpEnd::ClientIo(_) => None,
        // The client said goodbye (or sent a header Postgres refuses, and the
        // server answered it as it does): Postgres says nothing more, nor does pgshift.
        _ if up.scanner.ended.is_some() => None,
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
        PumpEnd::Spill(e) => Some(
            PgError::fatal(
                "58000",
                format!("pgshift could not pass a long row through its temporary file: {e}"),
            )
            .with_hint(
                "During a rollout pgshift maps rows that show its columns; a row over 1 MiB \
                 goes through a file in TMPDIR. Make room there, or name the columns.",
            ),
        ),
        PumpEnd::Intercepted | PumpEnd::TerminatedMidReply => None,
        PumpEnd::Terminated => Some(
            PgError::fatal(
                "57P01",
                "terminating connection because pgshift is shutting down",
            )
            .with_hint("Reconnect once pgshift or its replacement is back."),
        ),
        PumpEnd::Killed => Some(PgError::fatal(
            "57P01",
            "terminating connection due to administrator command (pgshift console KILL)",
        )),
    };
    info!(end = ?end, "session closed");
    // A client that stopped reading (full socket buffer, or TLS close_notify it never
    // takes) must not hold the session, and with it the shutdown drain, forever.
    let goodbye = async {
        if let Some(err) = err.filter(|_| down.at_boundary()) {
            client.write_all(&err.to_bytes()).await?;
        }
        client.shutdown().await
    };
    let _ = tokio::time::timeout(FINISH_WAIT, goodbye).await;
}

/// What the DDL engine needs to know about a session.
fn session_cx<'a>(
    info: &'a info::SessionInfo,
    shared: &'a Shared,
    settings: &'a Settings,
) -> crate::engine::SessionCx<'a> {
    crate::engine::SessionCx {
        settings,
        engine: &shared.engine,
        database: &info.database,
        user: &info.user,
        session_id: info.id,
    }
}

/// How long the last words to a closing client may take.
pub(super) const FINISH_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
