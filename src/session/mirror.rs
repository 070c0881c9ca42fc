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
use crate::engine::conn::{Conn, InBand};
use crate::sql::analysis::{analyze_shared, Verdict};
use crate::sql::ident::{literal, quote};
use crate::wire::backend::TxStatus;

/// The last lookup of a statement's table in this session.
#[derive(Debug, Default)]
pub(super) struct Lookup {
    /// `schema.name` as the statement wrote it (no schema: empty).
    name: (String, String),
    /// The table's oid, if the name means one, and whether the session reads
    /// text as pgshift does (UTF8, standard_conforming_strings on).
    found: Option<(Option<u32>, bool)>,
    /// The session's turn count after the write that looked it up last.
    turns: u64,
}

/// The held simple Query `sql`, rewritten to set a rollout's new column too;
/// None to send it as it is.
pub(super) async fn rewrite(
    s: &mut Established<'_>,
    shared: &Shared,
    settings: &Settings,
    sql: &str,
) -> Result<Option<String>, super::pump::PumpEnd> {
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
        .any(|t| t.repeats && contains_ignoring_case(sql, &t.name))
    {
        return Ok(None);
    }
    let analysis = match analyze_shared(sql, &settings.config.ddl.parse_limits()).await {
        Verdict::Parsed(a) => a,
        _ => return Ok(None),
    };
    let [only] = &analysis.statements[..] else {
        return Ok(None);
    };
    let Some(write) = &only.write else {
        return Ok(None);
    };
    if write.table.catalog.as_ref().is_some_and(|c| c != database) {
        return Ok(None);
    }
    let tables = running.repeats(database, &write.table.name);
    if !tables
        .iter()
        .any(|t| write.mirror(sql, &t.column, &t.new_column).is_some())
    {
        return Ok(None);
    }
    let schema = write.table.schema.clone().unwrap_or_default();
    let name = (schema, write.table.name.clone());
    let turns = s.up.scanner.turns;
    let known = match &s.lookup {
        Some(l) if l.name == name && l.turns == turns => l.found,
        _ => None,
    };
    let (oid, plain) = match known {
        Some(found) => found,
        None => {
            let found = look_up(s, &name).await?;
            s.lookup = Some(Lookup {
                name,
                found: Some(found),
                turns,
            });
            found
        }
    };
    if let Some(l) = &mut s.lookup {
        // This write is one more turn the lookup holds for.
        l.turns = turns + 1;
    }
    let Some(table) = tables.iter().find(|t| plain && Some(t.oid) == oid) else {
        return Ok(None);
    };
    let Some(rewritten) = write.mirror(sql, &table.column, &table.new_column) else {
        return Ok(None);
    };
    tracing::debug!(target: "pgshift::rollout", "write sets the new column too: {rewritten}");
    Ok(Some(rewritten))
}

/// The oid `name` means in the client's session now, and whether the session
/// reads text as pgshift does. Only the catalog is read.
async fn look_up(
    s: &mut Established<'_>,
    name: &(String, String),
) -> Result<(Option<u32>, bool), super::pump::PumpEnd> {
    let qualified = match name.0.is_empty() {
        true => quote(&name.1),
        false => format!("{}.{}", quote(&name.0), quote(&name.1)),
    };
    let sql = format!(
        "SELECT pg_catalog.to_regclass({})::pg_catalog.oid::pg_catalog.text, \
         pg_catalog.current_setting('client_encoding') OPERATOR(pg_catalog.=) 'UTF8' \
         AND pg_catalog.current_setting('standard_conforming_strings') OPERATOR(pg_catalog.=) 'on'",
        literal(&qualified)
    );
    let status = s.down.scanner.tx_status().unwrap_or_default();
    let unread = s.down.take_unforwarded();
    let mut io = InBand::new(&mut s.client, &mut s.server, unread, status, None);
    let reply = io.query(&sql).await;
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

fn contains_ignoring_case(text: &str, word: &str) -> bool {
    let (text, word) = (text.as_bytes(), word.as_bytes());
    !word.is_empty()
        && text
            .windows(word.len())
            .any(|w| w.eq_ignore_ascii_case(word))
}
