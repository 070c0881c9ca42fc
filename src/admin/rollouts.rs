//! The console's rollout commands: read `pgshift.rollouts` in every database
//! pgshift has seen, and write an operator's request there for whichever proxy
//! drives the rollout (`crate::rollout::request`'s SQL). Everything goes through
//! pgshift's service connection, with the id and values as parameters.

use super::commands::Target;
use super::table::{Answer, Cell, Failed, Kind, Table};
use crate::context::Shared;
use crate::rollout::{Request, REQUEST_SQL, THROTTLE_SQL};
use std::time::Duration;

/// What a row of `pgshift.rollouts` shows, with its age in seconds.
const LIST: &str =
    "SELECT id, schema_name, table_name, column_name, COALESCE(kind, 'type'), phase, \
     paused, request, rows_done, rows_total, rows_per_second, error, \
     GREATEST(EXTRACT(epoch FROM (now() - created)), 0)::float8, old_type, new_type, statement, \
     mismatches, replica_lag, driver \
     FROM pgshift.rollouts";

/// One rollout as the console shows it.
struct Shown {
    database: String,
    row: tokio_postgres::Row,
}

impl Shown {
    fn progress(&self) -> (Option<f64>, Option<f64>, Option<f64>) {
        let done: i64 = self.row.get(8);
        let total: Option<i64> = self.row.get(9);
        let age: f64 = self.row.get(12);
        let phase: String = self.row.get(5);
        let percent = total
            .filter(|t| *t > 0)
            .map(|t| (done as f64 * 100.0 / t as f64).min(100.0));
        let rate = (age > 0.0).then(|| done as f64 / age);
        let eta = match (phase.as_str(), total, rate) {
            ("backfilling", Some(t), Some(r)) if r > 0.0 => Some(((t - done).max(0) as f64) / r),
            _ => None,
        };
        let round = |v: f64| (v * 10.0).round() / 10.0;
        (percent.map(round), rate.map(round), eta.map(round))
    }

    fn cells(&self, detail: bool) -> Vec<Cell> {
        let r = &self.row;
        let text = |i: usize| Cell::Text(r.get::<_, Option<String>>(i));
        let (percent, rate, eta) = self.progress();
        let mut cells = vec![
            Cell::text(self.database.clone()),
            Cell::Int(Some(r.get(0))),
            Cell::text(format!(
                "{}.{}",
                r.get::<_, String>(1),
                r.get::<_, String>(2)
            )),
            text(3),
            text(4),
            text(5),
            Cell::Bool(Some(r.get(6))),
            text(7),
            Cell::Float(percent),
            Cell::Int(Some(r.get(8))),
            Cell::Int(r.get(9)),
            Cell::Float(rate),
            Cell::Float(eta),
            Cell::Int(Some(r.get(10))),
            text(11),
        ];
        if detail {
            cells.extend([
                text(13),
                text(14),
                text(15),
                Cell::Int(r.get(16)),
                Cell::Int(r.get(17)),
                text(18),
            ]);
        }
        cells
    }
}

pub const COLUMNS: &[(&str, Kind)] = &[
    ("database", Kind::Text),
    ("id", Kind::Int),
    ("table", Kind::Text),
    ("column", Kind::Text),
    ("kind", Kind::Text),
    ("phase", Kind::Text),
    ("paused", Kind::Bool),
    ("request", Kind::Text),
    ("progress_pct", Kind::Float),
    ("rows_done", Kind::Int),
    ("rows_total", Kind::Int),
    ("rows_per_s", Kind::Float),
    ("eta_s", Kind::Float),
    ("rate_limit", Kind::Int),
    ("error", Kind::Text),
];

pub const DETAIL: &[(&str, Kind)] = &[
    ("old_type", Kind::Text),
    ("new_type", Kind::Text),
    ("statement", Kind::Text),
    ("mismatches", Kind::Int),
    ("replica_lag_bytes", Kind::Int),
    ("driver", Kind::Text),
];

/// Longest the console waits for one database's answer.
const QUERY_WAIT: Duration = Duration::from_secs(10);

fn service_failed(database: &str, e: impl std::fmt::Display) -> Failed {
    Failed::new(
        "58000",
        format!("pgshift could not read the rollouts of database {database:?}: {e}"),
        "pgshift's service connection to that database failed; the log says why.",
    )
}

/// One query on `database`'s service connection, where pgshift's schema exists.
async fn query(
    shared: &Shared,
    database: &str,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Vec<tokio_postgres::Row>, Failed> {
    let settings = shared.settings.load_full();
    let books = &shared.engine.books;
    let book = books.get(database);
    let rt = books.runtime().clone();
    match tokio::time::timeout(QUERY_WAIT, book.scan_query(&settings, &rt, sql, params)).await {
        Ok(Ok(rows)) => Ok(rows),
        Ok(Err(e)) => Err(service_failed(database, e)),
        Err(_) => Err(service_failed(database, "no answer within 10 s")),
    }
}

/// Every rollout of every database pgshift has seen.
pub async fn list(shared: &Shared) -> Result<Answer, Failed> {
    let mut databases = shared.engine.books.databases();
    databases.sort();
    let mut rows = Vec::new();
    for database in databases {
        for row in query(shared, &database, &format!("{LIST} ORDER BY id"), &[]).await? {
            rows.push(
                Shown {
                    database: database.clone(),
                    row,
                }
                .cells(false),
            );
        }
    }
    Ok(Answer::Rows(Table {
        columns: COLUMNS.to_vec(),
        rows,
    }))
}

/// The rollout `target` names, in the one database that has it.
async fn find(shared: &Shared, target: &Target) -> Result<Shown, Failed> {
    let known = shared.engine.books.databases();
    let databases = match &target.database {
        Some(db) if known.contains(db) => vec![db.clone()],
        Some(db) => {
            return Err(Failed::new(
                "3D000",
                format!("pgshift has not seen database {db:?}"),
                "A database is known once a client connected to it through pgshift.",
            ))
        }
        None => known,
    };
    let mut found = Vec::new();
    for database in databases {
        let sql = format!("{LIST} WHERE id = $1");
        for row in query(shared, &database, &sql, &[&target.id]).await? {
            found.push(Shown {
                database: database.clone(),
                row,
            });
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(Failed::new(
            "42704",
            format!("there is no rollout {}", target.id),
            "SHOW ROLLOUTS lists them.",
        )),
        _ => {
            let mut names: Vec<String> = found.into_iter().map(|s| s.database).collect();
            names.sort();
            Err(Failed::new(
                "42702",
                format!(
                    "rollout id {} exists in several databases: {}",
                    target.id,
                    names.join(", ")
                ),
                format!("Name one: … {} IN <database>.", target.id),
            ))
        }
    }
}

/// One rollout in detail.
pub async fn show(shared: &Shared, target: &Target) -> Result<Answer, Failed> {
    let shown = find(shared, target).await?;
    Ok(Answer::Rows(Table {
        columns: [COLUMNS, DETAIL].concat(),
        rows: vec![shown.cells(true)],
    }))
}

/// Writes the operator's request for the proxy that drives the rollout.
pub async fn request(shared: &Shared, what: Request, target: &Target) -> Result<Answer, Failed> {
    let shown = find(shared, target).await?;
    let rows = query(
        shared,
        &shown.database,
        REQUEST_SQL,
        &[&target.id, &what.name()],
    )
    .await?;
    if rows.is_empty() {
        return Err(Failed::new(
            "55000",
            format!("rollout {} is over", target.id),
            "A finished or rolled back rollout takes no more requests.",
        ));
    }
    Ok(Answer::Done(format!(
        "ROLLOUT {}",
        what.name().to_ascii_uppercase()
    )))
}

/// Sets the backfill's rate limit.
pub async fn throttle(shared: &Shared, target: &Target, rate: i64) -> Result<Answer, Failed> {
    let shown = find(shared, target).await?;
    query(shared, &shown.database, THROTTLE_SQL, &[&target.id, &rate]).await?;
    Ok(Answer::Done("ROLLOUT THROTTLE".into()))
}
