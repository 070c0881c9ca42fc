//! `ROLLOUT FILL [<schema>.]<table>.<column> [IN <database>]`: fills the NULLs of
//! a column that exists with its default, in the background, as the rollout of
//! an `ADD COLUMN … DEFAULT <volatile>` fills the rows of a column it adds: every
//! row whose column is NULL and whose row version is older than the command
//! gets the default, evaluated row by row (an UPDATE of such a row meanwhile
//! fills it through the trigger); rows written since keep what they hold. This
//! is the recovery for a fill whose deferred work was `interrupted` (the proxy
//! died between the block's COMMIT and the fill's start), and a way to fill a
//! column whose default was set after it was added.
//!
//! The default runs as pgshift's service role, so it is read from the catalog
//! and refused unless it calls only built-in functions and operators (plus the
//! clocks, `random()` and `gen_random_uuid()`) before anything evaluates it.

use super::commands::Unknown;
use super::start::{
    column_name, contexts, database, failed, keyword, name_chain, rollouts_on, side, split_in,
    without_semicolons,
};
use super::table::{Answer, Failed};
use crate::context::Shared;
use crate::rollout::fill::{self, Fill};
use crate::sql::ident::{qualified, quote};
use crate::sql::plan::OnlineFill;

/// `ROLLOUT FILL` as typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FillColumn {
    /// None: `public`.
    pub schema: Option<String>,
    pub table: String,
    pub column: String,
    pub database: Option<String>,
}

const USAGE: &str = "ROLLOUT FILL [<schema>.]<table>.<column> [IN <database>]";

fn unknown(message: impl Into<String>) -> Unknown {
    Unknown {
        message: message.into(),
        hint: USAGE.into(),
    }
}

/// Reads `ROLLOUT FILL …`; None when the text is another command.
pub fn parse(text: &str) -> Option<Result<FillColumn, Unknown>> {
    let rest = keyword(text.trim_start(), "ROLLOUT")?;
    let rest = keyword(rest, "FILL")?;
    Some(parse_fill(without_semicolons(rest)))
}

fn parse_fill(text: &str) -> Result<FillColumn, Unknown> {
    let (names, database) = split_in(text)?;
    let (names, after) = name_chain(names.trim())?;
    if !after.trim().is_empty() {
        return Err(unknown(format!(
            "unexpected {:?} after the column",
            after.trim()
        )));
    }
    let (schema, table, column) = column_name(&names).map_err(unknown)?;
    Ok(FillColumn {
        schema,
        table,
        column,
        database,
    })
}

/// The table and column as the service connection sees them, in one snapshot
/// (nothing in it is evaluated): the table's oid, whether the column is there,
/// its type, its default as printed with the pinned search_path, generated,
/// NOT NULL, whether its type is not built in, whether a foreign key covers it
/// (filling it would run the key's check, which plans a query on the other
/// table as its owner), and what in the default the background may not
/// evaluate ([`fill::unfit_query`]).
fn column_query(table: &str, column: &str) -> String {
    format!(
        "
SELECT c.oid::pg_catalog.oid::pg_catalog.text, a.attnum IS NOT NULL,
       pg_catalog.format_type(a.atttypid, a.atttypmod),
       pg_catalog.pg_get_expr(d.adbin, d.adrelid), a.attgenerated OPERATOR(pg_catalog.<>) '', a.attnotnull,
       a.atttypid OPERATOR(pg_catalog.>=) 16384::pg_catalog.oid,
       EXISTS (SELECT 1 FROM pg_catalog.pg_constraint k WHERE k.conrelid OPERATOR(pg_catalog.=) c.oid
                  AND k.contype OPERATOR(pg_catalog.=) 'f' AND a.attnum OPERATOR(pg_catalog.=) ANY (k.conkey)),
       ARRAY({unfit})
  FROM (SELECT pg_catalog.to_regclass($1::pg_catalog.text) AS oid) c
  LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) c.oid
       AND a.attname OPERATOR(pg_catalog.=) $2::pg_catalog.text::pg_catalog.name
       AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped
  LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid OPERATOR(pg_catalog.=) a.attrelid AND d.adnum OPERATOR(pg_catalog.=) a.attnum
 WHERE c.oid IS NOT NULL",
        unfit = fill::unfit_query(table, column)
    )
}

/// Starts the fill and answers with its row (SHOW ROLLOUT's).
pub async fn run(shared: &Shared, fill: &FillColumn) -> Result<Answer, Failed> {
    let settings = shared.settings.load_full();
    rollouts_on(&settings)?;
    let database = database(shared, fill.database.as_deref())?;
    let table = qualified(fill.schema.as_deref().unwrap_or("public"), &fill.table);
    let column = quote(&fill.column);
    let (mut side, timeouts) = side(shared, &settings, &database).await?;
    // The server's own error where it gave one (a schema the service role may
    // not use, a timeout), else the connection's.
    let service = |e: tokio_postgres::Error| match e.as_db_error() {
        Some(db) => Failed::owned(
            db.code().code().to_string(),
            db.message().to_string(),
            db.hint()
                .unwrap_or("pgshift reads the table's catalog through its service connection.")
                .to_string(),
        ),
        None => Failed::new(
            "08006",
            crate::engine::service::db_reason(&e),
            "pgshift's service connection failed; the log says why.",
        ),
    };
    let row = side
        .client()
        .query_opt(&column_query(&table, &fill.column), &[&table, &fill.column])
        .await
        .map_err(service)?
        .ok_or_else(|| {
            Failed::owned(
                "42P01".into(),
                format!("relation {table} does not exist"),
                "Name the table as <schema>.<table> (public when omitted).".into(),
            )
        })?;
    let (oid, exists): (String, bool) = (row.get(0), row.get(1));
    if !exists {
        return Err(Failed::owned(
            "42703".into(),
            format!("column {column} of relation {table} does not exist"),
            "A name in mixed case is written in double quotes (\"Token\").".into(),
        ));
    }
    let (type_sql, default, generated, not_null): (String, Option<String>, bool, bool) =
        (row.get(2), row.get(3), row.get(4), row.get(5));
    let (foreign_type, keyed, unfit): (bool, bool, Vec<String>) =
        (row.get(6), row.get(7), row.get(8));
    let refuse = |message: String, hint: &str| Failed::owned("55000".into(), message, hint.into());
    if generated {
        return Err(refuse(
            format!("{table}.{column} is a generated column: Postgres computes it"),
            "Only a column with a default can be filled.",
        ));
    }
    if not_null {
        return Err(refuse(
            format!("{table}.{column} is NOT NULL: no row of it is NULL"),
            "Nothing to fill.",
        ));
    }
    let Some(value) = default else {
        return Err(refuse(
            format!("{table}.{column} has no default to fill it with"),
            "Set one first: ALTER TABLE … ALTER COLUMN … SET DEFAULT ….",
        ));
    };
    // Read, not run: what the service role may not evaluate is refused here,
    // and the fill evaluates the text read with it, never the live default.
    let not_ours = |what: String| {
        Failed::owned(
            "42501".into(),
            format!("pgshift cannot fill {table}.{column} as its service role: {what}"),
            "Only built-in functions, operators and types (and random(), gen_random_uuid() and the clocks) run in the background. Fill it yourself in batches: UPDATE … SET … = DEFAULT WHERE … IS NULL AND <a key range>.".into(),
        )
    };
    if foreign_type {
        return Err(not_ours(format!("its type {type_sql} is not built in")));
    }
    if keyed {
        return Err(not_ours(
            "a foreign key covers it (filling it would run the key's check on the other table)"
                .into(),
        ));
    }
    if !unfit.is_empty() {
        return Err(not_ours(format!("its default: {}", unfit.join("; "))));
    }
    let book = shared.engine.books.get(&database);
    let rt = shared.engine.books.runtime().clone();
    let under_way = book
        .service_query(
            &settings,
            &rt,
            "SELECT id FROM pgshift.rollouts WHERE table_oid = $1::text::oid AND phase NOT IN ('finished', 'rolled_back') ORDER BY id LIMIT 1",
            &[&oid],
        )
        .await
        .map_err(|e| Failed::new("58000", e.to_string(), e.hint()))?;
    if let Some(r) = under_way.first() {
        let id: i64 = r.get(0);
        return Err(Failed::owned(
            "55006".into(),
            format!("rollout {id} is under way on {table}"),
            "Let it end (or roll it back) first: SHOW ROLLOUT <id>.".into(),
        ));
    }
    let user = format!("{} (console)", settings.config.admin.user);
    let (cx, step_cx) = contexts(shared, &settings, &database, &user, timeouts, &table);
    let oid_number: u32 = oid.parse().map_err(|_| {
        refuse(
            format!("{table}'s oid did not read as a number"),
            "The log says why.",
        )
    })?;
    let online = OnlineFill {
        column: fill.column.clone(),
        type_sql,
        value,
    };
    let spec = fill::FillSpec {
        table: &table,
        online: &online,
        add: "",
        set_default: "",
        exists: true,
        known_oid: Some(oid_number),
    };
    let statement = format!("ROLLOUT FILL {table}.{column}");
    let started = match fill::start(&mut side, &cx, &step_cx, &spec, &statement)
        .await
        .map_err(failed)?
    {
        Fill::Started(started) => started,
        Fill::InBand(why) => {
            return Err(refuse(
                format!("pgshift cannot fill {table}.{column} in the background: {why}"),
                "Fill it yourself in batches: UPDATE … SET … = DEFAULT WHERE … IS NULL AND <a key range>.",
            ))
        }
        Fill::AsWritten => {
            return Err(refuse(
                format!("the default of {table}.{column} did not read back as one to fill with"),
                "The log says why.",
            ))
        }
    };
    tracing::info!(target: "pgshift::rollout", rollout = started.id, database = %database, "console started the fill of {table}.{column}");
    let target = super::commands::Target {
        id: started.id,
        database: Some(database),
    };
    super::rollouts::show(shared, &target).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_database_are_read() {
        let f = parse("rollout fill Orders.\"Token\";").unwrap().unwrap();
        assert_eq!(
            (f.schema, f.table.as_str(), f.column.as_str(), f.database),
            (None, "orders", "Token", None)
        );
        let f = parse("ROLLOUT FILL app.\"My t\".c IN \"Shop \"\"A\"\"\"")
            .unwrap()
            .unwrap();
        assert_eq!(f.schema.as_deref(), Some("app"));
        assert_eq!(f.table, "My t");
        assert_eq!(f.database.as_deref(), Some("Shop \"A\""));
        assert!(parse("ROLLOUT START t.c TYPE int").is_none());
        assert!(parse("ROLLOUT FILLS t.c").is_none());
        for bad in [
            "ROLLOUT FILL t",
            "ROLLOUT FILL a.b.c.d",
            "ROLLOUT FILL t.c extra",
            "ROLLOUT FILL t.c; DROP TABLE t",
            "ROLLOUT FILL \"t.c",
            "ROLLOUT FILL t.c IN",
        ] {
            assert!(parse(bad).unwrap().is_err(), "{bad}");
        }
    }
}
