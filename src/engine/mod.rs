//! The DDL safety engine's executor. When the hot path holds a Query that may be
//! DDL, the session waits until its upstream connection is quiescent and hands the
//! Query here. Clean statements go back to the pump untouched; unsafe ones run as
//! their plans, in-band on the client's own connection (so search_path, role and
//! transaction are the client's), and the client gets the original command tag.

mod backfill;
mod batch;
pub mod conn;
mod deferred;
mod journal;
mod partitioned;
mod reply;
mod retry;
mod script;
pub mod service;
pub mod steps;
mod type_change;

pub use batch::{complete_len as batch_len, parse as parse_batch, Batch};
pub use deferred::Deferred;
pub use journal::{Entry, Journal};
pub use script::handle;

use crate::server::Settings;
use service::Schemas;
use std::sync::Arc;
use steps::Failure;

/// The engine's background parts, one per server.
#[derive(Debug, Clone)]
pub struct Engine {
    pub journal: Journal,
    pub deferred: Deferred,
    pub schemas: Arc<Schemas>,
}

impl Engine {
    /// Starts the journal writer and the deferred-step runner (needs a runtime).
    pub fn start(settings: Arc<arc_swap::ArcSwap<Settings>>) -> Self {
        let schemas = Arc::new(Schemas::default());
        Engine {
            journal: Journal::start(settings.clone(), schemas.clone()),
            deferred: Deferred::start(settings, schemas.clone()),
            schemas,
        }
    }
}

/// Who is asking: the session's identity and settings.
pub struct SessionCx<'a> {
    pub settings: &'a Settings,
    pub engine: &'a Engine,
    pub database: &'a str,
    pub user: &'a str,
    pub session_id: u64,
    /// The session's transaction deferred work that waits for its COMMIT.
    pub deferred_pending: bool,
}

/// What the session does next with the held Query.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Send it to the server untouched; the pump relays the answer.
    Forward,
    /// Answered in-band, ReadyForQuery included.
    Handled {
        /// The client's open transaction now carries deferred work.
        deferred_pending: bool,
    },
}

/// One line describing a failure, for the journal and logs.
pub fn failure_text(f: &Failure) -> String {
    match f {
        Failure::Server(e) => format!("{} ({})", e.message, e.code),
        Failure::Ours(e) => format!("{} ({})", e.message, e.code),
        Failure::Io(e) => e.to_string(),
    }
}
