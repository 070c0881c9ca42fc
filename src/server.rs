//! The listener: accepts clients, hands each to a session task, reloads settings,
//! and drains on shutdown (stop accepting, wait, then FATAL 57P01 the rest).

use crate::config::Config;
use crate::context::{Settings, Shared};
use crate::net::tls::TlsError;
use crate::session;
use crate::workers::Workers;
use arc_swap::ArcSwap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

/// Longest wait for sessions to end once terminate has fired.
const TERMINATE_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot start the session threads: {0}")]
    Workers(std::io::Error),
    #[error("cannot start the admin console: {0}")]
    Admin(crate::config::ConfigError),
}

pub struct Server {
    listener: TcpListener,
    workers: Workers,
    shared: Arc<Shared>,
    admin: Option<crate::admin::Listener>,
    metrics: Option<crate::metrics::Listener>,
}

/// A handle to a running server: reload, shutdown, stats.
#[derive(Clone)]
pub struct Handle {
    shared: Arc<Shared>,
}

impl Server {
    pub async fn bind(config: Config) -> Result<Server, StartError> {
        let settings = Settings::build(config)?;
        let addr = settings.config.server.listen.clone();
        let listener = TcpListener::bind(&addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })?;
        let workers =
            Workers::start(settings.config.server.workers).map_err(StartError::Workers)?;
        let settings = Arc::new(ArcSwap::from_pointee(settings));
        let shared = Arc::new(Shared::new(settings));
        let admin = crate::admin::Listener::bind(&shared).await?;
        let metrics = crate::metrics::Listener::bind(&shared).await?;
        Ok(Server {
            listener,
            workers,
            shared,
            admin,
            metrics,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener")
    }

    /// The metrics endpoint's address, when it runs.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(|m| m.local_addr())
    }

    /// The admin console's address, when it runs.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|a| a.local_addr())
    }

    pub fn handle(&self) -> Handle {
        Handle {
            shared: self.shared.clone(),
        }
    }

    /// Accepts until shutdown, then drains. Returns when every session has ended.
    pub async fn run(mut self) {
        let tracker = TaskTracker::new();
        let shared = self.shared;
        let admin = self.admin.take().map(|a| tokio::spawn(a.serve()));
        let metrics = self.metrics.take().map(|m| tokio::spawn(m.serve()));
        info!(addr = %self.listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "listening");
        loop {
            let accepted = tokio::select! {
                _ = shared.shutdown.cancelled() => break,
                accepted = self.listener.accept() => accepted,
            };
            match accepted {
                Ok((tcp, peer)) => {
                    let _ = tcp.set_nodelay(true);
                    let id = shared.next_id();
                    let (shared, token) = (shared.clone(), tracker.token());
                    // `token` keeps the drain waiting for the session.
                    self.workers.spawn(tcp, move |tcp| async move {
                        session::serve(tcp, peer, id, shared).await;
                        drop(token);
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        drop(self.listener);
        tracker.close();
        let drain = shared.settings.load().config.drain_timeout();
        info!(
            sessions = tracker.len(),
            ?drain,
            "shutting down: draining sessions"
        );
        if tokio::time::timeout(drain, tracker.wait()).await.is_err() {
            info!(
                sessions = tracker.len(),
                "drain time over: terminating sessions"
            );
            shared.terminate.fire();
            // Every session ends within a few seconds of terminate (the pump's grace,
            // the bounded goodbye); this cap keeps an unforeseen stall from hanging
            // the process. What is left is dropped with the runtimes.
            if tokio::time::timeout(TERMINATE_WAIT, tracker.wait())
                .await
                .is_err()
            {
                warn!(
                    sessions = tracker.len(),
                    "sessions still running after terminate: exiting without them"
                );
            }
        }
        drop(self.workers);
        for side in [admin, metrics].into_iter().flatten() {
            let _ = tokio::time::timeout(Duration::from_secs(1), side).await;
        }
        // Journal writers finish the entry at hand; scans stop.
        shared.engine.stop(Duration::from_secs(1)).await;
        info!("shutdown complete");
    }
}

impl Handle {
    pub fn shutdown(&self) {
        self.shared.shutdown.cancel();
    }

    /// Swaps in a new config for new sessions. The listen address and worker count
    /// are fixed at start; a change to them is reported and ignored.
    pub fn reload(&self, config: Config) -> Result<(), TlsError> {
        self.shared.reload(config)
    }

    /// How the console's RELOAD reads the configuration again.
    pub fn set_reloader(&self, reloader: crate::context::Reloader) {
        self.shared.set_reloader(reloader);
    }

    pub fn stats(&self) -> crate::stats::Snapshot {
        self.shared.stats.snapshot()
    }

    /// The live sessions, by id.
    pub fn sessions(&self) -> Vec<crate::session::info::SessionSnapshot> {
        self.shared.sessions.snapshot()
    }
}
