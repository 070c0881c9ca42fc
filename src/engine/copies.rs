//! `COPY t FROM STDIN` / `COPY t TO STDOUT` without a column list, on a table under
//! rollout: the table has a column more than the application knows of (the new
//! one; after the cutover the old one, where the column stood), so the statement
//! gets the list the application means, in its order. Everything else about the
//! statement stays as written; the pump then carries the data as for any COPY.

use super::conn::{Conn, InBand};
use super::{Outcome, SessionCx};
use crate::rollout::Table;
use crate::sql::analysis::{analyze_shared, ColumnChange, CopyTarget, Verdict};
use crate::sql::ident::quote;
use crate::wire::backend::PgError;
use std::io;
use tokio::io::{AsyncRead, AsyncWrite};

/// The table's columns in attnum order, as a COPY without a list takes them (no
/// generated columns), found as the COPY would find the table (the session's
/// search_path), in the client's session: only the catalog is read. Every
/// operator is pg_catalog's, by name: the session's search_path may hold the
/// client's own (an `=(oid, regclass)` in public would win over an implicit cast).
/// Each row also says whether the session reads text as pgshift does.
const COLUMNS: &str = "
SELECT c.oid::pg_catalog.text, a.attname::pg_catalog.text,
       pg_catalog.current_setting('client_encoding') OPERATOR(pg_catalog.=) 'UTF8'
       AND pg_catalog.current_setting('standard_conforming_strings') OPERATOR(pg_catalog.=) 'on'
  FROM pg_catalog.pg_class c
  JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) c.oid
 WHERE c.oid OPERATOR(pg_catalog.=) pg_catalog.to_regclass(
         CASE WHEN $1::pg_catalog.text OPERATOR(pg_catalog.=) '' THEN ''
              ELSE pg_catalog.quote_ident($1::pg_catalog.text) OPERATOR(pg_catalog.||) '.' END
         OPERATOR(pg_catalog.||) pg_catalog.quote_ident($2::pg_catalog.text))::pg_catalog.oid
   AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped
   AND a.attgenerated OPERATOR(pg_catalog.=) ''
 ORDER BY a.attnum";

/// The oid of the table `schema.name` (no schema: the session's search_path),
/// found in the client's session; operators named as in [`COLUMNS`].
const TABLE: &str = "
SELECT pg_catalog.to_regclass(
         CASE WHEN $1::pg_catalog.text OPERATOR(pg_catalog.=) '' THEN ''
              ELSE pg_catalog.quote_ident($1::pg_catalog.text) OPERATOR(pg_catalog.||) '.' END
         OPERATOR(pg_catalog.||) pg_catalog.quote_ident($2::pg_catalog.text))::pg_catalog.oid::pg_catalog.text";

/// Whether the table of rollouts has one under way on the table `oid`. The
/// process's registry follows it a moment behind: a rollout rolled back or
/// finished just now (the driver still validating what it put back, or another
/// proxy's) is still listed, and the refusal would name a rollout that is over.
/// When the table cannot be read, the registry is taken at its word.
async fn live_in_database(cx: &SessionCx<'_>, oid: u32) -> bool {
    match crate::rollout::start::live_rollout(cx, oid, None).await {
        Ok(live) => live.is_some(),
        Err(e) => {
            tracing::debug!(target: "pgshift::rollout", error = %e, "rollouts not read; the registry stands");
            true
        }
    }
}

/// The rollout under way on the table, if this process knows of one: a refusal
/// of a statement that adds, drops, renames or retypes its columns (a column
/// added now stands after pgshift's, and an INSERT by position loses its value
/// into pgshift's column; a renamed column breaks the mirror). A fill needs
/// less: only its own column left alone, and no rewrite (every row would get a
/// new version, and the fill would take old rows for the application's). A
/// partitioned table's partitions are neither attached nor detached, at any
/// level, during its rollout.
pub async fn column_change_refusal<C, S>(
    io: &mut InBand<'_, C, S>,
    cx: &SessionCx<'_>,
    change: &ColumnChange,
    by_name: bool,
) -> io::Result<Option<PgError>>
where
    C: AsyncWrite + Unpin + Send,
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let table = &change.table;
    // A partition's own columns Postgres keeps as the partitioned table's (it
    // refuses changes, in its words); attaching or detaching below it is ours.
    let below = change.partitions;
    let fill_breaks = |t: &Table| change.rewrites || change.columns.contains(&t.column);
    let mut guarded: Vec<(Table, bool)> = cx
        .engine
        .rollouts
        .tables(cx.database)
        .into_iter()
        .filter(|_| change.adds || change.partitions || !change.columns.is_empty())
        .map(|t| (t, false))
        .collect();
    let fills = cx.engine.rollouts.fills(cx.database);
    guarded.extend(fills.into_iter().filter(fill_breaks).map(|t| (t, true)));
    if guarded.is_empty() || table.catalog.as_deref().is_some_and(|c| c != cx.database) {
        return Ok(None);
    }
    let found = if by_name {
        // Earlier statements of the same Query may change the search_path or
        // rename tables before this one runs: any table under rollout of that
        // name counts.
        guarded.iter().find(|(t, _)| {
            t.name == table.name || below && t.partitions.iter().any(|(p, _)| *p == table.name)
        })
    } else {
        let schema = table.schema.clone().unwrap_or_default();
        let reply = io.query_params(TABLE, &[&schema, &table.name]).await?;
        let oid: Option<u32> = reply
            .rows
            .first()
            .and_then(|r| r.first().cloned().flatten())
            .and_then(|s| s.parse().ok());
        guarded.iter().find(|(t, _)| {
            oid.is_some_and(|oid| match below {
                true => t.covers(oid),
                false => t.oid == oid,
            })
        })
    };
    let Some((t, fill)) = found else {
        return Ok(None);
    };
    if !live_in_database(cx, t.oid).await {
        return Ok(None);
    }
    let error = match fill {
        // A partition attached now lacks pgshift's column (Postgres refuses
        // it); one detached keeps it, and leaves the mirror.
        false if change.partitions => PgError::error(
            "55006",
            format!(
                "{} is under an online rollout of its column {}: pgshift does not attach or detach its partitions until the rollout is finished or rolled back",
                quote(&table.name),
                quote(&t.column)
            ),
        )
        .with_hint("Finish or roll back the rollout first (pgshift.rollouts has its id), then run this statement. CREATE TABLE … PARTITION OF works meanwhile."),
        false => PgError::error(
            "55006",
            format!(
                "{} is under an online rollout of its column {}: pgshift does not change its columns until the rollout is finished or rolled back",
                quote(&table.name),
                quote(&t.column)
            ),
        )
        .with_hint("Finish or roll back the rollout first (pgshift.rollouts has its id), then run this statement."),
        true => PgError::error(
            "55006",
            format!(
                "pgshift is filling the old rows of {}.{} in the background: {}",
                quote(&table.name),
                quote(&t.column),
                match change.rewrites {
                    true => "this statement rewrites the table, which would leave the rows not filled yet NULL for good",
                    false => "this statement changes the column being filled",
                }
            ),
        )
        .with_hint("Run it again once the fill is over (pgshift.rollouts shows its phase), or roll the fill back."),
    };
    Ok(Some(error))
}

/// The text of a COPY the client prepares (a Parse: tokio-postgres' `copy_in`,
/// any driver's extended protocol) with the column list of the rollout's table
/// when it needs one; None to send it as written.
pub async fn prepared_with_list<C, S>(
    io: &mut InBand<'_, C, S>,
    cx: &SessionCx<'_>,
    sql: &str,
) -> io::Result<Option<String>>
where
    C: AsyncWrite + Unpin + Send,
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let limits = cx.settings.config.ddl.parse_limits();
    let analysis = match analyze_shared(sql, &limits).await {
        Verdict::Parsed(a) => a,
        _ => return Ok(None),
    };
    let [only] = &analysis.statements[..] else {
        return Ok(None);
    };
    let Some(target) = &only.copy_target else {
        return Ok(None);
    };
    Ok(match with_column_list(io, cx, sql, target).await? {
        Outcome::Rewrite(text) => Some(text),
        _ => None,
    })
}

/// Forwards the COPY as written, or with the column list of the rollout's table.
pub async fn with_column_list<C, S>(
    io: &mut InBand<'_, C, S>,
    cx: &SessionCx<'_>,
    sql: &str,
    target: &CopyTarget,
) -> io::Result<Outcome>
where
    C: AsyncWrite + Unpin + Send,
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let tables = cx.engine.rollouts.tables(cx.database);
    if tables.is_empty() {
        return Ok(Outcome::Forward);
    }
    let schema = target.schema.clone().unwrap_or_default();
    let reply = io.query_params(COLUMNS, &[&schema, &target.name]).await?;
    // A session in another encoding, or reading backslashes in strings, gets its
    // COPY as written: the names pgshift would write back could differ.
    let plain = |r: &Vec<Option<String>>| r.get(2).cloned().flatten().as_deref() == Some("t");
    if reply.error.is_some() || reply.rows.is_empty() || !plain(&reply.rows[0]) {
        return Ok(Outcome::Forward);
    }
    let oid: Option<u32> = reply.rows[0][0].as_deref().and_then(|s| s.parse().ok());
    let Some(table) = tables.iter().find(|t| oid.is_some_and(|oid| t.covers(oid))) else {
        return Ok(Outcome::Forward);
    };
    let names: Vec<String> = reply
        .rows
        .iter()
        .filter_map(|r| r.get(1).cloned().flatten())
        .collect();
    let visible = table.visible(&names);
    if visible == names {
        return Ok(Outcome::Forward);
    }
    let list: Vec<String> = visible.iter().map(|c| quote(c)).collect();
    let (Some(head), Some(tail)) = (sql.get(..target.list_at), sql.get(target.list_at..)) else {
        return Ok(Outcome::Forward);
    };
    let rewritten = format!("{head} ({}){tail}", list.join(", "));
    tracing::debug!(target: "pgshift::rollout", session = cx.session_id, "COPY given its column list: {rewritten}");
    if cx.settings.config.ddl.notices {
        let notice = PgError::notice(format!(
            "pgshift: {} is under rollout: COPY runs with the columns ({}), in the order the application knows",
            quote(&target.name),
            list.join(", ")
        ));
        io.send_client(&notice.to_bytes());
        io.flush_client().await?;
    }
    Ok(Outcome::Rewrite(rewritten))
}
