//! pgshift's own connections to each target database, with the service credential
//! (`upstream.service_user`, `upstream.service_password` or PGSHIFT_SERVICE_PASSWORD),
//! and the `pgshift` schema that holds the journal and deferred steps.

use super::conn::Service;
use crate::server::Settings;
use std::collections::HashSet;
use std::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("pgshift's service connection to database {database:?} as {user:?} failed: {reason}")]
    Connect {
        database: String,
        user: String,
        reason: String,
    },
    #[error("pgshift could not prepare its schema in database {database:?}: {reason}")]
    Schema { database: String, reason: String },
}

/// Opens a service connection to `database`; the connection task runs in the background.
pub async fn connect(settings: &Settings, database: &str) -> Result<Service, ServiceError> {
    let user = settings.config.upstream.service_user.clone();
    let fail = |reason: String| ServiceError::Connect {
        database: database.into(),
        user: user.clone(),
        reason,
    };
    let timeout = settings.config.connect_timeout();
    let connected =
        crate::net::upstream::connect(&settings.upstream, &settings.upstream_tls, timeout)
            .await
            .map_err(|e| fail(e.to_string()))?;
    let mut config = tokio_postgres::Config::new();
    config
        .user(&user)
        .dbname(database)
        .application_name("pgshift")
        .connect_timeout(timeout);
    let password = settings.config.service_password();
    if !password.is_empty() {
        config.password(password);
    }
    let (client, connection) = tokio::time::timeout(
        timeout,
        config.connect_raw(connected.stream, tokio_postgres::NoTls),
    )
    .await
    .map_err(|_| fail(format!("no answer within {} ms", timeout.as_millis())))?
    .map_err(|e| fail(db_reason(&e)))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "service connection ended");
        }
    });
    Ok(Service(client))
}

/// The server's own message when there is one (wrong password, missing role).
pub fn db_reason(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

const SCHEMA: &str = "
SELECT pg_advisory_xact_lock(hashtext('pgshift.schema'));
CREATE SCHEMA IF NOT EXISTS pgshift;
CREATE TABLE IF NOT EXISTS pgshift.ddl_journal (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    session_id bigint,
    username text,
    statement text NOT NULL,
    rule text,
    policy text,
    outcome text NOT NULL,
    steps jsonb NOT NULL DEFAULT '[]',
    error text,
    duration_ms bigint
);
CREATE TABLE IF NOT EXISTS pgshift.deferred (
    id bigserial PRIMARY KEY,
    created timestamptz NOT NULL DEFAULT now(),
    username text NOT NULL DEFAULT current_user,
    search_path text NOT NULL DEFAULT current_setting('search_path'),
    statement text NOT NULL,
    rule text NOT NULL,
    steps jsonb NOT NULL,
    state text NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'running', 'done', 'failed')),
    next_step int NOT NULL DEFAULT 0,
    error text,
    updated timestamptz
);
-- Application roles record deferred work inside their own transaction. A row runs
-- later as the role that inserted it (the trigger sets it; nobody can choose it),
-- so a row grants nothing its author could not do directly.
CREATE OR REPLACE FUNCTION pgshift.deferred_author() RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN
    NEW.username := current_user;
    NEW.state := 'pending';
    NEW.next_step := 0;
    NEW.error := NULL;
    RETURN NEW;
END
$f$;
DROP TRIGGER IF EXISTS deferred_author ON pgshift.deferred;
CREATE TRIGGER deferred_author BEFORE INSERT ON pgshift.deferred
    FOR EACH ROW EXECUTE FUNCTION pgshift.deferred_author();
GRANT USAGE ON SCHEMA pgshift TO PUBLIC;
GRANT INSERT (statement, rule, steps, search_path) ON pgshift.deferred TO PUBLIC;
GRANT USAGE ON SEQUENCE pgshift.deferred_id_seq TO PUBLIC;
";

/// Databases whose `pgshift` schema this process has checked.
#[derive(Debug, Default)]
pub struct Schemas(Mutex<HashSet<String>>);

impl Schemas {
    /// Creates the `pgshift` schema in `database` once per process.
    pub async fn ensure(&self, settings: &Settings, database: &str) -> Result<(), ServiceError> {
        if self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(database)
        {
            return Ok(());
        }
        let service = connect(settings, database).await?;
        service
            .0
            .batch_execute(&format!("BEGIN; {SCHEMA} COMMIT;"))
            .await
            .map_err(|e| ServiceError::Schema {
                database: database.into(),
                reason: db_reason(&e),
            })?;
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(database.to_string());
        Ok(())
    }

    /// Notes that `database` has the schema (a previous proxy created it).
    pub fn remember(&self, database: &str) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(database.to_string());
    }

    /// Databases known to have the schema (the deferred runner scans them).
    pub fn known(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }
}
