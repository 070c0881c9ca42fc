//! The DDL journal: every intercepted statement, its plan, each executed step with
//! timings and attempts, and the outcome. Written to the log at once and to
//! `pgshift.ddl_journal` in the target database by a background task, so the
//! client never waits for it.

use super::service::{self, Schemas};
use super::steps::StepReport;
use crate::server::Settings;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::mpsc;

#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub database: String,
    pub session_id: u64,
    pub user: String,
    pub statement: String,
    pub rule: String,
    pub policy: String,
    /// rewritten | warned | rejected | deferred | failed
    pub outcome: &'static str,
    pub steps: Vec<StepReport>,
    pub error: Option<String>,
    pub duration_ms: u64,
}

/// Sends entries to the writer task.
#[derive(Debug, Clone)]
pub struct Journal(mpsc::UnboundedSender<Entry>);

impl Journal {
    /// Starts the writer; `settings` gives it the upstream and the service credential.
    pub fn start(settings: Arc<arc_swap::ArcSwap<Settings>>, schemas: Arc<Schemas>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(write_all(rx, settings, schemas));
        Journal(tx)
    }

    pub fn record(&self, entry: Entry) {
        tracing::info!(
            target: "pgshift::ddl",
            database = %entry.database,
            session = entry.session_id,
            user = %entry.user,
            rule = %entry.rule,
            policy = %entry.policy,
            outcome = entry.outcome,
            steps = entry.steps.len(),
            duration_ms = entry.duration_ms,
            error = entry.error.as_deref().unwrap_or(""),
            statement = %entry.statement,
            "ddl"
        );
        let _ = self.0.send(entry);
    }
}

async fn write_all(
    mut rx: mpsc::UnboundedReceiver<Entry>,
    settings: Arc<arc_swap::ArcSwap<Settings>>,
    schemas: Arc<Schemas>,
) {
    let mut clients: HashMap<String, super::conn::Service> = HashMap::new();
    while let Some(entry) = rx.recv().await {
        let settings = settings.load_full();
        if let Err(e) = write_one(&entry, &settings, &schemas, &mut clients).await {
            clients.remove(&entry.database);
            tracing::warn!(error = %e, database = %entry.database, "could not write the DDL journal");
        }
    }
}

async fn write_one(
    entry: &Entry,
    settings: &Settings,
    schemas: &Schemas,
    clients: &mut HashMap<String, super::conn::Service>,
) -> Result<(), String> {
    schemas
        .ensure(settings, &entry.database)
        .await
        .map_err(|e| e.to_string())?;
    if !clients.contains_key(&entry.database) {
        let c = service::connect(settings, &entry.database)
            .await
            .map_err(|e| e.to_string())?;
        clients.insert(entry.database.clone(), c);
    }
    let client = &clients[&entry.database].0;
    let steps = serde_json::to_value(&entry.steps).unwrap_or_default();
    client
        .execute(
            "INSERT INTO pgshift.ddl_journal \
             (session_id, username, statement, rule, policy, outcome, steps, error, duration_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7::text::jsonb, $8, $9)",
            &[
                &(entry.session_id as i64),
                &entry.user,
                &entry.statement,
                &entry.rule,
                &entry.policy,
                &entry.outcome,
                &steps.to_string(),
                &entry.error,
                &(entry.duration_ms as i64),
            ],
        )
        .await
        .map_err(|e| service::db_reason(&e))?;
    Ok(())
}
