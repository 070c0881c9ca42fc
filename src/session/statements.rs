//! Renewing a session's prepared statements after a rollout changed a table they
//! read. Directly, adding the new column (to `SELECT *`), the cutover (the
//! column's type), a rollback and the finish make every statement prepared before
//! them fail with "cached plan must not change result type", for as long as the
//! client keeps them; and a client that reads results in binary with the types it
//! was told (PgJDBC past prepareThreshold, psycopg's binary cursors,
//! tokio-postgres) cannot be handed a new type anyway.
//!
//! So at the first turn after such a change, before the client's message goes on,
//! the session looks at its named statements (the server lists them in
//! `pg_prepared_statements`) that mention a changed table. For each, it compares
//! what the client was told it returns (`wire::described`) with what the same
//! text returns now; where they differ and a column of the changed table is
//! involved, the statement is prepared again under its name, wrapped to return
//! what the client knows (`super::wrapper`). The wrapper is checked first under a
//! name of pgshift's own; anything that does not fit is left as it is, to fail as
//! it would directly. Everything runs through the extended protocol under
//! pgshift's own statement and portal names, so the client's unnamed statement
//! and portal are left alone.

use super::pump::PumpEnd;
use super::wrapper::{casts, command_tag, oids, same_shape, same_types, unwrap, wrap};
use super::Established;
use crate::context::{Settings, Shared};
use crate::engine::conn::{InBand, Reply};
use crate::rollout::Running;
use crate::wire::backend::{self, Field, TxStatus};
use crate::wire::described::Record;
use crate::wire::hidden::Mapping;
use crate::wire::scanner::bind_names;
use bytes::BytesMut;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

/// Renews the session's statements for every change so far. A session in a failed
/// transaction is left stale: it tries again at a later turn. Inside a transaction
/// block only the statement the held Bind uses is renewed (a look at the server's
/// list before, say, `SET TRANSACTION` would make that fail); the rest waits for
/// the end of the block.
pub(super) async fn renew(
    s: &mut Established<'_>,
    shared: &Shared,
    settings: &Settings,
) -> Result<(), PumpEnd> {
    let running = &shared.engine.rollouts;
    let database = s.registered.info.database.clone();
    // Read first: a window that opens from here on is seen at the next turn.
    let count = running.change_count(&database);
    let status = s.down.scanner.tx_status().unwrap_or_default();
    let window = Window {
        running,
        database: &database,
        // A lock window lasts one attempt (lock_timeout, then the step itself)
        // after waiting for turns already at the server.
        longest: Duration::from_millis(settings.config.ddl.lock_timeout_ms + 1000)
            + crate::rollout::SETTLE_MAX,
    };
    if status == TxStatus::Idle && super::window::wait_out(s, shared, &window).await? {
        // A cancel answered the held statement.
        return Ok(());
    }
    // Prepared writes that set a new column the rollout renamed or dropped.
    let (owed, _) = super::mirrored::restore(s, shared, &window).await?;
    let status = s.down.scanner.tx_status().unwrap_or_default();
    // A session without named statements has nothing to renew; it stays stale
    // (each turn looked at) while a window is open, so that every statement of
    // its that names the table waits.
    let settled = running.swapping(&database).is_empty();
    let only = match status {
        TxStatus::Failed => return Ok(()),
        _ if !s.up.scanner.named() => {
            if settled && !owed {
                s.up.scanner.renewed_at(count);
            }
            return Ok(());
        }
        TxStatus::Idle => None,
        TxStatus::InTransaction => match bound_statement(s.up.pending()) {
            Some(name) => Some(name),
            None => return Ok(()),
        },
    };
    let tables = running.touched(&database);
    let Some(record) = s.up.scanner.record().filter(|_| !tables.is_empty()) else {
        if !owed {
            s.up.scanner.renewed_at(count);
        }
        return Ok(());
    };
    if let Some(name) = &only {
        // Inside a block, each statement is looked at once per change.
        let count = running.change_count(&database);
        if !record.with(|d| d.check(count, name.as_bytes())) {
            return Ok(());
        }
    }
    let unread = s.down.take_unforwarded();
    let mut io = InBand::new(&mut s.client, &mut s.server, unread, status, None);
    let scope = Scope {
        tables: &tables,
        only: only.as_deref(),
    };
    let result = renew_on(&mut io, scope, &record, window).await;
    let status = io.status;
    let client_gone = io.client_gone();
    let unread = io.into_unread();
    let (renewed, seen) = result.map_err(PumpEnd::ServerIo)?;
    s.down.restore(unread).map_err(PumpEnd::ServerProtocol)?;
    s.down.scanner.set_tx_status(status);
    s.registered.info.set_tx_status(status);
    let mut owed = owed;
    if seen != count {
        // A window opened while this renewed (it waited for it): a statement
        // pgshift changed may name a column it renamed. It is prepared again
        // now, and renewed at another round.
        let (left, restored) = super::mirrored::restore(s, shared, &window).await?;
        owed |= left || restored > 0;
    }
    // While a window is open the session stays stale: its next statement that
    // names the table waits too.
    if only.is_none() && running.swapping(&database).is_empty() && !owed {
        s.up.scanner.renewed_at(seen);
    }
    if renewed > 0 {
        tracing::info!(
            renewed,
            "prepared statements renewed after a rollout changed their table"
        );
    }
    if client_gone {
        return Err(PumpEnd::ClientClosed);
    }
    Ok(())
}

/// The named statement a held Bind uses; None for anything else.
fn bound_statement(held: &[u8]) -> Option<String> {
    if held.first() != Some(&b'B') {
        return None;
    }
    let (_, name) = bind_names(held.get(crate::wire::frame::HEADER_LEN..)?)?;
    let name = std::str::from_utf8(name).ok()?;
    (!name.is_empty()).then(|| name.to_string())
}

/// Where a session waits for a lock window that changes a table its statements read.
#[derive(Clone, Copy)]
pub(super) struct Window<'a> {
    pub running: &'a Running,
    pub database: &'a str,
    /// The longest wait.
    pub longest: Duration,
}

impl Window<'_> {
    /// Waits, outside a transaction block only (inside one, the session may hold a
    /// lock the window waits for), while a table one of `texts` (lowercase)
    /// mentions is in its lock window. Returns the count of changes after it.
    pub(super) async fn wait(&self, idle: bool, texts: &[String]) -> u64 {
        let deadline = Instant::now() + self.longest;
        while idle && Instant::now() < deadline {
            let open = self.running.swapping(self.database);
            if !texts
                .iter()
                .any(|t| open.iter().any(|o| t.contains(o.as_str())))
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        self.running.change_count(self.database)
    }
}

/// Which statements to look at: those that mention one of `tables` (lowercase
/// name, oid), or only the one named `only`.
#[derive(Clone, Copy)]
struct Scope<'a> {
    tables: &'a [(String, u32)],
    only: Option<&'a str>,
}

/// A named statement of the session that may need renewing.
struct Candidate {
    name: String,
    /// Its text on the server now.
    current: String,
    /// The client's own text (`current` unless pgshift wrapped it before).
    text: String,
    /// `text` in lower case.
    lower: String,
    params: Vec<u32>,
    /// The columns the client was told it returns (by a Describe of the statement
    /// or of a portal bound to it).
    known: Vec<Field>,
}

/// pgshift's own statement and portal on the client's connection.
const OURS: &str = "pgshift_renew";
const SAVEPOINT: &str = "pgshift_renew";

/// Returns how many statements were prepared again, and the count of changes they
/// are renewed for.
async fn renew_on<C, S>(
    io: &mut InBand<'_, C, S>,
    scope: Scope<'_>,
    record: &Record,
    window: Window<'_>,
) -> std::io::Result<(usize, u64)>
where
    C: AsyncWrite + Unpin + Send,
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    // In a transaction block, an error (even the list's: a statement_timeout)
    // must not end the client's transaction.
    let in_block = io.status == TxStatus::InTransaction;
    if in_block && !savepoint(io, "SAVEPOINT").await? {
        return Ok((0, window.running.change_count(window.database)));
    }
    let (renewed, seen) = look(io, scope, record, &window, in_block).await?;
    if in_block && !savepoint(io, "RELEASE SAVEPOINT").await? {
        savepoint(io, "ROLLBACK TO SAVEPOINT").await?;
        if !savepoint(io, "RELEASE SAVEPOINT").await? {
            tracing::warn!("pgshift's savepoint could not be released");
        }
    }
    Ok((renewed, seen))
}

/// `command` (SAVEPOINT, RELEASE SAVEPOINT, ROLLBACK TO SAVEPOINT) on pgshift's
/// savepoint; false on an error.
pub(super) async fn savepoint<C, S>(
    io: &mut InBand<'_, C, S>,
    command: &str,
) -> std::io::Result<bool>
where
    C: AsyncWrite + Unpin + Send,
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let sql = format!("{command} {SAVEPOINT}");
    Ok(run(io, &sql, &[]).await?.error.is_none())
}

/// Statements of more text than this are not looked at (each is read whole).
const MAX_TEXT: usize = 16 * 1024;
/// Nor more statements than this at once.
const MAX_LISTED: usize = 1024;

/// The work of [`renew_on`], inside the savepoint when in a block: an error there
/// rolls back to it.
async fn look<C, S>(
    io: &mut InBand<'_, C, S>,
    scope: Scope<'_>,
    record: &Record,
    window: &Window<'_>,
    in_block: bool,
) -> std::io::Result<(usize, u64)>
where
    C: AsyncWrite + Unpin + Send,
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    // Only statements that mention a changed table, and not too big, come back:
    // the list's size is bounded whatever the session prepared.
    let names = text_array(scope.tables.iter().map(|(t, _)| t.as_str()));
    let list = run(
        io,
        &format!(
            "SELECT name, parameter_types::pg_catalog.oid[]::pg_catalog.text, statement \
             FROM pg_catalog.pg_prepared_statements \
             WHERE NOT from_sql AND name <> '{OURS}' AND ($1::pg_catalog.text IS NULL OR name = $1) \
             AND pg_catalog.length(statement) <= {MAX_TEXT} \
             AND EXISTS (SELECT FROM pg_catalog.unnest($2::pg_catalog.text[]) t \
                         WHERE pg_catalog.strpos(pg_catalog.lower(statement), t) > 0) \
             LIMIT {MAX_LISTED}"
        ),
        &[scope.only, Some(&names)],
    )
    .await?;
    if list.error.is_some() {
        if in_block {
            savepoint(io, "ROLLBACK TO SAVEPOINT").await?;
        }
        return Ok((0, window.running.change_count(window.database)));
    }
    let candidates: Vec<Candidate> = list
        .rows
        .iter()
        .filter_map(|row| candidate(row, scope, record))
        .collect();
    if candidates.is_empty() {
        return Ok((0, window.running.change_count(window.database)));
    }
    let texts: Vec<String> = candidates.iter().map(|c| c.lower.clone()).collect();
    let seen = window.wait(io.status == TxStatus::Idle, &texts).await;
    let oids: Vec<u32> = scope.tables.iter().map(|(_, oid)| *oid).collect();
    let mut renewed = 0;
    for c in &candidates {
        match renew_one(io, c, &oids, record).await? {
            Some(true) => renewed += 1,
            Some(false) => {}
            None if in_block && !savepoint(io, "ROLLBACK TO SAVEPOINT").await? => {
                return Ok((renewed, seen));
            }
            None => {}
        }
    }
    Ok((renewed, seen))
}

/// A text[] value: `{"a","b\"c"}`.
fn text_array<'a>(items: impl Iterator<Item = &'a str>) -> String {
    let quoted: Vec<String> = items
        .map(|t| format!("\"{}\"", t.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    format!("{{{}}}", quoted.join(","))
}

/// A row of the server's list as a candidate, when it is one.
fn candidate(row: &[Option<String>], scope: Scope<'_>, record: &Record) -> Option<Candidate> {
    let name = row.first()?.clone()?;
    let params = oids(row.get(1)?.as_deref()?)?;
    let current = row.get(2)?.clone()?;
    // Only a wrapper pgshift made is taken off (a client's text may look alike).
    let text = match record.with(|d| d.is_wrapped(name.as_bytes())) {
        true => unwrap(&current).to_string(),
        false => current.clone(),
    };
    let lower = text.to_lowercase();
    let wanted = match scope.only {
        Some(only) => name == only,
        None => scope.tables.iter().any(|(t, _)| lower.contains(t.as_str())),
    };
    // Text that did not come back as it is (not UTF-8) cannot be sent again.
    if !wanted || current.contains('\u{FFFD}') || name.contains('\u{FFFD}') {
        return None;
    }
    // What the client was told it returns. A statement it never described is
    // left as it is (such a client reads results by types it knows in advance, so
    // it cannot be given new ones), as is one that returns no rows.
    let known = backend::row_description(&record.shape(name.as_bytes())??)?;
    Some(Candidate {
        name,
        current,
        text,
        lower,
        params,
        known,
    })
}

/// Renews one statement when its result changed and a column of a changed table
/// (`oids`) is in it: Some(true) renewed, Some(false) nothing to do or nothing that
/// fits, None an error on the server.
async fn renew_one<C, S>(
    io: &mut InBand<'_, C, S>,
    c: &Candidate,
    oids: &[u32],
    record: &Record,
) -> std::io::Result<Option<bool>>
where
    C: AsyncWrite + Unpin + Send,
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let known = &c.known;
    let Some(now) = check(io, &c.text, &c.params).await? else {
        return Ok(None);
    };
    let involved = |f: &Field| oids.contains(&f.table);
    // A name that did not come back as it is (not UTF-8) cannot be written back.
    let lossy = |f: &Field| f.name.contains('\u{FFFD}');
    if !known.iter().chain(&now).any(involved) || known.iter().chain(&now).any(lossy) {
        return Ok(Some(false));
    }
    let wanted = if same_shape(known, &now) {
        // As prepared (a wrapper from an earlier change no longer fits).
        c.text.clone()
    } else {
        let Some(casts) = casts(known, &now) else {
            return Ok(Some(false));
        };
        let Some(types) = type_names(io, &casts).await? else {
            return Ok(None);
        };
        let wrapped = wrap(&c.text, known, &now, &casts, &types);
        let Some(fits) = check(io, &wrapped, &c.params).await? else {
            return Ok(None);
        };
        if !same_types(known, &fits) {
            return Ok(Some(false));
        }
        wrapped
    };
    if wanted == c.current {
        return Ok(Some(false));
    }
    let wrapped = wanted != c.text;
    if !prepare(io, &c.name, &wanted, &c.params).await? {
        return Ok(None);
    }
    // The wrapper of an INSERT/UPDATE/DELETE … RETURNING ends with `SELECT n`:
    // the session gives its Executes the statement's own tag back.
    let tag = match wrapped {
        true => {
            let text = c.text.clone();
            match crate::sql::parser::submit(text.len(), move || command_tag(&text)) {
                Ok(pending) => pending.await.ok().flatten(),
                Err(_) => None,
            }
        }
        false => None,
    };
    record.with(|d| match wrapped {
        true => d.wrapped(c.name.as_bytes(), tag),
        false => d.unwrapped(c.name.as_bytes(), Mapping::of_fields(&now)),
    });
    Ok(Some(true))
}

/// Prepares `sql` again as statement `name`; false on an error.
async fn prepare<C, S>(
    io: &mut InBand<'_, C, S>,
    name: &str,
    sql: &str,
    params: &[u32],
) -> std::io::Result<bool>
where
    C: AsyncWrite + Unpin + Send,
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut out = BytesMut::new();
    backend::close(&mut out, b'S', name);
    backend::parse(&mut out, name, sql, params);
    backend::sync(&mut out);
    io.send_server(&out).await?;
    Ok(io.collect().await?.error.is_none())
}

/// What `sql` returns when prepared (with `params`) under pgshift's own name: the
/// columns (empty for none), or None when it does not prepare.
async fn check<C, S>(
    io: &mut InBand<'_, C, S>,
    sql: &str,
    params: &[u32],
) -> std::io::Result<Option<Vec<Field>>>
where
    C: AsyncWrite + Unpin + Send,
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut out = BytesMut::new();
    backend::close(&mut out, b'S', OURS);
    backend::parse(&mut out, OURS, sql, params);
    backend::describe_statement(&mut out, OURS);
    backend::close(&mut out, b'S', OURS);
    backend::sync(&mut out);
    io.send_server(&out).await?;
    let reply: Reply = io.collect().await?;
    Ok(match reply.error {
        Some(_) => None,
        None => Some(reply.fields.unwrap_or_default()),
    })
}

/// Runs one statement with text parameters under pgshift's own statement and
/// portal names (a simple Query would drop the client's unnamed statement and
/// portal).
pub(super) async fn run<C, S>(
    io: &mut InBand<'_, C, S>,
    sql: &str,
    params: &[Option<&str>],
) -> std::io::Result<Reply>
where
    C: AsyncWrite + Unpin + Send,
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut out = BytesMut::new();
    backend::close(&mut out, b'P', OURS);
    backend::close(&mut out, b'S', OURS);
    backend::parse(&mut out, OURS, sql, &[]);
    backend::bind_execute_params(&mut out, OURS, params);
    backend::close(&mut out, b'P', OURS);
    backend::close(&mut out, b'S', OURS);
    backend::sync(&mut out);
    io.send_server(&out).await?;
    io.collect().await
}

/// The SQL names (without type modifier) of the types to cast back to, in the
/// order of `casts` (format_type on the client's connection: oids are numbers).
async fn type_names<C, S>(
    io: &mut InBand<'_, C, S>,
    casts: &[(usize, Option<u32>)],
) -> std::io::Result<Option<Vec<Option<String>>>>
where
    C: AsyncWrite + Unpin + Send,
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let calls: Vec<String> = casts
        .iter()
        .filter_map(|(_, to)| *to)
        .map(|oid| format!("pg_catalog.format_type({oid}, NULL)"))
        .collect();
    if calls.is_empty() {
        return Ok(Some(vec![None; casts.len()]));
    }
    let reply = run(io, &format!("SELECT {}", calls.join(", ")), &[]).await?;
    let Some(row) = reply.rows.first().filter(|_| reply.error.is_none()) else {
        return Ok(None);
    };
    let mut names = row.iter();
    let mut out = Vec::with_capacity(casts.len());
    for (_, to) in casts {
        out.push(match to {
            Some(_) => Some(names.next().cloned().flatten().ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, "format_type gave no name")
            })?),
            None => None,
        });
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    #[test]
    fn table_names_go_as_one_text_array() {
        let names = ["orders", "we\"ird\\"];
        assert_eq!(
            super::text_array(names.into_iter()),
            r#"{"orders","we\"ird\\"}"#
        );
    }
}
