//! Steps deferred until after a client's COMMIT. The row in `pgshift.deferred` is
//! inserted inside the client's own transaction, so it exists exactly when the
//! transaction committed: a ROLLBACK drops the deferred work with everything else.
//! After the session sees the transaction end it pokes this runner, which claims
//! rows with an advisory lock (several proxies can share a database) and runs the
//! steps on a service connection, recording progress in the row so a restarted
//! proxy resumes where it stopped.

use super::conn::{cell, Conn};
use super::service::{self, Schemas};
use super::steps::{self, Mode, StepContext};
use crate::server::Settings;
use crate::sql::ident::{self, literal};
use crate::sql::plan::Step;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Advisory lock class for deferred rows (the row id is the second key).
const LOCK_CLASS: i32 = 0x7067_7368; // "pgsh"

/// How often databases with a pgshift schema are scanned for leftover work.
const SCAN_EVERY: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct Deferred {
    tx: mpsc::UnboundedSender<String>,
    seen: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
}

impl Deferred {
    pub fn start(settings: Arc<arc_swap::ArcSwap<Settings>>, schemas: Arc<Schemas>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run_forever(rx, settings, schemas));
        Deferred {
            tx,
            seen: Default::default(),
        }
    }

    /// A session in `database` ended a transaction that deferred work.
    pub fn poke(&self, database: &str) {
        let _ = self.tx.send(database.to_string());
    }

    /// A session connected to `database`: the first time this process sees it,
    /// look for work a previous proxy left unfinished there.
    pub fn seen(&self, database: &str) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        // Checked before inserting: every connection passes here, and an insert
        // would allocate the name each time.
        if !seen.contains(database) {
            seen.insert(database.to_string());
            drop(seen);
            self.poke(database);
        }
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
            if let Err(e) = run_pending(&settings, &schemas, &db).await {
                tracing::warn!(database = %db, error = %e, "deferred DDL steps could not run");
            }
        }
    }
}

/// Runs every committed, unclaimed deferred row in `database`.
async fn run_pending(settings: &Settings, schemas: &Schemas, database: &str) -> Result<(), String> {
    let mut conn = service::connect(settings, database)
        .await
        .map_err(|e| e.to_string())?;
    let exists = checked(
        &mut conn,
        "SELECT to_regclass('pgshift.deferred') IS NOT NULL",
    )
    .await?;
    if exists.first_value() != Some("t") {
        return Ok(());
    }
    // Scanned on every tick from now on, so work reset to 'pending' is picked up.
    schemas.remember(database);
    let pending = checked(
        &mut conn,
        "SELECT id FROM pgshift.deferred WHERE state IN ('pending', 'running') ORDER BY id",
    )
    .await?;
    for row in pending.rows {
        let id: i64 = cell(&row, 0).parse().map_err(|_| "bad id")?;
        let key = format!("({LOCK_CLASS}::bigint << 32) + {id}");
        let claimed = checked(&mut conn, &format!("SELECT pg_try_advisory_lock({key})")).await?;
        if claimed.first_value() != Some("t") {
            continue;
        }
        let result = run_row(&mut conn, settings, id).await;
        let _ = conn
            .query(&format!("SELECT pg_advisory_unlock({key})"))
            .await;
        let _ = conn.query("RESET ROLE").await;
        result?;
    }
    Ok(())
}

/// Runs a query and turns a server error into Err.
async fn checked<C: Conn>(conn: &mut C, sql: &str) -> Result<super::conn::Reply, String> {
    let reply = conn.query(sql).await.map_err(|e| e.to_string())?;
    match &reply.error {
        Some(e) => Err(format!("{} ({})", e.message, e.code)),
        None => Ok(reply),
    }
}

/// Runs one claimed row from where it stopped, as the role that deferred it.
async fn run_row<C: Conn>(conn: &mut C, settings: &Settings, id: i64) -> Result<(), String> {
    // Read the row again under the lock: another proxy may have finished it.
    let row = checked(
        conn,
        &format!("SELECT state, next_step, username, search_path, steps::text, rule FROM pgshift.deferred WHERE id = {id}"),
    )
    .await?;
    if row.rows.is_empty() {
        return Ok(());
    }
    let v = |i: usize| row.cell(i);
    let (state, next, user, search_path, steps_json, rule) = (v(0), v(1), v(2), v(3), v(4), v(5));
    if state != "pending" && state != "running" {
        return Ok(());
    }
    let steps: Vec<Step> = serde_json::from_str(&steps_json).map_err(|e| e.to_string())?;
    let start: usize = next.parse().unwrap_or(0);
    let update =
        |set: String| format!("UPDATE pgshift.deferred SET {set}, updated = now() WHERE id = {id}");
    checked(conn, &update("state = 'running'".into())).await?;
    let prepare = format!(
        "SET ROLE {}; SELECT set_config('search_path', {}, false)",
        ident::quote(&user),
        literal(&search_path)
    );
    if let Err(why) = checked(conn, &prepare).await {
        let _ = conn.query("RESET ROLE").await;
        checked(
            conn,
            &update(format!("state = 'failed', error = {}", literal(&why))),
        )
        .await?;
        return Ok(());
    }
    let cx = StepContext {
        ddl: &settings.config.ddl,
        saved_lock_timeout: "0".into(),
        saved_statement_timeout: "0".into(),
        table: None,
    };
    for (i, step) in steps.iter().enumerate().skip(start) {
        tracing::info!(target: "pgshift::ddl", deferred = id, rule, step = i, sql = %step.sql, "running deferred step");
        let outcome = steps::run(conn, step, Mode::Autocommit, &cx).await;
        // The bookkeeping is pgshift's own: write it as the service role.
        let _ = conn.query("RESET ROLE").await;
        match outcome {
            Ok(report) => {
                tracing::info!(target: "pgshift::ddl", deferred = id, step = i, ms = report.ms, attempts = report.attempts, "deferred step done");
                checked(conn, &update(format!("next_step = {}", i + 1))).await?;
            }
            Err(failure) => {
                let why = super::failure_text(&failure);
                tracing::warn!(target: "pgshift::ddl", deferred = id, step = i, error = %why, "deferred step failed");
                checked(
                    conn,
                    &update(format!("state = 'failed', error = {}", literal(&why))),
                )
                .await?;
                return Ok(());
            }
        }
        checked(conn, &format!("SET ROLE {}", ident::quote(&user))).await?;
    }
    let _ = conn.query("RESET ROLE").await;
    checked(conn, &update("state = 'done'".into())).await?;
    Ok(())
}
