//! The console's rollout commands: read `pgshift.rollouts` in every database
//! pgshift has seen, and write an operator's request there for whichever proxy
//! drives the rollout (`crate::rollout::request`'s SQL). Everything goes through
//! pgshift's service connection, with the id and values as parameters.

use super::commands::Target;
use super::table::{Answer, Cell, Failed, Kind, Table};
use crate::context::Shared;
use crate::rollout::{Request, BATCH_SQL, REQUEST_SQL, THROTTLE_SQL};
use std::time::Duration;

/// What a row of `pgshift.rollouts` shows, with its age in seconds.
const LIST: &str =
    "SELECT id, schema_name, table_name, column_name, COALESCE(kind, 'type'), phase, \
     paused, request, rows_done, rows_total, rows_per_second, error, \
     GREATEST(EXTRACT(epoch FROM (now() - created)), 0)::float8, old_type, new_type, statement, \
     mismatches, replica_lag, driver, batch_rows \
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
                Cell::Int(r.get(19)),
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
    ("batch_rows", Kind::Int),
];

/// Longest the console waits for one database's answer (all are asked at once).
const QUERY_WAIT: Duration = Duration::from_secs(3);

/// One query on `database`'s service connection, where pgshift's schema exists.
/// A read that fails says so; a write that gets no answer may have happened.
async fn query(
    shared: &Shared,
    database: &str,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    write: bool,
) -> Result<Vec<tokio_postgres::Row>, Failed> {
    let settings = shared.settings.load_full();
    let books = &shared.engine.books;
    let book = books.get(database);
    let rt = books.runtime().clone();
    let hint = "pgshift's service connection to that database failed; the log says why.";
    match tokio::time::timeout(QUERY_WAIT, book.scan_query(&settings, &rt, sql, params)).await {
        Ok(Ok(rows)) => Ok(rows),
        Ok(Err(e)) if write => Err(Failed::new(
            "58000",
            format!("pgshift could not write to database {database:?}: {e}"),
            hint,
        )),
        Ok(Err(e)) => Err(Failed::new(
            "58000",
            format!("pgshift could not read the rollouts of database {database:?}: {e}"),
            hint,
        )),
        Err(_) if write => Err(Failed::new(
            "58000",
            format!("database {database:?} gave no answer within {QUERY_WAIT:?}: the change may or may not have been made"),
            "SHOW ROLLOUT <id> tells what the rollout holds now.",
        )),
        Err(_) => Err(Failed::new(
            "58000",
            format!("pgshift could not read the rollouts of database {database:?}: no answer within {QUERY_WAIT:?}"),
            hint,
        )),
    }
}

/// Runs `sql` (a read) in each of `databases` at once; each answer or failure.
pub(super) async fn everywhere(
    shared: &Shared,
    databases: Vec<String>,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Vec<(String, Result<Vec<tokio_postgres::Row>, Failed>)> {
    let answers = futures::future::join_all(
        databases
            .iter()
            .map(|database| query(shared, database, sql, params, false)),
    )
    .await;
    databases.into_iter().zip(answers).collect()
}

/// Every rollout of every database pgshift has seen; a database that could not
/// be read is one row with only its name and the error.
pub async fn list(shared: &Shared) -> Result<Answer, Failed> {
    let mut databases = shared.engine.books.databases();
    databases.sort();
    let mut rows = Vec::new();
    let sql = format!("{LIST} ORDER BY id");
    for (database, answer) in everywhere(shared, databases, &sql, &[]).await {
        match answer {
            Ok(found) => rows.extend(found.into_iter().map(|row| {
                Shown {
                    database: database.clone(),
                    row,
                }
                .cells(false)
            })),
            Err(failed) => {
                let mut cells: Vec<Cell> = COLUMNS.iter().map(|(_, kind)| null(*kind)).collect();
                cells[0] = Cell::text(database);
                let last = cells.len() - 1;
                cells[last] = Cell::text(failed.message);
                rows.push(cells);
            }
        }
    }
    Ok(Answer::Rows(Table {
        columns: COLUMNS.to_vec(),
        rows,
    }))
}

/// The rollouts still under way, for /metrics, and how many databases could not
/// be read.
pub async fn gauges(shared: &Shared) -> (Vec<crate::metrics::RolloutGauge>, u64) {
    let databases = shared.engine.books.databases();
    let sql = format!("{LIST} WHERE phase NOT IN ('finished', 'rolled_back') ORDER BY id");
    let mut out = Vec::new();
    let mut unread = 0;
    for (database, answer) in everywhere(shared, databases, &sql, &[]).await {
        let Ok(rows) = answer else {
            unread += 1;
            continue;
        };
        for row in rows {
            let shown = Shown {
                database: database.clone(),
                row,
            };
            let (_, rate, _) = shown.progress();
            let r = &shown.row;
            out.push(crate::metrics::RolloutGauge {
                database: database.clone(),
                id: r.get::<_, i64>(0).to_string(),
                table: format!("{}.{}", r.get::<_, String>(1), r.get::<_, String>(2)),
                column: r.get(3),
                phase: r.get(5),
                rows_done: r.get(8),
                rows_total: r.get(9),
                rows_per_second: rate,
            });
        }
    }
    (out, unread)
}

pub(super) fn null(kind: Kind) -> Cell {
    match kind {
        Kind::Text => Cell::Text(None),
        Kind::Int => Cell::Int(None),
        Kind::Float => Cell::Float(None),
        Kind::Bool => Cell::Bool(None),
    }
}

/// The rollout `target` names, in the one database that has it. Without `IN`,
/// every database must answer: an unread one might hold the same id.
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
    let sql = format!("{LIST} WHERE id = $1");
    let mut found = Vec::new();
    let mut unread = Vec::new();
    for (database, answer) in everywhere(shared, databases, &sql, &[&target.id]).await {
        match answer {
            Ok(rows) => found.extend(rows.into_iter().map(|row| Shown {
                database: database.clone(),
                row,
            })),
            Err(failed) => unread.push(failed),
        }
    }
    if let Some(first) = unread.into_iter().next() {
        return Err(Failed::owned(
            first.code.into_owned(),
            first.message,
            format!(
                "Name the database that holds the rollout: … {} IN <database>.",
                target.id
            ),
        ));
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
        true,
    )
    .await?;
    if rows.is_empty() {
        return Err(over(target.id));
    }
    Ok(Answer::Done(format!(
        "ROLLOUT {}",
        what.name().to_ascii_uppercase()
    )))
}

/// Sets the backfill's rate limit.
pub async fn throttle(shared: &Shared, target: &Target, rate: i64) -> Result<Answer, Failed> {
    set(shared, target, THROTTLE_SQL, rate).await?;
    Ok(Answer::Done("ROLLOUT THROTTLE".into()))
}

/// Sets the most rows per backfill batch.
pub async fn batch(shared: &Shared, target: &Target, rows: i64) -> Result<Answer, Failed> {
    set(shared, target, BATCH_SQL, rows).await?;
    Ok(Answer::Done("ROLLOUT BATCH".into()))
}

/// Writes one number of the rollout's row with `sql` ($1 id, $2 value).
async fn set(shared: &Shared, target: &Target, sql: &str, value: i64) -> Result<(), Failed> {
    let shown = find(shared, target).await?;
    let rows = query(shared, &shown.database, sql, &[&target.id, &value], true).await?;
    if rows.is_empty() {
        return Err(over(target.id));
    }
    Ok(())
}

fn over(id: i64) -> Failed {
    Failed::new(
        "55000",
        format!("rollout {id} is over"),
        "A finished or rolled back rollout takes no more requests.",
    )
}
