//! SHOW DDL and SHOW DEFERRED: the DDL journal and the deferred jobs of every
//! database pgshift has seen, newest first, read at once through the service
//! connections (a database that does not answer is one row with its error).

use super::rollouts::{everywhere, null};
use super::table::{Answer, Cell, Failed, Kind, Table};
use crate::context::Shared;

/// A timestamptz as UTC text, whatever the connection's TimeZone.
macro_rules! utc {
    ($col:literal) => {
        concat!(
            "pg_catalog.to_char(",
            $col,
            " AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.MS') || '+00'"
        )
    };
}

/// Rows shown by default, and at most.
pub const LIMIT_DEFAULT: i64 = 50;
pub const LIMIT_MAX: i64 = 10_000;

/// Longest statement text shown.
const TEXT_MAX: i32 = 1000;

pub const DDL: &[(&str, Kind)] = &[
    ("database", Kind::Text),
    ("id", Kind::Int),
    ("at", Kind::Text),
    ("session_id", Kind::Int),
    ("user", Kind::Text),
    ("rule", Kind::Text),
    ("policy", Kind::Text),
    ("outcome", Kind::Text),
    ("duration_ms", Kind::Int),
    ("error", Kind::Text),
    ("statement", Kind::Text),
];

const DDL_SQL: &str = concat!(
    "SELECT id, ",
    utc!("at"),
    ", session_id, username, rule, policy, outcome, duration_ms, error, \
     pg_catalog.left(statement, $2) \
     FROM pgshift.ddl_journal ORDER BY at DESC, id DESC LIMIT $1"
);

pub const DEFERRED: &[(&str, Kind)] = &[
    ("database", Kind::Text),
    ("id", Kind::Int),
    ("created", Kind::Text),
    ("user", Kind::Text),
    ("rule", Kind::Text),
    ("state", Kind::Text),
    ("next_step", Kind::Int),
    ("steps", Kind::Int),
    ("updated", Kind::Text),
    ("error", Kind::Text),
    ("statement", Kind::Text),
];

const DEFERRED_SQL: &str = concat!(
    "SELECT id, ",
    utc!("created"),
    ", username, rule, state, next_step::int8, pg_catalog.jsonb_array_length(steps)::int8, ",
    utc!("updated"),
    ", error, pg_catalog.left(statement, $2) \
     FROM pgshift.deferred ORDER BY id DESC LIMIT $1"
);

/// One column of a row as a cell of `kind`.
fn cell(row: &tokio_postgres::Row, i: usize, kind: Kind) -> Cell {
    match kind {
        Kind::Int => Cell::Int(row.get(i)),
        _ => Cell::Text(row.get(i)),
    }
}

/// The newest `limit` rows of `sql` across databases, newest first by the
/// column at `at` (text in UTC sorts as time).
async fn newest(
    shared: &Shared,
    sql: &str,
    columns: &'static [(&'static str, Kind)],
    at: usize,
    limit: i64,
) -> Result<Answer, Failed> {
    let mut databases = shared.engine.books.databases();
    databases.sort();
    let mut rows = Vec::new();
    let mut failed = Vec::new();
    for (database, answer) in everywhere(shared, databases, sql, &[&limit, &TEXT_MAX]).await {
        match answer {
            Ok(found) => rows.extend(found.iter().map(|row| {
                let mut cells = vec![Cell::text(database.clone())];
                cells.extend(
                    columns[1..]
                        .iter()
                        .enumerate()
                        .map(|(i, (_, kind))| cell(row, i, *kind)),
                );
                cells
            })),
            Err(e) => {
                let mut cells: Vec<Cell> = columns.iter().map(|(_, k)| null(*k)).collect();
                cells[0] = Cell::text(database);
                let error = columns.iter().position(|(n, _)| *n == "error").unwrap_or(0);
                cells[error] = Cell::text(e.message);
                failed.push(cells);
            }
        }
    }
    rows.sort_by(|a, b| b[at].display().cmp(&a[at].display()));
    rows.truncate(limit as usize);
    failed.extend(rows);
    Ok(Answer::Rows(Table {
        columns: columns.to_vec(),
        rows: failed,
    }))
}

pub async fn ddl(shared: &Shared, limit: Option<i64>) -> Result<Answer, Failed> {
    let limit = limit.unwrap_or(LIMIT_DEFAULT).clamp(1, LIMIT_MAX);
    newest(shared, DDL_SQL, DDL, 2, limit).await
}

pub async fn deferred(shared: &Shared, limit: Option<i64>) -> Result<Answer, Failed> {
    let limit = limit.unwrap_or(LIMIT_DEFAULT).clamp(1, LIMIT_MAX);
    newest(shared, DEFERRED_SQL, DEFERRED, 2, limit).await
}
