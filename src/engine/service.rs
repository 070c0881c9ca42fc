//! pgshift's own connections to each target database, with the service credential
//! (`upstream.service_user`, `upstream.service_password` or PGSHIFT_SERVICE_PASSWORD).
//! They run only pgshift's bookkeeping (the journal, the state of deferred work) and
//! trust nothing in the database they did not make themselves: the search_path is
//! pinned in the startup packet, which beats `ALTER DATABASE/ROLE … SET`, every name
//! is schema-qualified, and every statement runs under a statement and lock timeout.

use crate::context::Settings;
use std::time::Duration;
use tokio_postgres::Client;

/// Longest any one bookkeeping statement may run.
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a bookkeeping statement waits for a lock (pgshift's own tables only).
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(2);

/// Settings sent in the startup packet: a session default nobody in the database
/// can override. `pg_temp` is listed last so a temporary table cannot shadow a name.
/// Values read back as text and sent again as parameters (a rollout's keys) must
/// come back exact whatever the database or role sets: every float digit, ISO
/// dates, one time zone. No JIT: pgshift's catalog queries are many small
/// joins whose estimates can pass jit_above_cost, and compiling one costs
/// about 100 ms (inside a batch's or a lock window's transaction). No default
/// tablespace: what pgshift builds lands where it says (a database's
/// `default_tablespace = pg_default` would make a partitioned index fail with
/// "cannot specify default tablespace for partitioned relations").
const OPTIONS: &str =
    "-c search_path=pg_catalog,pg_temp -c check_function_bodies=on -c statement_timeout=10000 -c jit=off \
     -c lock_timeout=2000 -c idle_in_transaction_session_timeout=60000 \
     -c idle_session_timeout=0 -c default_transaction_read_only=off \
     -c extra_float_digits=3 -c DateStyle=ISO -c IntervalStyle=postgres -c TimeZone=UTC \
     -c standard_conforming_strings=on -c quote_all_identifiers=off -c default_tablespace=";

#[derive(Debug, Clone, thiserror::Error)]
pub enum ServiceError {
    #[error("pgshift's service connection to database {database:?} as {user:?} failed: {reason}")]
    Connect {
        database: String,
        user: String,
        reason: String,
    },
    #[error("pgshift refuses to use its schema in database {database:?}: {reason}")]
    Refused { database: String, reason: String },
    #[error("pgshift could not prepare its schema in database {database:?}: {reason}")]
    Schema { database: String, reason: String },
    #[error("pgshift's bookkeeping in database {database:?} failed: {reason}")]
    Query { database: String, reason: String },
}

impl ServiceError {
    /// The HINT a client gets with the 58000 this error becomes.
    pub fn hint(&self) -> &'static str {
        match self {
            ServiceError::Connect { .. } => {
                "pgshift needs its service connection to defer work: check upstream.service_user and PGSHIFT_SERVICE_PASSWORD."
            }
            ServiceError::Refused { .. } => {
                "Schema pgshift must belong to pgshift's service role and hold only what pgshift created there. Drop or rename the foreign schema, or see the README's security model."
            }
            ServiceError::Schema { .. } | ServiceError::Query { .. } => {
                "pgshift could not write its bookkeeping in this database; the log says why. Run the statement outside a transaction block, or retry."
            }
        }
    }
}

/// Opens a service connection to `database`. Its connection task runs on `rt`
/// (the accepting thread's runtime), whoever asks.
pub async fn connect(
    settings: &Settings,
    database: &str,
    rt: &tokio::runtime::Handle,
) -> Result<Client, ServiceError> {
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
        .options(OPTIONS)
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
    rt.spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "service connection ended");
        }
    });
    // `ALTER ROLE … SET role` or a database default could make the connection act
    // as someone else; pgshift writes only as the role it logged in as.
    let who = query(
        &client,
        "SELECT current_user::text, session_user::text, pg_catalog.current_setting('search_path'), \
                pg_catalog.current_setting('default_tablespace')",
        &[],
    )
    .await
    .map_err(|e| fail(e.reason))?;
    let row = who.first().ok_or_else(|| fail("no answer".into()))?;
    let (current, session, path, space): (String, String, String, String) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    if current != session || path.replace(' ', "") != "pg_catalog,pg_temp" || !space.is_empty() {
        return Err(ServiceError::Refused {
            database: database.into(),
            reason: format!(
                "the service connection runs as {current:?} (logged in as {session:?}) with search_path {path:?} and default_tablespace {space:?}; a role or database setting overrides pgshift's"
            ),
        });
    }
    Ok(client)
}

/// A bookkeeping query, bounded here too in case the server stops answering.
/// The error says whether the connection is still usable.
pub async fn query(
    client: &Client,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Vec<tokio_postgres::Row>, QueryError> {
    let limit = STATEMENT_TIMEOUT + Duration::from_secs(2);
    match tokio::time::timeout(limit, client.query(sql, params)).await {
        Ok(Ok(rows)) => Ok(rows),
        Ok(Err(e)) => Err(QueryError {
            reason: db_reason(&e),
            broken: e.as_db_error().is_none(),
        }),
        Err(_) => Err(QueryError {
            reason: format!("no answer within {} s", limit.as_secs()),
            broken: true,
        }),
    }
}

/// Why a bookkeeping query failed.
#[derive(Debug, Clone)]
pub struct QueryError {
    pub reason: String,
    /// The connection is gone or hung: open a new one.
    pub broken: bool,
}

/// The server's own message when there is one (wrong password, missing role).
pub fn db_reason(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}
