//! Steps deferred until after a client's COMMIT. The row in `pgshift.deferred` is
//! inserted inside the client's own transaction, so it exists exactly when the
//! transaction committed: a ROLLBACK drops the deferred work with everything else.
//! After the session sees the transaction end it pokes this runner, which claims
//! rows with an advisory lock (several proxies can share a database) and runs the
//! steps on a service connection, recording progress in the row so a restarted
//! proxy resumes where it stopped.

use super::conn::Conn;
use super::service::{self, Schemas};
use super::steps::{self, Mode, StepContext};
use crate::server::Settings;
use crate::sql::ident::literal;
use crate::sql::plan::Step;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Advisory lock class for deferred rows (the row id is the second key).
const LOCK_CLASS: i32 = 0x7067_7368; // "pgsh"

/// How often databases with a pgshift schema are scanned for leftover work.
const SCAN_EVERY: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct Deferred(mpsc::UnboundedSender<String>);

impl Deferred {
    pub fn start(settings: Arc<arc_swap::ArcSwap<Settings>>, schemas: Arc<Schemas>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run_forever(rx, settings, schemas));
        Deferred(tx)
    }

    /// A session in `database` ended a transaction that deferred work.
    pub fn poke(&self, database: &str) {
        let _ = self.0.send(database.to_string());
    }
}

async fn run_forever(
    mut rx: mpsc::UnboundedReceiver<String>,
    settings: Arc<arc_swap::ArcSwap<Settings>>,
    schemas: Arc<Schemas>,
) {
    let mut tick = tokio::time::interval(SCAN_EVERY);
    loop {
        let databases = tokio::select! {
            db = rx.recv() => match db {
                Some(db) => vec![db],
                None => return,
            },
            _ = tick.tick() => schemas.known(),
        };
        for db in databases {
            let settings = settings.load_full();
            if let Err(e) = run_pending(&settings, &db).await {
                tracing::warn!(database = %db, error = %e, "deferred DDL steps could not run");
            }
        }
    }
}

/// Runs every committed, unclaimed deferred row in `database`.
pub async fn run_pending(settings: &Settings, database: &str) -> Result<(), String> {
    let mut conn = service::connect(settings, database)
        .await
        .map_err(|e| e.to_string())?;
    let pending = conn
        .query("SELECT id, search_path, steps::text, next_step, rule FROM pgshift.deferred WHERE state IN ('pending', 'running') ORDER BY id")
        .await
        .map_err(|e| e.to_string())?;
    if let Some(e) = pending.error {
        return Err(e.message);
    }
    for row in pending.rows {
        let v = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
        let (id, search_path, steps_json, next) = (v(0), v(1), v(2), v(3));
        let claim = format!("SELECT pg_try_advisory_lock({LOCK_CLASS}, {id}::int)");
        let claimed = conn.query(&claim).await.map_err(|e| e.to_string())?;
        if claimed.first_value() != Some("t") {
            continue;
        }
        let result = run_row(
            &mut conn,
            settings,
            &id,
            &search_path,
            &steps_json,
            &next,
            &v(4),
        )
        .await;
        let _ = conn
            .query(&format!(
                "SELECT pg_advisory_unlock({LOCK_CLASS}, {id}::int)"
            ))
            .await;
        result?;
    }
    Ok(())
}

async fn run_row<C: Conn>(
    conn: &mut C,
    settings: &Settings,
    id: &str,
    search_path: &str,
    steps_json: &str,
    next: &str,
    rule: &str,
) -> Result<(), String> {
    let steps: Vec<Step> = serde_json::from_str(steps_json).map_err(|e| e.to_string())?;
    let start: usize = next.parse().unwrap_or(0);
    let update =
        |set: String| format!("UPDATE pgshift.deferred SET {set}, updated = now() WHERE id = {id}");
    let io = |e: std::io::Error| e.to_string();
    conn.query(&update("state = 'running'".into()))
        .await
        .map_err(io)?;
    conn.query(&format!("SET search_path = {search_path}"))
        .await
        .map_err(io)?;
    let cx = StepContext {
        ddl: &settings.config.ddl,
        saved_lock_timeout: "0".into(),
        saved_statement_timeout: "0".into(),
        table: None,
    };
    for (i, step) in steps.iter().enumerate().skip(start) {
        tracing::info!(target: "pgshift::ddl", deferred = id, rule, step = i, sql = %step.sql, "running deferred step");
        match steps::run(conn, step, Mode::Autocommit, &cx).await {
            Ok(report) => {
                tracing::info!(target: "pgshift::ddl", deferred = id, step = i, ms = report.ms, attempts = report.attempts, "deferred step done");
                conn.query(&update(format!("next_step = {}", i + 1)))
                    .await
                    .map_err(io)?;
            }
            Err(failure) => {
                let why = super::failure_text(&failure);
                tracing::warn!(target: "pgshift::ddl", deferred = id, step = i, error = %why, "deferred step failed");
                conn.query(&update(format!(
                    "state = 'failed', error = {}",
                    literal(&why)
                )))
                .await
                .map_err(io)?;
                return Ok(());
            }
        }
    }
    conn.query(&update("state = 'done'".into()))
        .await
        .map_err(io)?;
    Ok(())
}
