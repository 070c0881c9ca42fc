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
use super::statements::{run, savepoint, Window};
use super::Established;
use crate::context::{Settings, Shared};
use crate::engine::conn::InBand;
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
    let Some((name, text, params)) = super::copies::held_parse(s) else {
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
    let fits = text.len() <= MAX_TEXT && room && plain_types(&params);
    if fits {
        // Known to lock windows before the rewrite looks at the registry: one
        // that opens meanwhile waits for this turn.
        let mut tables = tables_of(&s.mirrors);
        tables.push(0);
        s.up.scanner.set_rewritten(tables);
    }
    let rewritten = match fits {
        true => super::mirror::rewrite(s, shared, settings, &text, true).await?,
        false => None,
    };
    let Some((m, table)) = rewritten else {
        s.up.scanner.set_rewritten(tables_of(&s.mirrors));
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
    s.up.scanner.watch_env(true, true);
    s.up.scanner.set_rewritten(tables_of(&s.mirrors));
    Ok(true)
}

/// The tables of the session's changed statements.
fn tables_of(mirrors: &Mirrors) -> Vec<u32> {
    mirrors.entries().map(|e| e.oid).collect()
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

/// Prepares the client's own text again for each changed statement whose
/// rollout no longer takes the new column from writes (the cutover renames it,
/// a rollback drops it, or a lock window failed: the client's own text is right
/// in every case, the trigger mirrors it), or whose names may mean other tables
/// now (the session changed its search_path or role: `Scanner::env`). Outside a
/// transaction block a lock window open on the table of one is waited out first
/// (any message of the turn may use it: a batch `BEGIN`, `Bind`, …). Inside one
/// every such statement is prepared again at once, under a savepoint (its Bind
/// would wait for the window's lock in the server, then be planned again after
/// the rename; its own text waits there instead, as it would directly), unless
/// the held message is a `SET` (`SET TRANSACTION` must come before any
/// statement that takes a snapshot). A failed transaction is left for later.
/// Returns whether one is left to do (the session must stay stale), and how
/// many were prepared again.
pub(super) async fn restore(
    s: &mut Established<'_>,
    shared: &Shared,
    window: &Window<'_>,
) -> Result<(bool, usize), PumpEnd> {
    let env = s.up.scanner.env();
    if s.mirrors.is_empty() {
        s.up.scanner.env_seen(env);
        s.up.scanner.watch_env(s.lookup.is_some(), false);
        s.up.scanner.set_rewritten(Vec::new());
        return Ok((false, 0));
    }
    let status = s.down.scanner.tx_status().unwrap_or_default();
    let in_block = match status {
        TxStatus::Failed => return Ok((true, 0)),
        TxStatus::Idle => false,
        TxStatus::InTransaction => true,
    };
    let running = &shared.engine.rollouts;
    let database = s.registered.info.database.clone();
    if !in_block {
        let tables: Vec<String> = s.mirrors.entries().map(|e| e.table.clone()).collect();
        window.wait(true, &tables).await;
    }
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
    let snapshot_ok = !held_set(s.up.pending());
    let mut work: Vec<(String, Entry)> = Vec::new();
    let mut left = false;
    let unnamed = s.mirrors.unnamed.iter().map(|(e, _)| (String::new(), e));
    for (name, e) in unnamed.chain(s.mirrors.named.iter().map(|(n, e)| (n.clone(), e))) {
        let stopped = !tables
            .iter()
            .any(|t| t.repeats && t.oid == e.oid && t.new_column == e.new_column);
        let moved = e.env_at != env;
        let window = swapping.contains(&e.table);
        let now = match in_block {
            false => (stopped || moved) && !window,
            true => (stopped || moved || window) && snapshot_ok,
        };
        match now {
            true => work.push((name, e.clone())),
            false => left |= stopped || moved || window,
        }
    }
    if work.is_empty() {
        if !in_block && !left {
            s.up.scanner.env_seen(env);
        }
        return Ok((left, 0));
    }
    for (name, _) in &work {
        match name.is_empty() {
            true => s.mirrors.unnamed = None,
            false => {
                s.mirrors.named.remove(name);
            }
        }
    }
    let unread = s.down.take_unforwarded();
    let mut io = InBand::new(&mut s.client, &mut s.server, unread, status, None);
    let result = restore_on(&mut io, &work).await;
    let status = io.status;
    let client_gone = io.client_gone();
    let unread = io.into_unread();
    let (restored, again) = result.map_err(PumpEnd::ServerIo)?;
    s.down.restore(unread).map_err(PumpEnd::ServerProtocol)?;
    s.down.scanner.set_tx_status(status);
    s.registered.info.set_tx_status(status);
    // Work an error stopped is tried again at a later turn.
    left |= !again.is_empty();
    for (name, entry) in again {
        match name.is_empty() {
            true => s.mirrors.unnamed = Some((entry, unnamed_now)),
            false => {
                s.mirrors.named.insert(name, entry);
            }
        }
    }
    if !in_block && !left {
        s.up.scanner.env_seen(env);
    }
    s.up.scanner
        .watch_env(s.lookup.is_some(), !s.mirrors.is_empty());
    s.up.scanner.set_rewritten(tables_of(&s.mirrors));
    if restored > 0 {
        tracing::info!(
            restored,
            "prepared writes given back their own text: their rollout no longer takes the new column from them"
        );
    }
    if client_gone {
        return Err(PumpEnd::ClientClosed);
    }
    Ok((left, restored))
}

/// True when the held message is a Query or Parse that starts with `SET`.
fn held_set(held: &[u8]) -> bool {
    let Some(body) = held.get(HEADER_LEN..) else {
        return false;
    };
    let text = match held.first() {
        Some(b'Q') => body,
        Some(b'P') => match body.iter().position(|&b| b == 0) {
            Some(name) => &body[name + 1..],
            None => return false,
        },
        _ => return false,
    };
    crate::sql::sniff::starts_with_set(text)
}

/// Restores each of `work`; returns how many were, and those an error stopped
/// (to be tried again).
async fn restore_on<C, S>(
    io: &mut InBand<'_, C, S>,
    work: &[(String, Entry)],
) -> std::io::Result<(usize, Vec<(String, Entry)>)>
where
    C: tokio::io::AsyncWrite + Unpin + Send,
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
{
    let in_block = io.status == TxStatus::InTransaction;
    if in_block && !savepoint(io, "SAVEPOINT").await? {
        return Ok((0, work.to_vec()));
    }
    let mut restored = 0;
    let mut again = Vec::new();
    for (i, (name, e)) in work.iter().enumerate() {
        // Still the statement pgshift sent (the client may have closed it, or
        // DISCARD ALL may have), with the parameter types the server gave it
        // (directly, planning it again keeps them: the text alone might now
        // infer others, `amount + $1` an int8 once `amount` is one).
        let params = match sent(io, name, e).await? {
            Sent::Ours(params) => params,
            Sent::Gone => continue,
            Sent::Failed => {
                again.extend_from_slice(&work[i..]);
                break;
            }
        };
        // The client's text is tried under pgshift's own name first: closing
        // the client's statement is not undone if the Parse then fails.
        let mut out = BytesMut::new();
        backend::close(&mut out, b'S', OURS);
        backend::parse(&mut out, OURS, &e.original, &params);
        backend::close(&mut out, b'S', OURS);
        backend::sync(&mut out);
        io.send_server(&out).await?;
        let tried = io.collect().await?.error.is_none();
        if tried {
            let mut out = BytesMut::new();
            if !name.is_empty() {
                backend::close(&mut out, b'S', name);
            }
            backend::parse(&mut out, name, &e.original, &params);
            backend::sync(&mut out);
            io.send_server(&out).await?;
            if io.collect().await?.error.is_none() {
                restored += 1;
                continue;
            }
        }
        // Its own text does not prepare now (a lock it waited for, a
        // statement_timeout): left as it is, and the rest tried again later.
        again.extend_from_slice(&work[i..]);
        break;
    }
    if in_block {
        if !again.is_empty() {
            savepoint(io, "ROLLBACK TO SAVEPOINT").await?;
        }
        if !savepoint(io, "RELEASE SAVEPOINT").await? {
            savepoint(io, "ROLLBACK TO SAVEPOINT").await?;
            if !savepoint(io, "RELEASE SAVEPOINT").await? {
                tracing::warn!("pgshift's savepoint could not be released");
            }
        }
    }
    Ok((restored, again))
}

/// pgshift's own statement name for trying a text.
const OURS: &str = "pgshift_mirror";

/// What [`sent`] found.
enum Sent {
    /// The server has the text pgshift sent, with these parameter types.
    Ours(Vec<u32>),
    /// It has another text, or none.
    Gone,
    /// An error answered the look.
    Failed,
}

/// Statement `name` as the server has it (an unnamed one: whether it is there).
async fn sent<C, S>(io: &mut InBand<'_, C, S>, name: &str, e: &Entry) -> std::io::Result<Sent>
where
    C: tokio::io::AsyncWrite + Unpin + Send,
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
{
    if name.is_empty() {
        let mut out = BytesMut::new();
        backend::describe_statement(&mut out, "");
        backend::sync(&mut out);
        io.send_server(&out).await?;
        let reply = io.collect().await?;
        return Ok(match (reply.error.is_none(), reply.params) {
            (true, Some(params)) => Sent::Ours(params),
            _ => Sent::Gone,
        });
    }
    let now = run(
        io,
        "SELECT statement, parameter_types::pg_catalog.oid[]::pg_catalog.text \
         FROM pg_catalog.pg_prepared_statements \
         WHERE name OPERATOR(pg_catalog.=) $1 AND NOT from_sql",
        &[Some(name)],
    )
    .await?;
    if now.error.is_some() {
        return Ok(Sent::Failed);
    }
    let row = now.rows.first();
    let cell = |i: usize| row.and_then(|r| r.get(i).cloned().flatten());
    Ok(match cell(0) {
        Some(text) if hash(&text) == e.sent => match cell(1).and_then(|t| super::wrapper::oids(&t))
        {
            Some(params) => Sent::Ours(params),
            None => Sent::Gone,
        },
        _ => Sent::Gone,
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
