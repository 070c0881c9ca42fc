//! `ROLLOUT START [<schema>.]<table>.<column> TYPE <type> [USING <expr>] [IN <database>]`:
//! the console starts the same online rollout an intercepted `ALTER COLUMN … TYPE`
//! starts. What the operator typed becomes one `ALTER TABLE … ALTER COLUMN … TYPE …`
//! statement with the names quoted; Postgres' own parser must read it as exactly
//! that one statement (a `;` and a second statement, a subquery or anything else is
//! refused before a connection is opened). The probe and the expand then run on a
//! connection of their own as the service role, whose search_path is pinned: the
//! type and the USING expression resolve to built-in objects or the start is
//! refused, as for a client's ALTER.

use super::commands::Unknown;
use super::table::{Answer, Failed};
use crate::context::Shared;
use crate::engine::side::SideConn;
use crate::engine::steps::{Failure, StepContext};
use crate::engine::SessionCx;
use crate::sql::ident::{qualified, quote};
use crate::sql::plan::StepKind;
use std::sync::atomic::{AtomicU64, Ordering};

/// `ROLLOUT START` as typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Start {
    /// None: `public`.
    pub schema: Option<String>,
    pub table: String,
    pub column: String,
    /// `<type> [USING <expr>]`, as typed.
    pub change: String,
    pub database: Option<String>,
}

/// The longest `<type> [USING <expr>]` the console takes.
const MAX_CHANGE: usize = 8 * 1024;

fn unknown(message: impl Into<String>) -> Unknown {
    Unknown {
        message: message.into(),
        hint: "ROLLOUT START [<schema>.]<table>.<column> TYPE <type> [USING <expression>] [IN <database>]".into(),
    }
}

/// Reads `ROLLOUT START …`; None when the text is another command.
pub fn parse(text: &str) -> Option<Result<Start, Unknown>> {
    let rest = keyword(text.trim_start(), "ROLLOUT")?;
    let rest = keyword(rest, "START")?;
    Some(parse_start(rest))
}

/// `text` after `word` (any case) and the white space that must follow it.
pub(super) fn keyword<'a>(text: &'a str, word: &str) -> Option<&'a str> {
    let head = text.get(..word.len())?;
    let tail = &text[word.len()..];
    let spaced = tail.starts_with(|c: char| c.is_ascii_whitespace());
    (head.eq_ignore_ascii_case(word) && spaced).then(|| tail.trim_start())
}

/// `text` without the semicolons (and white space) it ends with.
pub(super) fn without_semicolons(text: &str) -> &str {
    let mut text = text.trim_end();
    while let Some(t) = text.strip_suffix(';') {
        text = t.trim_end();
    }
    text
}

/// A column's schema (None: not given), table and column.
pub(super) type ColumnName = (Option<String>, String, String);

/// A column named as `<table>.<column>` or `<schema>.<table>.<column>`, or
/// the message when it is not.
pub(super) fn column_name(names: &[String]) -> Result<ColumnName, &'static str> {
    match names {
        [t, c] => Ok((None, t.clone(), c.clone())),
        [s, t, c] => Ok((Some(s.clone()), t.clone(), c.clone())),
        _ => Err("name the column as <table>.<column> or <schema>.<table>.<column>"),
    }
}

fn parse_start(text: &str) -> Result<Start, Unknown> {
    let (names, rest) = name_chain(without_semicolons(text))?;
    let (schema, table, column) = column_name(&names).map_err(unknown)?;
    let change = keyword(rest.trim_start(), "TYPE")
        .ok_or_else(|| unknown("TYPE <type> must follow the column"))?;
    let (change, database) = split_in(change)?;
    if change.is_empty() {
        return Err(unknown("the new type is missing"));
    }
    if change.len() > MAX_CHANGE {
        return Err(unknown(format!(
            "the type and expression are longer than {MAX_CHANGE} bytes"
        )));
    }
    Ok(Start {
        schema,
        table,
        column,
        change: change.to_string(),
        database,
    })
}

/// Dotted names at the start of `text`: bare ones fold to lower case, quoted ones
/// keep their case (`""` for `"`). Returns them and what follows.
pub(super) fn name_chain(text: &str) -> Result<(Vec<String>, &str), Unknown> {
    let mut names = Vec::new();
    let mut rest = text;
    loop {
        let (name, after) = one_name(rest)?;
        names.push(name);
        match after.strip_prefix('.') {
            Some(next) if names.len() < 3 => rest = next,
            Some(_) => return Err(unknown("too many dotted names")),
            None => return Ok((names, after)),
        }
    }
}

fn one_name(text: &str) -> Result<(String, &str), Unknown> {
    let name_error = || unknown(format!("expected a name at {}", cut(text)));
    let (name, rest) = if let Some(inner) = text.strip_prefix('"') {
        let mut name = String::new();
        let mut chars = inner.char_indices();
        loop {
            match chars.next() {
                None => return Err(unknown("a double quote is not closed")),
                Some((i, '"')) if inner[i + 1..].starts_with('"') => {
                    name.push('"');
                    chars.next();
                }
                Some((i, '"')) => break (name, &inner[i + 1..]),
                Some((_, c)) => name.push(c),
            }
        }
    } else {
        let end = text
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$'))
            .unwrap_or(text.len());
        let name = &text[..end];
        if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit() || c == '$') {
            return Err(name_error());
        }
        // As Postgres folds a bare name in UTF-8: ASCII letters only.
        (name.to_ascii_lowercase(), &text[end..])
    };
    if name.is_empty() || name.len() > 63 {
        return Err(name_error());
    }
    Ok((name, rest))
}

/// A trailing `IN <database>` split off `text` (no expression ends that way).
pub(super) fn split_in(text: &str) -> Result<(&str, Option<String>), Unknown> {
    let text = text.trim_end();
    let token_start = if text.ends_with('"') && text.len() > 1 {
        // Back to the opening quote; `""` inside is one quote.
        let bytes = text.as_bytes();
        let mut k = bytes.len() - 1;
        loop {
            if k == 0 {
                return Ok((text, None));
            }
            k -= 1;
            if bytes[k] == b'"' {
                if k > 0 && bytes[k - 1] == b'"' {
                    k -= 1;
                } else {
                    break k;
                }
            }
        }
    } else {
        text.rfind(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$'))
            .map(|i| i + 1)
            .unwrap_or(0)
    };
    let token = &text[token_start..];
    let before = &text[..token_start];
    let Some(head) = before
        .strip_suffix(|c: char| c.is_ascii_whitespace())
        .map(str::trim_end)
    else {
        return Ok((text, None));
    };
    // Bytes: the two before the name may sit inside a character of several.
    let bytes = head.as_bytes();
    let is_in = bytes.len() >= 3
        && bytes[bytes.len() - 2..].eq_ignore_ascii_case(b"IN")
        && bytes[bytes.len() - 3].is_ascii_whitespace();
    if !is_in || token.is_empty() {
        return Ok((text, None));
    }
    let (database, rest) = one_name(token)?;
    if !rest.is_empty() {
        return Ok((text, None));
    }
    Ok((head[..head.len() - 2].trim_end(), Some(database)))
}

fn cut(text: &str) -> String {
    match text.char_indices().nth(40) {
        Some((i, _)) => format!("{:?}…", &text[..i]),
        None => format!("{text:?}"),
    }
}

/// Ids for the probe's temporary table of console starts, apart from sessions'.
static STARTS: AtomicU64 = AtomicU64::new(1 << 62);

/// Starts the rollout and answers with its row (SHOW ROLLOUT's).
pub async fn run(shared: &Shared, start: &Start) -> Result<Answer, Failed> {
    let settings = shared.settings.load_full();
    rollouts_on(&settings)?;
    let database = database(shared, start.database.as_deref())?;
    let table = qualified(start.schema.as_deref().unwrap_or("public"), &start.table);
    let sql = format!(
        "ALTER TABLE {table} ALTER COLUMN {} TYPE {}",
        quote(&start.column),
        start.change
    );
    let spec = spec_of(&sql).await?;
    let (mut side, timeouts) = side(shared, &settings, &database).await?;
    let user = format!("{} (console)", settings.config.admin.user);
    let (cx, step_cx) = contexts(shared, &settings, &database, &user, timeouts, &spec.table);
    let started = crate::rollout::start::start(&mut side, &cx, &step_cx, &spec, &sql)
        .await
        .map_err(failed)?;
    tracing::info!(target: "pgshift::rollout", rollout = started.id, database = %database, "console started rollout of {}", started.describe);
    let target = super::commands::Target {
        id: started.id,
        database: Some(database),
    };
    super::rollouts::show(shared, &target).await
}

/// Refuses a console command that starts a rollout while rollouts are off.
pub(super) fn rollouts_on(settings: &crate::context::Settings) -> Result<(), Failed> {
    match settings.config.rollout.enabled {
        true => Ok(()),
        false => Err(Failed::new(
            "55000",
            "online rollouts are off (rollout.enabled = false)",
            "SET rollout.enabled = on, or enable it in the config file.",
        )),
    }
}

/// The database named, or the one pgshift knows.
pub(super) fn database(shared: &Shared, named: Option<&str>) -> Result<String, Failed> {
    if let Some(db) = named {
        return Ok(db.to_string());
    }
    let mut known = shared.engine.books.databases();
    match known.len() {
        1 => Ok(known.remove(0)),
        0 => Err(Failed::new(
            "3D000",
            "pgshift has not seen a database yet: name one",
            "End the command with IN <database>.",
        )),
        _ => {
            known.sort();
            Err(Failed::new(
                "42702",
                format!("pgshift knows several databases: {}", known.join(", ")),
                "Name one: end the command with IN <database>.",
            ))
        }
    }
}

/// Who a console command's steps run as (`user`: the console's) and how: in a
/// session id of their own, the side connection's timeouts restored after each.
pub(super) fn contexts<'a>(
    shared: &'a Shared,
    settings: &'a crate::context::Settings,
    database: &'a str,
    user: &'a str,
    timeouts: (String, String),
    table: &'a str,
) -> (SessionCx<'a>, StepContext<'a>) {
    let cx = SessionCx {
        settings,
        engine: &shared.engine,
        database,
        user,
        session_id: STARTS.fetch_add(1, Ordering::Relaxed),
    };
    let step_cx = StepContext {
        ddl: &settings.config.ddl,
        saved_lock_timeout: timeouts.0,
        saved_statement_timeout: timeouts.1,
        table: Some(table),
        original: "",
    };
    (cx, step_cx)
}

/// A service connection to `database` for a console command that runs steps
/// there, with its lock and statement timeouts (the steps restore them).
pub(super) async fn side(
    shared: &Shared,
    settings: &crate::context::Settings,
    database: &str,
) -> Result<(SideConn, (String, String)), Failed> {
    let rt = shared.engine.books.runtime().clone();
    let client = crate::engine::service::connect(settings, database, &rt)
        .await
        .map_err(|e| Failed::new("08006", e.to_string(), e.hint()))?;
    let side = SideConn::new(client);
    let timeouts = side
        .client()
        .query_one(
            "SELECT pg_catalog.current_setting('lock_timeout'), pg_catalog.current_setting('statement_timeout')",
            &[],
        )
        .await
        .map_err(|e| Failed::new("08006", crate::engine::service::db_reason(&e), "pgshift's service connection failed; the log says why."))?;
    Ok((side, (timeouts.get(0), timeouts.get(1))))
}

/// The rollout `sql` asks for, read by Postgres' parser: one statement, one type
/// change, nothing else.
async fn spec_of(sql: &str) -> Result<crate::rollout::Spec, Failed> {
    let text = sql.to_string();
    let parsed =
        crate::sql::parser::submit(sql.len(), move || crate::sql::analysis::analyze(&text))
            .map_err(|e| {
                Failed::new(
                    "53000",
                    format!("pgshift's parser is unavailable: {e}"),
                    "Try again in a moment.",
                )
            })?
            .await
            .map_err(|e| {
                Failed::new(
                    "XX000",
                    format!("pgshift's parser failed: {e}"),
                    "The log says why.",
                )
            })?;
    let not_one = || {
        Failed::new(
            "42601",
            "ROLLOUT START takes one type and an optional USING expression, nothing more",
            "ROLLOUT START [<schema>.]<table>.<column> TYPE <type> [USING <expression>] [IN <database>]",
        )
    };
    let analysis = parsed.map_err(|e| {
        Failed::new(
            "42601",
            format!("ROLLOUT START: {e}"),
            "The type and the USING expression are read as in ALTER TABLE … ALTER COLUMN … TYPE.",
        )
    })?;
    let [statement] = analysis.statements.as_slice() else {
        return Err(not_one());
    };
    let kind = statement
        .finding
        .as_ref()
        .and_then(|f| f.rewrite.as_ref())
        .filter(|plan| plan.steps.len() == 1)
        .map(|plan| plan.steps[0].kind.clone());
    match kind {
        Some(StepKind::Rollout {
            table,
            column,
            target,
            using,
        }) => Ok(crate::rollout::Spec {
            table,
            column,
            target,
            using,
        }),
        Some(StepKind::TypeChange {
            table,
            column,
            target,
            ..
        }) => Ok(crate::rollout::Spec {
            table,
            column,
            target,
            using: None,
        }),
        _ => Err(not_one()),
    }
}

/// A failed start as the console reports it: the server's or pgshift's SQLSTATE.
pub(super) fn failed(f: Failure) -> Failed {
    let (code, message, hint) = match f {
        Failure::Server(e) => (e.code, e.message, e.hint.unwrap_or_default()),
        Failure::Ours(e) => (
            e.code.to_string(),
            e.message.clone(),
            e.hint.clone().unwrap_or_default(),
        ),
        Failure::Io(e) => (
            "58000".into(),
            format!("the service connection failed: {e}"),
            "The log says why.".into(),
        ),
    };
    Failed::owned(code, message, hint)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start(text: &str) -> Start {
        parse(text).expect("a start").expect("parsed")
    }

    #[test]
    fn names_type_and_database_are_read() {
        let s = start("rollout start Orders.\"Amount\" type bigint;");
        assert_eq!(
            (
                s.schema,
                s.table.as_str(),
                s.column.as_str(),
                s.change.as_str(),
                s.database
            ),
            (None, "orders", "Amount", "bigint", None)
        );
        let s = start("ROLLOUT START app.orders.amount TYPE numeric(12, 2) USING amount / 100.0 IN \"Shop \"\"A\"\"\"");
        assert_eq!(s.schema.as_deref(), Some("app"));
        assert_eq!(s.change, "numeric(12, 2) USING amount / 100.0");
        assert_eq!(s.database.as_deref(), Some("Shop \"A\""));
        let s = start("ROLLOUT START t.c TYPE text USING c::text in shop");
        assert_eq!(
            (s.change.as_str(), s.database.as_deref()),
            ("text USING c::text", Some("shop"))
        );
        // IN inside the expression is the expression's.
        let s = start("ROLLOUT START t.c TYPE int USING CASE WHEN c IN (1, 2) THEN 1 END");
        assert_eq!(s.database, None);
        assert!(parse("ROLLOUT PAUSE 1").is_none());
        // Characters of several bytes where IN would stand.
        let s = start("ROLLOUT START t.c TYPE text€ x");
        assert_eq!((s.change.as_str(), s.database), ("text€ x", None));
        assert!(parse("ROLLOUT START t.c TYPE €€ in").is_some());
        assert!(parse("ROLLOUTSTART t.c TYPE int").is_none());
    }

    #[test]
    fn malformed_starts_are_refused() {
        for bad in [
            "ROLLOUT START t TYPE bigint",
            "ROLLOUT START a.b.c.d TYPE bigint",
            "ROLLOUT START t.c bigint",
            "ROLLOUT START t.c TYPE",
            "ROLLOUT START \"t.c TYPE bigint",
            "ROLLOUT START 1t.c TYPE bigint",
            "ROLLOUT START t.\"\" TYPE bigint",
        ] {
            assert!(parse(bad).expect("a start").is_err(), "{bad}");
        }
    }
}
