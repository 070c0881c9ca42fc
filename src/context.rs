//! What the listener, the sessions and the DDL engine share: the settings derived
//! from the config (swapped whole on reload) and the state every session sees.
//! Its own module, so that `session` and `engine` depend on it and not on the
//! listener (`server`), which depends on them.

use crate::config::{Config, UpstreamAddr};
use crate::net::tls::{self, ClientTls, TlsError, UpstreamTls};
use crate::session::{cancel::CancelMap, info::Sessions, terminate::Terminate};
use crate::stats::Stats;
use arc_swap::ArcSwap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Settings derived from a validated config: swapped whole on reload.
pub struct Settings {
    pub config: Config,
    pub client_tls: Option<ClientTls>,
    pub upstream: UpstreamAddr,
    pub upstream_tls: UpstreamTls,
}

impl Settings {
    pub fn build(config: Config) -> Result<Settings, TlsError> {
        let client_tls = match config.tls_files() {
            Some((cert, key)) => Some(tls::client_tls(&cert, &key)?),
            None => None,
        };
        let upstream = config.upstream_addr();
        let host = match &upstream {
            UpstreamAddr::Tcp { host, .. } => host.clone(),
            UpstreamAddr::Unix { .. } => "localhost".into(),
        };
        let upstream_tls = tls::upstream_tls(&config, &host)?;
        Ok(Settings {
            config,
            client_tls,
            upstream,
            upstream_tls,
        })
    }
}

/// State every session shares.
pub struct Shared {
    pub settings: Arc<ArcSwap<Settings>>,
    /// The DDL engine's bookkeeping: journal writers, service connections, scans.
    pub engine: crate::engine::Engine,
    pub cancel: CancelMap,
    pub stats: Stats,
    pub sessions: Sessions,
    /// Fired to stop accepting.
    pub shutdown: CancellationToken,
    /// Fired when the drain time is over: sessions end with FATAL 57P01.
    pub terminate: Terminate,
    next_id: AtomicU64,
    /// Reads the configuration again (the file and the command line's flags),
    /// for the console's RELOAD; set by whoever started the server.
    reloader: std::sync::Mutex<Option<Reloader>>,
    /// Held by whoever reads, changes and stores the settings (a console SET,
    /// a reload), so that two changes at once do not undo each other.
    pub settings_change: std::sync::Mutex<()>,
}

/// Produces the configuration a reload applies.
pub type Reloader = Arc<dyn Fn() -> Result<Config, String> + Send + Sync>;

impl Shared {
    /// The shared state of a server starting with `settings`; starts the DDL
    /// engine's background work.
    pub fn new(settings: Arc<ArcSwap<Settings>>) -> Shared {
        Shared {
            engine: crate::engine::Engine::start(settings.clone()),
            settings,
            cancel: CancelMap::default(),
            stats: Stats::default(),
            sessions: Sessions::default(),
            shutdown: CancellationToken::new(),
            terminate: Terminate::default(),
            next_id: AtomicU64::new(1),
            reloader: std::sync::Mutex::new(None),
            settings_change: std::sync::Mutex::new(()),
        }
    }

    pub fn set_reloader(&self, reloader: Reloader) {
        *self.reloader.lock().unwrap_or_else(|e| e.into_inner()) = Some(reloader);
    }

    pub fn reloader(&self) -> Option<Reloader> {
        self.reloader
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Swaps in a new config for new sessions. What is set up at start (the
    /// listen address and worker count, the log, the console, the metrics
    /// listener) keeps its running value, so SHOW CONFIG tells what is in effect;
    /// a change to it is reported.
    pub fn reload(&self, mut config: Config) -> Result<(), TlsError> {
        let _changing = self
            .settings_change
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let current = self.settings.load();
        let running = &current.config;
        let mut kept = Vec::new();
        if (&config.server.listen, config.server.workers)
            != (&running.server.listen, running.server.workers)
        {
            kept.push("server.listen/server.workers");
            config.server.listen = running.server.listen.clone();
            config.server.workers = running.server.workers;
        }
        if config.log != running.log {
            kept.push("log");
            config.log = running.log.clone();
        }
        if config.admin != running.admin {
            kept.push("admin");
            config.admin = running.admin.clone();
        }
        if config.metrics != running.metrics {
            kept.push("metrics");
            config.metrics = running.metrics.clone();
        }
        if !kept.is_empty() {
            tracing::warn!(kept = %kept.join(", "), "these settings change only on restart; they keep their running values");
        }
        let settings = Settings::build(config)?;
        self.settings.store(Arc::new(settings));
        tracing::info!("configuration reloaded");
        Ok(())
    }

    /// A new session's id.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Relaxed)
    }
}
