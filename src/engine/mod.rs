//! The DDL safety engine's executor. When the hot path holds a Query that may be
//! DDL, the session waits until its upstream connection is quiescent and hands the
//! Query here. Clean statements go back to the pump untouched; unsafe ones run as
//! their plans, in-band on the client's own connection (so search_path, role and
//! transaction are the client's), and the client gets the original command tag.

mod backfill;
mod batch;
pub mod blockers;
pub mod book;
pub mod cancel;
pub mod conn;
mod copies;
pub mod counters;
pub use copies::prepared_with_list;
pub mod deferred;
mod journal;
mod partitioned;
mod precheck;
mod reply;
mod retry;
mod risk;
mod rollouts;
mod schema;
mod script;
pub mod service;
pub mod side;
pub mod steps;
mod type_change;
mod unnamed;
mod violations;
pub mod waits;

pub use batch::{complete_len as batch_len, flushed, parse as parse_batch, Batch};
pub use book::Books;
pub use cancel::CancelSignal;
pub use deferred::Pending;
pub use journal::{Entry, Journal};
pub use script::handle;

use crate::context::Settings;
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
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

    pub fn is_stopping(&self) -> bool {
        self.stop.is_cancelled()
    }

    pub fn runtime(&self) -> &tokio::runtime::Handle {
        &self.rt
    }
}

impl std::fmt::Debug for Background {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Background").finish_non_exhaustive()
    }
}

/// New connections to a database look for rollouts at most this often.
const ROLLOUT_LOOK: Duration = Duration::from_secs(2);
/// A database a session connected to this recently, or with a session still
/// open, is looked at for rollouts on every tick of the background scan too.
const ACTIVE: Duration = Duration::from_secs(60);

/// When a database last had a new session, and was last looked at for rollouts.
#[derive(Debug, Clone, Copy)]
struct Seen {
    session: Instant,
    scan: Instant,
}

/// The engine's shared parts, one per server.
#[derive(Debug)]
pub struct Engine {
    pub journal: Journal,
    pub books: Arc<Books>,
    pub rollouts: Arc<crate::rollout::Running>,
    background: Background,
    /// Databases sessions connected to since this process started.
    seen: Arc<Mutex<HashMap<String, Seen>>>,
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
        let rollouts: Arc<crate::rollout::Running> = Arc::default();
        let seen: Arc<Mutex<HashMap<String, Seen>>> = Arc::default();
        background.spawn(scan_forever(
            books.clone(),
            background.clone(),
            rollouts.clone(),
            seen.clone(),
        ));
        Engine {
            journal: Journal::new(books.clone(), background.clone()),
            books,
            rollouts,
            background,
            seen,
        }
    }

    /// A session connected to `database`: the first time this process sees it,
    /// look for deferred work a dead proxy left behind there; then, at most every
    /// [`ROLLOUT_LOOK`], for rollouts another proxy started (this one stands by
    /// to drive them if that proxy goes).
    pub fn seen(&self, database: &str) {
        self.books.session_connected(database);
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        // Looked up before inserting: every connection passes here, and an insert
        // would allocate the name each time.
        let now = Instant::now();
        let first = match seen.get_mut(database) {
            Some(at) => {
                at.session = now;
                if now.duration_since(at.scan) < ROLLOUT_LOOK {
                    return;
                }
                at.scan = now;
                false
            }
            None => {
                seen.insert(
                    database.to_string(),
                    Seen {
                        session: now,
                        scan: now,
                    },
                );
                true
            }
        };
        let book = self.books.get(database);
        // Lock windows other proxies announce (see `rollout::watch`).
        self.rollouts.watch(book.clone(), &self.background);
        let background = self.background.clone();
        let rollouts = self.rollouts.clone();
        self.background.spawn(async move {
            let settings = background.settings();
            if first {
                deferred::scan(&book, &settings, &background.rt).await;
            }
            crate::rollout::scan(&book, settings, &background, &rollouts).await;
        });
    }

    /// The background tasks' owner (rollout drivers run there).
    pub fn background(&self) -> &Background {
        &self.background
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
async fn scan_forever(
    books: Arc<Books>,
    background: Background,
    rollouts: Arc<crate::rollout::Running>,
    seen: Arc<Mutex<HashMap<String, Seen>>>,
) {
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
        let active: Vec<String> = {
            let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            seen.iter_mut()
                .filter(|(db, at)| {
                    now.duration_since(at.session) < ACTIVE || rollouts.has_sessions(db)
                })
                .map(|(db, at)| {
                    at.scan = now;
                    db.clone()
                })
                .collect()
        };
        for database in books.databases() {
            let book = books.get(&database);
            if rollouts.has_sessions(&database) {
                rollouts.watch(book.clone(), &background);
            }
            if !n.is_multiple_of(scan_every) || !book.is_ready() {
                book.close_if_idle().await;
                if active.contains(&database) {
                    // Rollouts another proxy started: this one stands by for them.
                    let (bg, rollouts) = (background.clone(), rollouts.clone());
                    background.spawn(async move {
                        let settings = bg.settings();
                        tokio::select! {
                            _ = crate::rollout::scan(&book, settings, &bg, &rollouts) => {}
                            _ = bg.stopped() => {}
                        }
                    });
                }
                continue;
            }
            let bg = background.clone();
            let rollouts = rollouts.clone();
            background.spawn(async move {
                let settings = bg.settings();
                tokio::select! {
                    _ = async {
                        deferred::scan(&book, &settings, &bg.rt).await;
                        crate::rollout::scan(&book, settings.clone(), &bg, &rollouts).await;
                    } => {}
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
    /// Send this Query text instead (a simple Query only); the pump relays the
    /// answer, COPY data included.
    Rewrite(String),
}

/// One line describing a failure, for the journal and logs.
pub fn failure_text(f: &Failure) -> String {
    match f {
        Failure::Server(e) => format!("{} ({})", e.message, e.code),
        Failure::Ours(e) => format!("{} ({})", e.message, e.code),
        Failure::Io(e) => e.to_string(),
    }
}
