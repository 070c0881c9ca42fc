//! pgshift's bookkeeping in each target database: one service connection per
//! database, opened on demand, its schema checked before first use, closed when
//! idle. A database that fails or refuses affects only itself: every call is
//! bounded, and a refused database is not asked again for a while.

use super::journal::Entry;
use super::schema;
use super::service::{self, ServiceError};
use crate::context::Settings;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_postgres::Client;

/// A refused or unreachable database is asked again after this long.
const RETRY_REFUSED: Duration = Duration::from_secs(30);
const RETRY_FAILED: Duration = Duration::from_secs(2);
/// A service connection unused for this long is closed: an idle connection of
/// pgshift's must not keep `DROP DATABASE` and its friends waiting.
pub const IDLE_CLOSE: Duration = Duration::from_secs(10);

/// Every database's book.
#[derive(Debug)]
pub struct Books {
    map: Mutex<HashMap<String, Arc<Book>>>,
    rt: tokio::runtime::Handle,
}

#[derive(Debug)]
pub struct Book {
    database: String,
    state: tokio::sync::Mutex<State>,
    /// No connection may be opened before this (a client is dropping, renaming or
    /// copying the database).
    closed_until: Mutex<Option<Instant>>,
}

#[derive(Debug)]
enum State {
    Closed,
    /// Connected, schema checked.
    Ready {
        client: Arc<Client>,
        used: Instant,
    },
    /// Connected, and the database has no pgshift schema (not created for a scan).
    NoSchema {
        client: Arc<Client>,
        used: Instant,
    },
    Failed {
        error: ServiceError,
        at: Instant,
    },
}

/// A deferred row's state, as pgshift writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowState {
    Running,
    Done,
    Failed,
}

impl RowState {
    fn name(self) -> &'static str {
        match self {
            RowState::Running => "working",
            RowState::Done => "done",
            RowState::Failed => "failed",
        }
    }
}

impl Books {
    pub fn new(rt: tokio::runtime::Handle) -> Self {
        Books {
            map: Mutex::default(),
            rt,
        }
    }

    pub fn get(&self, database: &str) -> Arc<Book> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = map.get(database) {
            return b.clone();
        }
        let book = Arc::new(Book {
            database: database.to_string(),
            state: tokio::sync::Mutex::new(State::Closed),
            closed_until: Mutex::new(None),
        });
        map.insert(database.to_string(), book.clone());
        book
    }

    /// A client session reached `database`: it exists and takes connections, so
    /// a failed connection of pgshift's to it (made while it was being dropped
    /// and created again, say) is tried again at the next need, not in 2 s.
    pub fn session_connected(&self, database: &str) {
        let book = self
            .map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(database)
            .cloned();
        if let Some(book) = book {
            // Busy: a connection is being made right now anyway.
            if let Ok(mut state) = book.state.try_lock() {
                if let State::Failed {
                    error: ServiceError::Connect { .. },
                    ..
                } = &*state
                {
                    *state = State::Closed;
                }
            }
        }
    }

    /// Closes pgshift's connection to `database` and opens none for `hold` (a
    /// client's statement needs the database to itself); `None` lifts that.
    pub async fn step_aside(&self, database: &str, hold: Option<Duration>) {
        let book = self.get(database);
        *book.closed_until.lock().unwrap_or_else(|e| e.into_inner()) =
            hold.map(|h| Instant::now() + h);
        if hold.is_some() {
            *book.state.lock().await = State::Closed;
        }
    }

    /// Databases this process has a book for.
    pub fn databases(&self) -> Vec<String> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.keys().cloned().collect()
    }

    pub fn runtime(&self) -> &tokio::runtime::Handle {
        &self.rt
    }
}

impl Book {
    pub fn database(&self) -> &str {
        &self.database
    }

    /// The checked connection. With `create`, the schema is made when missing;
    /// without, a database that has none gives `None`.
    async fn client(
        &self,
        settings: &Settings,
        rt: &tokio::runtime::Handle,
        create: bool,
    ) -> Result<Option<Arc<Client>>, ServiceError> {
        let until = *self.closed_until.lock().unwrap_or_else(|e| e.into_inner());
        if until.is_some_and(|t| Instant::now() < t) {
            return Err(ServiceError::Query {
                database: self.database.clone(),
                reason: "a client is dropping, renaming or copying the database".into(),
            });
        }
        let mut state = self.state.lock().await;
        let existing = match &mut *state {
            // Only real work (`create`) counts as use: scans alone let an idle
            // connection close.
            State::Ready { client, used } if !client.is_closed() => {
                if create {
                    *used = Instant::now();
                }
                return Ok(Some(client.clone()));
            }
            // Looked at again: another proxy (or session) may have made the
            // schema since.
            State::NoSchema { client, .. } if !client.is_closed() => Some(client.clone()),
            State::Failed { error, at } => {
                let wait = match error {
                    ServiceError::Refused { .. } => RETRY_REFUSED,
                    _ => RETRY_FAILED,
                };
                if at.elapsed() < wait {
                    return Err(error.clone());
                }
                None
            }
            _ => None,
        };
        let opened = async {
            let client = match existing {
                Some(c) => c,
                None => Arc::new(service::connect(settings, &self.database, rt).await?),
            };
            // Only the service role itself may own what it writes to: any other
            // owner could change the code that runs when it writes.
            let owner = &settings.config.upstream.service_user;
            let has_schema = if create {
                schema::ensure(&client, owner, &self.database).await?;
                true
            } else {
                schema::present(&client, owner, &self.database).await?
            };
            Ok::<_, ServiceError>((client, has_schema))
        }
        .await;
        let used = Instant::now();
        *state = match &opened {
            Ok((client, true)) => State::Ready {
                client: client.clone(),
                used,
            },
            Ok((client, false)) => State::NoSchema {
                client: client.clone(),
                used,
            },
            Err(error) => State::Failed {
                error: error.clone(),
                at: used,
            },
        };
        opened.map(|(client, has_schema)| has_schema.then_some(client))
    }

    /// Makes sure the schema exists and is pgshift's (before a client's session
    /// calls `pgshift.defer`).
    pub async fn ensure(
        &self,
        settings: &Settings,
        rt: &tokio::runtime::Handle,
    ) -> Result<(), ServiceError> {
        self.client(settings, rt, true).await.map(drop)
    }

    /// Runs one bookkeeping query; a broken connection is closed for the next call.
    async fn run(
        &self,
        settings: &Settings,
        rt: &tokio::runtime::Handle,
        create: bool,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Option<Vec<tokio_postgres::Row>>, ServiceError> {
        let Some(client) = self.client(settings, rt, create).await? else {
            return Ok(None);
        };
        match service::query(&client, sql, params).await {
            Ok(rows) => Ok(Some(rows)),
            Err(e) => {
                if e.broken {
                    *self.state.lock().await = State::Closed;
                }
                Err(ServiceError::Query {
                    database: self.database.clone(),
                    reason: e.reason,
                })
            }
        }
    }

    /// One query on the checked service connection (the schema made if missing).
    pub async fn service_query(
        &self,
        settings: &Settings,
        rt: &tokio::runtime::Handle,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, ServiceError> {
        Ok(self
            .run(settings, rt, true, sql, params)
            .await?
            .unwrap_or_default())
    }

    /// One query on the service connection, only where the schema exists (a scan
    /// must not create it in every database a client visits).
    pub async fn scan_query(
        &self,
        settings: &Settings,
        rt: &tokio::runtime::Handle,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, ServiceError> {
        Ok(self
            .run(settings, rt, false, sql, params)
            .await?
            .unwrap_or_default())
    }

    /// Which of `ids` exist: deferred rows are written inside the client's
    /// transaction, so a row exists exactly when its transaction committed.
    pub async fn committed(
        &self,
        settings: &Settings,
        rt: &tokio::runtime::Handle,
        ids: &[i64],
    ) -> Result<Vec<i64>, ServiceError> {
        let rows = self
            .run(
                settings,
                rt,
                true,
                "SELECT id FROM pgshift.deferred WHERE id = ANY ($1)",
                &[&ids],
            )
            .await?
            .unwrap_or_default();
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Records a deferred row's progress.
    pub async fn set_state(
        &self,
        settings: &Settings,
        rt: &tokio::runtime::Handle,
        id: i64,
        state: RowState,
        next_step: usize,
        error: Option<&str>,
    ) -> Result<(), ServiceError> {
        let next = i32::try_from(next_step).unwrap_or(i32::MAX);
        self.run(
            settings,
            rt,
            true,
            "UPDATE pgshift.deferred SET state = $2, next_step = $3, error = $4, \
             updated = pg_catalog.now() WHERE id = $1",
            &[&id, &state.name(), &next, &error],
        )
        .await
        .map(drop)
    }

    pub async fn journal(
        &self,
        settings: &Settings,
        rt: &tokio::runtime::Handle,
        entry: &Entry,
    ) -> Result<(), ServiceError> {
        let steps = serde_json::to_value(&entry.steps)
            .unwrap_or_default()
            .to_string();
        self.run(
            settings,
            rt,
            true,
            "INSERT INTO pgshift.ddl_journal \
             (session_id, username, statement, rule, policy, outcome, steps, error, duration_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7::text::jsonb, $8, $9)",
            &[
                &(entry.session_id as i64),
                &entry.user,
                &entry.statement,
                &entry.rule,
                &entry.policy,
                &entry.outcome.name(),
                &steps,
                &entry.error,
                &(entry.duration_ms as i64),
            ],
        )
        .await
        .map(drop)
    }

    /// Marks as `interrupted` the rows whose session is gone before they finished:
    /// a proxy or connection died after the COMMIT. Nothing runs them again on its
    /// own (README: recovering deferred work). Returns how many were marked.
    pub async fn mark_interrupted(
        &self,
        settings: &Settings,
        rt: &tokio::runtime::Handle,
    ) -> Result<u64, ServiceError> {
        let rows = self
            .run(
                settings,
                rt,
                false,
                "WITH gone AS (UPDATE pgshift.deferred d SET state = 'interrupted', \
                 error = 'the session running it ended before it finished', updated = pg_catalog.now() \
                 WHERE d.state IN ('recorded', 'working') AND NOT EXISTS ( \
                   SELECT 1 FROM pg_catalog.pg_stat_activity a WHERE a.pid = d.backend_pid \
                   AND (d.backend_start IS NULL OR a.backend_start IS NULL OR a.backend_start = d.backend_start)) \
                 RETURNING 1) SELECT pg_catalog.count(*) FROM gone",
                &[],
            )
            .await?;
        Ok(rows
            .and_then(|r| r.first().map(|r| r.get::<_, i64>(0)))
            .unwrap_or(0) as u64)
    }

    /// Checks the schema again (something may have been added since it was
    /// checked; only a superuser could, but pgshift does not write on trust).
    pub async fn recheck(&self, settings: &Settings) {
        let mut state = self.state.lock().await;
        let State::Ready { client, .. } = &*state else {
            return;
        };
        let owner = &settings.config.upstream.service_user;
        schema::one_per_column(client, &self.database).await;
        if let Err(error) = schema::verify(client, owner, &self.database).await {
            *state = State::Failed {
                error,
                at: Instant::now(),
            };
        }
    }

    /// True when the book has a connection to a checked schema (periodic scans
    /// skip the others).
    pub fn is_ready(&self) -> bool {
        matches!(
            self.state.try_lock().as_deref(),
            Ok(State::Ready { .. }) | Err(_)
        )
    }

    /// Closes the connection if it has not been used for a while.
    pub async fn close_if_idle(&self) {
        let mut state = self.state.lock().await;
        let idle = match &*state {
            State::Ready { used, .. } | State::NoSchema { used, .. } => used.elapsed() > IDLE_CLOSE,
            _ => false,
        };
        if idle {
            *state = State::Closed;
        }
    }
}
