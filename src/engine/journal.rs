//! The DDL journal: every intercepted statement, its plan, each executed step with
//! timings and attempts, and the outcome. Written to the log at once and to
//! `pgshift.ddl_journal` in the target database by a writer task per database, so
//! the client never waits for it and a stuck database holds up only its own
//! entries. Each writer's queue is bounded: when it is full, entries are dropped,
//! counted and logged.

use super::book::Books;
use super::steps::StepReport;
use super::Background;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// Entries waiting per database.
const QUEUE: usize = 256;

/// What became of a statement pgshift handled: the journal's `outcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// pgshift ran its safe form.
    Rewritten,
    /// The statement ran as written, with a NOTICE (policy `warn`).
    Warned,
    /// Nothing to do: IF NOT EXISTS on a name that is taken.
    Skipped,
    /// Part of it waits for the client's COMMIT.
    Deferred,
    /// Deferred work that ran to its end.
    Completed,
    /// Judged harmless (a small table) and run as written.
    AsWritten,
    Failed,
}

impl Outcome {
    /// As the journal table and the log spell it.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Rewritten => "rewritten",
            Outcome::Warned => "warned",
            Outcome::Skipped => "skipped",
            Outcome::Deferred => "deferred",
            Outcome::Completed => "completed",
            Outcome::AsWritten => "as-written",
            Outcome::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub database: String,
    pub session_id: u64,
    pub user: String,
    pub statement: String,
    pub rule: String,
    pub policy: String,
    pub outcome: Outcome,
    pub steps: Vec<StepReport>,
    pub error: Option<String>,
    pub duration_ms: u64,
}

/// Hands entries to the writer of their database.
#[derive(Debug)]
pub struct Journal {
    writers: Mutex<HashMap<String, mpsc::Sender<Entry>>>,
    books: Arc<Books>,
    background: Background,
    /// Entries dropped because their database's queue was full.
    pub dropped: AtomicU64,
}

impl Journal {
    pub fn new(books: Arc<Books>, background: Background) -> Self {
        Journal {
            writers: Mutex::default(),
            books,
            background,
            dropped: AtomicU64::new(0),
        }
    }

    pub fn record(&self, entry: Entry) {
        super::counters::outcome(&entry.rule, entry.outcome.name());
        tracing::info!(
            target: "pgshift::ddl",
            database = %entry.database,
            session = entry.session_id,
            user = %entry.user,
            rule = %entry.rule,
            policy = %entry.policy,
            outcome = entry.outcome.name(),
            steps = entry.steps.len(),
            duration_ms = entry.duration_ms,
            error = entry.error.as_deref().unwrap_or(""),
            statement = %entry.statement,
            "ddl"
        );
        let mut writers = self.writers.lock().unwrap_or_else(|e| e.into_inner());
        if writers.get(&entry.database).is_none_or(|tx| tx.is_closed()) {
            let (tx, rx) = mpsc::channel(QUEUE);
            self.background.spawn(write_all(
                rx,
                self.books.clone(),
                self.background.clone(),
                entry.database.clone(),
            ));
            writers.insert(entry.database.clone(), tx);
        }
        let tx = &writers[&entry.database];
        if let Err(mpsc::error::TrySendError::Full(entry)) = tx.try_send(entry) {
            let n = self.dropped.fetch_add(1, Relaxed) + 1;
            // One line per hundred drops: a stuck database must not flood the log.
            if n % 100 == 1 {
                tracing::warn!(database = %entry.database, dropped = n, "DDL journal queue full: entries dropped");
            }
        }
    }
}

async fn write_all(
    mut rx: mpsc::Receiver<Entry>,
    books: Arc<Books>,
    background: Background,
    database: String,
) {
    let book = books.get(&database);
    loop {
        let entry = tokio::select! {
            e = rx.recv() => match e {
                Some(e) => e,
                None => return,
            },
            _ = background.stopped() => return,
        };
        let settings = background.settings();
        if let Err(e) = book.journal(&settings, books.runtime(), &entry).await {
            tracing::warn!(error = %e, database = %entry.database, "could not write the DDL journal");
        }
    }
}
