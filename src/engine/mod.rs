//! The DDL safety engine's executor. When the hot path holds a Query that may be
//! DDL, the session waits until its upstream connection is quiescent and hands the
//! Query here. Clean statements go back to the pump untouched; unsafe ones run as
//! their plans, in-band on the client's own connection (so search_path, role and
//! transaction are the client's), and the client gets the original command tag.

mod backfill;
mod batch;
mod blockers;
mod book;
pub mod cancel;
pub mod conn;
pub mod deferred;
mod journal;
mod partitioned;
mod precheck;
mod reply;
mod retry;
mod risk;
mod schema;
mod script;
pub mod service;
pub mod steps;
mod type_change;
mod unnamed;

pub use batch::{complete_len as batch_len, flushed, parse as parse_batch, Batch};
pub use book::Books;
pub use cancel::CancelSignal;
pub use deferred::Pending;
pub use journal::{Entry, Journal};
pub use script::handle;

use crate::context::Settings;
use arc_swap::ArcSwap;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use steps::Failure;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The engine's background tasks (journal writers, scans) and what they share:
/// they run on the accepting thread's runtime and stop with the server.
#[derive(Clone)]
pub struct Background {
    rt: tokio::runtime::Handle,
    tasks: TaskTracker,
    stop: CancellationToken,
    settings: Arc<ArcSwap<Settings>>,
}

impl Background {
    pub fn spawn<F>(&self, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn_on(task, &self.rt);
    }

    pub async fn stopped(&self) {
        self.stop.cancelled().await
    }

    pub fn settings(&self) -> Arc<Settings> {
        self.settings.load_full()
    }
}

impl std::fmt::Debug for Background {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Background").finish_non_exhaustive()
    }
}

/// The engine's shared parts, one per server.
#[derive(Debug)]
pub struct Engine {
    pub journal: Journal,
    pub books: Arc<Books>,
    background: Background,
    /// Databases whose leftovers were looked for since this process started.
    seen: Mutex<HashSet<String>>,
}

impl Engine {
    /// Starts the periodic scan (needs a runtime: the caller's hosts the tasks).
    pub fn start(settings: Arc<ArcSwap<Settings>>) -> Self {
        let rt = tokio::runtime::Handle::current();
        let books = Arc::new(Books::new(rt.clone()));
        let background = Background {
            rt,
            tasks: TaskTracker::new(),
            stop: CancellationToken::new(),
            settings,
        };
        background.spawn(scan_forever(books.clone(), background.clone()));
        Engine {
            journal: Journal::new(books.clone(), background.clone()),
            books,
            background,
            seen: Mutex::default(),
        }
    }

    /// A session connected to `database`: the first time this process sees it,
    /// look for deferred work a dead proxy left behind there.
    pub fn seen(&self, database: &str) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        // Checked before inserting: every connection passes here, and an insert
        // would allocate the name each time.
        if seen.contains(database) {
            return;
        }
        seen.insert(database.to_string());
        let book = self.books.get(database);
        let background = self.background.clone();
        self.background.spawn(async move {
            let settings = background.settings();
            deferred::scan(&book, &settings, &background.rt).await;
        });
    }

    /// The settings now in force (they may have been reloaded since a session began).
    pub fn settings(&self) -> Arc<Settings> {
        self.background.settings()
    }

    /// Stops the background tasks; waits for them at most `limit`.
    pub async fn stop(&self, limit: Duration) {
        self.background.stop.cancel();
        self.background.tasks.close();
        let _ = tokio::time::timeout(limit, self.background.tasks.wait()).await;
    }
}

/// Every few seconds idle service connections close; every
/// [`deferred::SCAN_EVERY`], each database with a checked schema is scanned on a
/// task of its own (one slow database does not hold up the others).
async fn scan_forever(books: Arc<Books>, background: Background) {
    let reap = book::IDLE_CLOSE / 2;
    let mut tick = tokio::time::interval(reap);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let scan_every = (deferred::SCAN_EVERY.as_millis() / reap.as_millis()).max(1) as u64;
    let mut n = 0u64;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = background.stopped() => return,
        }
        n += 1;
        for database in books.databases() {
            let book = books.get(&database);
            if n % scan_every != 0 || !book.is_ready() {
                book.close_if_idle().await;
                continue;
            }
            let bg = background.clone();
            background.spawn(async move {
                let settings = bg.settings();
                tokio::select! {
                    _ = deferred::scan(&book, &settings, &bg.rt) => {}
                    _ = bg.stopped() => {}
                }
            });
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
}

/// What the session does next with the held Query.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Send it to the server untouched; the pump relays the answer.
    Forward,
    /// Answered in-band, ReadyForQuery included.
    Handled,
}

/// One line describing a failure, for the journal and logs.
pub fn failure_text(f: &Failure) -> String {
    match f {
        Failure::Server(e) => format!("{} ({})", e.message, e.code),
        Failure::Ours(e) => format!("{} ({})", e.message, e.code),
        Failure::Io(e) => e.to_string(),
    }
}
