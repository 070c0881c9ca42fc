//! Prepared writes that set a rollout's new column too. A Parse of an INSERT or
//! UPDATE that sets a column under rollout goes to the server with the new
//! column set as well (`… amount__pgshift_new = ($1)::integer`), as a simple
//! Query does (`super::mirror`), so that the mirror trigger's WHEN clause skips
//! its rows.
//!
//! Such a statement names the new column, which the cutover renames and a
//! rollback drops: the server would then fail it when it plans it again. So the
//! session remembers what it changed, and once the rollout no longer lets writes
//! set the new column, before the client's next message that may use the
//! statement, it prepares the client's own text again under the same name
//! (`restore`). A Bind or Describe of such a statement waits out a lock window
//! on its table, as a Query naming the table does (`super::window`).

use super::pump::PumpEnd;
use super::statements::{run, savepoint};
use super::Established;
use crate::context::{Settings, Shared};
use crate::engine::conn::InBand;
use crate::sql::ident::literal;
use crate::wire::backend::{self, TxStatus};
use crate::wire::frame::HEADER_LEN;
use bytes::BytesMut;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

/// Named statements a session may have changed at once; past them, a new one is
/// left to the trigger.
const MAX_NAMED: usize = 128;

/// Longest prepared text changed (each changed statement keeps the client's
/// text until it is restored).
const MAX_TEXT: usize = 4096;

/// One changed statement.
#[derive(Debug, Clone)]
struct Entry {
    /// The client's text.
    original: String,
    /// A hash of the text the server has.
    sent: u64,
    /// The session's count of statements that may change what names mean
    /// (`Scanner::env`) when it was changed.
    env_at: u64,
    /// The rollout's table (oid, lowercase name) and new column.
    oid: u32,
    table: String,
    new_column: String,
}

/// The session's changed statements.
#[derive(Debug, Default)]
pub(super) struct Mirrors {
    named: HashMap<String, Entry>,
    /// The unnamed statement, with the scanner's count of Queries and unnamed
    /// Parses right after it (while the count stands, it is still there).
    unnamed: Option<(Entry, u64)>,
}

impl Mirrors {
    /// pgshift's own work on the connection may have replaced the unnamed
    /// statement (a simple Query drops it): it is not restored.
    pub(super) fn forget_unnamed(&mut self) {
        self.unnamed = None;
    }

    fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.named
            .values()
            .chain(self.unnamed.iter().map(|(e, _)| e))
    }

    pub(super) fn is_empty(&self) -> bool {
        self.named.is_empty() && self.unnamed.is_none()
    }

    /// The client's text of the statement `name` (empty: unnamed), if changed.
    fn entry(&self, name: &str, unnamed_now: u64) -> Option<&Entry> {
        match name.is_empty() {
            true => self
                .unnamed
                .as_ref()
                .filter(|(_, at)| *at == unnamed_now)
                .map(|(e, _)| e),
            false => self.named.get(name),
        }
    }
}

fn hash(text: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

/// True when the held message was a Parse of a write this looked at (it has
/// gone on, changed or as it came); false for any other message.
pub(super) async fn prepared(
    s: &mut Established<'_>,
    shared: &Shared,
    settings: &Settings,
) -> Result<bool, PumpEnd> {
    let held = s.up.scanner.held;
    let pending = s.up.pending();
    if pending.first() != Some(&b'P') || held < HEADER_LEN {
        return Ok(false);
    }
    let Some((name, text, params)) = super::copies::split(&pending[HEADER_LEN..held]) else {
        return Ok(false);
    };
    if !crate::sql::sniff::starts_with_write(text) || crate::sql::sniff::may_be_ddl(text) {
        return Ok(false);
    }
    let (Ok(name), Ok(text)) = (std::str::from_utf8(name), std::str::from_utf8(text)) else {
        s.up.release_held();
        return Ok(true);
    };
    let (name, text, params) = (name.to_string(), text.to_string(), params.to_vec());
    // A name the server would cut to 63 bytes would not be found again; one
    // already changed (a Parse the server refuses with 42P05) keeps its entry.
    let room = name.is_empty()
        || name.len() < 64
            && s.mirrors.named.len() < MAX_NAMED
            && !s.mirrors.named.contains_key(&name);
    let rewritten = match text.len() <= MAX_TEXT && room && plain_types(&params) {
        true => super::mirror::rewrite(s, shared, settings, &text, true).await?,
        false => None,
    };
    let Some((m, table)) = rewritten else {
        s.up.release_held();
        return Ok(true);
    };
    let frame = super::copies::parse_frame(name.as_bytes(), &m.text, &params);
    s.down.scanner.added_text(m.added);
    s.up.replace_held(&frame);
    let entry = Entry {
        original: text,
        sent: hash(&m.text),
        env_at: s.up.scanner.env(),
        oid: table.oid,
        table: table.name.to_lowercase(),
        new_column: table.new_column,
    };
    // What changed the names before it does not concern it: unless an older
    // one is still to be restored for it, the session need not look again.
    let env = entry.env_at;
    if s.mirrors.entries().all(|e| e.env_at == env) {
        s.up.scanner.env_seen(env);
    }
    match name.is_empty() {
        true => s.mirrors.unnamed = Some((entry, s.up.scanner.unnamed())),
        false => {
            s.mirrors.named.insert(name, entry);
        }
    }
    s.up.scanner.watch_env(true);
    Ok(true)
}

/// Types a client may declare for a parameter of a changed statement: each has
/// a cast to an integer type (so the repeat's cast fails, if at all, only where
/// the value's assignment to the column fails first or the same way); 0 is
/// left to the server.
const PLAIN_TYPES: [u32; 12] = [0, 16, 20, 21, 23, 25, 700, 701, 705, 1042, 1043, 1700];

/// True when every parameter type the Parse declares (`params`: a count, then
/// the oids) is one of [`PLAIN_TYPES`].
fn plain_types(params: &[u8]) -> bool {
    let Some(count) = params.get(..2) else {
        return params.is_empty();
    };
    let count = u16::from_be_bytes([count[0], count[1]]) as usize;
    let oids = &params[2..];
    oids.len() == count * 4
        && oids
            .chunks_exact(4)
            .all(|c| PLAIN_TYPES.contains(&u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
}

/// The lowercase text of the statement a held Bind or Describe uses, when it is
/// one pgshift changed (for a lock window on its table to hold it).
pub(super) fn held_text(s: &Established<'_>) -> Option<String> {
    let name = used(s.up.pending())?;
    let entry = s.mirrors.entry(&name, s.up.scanner.unnamed())?;
    Some(entry.original.to_lowercase())
}

/// The statement a held Bind or Describe (of a statement) uses.
fn used(held: &[u8]) -> Option<String> {
    let body = held.get(HEADER_LEN..)?;
    let name = match held.first()? {
        b'B' => crate::wire::scanner::bind_names(body)?.1,
        b'D' if body.first() == Some(&b'S') => {
            let rest = &body[1..];
            &rest[..rest.iter().position(|&b| b == 0)?]
        }
        _ => return None,
    };
    std::str::from_utf8(name).ok().map(str::to_string)
}

/// Prepares the client's own text again for each changed statement whose new
/// column is gone (the cutover renamed it, a rollback dropped it), or whose
/// names may mean other tables now (the session changed its search_path or
/// role: `Scanner::env`). A lock window open on its table is waited out first
/// for the statement the held message uses (`super::window`), the rest at a
/// later turn: the session stays stale while one is left. Inside a transaction
/// block only the statement the held message uses (or every one, before an
/// `EXECUTE`) is looked at, under a savepoint; a failed transaction is left for
/// later. True while one is left to do.
pub(super) async fn restore(s: &mut Established<'_>, shared: &Shared) -> Result<bool, PumpEnd> {
    let env = s.up.scanner.env();
    if s.mirrors.is_empty() {
        s.up.scanner.env_seen(env);
        return Ok(false);
    }
    let status = s.down.scanner.tx_status().unwrap_or_default();
    let only = match status {
        TxStatus::Failed => return Ok(true),
        TxStatus::Idle => None,
        TxStatus::InTransaction => used(s.up.pending()),
    };
    let running = &shared.engine.rollouts;
    let database = s.registered.info.database.clone();
    let tables = running.tables(&database);
    let swapping = running.swapping(&database);
    let unnamed_now = s.up.scanner.unnamed();
    if s.mirrors
        .unnamed
        .as_ref()
        .is_some_and(|(_, at)| *at != unnamed_now)
    {
        s.mirrors.unnamed = None;
    }
    let in_block = status == TxStatus::InTransaction;
    // SQL's EXECUTE runs a statement the protocol prepared too.
    let executes = s.up.pending().first() == Some(&b'Q')
        && crate::sql::sniff::contains_ignoring_case(s.up.pending(), b"execute");
    let wanted =
        |name: &str| !in_block || only.as_deref() == Some(name) || executes && !name.is_empty();
    let mut work: Vec<Work> = Vec::new();
    let mut left = false;
    let unnamed = s.mirrors.unnamed.iter().map(|(e, _)| (String::new(), e));
    for (name, e) in unnamed.chain(s.mirrors.named.iter().map(|(n, e)| (n.clone(), e))) {
        // The rollout no longer takes the new column from writes: the column
        // may be gone (or a lock window failed and repeating resumes soon: the
        // catalog says which).
        let stopped = !tables
            .iter()
            .any(|t| t.repeats && t.oid == e.oid && t.new_column == e.new_column);
        // Or the names it reads may mean other tables (or another role runs it).
        let moved = e.env_at != env;
        let window = swapping.contains(&e.table);
        // Inside a block the statement the held message uses cannot wait for a
        // window here: its Bind would wait for the window's lock in the server,
        // then be planned again after the rename. Its own text waits there
        // instead, as it would directly.
        let now = match in_block {
            false => (stopped || moved) && !window,
            true => (stopped || moved || window) && wanted(&name),
        };
        match now {
            true => work.push(Work {
                name,
                entry: e.clone(),
                // Restored whatever the catalog says.
                always: moved || in_block && window,
            }),
            false => left |= stopped || moved || window,
        }
    }
    if work.is_empty() {
        if !in_block && !left {
            s.up.scanner.env_seen(env);
        }
        return Ok(left);
    }
    for w in &work {
        match w.name.is_empty() {
            true => s.mirrors.unnamed = None,
            false => {
                s.mirrors.named.remove(&w.name);
            }
        }
    }
    let unread = s.down.take_unforwarded();
    let mut io = InBand::new(&mut s.client, &mut s.server, unread, status, None);
    let result = restore_on(&mut io, &work).await;
    let status = io.status;
    let client_gone = io.client_gone();
    let unread = io.into_unread();
    let (restored, kept) = result.map_err(PumpEnd::ServerIo)?;
    s.down.restore(unread).map_err(PumpEnd::ServerProtocol)?;
    s.down.scanner.set_tx_status(status);
    s.registered.info.set_tx_status(status);
    left |= !kept.is_empty();
    for w in kept {
        match w.name.is_empty() {
            true => s.mirrors.unnamed = Some((w.entry, unnamed_now)),
            false => {
                s.mirrors.named.insert(w.name, w.entry);
            }
        }
    }
    if !in_block && !left {
        s.up.scanner.env_seen(env);
    }
    s.up.scanner
        .watch_env(s.lookup.is_some() || !s.mirrors.is_empty());
    if restored > 0 {
        tracing::info!(
            restored,
            "prepared writes given back their own text: their rollout no longer takes the new column from them"
        );
    }
    if client_gone {
        return Err(PumpEnd::ClientClosed);
    }
    Ok(left)
}

/// A changed statement to restore.
struct Work {
    name: String,
    entry: Entry,
    /// Even while its new column still stands.
    always: bool,
}

/// Restores each of `work`; returns how many were, and those left as they are
/// because their new column still stands (a lock window that did not commit).
async fn restore_on<C, S>(
    io: &mut InBand<'_, C, S>,
    work: &[Work],
) -> std::io::Result<(usize, Vec<Work>)>
where
    C: tokio::io::AsyncWrite + Unpin + Send,
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
{
    let in_block = io.status == TxStatus::InTransaction;
    if in_block && !savepoint(io, "SAVEPOINT").await? {
        return Ok((0, Vec::new()));
    }
    let (mut restored, mut kept) = (0, Vec::new());
    for w in work {
        let (name, e) = (w.name.as_str(), &w.entry);
        // Still the statement pgshift sent (the client may have closed it, or
        // DISCARD ALL may have), with the parameter types the server gave it
        // (directly, planning it again keeps them: the text alone might now
        // infer others, `amount + $1` an int8 once `amount` is one).
        let Some((params, standing)) = sent(io, name, e).await? else {
            continue;
        };
        if standing && !w.always {
            kept.push(Work {
                name: w.name.clone(),
                entry: w.entry.clone(),
                always: false,
            });
            continue;
        }
        // The client's text is tried under pgshift's own name first: closing
        // the client's statement is not undone if the Parse then fails.
        let mut out = BytesMut::new();
        backend::close(&mut out, b'S', OURS);
        backend::parse(&mut out, OURS, &e.original, &params);
        backend::close(&mut out, b'S', OURS);
        backend::sync(&mut out);
        io.send_server(&out).await?;
        if io.collect().await?.error.is_some() {
            if in_block {
                savepoint(io, "ROLLBACK TO SAVEPOINT").await?;
            }
            continue;
        }
        let mut out = BytesMut::new();
        if !name.is_empty() {
            backend::close(&mut out, b'S', name);
        }
        backend::parse(&mut out, name, &e.original, &params);
        backend::sync(&mut out);
        io.send_server(&out).await?;
        match io.collect().await?.error {
            None => restored += 1,
            Some(_) if in_block => {
                savepoint(io, "ROLLBACK TO SAVEPOINT").await?;
            }
            Some(_) => {}
        }
    }
    if in_block && !savepoint(io, "RELEASE SAVEPOINT").await? {
        savepoint(io, "ROLLBACK TO SAVEPOINT").await?;
        if !savepoint(io, "RELEASE SAVEPOINT").await? {
            tracing::warn!("pgshift's savepoint could not be released");
        }
    }
    Ok((restored, kept))
}

/// pgshift's own statement name for trying a text.
const OURS: &str = "pgshift_mirror";

/// The parameter types of statement `name` when the server still has the text
/// pgshift sent for it (an unnamed one: when it is there at all), and whether
/// the rollout's new column still stands on its table.
async fn sent<C, S>(
    io: &mut InBand<'_, C, S>,
    name: &str,
    e: &Entry,
) -> std::io::Result<Option<(Vec<u32>, bool)>>
where
    C: tokio::io::AsyncWrite + Unpin + Send,
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
{
    let standing = format!(
        "EXISTS (SELECT FROM pg_catalog.pg_attribute a WHERE a.attrelid OPERATOR(pg_catalog.=) {}::pg_catalog.oid \
         AND a.attname OPERATOR(pg_catalog.=) {}::pg_catalog.name AND NOT a.attisdropped)",
        e.oid,
        literal(&e.new_column)
    );
    let now = run(
        io,
        &format!(
            "SELECT p.statement, p.parameter_types::pg_catalog.oid[]::pg_catalog.text, {standing} \
             FROM (SELECT) AS x LEFT JOIN pg_catalog.pg_prepared_statements p \
               ON p.name OPERATOR(pg_catalog.=) $1 AND NOT p.from_sql"
        ),
        &[Some(name)],
    )
    .await?;
    let row = now.rows.first().filter(|_| now.error.is_none());
    let cell = |i: usize| row.and_then(|r| r.get(i).cloned().flatten());
    let standing = cell(2).as_deref() == Some("t");
    if name.is_empty() {
        if row.is_none() {
            return Ok(None);
        }
        let mut out = BytesMut::new();
        backend::describe_statement(&mut out, "");
        backend::sync(&mut out);
        io.send_server(&out).await?;
        let reply = io.collect().await?;
        return Ok(reply
            .params
            .filter(|_| reply.error.is_none())
            .map(|p| (p, standing)));
    }
    Ok(match cell(0) {
        Some(text) if hash(&text) == e.sent => cell(1)
            .and_then(|t| super::wrapper::oids(&t))
            .map(|p| (p, standing)),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::used;

    #[test]
    fn declared_types_with_a_cast_to_integer_only() {
        use super::plain_types;
        assert!(plain_types(&[0, 0]));
        assert!(plain_types(&[0, 2, 0, 0, 0, 20, 0, 0, 0, 0]));
        // timestamptz (1184): no cast to integer at all.
        assert!(!plain_types(&[0, 1, 0, 0, 4, 160]));
        assert!(!plain_types(&[0, 2, 0, 0, 0, 20]));
    }

    #[test]
    fn the_statement_a_bind_or_describe_uses() {
        let mut b = vec![b'B', 0, 0, 0, 0];
        b.extend_from_slice(b"portal\0s1\0\0\0\0\0\0\0");
        assert_eq!(used(&b).as_deref(), Some("s1"));
        let mut d = vec![b'D', 0, 0, 0, 0];
        d.extend_from_slice(b"S\0");
        assert_eq!(used(&d).as_deref(), Some(""));
        let mut p = vec![b'D', 0, 0, 0, 0];
        p.extend_from_slice(b"Pportal\0");
        assert_eq!(used(&p), None);
    }
}
