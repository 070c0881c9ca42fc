//! A simple-Query INSERT or UPDATE that sets a column under rollout also sets
//! the new column to the same value, so the mirror trigger (guarded by a WHEN
//! clause) skips the row: the write costs what writing one more column costs.
//! The trigger stays the safety net: a statement pgshift leaves as it is, or
//! whose repeated value came out differently, is mirrored by it.
//!
//! The statement's table is found as the server finds it (the session's
//! search_path, in the client's session: one round trip); the lookup is kept
//! while the session sends nothing but such writes on that name.

use super::Established;
use crate::context::{Settings, Shared};
use crate::engine::conn::InBand;
use crate::rollout::Table;
use crate::sql::analysis::{analyze_shared, Verdict};
use crate::sql::ident::literal;
use crate::sql::sniff::contains_ignoring_case;
use crate::wire::backend::TxStatus;

/// The last lookup of a statement's table in this session.
#[derive(Debug, Default)]
pub(super) struct Lookup {
    /// `schema.name` as the statement wrote it (no schema: empty), and the new
    /// column the statement would set.
    key: (String, String, String),
    /// The table's oid, if the name means one, and whether the statement may
    /// set the new column (see [`look_up_sql`]).
    found: (Option<u32>, bool),
    /// The session's turn count after the write that looked it up last.
    turns: u64,
    /// The count of statements that may have changed what names mean, then.
    env: u64,
}

/// The held simple Query `sql` (or, `prepared`, the text of a held Parse),
/// rewritten to set a rollout's new column too, with the rollout's table; None
/// to send it as it is.
pub(super) async fn rewrite(
    s: &mut Established<'_>,
    shared: &Shared,
    settings: &Settings,
    sql: &str,
    prepared: bool,
) -> Result<Option<(crate::sql::writes::Mirrored, Table)>, super::pump::PumpEnd> {
    let status = s.down.scanner.tx_status().unwrap_or_default();
    // Backslashes read differently with standard_conforming_strings off.
    if status == TxStatus::Failed || sql.contains('\\') {
        return Ok(None);
    }
    let running = &shared.engine.rollouts;
    let database = &s.registered.info.database;
    if !running
        .tables(database)
        .iter()
        .any(|t| t.repeats && contains_ignoring_case(sql.as_bytes(), t.name.as_bytes()))
    {
        return Ok(None);
    }
    let write = match sql.len() <= crate::sql::writes::INLINE_MAX {
        true => crate::sql::writes::find(sql),
        false => match analyze_shared(sql, &settings.config.ddl.parse_limits()).await {
            Verdict::Parsed(a) => match &a.statements[..] {
                [only] => only.write.clone(),
                _ => None,
            },
            _ => None,
        },
    };
    let Some(write) = &write else {
        return Ok(None);
    };
    if write.table.catalog.as_ref().is_some_and(|c| c != database) {
        return Ok(None);
    }
    // A prepared statement's values may read its parameters: their repeat is
    // cast to the column's type.
    let cast = |t: &Table| match t.old_type.as_str() {
        "smallint" | "integer" | "bigint" if prepared => Some(t.old_type.clone()),
        _ => None,
    };
    let tables = running.repeats(database, &write.table.name);
    let Some(table) = tables.into_iter().find(|t| {
        write.table.schema.as_ref().is_none_or(|s| *s == t.schema)
            && write
                .mirrored(sql, &t.column, &t.new_column, cast(t).as_deref())
                .is_some()
    }) else {
        return Ok(None);
    };
    let key = (
        write.table.schema.clone().unwrap_or_default(),
        write.table.name.clone(),
        table.new_column.clone(),
    );
    if key.0.contains('\\') || key.1.contains('\\') || key.2.contains('\\') {
        return Ok(None);
    }
    let turns = s.up.scanner.turns;
    let env = s.up.scanner.env();
    let known = match &s.lookup {
        Some(l) if l.key == key && l.turns == turns && l.env == env => Some(l.found),
        _ => None,
    };
    let (oid, may) = match known {
        Some(found) => found,
        None => {
            let found = look_up(s, &key).await?;
            s.lookup = Some(Lookup {
                key,
                found,
                turns,
                env,
            });
            found
        }
    };
    // From here on, what may change the names is counted.
    s.up.scanner.watch_env(true, !s.mirrors.is_empty());
    match (&mut s.lookup, write.calls) {
        // This write is one more turn the lookup holds for, unless it may
        // change what names mean (a function such as set_config).
        (Some(l), false) => l.turns = turns + 1,
        _ => s.lookup = None,
    }
    if !may || oid != Some(table.oid) {
        return Ok(None);
    }
    let rewritten = write.mirrored(
        sql,
        &table.column,
        &table.new_column,
        cast(&table).as_deref(),
    );
    if let Some(m) = &rewritten {
        tracing::debug!(target: "pgshift::rollout", "write sets the new column too: {}", m.text);
    }
    Ok(rewritten.map(|m| (m, table)))
}

/// The oid the name means in the client's session now (a qualified name
/// without USAGE on its schema means none: the lookup must not fail the
/// client's transaction), and whether a statement may set the new column:
/// the session reads text as pgshift does (UTF8, standard_conforming_strings
/// on), pg_catalog comes first on its search_path (after pg_temp, which holds
/// no operators), and the user may insert into and update the new column (a
/// grant on the column alone does not cover it). Only the catalog is read.
fn look_up_sql(key: &(String, String, String)) -> String {
    let schema = format!("{}::pg_catalog.text", literal(&key.0));
    let name = format!("{}::pg_catalog.text", literal(&key.1));
    let column = format!("{}::pg_catalog.name", literal(&key.2));
    format!(
        "
WITH t AS (
  SELECT CASE WHEN {schema} OPERATOR(pg_catalog.=) '' THEN pg_catalog.to_regclass(pg_catalog.quote_ident({name}))::pg_catalog.oid
         ELSE (SELECT c.oid FROM pg_catalog.pg_class c
                 JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
                WHERE n.nspname OPERATOR(pg_catalog.=) {schema} AND c.relname OPERATOR(pg_catalog.=) {name}
                  AND pg_catalog.has_schema_privilege(n.oid, 'USAGE')) END AS oid)
SELECT t.oid::pg_catalog.text,
       pg_catalog.current_setting('client_encoding') OPERATOR(pg_catalog.=) 'UTF8'
   AND pg_catalog.current_setting('standard_conforming_strings') OPERATOR(pg_catalog.=) 'on'
   AND (SELECT u.s FROM pg_catalog.unnest(pg_catalog.current_schemas(true)) WITH ORDINALITY AS u(s, i)
         WHERE NOT pg_catalog.starts_with(u.s::pg_catalog.text, 'pg_temp_') ORDER BY u.i LIMIT 1)
       OPERATOR(pg_catalog.=) 'pg_catalog'
   AND COALESCE((SELECT pg_catalog.has_column_privilege(t.oid, a.attnum, 'INSERT')
                        AND pg_catalog.has_column_privilege(t.oid, a.attnum, 'UPDATE')
                   FROM pg_catalog.pg_attribute a
                  WHERE a.attrelid OPERATOR(pg_catalog.=) t.oid AND a.attname OPERATOR(pg_catalog.=) {column}
                    AND NOT a.attisdropped), false)
  FROM t"
    )
}

async fn look_up(
    s: &mut Established<'_>,
    key: &(String, String, String),
) -> Result<(Option<u32>, bool), super::pump::PumpEnd> {
    // Under pgshift's own statement and portal names (the client's unnamed
    // ones stay), its values as literals.
    let sql = look_up_sql(key);
    let status = s.down.scanner.tx_status().unwrap_or_default();
    let unread = s.down.take_unforwarded();
    let mut io = InBand::new(&mut s.client, &mut s.server, unread, status, None);
    let reply = super::statements::run(&mut io, &sql, &[]).await;
    let status = io.status;
    let unread = io.into_unread();
    let reply = reply.map_err(super::pump::PumpEnd::ServerIo)?;
    s.down
        .restore(unread)
        .map_err(super::pump::PumpEnd::ServerProtocol)?;
    s.down.scanner.set_tx_status(status);
    s.registered.info.set_tx_status(status);
    if reply.error.is_some() {
        return Ok((None, false));
    }
    let row = reply.rows.first();
    let cell = |i: usize| row.and_then(|r| r.get(i).cloned().flatten());
    Ok((
        cell(0).and_then(|o| o.parse().ok()),
        cell(1).as_deref() == Some("t"),
    ))
}
