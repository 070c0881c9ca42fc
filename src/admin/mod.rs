//! The admin console: a small Postgres server on a side port (`admin.listen`,
//! default 127.0.0.1:6433) that operators reach with psql, built on the `pgwire`
//! crate's server API. SCRAM-SHA-256 for the configured user (`auth`); commands
//! are read by `commands` and answered from the live state (`rollouts`).

mod auth;
pub mod commands;
mod fill;
mod journal;
mod knobs;
mod listener;
mod rollouts;
pub mod scram;
mod start;
mod state;
pub mod table;

pub use auth::Secret;
pub use listener::Listener;
pub use rollouts::gauges as rollout_gauges;

use crate::context::Shared;
use async_trait::async_trait;
use auth::{Credentials, Failures, Gate, Login};
use commands::Command;
use futures::stream;
use futures::Sink;
use pgwire::api::auth::StartupHandler;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{DataRowEncoder, FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::ClientPortalStore;
use pgwire::api::{ClientInfo, PgWireServerHandlers, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use std::fmt::Debug;
use std::sync::Arc;
use table::{Answer, Cell, Failed, Kind, Table};

/// Runs `command` against the live state.
pub async fn answer(shared: &Shared, command: &Command) -> Result<Answer, Failed> {
    match command {
        Command::Help => Ok(Answer::Rows(Table {
            columns: vec![("command", Kind::Text), ("what", Kind::Text)],
            rows: commands::HELP
                .iter()
                .map(|(c, w)| vec![Cell::text(*c), Cell::text(*w)])
                .collect(),
        })),
        Command::Version => Ok(Answer::Rows(Table {
            columns: vec![("version", Kind::Text)],
            rows: vec![vec![Cell::text(format!(
                "pgshift {}",
                env!("CARGO_PKG_VERSION")
            ))]],
        })),
        Command::Rollouts => rollouts::list(shared).await,
        Command::Rollout(target) => rollouts::show(shared, target).await,
        Command::Request(what, target) => rollouts::request(shared, *what, target).await,
        Command::Throttle(target, rate) => rollouts::throttle(shared, target, *rate).await,
        Command::Batch(target, rows) => rollouts::batch(shared, target, *rows).await,
        Command::Start(start) => start::run(shared, start).await,
        Command::Fill(f) => fill::run(shared, f).await,
        Command::SessionSet => Ok(Answer::Done("SET".into())),
        Command::Config => Ok(knobs::show(shared)),
        Command::Clients => Ok(state::clients(shared)),
        Command::Stats => Ok(state::stats(shared)),
        Command::Rules => Ok(state::rules(shared)),
        Command::Ddl(limit) => journal::ddl(shared, *limit).await,
        Command::Deferred(limit) => journal::deferred(shared, *limit).await,
        Command::Set(key, value) => knobs::set(shared, key, value),
        Command::SetRule(rule, policy) => knobs::set_rule(shared, rule, policy),
        Command::Servers => Ok(state::servers(shared)),
        Command::Locks => Ok(state::locks()),
        Command::Blockers => Ok(state::blockers()),
        Command::Kill(id) => state::kill(shared, *id),
        Command::Reload => knobs::reload(shared),
        Command::Pause(db) => state::pause(shared, db.as_deref()).await,
        Command::Resume(db) => Ok(state::resume(shared, db.as_deref())),
        Command::Shutdown => {
            tracing::info!(target: "pgshift::admin", "shutdown requested from the console");
            // A moment later, so that this answer reaches the operator first.
            let shutdown = shared.shutdown.clone();
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                shutdown.cancel();
            });
            Ok(Answer::Done("SHUTDOWN".into()))
        }
    }
}

/// The console's handlers for one connection.
struct Console {
    shared: Arc<Shared>,
    credentials: Arc<Credentials>,
    failures: Arc<Failures>,
    login: Arc<Login>,
}

struct Queries {
    shared: Arc<Shared>,
    login: Arc<Login>,
}

impl Console {
    fn queries(&self) -> Arc<Queries> {
        Arc::new(Queries {
            shared: self.shared.clone(),
            login: self.login.clone(),
        })
    }
}

impl PgWireServerHandlers for Console {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.queries()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.queries()
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        Arc::new(Gate::new(
            self.credentials.clone(),
            self.failures.clone(),
            self.login.clone(),
        ))
    }
}

fn error(code: &str, message: String, hint: String) -> PgWireError {
    let mut info = ErrorInfo::new("ERROR".into(), code.into(), message);
    info.hint = Some(hint);
    PgWireError::UserError(Box::new(info))
}

/// The columns a command answers with (none: only a command tag).
fn columns(command: &Command) -> Vec<(&'static str, Kind)> {
    match command {
        Command::Help => vec![("command", Kind::Text), ("what", Kind::Text)],
        Command::Version => vec![("version", Kind::Text)],
        Command::Rollouts => rollouts::COLUMNS.to_vec(),
        Command::Rollout(_) | Command::Start(_) | Command::Fill(_) => {
            [rollouts::COLUMNS, rollouts::DETAIL].concat()
        }
        Command::Config => knobs::COLUMNS.to_vec(),
        Command::Clients => state::CLIENTS.to_vec(),
        Command::Stats => state::STATS.to_vec(),
        Command::Rules => state::RULES.to_vec(),
        Command::Servers => state::SERVERS.to_vec(),
        Command::Locks => state::LOCKS.to_vec(),
        Command::Blockers => state::BLOCKERS.to_vec(),
        Command::Ddl(_) => journal::DDL.to_vec(),
        Command::Deferred(_) => journal::DEFERRED.to_vec(),
        Command::Request(..)
        | Command::Throttle(..)
        | Command::Batch(..)
        | Command::SessionSet
        | Command::Set(..)
        | Command::SetRule(..)
        | Command::Shutdown
        | Command::Kill(_)
        | Command::Reload
        | Command::Pause(_)
        | Command::Resume(_) => Vec::new(),
    }
}

/// The fields of `columns`, in `format` (each column its own, or text).
fn fields(columns: &[(&'static str, Kind)], format: &Format) -> Vec<FieldInfo> {
    columns
        .iter()
        .enumerate()
        .map(|(i, (name, kind))| {
            let ty = match kind {
                Kind::Text => Type::TEXT,
                Kind::Int => Type::INT8,
                Kind::Float => Type::FLOAT8,
                Kind::Bool => Type::BOOL,
            };
            FieldInfo::new(name.to_string(), None, None, ty, format.format_for(i))
        })
        .collect()
}

fn response(answer: Answer, format: &Format) -> PgWireResult<Response> {
    let table = match answer {
        Answer::Done(tag) => return Ok(Response::Execution(Tag::new(&tag))),
        Answer::Rows(table) => table,
    };
    let schema = Arc::new(fields(&table.columns, format));
    let mut encoder = DataRowEncoder::new(schema.clone());
    let mut rows = Vec::with_capacity(table.rows.len());
    for row in &table.rows {
        for (i, cell) in row.iter().enumerate() {
            match cell {
                Cell::Text(v) => encoder.encode_field(v)?,
                Cell::Int(v) => encoder.encode_field(v)?,
                // In text, as Postgres prints a float8 (100, not 100.0).
                Cell::Float(v) if format.is_text(i) => {
                    encoder.encode_field(&v.map(|f| f.to_string()))?
                }
                Cell::Float(v) => encoder.encode_field(v)?,
                Cell::Bool(v) => encoder.encode_field(v)?,
            }
        }
        rows.push(Ok(encoder.take_row()));
    }
    Ok(Response::Query(QueryResponse::new(
        schema,
        stream::iter(rows),
    )))
}

/// Runs a command for the simple or the extended protocol.
async fn run(shared: &Shared, command: &Command, format: &Format) -> PgWireResult<Response> {
    tracing::info!(target: "pgshift::admin", command = %command.for_log(), "admin command");
    let answer = answer(shared, command)
        .await
        .map_err(|f| error(&f.code, f.message, f.hint))?;
    response(answer, format)
}

/// Reads a Parse's text as a command (an error at Parse, as Postgres gives a
/// syntax error there); commands take no parameters.
#[derive(Debug)]
struct Parser {
    login: Arc<Login>,
}

#[async_trait]
impl QueryParser for Parser {
    type Statement = Command;

    async fn parse_sql<C>(
        &self,
        _client: &C,
        sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Command>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        if !self.login.authenticated() {
            return Err(Login::refused());
        }
        commands::parse(sql).map_err(|u| error("42601", u.message, u.hint))
    }

    fn get_parameter_types(&self, _stmt: &Command) -> PgWireResult<Vec<Type>> {
        Ok(Vec::new())
    }

    fn get_result_schema(
        &self,
        stmt: &Command,
        format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        Ok(fields(
            &columns(stmt),
            format.unwrap_or(&Format::UnifiedText),
        ))
    }
}

#[async_trait]
impl ExtendedQueryHandler for Queries {
    type Statement = Command;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Parser> {
        Arc::new(Parser {
            login: self.login.clone(),
        })
    }

    async fn do_query<C>(
        &self,
        _client: &mut C,
        portal: &Portal<Command>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Command>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if !self.login.authenticated() {
            return Err(Login::refused());
        }
        run(
            &self.shared,
            &portal.statement.statement,
            &portal.result_column_format,
        )
        .await
    }
}

#[async_trait]
impl SimpleQueryHandler for Queries {
    async fn do_query<C>(&self, _client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        if !self.login.authenticated() {
            return Err(Login::refused());
        }
        let command = commands::parse(query).map_err(|u| error("42601", u.message, u.hint))?;
        Ok(vec![
            run(&self.shared, &command, &Format::UnifiedText).await?,
        ])
    }
}
